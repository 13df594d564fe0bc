"""Running the app on uvicorn with bounded connections and a header deadline.

uvicorn bounds what it is told to (``limit_concurrency``, ``backlog``, ``timeout_keep_alive``,
``h11_max_incomplete_event_size``), but it has no deadline for a request's headers: an idle
connection, or one sending a byte of header now and then, stays open for good (uvicorn's
keep-alive timer only starts after a response and is reset by every byte received). Nor does
``limit_concurrency`` stop connections being accepted, so a thousand half-sent requests used up
the open-file limit and asyncio logged "socket.accept() out of system resource" in a loop.

:func:`guarded_protocol` is uvicorn's h11 protocol with both added: a deadline of
``header_timeout_s`` seconds from the connection (or the end of the previous response) to the
end of the request headers, and a connection cap (a connection accepted while
``max_connections`` are open is closed at once); the same deadline bounds the draining of a
body the app answered without reading. :func:`uvicorn_config` raises the soft
open-file limit to the hard one and keeps the cap under it. The body's deadline is
:mod:`serving.api.deadlines` (ASGI level, where the app's reading is seen).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from serving.settings import Settings

log = logging.getLogger("galacto.api")

#: File descriptors kept free for everything but client connections (model and result
#: files, the gateway's sockets, worker threads' files, the listening socket).
RESERVED_FDS = 256


class GuardedH11Protocol(H11Protocol):
    """uvicorn's :class:`H11Protocol` with a deadline on the client and a connection cap (set
    by :func:`guarded_protocol`).

    The deadline runs while the connection waits on the client alone: for a request's
    headers (from the connection, or the end of the previous response), and while the rest
    of a body is drained after an early answer (a 503 ``busy`` is sent before the body is
    read; draining, not closing, lets the client read it instead of a reset). It is not
    reset by incoming bytes; at ``header_timeout_s`` the connection is closed.
    """

    header_timeout_s: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 2048

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept, or close at once beyond ``max_connections`` (the fd is freed now)."""
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.close()
            return
        self._update_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._update_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._update_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _waiting_on_client(self) -> bool:
        """Waiting for request headers, or draining a body the app answered unread."""
        their, ours = self.conn.their_state, self.conn.our_state
        return their is h11.IDLE or (their is h11.SEND_BODY and ours is h11.DONE)

    def _update_deadline(self) -> None:
        if self.transport.is_closing() or not self._waiting_on_client():
            self._disarm()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        """Still waiting on the client (idle, slow headers, endless drain): close."""
        self._deadline = None
        if self._waiting_on_client() and not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(header_timeout_s: float, max_connections: int
                     ) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass with these limits (uvicorn instantiates the
    protocol class itself, so the limits are class attributes)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {
        "header_timeout_s": header_timeout_s, "max_connections": max_connections})


def raise_open_file_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns the soft limit now in
    force (unchanged when it cannot be raised)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft
    return hard


def connection_cap(wanted: int, open_files: int, backlog: int) -> int:
    """``wanted`` connections, lowered so that the cap, one accept burst (``backlog``
    sockets) and :data:`RESERVED_FDS` fit in ``open_files`` descriptors (at least 8)."""
    return max(8, min(wanted, open_files - backlog - RESERVED_FDS))


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration of ``galacto serve``: the guarded h11 protocol, the
    connection cap (``limit_concurrency`` as well), listen backlog, keep-alive timeout and
    header size limit from ``settings``; no access log (raw paths can hold UIDs), no Server
    header. Raises the open-file limit (:func:`raise_open_file_limit`) first."""
    open_files = raise_open_file_limit()
    cap = connection_cap(settings.max_connections, open_files, settings.backlog)
    if cap < settings.max_connections:
        log.warning("GALACTO_MAX_CONNECTIONS lowered from %d to %d to fit the open-file limit "
                    "(%d)", settings.max_connections, cap, open_files)
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False,
        server_header=False, http=guarded_protocol(settings.header_timeout_s, cap),
        limit_concurrency=cap, backlog=settings.backlog,
        timeout_keep_alive=settings.keep_alive_s,
        h11_max_incomplete_event_size=settings.max_header_kib * 1024)
