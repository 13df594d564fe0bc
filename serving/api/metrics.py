"""Prometheus metrics of one app (own registry, so several apps in one process stay apart).

Every label value comes from a closed set: the route template (or ``unmatched``), a method of
:data:`METHODS` (else ``other``: any token is an HTTP method to uvicorn, and 25,000 random ones
made ``/metrics`` 48 MB), and the status code the app answered.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Method label values; every other method is counted as ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


def method_label(method: str) -> str:
    """``method`` if it is one of :data:`METHODS`, else ``"other"``."""
    return method if method in METHODS else "other"


class Metrics:
    """The service's metrics.

    - ``galacto_http_requests_total{endpoint,method,status}``: requests by route template.
    - ``galacto_http_request_duration_seconds{endpoint,method}``: request latency.
    - ``galacto_inference_duration_seconds``: decode + detect + results of one request.
    - ``galacto_images_total{outcome}``: images analysed / rejected.
    - ``galacto_findings_total``: findings reported (at the applied operating point).
    - ``galacto_inference_running`` / ``galacto_inference_queued``: slots in use, admitted
      requests not running (reading their body, in triage or waiting for a slot).
    - ``galacto_requests_dropped_total``: requests whose work was not run because the client
      had gone while they waited.
    - ``galacto_model_info{name,version,operating_point}``: the loaded model.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("galacto_http_requests", "HTTP requests",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("galacto_http_request_duration_seconds", "HTTP request latency",
                                 ["endpoint", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("galacto_inference_duration_seconds",
                                   "decode, detection and result building of one request",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.images = Counter("galacto_images", "images received", ["outcome"], registry=r)
        self.findings = Counter("galacto_findings", "findings reported", registry=r)
        self.running = Gauge("galacto_inference_running", "inferences running", registry=r)
        self.queued = Gauge("galacto_inference_queued",
                            "admitted requests reading their body, in triage or waiting for a slot",
                            registry=r)
        self.dropped = Counter("galacto_requests_dropped",
                               "requests not run because the client had gone", registry=r)
        self.model = Info("galacto_model", "the loaded model", registry=r)
