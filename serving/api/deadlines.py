"""A deadline for reading request bodies (slow clients, never-ending chunked bodies).

uvicorn has no body timeout, and a socket-level one would also count the time the app spends
not reading (a request waiting for its turn). :class:`BodyDeadline` wraps the ASGI
``receive`` and counts only the time the app waits for the client: the body must arrive
within ``total_s`` seconds in all, and, after a grace of ``grace_s`` seconds, at an average of
at least ``min_rate`` bytes per second. A client below that gets 408 ``body_timeout`` (raised
as :class:`~serving.api.errors.ApiError` out of ``receive``, so it takes the app's usual error
path) and the connection is closed. Once the body is complete, ``receive`` is passed through
untouched (disconnect detection).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.errors import CLOSE, ApiError


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

    def allowance(self) -> float:
        """Seconds the next ``receive`` may wait (<= 0: the deadline has passed)."""
        left = self.total_s - self.waited_s
        if self.min_rate > 0:
            left = min(left, self.grace_s + self.received / self.min_rate - self.waited_s)
        return left


class BodyDeadline:
    """ASGI middleware: the :class:`BodyClock` limits on every HTTP request body."""

    def __init__(self, app: ASGIApp, *, grace_s: float, min_rate: float,
                 total_s: float) -> None:
        self.app = app
        self.grace_s = grace_s
        self.min_rate = min_rate
        self.total_s = total_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clock = BodyClock(self.grace_s, self.min_rate, self.total_s)
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            allowance = clock.allowance()
            t0 = time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(allowance, 0.0))
            except TimeoutError:
                clock.waited_s += time.monotonic() - t0
                raise body_timeout(clock.waited_s, clock.received) from None
            clock.waited_s += time.monotonic() - t0
            clock.received += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body")
            return message

        await self.app(scope, timed_receive, send)
