"""Turns at a few workers, clients in good standing first.

:class:`Turns` hands out ``workers`` turns (the triage thread pool's threads); a request
waiting for one is served before every waiting request of a suspect client
(:class:`serving.api.admission.Suspects`), first come first served within each class. A
request cancelled while it waits (its client left) gives up its place in the line.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress


class Turns:
    """``workers`` turns, handed to waiting requests in good standing first."""

    def __init__(self, workers: int) -> None:
        self.free = workers
        self._lines: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (
            deque(), deque())

    @property
    def waiting(self) -> int:
        """Requests waiting for a turn."""
        return sum(len(line) for line in self._lines)

    @asynccontextmanager
    async def turn(self, suspect: bool) -> AsyncIterator[None]:
        """Hold a turn for the block, waiting behind the others when ``suspect``."""
        await self._acquire(suspect)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, suspect: bool) -> None:
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line = self._lines[1 if suspect else 0]
        line.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a turn just as it was cancelled: pass it on
            else:
                with suppress(ValueError):
                    line.remove(waiter)
            raise

    def _release(self) -> None:
        for line in self._lines:
            while line:
                waiter = line.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self.free += 1
