"""The durable spool: received instances and result objects on disk, with the job table beside
them (:mod:`serving.gateway.job_store`: schema, queries and the job state machine, described
there; :mod:`serving.gateway.jobs`: the states and records).

Layout under the spool folder::

    gateway.db                          SQLite (WAL, synchronous=FULL): jobs, instances, results
    gateway.lock                        held (flock) by the one gateway process using the spool
    tmp/                                files being written (removed at start-up)
    instances/<StudyUID>/<SOPUID>.dcm   received instances, as sent (Part 10)
    results/<job id>/<SOPUID>.dcm       result objects of a job, kept for re-sending

Durability of a received instance (:meth:`Spool.store`): the bytes go to a temporary file that
is fsynced, renamed to its final name, the directory is fsynced, then the instance row is
inserted and committed; only then does the caller answer "success". A crash at any point
before the commit leaves at most a stray file (removed at start-up) and the sender, which got
no success, sends again.

UIDs are checked against the DICOM UID syntax (digits and dots, at most 64 characters, no
leading zeros) before they name anything on disk, so a crafted UID cannot leave the spool.

Files are released when nothing needs them any more (:meth:`Spool.finish`: the instance files of
``sent``, ``kept`` and ``skipped`` jobs unless ``keep_instances``) and, after the retention
period, everything a finished job still holds (:meth:`Spool.release`, driven by
:mod:`serving.gateway.retention`); the job rows stay. An instance whose SOP Instance UID is
already in the spool is a duplicate (stored once) until its job is released, unless its
finished job skipped it (a refused or non-image instance: nothing was made of it); after that,
or for such a skipped one, the same instance starts a new job and is analysed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from pydicom.dataset import Dataset

from serving.gateway.job_store import (
    DB_NAME,
    MIGRATIONS,
    NOT_READMITTED,
    SCHEMA,
    SCHEMA_VERSION,
    JobNotFoundError,
    JobStateError,
    JobStore,
    ResultRow,
    SpoolError,
)
from serving.gateway.jobs import (
    RELEASED_AT_FINISH,
    RESENDABLE,
    TERMINAL,
    Held,
    InstanceRecord,
    Job,
    JobState,
    ResultRecord,
    Skipped,
    Stored,
    StoreOutcome,
)
from serving.storage import (
    MAX_UID_LENGTH,
    encode,
    ensure_dir,
    fsync_dir,
    is_uid,
    write_durably,
)

__all__ = [
    "DB_NAME",
    "LOCK_NAME",
    "MIGRATIONS",
    "NOT_READMITTED",
    "RELEASED_AT_FINISH",
    "RESENDABLE",
    "SCHEMA",
    "SCHEMA_VERSION",
    "TERMINAL",
    "Held",
    "InstanceRecord",
    "InvalidInstanceError",
    "Job",
    "JobNotFoundError",
    "JobState",
    "JobStateError",
    "ResultRecord",
    "Skipped",
    "Spool",
    "SpoolError",
    "SpoolFullError",
    "StoreOutcome",
    "Stored",
    "check_uid",
    "uid_tag",
]

LOCK_NAME: Final = "gateway.lock"


class SpoolFullError(SpoolError):
    """Storing the instance would exceed the spool quota (answered 0xA700)."""


class InvalidInstanceError(SpoolError):
    """The instance's identifying UIDs are unusable (missing or not UID syntax)."""


def check_uid(value: object, what: str) -> str:
    """``value`` if it is a DICOM UID (digits and dots, <= 64 characters, no leading zeros),
    else :class:`InvalidInstanceError` (the message never quotes the value: it may be data)."""
    text = str(value or "").strip("\x00 ")
    if not text:
        raise InvalidInstanceError(f"{what} is absent; expected a UID")
    if not is_uid(text):
        raise InvalidInstanceError(f"{what} is not a valid UID ({len(text)} characters); "
                                   f"expected digits and dots, at most {MAX_UID_LENGTH}")
    return text


def uid_tag(uid: str | None) -> str:
    """A short, stable, non-reversible tag of a UID for log lines (12 hex digits of sha256)."""
    return hashlib.sha256((uid or "").encode()).hexdigest()[:12]


class Spool:
    """Instances and results of one spool folder, and its job table (:class:`JobStore`, to
    which the job bookkeeping is delegated); safe to use from many threads.

    Args:
        root: the spool folder (created when missing).
        max_bytes: quota of instance plus result files, bytes (``None``: no quota).
        keep_instances: keep instance files once a job's results were sent.
    """

    def __init__(self, root: Path, *, max_bytes: int | None = None,
                 keep_instances: bool = False) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.keep_instances = keep_instances
        self.tmp_dir = self.root / "tmp"
        self.instances_dir = self.root / "instances"
        self.results_dir = self.root / "results"
        for folder in (self.root, self.tmp_dir, self.instances_dir, self.results_dir):
            ensure_dir(folder)
        self.job_store = JobStore(self.root)
        self._lock = self.job_store.lock
        self._reserved = 0
        self._used = self.job_store.held_bytes()

    # -- plumbing ------------------------------------------------------------------------

    def refresh_usage(self) -> int:
        """Recount :attr:`used_bytes` from the database (another process, such as
        ``galacto gateway purge``, may have released files); returns it."""
        with self._lock:
            self._used = self.job_store.held_bytes()
            return self._used

    def close(self) -> None:
        """Close the database connection."""
        self.job_store.close()

    @property
    def used_bytes(self) -> int:
        """Bytes of instance and result files in the spool."""
        return self._used

    # -- receiving -----------------------------------------------------------------------

    def has_instance(self, sop_uid: str) -> bool:
        """True when an instance with this SOP Instance UID is held (a C-STORE of it now
        would be a duplicate: stored before, and its job not released)."""
        return self.job_store.holding_job(sop_uid) is not None

    def check_room(self, size: int) -> None:
        """Raise :class:`SpoolFullError` when ``size`` more bytes would exceed the quota (the
        usage is recounted from the database first, in case another process released files).
        """
        with self._lock:
            if self._fits(size):
                return
            self._used = self.job_store.held_bytes()
            if not self._fits(size):
                raise SpoolFullError(
                    f"spool quota exceeded: {self._used + self._reserved} bytes used of "
                    f"{self.max_bytes}, the instance needs {size} more")

    def _fits(self, size: int) -> bool:
        return self.max_bytes is None or self._used + self._reserved + size <= self.max_bytes

    def _reserve(self, size: int) -> None:
        with self._lock:
            self.check_room(size)
            self._reserved += size

    def store(self, data: bytes, *, study_uid: str, sop_uid: str, sop_class_uid: str,
              calling_ae: str | None, now: float | None = None) -> Stored:
        """Store one received instance durably and attach it to its study's open job.

        Args:
            data: the Part 10 bytes, as received.
            study_uid, sop_uid, sop_class_uid: the instance's UIDs (checked here).
            calling_ae: the sender's AE title (recorded with a new job).
            now: receive time, epoch seconds (default: the clock).

        Returns:
            :class:`Stored`: ``STORED``, or ``DUPLICATE`` when this SOP Instance UID is
            already in the spool (nothing is written then).

        Raises:
            InvalidInstanceError: a UID is missing or not UID syntax.
            SpoolFullError: the quota would be exceeded.
            OSError: the disk refused the write (e.g. ENOSPC).
        """
        study_uid = check_uid(study_uid, "StudyInstanceUID (0020,000D)")
        sop_uid = check_uid(sop_uid, "SOPInstanceUID (0008,0018)")
        sop_class_uid = check_uid(sop_class_uid, "SOPClassUID (0008,0016)")
        existing = self.job_store.holding_job(sop_uid)
        if existing is not None:
            return Stored(StoreOutcome.DUPLICATE, existing)
        self._reserve(len(data))
        try:
            return self._store_reserved(data, study_uid, sop_uid, sop_class_uid, calling_ae,
                                        time.time() if now is None else now)
        finally:
            with self._lock:
                self._reserved -= len(data)

    def _store_reserved(self, data: bytes, study_uid: str, sop_uid: str, sop_class_uid: str,
                        calling_ae: str | None, now: float) -> Stored:
        rel = Path("instances") / study_uid / f"{sop_uid}.dcm"
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            with self._lock:
                existing = self.job_store.holding_job(sop_uid)
                if existing is not None:  # the same instance arrived concurrently
                    return Stored(StoreOutcome.DUPLICATE, existing)
                final = self.root / rel
                ensure_dir(final.parent)
                os.replace(tmp, final)
                fsync_dir(final.parent)
                job_id = self.job_store.add_instance(
                    study_uid=study_uid, sop_uid=sop_uid, sop_class_uid=sop_class_uid,
                    path=str(rel), size=len(data), calling_ae=calling_ae, now=now)
                self._used += len(data)
                return Stored(StoreOutcome.STORED, job_id)
        finally:
            tmp.unlink(missing_ok=True)

    # -- scheduling (job transitions: serving.gateway.job_store) ---------------------------

    def quiet_jobs(self, last_before: float) -> list[int]:
        """Ids of ``received`` jobs whose latest instance arrived at or before
        ``last_before`` (epoch seconds), oldest first."""
        return self.job_store.quiet_jobs(last_before)

    def mark_waiting(self, job_id: int, now: float | None = None) -> bool:
        """``received`` -> ``waiting``; False when the job was not ``received`` any more."""
        return self.job_store.mark_waiting(job_id, now)

    def claim(self, now: float | None = None) -> int | None:
        """Take the oldest due ``waiting`` job (-> ``running``); None when none is due."""
        return self.job_store.claim(now)

    def claim_job(self, job_id: int, now: float | None = None) -> bool:
        """Take this ``waiting`` job (-> ``running``) whatever its due time; False when it was
        not ``waiting``."""
        return self.job_store.claim_job(job_id, now)

    def queue_depth(self, now: float | None = None) -> int:
        """``waiting`` jobs that are due (ready for a worker now)."""
        return self.job_store.queue_depth(now)

    def recover(self) -> list[int]:
        """Start-up repair, to be called by the one process owning the spool: jobs left
        ``running`` by a crash go back to ``waiting``; stray temporary files, instance files
        without a row and results of jobs whose results were not committed are removed.

        Returns:
            The ids of the jobs resumed.
        """
        ids = self.job_store.resume_running()
        for stray in self.tmp_dir.iterdir():
            stray.unlink(missing_ok=True)
        self._remove_orphans()
        with self._lock:
            self._used = self.job_store.held_bytes()
        return ids

    def _remove_orphans(self) -> None:
        with self._lock:
            present = self.job_store.present_instance_paths()
            known = set(present)
            ready = {str(i) for i in self.job_store.ready_job_ids()}
            missing = [p for p in present if not (self.root / p).is_file()]
            if missing:
                self.job_store.mark_absent(missing)
        for path in self.instances_dir.glob("*/*"):
            if str(path.relative_to(self.root)) not in known:
                path.unlink(missing_ok=True)
        for folder in self.results_dir.iterdir():
            if folder.name not in ready:
                shutil.rmtree(folder, ignore_errors=True)

    # -- processing ----------------------------------------------------------------------

    def instances(self, job_id: int) -> list[InstanceRecord]:
        """The job's instances in the order received."""
        return self.job_store.instances(job_id)

    def results(self, job_id: int) -> list[ResultRecord]:
        """The job's result objects in the order built."""
        return self.job_store.results(job_id)

    def save_results(self, job_id: int, datasets: Sequence[Dataset], *, analysed: int,
                     skipped: Sequence[Skipped], findings: int,
                     timings_ms: dict[str, float]) -> list[ResultRecord]:
        """Write the job's result objects durably, then record them and the analysis in one
        transaction (``results_ready``): from then on a retry or restart re-sends these same
        objects (same SOP Instance UIDs) instead of analysing again."""
        folder = self.results_dir / str(job_id)
        shutil.rmtree(folder, ignore_errors=True)  # leftovers of an uncommitted attempt
        rows = []
        for ds in datasets:
            sop = check_uid(ds.SOPInstanceUID, "result SOPInstanceUID")
            data = encode(ds)
            rel = Path("results") / str(job_id) / f"{sop}.dcm"
            write_durably(data, self.tmp_dir, self.root / rel)
            rows.append(ResultRow(sop, str(ds.SOPClassUID), str(rel), len(data)))
        self.job_store.add_results(job_id, rows, analysed=analysed, skipped=skipped,
                                  findings=findings, timings_ms=timings_ms)
        with self._lock:
            self._used += sum(r.size for r in rows)
        return self.results(job_id)

    def record_analysis(self, job_id: int, *, analysed: int, skipped: Sequence[Skipped],
                        timings_ms: dict[str, float]) -> None:
        """Record an analysis that produced no result (nothing analysable, or a failure)."""
        self.job_store.record_analysis(job_id, analysed=analysed, skipped=skipped,
                                      timings_ms=timings_ms)

    def add_timing(self, job_id: int, name: str, ms: float) -> None:
        """Set one entry of the job's ``timings_ms``."""
        self.job_store.add_timing(job_id, name, ms)

    def mark_sent(self, sop_uids: Sequence[str], when: float | None = None) -> None:
        """Record that these result objects were delivered."""
        self.job_store.mark_sent(sop_uids, when)

    def count_attempt(self, job_id: int) -> int:
        """Add one send attempt; returns the attempts made so far."""
        return self.job_store.count_attempt(job_id)

    def retry_later(self, job_id: int, at: float, reason: str) -> None:
        """``running`` -> ``waiting`` until ``at`` (epoch seconds), with the reason."""
        self.job_store.retry_later(job_id, at, reason)

    def finish(self, job_id: int, state: JobState, reason: str | None = None,
               now: float | None = None) -> None:
        """Put the job in a terminal ``state``. After ``sent``, ``kept`` and ``skipped`` the
        instance files are no longer needed and are deleted (unless ``keep_instances``):
        released in the same transaction, unlinked after it under the spool lock, so a new
        instance of the same study cannot see its folder vanish (a crash in between leaves
        files that start-up removes as orphans).

        Raises:
            ValueError: ``state`` is not terminal (nothing changed).
        """
        release = state in RELEASED_AT_FINISH and not self.keep_instances
        with self._lock:
            files = [i for i in self.instances(job_id) if i.present] if release else []
            self.job_store.finish(job_id, state, reason, now, release_instances=release)
            self._used -= sum(i.size for i in files)
            self._unlink([i.path for i in files])

    @staticmethod
    def _unlink(paths: Sequence[Path]) -> None:
        """Delete files and then their folders when empty (call under the spool lock)."""
        for path in paths:
            path.unlink(missing_ok=True)
        for folder in {path.parent for path in paths}:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty

    def releasable(self, finished_before: float, states: Sequence[JobState] = tuple(TERMINAL)
                   ) -> list[Held]:
        """Finished, not yet released jobs in ``states`` that finished at or before
        ``finished_before`` (epoch seconds), oldest first, with what they still hold."""
        return self.job_store.releasable(finished_before, states)

    def release(self, job_id: int, now: float | None = None) -> bool:
        """Release everything a finished job holds: its instance and result files are
        deleted and ``released_at`` is set (the job row stays; its instances are no longer
        duplicates). False when the job is not finished or was released already."""
        t = time.time() if now is None else now
        with self._lock:
            results = self.results(job_id)
            instances = [i for i in self.instances(job_id) if i.present]
            if not self.job_store.release(job_id, t):
                return False
            self._used -= sum(i.size for i in instances) + sum(r.size for r in results)
            self._unlink([i.path for i in instances])
            self._unlink([r.path for r in results])
        return True

    def resend(self, job_id: int, now: float | None = None) -> Job:
        """Queue a finished job again: ``sent``/``kept`` jobs re-send every result, ``failed``
        jobs send what was not delivered (or are analysed again when the analysis failed).

        Raises:
            JobNotFoundError: no such job.
            JobStateError: the job is not finished, was skipped, or must be analysed again
                but its instance files are gone.
        """
        return self.job_store.resend(job_id, now)

    # -- queries -------------------------------------------------------------------------

    def job(self, job_id: int) -> Job:
        """The job, or :class:`JobNotFoundError`."""
        return self.job_store.job(job_id)

    def jobs(self, state: JobState | None = None, limit: int = 100,
             study_uid: str | None = None) -> list[Job]:
        """Jobs, newest first, optionally of one state or study."""
        return self.job_store.jobs(state, limit, study_uid)

    def counts(self) -> dict[JobState, int]:
        """Number of jobs in each state (every state listed)."""
        return self.job_store.counts()
