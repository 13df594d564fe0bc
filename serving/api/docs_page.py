"""The interactive API documentation (``/docs``), served with no request leaving the machine.

FastAPI's default page loads Swagger UI from a CDN, which is a blank page in a hospital
network without internet access. Here the Swagger UI files come from the
``swagger-ui-bundle`` package, mounted under ``/static/swagger-ui/`` (open, like the viewer's
files: they hold no data); the page itself and ``/openapi.json`` keep the API's
authentication. ReDoc, which also loads from a CDN, is not offered.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

#: Where the Swagger UI files are served.
ASSETS = "/static/swagger-ui"


def install_docs(app: FastAPI) -> None:
    """Mount the Swagger UI files and add ``GET /docs`` (call before mounting ``/static``)."""
    import swagger_ui_bundle

    app.mount(ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
              name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg")
