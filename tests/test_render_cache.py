"""A tomosynthesis volume is uploaded once per viewer session: ``POST /v1/render`` keeps the
parsed volume and names it in ``X-Galacto-Render-Id``; ``GET /v1/render/{render_id}?frame=N``
draws its frames from the server's copy (:mod:`serving.api.render_cache`).

Through the app in process (FastAPI TestClient, model loaded, as ``test_api_dbt.py``): the id
is sent for a volume and not for a 2D image nor with ``GALACTO_RENDER_CACHE_MB=0``; a frame
drawn from the kept volume is the POST's PNG byte for byte, with the same headers; an unknown
id is 404 ``render_expired``, a frame the volume lacks 422 ``invalid_frame``; the byte bound
evicts the least recently used volume; with authentication, the key is required and a volume
is only served to the key that sent it. :class:`RenderCache` alone: the idle time, the count
bound and concurrent use. In headless Chromium against uvicorn in a thread of this process
(as ``test_viewer.py``, skipped without chromium / chromedriver / selenium): scrolling a
volume asks the kept volume (GET), the file is POSTed once, and once more only after the
server forgot the volume.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.api.errors import ApiError
from serving.api.main import create_app
from serving.api.render_cache import (
    ENTRY_OVERHEAD,
    RENDER_EXPIRED,
    RENDER_ID_HEADER,
    RenderCache,
)
from serving.pipeline.dicom_in import Volume, read_volume
from serving.settings import Settings
from tests.dbt_files import make_bto
from tests.dicomgen import make_dataset, to_bytes
from tests.served_app import app_client as _client
from tests.served_app import on_uvicorn

DICOM = {"Content-Type": "application/dicom"}
KEY = "k-render-cache-3f9a1c7e5b2d"
OTHER_KEY = "k-render-cache-8e2b6d4a0c1f"
FRAMES = 7
ROWS, COLS = 128, 160
#: Stored pixel bytes of one test volume (16 bits allocated) plus the per-volume overhead.
VOLUME_BYTES = FRAMES * ROWS * COLS * 2 + ENTRY_OVERHEAD
MIB = 1024 * 1024
SCROLL_HEADERS = ("x-galacto-scale", "x-galacto-frame", "x-galacto-frames")


def _volume(seed: int = 0) -> bytes:
    """A small Breast Tomosynthesis Image: ``FRAMES`` frames of ``ROWS x COLS``, every frame
    different (``tests.dbt_files.make_bto``)."""
    return to_bytes(make_bto(frames=FRAMES, rows=ROWS, cols=COLS, seed=seed))


def _cache(client: TestClient) -> RenderCache:
    cache: RenderCache = client.app.state.galacto.render_cache
    return cache


def _post(client: TestClient, data: bytes, query: str = "overlay=false",
          headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post(f"/v1/render?{query}", content=data, headers={**DICOM, **(headers or {})})


@pytest.fixture(scope="module")
def volume() -> bytes:
    return _volume()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The service with its default settings (the cache on, 256 MiB)."""
    with _client(tmp_path_factory.mktemp("render-cache")) as c:
        yield c


# --------------------------------------------------------------------------------------------
# the routes
# --------------------------------------------------------------------------------------------


def test_post_of_a_volume_answers_a_random_render_id(client: TestClient, volume: bytes) -> None:
    first = _post(client, volume, "overlay=false&frame=2")
    again = _post(client, volume, "overlay=false&frame=2")
    assert first.status_code == again.status_code == 200, first.text
    ids = [first.headers[RENDER_ID_HEADER], again.headers[RENDER_ID_HEADER]]
    assert all(len(i) >= 32 for i in ids), ids  # 192 random bits, URL-safe
    assert ids[0] != ids[1]  # random, not a digest of the content
    assert first.content == again.content
    # with the findings drawn (detection runs) the volume is kept as well
    drawn = _post(client, volume, "")
    assert drawn.status_code == 200 and drawn.headers[RENDER_ID_HEADER] not in ids


def test_a_2d_image_is_not_kept(client: TestClient) -> None:
    r = _post(client, to_bytes(make_dataset(rows=128, cols=96)), "max_size=256")
    assert r.status_code == 200, r.text
    assert RENDER_ID_HEADER.lower() not in r.headers and "x-galacto-frames" not in r.headers


def test_get_draws_the_frame_the_post_draws(client: TestClient, volume: bytes) -> None:
    render_id = _post(client, volume).headers[RENDER_ID_HEADER]
    for frame in (1, 3, FRAMES):
        for max_size in (64, 1024):
            query = f"max_size={max_size}&frame={frame}"
            posted = _post(client, volume, f"overlay=false&{query}")
            got = client.get(f"/v1/render/{render_id}?{query}&overlay=false")
            assert posted.status_code == got.status_code == 200, got.text
            assert got.headers["content-type"] == "image/png"
            assert got.content == posted.content, (frame, max_size)  # byte for byte
            assert [got.headers[h] for h in SCROLL_HEADERS] == \
                [posted.headers[h] for h in SCROLL_HEADERS]
            assert got.headers["x-galacto-frame"] == str(frame)
            assert got.headers["x-galacto-frames"] == str(FRAMES)
    # no frame asked: the central one, as the POST without findings
    central = client.get(f"/v1/render/{render_id}")
    assert central.headers["x-galacto-frame"] == str((FRAMES + 1) // 2)
    assert central.content == _post(client, volume).content


def test_an_unknown_id_is_render_expired(client: TestClient) -> None:
    for render_id in ("unknown", "x" * 43):
        r = client.get(f"/v1/render/{render_id}?frame=1")
        assert (r.status_code, r.json()["detail"]) == (404, RENDER_EXPIRED), render_id


def test_a_frame_the_kept_volume_lacks_is_refused(client: TestClient, volume: bytes) -> None:
    render_id = _post(client, volume).headers[RENDER_ID_HEADER]
    for frame in (0, -1, FRAMES + 1):
        r = client.get(f"/v1/render/{render_id}?frame={frame}")
        assert (r.status_code, r.json()["detail"]) == (422, "invalid_frame"), frame
    assert f"frames 1 to {FRAMES}" in client.get(
        f"/v1/render/{render_id}?frame={FRAMES + 1}").json()["message"]
    r = client.get(f"/v1/render/{render_id}?frame=1&overlay=true")  # findings need the file
    assert (r.status_code, r.json()["detail"]) == (422, "invalid_request")
    assert client.get(f"/v1/render/{render_id}?frame=1&max_size=10").status_code == 422
    assert client.get(f"/v1/render/{render_id}?frame=1").status_code == 200  # still kept


def test_the_route_is_documented(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    get = schema["paths"]["/v1/render/{render_id}"]["get"]
    assert {"200", "401", "404", "422", "503"} <= set(get["responses"])
    assert "render_expired" in get["responses"]["404"]["description"]
    post = schema["paths"]["/v1/render"]["post"]["responses"]["200"]["description"]
    assert RENDER_ID_HEADER in post


def test_the_byte_bound_evicts_the_least_recently_used(tmp_path: Path) -> None:
    """Room for two volumes: a third evicts the one used longest ago; a volume larger than
    the whole bound is not kept at all."""
    with _client(tmp_path, render_cache_mb=2.5 * VOLUME_BYTES / MIB) as client:
        cache = _cache(client)
        a, b = (_post(client, _volume(seed)).headers[RENDER_ID_HEADER] for seed in (0, 1))
        assert len(cache) == 2 and cache.held_bytes == 2 * VOLUME_BYTES
        assert client.get(f"/v1/render/{a}?frame=1").status_code == 200  # a: used last
        c = _post(client, _volume(2)).headers[RENDER_ID_HEADER]
        assert len(cache) == 2 and cache.held_bytes <= cache.max_bytes
        assert cache.evicted == 1
        r = client.get(f"/v1/render/{b}?frame=1")
        assert (r.status_code, r.json()["detail"]) == (404, RENDER_EXPIRED)
        for kept in (a, c):
            assert client.get(f"/v1/render/{kept}?frame=2").status_code == 200
        big = to_bytes(make_bto(frames=FRAMES, rows=2 * ROWS, cols=2 * COLS))
        r = _post(client, big)
        assert r.status_code == 200 and RENDER_ID_HEADER.lower() not in r.headers
        assert len(cache) == 2


def test_cache_size_zero_keeps_nothing(tmp_path: Path, volume: bytes) -> None:
    with _client(tmp_path, render_cache_mb=0) as client:
        r = _post(client, volume, "overlay=false&frame=2")
        assert r.status_code == 200 and r.headers["x-galacto-frame"] == "2"
        assert RENDER_ID_HEADER.lower() not in r.headers
        assert len(_cache(client)) == 0 and not _cache(client).enabled


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GALACTO_RENDER_CACHE_MB", "64")
    assert Settings().render_cache_bytes == 64 * MIB
    monkeypatch.setenv("GALACTO_RENDER_CACHE_MB", "-1")
    with pytest.raises(ValueError, match="render_cache_mb"):
        Settings()


def test_with_auth_the_kept_volume_needs_the_key_that_sent_it(tmp_path: Path,
                                                              volume: bytes) -> None:
    with _client(tmp_path, api_keys=[KEY, OTHER_KEY]) as client:
        mine = {"Authorization": f"Bearer {KEY}"}
        theirs = {"Authorization": f"Bearer {OTHER_KEY}"}
        assert _post(client, volume).status_code == 401
        render_id = _post(client, volume, headers=mine).headers[RENDER_ID_HEADER]
        r = client.get(f"/v1/render/{render_id}?frame=1")
        assert (r.status_code, r.json()["detail"]) == (401, "missing_credentials")
        r = client.get(f"/v1/render/{render_id}?frame=1",
                       headers={"Authorization": "Bearer wrong-key-000000000"})
        assert (r.status_code, r.json()["detail"]) == (401, "invalid_credentials")
        r = client.get(f"/v1/render/{render_id}?frame=1", headers=theirs)  # another key
        assert (r.status_code, r.json()["detail"]) == (404, RENDER_EXPIRED)
        r = client.get(f"/v1/render/{render_id}?frame=1", headers=mine)
        assert r.status_code == 200 and r.headers["x-galacto-frame"] == "1"


# --------------------------------------------------------------------------------------------
# the cache alone
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parsed() -> Volume:
    return read_volume(_volume())


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_volume_is_forgotten(parsed: Volume) -> None:
    clock = Clock()
    cache = RenderCache(10 * MIB, idle_s=60.0, clock=clock)
    old, used = cache.keep(parsed, None, 100), cache.keep(parsed, None, 100)
    assert old is not None and used is not None
    clock.now += 50
    assert cache.get(used, None) is parsed  # used again: its idle time starts over
    clock.now += 20
    with pytest.raises(ApiError, match="no volume is kept") as info:
        cache.get(old, None)
    assert (info.value.status, info.value.detail) == (404, RENDER_EXPIRED)
    assert cache.get(used, None) is parsed
    assert (len(cache), cache.held_bytes, cache.expired) == (1, 100, 1)


def test_the_count_bound_and_the_owner(parsed: Volume) -> None:
    cache = RenderCache(10 * MIB, max_volumes=3)
    ids = [cache.keep(parsed, "key:a", 10) for _ in range(5)]
    assert all(isinstance(i, str) for i in ids) and len(set(ids)) == 5
    assert len(cache) == 3 and cache.evicted == 2
    last = ids[-1]
    assert last is not None
    assert cache.get(last, "key:a") is parsed
    for other in ("key:b", None):
        with pytest.raises(ApiError, match="no volume is kept"):
            cache.get(last, other)
    assert RenderCache(0).keep(parsed, None, 10) is None  # disabled
    assert RenderCache(100).keep(parsed, None, 101) is None  # larger than the bound


def test_concurrent_use_keeps_the_bounds(parsed: Volume) -> None:
    cache = RenderCache(350, max_volumes=4)  # 3 or 4 volumes of 90 to 109 bytes
    errors: list[BaseException] = []

    def churn(seed: int) -> None:
        try:
            for k in range(300):
                render_id = cache.keep(parsed, None, 90 + (seed + k) % 20)
                assert render_id is not None
                try:
                    cache.get(render_id, None)
                except ApiError as exc:  # evicted by another thread meanwhile: allowed
                    assert exc.detail == RENDER_EXPIRED
                assert len(cache) <= 4 and cache.held_bytes <= 350
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
    assert cache.kept == 6 * 300 and 3 <= len(cache) <= 4
    assert cache.kept - cache.evicted == len(cache) and cache.held_bytes <= 350


# --------------------------------------------------------------------------------------------
# the viewer: scrolling asks the kept volume
# --------------------------------------------------------------------------------------------


@dataclass
class Counting:
    """The app behind an ASGI wrapper that lists the ``/v1/render`` requests it is sent."""

    app: FastAPI
    seen: list[tuple[str, str]] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/render"):
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)

    def renders(self, method: str) -> int:
        return sum(1 for m, _ in self.seen if m == method)


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Counting]]:
    """The app on uvicorn in a thread (``galacto serve``'s configuration), its render
    requests counted; ``(base URL, counter)``."""
    settings = Settings(port=free_port(), results_dir=tmp_path_factory.mktemp("viewer-kept"),
                        log_json=True)
    counting = Counting(create_app(settings))
    with on_uvicorn(counting, counting.app, settings):
        yield f"http://127.0.0.1:{settings.port}", counting


def test_viewer_scrolls_a_volume_from_the_kept_copy(counted: tuple[str, Counting],
                                                    tmp_path: Path) -> None:
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from test_viewer import _choose, _find_browser, _open, _page_error, _wait_frame

    found = _find_browser()
    if found is None:
        pytest.skip("chromium and/or chromedriver not found")
    base, counting = counted
    cache: RenderCache = counting.app.state.galacto.render_cache
    path = tmp_path / "L_CC_dbt.dcm"
    path.write_bytes(_volume(seed=5))
    options = Options()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=found[1]))
    try:
        _open(browser, base)
        assert _choose(browser, [path]) == "done", _page_error(browser)
        central = (FRAMES + 1) // 2
        assert _wait_frame(browser, central)["label"] == f"frame {central} / {FRAMES}"
        assert (counting.renders("POST"), counting.renders("GET")) == (1, 0)
        assert len(cache) == 1

        figure = browser.find_element(By.CSS_SELECTOR, "figure[data-image='0']")
        for frame in range(central + 1, FRAMES + 1):  # down to the last frame, one at a time
            figure.send_keys(Keys.ARROW_DOWN)
            _wait_frame(browser, frame)
        fetched = FRAMES - central
        assert (counting.renders("POST"), counting.renders("GET")) == (1, fetched)
        assert all(p.startswith("/v1/render/") for m, p in counting.seen if m == "GET")
        assert cache.served == fetched

        # the server forgets the volume: the next frame re-sends the file once (a new id),
        # and the frames after come from the new copy
        cache.clear()
        figure.send_keys(Keys.HOME)
        _wait_frame(browser, 1)
        figure.send_keys(Keys.ARROW_DOWN)
        _wait_frame(browser, 2)
        assert counting.renders("POST") == 2  # the first render and the one re-upload
        assert counting.renders("GET") == fetched + 2  # the 404 render_expired, then frame 2
        assert len(cache) == 1 and cache.served == fetched + 1
        error = browser.find_element(By.CSS_SELECTOR, "figure[data-image='0'] .frame-error")
        assert not error.is_displayed()
    finally:
        browser.quit()
