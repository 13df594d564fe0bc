"""Study jobs as the spool stores them: the :class:`JobState` values and the state sets the
gateway acts on, the records read back from the job table (:class:`Job`,
:class:`InstanceRecord`, :class:`ResultRecord`, :class:`Held`) and the outcome of storing an
instance. Times are Unix epoch seconds (UTC).

Each :class:`JobState` member says what that state means; the state machine (which move leads
from one state to the next) is described once, in :mod:`serving.gateway.job_store`, whose
``JobStore`` makes every move.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final


class JobState(StrEnum):
    """Where a study job is."""

    RECEIVED = "received"
    """Instances are arriving; processed once none arrived for the quiet period."""
    WAITING = "waiting"
    """Ready, waiting for a worker (or for ``next_attempt_at`` after a failed send)."""
    RUNNING = "running"
    """A worker is analysing the study or sending its results."""
    SENT = "sent"
    """Every result object was delivered to the destination."""
    KEPT = "kept"
    """No destination is configured: the results are in the spool only."""
    SKIPPED = "skipped"
    """No instance of the study is a galactogram image (see ``skipped``): nothing to send."""
    FAILED = "failed"
    """Analysis failed, or the last send retry failed (see ``reason``); kept for re-sending."""


#: States whose job still takes new instances of its study (until its results are built).
ACCEPTING: Final = frozenset({JobState.RECEIVED, JobState.WAITING})
#: States a job does not leave by itself.
TERMINAL: Final = frozenset({JobState.SENT, JobState.KEPT, JobState.SKIPPED, JobState.FAILED})
#: States from which :meth:`Spool.resend` may restart a job.
RESENDABLE: Final = frozenset({JobState.SENT, JobState.KEPT, JobState.FAILED})
#: States whose instance files are deleted at :meth:`Spool.finish` (unless kept by setting):
#: their results are stored, or there is nothing to analyse.
RELEASED_AT_FINISH: Final = frozenset({JobState.SENT, JobState.KEPT, JobState.SKIPPED})


@dataclass(frozen=True)
class Skipped:
    """An instance of the study that was not analysed, and why (``code: message``)."""

    sop_instance_uid: str
    reason: str


@dataclass(frozen=True)
class Job:
    """One study job as stored. Times are Unix epoch seconds (UTC); ``None`` when not yet.

    Attributes:
        id: job number (increasing).
        study_instance_uid: the study.
        state: see :class:`JobState`.
        calling_ae_title: AE title of the first sender.
        created_at: first instance stored.
        last_instance_at: latest instance stored.
        ready_at: quiet period over (or re-send requested).
        started_at: first taken by a worker.
        finished_at: reached a terminal state.
        next_attempt_at: when the next send attempt is due (``waiting`` after a failure).
        attempts: send attempts made.
        reason: why it failed / is retried / was skipped; ``None`` when all went well.
        instances_received: instances stored for the job.
        instances_analysed: instances the detector ran on.
        skipped: instances not analysed, with the reason.
        findings: findings reported (all images).
        results_total, results_sent: result objects built, and delivered.
        timings_ms: ``read``, ``detect``, ``results``, ``send`` durations in ms.
        results_ready: the result objects are built and stored.
        released_at: when its files were released (retention or purge); ``None`` before.
    """

    id: int
    study_instance_uid: str
    state: JobState
    calling_ae_title: str | None
    created_at: float
    last_instance_at: float
    ready_at: float | None
    started_at: float | None
    finished_at: float | None
    next_attempt_at: float | None
    attempts: int
    reason: str | None
    instances_received: int
    instances_analysed: int
    skipped: tuple[Skipped, ...]
    findings: int
    results_total: int
    results_sent: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    results_ready: bool = False
    released_at: float | None = None


@dataclass(frozen=True)
class Held:
    """What a finished job still holds in the spool (:meth:`Spool.releasable`).

    Attributes:
        job_id, state, study_instance_uid: the job.
        finished_at: when it finished, epoch seconds.
        instance_files, result_files: files still in the spool.
        size: bytes of those files.
    """

    job_id: int
    state: JobState
    study_instance_uid: str
    finished_at: float
    instance_files: int
    result_files: int
    size: int


@dataclass(frozen=True)
class InstanceRecord:
    """A received instance: its UIDs, its file (absolute) and size in bytes."""

    sop_instance_uid: str
    sop_class_uid: str
    path: Path
    size: int
    present: bool


@dataclass(frozen=True)
class ResultRecord:
    """A result object of a job: UIDs, file (absolute), size in bytes, when it was sent."""

    sop_instance_uid: str
    sop_class_uid: str
    path: Path
    size: int
    sent_at: float | None


class StoreOutcome(StrEnum):
    """What :meth:`Spool.store` did."""

    STORED = "stored"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Stored:
    """Result of :meth:`Spool.store`: outcome and the job the instance belongs to."""

    outcome: StoreOutcome
    job_id: int


def skipped_reason(skipped: Sequence[Skipped]) -> str:
    """A skipped job's reason: how many instances were skipped and their reason codes with
    counts, e.g. ``"no galactogram image analysed: 2 instance(s) skipped (image_too_large
    x1, own_result x1)"`` (codes in first-seen order; a reason is ``code: explanation``)."""
    codes: dict[str, int] = {}
    for s in skipped:
        code = s.reason.split(":", 1)[0].strip() or "unknown"
        codes[code] = codes.get(code, 0) + 1
    listed = ", ".join(f"{code} x{n}" for code, n in codes.items())
    return (f"no galactogram image analysed: {len(skipped)} instance(s) skipped"
            + (f" ({listed})" if listed else ""))
