"""Builds the FastAPI app: settings checked, model loaded in the background at startup (and
the DICOM gateway, when its settings enable it), middleware, error handlers, routers, viewer
page.

Middleware, outermost first: the body deadline (:mod:`serving.api.deadlines`), the Host check
(Starlette's TrustedHostMiddleware, ``GALACTO_ALLOWED_HOSTS``: 400 ``Invalid host header``),
then request id, cross-site refusal (:mod:`serving.api.origin`), the refusal of keyless
requests that no key-checking route serves (:mod:`serving.api.auth`), metrics and the request
log (:mod:`serving.api.middleware`).

Routers: the probes, open (:mod:`serving.api.routes.probes`); then one router per resource,
each declaring its prefix, its error responses and the key check
(:func:`serving.api.auth.require_key`) as a router-level dependency: ``/v1/models``,
``/metrics``, ``/v1/detect`` and ``/v1/render``, ``/dicomweb``, ``/v1/jobs``; then
``/openapi.json`` and ``/docs`` (:mod:`serving.api.docs_page`), the viewer page ``/`` and its
``/static`` files (open).

Run it with ``galacto serve`` (which also bounds connections and header time:
:mod:`serving.api.server`) or ``uvicorn serving.api.main:create_app --factory``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

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
from serving.api.routes import detect, dicomweb, info, jobs, probes, prometheus
from serving.api.state import AppState
from serving.gateway.service import embedded_gateway
from serving.gateway.settings import GatewaySettings
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


def create_app(settings: Settings | None = None,
               gateway_settings: GatewaySettings | None = None) -> FastAPI:
    """The app. Settings come from ``GALACTO_*`` when not given; unsafe ones raise
    :class:`serving.settings.SettingsError` here, before anything listens.

    ``gateway_settings``: the DICOM gateway to run inside the app, started with it when
    ``enabled`` (:func:`serving.gateway.service.embedded_gateway`); when not given, they are
    read from ``GALACTO_GATEWAY_*`` at startup. ``/v1/jobs`` answers 404
    ``gateway_disabled`` while no gateway runs.
    """
    settings = settings or Settings()
    settings.check_safe()
    state = AppState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start_loading()
        gateway = await asyncio.to_thread(embedded_gateway, state.metrics.registry,
                                          gateway_settings)
        app.state.gateway = gateway  # None unless the gateway settings enable it
        retention = asyncio.create_task(_keep_results_for(state))
        yield
        retention.cancel()
        if gateway is not None:
            await asyncio.to_thread(gateway.stop)
        state.limiter.shutdown()
        state.triage_pool.shutdown(wait=True)

    # /openapi.json and /docs: docs_page, behind the key
    app = FastAPI(title="galacto", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.galacto = state
    _install_handlers(app)
    _install_middleware(app, state)
    app.include_router(probes.router)  # open
    for module in (info, prometheus, detect, dicomweb, jobs):  # each checks the key
        app.include_router(module.router)
    install_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def viewer() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app
