"""The OpenAPI schema (``/openapi.json``) and the interactive API documentation (``/docs``),
served with no request leaving the machine.

FastAPI's default page loads Swagger UI from a CDN, which is a blank page in a hospital
network without internet access. Here the Swagger UI files come from the
``swagger-ui-bundle`` package, mounted under ``/static/swagger-ui/`` (open, like the viewer's
files: they hold no data); the page itself and ``/openapi.json`` keep the API's
authentication: they are on a router with :func:`serving.api.auth.require_key` (the app is
built with ``openapi_url=None``, so FastAPI adds no open schema route of its own). ReDoc,
which also loads from a CDN, is not offered.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from serving.api.auth import require_key

#: Where the Swagger UI files are served.
ASSETS = "/static/swagger-ui"
#: Where the OpenAPI schema is served.
OPENAPI_URL = "/openapi.json"


def install_docs(app: FastAPI) -> None:
    """Mount the Swagger UI files and add ``GET /openapi.json`` and ``GET /docs`` (call
    before mounting ``/static``)."""
    import swagger_ui_bundle

    app.mount(ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
              name="swagger-ui")
    router = APIRouter(dependencies=[Depends(require_key)], include_in_schema=False)

    @router.api_route(OPENAPI_URL, methods=["GET", "HEAD"])
    async def openapi(request: Request) -> JSONResponse:
        """The schema, as FastAPI's own route serves it (the ASGI root path listed first
        among the servers when ``root_path_in_servers``)."""
        root_path = str(request.scope.get("root_path", "")).rstrip("/")
        schema = app.openapi()
        if root_path and app.root_path_in_servers:
            servers = schema.get("servers", [])
            if root_path not in {s.get("url") for s in servers}:
                schema = {**schema, "servers": [{"url": root_path}, *servers]}
        return JSONResponse(schema)

    @router.get("/docs")
    async def docs() -> HTMLResponse:
        """Swagger UI, its files from this service."""
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL, title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg")

    app.include_router(router)
