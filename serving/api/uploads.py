"""The life of an upload request: cheap checks, admission, body, triage, inference slot.

Every route that takes DICOM bodies goes through :func:`run_upload`, in this order, cheapest
first: the Content-Type and the declared Content-Length (415, 413, nothing read); admission
(503 ``busy`` when the client holds its share or every place is taken, nothing read:
:mod:`serving.api.admission`); the body, streamed with its size and part-count limits (its
place can go to another client's request while it is behind the minimum rate); triage, in
the triage thread pool (each part parsed once and its header checked:
:mod:`serving.api.triage`), which answers a request whose parts are all refused; then the
work in an inference slot, unless the client disconnects while the request waits (then it
leaves the queue at once and nothing is run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.types import Message

from serving.api.admission import HOSTILE_DETAILS, client_of
from serving.api.body import DICOM, FORM, RELATED, Part, check_declared_size, check_media_type
from serving.api.body import read_parts as read_body_parts
from serving.api.deadlines import CLOCK_KEY
from serving.api.errors import ApiError, ClientClosedError
from serving.api.state import AppState
from serving.api.triage import Triaged, UidCheck, limits_of, triage

T = TypeVar("T")


async def disconnected(request: Request) -> None:
    """Returns once the client has disconnected. Only after the body was read whole: the
    server's ``receive`` then waits for the disconnect (and reads the socket, so it sees it)."""
    message: Message = {}
    while message.get("type") != "http.disconnect":
        message = await request.receive()


async def triaged_parts(state: AppState, parts: list[Part], uids: UidCheck, client: str
                        ) -> Triaged:
    """:func:`serving.api.triage.triage` of ``parts`` in the triage thread pool, when its
    turn comes (clients in good standing first); a client whose part is refused as hostile
    becomes suspect."""
    suspects = state.limiter.ledger.suspects
    async with state.triage_turns.turn(client in suspects):
        loop = asyncio.get_running_loop()
        checked = await loop.run_in_executor(state.triage_pool, triage, parts,
                                             limits_of(state.settings), uids,
                                             state.settings.max_upload_bytes)
    if any(r.detail in HOSTILE_DETAILS for r in checked.rejected):
        suspects.mark(client)
    return checked


async def run_upload(request: Request, state: AppState, work: Callable[[Triaged], T],
                     refused: Callable[[Triaged], T], *,
                     allowed: tuple[str, ...] = (DICOM, RELATED, FORM),
                     uids: UidCheck = "none", first: int | None = None) -> T:
    """:func:`admitted_upload`; a client whose request is refused as hostile (a body too
    slow or too large, or displaced: :data:`serving.api.admission.HOSTILE_DETAILS`) becomes
    suspect."""
    client = client_of(request, state.settings.auth)
    try:
        return await admitted_upload(request, state, client, work, refused, allowed=allowed,
                                     uids=uids, first=first)
    except ApiError as exc:
        if exc.detail in HOSTILE_DETAILS or exc.headers.get("Connection") == "close":
            state.limiter.ledger.suspects.mark(client)
        raise


async def admitted_upload(request: Request, state: AppState, client: str,
                          work: Callable[[Triaged], T], refused: Callable[[Triaged], T], *,
                          allowed: tuple[str, ...], uids: UidCheck, first: int | None) -> T:
    """``work(triaged)`` in an inference worker thread, for the parts of the request body
    after triage (only the ``first`` parts, when given); ``refused(triaged)`` instead, on
    the event loop, when triage refused every part (the request never waits for a slot).

    Raises:
        ApiError: 415 / 413 before anything is read; 503 ``busy`` before the body is read,
            or while it is read behind the minimum rate (its place given to another client);
            413 ``upload_too_large`` / ``too_many_parts``, 408 ``body_timeout``, 400 while
            it is read; 499 ``client_closed_request`` when the client left before its turn
            (the work is not run).
    """
    settings = state.settings
    check_media_type(request, allowed)
    check_declared_size(request, settings.max_upload_bytes)
    async with state.limiter.admission(client, request.scope.get(CLOCK_KEY)) as admitted:
        parts = await admitted.read(read_body_parts(
            request, settings.max_upload_bytes, max_parts=settings.max_parts, allowed=allowed))
        checked = await triaged_parts(state, parts[:first], uids, client)
        del parts  # the accepted parts' bytes are dropped: their parsed data sets are kept
        if not checked.accepted:
            return refused(checked)
        try:
            return await admitted.run(lambda: work(checked), gone=lambda: disconnected(request))
        except ClientClosedError:
            state.metrics.dropped.inc()
            raise
