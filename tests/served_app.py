"""The service under test, two ways: a TestClient of ``create_app(settings)`` and an ASGI app
on uvicorn in a thread of this process, configured as ``galacto serve`` configures it. Both
return once the model is loaded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import ASGIApp

from serving.api.main import create_app
from serving.api.server import uvicorn_config
from serving.settings import Settings


@contextmanager
def app_client(tmp_path: Path, **settings: Any) -> Iterator[TestClient]:
    """A TestClient of an app with these settings (results under ``tmp_path``, JSON logs),
    its model loaded."""
    app: FastAPI = create_app(Settings(results_dir=tmp_path / "results", log_json=True,
                                       **settings))
    with TestClient(app, base_url="http://localhost") as client:
        app.state.galacto.wait_loaded(60)
        assert app.state.galacto.ready
        yield client


@contextmanager
def on_uvicorn(asgi: ASGIApp, app: FastAPI, settings: Settings) -> Iterator[None]:
    """``asgi`` (``app`` itself, or a wrapper around it) served by uvicorn on
    ``settings.port`` in a daemon thread, until the block ends; enters once uvicorn has
    started and ``app``'s model is loaded (30 s and 120 s at most)."""
    server = uvicorn.Server(uvicorn_config(asgi, settings))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        app.state.galacto.wait_loaded(120)
        assert app.state.galacto.ready
        yield
    finally:
        server.should_exit = True
        thread.join(30)
