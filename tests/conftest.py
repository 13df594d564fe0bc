"""Shared fixtures: one generated galactogram study (GE profile, CC + ML/MLO of one breast
with filling defects) and its detection result by the bundled model, for the tests of the
DICOM results, the HTTP service and the gateway."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
import pytest

from serving.outputs.common import OperatingPointPerformance, ResultInput
from serving.pipeline.detect import detect
from serving.pipeline.dicom_in import read_image
from serving.pipeline.findings import MimicOut
from serving.pipeline.model import DetectorModel, default_model_dir, load_model


def synth_lesion_study(out: Path, *, cases: int, seed: int) -> Path:
    """``out`` filled by ``galacto synth`` (in a subprocess) with ``cases`` generated cases with
    lesions of the GE profile, from ``seed``: uncompressed, MONOCHROME2."""
    r = subprocess.run([sys.executable, "-m", "serving.cli", "synth", "--out", str(out),
                        "--cases", str(cases), "--seed", str(seed), "--profile", "ge",
                        "--normal-share", "0", "--compressed-share", "0",
                        "--monochrome1-share", "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def galactogram_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The two views of one generated case with lesions (uncompressed, MONOCHROME2)."""
    out = synth_lesion_study(tmp_path_factory.mktemp("galactogram") / "study", cases=1, seed=77)
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == 2, files
    return files


@pytest.fixture(scope="session")
def bundled_model() -> DetectorModel:
    """The bundled default model."""
    return load_model(default_model_dir(), threads=1)


@pytest.fixture(scope="session")
def study_result(galactogram_files: list[Path], bundled_model: DetectorModel) -> ResultInput:
    """``galactogram_files`` detected at the high-sensitivity operating point (several
    findings per image, fused CC/MLO findings), with the source headers."""
    images = [read_image(f) for f in galactogram_files]
    response = detect(images, bundled_model, "high_sensitivity",
                      sources=[str(f) for f in galactogram_files])
    assert len(response.studies) == 1
    study = response.studies[0]
    assert all(img.findings for img in study.images) and study.fused
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in galactogram_files]
    return ResultInput(sources=sources, study=study, model=response.model,
                       operating_point=response.operating_point)


@pytest.fixture(scope="session")
def measured(study_result: ResultInput, bundled_model: DetectorModel) -> ResultInput:
    """``study_result`` with what its operating point promises (the model card's sensitivity
    and false-positive rate), as the service builds its DICOM results."""
    point = bundled_model.operating_point(study_result.operating_point.name)
    return dataclasses.replace(study_result, performance=OperatingPointPerformance.of(point))


def free_port() -> int:
    """A TCP port free on localhost right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LiveServer:
    """A ``galacto serve`` subprocess: its base URL, port and log file."""

    url: str
    port: int
    log: Path


def wait_until_up(proc: subprocess.Popen[bytes], url: str, log_path: Path,
                  timeout_s: float) -> None:
    """Poll ``url`` until it answers 200; fail with the process's log if the process exits
    or ``timeout_s`` seconds pass."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"exited ({proc.returncode}):\n{log_path.read_text()}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, \
            f"{url} not up in {timeout_s:.0f} s:\n{log_path.read_text()[-4000:]}"
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """Terminate ``proc``, killing it if it does not exit in ``timeout_s`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def galacto_serve(folder: Path, env: dict[str, str] | None = None,
                  timeout_s: float = 120) -> Iterator[LiveServer]:
    """``galacto serve`` on a free localhost port with results in ``folder``, the caller's
    ``GALACTO_*`` variables replaced by ``env``; yields once ``/readyz`` answers 200."""
    import os

    port = free_port()
    log_path = folder / "server.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GALACTO_")}
    environment.update(env or {})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving.cli", "serve", "--port", str(port),
             "--results-dir", str(folder / "results")],
            stdout=log, stderr=subprocess.STDOUT, env=environment)
    server = LiveServer(f"http://127.0.0.1:{port}", port, log_path)
    try:
        wait_until_up(proc, f"{server.url}/readyz", log_path, timeout_s)
        yield server
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real ``galacto serve`` (uvicorn) on a free localhost port, no auth, JSON logs.

    Yields ``(base URL, path of its log file)``; the process is stopped at the end.
    """
    with galacto_serve(tmp_path_factory.mktemp("server")) as server:
        yield server.url, server.log


def without_findings(result: ResultInput) -> ResultInput:
    """``result`` with every finding and every fused finding removed."""
    images = [img.model_copy(update={"findings": []}) for img in result.study.images]
    study = result.study.model_copy(update={"images": images, "fused": []})
    return ResultInput(sources=result.sources, study=study, model=result.model,
                       operating_point=result.operating_point)


def store_event(data: bytes, sop_class: str, sop_instance: str, calling_ae: str) -> Any:
    """The parts of a pynetdicom C-STORE event that the gateway's store handler reads."""
    return SimpleNamespace(
        encoded_dataset=lambda include_meta=True: data,
        request=SimpleNamespace(AffectedSOPClassUID=sop_class,
                                AffectedSOPInstanceUID=sop_instance),
        assoc=SimpleNamespace(requestor=SimpleNamespace(ae_title=calling_ae)))


def without_orientation(result: ResultInput) -> ResultInput:
    """``result`` whose source headers lack PatientOrientation (the pipeline then assumes the
    standard hanging)."""
    sources = []
    for src in result.sources:
        header = copy.deepcopy(src)  # Dataset(src) would share the fixture's elements
        del header.PatientOrientation
        sources.append(header)
    return dataclasses.replace(result, sources=sources)


def with_mimic(result: ResultInput) -> tuple[ResultInput, MimicOut]:
    """``result`` whose first image also has a probable air bubble, away from its findings."""
    image = result.study.images[0]
    x, y = image.cols * 0.35, image.rows * 0.7
    mimic = MimicOut(label="air_bubble", text="probable air bubble", score=0.71,
                     box_px=[x, y, x + 40, y + 40], box_mm=[0.0, 0.0, 4.0, 4.0])
    images = [image.model_copy(update={"mimics": [mimic]}), *result.study.images[1:]]
    study = result.study.model_copy(update={"images": images})
    return dataclasses.replace(result, study=study), mimic
