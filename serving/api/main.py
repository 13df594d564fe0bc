"""Builds the FastAPI app: settings checked, model loaded in the background at startup,
request-id / auth / metrics / access-log middleware, error handlers, routers, viewer page.

Run it with ``galacto serve`` or ``uvicorn serving.api.main:create_app --factory``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, JSONResponse, Response

from serving import __version__
from serving.api.auth import check_bearer, is_open
from serving.api.errors import ApiError
from serving.api.logs import request_id_var
from serving.api.routes import detect, dicomweb, info
from serving.api.schemas import ErrorOut
from serving.api.state import AppState
from serving.gateway import http as gateway_http
from serving.gateway.service import embedded_gateway
from serving.settings import Settings

log = logging.getLogger("galacto.api")
STATIC = Path(__file__).parent / "static"
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DESCRIPTION = """Filling-defect detection for galactograms (ductograms).

Send DICOM to `POST /v1/detect` (JSON or DICOM results) or `POST /dicomweb/studies` (STOW-RS,
results stored and retrievable by WADO-RS). Errors are JSON with a stable `detail` code.
Research software, not for clinical diagnosis."""


def _error_response(status: int, detail: str, message: str,
                    headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "message": message,
                         "request_id": request_id_var.get()},
                        status_code=status, headers=headers)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return JSONResponse(exc.body(request_id_var.get()), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                          for e in exc.errors())
        return _error_response(422, "invalid_request", f"invalid request parameters: {where}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code,
                                                                   "http_error")
        return _error_response(exc.status_code, detail, str(exc.detail),
                               headers=getattr(exc, "headers", None))


#: Error statuses each router's operations can answer (every error body is ErrorOut, also the
#: 422 of invalid parameters, which FastAPI would document as HTTPValidationError): the
#: OpenAPI schema lists them so that clients, and tests/test_schemathesis.py, can rely on it.
_ROUTER_ERRORS: dict[str, dict[int, str]] = {
    "info": {401: "missing or invalid API key", 503: "model not ready"},
    "detect": {},  # documented on the routes (serving.api.routes.detect.ERRORS)
    "dicomweb": {400: "invalid UID, or no instance could be read", 401: "missing or invalid "
                 "API key", 404: "no stored result matches", 406: "Accept not satisfiable",
                 409: "no instance accepted", 413: "body or image too large",
                 415: "not multipart/related; type=\"application/dicom\"",
                 422: "invalid request parameters", 503: "model not ready or busy"},
    "http": {401: "missing or invalid API key", 404: "gateway not running, or no such job",
             409: "job not resendable, or no destination", 422: "invalid request parameters"},
}


def _documented_errors(module: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for ``include_router``: the router's error statuses, as ErrorOut."""
    codes = _ROUTER_ERRORS[module.rsplit(".", 1)[-1]]
    return {code: {"model": ErrorOut, "description": text} for code, text in codes.items()}


def _endpoint(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


async def _call(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                ) -> Response:
    """``call_next``, with any unexpected exception answered as 500 ``internal_error``
    (logged with its type and frames, not its message): one failed request never takes the
    server down."""
    try:
        return await call_next(request)
    except Exception as exc:
        log.error("internal error", exc_info=exc)
        return _error_response(500, "internal_error",
                               "the server failed on this request; it keeps serving")


def _install_middleware(app: FastAPI, state: AppState) -> None:
    @app.middleware("http")
    async def around(request: Request,
                     call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        given = request.headers.get("x-request-id", "")
        rid = given if REQUEST_ID_RE.match(given) else uuid.uuid4().hex
        token = request_id_var.set(rid)
        t0 = time.perf_counter()
        try:
            if state.settings.auth and not is_open(request.url.path):
                try:
                    check_bearer(request.headers.get("authorization"), state.settings.api_keys)
                except ApiError as exc:
                    response: Response = JSONResponse(exc.body(rid), status_code=exc.status,
                                                      headers=exc.headers)
                else:
                    response = await _call(request, call_next)
            else:
                response = await _call(request, call_next)
            response.headers["X-Request-ID"] = rid
            seconds = time.perf_counter() - t0
            endpoint = _endpoint(request)
            state.metrics.requests.labels(endpoint, request.method,
                                          str(response.status_code)).inc()
            state.metrics.latency.labels(endpoint, request.method).observe(seconds)
            log.info("request", extra={"method": request.method, "endpoint": endpoint,
                                       "status": response.status_code,
                                       "duration_ms": round(seconds * 1e3, 1)})
            return response
        finally:
            request_id_var.reset(token)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app. Settings come from ``GALACTO_*`` when not given; unsafe ones raise
    :class:`serving.settings.SettingsError` here, before anything listens."""
    settings = settings or Settings()
    settings.check_safe()
    state = AppState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start_loading()
        gateway = await asyncio.to_thread(embedded_gateway, state.metrics.registry)
        app.state.gateway = gateway  # None unless GALACTO_GATEWAY_ENABLED=true
        yield
        if gateway is not None:
            await asyncio.to_thread(gateway.stop)
        state.limiter.shutdown()

    app = FastAPI(title="galacto", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.galacto = state
    _install_handlers(app)
    _install_middleware(app, state)
    for module in (info, detect, dicomweb, gateway_http):
        app.include_router(module.router, responses=_documented_errors(module.__name__))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def viewer() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app
