"""The DICOM gateway: C-ECHO/C-STORE listener, durable spool, study grouping, workers that run
the detection pipeline, and results sent back by C-STORE (or STOW-RS).

- :mod:`~serving.gateway.settings`: ``GALACTO_GATEWAY_*`` settings.
- :mod:`~serving.gateway.spool`: instance and result files on disk, with
  :mod:`~serving.gateway.job_store` (the SQLite job table: schema, state machine, queries);
  :mod:`~serving.gateway.jobs` (job states and records), :mod:`serving.storage`
  (durable writes) and :mod:`~serving.gateway.retention` (releasing files of finished jobs).
- :mod:`~serving.gateway.admission`: what a TCP connection passes before it is an association.
- :mod:`~serving.gateway.scp`: the pynetdicom listener and its allow-list.
- :mod:`~serving.gateway.triage`, :mod:`~serving.gateway.analysis`: what is analysed, and how.
- :mod:`~serving.gateway.sender`: C-STORE SCU and STOW-RS senders.
- :mod:`~serving.gateway.service`: :class:`Gateway`, which runs all of it.
- ``/v1/jobs`` (the HTTP app's view of the jobs) lives in :mod:`serving.api.routes.jobs`;
  the gateway imports nothing from the API.
- :mod:`~serving.gateway.metrics`: Prometheus metrics.
"""

from serving.gateway.service import Gateway, GatewayError, embedded_gateway
from serving.gateway.settings import GatewaySettings
from serving.gateway.spool import Job, JobState

__all__ = ["Gateway", "GatewayError", "GatewaySettings", "Job", "JobState", "embedded_gateway"]
