"""The durable spool: received instances, result objects and the job table.

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

Job states (:class:`JobState`): ``received`` (instances arriving) -> ``waiting`` (quiet period
over, or a send retry is due at ``next_attempt_at``) -> ``running`` -> one of ``sent``,
``kept`` (no destination configured: results stay here), ``skipped`` (no galactogram image in
the study: nothing to send) or ``failed`` (with the reason; kept for re-sending).

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
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from pydicom.dataset import Dataset

from serving.gateway.jobs import (
    JOB_COLUMNS,
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
    job_from_row,
    skipped_json,
)
from serving.storage import (
    MAX_UID_LENGTH,
    encode,
    ensure_dir,
    fsync_dir,
    is_uid,
    write_durably,
)

SCHEMA_VERSION: Final = 2
DB_NAME: Final = "gateway.db"
LOCK_NAME: Final = "gateway.lock"

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL,
    state TEXT NOT NULL,
    calling_ae TEXT,
    created_at REAL NOT NULL,
    last_instance_at REAL NOT NULL,
    ready_at REAL,
    started_at REAL,
    finished_at REAL,
    next_attempt_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    n_instances INTEGER NOT NULL DEFAULT 0,
    n_analysed INTEGER NOT NULL DEFAULT 0,
    n_findings INTEGER NOT NULL DEFAULT 0,
    skipped TEXT NOT NULL DEFAULT '[]',
    timings TEXT NOT NULL DEFAULT '{}',
    results_ready INTEGER NOT NULL DEFAULT 0,
    released_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE INDEX IF NOT EXISTS jobs_study ON jobs (study_uid);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    sop_class TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    received_at REAL NOT NULL,
    present INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS instances_job ON instances (job_id);
CREATE TABLE IF NOT EXISTS results (
    sop_uid TEXT PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    sop_class TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS results_job ON results (job_id);
"""
#: Schema changes from the version before (applied in order at open).
MIGRATIONS: Final = {2: "ALTER TABLE jobs ADD COLUMN released_at REAL;"}


NOT_READMITTED: Final = "own_result"
"""Skip reason whose instances stay duplicates after their job finished: this gateway's own
result objects, which a PACS routing the whole study back would otherwise re-send as new
jobs each time."""


class SpoolError(Exception):
    """The spool cannot do what was asked; the message says what and why."""


class SpoolFullError(SpoolError):
    """Storing the instance would exceed the spool quota (answered 0xA700)."""


class InvalidInstanceError(SpoolError):
    """The instance's identifying UIDs are unusable (missing or not UID syntax)."""


class JobNotFoundError(SpoolError):
    """No job has that id."""


class JobStateError(SpoolError):
    """The job is in a state that does not allow the operation."""


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
    """Instances, results and jobs of one spool folder; safe to use from many threads.

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
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.root / DB_NAME, isolation_level=None,
                                   check_same_thread=False, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._init_schema()
        self._reserved = 0
        self._used = self._usage()

    # -- plumbing ------------------------------------------------------------------------

    def _init_schema(self) -> None:
        """Create the schema, or bring an older one up to :data:`SCHEMA_VERSION`."""
        with self._lock:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise SpoolError(f"{self.root / DB_NAME}: schema version {version}; this "
                                 f"galacto reads versions up to {SCHEMA_VERSION}")
            if version == 0:
                self._db.executescript(SCHEMA)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                return
            with self._tx() as db:
                version = int(db.execute("PRAGMA user_version").fetchone()[0])
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    db.execute(MIGRATIONS[target])
                db.execute(f"PRAGMA user_version={max(version, SCHEMA_VERSION)}")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT), under the thread lock."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _usage(self) -> int:
        """Bytes of the files the database says are in the spool."""
        with self._lock:
            row = self._db.execute(
                "SELECT (SELECT COALESCE(SUM(size), 0) FROM instances WHERE present = 1) + "
                "(SELECT COALESCE(SUM(r.size), 0) FROM results r JOIN jobs j ON j.id = r.job_id "
                "WHERE j.released_at IS NULL)").fetchone()
        return int(row[0])

    def refresh_usage(self) -> int:
        """Recount :attr:`used_bytes` from the database (another process, such as
        ``galacto gateway purge``, may have released files); returns it."""
        with self._lock:
            self._used = self._usage()
            return self._used

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    @property
    def used_bytes(self) -> int:
        """Bytes of instance and result files in the spool."""
        return self._used

    # -- receiving -----------------------------------------------------------------------

    def has_instance(self, sop_uid: str) -> bool:
        """True when an instance with this SOP Instance UID is held (a C-STORE of it now
        would be a duplicate: stored before, and its job not released)."""
        return self._job_of_instance(sop_uid) is not None

    def check_room(self, size: int) -> None:
        """Raise :class:`SpoolFullError` when ``size`` more bytes would exceed the quota (the
        usage is recounted from the database first, in case another process released files).
        """
        with self._lock:
            if self._fits(size):
                return
            self._used = self._usage()
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
        existing = self._job_of_instance(sop_uid)
        if existing is not None:
            return Stored(StoreOutcome.DUPLICATE, existing)
        self._reserve(len(data))
        try:
            return self._store_reserved(data, study_uid, sop_uid, sop_class_uid, calling_ae,
                                        time.time() if now is None else now)
        finally:
            with self._lock:
                self._reserved -= len(data)

    def _job_of_instance(self, sop_uid: str) -> int | None:
        """The job holding this instance, or None: never stored, its job released, or its
        finished job skipped it (refused by the intake, or not a galactogram image: nothing
        was made of it, so a corrected re-send of the same instance is analysed), except
        for this gateway's own results sent back (:data:`NOT_READMITTED`)."""
        with self._lock:
            row = self._db.execute("SELECT i.job_id, j.state, j.skipped FROM instances i "
                                   "JOIN jobs j ON j.id = i.job_id WHERE i.sop_uid = ? AND "
                                   "j.released_at IS NULL", (sop_uid,)).fetchone()
        if row is None:
            return None
        job_id, state, skipped = int(row[0]), str(row[1]), str(row[2] or "[]")
        if state in {s.value for s in TERMINAL} and any(
                entry.get("sop_instance_uid") == sop_uid
                and not str(entry.get("reason", "")).startswith(NOT_READMITTED)
                for entry in json.loads(skipped)):
            return None
        return job_id

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
                existing = self._job_of_instance(sop_uid)
                if existing is not None:  # the same instance arrived concurrently
                    return Stored(StoreOutcome.DUPLICATE, existing)
                final = self.root / rel
                ensure_dir(final.parent)
                os.replace(tmp, final)
                fsync_dir(final.parent)
                with self._tx() as db:
                    job_id = self._open_job(db, study_uid, calling_ae, now)
                    # REPLACE: a row of a released job gives way to the new one
                    db.execute("INSERT OR REPLACE INTO instances (sop_uid, job_id, sop_class, "
                               "path, size, received_at) VALUES (?, ?, ?, ?, ?, ?)",
                               (sop_uid, job_id, sop_class_uid, str(rel), len(data), now))
                self._used += len(data)
                return Stored(StoreOutcome.STORED, job_id)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _open_job(db: sqlite3.Connection, study_uid: str, calling_ae: str | None,
                  now: float) -> int:
        """The study's job still accepting instances (touched), or a new one."""
        row = db.execute("SELECT id FROM jobs WHERE study_uid = ? AND results_ready = 0 AND "
                         "state IN ('received', 'waiting') ORDER BY id DESC LIMIT 1",
                         (study_uid,)).fetchone()
        if row is not None:
            db.execute("UPDATE jobs SET state = 'received', last_instance_at = ?, "
                       "ready_at = NULL, n_instances = n_instances + 1 WHERE id = ?",
                       (now, row[0]))
            return int(row[0])
        cur = db.execute("INSERT INTO jobs (study_uid, state, calling_ae, created_at, "
                         "last_instance_at, n_instances) VALUES (?, 'received', ?, ?, ?, 1)",
                         (study_uid, calling_ae, now, now))
        return int(cur.lastrowid or 0)

    # -- scheduling ----------------------------------------------------------------------

    def quiet_jobs(self, last_before: float) -> list[int]:
        """Ids of ``received`` jobs whose latest instance arrived at or before
        ``last_before`` (epoch seconds), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE state = 'received' AND "
                                    "last_instance_at <= ? ORDER BY id",
                                    (last_before,)).fetchall()
        return [int(r[0]) for r in rows]

    def mark_waiting(self, job_id: int, now: float | None = None) -> bool:
        """``received`` -> ``waiting``; False when the job was not ``received`` any more."""
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET state = 'waiting', ready_at = ? "
                             "WHERE id = ? AND state = 'received'",
                             (time.time() if now is None else now, job_id))
        return cur.rowcount == 1

    def claim(self, now: float | None = None) -> int | None:
        """Take the oldest due ``waiting`` job (-> ``running``); None when none is due."""
        t = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE state = 'waiting' AND "
                             "(next_attempt_at IS NULL OR next_attempt_at <= ?) "
                             "ORDER BY COALESCE(next_attempt_at, ready_at, created_at), id "
                             "LIMIT 1", (t,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = 'running', started_at = COALESCE(started_at, ?)"
                       " WHERE id = ?", (t, row[0]))
        return int(row[0])

    def claim_job(self, job_id: int, now: float | None = None) -> bool:
        """Take this ``waiting`` job (-> ``running``) whatever its due time; False when it was
        not ``waiting``."""
        t = time.time() if now is None else now
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET state = 'running', "
                             "started_at = COALESCE(started_at, ?) "
                             "WHERE id = ? AND state = 'waiting'", (t, job_id))
        return cur.rowcount == 1

    def queue_depth(self, now: float | None = None) -> int:
        """``waiting`` jobs that are due (ready for a worker now)."""
        t = time.time() if now is None else now
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'waiting' AND "
                                   "(next_attempt_at IS NULL OR next_attempt_at <= ?)",
                                   (t,)).fetchone()
        return int(row[0])

    def recover(self) -> list[int]:
        """Start-up repair, to be called by the one process owning the spool: jobs left
        ``running`` by a crash go back to ``waiting``; stray temporary files, instance files
        without a row and results of jobs whose results were not committed are removed.

        Returns:
            The ids of the jobs resumed.
        """
        with self._tx() as db:
            ids = [int(r[0]) for r in db.execute("SELECT id FROM jobs WHERE state = 'running'")]
            db.execute("UPDATE jobs SET state = 'waiting', next_attempt_at = NULL, "
                       "reason = 'resumed after a restart' WHERE state = 'running'")
        for stray in self.tmp_dir.iterdir():
            stray.unlink(missing_ok=True)
        self._remove_orphans()
        with self._lock:
            self._used = self._usage()
        return ids

    def _remove_orphans(self) -> None:
        with self._lock:
            known = {r[0] for r in self._db.execute(
                "SELECT path FROM instances WHERE present = 1")}
            ready = {str(r[0]) for r in self._db.execute(
                "SELECT id FROM jobs WHERE results_ready = 1")}
            missing = [r[0] for r in self._db.execute(
                "SELECT path FROM instances WHERE present = 1")
                if not (self.root / r[0]).is_file()]
            if missing:
                with self._tx() as db:
                    db.executemany("UPDATE instances SET present = 0 WHERE path = ?",
                                   [(p,) for p in missing])
        for path in self.instances_dir.glob("*/*"):
            if str(path.relative_to(self.root)) not in known:
                path.unlink(missing_ok=True)
        for folder in self.results_dir.iterdir():
            if folder.name not in ready:
                shutil.rmtree(folder, ignore_errors=True)

    # -- processing ----------------------------------------------------------------------

    def instances(self, job_id: int) -> list[InstanceRecord]:
        """The job's instances in the order received."""
        with self._lock:
            rows = self._db.execute("SELECT sop_uid, sop_class, path, size, present FROM "
                                    "instances WHERE job_id = ? ORDER BY received_at, rowid",
                                    (job_id,)).fetchall()
        return [InstanceRecord(r[0], r[1], self.root / r[2], int(r[3]), bool(r[4]))
                for r in rows]

    def results(self, job_id: int) -> list[ResultRecord]:
        """The job's result objects in the order built."""
        with self._lock:
            rows = self._db.execute("SELECT sop_uid, sop_class, path, size, sent_at FROM "
                                    "results WHERE job_id = ? ORDER BY rowid",
                                    (job_id,)).fetchall()
        return [ResultRecord(r[0], r[1], self.root / r[2], int(r[3]), r[4]) for r in rows]

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
            rows.append((sop, job_id, str(ds.SOPClassUID), str(rel), len(data)))
        with self._tx() as db:
            db.executemany("INSERT INTO results (sop_uid, job_id, sop_class, path, size) "
                           "VALUES (?, ?, ?, ?, ?)", rows)
            db.execute("UPDATE jobs SET results_ready = 1, n_analysed = ?, n_findings = ?, "
                       "skipped = ?, timings = ? WHERE id = ?",
                       (analysed, findings, skipped_json(skipped), json.dumps(timings_ms),
                        job_id))
        with self._lock:
            self._used += sum(r[4] for r in rows)
        return self.results(job_id)

    def record_analysis(self, job_id: int, *, analysed: int, skipped: Sequence[Skipped],
                        timings_ms: dict[str, float]) -> None:
        """Record an analysis that produced no result (nothing analysable, or a failure)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET n_analysed = ?, skipped = ?, timings = ? WHERE id = ?",
                       (analysed, skipped_json(skipped), json.dumps(timings_ms), job_id))

    def add_timing(self, job_id: int, name: str, ms: float) -> None:
        """Set one entry of the job's ``timings_ms``."""
        with self._tx() as db:
            row = db.execute("SELECT timings FROM jobs WHERE id = ?", (job_id,)).fetchone()
            timings = json.loads(row[0]) if row else {}
            timings[name] = round(ms, 1)
            db.execute("UPDATE jobs SET timings = ? WHERE id = ?", (json.dumps(timings), job_id))

    def mark_sent(self, sop_uids: Sequence[str], when: float | None = None) -> None:
        """Record that these result objects were delivered."""
        t = time.time() if when is None else when
        with self._tx() as db:
            db.executemany("UPDATE results SET sent_at = ? WHERE sop_uid = ?",
                           [(t, uid) for uid in sop_uids])

    def count_attempt(self, job_id: int) -> int:
        """Add one send attempt; returns the attempts made so far."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET attempts = attempts + 1 WHERE id = ?", (job_id,))
            row = db.execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return int(row[0])

    def retry_later(self, job_id: int, at: float, reason: str) -> None:
        """``running`` -> ``waiting`` until ``at`` (epoch seconds), with the reason."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET state = 'waiting', next_attempt_at = ?, reason = ? "
                       "WHERE id = ?", (at, reason, job_id))

    def finish(self, job_id: int, state: JobState, reason: str | None = None,
               now: float | None = None) -> None:
        """Put the job in a terminal ``state``. After ``sent``, ``kept`` and ``skipped`` the
        instance files are no longer needed and are deleted (unless ``keep_instances``):
        released in the same transaction, unlinked after it under the spool lock, so a new
        instance of the same study cannot see its folder vanish (a crash in between leaves
        files that start-up removes as orphans)."""
        if state not in TERMINAL:
            raise ValueError(f"finish() needs a terminal state ({sorted(TERMINAL)}); "
                             f"got {state}")
        release = state in RELEASED_AT_FINISH and not self.keep_instances
        with self._lock:
            files = [i for i in self.instances(job_id) if i.present] if release else []
            with self._tx() as db:
                db.execute("UPDATE jobs SET state = ?, reason = ?, finished_at = ?, "
                           "next_attempt_at = NULL WHERE id = ?",
                           (state.value, reason, time.time() if now is None else now, job_id))
                if release:
                    db.execute("UPDATE instances SET present = 0 WHERE job_id = ?", (job_id,))
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
        marks = ", ".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(
                "SELECT j.id, j.state, j.study_uid, j.finished_at, "
                "(SELECT COUNT(*) FROM instances i WHERE i.job_id = j.id AND i.present = 1), "
                "(SELECT COALESCE(SUM(size), 0) FROM instances i WHERE i.job_id = j.id AND "
                "i.present = 1), (SELECT COUNT(*) FROM results r WHERE r.job_id = j.id), "
                "(SELECT COALESCE(SUM(size), 0) FROM results r WHERE r.job_id = j.id) "
                f"FROM jobs j WHERE j.released_at IS NULL AND j.state IN ({marks}) AND "
                "j.finished_at <= ? ORDER BY j.finished_at, j.id",
                (*[s.value for s in states], finished_before)).fetchall()
        return [Held(int(r[0]), JobState(r[1]), str(r[2]), float(r[3]), int(r[4]), int(r[6]),
                     int(r[5]) + int(r[7])) for r in rows]

    def release(self, job_id: int, now: float | None = None) -> bool:
        """Release everything a finished job holds: its instance and result files are
        deleted and ``released_at`` is set (the job row stays; its instances are no longer
        duplicates). False when the job is not finished or was released already."""
        t = time.time() if now is None else now
        with self._lock:
            results = self.results(job_id)
            instances = [i for i in self.instances(job_id) if i.present]
            with self._tx() as db:
                marks = ", ".join("?" * len(TERMINAL))
                cur = db.execute(f"UPDATE jobs SET released_at = ? WHERE id = ? AND "
                                 f"released_at IS NULL AND state IN ({marks})",
                                 (t, job_id, *[s.value for s in TERMINAL]))
                if cur.rowcount != 1:
                    return False
                db.execute("UPDATE instances SET present = 0 WHERE job_id = ?", (job_id,))
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
        job = self.job(job_id)
        if job.state not in RESENDABLE:
            raise JobStateError(f"job {job_id} is {job.state.value}; only "
                                f"{', '.join(sorted(RESENDABLE))} jobs can be re-sent")
        if job.released_at is not None:
            raise JobStateError(f"job {job_id}'s files were released after its retention "
                                "period (or by a purge); send the study again")
        if not job.results_ready and not all(i.present for i in self.instances(job_id)):
            raise JobStateError(f"job {job_id} has no results and its instance files were "
                                "deleted; send the study again")
        t = time.time() if now is None else now
        with self._tx() as db:
            if job.state is not JobState.FAILED:
                db.execute("UPDATE results SET sent_at = NULL WHERE job_id = ?", (job_id,))
            db.execute("UPDATE jobs SET state = 'waiting', attempts = 0, ready_at = ?, "
                       "next_attempt_at = NULL, finished_at = NULL, "
                       "reason = 're-send requested' WHERE id = ?", (t, job_id))
        return self.job(job_id)

    # -- queries -------------------------------------------------------------------------

    def job(self, job_id: int) -> Job:
        """The job, or :class:`JobNotFoundError`."""
        with self._lock:
            row = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = ?",
                                   (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job {job_id} in {self.root}")
        return job_from_row(row)

    def jobs(self, state: JobState | None = None, limit: int = 100,
             study_uid: str | None = None) -> list[Job]:
        """Jobs, newest first, optionally of one state or study."""
        where, args = [], []
        if state is not None:
            where.append("j.state = ?")
            args.append(state.value)
        if study_uid is not None:
            where.append("j.study_uid = ?")
            args.append(study_uid)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            rows = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs j {clause} "
                                    "ORDER BY j.id DESC LIMIT ?", (*args, limit)).fetchall()
        return [job_from_row(r) for r in rows]

    def counts(self) -> dict[JobState, int]:
        """Number of jobs in each state (every state listed)."""
        with self._lock:
            rows = dict(self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
        return {s: int(rows.get(s.value, 0)) for s in JobState}
