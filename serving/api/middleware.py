"""The per-request middleware: request id, cross-site refusal, the refusal of keyless
requests that no key-checking route serves, metrics and the request log, and the last net for
unexpected exceptions.

A plain ASGI middleware, not Starlette's ``BaseHTTPMiddleware``: that one runs the app behind
a wrapped ``receive`` in a task group, which turns an error raised while the body is read
(:mod:`serving.api.deadlines`) into an ``ExceptionGroup`` (a 500 instead of the 408) and hides
a client's disconnect from ``Request.is_disconnected``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.asgi import HttpMiddleware
from serving.api.auth import check_bearer, is_open, routed_to_key_check
from serving.api.errors import ApiError
from serving.api.logs import request_id_var
from serving.api.metrics import method_label
from serving.api.origin import check_same_origin
from serving.api.state import AppState
from serving.settings import Settings

log = logging.getLogger("galacto.api")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def admit(request: Request, settings: Settings) -> None:
    """The checks before a request reaches its route: cross-site refusal, then the key of a
    request to a path that is not open and that no key-checking route will serve (unknown
    path, a method the path does not have, a slash redirect): what exists is not told to
    clients without a key. A route with :func:`serving.api.auth.require_key` checks the key
    itself.

    Raises:
        ApiError: 403 ``cross_site_request``; 401 ``missing_credentials`` /
            ``invalid_credentials``.
    """
    check_same_origin(request, settings.public_base_url)
    if settings.auth and not is_open(request.url.path) \
            and not routed_to_key_check(request.scope):
        check_bearer(request.headers.get("authorization"), settings.api_keys)


def endpoint(scope: Scope) -> str:
    """The route template that served the request: a metric label and log field that never
    holds a UID from the concrete path. Files of the static mounts (the viewer's, Swagger
    UI's) are ``/static/{path}``; anything else that no route served is ``unmatched``."""
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "unmatched"))
    if str(scope.get("path", "")).startswith("/static/"):
        return "/static/{path}"
    return "unmatched"


class RequestMiddleware(HttpMiddleware):
    """Request id (``X-Request-ID``, taken from the client when well-formed), :func:`admit`,
    metrics and one ``request`` log line per request; an unexpected exception is answered
    500 ``internal_error`` (logged with its type and frames, not its message): one failed
    request never takes the server down."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        super().__init__(app)
        self.state = state

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        given = request.headers.get("x-request-id", "")
        rid = given if REQUEST_ID_RE.match(given) else uuid.uuid4().hex
        token = request_id_var.set(rid)
        t0 = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        try:
            try:
                admit(request, self.state.settings)
            except ApiError as exc:
                await JSONResponse(exc.body(rid), status_code=exc.status,
                                   headers=exc.headers)(scope, receive, send_with_id)
            else:
                await self._call(scope, receive, send_with_id, lambda: started)
            self._record(scope, request.method, status, time.perf_counter() - t0)
        finally:
            request_id_var.reset(token)

    async def _call(self, scope: Scope, receive: Receive, send: Send,
                    started: Callable[[], bool]) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            log.error("internal error", exc_info=exc)
            if started():
                raise  # the response is under way: uvicorn closes the connection
            body = ApiError(500, "internal_error",
                            "the server failed on this request; it keeps serving")
            await JSONResponse(body.body(request_id_var.get()), status_code=500)(
                scope, receive, send)

    def _record(self, scope: Scope, method: str, status: int, seconds: float) -> None:
        route, label = endpoint(scope), method_label(method)
        metrics = self.state.metrics
        metrics.requests.labels(route, label, str(status)).inc()
        metrics.latency.labels(route, label).observe(seconds)
        log.info("request", extra={"method": label, "endpoint": route, "status": status,
                                   "duration_ms": round(seconds * 1e3, 1)})
