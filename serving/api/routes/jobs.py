"""HTTP admin endpoints of the gateway: job states and re-send.

``GET /v1/jobs``, ``GET /v1/jobs/{id}``, ``POST /v1/jobs/{id}/resend``. The router reads the
gateway from ``app.state.gateway`` (set when the app runs one, see
:func:`serving.gateway.service.embedded_gateway`); without one every endpoint answers 404
``gateway_disabled``. Errors use the service's JSON error shape (``detail`` code + message).

Job bodies carry the Study Instance UID (operators need it to find the study) but no other
patient data; they sit behind the app's bearer authentication like every other endpoint.

The routes fetch the gateway in their bodies (:func:`get_gateway`), not as a dependency:
FastAPI resolves dependencies before it validates parameters, and an invalid parameter is
answered 422 whether a gateway runs or not.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import Path, Query, Request
from pydantic import BaseModel, Field

from serving.api.auth import keyed_router
from serving.api.errors import ApiError
from serving.gateway.service import Gateway, GatewayError
from serving.gateway.spool import Job, JobNotFoundError, JobState, JobStateError

router = keyed_router({
    404: "gateway not running, or no such job",
    409: "job not resendable, or no destination",
    422: "invalid request parameters",
}, prefix="/v1/jobs", tags=["gateway"])
#: Error statuses of the router's operations (every body is ErrorOut).
ERRORS = router.responses
# le: SQLite integers are 64-bit; a larger id made the query raise OverflowError, a 500
# (found by tests/test_schemathesis.py)
JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="job number")]


class SkippedOut(BaseModel):
    """An instance of the study that was not analysed."""

    sop_instance_uid: str
    reason: str = Field(description="`code: explanation`, e.g. `color_image: ...`")


class JobOut(BaseModel):
    """One study job. Times are UTC; durations in the field names' units."""

    id: int
    state: JobState = Field(description="received, waiting, running, sent, kept, skipped or "
                                        "failed")
    study_instance_uid: str
    calling_ae_title: str | None
    reason: str | None = Field(description="why it failed, is retried or was skipped")
    attempts: int = Field(description="send attempts made")
    instances_received: int
    instances_analysed: int
    instances_skipped: int
    skipped: list[SkippedOut]
    findings: int
    results_total: int
    results_sent: int
    created_at: dt.datetime = Field(description="first instance received")
    last_instance_at: dt.datetime
    ready_at: dt.datetime | None = Field(description="quiet period over")
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    next_attempt_at: dt.datetime | None = Field(description="next send retry, when waiting")
    duration_s: float | None = Field(description="first instance to finish, seconds")
    timings_ms: dict[str, float] = Field(description="read, detect, results, send (ms)")
    released_at: dt.datetime | None = Field(
        default=None, description="when the retention period (or a purge) released its "
                                  "files; it can no longer be re-sent")


class JobList(BaseModel):
    """Jobs (newest first) and how many are in each state."""

    counts: dict[str, int]
    jobs: list[JobOut]


def _time(epoch: float | None) -> dt.datetime | None:
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, tz=dt.UTC)


def job_out(job: Job) -> JobOut:
    """The response model of a job."""
    created = _time(job.created_at)
    assert created is not None
    return JobOut(
        id=job.id, state=job.state, study_instance_uid=job.study_instance_uid,
        calling_ae_title=job.calling_ae_title, reason=job.reason, attempts=job.attempts,
        instances_received=job.instances_received, instances_analysed=job.instances_analysed,
        instances_skipped=len(job.skipped),
        skipped=[SkippedOut(sop_instance_uid=s.sop_instance_uid, reason=s.reason)
                 for s in job.skipped],
        findings=job.findings, results_total=job.results_total,
        results_sent=job.results_sent, created_at=created,
        last_instance_at=_time(job.last_instance_at) or created, ready_at=_time(job.ready_at),
        started_at=_time(job.started_at), finished_at=_time(job.finished_at),
        next_attempt_at=_time(job.next_attempt_at),
        duration_s=None if job.finished_at is None
        else round(job.finished_at - job.created_at, 3),
        timings_ms=job.timings_ms, released_at=_time(job.released_at))


def get_gateway(request: Request) -> Gateway:
    """The app's running gateway, or 404 ``gateway_disabled``."""
    gateway = getattr(request.app.state, "gateway", None)
    if not isinstance(gateway, Gateway) or not gateway.running:
        raise ApiError(404, "gateway_disabled", "the DICOM gateway does not run in this "
                       "process (set GALACTO_GATEWAY_ENABLED=true to run it in galacto serve)")
    return gateway


def _job(gateway: Gateway, job_id: int) -> Job:
    try:
        return gateway.job(job_id)
    except JobNotFoundError:
        raise ApiError(404, "job_not_found", f"no job {job_id}") from None


@router.get("", response_model=JobList, summary="Gateway jobs, newest first")
def list_jobs(request: Request, state: JobState | None = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> JobList:
    """Study jobs of the DICOM gateway, optionally of one state."""
    gateway = get_gateway(request)
    counts = {s.value: n for s, n in gateway.spool.counts().items()}
    return JobList(counts=counts, jobs=[job_out(j) for j in gateway.jobs(state, limit)])


@router.get("/{job_id}", response_model=JobOut, summary="One gateway job")
def get_job(request: Request, job_id: JobId) -> JobOut:
    """State, reason, counts and timings of one study job."""
    return job_out(_job(get_gateway(request), job_id))


@router.post("/{job_id}/resend", response_model=JobOut, status_code=202,
             summary="Send a job's results again")
def resend_job(request: Request, job_id: JobId) -> JobOut:
    """Queue a ``sent``, ``kept`` or ``failed`` job for sending (``failed``: what was not
    delivered; otherwise every result). 409 ``job_not_resendable`` for other states and for
    jobs whose files were released."""
    gateway = get_gateway(request)
    _job(gateway, job_id)
    try:
        return job_out(gateway.resend(job_id))
    except JobStateError as exc:
        raise ApiError(409, "job_not_resendable", str(exc)) from None
    except GatewayError as exc:
        raise ApiError(409, "no_destination", str(exc)) from None
