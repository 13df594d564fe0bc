"""The viewer page at ``/`` in headless Chromium against a real ``galacto serve``: a DICOM file
chosen in the page is rendered on a canvas with the boxes ``/v1/detect`` returns, the findings
table and two-view phrases are shown, probable mimics are drawn and listed apart from the
findings, an invalid file shows the API's error code, and a tomosynthesis volume is shown a
frame at a time (slider, wheel, keys, a finding's row), each frame fetched from
``/v1/render?frame=N``, its findings solid on their best frame and dashed on the other frames
they were detected in.

Needs ``chromium`` + ``chromedriver`` and the ``selenium`` package; skipped without them.
``GALACTO_WRITE_SCREENSHOT=1`` also writes ``docs/viewer.png``.
"""

from __future__ import annotations

import math
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
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.wait import WebDriverWait

    HAVE_SELENIUM = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_SELENIUM = False

ROOT = Path(__file__).resolve().parents[1]
OPERATING_POINT = "high_sensitivity"
WAIT_S = 30.0
#: the mimic added to a real response in test_viewer_shows_mimics_apart_from_findings
MIMIC_LABEL, MIMIC_TEXT, MIMIC_SCORE = "air_bubble", "probable air bubble", 0.91
EVIDENCE = "other view: partner scored 0.83"
#: a pixel of the viewer's mimic colour (violet #b98cff) and of its lesion colour (#ffc933)
IS_MIMIC_JS = "(r, g, b) => b > 180 && b - g > 60 && b - r > 30"
IS_LESION_JS = "(r, g, b) => r > 200 && g > 150 && b < 110"


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


def _free_box(image: dict[str, Any], size: float) -> list[float]:
    """A ``size`` x ``size`` box (stored pixels), from a grid over the image, as far as
    possible from every finding box and the nipple."""
    taken = [list(f["box_px"]) for f in image["findings"]]
    if image.get("nipple_px"):
        nx, ny = image["nipple_px"]
        taken.append([nx - 100, ny - 100, nx + 100, ny + 100])

    def gap(a: list[float], b: list[float]) -> float:
        return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])

    cols, rows = image["cols"], image["rows"]
    grid = [[x, y, x + size, y + size]
            for x in (0.05 * cols + k * (0.9 * cols - size) / 9 for k in range(10))
            for y in (0.05 * rows + k * (0.9 * rows - size) / 9 for k in range(10))]
    best = max(grid, key=lambda c: min((gap(c, t) for t in taken), default=math.inf))
    return [round(v, 1) for v in best]


def _add_mimic_to_detect_responses(driver: webdriver.Chrome, image_index: int,
                                   mimic: dict[str, Any], evidence: str) -> None:
    """From now on, the page's own ``/v1/detect`` answers (real server responses) reach it
    with ``mimic`` added to the image ``image_index`` and ``evidence`` set on that image's
    first finding; everything else is passed through unchanged."""
    driver.execute_script("""
        const [index, mimic, evidence] = arguments;
        const original = window.fetch;
        window.fetch = async (url, init) => {
            const resp = await original(url, init);
            if (!String(url).startsWith('/v1/detect') || !resp.ok) return resp;
            const body = await resp.json();
            for (const study of body.studies) {
                for (const image of study.images) {
                    if (image.index !== index) continue;
                    image.mimics = [...(image.mimics || []), mimic];
                    if (image.findings.length) image.findings[0].evidence = evidence;
                }
            }
            return new Response(JSON.stringify(body),
                                {status: resp.status, headers: resp.headers});
        };""", image_index, mimic, evidence)


def _mimic_pixels(driver: webdriver.Chrome, image: int, canvas_box: list[float],
                  line: int) -> dict[str, float]:
    """In one canvas around a drawn mimic box: how many pixels within ``line`` of the box have
    the mimic and the lesion colour, and the share of rows of the box's left edge that have
    the mimic colour (1 for a solid line, less for a dashed one)."""
    stats: dict[str, float] = driver.execute_script(f"""
        const [img, box, line] = arguments;
        const isMimic = {IS_MIMIC_JS}, isLesion = {IS_LESION_JS};
        const c = document.querySelector(`canvas[data-image="${{img}}"]`);
        const ctx = c.getContext('2d');
        const [x1, y1, x2, y2] = box.map(Math.round);
        const x0 = Math.max(x1 - line, 0), y0 = Math.max(y1 - line, 0);
        const w = Math.min(x2 + line, c.width) - x0, h = Math.min(y2 + line, c.height) - y0;
        const d = ctx.getImageData(x0, y0, w, h).data;
        let mimic = 0, lesion = 0;
        for (let i = 0; i < d.length; i += 4) {{
            if (isMimic(d[i], d[i + 1], d[i + 2])) mimic++;
            if (isLesion(d[i], d[i + 1], d[i + 2])) lesion++;
        }}
        const edge = ctx.getImageData(Math.max(x1 - 1, 0), y1, 3, y2 - y1).data;
        let rows = 0, marked = 0;
        for (let r = 0; r < y2 - y1; r++) {{
            rows++;
            for (let k = 0; k < 3; k++) {{
                const i = (r * 3 + k) * 4;
                if (isMimic(edge[i], edge[i + 1], edge[i + 2])) {{ marked++; break; }}
            }}
        }}
        return {{mimic: mimic, lesion: lesion, edge: marked / Math.max(rows, 1)}};""",
        image, canvas_box, line)
    return stats


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


def test_viewer_shows_mimics_apart_from_findings(browser: webdriver.Chrome, server: str,
                                                galactogram_files: list[Path]) -> None:
    """Probable mimics are drawn dashed in their own colour, labelled with their text, listed
    under "Probable mimics (not lesions)" and never among the findings; a finding's evidence
    text is shown in its row; the status line names where the threshold is from.

    The bundled model (0.3.0) has no mimic classes and no rescoring model, so its responses
    carry no mimic and no evidence. This test therefore takes the real ``/v1/detect`` response
    that the page itself requests for the two generated views and, on its way into the page,
    adds one mimic entry (an air bubble, placed away from every finding) to the first image and
    an evidence text to that image's first finding; all the page's own rendering code runs on
    it unchanged.
    """
    expected = _detect(server, galactogram_files)
    images = [img for study in expected["studies"] for img in study["images"]]
    target = images[0]
    box = _free_box(target, 120.0)
    sy, sx = target["spacing_mm"]
    mimic = {"label": MIMIC_LABEL, "text": MIMIC_TEXT, "score": MIMIC_SCORE, "box_px": box,
             "box_mm": [round(box[0] * sx, 2), round(box[1] * sy, 2), round(box[2] * sx, 2),
                        round(box[3] * sy, 2)]}
    assert all(not img["mimics"] for img in images), "the bundled model emits no mimics"

    _open(browser, server)
    Select(browser.find_element(By.ID, "operating-point")).select_by_value(OPERATING_POINT)
    _add_mimic_to_detect_responses(browser, target["index"], mimic, EVIDENCE)
    state = _choose(browser, galactogram_files)
    assert state == "done", _page_error(browser)
    _check_page(browser, expected)   # the findings are drawn and listed as without the mimic

    # the mimic: one dashed, violet box, where the response puts it
    drawn: list[dict[str, Any]] = browser.execute_script("""
        return [...document.querySelectorAll('#mimic-boxes li')].map(li => ({
            image: Number(li.dataset.image), label: li.dataset.label,
            score: Number(li.dataset.score), text: li.textContent,
            box: li.dataset.box.split(',').map(Number),
            canvas: li.dataset.canvasBox.split(',').map(Number)}));""")
    assert len(drawn) == 1, drawn
    (m,) = drawn
    assert (m["image"], m["label"], m["score"]) == (target["index"], MIMIC_LABEL, MIMIC_SCORE)
    assert m["box"] == pytest.approx(box, abs=0.5)
    assert m["text"] == f"{MIMIC_TEXT} {MIMIC_SCORE:.2f}"
    canvas_w = float(browser.execute_script(
        "return document.querySelector(`canvas[data-image='${arguments[0]}']`).width",
        target["index"]))
    line = max(2, round(canvas_w / 400))
    px = _mimic_pixels(browser, target["index"], m["canvas"], line)
    assert px["mimic"] > 20, px
    assert px["lesion"] == 0, f"lesion-coloured pixels on the mimic box: {px}"
    assert 0.25 < px["edge"] < 0.9, f"the mimic box's edge should be dashed: {px}"

    # listed apart, with its text and score; not among the findings
    panel = browser.find_element(By.CSS_SELECTOR, ".mimic-panel")
    assert "Probable mimics (not lesions)" in panel.find_element(By.TAG_NAME, "h2").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#mimics tbody tr")
    assert len(rows) == 1 and rows[0].get_attribute("class") == "mimic"
    assert rows[0].get_attribute("data-label") == MIMIC_LABEL
    assert MIMIC_TEXT in rows[0].text and f"{MIMIC_SCORE:.3f}" in rows[0].text
    findings_text = browser.find_element(By.ID, "findings").text
    assert MIMIC_TEXT not in findings_text  # evidence may name a mimic score, never the mimic
    ids = {str(li.get_attribute("data-id"))
           for li in browser.find_elements(By.CSS_SELECTOR, "#boxes li")}
    assert ids == {f["id"] for img in images for f in img["findings"]}

    # the evidence text in its finding's row; the other rows show the response's own
    first = target["findings"][0]["id"]
    own = {f["id"]: f.get("evidence") or "—" for img in images for f in img["findings"]}
    for row in browser.find_elements(By.CSS_SELECTOR, "#findings tbody tr"):
        evidence = row.find_element(By.CSS_SELECTOR, "td.evidence").text
        data_id = str(row.get_attribute("data-id"))
        assert evidence == (EVIDENCE if data_id == first else own[data_id])

    status = browser.find_element(By.ID, "status").text
    source = expected["operating_point"]["source"]
    assert f"threshold from {source}" in status, status
    assert "1 probable mimic (not lesions)" in status, status
    caption = browser.find_element(
        By.CSS_SELECTOR, f"figure[data-image='{target['index']}'] figcaption").text
    assert "1 probable mimic" in caption


def test_viewer_without_mimics_says_so(browser: webdriver.Chrome, server: str,
                                       galactogram_files: list[Path]) -> None:
    """With the bundled model's own responses the mimic list is empty and says why."""
    _open(browser, server)
    assert _choose(browser, galactogram_files[:1]) == "done", _page_error(browser)
    assert not browser.find_elements(By.CSS_SELECTOR, "#mimic-boxes li")
    rows = browser.find_elements(By.CSS_SELECTOR, "#mimics tbody tr")
    assert len(rows) == 1 and rows[0].get_attribute("class") == "empty"
    classes = httpx.get(f"{server}/v1/models", timeout=10).json()[0]["classes"]
    if classes == ["filling_defect"]:
        assert "no mimic classes" in rows[0].text
    assert "mimic" not in browser.find_element(By.ID, "status").text


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


# --------------------------------------------------------------------------------------------
# tomosynthesis volumes
# --------------------------------------------------------------------------------------------

DBT_FRAMES = 9


@pytest.fixture(scope="module")
def dbt_file(galactogram_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated CC view as a 9-frame Breast Tomosynthesis Image (lesion in focus at
    frame 5; ``test_detect_volume.stacked_bto``)."""
    from dicomgen import to_bytes
    from test_detect_volume import stacked_bto

    from serving.pipeline.dicom_in import read_header

    cc = next(f for f in galactogram_files if read_header(f).view == "CC")
    path = tmp_path_factory.mktemp("viewer-dbt") / "L_CC_dbt.dcm"
    path.write_bytes(to_bytes(stacked_bto(cc, view="CC", frames=DBT_FRAMES, focus=4)))
    return path


def _frame_state(driver: webdriver.Chrome) -> dict[str, Any]:
    state: dict[str, Any] = driver.execute_script("""
        const f = document.querySelector('figure[data-image="0"]');
        return {frame: Number(f.dataset.frame), wanted: Number(f.dataset.wanted),
                loading: f.dataset.loading !== undefined,
                label: f.querySelector('.frame-label').textContent,
                slider: Number(f.querySelector('.frame-slider').value),
                max: Number(f.querySelector('.frame-slider').max)};""")
    return state


def _wait_frame(driver: webdriver.Chrome, frame: int) -> dict[str, Any]:
    WebDriverWait(driver, WAIT_S).until(
        lambda d: (s := _frame_state(d))["frame"] == frame and not s["loading"])
    return _frame_state(driver)


def _drawn_on_frame(driver: webdriver.Chrome) -> dict[str, dict[str, Any]]:
    """The drawn finding boxes by id: kind (best / range), frame, box, canvas box."""
    drawn: list[dict[str, Any]] = driver.execute_script("""
        return [...document.querySelectorAll('#boxes li')].map(li => ({
            id: li.dataset.id, kind: li.dataset.kind, frame: Number(li.dataset.frame),
            box: li.dataset.box.split(',').map(Number),
            canvas: li.dataset.canvasBox.split(',').map(Number)}));""")
    return {d["id"]: d for d in drawn}


#: Records the finding-coloured rectangles the page strokes (position, solid or dashed), then
#: strokes them as the page asked.
RECORD_STROKES_JS = """
    window.__strokes = [];
    const proto = CanvasRenderingContext2D.prototype;
    const original = proto.strokeRect;
    proto.strokeRect = function (x, y, w, h) {
        if (String(this.strokeStyle).toLowerCase() === '#ffc933') {
            window.__strokes.push({box: [x, y, x + w, y + h],
                                   dashed: this.getLineDash().length > 0});
        }
        return original.call(this, x, y, w, h);
    };
    window.__texts = [];
    const fill = proto.fillText;
    proto.fillText = function (text, x, y, ...rest) {
        window.__texts.push(String(text));
        return fill.call(this, text, x, y, ...rest);
    };"""


def _strokes(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The finding-coloured rectangles stroked since the last call (then forgotten)."""
    strokes: list[dict[str, Any]] = driver.execute_script(
        "const s = window.__strokes; window.__strokes = []; return s;")
    return strokes


def _stroke_of(strokes: list[dict[str, Any]], canvas_box: list[float]) -> str:
    """How the rectangle at ``canvas_box`` was stroked last: ``solid``, ``dashed`` or
    ``none``."""
    found = [s for s in strokes if s["box"] == pytest.approx(canvas_box, abs=0.01)]
    return "none" if not found else "dashed" if found[-1]["dashed"] else "solid"


def _edge_share(driver: webdriver.Chrome, canvas_box: list[float]) -> float:
    """The share of rows of a drawn box's left edge that have the finding colour (1 for a
    solid line, less for a dashed one)."""
    share: float = driver.execute_script(f"""
        const [x1, y1, , y2] = arguments[0].map(Math.round);
        const isLesion = {IS_LESION_JS};
        const c = document.querySelector('canvas[data-image="0"]');
        const d = c.getContext('2d').getImageData(Math.max(x1 - 1, 0), y1, 3, y2 - y1).data;
        let marked = 0;
        for (let r = 0; r < y2 - y1; r++) {{
            for (let k = 0; k < 3; k++) {{
                const i = (r * 3 + k) * 4;
                if (isLesion(d[i], d[i + 1], d[i + 2])) {{ marked++; break; }}
            }}
        }}
        return marked / Math.max(y2 - y1, 1);""", canvas_box)
    return share


def test_viewer_scrolls_through_a_volume(browser: webdriver.Chrome, server: str,
                                         dbt_file: Path) -> None:
    point = "high_specificity"  # a few findings: boxes and labels apart, pixels checkable
    r = httpx.post(f"{server}/v1/detect", params={"operating_point": point}, timeout=120,
                   content=dbt_file.read_bytes(), headers={"Content-Type": "application/dicom"})
    assert r.status_code == 200, r.text
    [image] = [img for study in r.json()["studies"] for img in study["images"]]
    assert image["number_of_frames"] == DBT_FRAMES and image["findings"]
    top = max(image["findings"], key=lambda f: f["score"])
    start = top["frame"]["best"]
    # a frame the top finding was detected in besides its best (slabs of 3: always one)
    near = start - 1 if top["frame"]["first"] < start else start + 1
    assert top["frame"]["first"] <= near <= top["frame"]["last"]

    _open(browser, server)
    Select(browser.find_element(By.ID, "operating-point")).select_by_value(point)
    browser.execute_script(RECORD_STROKES_JS)
    browser.execute_script("""
        window.__renders = [];
        const original = window.fetch;
        window.fetch = (url, init) => {
            if (String(url).startsWith('/v1/render')) window.__renders.push(String(url));
            return original(url, init);
        };""")
    assert _choose(browser, [dbt_file]) == "done", _page_error(browser)

    # opens on the top finding's best frame, drawn solid where the API puts it
    state = _wait_frame(browser, start)
    assert state["label"] == f"frame {start} / {DBT_FRAMES}"
    assert (state["slider"], state["max"]) == (start, DBT_FRAMES)
    drawn = _drawn_on_frame(browser)
    on_start = {f["id"] for f in image["findings"] if f["frame"]["best"] == start}
    assert {i for i, d in drawn.items() if d["kind"] == "best"} == on_start
    assert drawn[top["id"]]["box"] == pytest.approx(top["box_px"], abs=0.5)
    strokes = _strokes(browser)
    for i in on_start:
        assert _stroke_of(strokes, drawn[i]["canvas"]) == "solid", i
    assert _edge_share(browser, drawn[top["id"]]["canvas"]) > 0  # on the canvas
    # a finding located from its own volume is labelled with that view's clock face
    texts: list[str] = browser.execute_script("return window.__texts;")
    label = next(t for t in texts if t.startswith(f"{top['id']}  "))
    where = top["single_view_location"]
    assert where is not None
    clockless = where["quadrant"] in ("retroareolar", "central") or where["clock_hour"] is None
    said = where["quadrant"] if clockless else f"{where['clock_hour']} o'clock"
    if said:
        assert said in label and (clockless or where["quadrant"] not in label), label
    assert f"{where['distance_from_nipple_cm']} cm" in label and " half" not in label
    row = browser.find_element(By.CSS_SELECTOR, f"#findings tr[data-id='{top['id']}']")
    assert where["phrase"] in row.text and "half" not in row.text
    caption = browser.find_element(By.CSS_SELECTOR, "figure[data-image='0'] figcaption").text
    assert f"× {DBT_FRAMES} frames" in caption and "DBT" in caption

    # a key: the neighbouring frame, where the top finding is dashed (best seen elsewhere)
    figure = browser.find_element(By.CSS_SELECTOR, "figure[data-image='0']")
    figure.send_keys(Keys.ARROW_UP if near < start else Keys.ARROW_DOWN)
    state = _wait_frame(browser, near)
    assert state["label"] == f"frame {near} / {DBT_FRAMES}"
    drawn = _drawn_on_frame(browser)
    assert drawn[top["id"]]["kind"] == "range" and drawn[top["id"]]["frame"] == near
    assert drawn[top["id"]]["box"] == pytest.approx(top["box_px"], abs=0.5)
    strokes = _strokes(browser)
    for i, d in drawn.items():
        assert _stroke_of(strokes, d["canvas"]) == ("solid" if d["kind"] == "best" else
                                                   "dashed"), (i, d)
    assert _edge_share(browser, drawn[top["id"]]["canvas"]) > 0
    covering = {f["id"] for f in image["findings"]
                if f["frame"]["first"] <= near <= f["frame"]["last"]}
    assert set(drawn) == covering

    # the wheel over the picture: back to the start frame
    browser.execute_script("""
        document.querySelector('figure[data-image="0"] .canvas-wrap').dispatchEvent(
            new WheelEvent('wheel', {deltaY: arguments[0], bubbles: true, cancelable: true}));""",
        120 if near < start else -120)
    _wait_frame(browser, start)

    # the slider: frame 1; then the top finding's row brings its best frame back
    browser.execute_script("""
        const s = document.querySelector('figure[data-image="0"] .frame-slider');
        s.value = '1'; s.dispatchEvent(new Event('input', {bubbles: true}));""")
    state = _wait_frame(browser, 1)
    assert state["label"] == f"frame 1 / {DBT_FRAMES}" and state["slider"] == 1
    assert all(d["frame"] == 1 for d in _drawn_on_frame(browser).values())
    row = browser.find_element(By.CSS_SELECTOR, f"#findings tr[data-id='{top['id']}']")
    assert f"frame {start} (detected in" in row.text
    row.click()
    _wait_frame(browser, start)

    # every frame came from /v1/render without marks (the page draws them): first the
    # central one (no frame asked), then each frame once (the page keeps those it fetched)
    renders: list[str] = browser.execute_script("return window.__renders")
    assert all("overlay=false" in url for url in renders), renders
    assert "frame=" not in renders[0]
    asked = [int(url.split("frame=")[1].split("&")[0]) for url in renders[1:]]
    central = (DBT_FRAMES + 1) // 2
    assert sorted(asked) == sorted({start, near, 1} - {central}), renders
