"""Builds the FastAPI app: settings checked, model loaded in the background at startup,
middleware, error handlers, routers, viewer page.

Middleware, outermost first: the body deadline (:mod:`serving.api.deadlines`), the Host check
(Starlette's TrustedHostMiddleware, ``GALACTO_ALLOWED_HOSTS``: 400 ``Invalid host header``),
then request id, cross-site refusal (:mod:`serving.api.origin`), auth, metrics and the
request log (:mod:`serving.api.middleware`).

Run it with ``galacto serve`` (which also bounds connections and header time:
:mod:`serving.api.server`) or ``uvicorn serving.api.main:create_app --factory``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import FileResponse, JSONResponse, Response

from serving import __version__
from serving.api.deadlines import BodyDeadline
from serving.api.docs_page import install_docs
from serving.api.errors import ApiError
from serving.api.logs import request_id_var
from serving.api.middleware import RequestMiddleware
from serving.api.routes import detect, dicomweb, info, jobs
from serving.api.schemas import ErrorOut
from serving.api.state import AppState
from serving.gateway.service import embedded_gateway
from serving.settings import Settings

log = logging.getLogger("galacto.api")
STATIC = Path(__file__).parent / "static"
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
                 "API key", 403: "cross-site request from a browser", 404: "no stored result "
                 "matches", 406: "Accept not satisfiable", 408: "request body too slow",
                 409: "no instance accepted", 413: "body or image too large, or too many parts",
                 415: "not multipart/related; type=\"application/dicom\"",
                 422: "invalid request parameters", 503: "model not ready or busy"},
    "jobs": {401: "missing or invalid API key", 404: "gateway not running, or no such job",
             409: "job not resendable, or no destination", 422: "invalid request parameters"},
}


def _documented_errors(module: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for ``include_router``: the router's error statuses, as ErrorOut."""
    codes = _ROUTER_ERRORS[module.rsplit(".", 1)[-1]]
    return {code: {"model": ErrorOut, "description": text} for code, text in codes.items()}


def _install_middleware(app: FastAPI, state: AppState) -> None:
    """Outermost first: body deadline, Host check, then :class:`RequestMiddleware`."""
    settings = state.settings
    app.add_middleware(RequestMiddleware, state=state)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.trusted_hosts,
                       www_redirect=False)
    app.add_middleware(BodyDeadline, grace_s=settings.body_grace_s,
                       min_rate=settings.min_body_rate_kib_s * 1024,
                       total_s=settings.body_timeout_s)


#: Seconds between two purges of results older than GALACTO_RESULTS_RETENTION_DAYS.
PURGE_EVERY_S = 3600.0


async def _keep_results_for(state: AppState) -> None:
    """Delete stored results older than ``results_retention_days`` now and every
    :data:`PURGE_EVERY_S` seconds (in a thread); nothing when the setting is 0."""
    days = state.settings.results_retention_days
    while days > 0:
        try:
            removed = await asyncio.to_thread(state.store.purge, days * 86400.0)
        except OSError as exc:  # try again next time; the service keeps serving
            log.warning("results could not be purged (%s)", type(exc).__name__)
        else:
            if removed:
                log.info("results older than %g days deleted", days, extra={"files": removed})
        await asyncio.sleep(PURGE_EVERY_S)


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
        retention = asyncio.create_task(_keep_results_for(state))
        yield
        retention.cancel()
        if gateway is not None:
            await asyncio.to_thread(gateway.stop)
        state.limiter.shutdown()
        state.triage_pool.shutdown(wait=True)

    app = FastAPI(title="galacto", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)  # /docs: docs_page
    app.state.galacto = state
    _install_handlers(app)
    _install_middleware(app, state)
    for module in (info, detect, dicomweb, jobs):
        app.include_router(module.router, responses=_documented_errors(module.__name__))
    install_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def viewer() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app
