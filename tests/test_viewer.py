"""The viewer page at ``/`` in headless Chromium against a real ``galacto serve``: a DICOM file
chosen in the page is rendered on a canvas with the boxes ``/v1/detect`` returns, the findings
table and two-view phrases are shown, and an invalid file shows the API's error code.

Needs ``chromium`` + ``chromedriver`` and the ``selenium`` package; skipped without them.
``GALACTO_WRITE_SCREENSHOT=1`` also writes ``docs/viewer.png``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.wait import WebDriverWait

    HAVE_SELENIUM = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_SELENIUM = False

ROOT = Path(__file__).resolve().parents[1]
OPERATING_POINT = "high_sensitivity"
WAIT_S = 30.0


def _find_browser() -> tuple[str, str] | None:
    """(chromium binary, chromedriver) when both are installed."""
    browser = next((p for p in (os.environ.get("CHROME_BIN"), shutil.which("chromium"),
                                shutil.which("chromium-browser"), shutil.which("google-chrome"))
                    if p), None)
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def server(live_server: tuple[str, Path]) -> str:
    """The session's ``galacto serve`` (no authentication); its base URL."""
    return live_server[0]


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium driven by chromedriver (no driver download)."""
    if not HAVE_SELENIUM:
        pytest.skip("selenium is not installed (pip install selenium)")
    found = _find_browser()
    if found is None:
        pytest.skip("chromium and/or chromedriver not found (apt install chromium "
                    "chromium-driver)")
    binary, driver_path = found
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver: webdriver.Chrome, base: str) -> None:
    driver.set_window_size(1400, 1000)
    driver.get(f"{base}/")
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.ID, "operating-point").is_enabled())
    assert driver.execute_script("return document.body.dataset.state") == "idle"


def _choose(driver: webdriver.Chrome, files: list[Path]) -> str:
    """Send the files to the page's file input; the final ``data-state``."""
    driver.find_element(By.ID, "file-input").send_keys("\n".join(str(f) for f in files))
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.execute_script("return document.body.dataset.state") in ("done", "error"))
    return str(driver.execute_script("return document.body.dataset.state"))


def _page_error(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.ID, "error").get_attribute("textContent"))


def _drawn_boxes(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    boxes: list[dict[str, Any]] = driver.execute_script("""
        return [...document.querySelectorAll('#boxes li')].map(li => ({
            id: li.dataset.id, image: Number(li.dataset.image), score: Number(li.dataset.score),
            box: li.dataset.box.split(',').map(Number),
            canvas: li.dataset.canvasBox.split(',').map(Number)}));""")
    return boxes


def _canvas_stats(driver: webdriver.Chrome, image: int) -> dict[str, float]:
    """Size, mean and variance of the luminance of one image's canvas, and the share of
    box-coloured (strongly yellow) pixels."""
    stats: dict[str, float] = driver.execute_script("""
        const c = document.querySelector(`canvas[data-image="${arguments[0]}"]`);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0, s = 0, s2 = 0, yellow = 0;
        for (let i = 0; i < d.length; i += 4) {
            const v = (d[i] + d[i + 1] + d[i + 2]) / 3;
            n++; s += v; s2 += v * v;
            if (d[i] > 200 && d[i + 1] > 150 && d[i + 2] < 110) yellow++;
        }
        const mean = s / n;
        return {width: c.width, height: c.height, shown: c.getBoundingClientRect().width,
                mean: mean, variance: s2 / n - mean * mean, yellow: yellow / n};""", image)
    return stats


def _box_edge_is_drawn(driver: webdriver.Chrome, image: int, canvas_box: list[float]) -> bool:
    """Whether box-coloured pixels lie on the middle of the left edge of a drawn box."""
    x1, y1, _, y2 = canvas_box
    found: bool = driver.execute_script("""
        const [img, x, y] = arguments;
        const c = document.querySelector(`canvas[data-image="${img}"]`);
        const d = c.getContext('2d').getImageData(Math.max(Math.round(x) - 2, 0),
                                                  Math.max(Math.round(y) - 2, 0), 5, 5).data;
        for (let i = 0; i < d.length; i += 4) {
            if (d[i] > 200 && d[i + 1] > 150 && d[i + 2] < 110) return true;
        }
        return false;""", image, x1, (y1 + y2) / 2)
    return found


def _detect(base: str, files: list[Path]) -> dict[str, Any]:
    """What the API itself answers for the same files at the same operating point."""
    params = {"operating_point": OPERATING_POINT}
    if len(files) == 1:
        r = httpx.post(f"{base}/v1/detect", params=params, content=files[0].read_bytes(),
                       headers={"Content-Type": "application/dicom"}, timeout=60)
    else:
        r = httpx.post(f"{base}/v1/detect", params=params, timeout=60,
                       files=[("file", (f.name, f.read_bytes(), "application/dicom"))
                              for f in files])
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _screenshot(driver: webdriver.Chrome, path: Path) -> None:
    """The whole page (the window grown to the page height; images scale with it)."""
    for _ in range(6):
        missing = int(driver.execute_script(
            "return document.documentElement.scrollHeight - window.innerHeight"))
        if missing <= 0:
            break
        height = driver.get_window_size()["height"] + missing
        driver.set_window_size(1400, min(height, 3000))
    driver.save_screenshot(str(path))


def _check_page(driver: webdriver.Chrome, expected: dict[str, Any]) -> None:
    images = [img for study in expected["studies"] for img in study["images"]]
    findings = {f["id"]: (img["index"], f) for img in images for f in img["findings"]}
    assert findings, "the generated case should give findings at high sensitivity"

    for img in images:
        stats = _canvas_stats(driver, img["index"])
        assert stats["width"] > 0 and stats["height"] > 0 and stats["shown"] > 0, stats
        assert stats["variance"] > 100, f"canvas looks blank: {stats}"
        assert stats["yellow"] > 0, f"no box drawn on the canvas: {stats}"

    drawn = _drawn_boxes(driver)
    assert len(drawn) == len(findings)
    assert sorted(b["id"] for b in drawn) == sorted(findings)
    for b in drawn:
        index, f = findings[b["id"]]
        assert b["image"] == index
        assert b["box"] == pytest.approx(f["box_px"], abs=0.5), b["id"]
        assert b["score"] == pytest.approx(f["score"])
        assert _box_edge_is_drawn(driver, index, b["canvas"]), b

    rows = driver.find_elements(By.CSS_SELECTOR, "#findings tbody tr")
    assert len(rows) == len(findings)
    table = {str(r.get_attribute("data-id")): r.text for r in rows}
    for fid, (_, f) in findings.items():
        assert fid in table[fid]
        assert f["location"]["text"] in table[fid]
        assert f"{f['score']:.3f}" in table[fid]

    raw = driver.find_element(By.ID, "raw-json").get_attribute("textContent") or ""
    assert f'"name": "{OPERATING_POINT}"' in raw
    assert "Research software, not for clinical diagnosis" in driver.find_element(
        By.TAG_NAME, "body").text


def test_viewer_shows_the_detected_boxes(browser: webdriver.Chrome, server: str,
                                         galactogram_files: list[Path]) -> None:
    _open(browser, server)
    models = httpx.get(f"{server}/v1/models", timeout=10).json()
    select = Select(browser.find_element(By.ID, "operating-point"))
    assert [o.get_attribute("value") for o in select.options] == [
        op["name"] for op in models[0]["operating_points"]]
    assert select.first_selected_option.get_attribute("value") == \
        models[0]["default_operating_point"]
    select.select_by_value(OPERATING_POINT)

    state = _choose(browser, galactogram_files[:1])
    assert state == "done", _page_error(browser)
    _check_page(browser, _detect(server, galactogram_files[:1]))
    assert len(browser.find_elements(By.CSS_SELECTOR, "canvas")) == 1


def test_viewer_fuses_two_views(browser: webdriver.Chrome, server: str,
                                galactogram_files: list[Path]) -> None:
    _open(browser, server)
    Select(browser.find_element(By.ID, "operating-point")).select_by_value(OPERATING_POINT)
    state = _choose(browser, galactogram_files)
    assert state == "done", _page_error(browser)
    expected = _detect(server, galactogram_files)
    _check_page(browser, expected)
    assert len(browser.find_elements(By.CSS_SELECTOR, "canvas")) == 2

    phrases = [f["phrase"] for study in expected["studies"] for f in study["fused"]]
    assert phrases, "the two views of the generated case should give fused findings"
    shown = browser.find_element(By.ID, "fused").text
    for phrase in phrases:
        assert phrase in shown

    if os.environ.get("GALACTO_WRITE_SCREENSHOT") == "1":
        _screenshot(browser, ROOT / "docs" / "viewer.png")


def test_viewer_shows_api_errors(browser: webdriver.Chrome, server: str,
                                 tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not a DICOM file\n" * 20)
    _open(browser, server)
    state = _choose(browser, [bogus])
    assert state == "error"
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed()
    expected = httpx.post(f"{server}/v1/detect", content=bogus.read_bytes(), timeout=30,
                          headers={"Content-Type": "application/dicom"}).json()
    assert expected["detail"] == "not_dicom"
    assert "not_dicom" in error.text
    assert expected["message"] in error.text
    assert "null" not in error.text and "undefined" not in error.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#boxes li")


def test_viewer_sends_the_api_key(browser: webdriver.Chrome, server: str,
                                  galactogram_files: list[Path]) -> None:
    key = "viewer-test-key-0123456789"
    _open(browser, server)
    browser.execute_script("""
        window.__sent = [];
        const original = window.fetch;
        window.fetch = (url, init) => {
            const h = new Headers((init && init.headers) || {});
            window.__sent.push([String(url), h.get('Authorization')]);
            return original(url, init);
        };""")
    try:
        field = browser.find_element(By.ID, "api-key")
        field.send_keys(key)
        browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", field)
        assert browser.execute_script("return sessionStorage.getItem('galacto.apiKey')") == key
        assert _choose(browser, galactogram_files[:1]) == "done", _page_error(browser)
        sent: list[list[str | None]] = browser.execute_script("return window.__sent")
        paths = {str(url).split("?")[0] for url, _ in sent}
        assert {"/v1/render", "/v1/detect"} <= paths, sent
        assert all(auth == f"Bearer {key}" for _, auth in sent), sent
        browser.find_element(By.ID, "api-key-clear").click()
        assert browser.execute_script("return sessionStorage.getItem('galacto.apiKey')") is None
    finally:  # the tab (and its sessionStorage) is shared with the other tests
        browser.execute_script("sessionStorage.clear()")
