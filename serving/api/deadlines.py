"""A deadline for reading request bodies (slow clients, never-ending chunked bodies).

uvicorn has no body timeout, and a socket-level one would also count the time the app spends
not reading (a request waiting for its turn). :class:`BodyDeadline` wraps the ASGI
``receive`` and counts only the time the app waits for the client: the body must arrive
within ``total_s`` seconds in all, and, after a grace of ``grace_s`` seconds, at an average of
at least ``min_rate`` bytes per second. A client below that gets 408 ``body_timeout`` (raised
as :class:`~serving.api.errors.ApiError` out of ``receive``, so it takes the app's usual error
path) and the connection is closed. Once the body is complete, ``receive`` is passed through
untouched (disconnect detection).

The clock of the request is kept in the ASGI scope (:data:`CLOCK_KEY`), so that admission
can tell a body read that has fallen behind the minimum rate (:meth:`BodyClock.behind`)
while it is still inside its grace (:mod:`serving.api.admission`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.asgi import HttpMiddleware
from serving.api.errors import CLOSE, ApiError

#: Scope key of the request's :class:`BodyClock`.
CLOCK_KEY = "galacto.body_clock"


def body_timeout(waited_s: float, received: int) -> ApiError:
    """408 ``body_timeout`` (with ``Connection: close``)."""
    return ApiError(408, "body_timeout",
                    f"the request body came too slowly: {received} bytes in {waited_s:.0f} s "
                    "(GALACTO_BODY_TIMEOUT_S, GALACTO_MIN_BODY_RATE_KIB_S)", headers=CLOSE)


@dataclass
class BodyClock:
    """Time spent waiting for a body (s) and bytes received, against the limits.

    Attributes:
        grace_s: seconds before ``min_rate`` applies.
        min_rate: bytes per second the average must keep after the grace (0: no rate rule).
        total_s: seconds of waiting allowed in all.
    """

    grace_s: float
    min_rate: float
    total_s: float
    waited_s: float = 0.0
    received: int = 0
    waiting_since: float | None = None
    """When the pending ``receive`` began (None: the app is not waiting for the client)."""
    complete: bool = False

    def waited_now(self, now: float) -> float:
        """Seconds waited for the body so far, the pending ``receive`` included."""
        pending = 0.0 if self.waiting_since is None else now - self.waiting_since
        return self.waited_s + pending

    def behind(self, now: float, slack_s: float) -> bool:
        """Whether the body, still unread, is more than ``slack_s`` seconds behind the
        minimum rate (grace or not); never without a rate rule."""
        if self.complete or self.min_rate <= 0:
            return False
        return self.waited_now(now) > slack_s + self.received / self.min_rate

    def allowance(self) -> float:
        """Seconds the next ``receive`` may wait (<= 0: the deadline has passed)."""
        left = self.total_s - self.waited_s
        if self.min_rate > 0:
            left = min(left, self.grace_s + self.received / self.min_rate - self.waited_s)
        return left


class BodyDeadline(HttpMiddleware):
    """ASGI middleware: the :class:`BodyClock` limits on every HTTP request body."""

    def __init__(self, app: ASGIApp, *, grace_s: float, min_rate: float,
                 total_s: float) -> None:
        super().__init__(app)
        self.grace_s = grace_s
        self.min_rate = min_rate
        self.total_s = total_s

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        clock = BodyClock(self.grace_s, self.min_rate, self.total_s)
        scope[CLOCK_KEY] = clock

        async def timed_receive() -> Message:
            if clock.complete:
                return await receive()
            allowance = clock.allowance()
            t0 = clock.waiting_since = time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(allowance, 0.0))
            except TimeoutError:
                raise body_timeout(clock.waited_s + time.monotonic() - t0,
                                   clock.received) from None
            finally:
                clock.waited_s += time.monotonic() - t0
                clock.waiting_since = None
            clock.received += len(message.get("body", b""))
            clock.complete = message["type"] != "http.request" or not message.get("more_body")
            return message

        await self.app(scope, timed_receive, send)
