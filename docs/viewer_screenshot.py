"""Screenshot of the viewer page (``/``) on real DICOM files, e.g. a tomosynthesis volume.

Starts ``galacto serve`` (``python -m serving.cli serve``) on a free localhost port with the
bundled model (or ``--model``), no authentication, results in a temporary folder, and the
volume budgets (``GALACTO_MAX_FRAMES``, ``GALACTO_MAX_VOLUME_PIXELS``,
``GALACTO_MAX_UPLOAD_MB``) raised just enough for the files given; opens the viewer in
headless Chromium (selenium + chromedriver, as ``tests/test_viewer.py`` does), selects the
operating point, chooses the file(s), waits for the analysis and for the frame to be drawn
(a volume opens on its top finding's best frame unless ``--frame`` is given), grows the window
to the page height, saves the screenshot, stops the server, and prints the findings the page
shows. A PNG larger than ``--max-kb`` is re-saved with a 256-colour palette.

Needs ``chromium`` and ``chromedriver`` on PATH (or ``CHROME_BIN`` / ``CHROMEDRIVER``) and the
``selenium`` package. Run from the repository root with the project's environment::

    python docs/viewer_screenshot.py data/synth-dbt-test/cases/case_000010/R_CC_tomo.dcm \\
        --operating-point balanced --out docs/viewer_dbt.png

Analysing a large volume takes a while on a CPU (``--timeout`` bounds the wait).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pydicom
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MAX_FRAMES = 200        # serving.pipeline.intake.volume.DEFAULT_MAX_FRAMES
DEFAULT_MAX_PIXELS = 8192 * 8192  # Settings.max_pixels
DEFAULT_MAX_UPLOAD_MB = 512.0   # Settings.max_upload_mb
MAX_HEIGHT = 4000               # the tallest window the screenshot grows to (px)


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def budget_env(files: list[Path]) -> dict[str, str]:
    """``GALACTO_*`` limits that admit ``files``: at least the service's defaults, raised to
    the largest volume's frames and pixels and to the files' total size."""
    frames, pixels = DEFAULT_MAX_FRAMES, DEFAULT_MAX_PIXELS
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        n = int(getattr(ds, "NumberOfFrames", 1) or 1)
        frames = max(frames, n)
        pixels = max(pixels, n * int(ds.Rows) * int(ds.Columns))
    upload_mb = max(DEFAULT_MAX_UPLOAD_MB, sum(f.stat().st_size for f in files) / 2**20 + 16)
    return {"GALACTO_MAX_FRAMES": str(frames), "GALACTO_MAX_VOLUME_PIXELS": str(pixels),
            "GALACTO_MAX_UPLOAD_MB": f"{upload_mb:.0f}"}


@contextmanager
def galacto_serve(folder: Path, env: dict[str, str], model: Path | None,
                  timeout_s: float = 300) -> Iterator[str]:
    """``galacto serve`` on a free localhost port, logging to ``folder/server.log``, the
    caller's ``GALACTO_*`` variables replaced by ``env``; yields its base URL once
    ``/readyz`` answers 200, and stops it afterwards."""
    port = free_port()
    log_path = folder / "server.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GALACTO_")}
    environment.update(env)
    command = [sys.executable, "-m", "serving.cli", "serve", "--port", str(port),
               "--results-dir", str(folder / "results")]
    if model is not None:
        command += ["--model", str(model)]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"galacto serve exited ({proc.returncode}):\n"
                                   f"{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url}/readyz not up in {timeout_s:.0f} s:\n"
                                   f"{log_path.read_text()[-4000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def chromium(folder: Path, width: int) -> Iterator[webdriver.Chrome]:
    """Headless Chromium driven by the installed chromedriver (no driver download)."""
    binary = next((p for p in (os.environ.get("CHROME_BIN"), shutil.which("chromium"),
                               shutil.which("chromium-browser"), shutil.which("google-chrome"))
                   if p), None)
    driver_path = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not binary or not driver_path:
        raise SystemExit("chromium and/or chromedriver not found "
                         "(apt install chromium chromium-driver)")
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},1000", "--force-device-scale-factor=1",
                "--hide-scrollbars", f"--user-data-dir={folder / 'chromium'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def frame_state(driver: webdriver.Chrome) -> dict[str, Any] | None:
    """The first volume figure's frame drawn, frame wanted, loading flag and label; None
    when the page shows no volume."""
    state: dict[str, Any] | None = driver.execute_script("""
        const f = document.querySelector('figure[data-image] .frame-slider')
            ?.closest('figure');
        if (!f) return null;
        return {frame: Number(f.dataset.frame), wanted: Number(f.dataset.wanted),
                loading: f.dataset.loading !== undefined,
                label: f.querySelector('.frame-label').textContent,
                max: Number(f.querySelector('.frame-slider').max)};""")
    return state


def show_frame(driver: webdriver.Chrome, frame: int | None, timeout_s: float) -> int | None:
    """Move the volume to ``frame`` (None: keep the viewer's own start frame) and wait until
    it is drawn; the frame shown (None without a volume)."""
    state = frame_state(driver)
    if state is None:
        return None
    if frame is not None:
        if not 1 <= frame <= state["max"]:
            raise SystemExit(f"--frame {frame}: the volume has frames 1-{state['max']}")
        driver.execute_script("""
            const s = document.querySelector('.frame-slider');
            s.value = String(arguments[0]);
            s.dispatchEvent(new Event('input'));""", frame)

    def settled(d: webdriver.Chrome) -> bool:
        s = frame_state(d)
        return bool(s and not s["loading"] and s["frame"] == s["wanted"]
                    and (frame is None or s["frame"] == frame))

    WebDriverWait(driver, timeout_s).until(settled)
    final = frame_state(driver)
    return int(final["frame"]) if final else None


def screenshot(driver: webdriver.Chrome, width: int, path: Path) -> None:
    """The whole page: the window grown to the page height (as ``tests/test_viewer.py``)."""
    for _ in range(6):
        missing = int(driver.execute_script(
            "return document.documentElement.scrollHeight - window.innerHeight"))
        if missing <= 0:
            break
        height = driver.get_window_size()["height"] + missing
        driver.set_window_size(width, min(height, MAX_HEIGHT))
    driver.execute_script("window.scrollTo(0, 0); document.activeElement?.blur();")
    time.sleep(0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))


def shrink(path: Path, max_kb: float) -> None:
    """Re-save ``path`` optimised; with a 256-colour palette if still over ``max_kb``."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    rgb.save(path, optimize=True)
    if path.stat().st_size > max_kb * 1024:
        rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                     dither=Image.Dither.NONE).save(path, optimize=True)


def summary(raw: dict[str, Any]) -> list[str]:
    """One line per finding of the response the page received."""
    lines = [f"operating point: {raw['operating_point']['name']} "
             f"(threshold {raw['operating_point'].get('score_threshold')})"]
    for study in raw["studies"]:
        for image in study["images"]:
            lines.append(f"image {image['index']}: {image.get('laterality')} "
                         f"{image.get('view')}, {image.get('number_of_frames') or 1} frame(s), "
                         f"{len(image['findings'])} finding(s)")
            for f in image["findings"]:
                frame = f.get("frame") or {}
                where = (f", frame {frame['best']} ({frame['first']}-{frame['last']})"
                         if frame else "")
                location = (f.get("location") or {}).get("text", "-")
                lines.append(f"  {f['id']}: score {f['score']:.3f}{where}, "
                             f"box_px {[round(v) for v in f['box_px']]}, {location}")
                if f.get("single_view_location"):
                    lines.append(f"    single view: {f['single_view_location']['phrase']}")
        lines += [f"  two-view: {fused['phrase']}" for fused in study.get("fused", [])]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help="DICOM file(s) to choose in the viewer")
    p.add_argument("--operating-point", default="balanced",
                   help="operating point selected in the page (default: balanced)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "viewer_dbt.png",
                   help="PNG to write (default: docs/viewer_dbt.png)")
    p.add_argument("--frame", type=int, default=None,
                   help="volume frame to show, 1-based (default: the viewer's choice, the top "
                        "finding's best frame)")
    p.add_argument("--json", type=Path, default=None, dest="json_out",
                   help="also write the /v1/detect response the page received to this file")
    p.add_argument("--model", type=Path, default=None,
                   help="models/<name>/<version> (default: the bundled model)")
    p.add_argument("--width", type=int, default=1400, help="window width in px (1400)")
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds to wait for the analysis (900)")
    p.add_argument("--max-kb", type=float, default=600,
                   help="above this size the PNG is re-saved with a palette (600)")
    args = p.parse_args(argv)

    files = [f.resolve() for f in args.files]
    for f in files:
        if not f.is_file():
            p.error(f"{f}: no such file")
    out: Path = args.out.resolve()

    with tempfile.TemporaryDirectory(prefix="viewer-shot-") as scratch:
        folder = Path(scratch)
        env = budget_env(files)
        with galacto_serve(folder, env, args.model) as url, \
                chromium(folder, args.width) as driver:
            driver.set_window_size(args.width, 1000)
            driver.get(f"{url}/")
            WebDriverWait(driver, 120).until(
                lambda d: d.find_element(By.ID, "operating-point").is_enabled())
            select = Select(driver.find_element(By.ID, "operating-point"))
            names = [o.get_attribute("value") for o in select.options]
            if args.operating_point not in names:
                raise SystemExit(f"--operating-point {args.operating_point}: the model has "
                                 f"{', '.join(str(n) for n in names)}")
            select.select_by_value(args.operating_point)

            started = time.monotonic()
            driver.find_element(By.ID, "file-input").send_keys(
                "\n".join(str(f) for f in files))
            WebDriverWait(driver, args.timeout, poll_frequency=1).until(
                lambda d: d.execute_script("return document.body.dataset.state")
                in ("done", "error"))
            if driver.execute_script("return document.body.dataset.state") == "error":
                error = driver.find_element(By.ID, "error").get_attribute("textContent")
                raise SystemExit(f"the viewer shows an error: {error}")
            print(f"analysed in {time.monotonic() - started:.0f} s")
            shown = show_frame(driver, args.frame, args.timeout)
            raw = json.loads(driver.find_element(By.ID, "raw-json").get_attribute(
                "textContent") or "{}")
            screenshot(driver, args.width, out)

    shrink(out, args.max_kb)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(raw, indent=2) + "\n")
    with Image.open(out) as img:
        size = img.size
    for line in summary(raw):
        print(line)
    print(f"frame shown: {shown}" if shown is not None else "no volume shown")
    print(f"wrote {out} ({size[0]}x{size[1]} px, {out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
