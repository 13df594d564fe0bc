"""Bounded inference concurrency with a bounded queue.

At most ``concurrent`` inferences run at once, each in a worker thread (off the event loop);
up to ``queue`` more requests wait for a slot; a request beyond that is refused at once with
503 ``busy`` and a Retry-After header instead of piling up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from serving.api.errors import ApiError

T = TypeVar("T")


class InferenceLimiter:
    """Runs blocking inference functions with bounded concurrency and queueing."""

    def __init__(self, concurrent: int, queue: int, retry_after_s: int) -> None:
        if concurrent < 1 or queue < 0:
            raise ValueError(f"need concurrent >= 1 and queue >= 0, got {concurrent}, {queue}")
        self.concurrent = concurrent
        self.queue = queue
        self.retry_after_s = retry_after_s
        self._sem = asyncio.Semaphore(concurrent)
        self._pool = ThreadPoolExecutor(max_workers=concurrent, thread_name_prefix="infer")
        self.waiting = 0
        self.running = 0

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a worker thread once a slot is free.

        Raises:
            ApiError: 503 ``busy`` when all slots are taken and the queue is full.
        """
        if self._sem.locked() and self.waiting >= self.queue:
            raise ApiError(503, "busy",
                           f"all {self.concurrent} inference slot(s) are busy and "
                           f"{self.waiting} request(s) are queued (limit {self.queue}); "
                           f"retry in {self.retry_after_s} s",
                           headers={"Retry-After": str(self.retry_after_s)})
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, fn)
        finally:
            self.running -= 1
            self._sem.release()

    def shutdown(self) -> None:
        """Stop the worker threads (waits for running inferences)."""
        self._pool.shutdown(wait=True)
