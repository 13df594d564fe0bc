"""Retention of the spool: finished jobs release their files after a period, or on demand.

A finished job holds files for a while: a ``failed`` job its instance files (to be analysed
again on re-send) and its results (to be sent again), ``sent`` and ``kept`` jobs their results
(and their instance files with ``keep_instances``). Without a limit the spool fills for good
and every C-STORE gets 0xA700. So:

- at finish, instance files nothing needs are deleted at once (:meth:`Spool.finish`: ``sent``,
  ``kept`` and ``skipped`` jobs, unless ``keep_instances``);
- :class:`RetentionSweeper` (run by the gateway's scheduler every :data:`SWEEP_INTERVAL_S`
  seconds) releases every job that finished more than ``retain_hours`` ago
  (``GALACTO_GATEWAY_RETAIN_HOURS``, default 168): its remaining instance and result files are
  deleted, ``released_at`` is set, the job row stays for the record;
- :func:`purge` does the same on demand (``galacto gateway purge``), for chosen states and ages.

A released job cannot be re-sent, and an instance re-sent after its job was released is no
longer a duplicate: it starts a new job and is analysed again (with the model running then).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from serving.gateway.jobs import TERMINAL, Held, JobState
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.spool import Spool

log = logging.getLogger("galacto.gateway")

#: Seconds between two retention sweeps of a running gateway.
SWEEP_INTERVAL_S: Final = 60.0
#: Units of an age such as ``36h``: seconds per unit.
AGE_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_AGE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


@dataclass
class PurgeReport:
    """What :func:`purge` released (or would release, for a dry run).

    Attributes:
        jobs: the jobs, oldest first, with the files they held.
        dry_run: nothing was deleted.
    """

    jobs: list[Held] = field(default_factory=list)
    dry_run: bool = False

    @property
    def bytes(self) -> int:
        """Bytes of the files released."""
        return sum(h.size for h in self.jobs)


def parse_age(text: str) -> float:
    """An age such as ``90m``, ``36h``, ``7d`` or ``3600`` (seconds) -> seconds.

    Raises:
        ValueError: not a non-negative number with an optional unit s, m, h or d.
    """
    m = _AGE_RE.match(text)
    if m is None:
        raise ValueError(f"age must be a non-negative number with an optional unit s, m, h "
                         f"or d (e.g. 36h, 7d); found {text!r}")
    return float(m.group(1)) * AGE_UNITS[m.group(2) or "s"]


def parse_states(text: str) -> list[JobState]:
    """A comma list of finished states (``sent,kept,skipped,failed``) -> states.

    Raises:
        ValueError: an unknown state, or one of a job that is not finished.
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    finished = sorted(s.value for s in TERMINAL)
    if not names:
        raise ValueError(f"no state given; expected a comma list of {', '.join(finished)}")
    states = []
    for name in names:
        if name not in finished:
            raise ValueError(f"state {name!r} cannot be purged; expected finished states: "
                             f"{', '.join(finished)} (jobs still received, waiting or running "
                             "are never purged)")
        states.append(JobState(name))
    return states


def purge(spool: Spool, older_than_s: float, states: Sequence[JobState] = tuple(TERMINAL), *,
          dry_run: bool = False, now: float | None = None) -> PurgeReport:
    """Release the files of jobs in ``states`` that finished at least ``older_than_s``
    seconds ago (0: every such job).

    Returns:
        The jobs released (for a dry run: those that would be), oldest first.
    """
    t = time.time() if now is None else now
    held = spool.releasable(t - older_than_s, states)
    if dry_run:
        return PurgeReport(held, dry_run=True)
    return PurgeReport([h for h in held if spool.release(h.job_id, t)])


class RetentionSweeper:
    """Releases jobs past the retention period, at most every :data:`SWEEP_INTERVAL_S`.

    Args:
        spool: the gateway's spool.
        retain_s: retention period, seconds after a job finished.
        metrics: ``jobs_released`` and ``spool_bytes`` are updated.
    """

    def __init__(self, spool: Spool, retain_s: float, metrics: GatewayMetrics) -> None:
        self.spool = spool
        self.retain_s = retain_s
        self.metrics = metrics
        self._next = 0.0

    def tick(self, now: float | None = None) -> list[Held]:
        """Sweep when the interval is over (the first call always sweeps)."""
        t = time.time() if now is None else now
        if t < self._next:
            return []
        self._next = t + SWEEP_INTERVAL_S
        return self.sweep(t)

    def sweep(self, now: float | None = None) -> list[Held]:
        """Release every job that finished more than ``retain_s`` ago; returns them."""
        report = purge(self.spool, self.retain_s, now=now)
        if report.jobs:
            self.metrics.jobs_released.inc(len(report.jobs))
            self.metrics.spool_bytes.set(self.spool.used_bytes)
            log.info("retention: released %d finished job(s), %.1f MiB",
                     len(report.jobs), report.bytes / 2**20,
                     extra={"jobs": [h.job_id for h in report.jobs]})
        return report.jobs
