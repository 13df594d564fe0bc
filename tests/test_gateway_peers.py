"""The DICOM gateway against real peers: Orthanc (a PACS), DCMTK ``echoscu``/``storescu`` (with
compressed copies made by ``dcmcjpls``/``dcmcjpeg``/``dcmcrle``), and a ``galacto gateway run``
process killed with SIGKILL right after a successful C-STORE and restarted.

Each part is skipped, with the reason, only when its tool is not installed (Debian packages
``orthanc`` and ``dcmtk``; CI installs both).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from conftest import stop, wait_until_up
from pydicom.dataset import Dataset
from test_gateway import (
    CAD_SR,
    Destination,
    echo,
    eventually,
    free_port,
    job_of,
    new_study,
    store,
)

from serving.gateway import Gateway, GatewaySettings, JobState
from serving.gateway.spool import Spool
from serving.outputs.cad_sr import read_cad_sr
from serving.pipeline.model import DetectorModel

QUIET_S = 0.5
REPO = Path(__file__).resolve().parents[1]
ALLOWED = "ORTHANC,STORESCU,ECHOSCU"


def _native(name: str) -> str | None:
    """The DCMTK (or other native) executable ``name`` on PATH or in /usr/bin, skipping
    scripts of the same name (pynetdicom installs Python ``storescu``/``echoscu`` scripts)."""
    dirs = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/sbin"]
    for folder in dirs:
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            with open(path, "rb") as fh:
                if fh.read(2) != b"#!":
                    return str(path)
    return None


ORTHANC = _native("Orthanc")
DCMTK = {name: _native(name) for name in ("echoscu", "storescu", "dcmcjpls", "dcmcjpeg",
                                          "dcmcrle")}
needs_orthanc = pytest.mark.skipif(ORTHANC is None,
                                   reason="Orthanc is not installed (Debian package orthanc)")
needs_dcmtk = pytest.mark.skipif(
    None in DCMTK.values(),
    reason=f"DCMTK tools missing: {[k for k, v in DCMTK.items() if v is None]} "
           "(Debian package dcmtk)")


# --------------------------------------------------------------------------------------------
# fixtures: Orthanc and an in-process gateway sending to it
# --------------------------------------------------------------------------------------------


@dataclass
class Orthanc:
    """A running Orthanc: REST base URL and DICOM port."""

    url: str
    dicom_port: int

    def get(self, path: str) -> Any:
        r = httpx.get(f"{self.url}{path}", timeout=10)
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="module")
def gateway_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, gateway_port: int) -> Iterator[Orthanc]:
    """Orthanc on free localhost ports, temporary storage, the gateway as modality
    ``galacto``; no authentication, no remote access."""
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    folder = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = free_port(), free_port()
    config = {"Name": "galacto-test", "StorageDirectory": str(folder / "db"),
              "IndexDirectory": str(folder / "db"), "HttpPort": http_port,
              "DicomPort": dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "Plugins": [], "DicomCheckCalledAet": False,
              "DicomModalities": {"galacto": ["GALACTO", "127.0.0.1", gateway_port]}}
    (folder / "orthanc.json").write_text(json.dumps(config))
    with open(folder / "orthanc.log", "wb") as log:
        proc = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log,
                                stderr=subprocess.STDOUT)
    server = Orthanc(f"http://127.0.0.1:{http_port}", dicom_port)
    try:
        wait_until_up(proc, f"{server.url}/system", folder / "orthanc.log", 30)
        yield server
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, bundled_model: DetectorModel,
            orthanc: Orthanc, gateway_port: int) -> Iterator[Gateway]:
    """A gateway on ``gateway_port`` with an allow-list, sending results to Orthanc; it keeps
    instance files so tests can look at what arrived."""
    settings = GatewaySettings(
        port=gateway_port, spool_dir=tmp_path_factory.mktemp("gateway") / "spool",
        quiet_period_s=QUIET_S, allowed_callers=ALLOWED, keep_instances=True,
        destination_ae_title="ORTHANC", destination_host="127.0.0.1",
        destination_port=orthanc.dicom_port, backoff_s=0.2, send_retries=2,
        network_timeout_s=10)
    gw = Gateway(settings, model=bundled_model).start()
    yield gw
    gw.stop()


def _write(datasets: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ds in enumerate(datasets):
        path = folder / f"{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# Orthanc round trip
# --------------------------------------------------------------------------------------------


@needs_orthanc
def test_orthanc_round_trip(orthanc: Orthanc, gateway: Gateway,
                            galactogram_files: list[Path], tmp_path: Path) -> None:
    images = new_study(galactogram_files)
    study_uid = str(images[0].StudyInstanceUID)
    sources = {str(d.SOPInstanceUID) for d in images}
    orthanc_study = None
    for path in _write(images, tmp_path):
        r = httpx.post(f"{orthanc.url}/instances", content=path.read_bytes(), timeout=30)
        assert r.status_code == 200, r.text
        orthanc_study = r.json()["ParentStudy"]
    assert orthanc_study is not None

    r = httpx.post(f"{orthanc.url}/modalities/galacto/store", content=orthanc_study,
                   timeout=60)
    assert r.status_code == 200, r.text  # Orthanc's C-STORE to the gateway succeeded
    job = gateway.wait(job_of(gateway, study_uid), timeout_s=30)
    assert job.state is JobState.SENT, job.reason
    assert job.calling_ae_title == "ORTHANC" and job.instances_analysed == 2

    def sr_series() -> list[str]:
        return [s["ID"] for s in orthanc.get(f"/studies/{orthanc_study}/series")
                if s["MainDicomTags"].get("Modality") == "SR"]

    eventually(lambda: bool(sr_series()), timeout_s=15)
    [series] = sr_series()  # the SR landed in the same Orthanc study, in a new series
    [instance] = orthanc.get(f"/series/{series}/instances")
    data = httpx.get(f"{orthanc.url}/instances/{instance['ID']}/file", timeout=10).content
    sr = pydicom.dcmread(io.BytesIO(data))
    assert sr.SOPClassUID == CAD_SR and sr.StudyInstanceUID == study_uid
    assert sr.PatientID == images[0].PatientID
    evidence = {str(ref.ReferencedSOPInstanceUID)
                for item in sr.CurrentRequestedProcedureEvidenceSequence
                for ser in item.ReferencedSeriesSequence for ref in ser.ReferencedSOPSequence}
    assert evidence == sources
    marks = read_cad_sr(sr)
    assert set(marks) <= sources
    assert sum(len(m) for m in marks.values()) == job.findings > 0
    assert all(0 < mark.certainty <= 1 for m in marks.values() for mark in m
               if mark.certainty is not None)
    assert len(orthanc.get(f"/studies/{orthanc_study}/instances")) == 3  # 2 images + 1 SR


# --------------------------------------------------------------------------------------------
# DCMTK
# --------------------------------------------------------------------------------------------


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


@needs_dcmtk
def test_dcmtk_echoscu_and_allow_list(gateway: Gateway) -> None:
    ok = _run([str(DCMTK["echoscu"]), "-aet", "ECHOSCU", "-aec", "GALACTO", "127.0.0.1",
               str(gateway.port)])
    assert ok.returncode == 0, ok.stderr
    refused = _run([str(DCMTK["echoscu"]), "-aet", "UNKNOWN", "-aec", "GALACTO",
                    "127.0.0.1", str(gateway.port)])
    assert refused.returncode != 0
    assert "Association Rejected" in refused.stdout + refused.stderr


@needs_dcmtk
def test_dcmtk_storescu_unknown_caller_is_refused(gateway: Gateway,
                                                  galactogram_files: list[Path]) -> None:
    before = len(gateway.jobs(limit=1000))
    r = _run([str(DCMTK["storescu"]), "-aet", "UNKNOWN", "-aec", "GALACTO", "127.0.0.1",
              str(gateway.port), str(galactogram_files[0])])
    assert r.returncode != 0
    assert "Association Rejected" in r.stdout + r.stderr
    assert "Calling AE Title Not Recognized" in r.stdout + r.stderr
    assert len(gateway.jobs(limit=1000)) == before


#: (name, compressor or None, storescu proposal flag, transfer syntax expected in the spool)
CODECS = [
    ("uncompressed", None, "-xe", "1.2.840.10008.1.2.1"),
    ("jpeg-ls", "dcmcjpls", "-xt", "1.2.840.10008.1.2.4.80"),
    ("jpeg-lossless-sv1", "dcmcjpeg", "-xs", "1.2.840.10008.1.2.4.70"),
    ("rle", "dcmcrle", "-xr", "1.2.840.10008.1.2.5"),
    ("deflate", None, "-xd", "1.2.840.10008.1.2.1.99"),
]


@needs_dcmtk
@pytest.mark.parametrize(("name", "compressor", "propose", "syntax"), CODECS,
                         ids=[c[0] for c in CODECS])
def test_dcmtk_storescu_sends_compressed_and_uncompressed(
        gateway: Gateway, galactogram_files: list[Path], tmp_path: Path, name: str,
        compressor: str | None, propose: str, syntax: str) -> None:
    images = new_study(galactogram_files)
    study_uid = str(images[0].StudyInstanceUID)
    files = _write(images, tmp_path / "plain")
    if compressor is not None:
        (tmp_path / name).mkdir()
        packed = []
        for path in files:
            out = tmp_path / name / path.name
            r = _run([str(DCMTK[compressor]), str(path), str(out)])
            assert r.returncode == 0, r.stderr
            packed.append(out)
        files = packed
    r = _run([str(DCMTK["storescu"]), "-aet", "STORESCU", "-aec", "GALACTO", propose, "-R",
              "127.0.0.1", str(gateway.port), *map(str, files)])
    assert r.returncode == 0, r.stdout + r.stderr
    job = gateway.wait(job_of(gateway, study_uid), timeout_s=30)
    assert job.state is JobState.SENT, job.reason
    assert (job.instances_received, job.instances_analysed, job.skipped) == (2, 2, ())
    assert job.findings > 0
    spooled = [pydicom.dcmread(i.path, stop_before_pixels=True)
               for i in gateway.spool.instances(job.id)]
    assert {str(d.file_meta.TransferSyntaxUID) for d in spooled} == {syntax}


# --------------------------------------------------------------------------------------------
# crash: kill -9 right after C-STORE success, restart, sent exactly once
# --------------------------------------------------------------------------------------------


def _start_gateway_process(port: int, spool: Path, dest: Destination,
                           log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GALACTO_")}
    env["GALACTO_GATEWAY_BACKOFF_S"] = "0.2"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving.cli.gateway", "run", "--port", str(port),
             "--spool-dir", str(spool), "--destination", f"DEST@127.0.0.1:{dest.port}",
             "--quiet-period", "2", "--plain-logs"],
            stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    deadline = time.monotonic() + 60
    while echo(port) != 0:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "gateway process did not answer C-ECHO in 60 s"
        time.sleep(0.2)
    return proc


def test_kill_after_store_success_then_restart_sends_exactly_once(
        tmp_path: Path, galactogram_files: list[Path]) -> None:
    dest = Destination().start()
    port, spool_dir, log = free_port(), tmp_path / "spool", tmp_path / "gateway.log"
    images = new_study(galactogram_files)
    study_uid = str(images[0].StudyInstanceUID)
    proc = _start_gateway_process(port, spool_dir, dest, log)
    try:
        assert store(port, images) == [0, 0]
        proc.send_signal(signal.SIGKILL)  # right after the last success, in the quiet period
        proc.wait(10)
        spool = Spool(spool_dir)
        [job] = spool.jobs(study_uid=study_uid)
        assert job.state is JobState.RECEIVED and job.instances_received == 2
        assert all(i.path.is_file() for i in spool.instances(job.id))  # nothing lost
        spool.close()
        assert not dest.received

        proc = _start_gateway_process(port, spool_dir, dest, log)
        spool = Spool(spool_dir)
        try:
            eventually(lambda: spool.job(job.id).state is JobState.SENT, timeout_s=30)
            done = spool.job(job.id)
            assert done.instances_analysed == 2 and done.results_sent == 1
        finally:
            spool.close()
        time.sleep(2.5)  # longer than a quiet period: nothing else arrives
        assert len(dest.of_study(study_uid)) == 1 and len(dest.received) == 1

        # `galacto gateway resend` while the gateway runs: queued, sent again (same object)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GALACTO_")}
        r = subprocess.run([sys.executable, "-m", "serving.cli.gateway", "resend", str(job.id),
                            "--spool-dir", str(spool_dir), "--wait", "30"],
                           capture_output=True, text=True, env=env, cwd=REPO, timeout=90)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "queued for re-send" in r.stdout and f"job {job.id}: sent" in r.stdout
        again = dest.of_study(study_uid)
        assert len(again) == 2 and again[0].SOPInstanceUID == again[1].SOPInstanceUID
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        dest.stop()
    text = log.read_text()
    assert study_uid not in text and str(images[0].SOPInstanceUID) not in text
    assert images[0].PatientID not in text

