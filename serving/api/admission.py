"""Fair admission: which requests may read their body and wait for an inference slot.

At most ``capacity`` requests are admitted at once (``GALACTO_MAX_CONCURRENT_INFERENCES +
GALACTO_MAX_QUEUE``), and at most ``per_client`` of one client
(``GALACTO_MAX_ADMITTED_PER_CLIENT``). A client is its API key when auth is on, else its peer
address (:func:`client_of`); behind a reverse proxy every client has the proxy's address, so
give each client its own key there.

When a request arrives, before a byte of its body is read (:meth:`Ledger.admit`):

1. its client holds ``per_client`` admitted requests already: 503 ``busy``;
2. a place is free: it is admitted;
3. every place is taken: it takes the place of an admitted request that is still reading
   its body, has fallen more than :data:`BEHIND_SLACK_S` seconds behind the minimum body rate
   (:meth:`serving.api.deadlines.BodyClock.behind`: a client sending 1 byte/s inside its
   grace) or is a suspect's (below; only for a request of a client in good standing), and
   belongs to a client holding at least as many admitted requests as the new one's client
   will hold with it; among those, a suspect's first, then the one whose client holds most,
   then the one reading longest. The displaced request is answered 503 ``busy`` at once and
   its connection closed. When there is none, the new request gets 503 ``busy``.

A client in good standing sending at the minimum rate or faster is never displaced, so an
upload on a slow but legitimate link keeps its place; a flood of slow bodies cannot keep a
well-behaved client out, and one client cannot hold more than its share.

**Suspect clients.** A client that sent, within the last ``GALACTO_SUSPECT_HOLD_S`` seconds
(default :data:`SUSPECT_S`; 0: no client is ever suspect), a request
refused as hostile (:data:`HOSTILE_DETAILS`: a body too slow, too large or of too many parts,
a part that is not DICOM, inflates beyond the pixel limit or floods elements) is *suspect*
(:class:`Suspects`). Suspect clients together hold at most half of the places
(:meth:`Ledger.suspect_share`; beyond: 503 ``busy``), a request of a client in good standing
may take the place of a suspect's body read whatever its rate (rule 3), and triage serves
clients in good standing first (:class:`serving.api.turns.Turns`). A client that re-sends
refused requests at once thus cannot take the places and the triage turns of the others; a
misconfigured but honest client is only served after them for a minute.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TypeVar

from starlette.requests import Request

from serving.api.deadlines import BodyClock
from serving.api.errors import CLOSE, ApiError

T = TypeVar("T")

#: Seconds a body must be behind the minimum rate before its place can be taken.
BEHIND_SLACK_S = 1.0
#: Seconds a client stays suspect after a request refused as hostile.
SUSPECT_S = 60.0
#: Most clients remembered as suspect (the oldest are forgotten first).
MAX_SUSPECTS = 10_000
#: Refusals (``detail``) that make a client suspect: malformed, oversized or too slow input.
HOSTILE_DETAILS = frozenset({"body_timeout", "upload_too_large", "too_many_parts",
                             "malformed_multipart", "image_too_large", "invalid_header",
                             "not_dicom"})


def client_of(request: Request, auth: bool) -> str:
    """Who sent ``request``: a digest of its Bearer key when auth is on (the middleware has
    checked the key already), else its peer address."""
    if auth:
        token = request.headers.get("authorization", "").partition(" ")[2].strip()
        return "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return "addr:" + (request.client.host if request.client else "unknown")


class Suspects:
    """Clients refused as hostile in the last ``hold_s`` seconds (at most ``most``)."""

    def __init__(self, hold_s: float = SUSPECT_S, most: int = MAX_SUSPECTS) -> None:
        self.hold_s = hold_s
        self.most = most
        self._until: dict[str, float] = {}

    def mark(self, client: str) -> None:
        """``client`` sent a request refused as hostile now (nothing when ``hold_s`` is 0).
        """
        if self.hold_s <= 0:
            return
        self._until.pop(client, None)
        self._until[client] = time.monotonic() + self.hold_s
        while len(self._until) > self.most:
            del self._until[next(iter(self._until))]

    def __contains__(self, client: object) -> bool:
        until = self._until.get(str(client))
        if until is None:
            return False
        if until < time.monotonic():
            del self._until[str(client)]
            return False
        return True


class Admission:
    """One admitted request of ``client``, reading its body until :meth:`read` returns."""

    def __init__(self, client: str, clock: BodyClock | None) -> None:
        self.client = client
        self.clock = clock
        self.since = time.monotonic()
        self.reading = True
        self._displaced: asyncio.Future[ApiError] = asyncio.get_running_loop().create_future()

    @property
    def displaced(self) -> bool:
        """Whether its place was given away."""
        return self._displaced.done()

    def displaceable(self, now: float, suspect: bool) -> bool:
        """Still reading a body, behind the minimum rate unless ``suspect``."""
        if not self.reading or self.displaced:
            return False
        return suspect or (self.clock is not None and self.clock.behind(now, BEHIND_SLACK_S))

    def waited(self, now: float) -> float:
        """Seconds this request has waited for its body."""
        return now - self.since if self.clock is None else self.clock.waited_now(now)

    def displace(self, error: ApiError) -> None:
        """Give this request's place away: its :meth:`read` ends with ``error``."""
        if not self._displaced.done():
            self._displaced.set_result(error)

    async def read(self, body: Awaitable[T]) -> T:
        """Await the body read ``body``, unless the place is given away meanwhile.

        Raises:
            ApiError: 503 ``busy`` (connection closed) when displaced; the read is cancelled.
        """
        reading = asyncio.ensure_future(body)
        waits: set[asyncio.Future[object]] = {reading, self._displaced}  # type: ignore[arg-type]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this request itself was cancelled
            reading.cancel()
            raise
        if self.displaced:
            reading.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await reading
            raise self._displaced.result()
        self.reading = False
        return reading.result()


def displaced_error(retry_after_s: int) -> ApiError:
    """503 ``busy`` (connection closed) for a slow body whose place another client's
    request took."""
    return ApiError(503, "busy", "the request body came too slowly while every place was "
                    "taken; its place was given to another client's request",
                    headers={**CLOSE, "Retry-After": str(retry_after_s)})


class Ledger:
    """The admitted requests and the policy of the module docstring."""

    def __init__(self, capacity: int, per_client: int | None, retry_after_s: int,
                 suspect_hold_s: float = SUSPECT_S) -> None:
        self.capacity = capacity
        self.per_client = per_client
        self.retry_after_s = retry_after_s
        self.entries: list[Admission] = []
        self.suspects = Suspects(suspect_hold_s)
        self.displaced = 0
        """Requests whose place was given to another client's request."""

    @property
    def suspect_share(self) -> int:
        """Places suspect clients may hold together: half, at least one."""
        return max(1, self.capacity // 2)

    def held_by(self, client: str) -> int:
        """Admitted requests of ``client``."""
        return sum(1 for a in self.entries if a.client == client)

    def admit(self, client: str, clock: BodyClock | None,
              busy: Callable[[str], ApiError]) -> Admission:
        """Admit a request of ``client`` (``clock``: its body clock), or raise
        ``busy(reason)``."""
        held = self.held_by(client)
        if self.per_client is not None and held >= self.per_client:
            raise busy(f"this client has {held} request(s) admitted already (limit "
                       f"{self.per_client}, GALACTO_MAX_ADMITTED_PER_CLIENT)")
        suspect = client in self.suspects
        if suspect and sum(a.client in self.suspects for a in self.entries) \
                >= self.suspect_share:
            raise busy(f"clients whose requests were refused as malformed, oversized or too "
                       f"slow in the last {self.suspects.hold_s:.0f} s share "
                       f"{self.suspect_share} place(s), all taken")
        if len(self.entries) >= self.capacity:
            victim = self._victim(held + 1, suspect)
            if victim is None:
                raise busy("every place is taken")
            self.release(victim)
            victim.displace(displaced_error(self.retry_after_s))
            self.displaced += 1
        admission = Admission(client, clock)
        self.entries.append(admission)
        return admission

    def release(self, admission: Admission) -> None:
        """Free ``admission``'s place (once)."""
        with suppress(ValueError):
            self.entries.remove(admission)

    def _victim(self, will_hold: int, suspect: bool) -> Admission | None:
        """The request whose place a client that will hold ``will_hold`` (``suspect`` or
        not) may take."""
        now = time.monotonic()
        counts: dict[str, int] = {}
        for a in self.entries:
            counts[a.client] = counts.get(a.client, 0) + 1
        candidates = [a for a in self.entries if counts[a.client] >= will_hold
                      and a.displaceable(now, not suspect and a.client in self.suspects)]
        if not candidates:
            return None
        return max(candidates, key=lambda a: (a.client in self.suspects, counts[a.client],
                                              a.waited(now)))
