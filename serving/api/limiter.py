"""Bounded inference concurrency with a bounded queue, admitted before the body is read.

At most ``concurrent`` inferences run at once, each in a worker thread (off the event loop).
A request is *admitted* before its body is read (:meth:`InferenceLimiter.admission`); at most
``concurrent + queue`` requests are admitted at a time (reading their bodies, in triage,
waiting for a slot or running), so request bodies held in memory never exceed ``concurrent +
queue`` times the upload limit; at most ``per_client`` of one client, and a slow body's place
can go to another client (:mod:`serving.api.admission`). A request refused is answered 503
``busy`` with Retry-After, before a byte of its body is read. Work whose client has gone
while it waited is dropped instead of run (:class:`ClientClosedError`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from serving.api.admission import Admission as Place
from serving.api.admission import Ledger
from serving.api.deadlines import BodyClock
from serving.api.errors import ApiError, ClientClosedError

T = TypeVar("T")

#: Returns once the client has disconnected (raced against the wait for a slot).
Gone = Callable[[], Awaitable[object]]


class Admission:
    """One admitted request: :meth:`read` its body, then :meth:`run` its work in a slot."""

    def __init__(self, limiter: InferenceLimiter, place: Place) -> None:
        self._limiter = limiter
        self.place = place

    async def read(self, body: Awaitable[T]) -> T:
        """Await ``body`` (the body read) unless this place goes to another client's request.

        Raises:
            ApiError: 503 ``busy`` (connection closed) when the place was given away.
        """
        return await self.place.read(body)

    async def run(self, fn: Callable[[], T], gone: Gone | None = None) -> T:
        """Run ``fn`` in a worker thread once a slot is free.

        Raises:
            ClientClosedError: ``gone()`` said the client left while the request waited.
        """
        return await self._limiter._run(fn, gone)


class InferenceLimiter:
    """Runs blocking inference functions with bounded concurrency and queueing."""

    def __init__(self, concurrent: int, queue: int, retry_after_s: int,
                 per_client: int | None = None, suspect_hold_s: float = 0.0) -> None:
        if concurrent < 1 or queue < 0:
            raise ValueError(f"need concurrent >= 1 and queue >= 0, got {concurrent}, {queue}")
        self.concurrent = concurrent
        self.queue = queue
        self.retry_after_s = retry_after_s
        self.ledger = Ledger(concurrent + queue, per_client, retry_after_s, suspect_hold_s)
        self._sem = asyncio.Semaphore(concurrent)
        self._pool = ThreadPoolExecutor(max_workers=concurrent, thread_name_prefix="infer")
        self.queued = 0
        """Admitted requests whose body is read, waiting for a slot."""
        self.running = 0
        self.dropped = 0
        """Requests whose work was dropped because the client had gone."""

    @property
    def admitted(self) -> int:
        """Requests admitted now."""
        return len(self.ledger.entries)

    @property
    def waiting(self) -> int:
        """Admitted requests not running: reading their body or waiting for a slot."""
        return self.admitted - self.running

    def _busy(self, reason: str) -> ApiError:
        return ApiError(503, "busy",
                        f"{reason}: {self.running} of {self.concurrent} inference slot(s) "
                        f"busy, {self.waiting} request(s) waiting (limit {self.queue}); retry "
                        f"in {self.retry_after_s} s",
                        headers={"Retry-After": str(self.retry_after_s)})

    @asynccontextmanager
    async def admission(self, client: str = "", clock: BodyClock | None = None
                        ) -> AsyncIterator[Admission]:
        """Admit one request of ``client`` (``clock``: its body clock) for the duration of the
        block (read its body, then run).

        Raises:
            ApiError: 503 ``busy`` (Retry-After) when the client holds its share already, or
                every place is taken and none can be given up
                (:meth:`serving.api.admission.Ledger.admit`). The body is not read: the server
                drains (discards) it for at most ``header_timeout_s`` so that the client can
                read the answer.
        """
        place = self.ledger.admit(client, clock, self._busy)
        try:
            yield Admission(self, place)
        finally:
            self.ledger.release(place)

    async def run(self, fn: Callable[[], T], gone: Gone | None = None) -> T:
        """Admit, then run ``fn`` in a worker thread once a slot is free.

        Raises:
            ApiError: 503 ``busy`` when all slots are taken and the queue is full.
            ClientClosedError: ``gone()`` said the client left while the request waited.
        """
        async with self.admission() as admitted:
            return await admitted.run(fn, gone)

    async def _run(self, fn: Callable[[], T], gone: Gone | None) -> T:
        self.queued += 1
        try:
            await self._acquire_unless_gone(gone)
        finally:
            self.queued -= 1
        self.running += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, fn)
        finally:
            self.running -= 1
            self._sem.release()

    async def _acquire_unless_gone(self, gone: Gone | None) -> None:
        """Take a slot, unless ``gone()`` returns first (then the place in the queue is
        given up at once).

        Raises:
            ClientClosedError: the client disconnected while waiting (no slot is held).
        """
        if gone is None:
            await self._sem.acquire()
            return
        acquire = asyncio.ensure_future(self._sem.acquire())
        left = asyncio.ensure_future(gone())
        try:
            await asyncio.wait({acquire, left}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this request itself was cancelled while it waited
            left.cancel()
            self._give_back(acquire)
            raise
        if left.done() and not left.cancelled() and left.exception() is None:
            self._give_back(acquire)
            self.dropped += 1
            raise ClientClosedError("while its request waited for a slot; nothing was run")
        left.cancel()
        await acquire  # taken already, or gone() failed: wait for the slot as before

    def _give_back(self, acquire: asyncio.Future[Any]) -> None:
        """Cancel a pending ``acquire``, or release the slot it has already taken."""
        if not acquire.cancel() and not acquire.cancelled() and acquire.exception() is None:
            self._sem.release()

    def shutdown(self) -> None:
        """Stop the worker threads (waits for running inferences)."""
        self._pool.shutdown(wait=True)
