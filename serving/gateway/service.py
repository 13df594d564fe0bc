"""The gateway: DICOM listener, durable spool, study grouping, workers and result sender.

:class:`Gateway` runs standalone (``galacto gateway run``) or inside ``galacto serve``
(:func:`embedded_gateway`, when ``GALACTO_GATEWAY_ENABLED`` is true). Its threads:

- the pynetdicom listener (one thread per association) stores instances in the spool;
- the scheduler (one thread, ticking every ``quiet_period_s / 5`` s, at most 1 s) moves a
  study job to ``waiting`` when no instance arrived for ``quiet_period_s`` and the association
  that sent its latest instance is closed or has moved on to another study (an open one holds
  it for at most ``HOLD_FACTOR`` quiet periods: a large instance may still be on the wire),
  then hands due jobs to the workers, never more than ``workers`` at once (the queue stays in
  the database);
- the workers analyse the study, store the result objects in the spool, and send them; a
  failed send is retried after ``backoff_s * 2**(k-1)`` s (k = 1, 2, ...), scheduled rather
  than slept, and after ``send_retries`` retries the job is ``failed`` and kept for re-send.

Everything the gateway must not forget is in the spool's SQLite database, so a restart resumes
where a crash stopped: studies still in their quiet period, jobs waiting, jobs that were
running (analysed again, or only sent when their results were already stored: the same SOP
Instance UIDs, so a destination that got them before a crash sees duplicates, not new objects).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Final

from prometheus_client import CollectorRegistry

from serving.gateway.analysis import analyse_study
from serving.gateway.jobs import skipped_reason
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.retention import RetentionSweeper
from serving.gateway.scp import StoreSCP
from serving.gateway.sender import Sender, make_sender
from serving.gateway.settings import GatewaySettings, is_loopback
from serving.gateway.spool import LOCK_NAME, TERMINAL, Job, JobState, Spool, uid_tag
from serving.pipeline.calibration import calibrated_model
from serving.pipeline.model import DetectorModel, default_model_dir, load_model

log = logging.getLogger("galacto.gateway")

#: A study is held while an association that sent to it is open, for at most this many quiet
#: periods after its latest instance.
HOLD_FACTOR: Final = 10
#: Longest scheduler tick, seconds.
MAX_TICK_S: Final = 1.0


class GatewayError(Exception):
    """The gateway cannot start or do what was asked; the message says why."""


def _lock(spool_dir: Path) -> IO[str]:
    """Hold the spool's lock file for this process; :class:`GatewayError` when another process
    (or another gateway in this one) holds it."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    fh = open(spool_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held open until close()
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise GatewayError(f"spool {spool_dir} is in use by another gateway (pid {holder}); "
                           "expected one gateway per spool folder") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def spool_in_use(spool_dir: Path) -> bool:
    """True when a gateway process holds ``spool_dir``'s lock right now."""
    path = Path(spool_dir) / LOCK_NAME
    if not path.exists():
        return False
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return False


class Gateway:
    """The DICOM gateway.

    Args:
        settings: see :class:`GatewaySettings`.
        registry: Prometheus registry for the metrics (e.g. the HTTP app's); a new one if None.
        model: an already loaded detector; loaded from ``settings.model`` (or the bundled
            default) when first needed if None.
        sender: where results go; from the settings if None (:func:`make_sender`).
        listen: run the DICOM listener (False: only process jobs already in the spool, as
            ``galacto gateway resend`` does when no gateway is running).
    """

    def __init__(self, settings: GatewaySettings, *, registry: CollectorRegistry | None = None,
                 model: DetectorModel | None = None, sender: Sender | None = None,
                 listen: bool = True) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics(registry)
        self.sender = sender if sender is not None else make_sender(settings)
        self.listen = listen
        self._model = model
        self._model_lock = threading.Lock()
        self._spool: Spool | None = None
        self._retention: RetentionSweeper | None = None
        self._scp: StoreSCP | None = None
        self._lock_fh: IO[str] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._scheduler: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._running = 0
        self._running_lock = threading.Lock()

    # -- life cycle ----------------------------------------------------------------------

    @property
    def spool(self) -> Spool:
        """The open spool (:class:`GatewayError` before :meth:`open`)."""
        if self._spool is None:
            raise GatewayError("the gateway is not open: call start() (or open()) first")
        return self._spool

    @property
    def port(self) -> int:
        """The DICOM port listened on."""
        if self._scp is None:
            raise GatewayError("the DICOM listener is not running")
        return self._scp.port

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._scheduler is not None

    def open(self) -> list[int]:
        """Take the spool (lock), open its database and repair what a crash left; returns
        the ids of jobs resumed."""
        if self._spool is not None:
            return []
        self._lock_fh = _lock(self.settings.spool_dir)
        try:
            self._spool = Spool(self.settings.spool_dir,
                                max_bytes=self.settings.spool_max_bytes,
                                keep_instances=self.settings.keep_instances)
            resumed = self._spool.recover()
        except BaseException:
            self.close()
            raise
        self._retention = RetentionSweeper(self._spool, self.settings.retain_s, self.metrics)
        if resumed:
            log.info("resuming %d unfinished job(s)", len(resumed), extra={"jobs": resumed})
        return resumed

    def start(self) -> Gateway:
        """Open the spool, load the model, start workers, scheduler and listener.

        Raises:
            GatewayError: the listener would be open to anyone (see
                :meth:`GatewaySettings.exposure_error`), or the spool is in use.
        """
        exposure = self.settings.exposure_error() if self.listen else None
        if exposure is not None:
            raise GatewayError(f"refusing to start: {exposure}")
        self.open()
        try:
            self.model()
            self._pool = ThreadPoolExecutor(self.settings.workers,
                                            thread_name_prefix="galacto-gateway-worker")
            if self.listen:
                self._scp = StoreSCP(self.settings, self.spool, self.metrics)
                self._scp.start()
            self._stop.clear()
            self._scheduler = threading.Thread(target=self._schedule_loop,
                                               name="galacto-gateway-scheduler", daemon=True)
            self._scheduler.start()
        except BaseException:
            self.stop()
            raise
        if self._scp is not None:
            log.info("gateway %s listening on %s:%d; results to %s", self.settings.ae_title,
                     self.settings.host, self._scp.port, self.settings.describe_destination())
            self._warn_open()
        return self

    def _warn_open(self) -> None:
        """Log what makes the listener easier to reach than it should be."""
        if not self.settings.allowed_callers and not is_loopback(self.settings.host):
            log.warning("GALACTO_GATEWAY_ALLOW_ANY is set: the gateway accepts C-STORE from any "
                        "calling AE title on %s", self.settings.host)
        for rule in self.settings.unbound_callers():
            log.warning("allow-list entry %s names no host: any machine may use that AE title "
                        "(it is not a secret); %s@host is the secure form", rule,
                        rule.ae_title, extra={"calling_ae": rule.ae_title})

    def stop(self) -> None:
        """Stop listening, let running jobs finish, close the spool and release it."""
        self._stop.set()
        self._wake.set()
        if self._scp is not None:
            self._scp.stop()
            self._scp = None
        if self._scheduler is not None:
            self._scheduler.join()
            self._scheduler = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.close()

    def close(self) -> None:
        """Close the spool and release its lock (after :meth:`stop`, or after :meth:`open`)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
            self._retention = None
        if self._lock_fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def model(self) -> DetectorModel:
        """The detector (loaded on first use; the operating point is checked then)."""
        with self._model_lock:
            if self._model is None:
                folder = self.settings.model or default_model_dir()
                self._model = calibrated_model(
                    load_model(folder, threads=self.settings.ort_threads,
                               providers=self.settings.ort_providers),
                    self.settings.calibration)
            self._model.operating_point(self.settings.operating_point)
            return self._model

    # -- scheduling ----------------------------------------------------------------------

    def _schedule_loop(self) -> None:
        tick = min(self.settings.quiet_period_s / 5, MAX_TICK_S)
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # keep scheduling; the next tick tries again
                log.error("scheduler tick failed", extra={"exc_type": type(exc).__name__})
            self._wake.wait(tick)
            self._wake.clear()

    def tick(self, now: float | None = None) -> None:
        """One scheduling step: end quiet periods, hand due jobs to free workers."""
        t = time.time() if now is None else now
        if self._retention is not None:
            self._retention.tick(t)
        self._end_quiet_periods(t)
        while self._pool is not None and not self._stop.is_set():
            with self._running_lock:
                if self._running >= self.settings.workers:
                    break
                job_id = self.spool.claim(t)
                if job_id is None:
                    break
                self._running += 1
            self._pool.submit(self._run_job, job_id)
        self.metrics.queue_depth.set(self.spool.queue_depth(t))
        self.metrics.running.set(self._running)
        self.metrics.spool_bytes.set(self.spool.used_bytes)

    def _end_quiet_periods(self, now: float) -> None:
        quiet = self.settings.quiet_period_s
        held = self._scp.held_jobs() if self._scp is not None else set()
        for job_id in self.spool.quiet_jobs(now - quiet):
            if job_id in held and \
                    now - self.spool.job(job_id).last_instance_at < HOLD_FACTOR * quiet:
                continue
            self.spool.mark_waiting(job_id, now)

    def _run_job(self, job_id: int) -> None:
        try:
            self.process(job_id)
        except Exception as exc:  # never lose the worker thread; the job records the failure
            log.error("job %d failed unexpectedly (%s)", job_id, type(exc).__name__,
                      extra={"job": job_id, "exc_type": type(exc).__name__})
            with contextlib.suppress(Exception):
                self._finish(job_id, JobState.FAILED,
                             f"internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._running_lock:
                self._running -= 1
            self._wake.set()

    # -- processing ----------------------------------------------------------------------

    def process(self, job_id: int) -> Job:
        """Analyse (unless the results are stored already) and send one ``running`` job;
        returns the job as it ended (terminal, or ``waiting`` for a retry)."""
        job = self.spool.job(job_id)
        if not job.results_ready and not self._analyse(job):
            return self.spool.job(job_id)
        self._send(job_id)
        return self.spool.job(job_id)

    def _analyse(self, job: Job) -> bool:
        """Analyse and store the results; False when the job ended (failed or skipped)."""
        s = self.settings
        try:
            analysis = analyse_study(self.spool.instances(job.id), self.model(),
                                     operating_point=s.operating_point, kinds=s.results,
                                     limits=s.limits, tomo=s.tomo_for(self.model()),
                                     job_id=job.id)
        except Exception as exc:
            log.error("job %d: analysis failed (%s)", job.id, type(exc).__name__,
                      extra={"job": job.id, "exc_type": type(exc).__name__})
            self._finish(job.id, JobState.FAILED,
                         f"analysis failed: {type(exc).__name__}: {exc}")
            return False
        if not analysis.results:
            self.spool.record_analysis(job.id, analysed=analysis.analysed,
                                       skipped=analysis.skipped, timings_ms=analysis.timings_ms)
            self._finish(job.id, JobState.SKIPPED, skipped_reason(analysis.skipped))
            return False
        self.spool.save_results(job.id, analysis.results, analysed=analysis.analysed,
                                skipped=analysis.skipped, findings=analysis.findings,
                                timings_ms=analysis.timings_ms)
        log.info("job %d: study %s analysed: %d image(s), %d skipped, %d finding(s), "
                 "%d result(s)", job.id, uid_tag(job.study_instance_uid), analysis.analysed,
                 len(analysis.skipped), analysis.findings, len(analysis.results),
                 extra={"job": job.id, "study": uid_tag(job.study_instance_uid)})
        return True

    def _send(self, job_id: int) -> None:
        if self.sender is None:
            self._finish(job_id, JobState.KEPT, "no destination configured: results are in "
                                                "the spool only")
            return
        pending = [r for r in self.spool.results(job_id) if r.sent_at is None]
        attempt = self.spool.count_attempt(job_id)
        t0 = time.perf_counter()
        outcome = self.sender.send(pending)
        self.spool.add_timing(job_id, "send", (time.perf_counter() - t0) * 1e3)
        if outcome.sent:
            self.spool.mark_sent(outcome.sent)
        if outcome.error is None and len(outcome.sent) == len(pending):
            self._finish(job_id, JobState.SENT)
            return
        self.metrics.send_failures.inc()
        error = outcome.error or f"{len(pending) - len(outcome.sent)} result(s) not delivered"
        retries = self.settings.send_retries
        if attempt > retries:
            log.error("job %d: sending failed after %d attempt(s); kept for re-send", job_id,
                      attempt, extra={"job": job_id, "attempts": attempt})
            self._finish(job_id, JobState.FAILED,
                         f"sending failed after {attempt} attempt(s): {error}")
            return
        delay = self.settings.backoff_s * 2 ** (attempt - 1)
        log.warning("job %d: sending failed; retry %d/%d in %g s", job_id, attempt, retries,
                    delay, extra={"job": job_id})
        self.spool.retry_later(job_id, time.time() + delay,
                               f"attempt {attempt} failed: {error}; retry {attempt} of "
                               f"{retries} in {delay:g} s")
        self._wake.set()

    def _finish(self, job_id: int, state: JobState, reason: str | None = None) -> None:
        self.metrics.studies.labels(state.value).inc()  # counted before anyone sees the state
        self.spool.finish(job_id, state, reason)
        log.info("job %d %s", job_id, state.value, extra={"job": job_id, "state": state.value})

    # -- operations ----------------------------------------------------------------------

    def jobs(self, state: JobState | None = None, limit: int = 100) -> list[Job]:
        """Jobs, newest first."""
        return self.spool.jobs(state=state, limit=limit)

    def job(self, job_id: int) -> Job:
        """One job (:class:`serving.gateway.spool.JobNotFoundError` when unknown)."""
        return self.spool.job(job_id)

    def resend(self, job_id: int) -> Job:
        """Queue a finished job for sending again (see :meth:`Spool.resend`)."""
        if self.sender is None:
            raise GatewayError("no destination is configured (set GALACTO_GATEWAY_DESTINATION_* "
                               "or GALACTO_GATEWAY_STOW_URL): there is nowhere to re-send to")
        job = self.spool.resend(job_id)
        log.info("job %d: re-send requested", job_id, extra={"job": job_id})
        self._wake.set()
        return job

    def process_now(self, job_id: int) -> Job:
        """Take a ``waiting`` job and process it in this thread (no scheduler needed), as
        ``galacto gateway resend`` does when no gateway is running.

        Raises:
            GatewayError: the job is not ``waiting``.
        """
        if not self.spool.claim_job(job_id):
            raise GatewayError(f"job {job_id} is {self.spool.job(job_id).state.value}; "
                               "expected waiting")
        try:
            return self.process(job_id)
        except Exception as exc:
            self.spool.finish(job_id, JobState.FAILED,
                              f"internal error: {type(exc).__name__}: {exc}")
            raise

    def wait(self, job_id: int, states: Iterable[JobState] = TERMINAL,
             timeout_s: float = 60.0) -> Job:
        """Poll until the job is in one of ``states``; :class:`TimeoutError` after
        ``timeout_s`` seconds, naming the state it is in."""
        wanted = set(states)
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.spool.job(job_id)
            if job.state in wanted:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is {job.state.value} after {timeout_s:g} s; "
                                   f"expected one of {sorted(s.value for s in wanted)}")
            time.sleep(0.05)


def embedded_gateway(registry: CollectorRegistry | None = None,
                     settings: GatewaySettings | None = None) -> Gateway | None:
    """The gateway to run inside ``galacto serve``: started when ``GALACTO_GATEWAY_ENABLED``
    is true, else None. Its metrics go into ``registry`` (the app's)."""
    settings = settings or GatewaySettings()
    if not settings.enabled:
        return None
    return Gateway(settings, registry=registry).start()
