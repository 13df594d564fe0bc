"""The spool's job bookkeeping: the SQLite schema and its migrations, the job state machine
and every query on the ``jobs``, ``instances`` and ``results`` rows. The files those rows name
are :mod:`serving.gateway.spool`'s; this module reads and writes no file but the database.

The job state machine (states: :class:`~serving.gateway.jobs.JobState`; each move below is one
transaction of a :class:`JobStore` method, and no other code changes a job's state)::

    (no job of the study accepts it)   --add_instance-->   received
    received, waiting (ACCEPTING)      --add_instance-->   received  (same job, touched;
                                                                      until results are built)
    received  --mark_waiting (quiet period over)------->   waiting
    waiting   --claim (oldest due) / claim_job (this)-->   running
    running   --retry_later (send retry due at next_attempt_at)-->   waiting
    running   --resume_running (start-up after a crash)-->   waiting
    running   --finish-->   sent | kept | skipped | failed   (TERMINAL)
    sent, kept, failed (RESENDABLE)    --resend-------->   waiting

What each state means: the :class:`~serving.gateway.jobs.JobState` members. A terminal job's
files are released later (``release``: ``released_at`` set, the row stays); a released job
cannot be re-sent.

States are bound as SQL parameters (``JobState`` values), never spelt in a statement. The
on-disk schema is :data:`SCHEMA` at :data:`SCHEMA_VERSION` (``PRAGMA user_version``); an older
database is brought up to date by :data:`MIGRATIONS` when opened. All access goes through one
connection (autocommit, WAL, ``synchronous=FULL``) under :attr:`JobStore.lock`; every write is
one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction, committed before the method returns.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from serving.gateway import jobs
from serving.gateway.jobs import ACCEPTING, RESENDABLE, TERMINAL, Job, JobState

SCHEMA_VERSION: Final = 2
DB_NAME: Final = "gateway.db"

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

JOB_COLUMNS: Final = """j.id, j.study_uid, j.state, j.calling_ae, j.created_at,
    j.last_instance_at, j.ready_at, j.started_at, j.finished_at, j.next_attempt_at, j.attempts,
    j.reason, j.n_instances, j.n_analysed, j.skipped, j.n_findings,
    (SELECT COUNT(*) FROM results r WHERE r.job_id = j.id),
    (SELECT COUNT(*) FROM results r WHERE r.job_id = j.id AND r.sent_at IS NOT NULL),
    j.timings, j.results_ready, j.released_at"""

NOT_READMITTED: Final = "own_result"
"""Skip reason whose instances stay duplicates after their job finished: this gateway's own
result objects, which a PACS routing the whole study back would otherwise re-send as new
jobs each time."""

#: ``reason`` of a job that was ``running`` when the gateway stopped (see ``resume_running``).
RESUMED: Final = "resumed after a restart"
#: ``reason`` of a job queued again by ``resend``.
RESEND_REQUESTED: Final = "re-send requested"


class SpoolError(Exception):
    """The spool cannot do what was asked; the message says what and why."""


class JobNotFoundError(SpoolError):
    """No job has that id."""


class JobStateError(SpoolError):
    """The job is in a state that does not allow the operation."""


@dataclass(frozen=True)
class ResultRow:
    """A result object written to the spool, to record with :meth:`JobStore.add_results`:
    its UIDs, its path relative to the spool folder and its size in bytes."""

    sop_instance_uid: str
    sop_class_uid: str
    path: str
    size: int


def job_from_row(row: Sequence[Any]) -> Job:
    """A :class:`Job` from a row of ``SELECT {JOB_COLUMNS} FROM jobs j``."""
    skipped = tuple(jobs.Skipped(str(s["sop_instance_uid"]), str(s["reason"]))
                    for s in json.loads(row[14]))
    return Job(id=int(row[0]), study_instance_uid=str(row[1]), state=JobState(row[2]),
               calling_ae_title=row[3], created_at=float(row[4]), last_instance_at=float(row[5]),
               ready_at=row[6], started_at=row[7], finished_at=row[8], next_attempt_at=row[9],
               attempts=int(row[10]), reason=row[11], instances_received=int(row[12]),
               instances_analysed=int(row[13]), skipped=skipped, findings=int(row[15]),
               results_total=int(row[16]), results_sent=int(row[17]),
               timings_ms=dict(json.loads(row[18])), results_ready=bool(row[19]),
               released_at=row[20])


def skipped_json(skipped: Sequence[jobs.Skipped]) -> str:
    """``skipped`` as the JSON stored in ``jobs.skipped``."""
    return json.dumps([{"sop_instance_uid": s.sop_instance_uid, "reason": s.reason}
                       for s in skipped])


def state_marks(states: Collection[JobState]) -> tuple[str, list[str]]:
    """``("?, ?", [values])`` to bind ``states`` in ``state IN (...)`` (sorted values)."""
    return ", ".join("?" * len(states)), sorted(s.value for s in states)


def _now(now: float | None) -> float:
    return time.time() if now is None else now


class JobStore:
    """The database of one spool folder (``root / DB_NAME``, created or migrated when opened);
    safe to use from many threads.

    Args:
        root: the spool folder; instance and result paths in the rows are relative to it.

    Raises:
        SpoolError: the database has a newer schema than this galacto reads.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / DB_NAME
        #: Held around every database access; the spool holds it too where a file operation
        #: must not interleave with another thread's rows (re-entrant).
        self.lock = threading.RLock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._init_schema()

    # -- plumbing ------------------------------------------------------------------------

    def _init_schema(self) -> None:
        """Create the schema, or bring an older one up to :data:`SCHEMA_VERSION`."""
        with self.lock:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise SpoolError(f"{self.path}: schema version {version}; this "
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
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database connection."""
        with self.lock:
            self._db.close()

    def held_bytes(self) -> int:
        """Bytes of the files the database says are in the spool: present instances, and
        results of jobs not released."""
        with self.lock:
            row = self._db.execute(
                "SELECT (SELECT COALESCE(SUM(size), 0) FROM instances WHERE present = 1) + "
                "(SELECT COALESCE(SUM(r.size), 0) FROM results r JOIN jobs j ON j.id = r.job_id "
                "WHERE j.released_at IS NULL)").fetchone()
        return int(row[0])

    # -- receiving -----------------------------------------------------------------------

    def holding_job(self, sop_uid: str) -> int | None:
        """The job holding this instance, or None: never stored, its job released, or its
        finished job skipped it (refused by the intake, or not a galactogram image: nothing
        was made of it, so a corrected re-send of the same instance is analysed), except
        for this gateway's own results sent back (:data:`NOT_READMITTED`)."""
        with self.lock:
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

    def add_instance(self, *, study_uid: str, sop_uid: str, sop_class_uid: str, path: str,
                     size: int, calling_ae: str | None, now: float) -> int:
        """Record a received instance whose file (``path``, relative to the spool folder) is
        already durable, in one transaction with its job: the study's job still accepting
        instances (``received`` or ``waiting``, results not built) goes back to ``received``
        and is touched, or a new ``received`` job is opened. Returns the job id."""
        marks, accepting = state_marks(ACCEPTING)
        with self._tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE study_uid = ? AND results_ready = 0 AND "
                             f"state IN ({marks}) ORDER BY id DESC LIMIT 1",
                             (study_uid, *accepting)).fetchone()
            if row is not None:
                db.execute("UPDATE jobs SET state = ?, last_instance_at = ?, "
                           "ready_at = NULL, n_instances = n_instances + 1 WHERE id = ?",
                           (JobState.RECEIVED.value, now, row[0]))
                job_id = int(row[0])
            else:
                cur = db.execute("INSERT INTO jobs (study_uid, state, calling_ae, created_at, "
                                 "last_instance_at, n_instances) VALUES (?, ?, ?, ?, ?, 1)",
                                 (study_uid, JobState.RECEIVED.value, calling_ae, now, now))
                job_id = int(cur.lastrowid or 0)
            # REPLACE: a row of a released job gives way to the new one
            db.execute("INSERT OR REPLACE INTO instances (sop_uid, job_id, sop_class, "
                       "path, size, received_at) VALUES (?, ?, ?, ?, ?, ?)",
                       (sop_uid, job_id, sop_class_uid, path, size, now))
        return job_id

    # -- scheduling ----------------------------------------------------------------------

    def quiet_jobs(self, last_before: float) -> list[int]:
        """Ids of ``received`` jobs whose latest instance arrived at or before
        ``last_before`` (epoch seconds), oldest first."""
        with self.lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE state = ? AND "
                                    "last_instance_at <= ? ORDER BY id",
                                    (JobState.RECEIVED.value, last_before)).fetchall()
        return [int(r[0]) for r in rows]

    def mark_waiting(self, job_id: int, now: float | None = None) -> bool:
        """``received`` -> ``waiting``; False when the job was not ``received`` any more."""
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET state = ?, ready_at = ? WHERE id = ? AND state = ?",
                             (JobState.WAITING.value, _now(now), job_id,
                              JobState.RECEIVED.value))
        return cur.rowcount == 1

    def claim(self, now: float | None = None) -> int | None:
        """Take the oldest due ``waiting`` job (-> ``running``); None when none is due."""
        t = _now(now)
        with self._tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE state = ? AND "
                             "(next_attempt_at IS NULL OR next_attempt_at <= ?) "
                             "ORDER BY COALESCE(next_attempt_at, ready_at, created_at), id "
                             "LIMIT 1", (JobState.WAITING.value, t)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = ?, started_at = COALESCE(started_at, ?)"
                       " WHERE id = ?", (JobState.RUNNING.value, t, row[0]))
        return int(row[0])

    def claim_job(self, job_id: int, now: float | None = None) -> bool:
        """Take this ``waiting`` job (-> ``running``) whatever its due time; False when it was
        not ``waiting``."""
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET state = ?, started_at = COALESCE(started_at, ?) "
                             "WHERE id = ? AND state = ?",
                             (JobState.RUNNING.value, _now(now), job_id,
                              JobState.WAITING.value))
        return cur.rowcount == 1

    def queue_depth(self, now: float | None = None) -> int:
        """``waiting`` jobs that are due (ready for a worker now)."""
        with self.lock:
            row = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = ? AND "
                                   "(next_attempt_at IS NULL OR next_attempt_at <= ?)",
                                   (JobState.WAITING.value, _now(now))).fetchone()
        return int(row[0])

    def resume_running(self) -> list[int]:
        """Start-up: jobs left ``running`` by a crash go back to ``waiting`` (reason
        :data:`RESUMED`); returns their ids."""
        with self._tx() as db:
            ids = [int(r[0]) for r in db.execute("SELECT id FROM jobs WHERE state = ?",
                                                 (JobState.RUNNING.value,))]
            db.execute("UPDATE jobs SET state = ?, next_attempt_at = NULL, reason = ? "
                       "WHERE state = ?",
                       (JobState.WAITING.value, RESUMED, JobState.RUNNING.value))
        return ids

    def present_instance_paths(self) -> list[str]:
        """Paths (relative to the spool folder) of the instance files the rows say are
        present."""
        with self.lock:
            return [str(r[0]) for r in self._db.execute(
                "SELECT path FROM instances WHERE present = 1")]

    def ready_job_ids(self) -> set[int]:
        """Ids of the jobs whose result objects were recorded (``results_ready``)."""
        with self.lock:
            return {int(r[0]) for r in self._db.execute(
                "SELECT id FROM jobs WHERE results_ready = 1")}

    def mark_absent(self, paths: Sequence[str]) -> None:
        """Record that these instance files (relative paths) are no longer present."""
        with self._tx() as db:
            db.executemany("UPDATE instances SET present = 0 WHERE path = ?",
                           [(p,) for p in paths])

    # -- processing ----------------------------------------------------------------------

    def instances(self, job_id: int) -> list[jobs.InstanceRecord]:
        """The job's instances in the order received (absolute paths)."""
        with self.lock:
            rows = self._db.execute("SELECT sop_uid, sop_class, path, size, present FROM "
                                    "instances WHERE job_id = ? ORDER BY received_at, rowid",
                                    (job_id,)).fetchall()
        return [jobs.InstanceRecord(r[0], r[1], self.root / r[2], int(r[3]), bool(r[4]))
                for r in rows]

    def results(self, job_id: int) -> list[jobs.ResultRecord]:
        """The job's result objects in the order built (absolute paths)."""
        with self.lock:
            rows = self._db.execute("SELECT sop_uid, sop_class, path, size, sent_at FROM "
                                    "results WHERE job_id = ? ORDER BY rowid",
                                    (job_id,)).fetchall()
        return [jobs.ResultRecord(r[0], r[1], self.root / r[2], int(r[3]), r[4]) for r in rows]

    def add_results(self, job_id: int, rows: Sequence[ResultRow], *, analysed: int,
                    skipped: Sequence[jobs.Skipped], findings: int,
                    timings_ms: dict[str, float]) -> None:
        """Record the job's result objects (files already durable) and its analysis in one
        transaction, setting ``results_ready``."""
        with self._tx() as db:
            db.executemany("INSERT INTO results (sop_uid, job_id, sop_class, path, size) "
                           "VALUES (?, ?, ?, ?, ?)",
                           [(r.sop_instance_uid, job_id, r.sop_class_uid, r.path, r.size)
                            for r in rows])
            db.execute("UPDATE jobs SET results_ready = 1, n_analysed = ?, n_findings = ?, "
                       "skipped = ?, timings = ? WHERE id = ?",
                       (analysed, findings, skipped_json(skipped), json.dumps(timings_ms),
                        job_id))

    def record_analysis(self, job_id: int, *, analysed: int, skipped: Sequence[jobs.Skipped],
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
        t = _now(when)
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
            db.execute("UPDATE jobs SET state = ?, next_attempt_at = ?, reason = ? "
                       "WHERE id = ?", (JobState.WAITING.value, at, reason, job_id))

    def finish(self, job_id: int, state: JobState, reason: str | None = None,
               now: float | None = None, *, release_instances: bool = False) -> None:
        """Put the job in a terminal ``state``, and when ``release_instances`` mark its
        instances no longer present, in one transaction (the caller deletes the files after).

        Raises:
            ValueError: ``state`` is not terminal.
        """
        if state not in TERMINAL:
            raise ValueError(f"finish() needs a terminal state ({sorted(TERMINAL)}); "
                             f"got {state}")
        with self._tx() as db:
            db.execute("UPDATE jobs SET state = ?, reason = ?, finished_at = ?, "
                       "next_attempt_at = NULL WHERE id = ?",
                       (state.value, reason, _now(now), job_id))
            if release_instances:
                db.execute("UPDATE instances SET present = 0 WHERE job_id = ?", (job_id,))

    def releasable(self, finished_before: float, states: Sequence[JobState] = tuple(TERMINAL)
                   ) -> list[jobs.Held]:
        """Finished, not yet released jobs in ``states`` that finished at or before
        ``finished_before`` (epoch seconds), oldest first, with what they still hold."""
        marks = ", ".join("?" * len(states))
        with self.lock:
            rows = self._db.execute(
                "SELECT j.id, j.state, j.study_uid, j.finished_at, "
                "(SELECT COUNT(*) FROM instances i WHERE i.job_id = j.id AND i.present = 1), "
                "(SELECT COALESCE(SUM(size), 0) FROM instances i WHERE i.job_id = j.id AND "
                "i.present = 1), (SELECT COUNT(*) FROM results r WHERE r.job_id = j.id), "
                "(SELECT COALESCE(SUM(size), 0) FROM results r WHERE r.job_id = j.id) "
                f"FROM jobs j WHERE j.released_at IS NULL AND j.state IN ({marks}) AND "
                "j.finished_at <= ? ORDER BY j.finished_at, j.id",
                (*[s.value for s in states], finished_before)).fetchall()
        return [jobs.Held(int(r[0]), JobState(r[1]), str(r[2]), float(r[3]), int(r[4]), int(r[6]),
                     int(r[5]) + int(r[7])) for r in rows]

    def release(self, job_id: int, now: float | None = None) -> bool:
        """Set a finished job's ``released_at`` and mark its instances no longer present, in
        one transaction (the caller deletes the files after). False when the job is not
        finished or was released already (nothing changed)."""
        marks, terminal = state_marks(TERMINAL)
        with self._tx() as db:
            cur = db.execute(f"UPDATE jobs SET released_at = ? WHERE id = ? AND "
                             f"released_at IS NULL AND state IN ({marks})",
                             (_now(now), job_id, *terminal))
            if cur.rowcount != 1:
                return False
            db.execute("UPDATE instances SET present = 0 WHERE job_id = ?", (job_id,))
        return True

    def resend(self, job_id: int, now: float | None = None) -> Job:
        """Queue a finished job again (-> ``waiting``, reason :data:`RESEND_REQUESTED`):
        ``sent``/``kept`` jobs re-send every result, ``failed`` jobs send what was not
        delivered (or are analysed again when the analysis failed).

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
        t = _now(now)
        with self._tx() as db:
            # the checks above ran outside the transaction: move the job only if it is still
            # the finished, unreleased job they saw (retention or a purge, possibly in another
            # process, may have released it since), else undo and refuse
            if job.state is not JobState.FAILED:
                db.execute("UPDATE results SET sent_at = NULL WHERE job_id = ?", (job_id,))
            moved = db.execute("UPDATE jobs SET state = ?, attempts = 0, ready_at = ?, "
                               "next_attempt_at = NULL, finished_at = NULL, reason = ? "
                               "WHERE id = ? AND state = ? AND released_at IS NULL",
                               (JobState.WAITING.value, t, RESEND_REQUESTED, job_id,
                                job.state.value)).rowcount
            if moved != 1:
                raise JobStateError(f"job {job_id} changed while it was being queued again "
                                    "(released or moved by another process); look at it again")
        return self.job(job_id)

    # -- queries -------------------------------------------------------------------------

    def job(self, job_id: int) -> Job:
        """The job, or :class:`JobNotFoundError`."""
        with self.lock:
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
        with self.lock:
            rows = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs j {clause} "
                                    "ORDER BY j.id DESC LIMIT ?", (*args, limit)).fetchall()
        return [job_from_row(r) for r in rows]

    def counts(self) -> dict[JobState, int]:
        """Number of jobs in each state (every state listed)."""
        with self.lock:
            rows = dict(self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
        return {s: int(rows.get(s.value, 0)) for s in JobState}
