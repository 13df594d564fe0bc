"""Prometheus metrics of the gateway, registered in a registry it is given (the HTTP app's, so
``/metrics`` shows them) or its own.

- ``galacto_gateway_instances_received_total{outcome}``: C-STORE requests by outcome:
  ``stored``, ``duplicate``, ``refused_quota`` (0xA700), ``refused_invalid`` (0xA900/0xC000),
  ``error`` (0x0110).
- ``galacto_gateway_studies_processed_total{outcome}``: jobs finished: ``sent``, ``kept``,
  ``skipped``, ``failed``.
- ``galacto_gateway_send_failures_total``: failed send attempts (each retry counts).
- ``galacto_gateway_queue_depth``: jobs ready and waiting for a worker.
- ``galacto_gateway_jobs_running``: jobs a worker is on.
- ``galacto_gateway_spool_bytes``: bytes of instance and result files in the spool.
- ``galacto_gateway_connections_refused_total{reason}``: TCP connections closed before they
  became an association (:mod:`serving.gateway.admission`): ``address``, ``busy``, ``closed``,
  ``timeout``, ``not_associate_rq``, ``too_large``.
- ``galacto_gateway_jobs_released_total``: finished jobs whose remaining files the retention
  sweep released (``galacto gateway purge`` runs in its own process and is not counted).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class GatewayMetrics:
    """The gateway's metrics in ``registry`` (a new one when None)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.instances = Counter("galacto_gateway_instances_received",
                                 "C-STORE requests received, by outcome", ["outcome"],
                                 registry=r)
        self.studies = Counter("galacto_gateway_studies_processed",
                               "study jobs finished, by outcome", ["outcome"], registry=r)
        self.send_failures = Counter("galacto_gateway_send_failures",
                                     "failed attempts to send results", registry=r)
        self.queue_depth = Gauge("galacto_gateway_queue_depth",
                                 "study jobs ready and waiting for a worker", registry=r)
        self.running = Gauge("galacto_gateway_jobs_running", "study jobs being processed",
                             registry=r)
        self.spool_bytes = Gauge("galacto_gateway_spool_bytes",
                                 "bytes of instance and result files in the spool", registry=r)
        self.connections_refused = Counter(
            "galacto_gateway_connections_refused",
            "TCP connections closed before they became an association, by reason", ["reason"],
            registry=r)
        self.jobs_released = Counter("galacto_gateway_jobs_released",
                                     "finished jobs whose files the retention sweep released",
                                     registry=r)
