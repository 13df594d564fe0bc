"""``/docs`` works without internet access: the page loads Swagger UI from this service, not
from a CDN, and the files it names are served (the page itself still needs the key)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from serving.api.main import create_app
from serving.settings import Settings

KEY = "k-docs-offline-5c1f0e9a7d3b2468"


def test_docs_page_needs_nothing_from_outside(tmp_path: Path) -> None:
    app = create_app(Settings(results_dir=tmp_path / "r", api_keys=[KEY]))
    with TestClient(app, base_url="http://localhost") as client:
        assert client.get("/docs").status_code == 401
        page = client.get("/docs", headers={"Authorization": f"Bearer {KEY}"})
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", page.text)
        assert urls, page.text[:500]
        assert not [u for u in urls if u.startswith(("http://", "https://", "//"))], urls
        for asset in [u for u in urls if u.startswith("/static/")]:
            got = client.get(asset)  # open, like the viewer's files
            assert got.status_code == 200 and len(got.content) > 100, asset
        assert "swagger-ui-bundle.js" in page.text


def test_viewer_assets_and_docs_have_their_own_metric_label(tmp_path: Path) -> None:
    app = create_app(Settings(results_dir=tmp_path / "r"))
    with TestClient(app, base_url="http://localhost") as client:
        for path in ("/static/viewer.js", "/static/swagger-ui/swagger-ui.css", "/docs",
                     "/no-such-page"):
            client.get(path)
        lines = [line for line in client.get("/metrics").text.splitlines()
                 if line.startswith("galacto_http_requests_total")]
    assert any('endpoint="/static/{path}",method="GET",status="200"} 2.0' in x for x in lines)
    assert any('endpoint="/docs"' in x for x in lines)
    unmatched = [x for x in lines if 'endpoint="unmatched"' in x]
    assert unmatched and all('status="404"' in x for x in unmatched), lines
