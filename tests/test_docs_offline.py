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
