"""The life of an upload request: cheap checks, admission, body, inference slot.

Every route that takes DICOM bodies goes through :func:`run_upload`, in this order, cheapest
first: the Content-Type and the declared Content-Length (415, 413, nothing read); admission
(503 ``busy`` when every slot and the queue are taken, nothing read); the body, streamed with
its size and part-count limits; then the work in an inference slot, unless the client
disconnects while the request waits (then it leaves the queue at once and nothing is run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.types import Message

from serving.api.body import DICOM, FORM, RELATED, Part, check_declared_size, check_media_type
from serving.api.body import read_parts as read_body_parts
from serving.api.errors import ClientClosedError
from serving.api.state import AppState

T = TypeVar("T")


async def disconnected(request: Request) -> None:
    """Returns once the client has disconnected. Only after the body was read whole: the
    server's ``receive`` then waits for the disconnect (and reads the socket, so it sees it)."""
    message: Message = {}
    while message.get("type") != "http.disconnect":
        message = await request.receive()


async def run_upload(request: Request, state: AppState, work: Callable[[list[Part]], T], *,
                     allowed: tuple[str, ...] = (DICOM, RELATED, FORM)) -> T:
    """``work(parts)`` in an inference worker thread, for the parts of the request body.

    Raises:
        ApiError: 415 / 413 before anything is read; 503 ``busy`` before the body is read;
            413 ``upload_too_large`` / ``too_many_parts``, 408 ``body_timeout``, 400 while
            it is read; 499 ``client_closed_request`` when the client left before its turn
            (the work is not run).
    """
    settings = state.settings
    check_media_type(request, allowed)
    check_declared_size(request, settings.max_upload_bytes)
    async with state.limiter.admission() as admitted:
        parts = await read_body_parts(request, settings.max_upload_bytes,
                                      max_parts=settings.max_parts, allowed=allowed)
        try:
            return await admitted.run(lambda: work(parts), gone=lambda: disconnected(request))
        except ClientClosedError:
            state.metrics.dropped.inc()
            raise
