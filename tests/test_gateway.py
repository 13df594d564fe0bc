"""The DICOM gateway in process: a real pynetdicom listener on a free localhost port, a
pynetdicom SCU as the sending PACS and an in-test Storage SCP as the destination, with tiny
timings (quiet period 0.5 s, backoff 0.1 s).

Real peers (Orthanc, DCMTK) and the kill -9 crash test are in ``test_gateway_peers.py``; the
helpers here (:class:`Destination`, :func:`new_study`, :func:`store`) are shared with it.
"""

from __future__ import annotations

import errno
import io
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from conftest import store_event
from dicomgen import make_dataset
from fastapi.testclient import TestClient
from pydantic import ValidationError
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from serving.api.routes.jobs import router as jobs_router
from serving.dicom_status import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
)
from serving.gateway import Gateway, GatewayError, GatewaySettings, JobState
from serving.gateway.scp import StoreSCP
from serving.gateway.sender import StowSender
from serving.gateway.settings import CallerRule, parse_destination
from serving.gateway.spool import InvalidInstanceError, JobStateError, Spool, StoreOutcome
from serving.outputs.cad_sr import read_cad_sr
from serving.outputs.common import MANUFACTURER
from serving.pipeline.dicom_in import ACCEPTED_SOP_CLASSES
from serving.pipeline.model import DetectorModel
from tests.gateway_helpers import QUIET_S, clear_gateway_env, gateway_factory

CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
RESULT_CLASSES = (CAD_SR, COMPREHENSIVE_3D_SR, GSPS)


# --------------------------------------------------------------------------------------------
# helpers shared with test_gateway_peers.py
# --------------------------------------------------------------------------------------------


class Destination:
    """An in-test Storage SCP (AE ``DEST``) that records every data set it receives.

    Args:
        port: port to listen on (0: a free one, kept across stop/start).
        ae_title: its AE title.
    """

    def __init__(self, port: int = 0, ae_title: str = "DEST") -> None:
        self.port = port
        self.ae_title = ae_title
        self.received: list[Dataset] = []
        self._lock = threading.Lock()
        self._server: Any = None

    def _on_store(self, event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self._lock:
            self.received.append(ds)
        return 0x0000

    def start(self) -> Destination:
        ae = AE(self.ae_title)
        for sop_class in RESULT_CLASSES:
            ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self._server = ae.start_server(("127.0.0.1", self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = int(self._server.server_address[1])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def of_study(self, study_uid: str, sop_class: str = CAD_SR) -> list[Dataset]:
        """Received objects of one study and SOP class."""
        with self._lock:
            return [d for d in self.received
                    if d.StudyInstanceUID == study_uid and d.SOPClassUID == sop_class]

    def settings(self) -> dict[str, Any]:
        """GatewaySettings keywords that send to this destination."""
        return {"destination_ae_title": self.ae_title, "destination_host": "127.0.0.1",
                "destination_port": self.port}


def new_study(paths: Sequence[Path]) -> list[Dataset]:
    """The instances at ``paths`` as a new study: new Study, Series and SOP Instance UIDs (the
    series structure kept), everything else as is."""
    study = generate_uid()
    series: dict[str, str] = {}
    out = []
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series.setdefault(str(ds.SeriesInstanceUID), generate_uid())
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


def scu(calling: str = "TESTSCU") -> AE:
    """A Storage SCU proposing every accepted image class (uncompressed) and Verification."""
    ae = AE(calling)
    for sop_class in ACCEPTED_SOP_CLASSES:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_requested_context(Verification)
    return ae


def store(port: int, datasets: Sequence[Dataset], calling: str = "TESTSCU",
          called: str = "GALACTO") -> list[int]:
    """C-STORE ``datasets`` over one association; returns the statuses."""
    assoc = scu(calling).associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, f"association from {calling} refused"
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def echo(port: int, calling: str = "TESTSCU", called: str = "GALACTO") -> int | None:
    """C-ECHO status, or None when the association is refused."""
    assoc = scu(calling).associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return None
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def free_port() -> int:
    """A TCP port free on localhost right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``check`` until it is true; fail after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not true after {timeout_s:g} s"
        time.sleep(0.05)


def job_of(gateway: Gateway, study_uid: str) -> int:
    """The id of the (newest) job of a study."""
    jobs = gateway.spool.jobs(study_uid=study_uid)
    assert jobs, "no job for the study"
    return jobs[0].id


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_gateway_env(monkeypatch)


@pytest.fixture
def destination() -> Iterator[Destination]:
    dest = Destination().start()
    yield dest
    dest.stop()


@pytest.fixture
def make_gateway(tmp_path: Path, bundled_model: DetectorModel
                 ) -> Iterator[Callable[..., Gateway]]:
    """Start gateways on a free port with tiny timings; all stopped at the end."""
    with gateway_factory(tmp_path / "spool", bundled_model) as make:
        yield make


# --------------------------------------------------------------------------------------------
# receiving
# --------------------------------------------------------------------------------------------


def test_echo_and_called_ae_check(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway()
    assert echo(gw.port) == 0x0000
    assert echo(gw.port, called="SOMEONE") is None  # addressed to another AE title


def test_study_is_grouped_analysed_and_sent_back(
        make_gateway: Callable[..., Gateway], destination: Destination,
        galactogram_files: list[Path]) -> None:
    quiet = 1.5  # the two associations must come within one quiet period, even on slow CI
    gw = make_gateway(quiet_period_s=quiet, **destination.settings())
    images = new_study(galactogram_files)
    study = str(images[0].StudyInstanceUID)
    t0 = time.monotonic()
    assert store(gw.port, images[:1]) == [0]  # CC and MLO over two associations: one job
    assert store(gw.port, images[1:]) == [0]
    job = gw.wait(job_of(gw, study), timeout_s=30)
    assert job.state is JobState.SENT, job.reason
    assert (job.instances_received, job.instances_analysed, job.skipped) == (2, 2, ())
    assert job.results_total == job.results_sent == 1 and job.attempts == 1
    assert job.ready_at is not None and job.ready_at - job.last_instance_at >= quiet
    assert set(job.timings_ms) == {"read", "detect", "results", "send"}
    assert time.monotonic() - t0 < 20

    [sr] = destination.of_study(study)
    sources = {str(d.SOPInstanceUID) for d in images}
    assert sr.StudyInstanceUID == study and sr.SeriesInstanceUID not in \
        {d.SeriesInstanceUID for d in images}
    evidence = {str(ref.ReferencedSOPInstanceUID)
                for item in sr.CurrentRequestedProcedureEvidenceSequence
                for series in item.ReferencedSeriesSequence
                for ref in series.ReferencedSOPSequence}
    assert evidence == sources
    marks = read_cad_sr(sr)
    assert set(marks) <= sources and sum(len(m) for m in marks.values()) == job.findings > 0
    assert any("% of lesions were marked at" in str(e.value) for e in sr.iterall()
               if e.keyword == "TextValue")  # the operating point's promise, from the card

    # sent: instance files gone, rows kept (a re-push is still recognised as duplicate)
    eventually(lambda: not list((gw.settings.spool_dir / "instances").rglob("*.dcm")))
    assert store(gw.port, images) == [0, 0]
    assert len(gw.spool.jobs(study_uid=study)) == 1
    metrics = gw.metrics
    assert metrics.instances.labels("stored")._value.get() == 2
    assert metrics.instances.labels("duplicate")._value.get() == 2
    assert metrics.studies.labels("sent")._value.get() == 1


def test_duplicate_instance_is_stored_once(make_gateway: Callable[..., Gateway],
                                           galactogram_files: list[Path]) -> None:
    gw = make_gateway(quiet_period_s=30)  # stays "received": nothing deleted meanwhile
    [image] = new_study(galactogram_files[:1])
    assert store(gw.port, [image, image]) == [0, 0]
    assert store(gw.port, [image]) == [0]
    [job] = gw.jobs()
    assert job.state is JobState.RECEIVED and job.instances_received == 1
    files = list((gw.settings.spool_dir / "instances").rglob("*.dcm"))
    assert [f.name for f in files] == [f"{image.SOPInstanceUID}.dcm"]
    assert gw.spool.used_bytes == files[0].stat().st_size


def test_allow_list_refuses_unknown_callers(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(allowed_callers="GOODSCU, LOCALSCU@127.0.0.0/8, FARSCU@10.99.99.99")
    assert echo(gw.port, calling="GOODSCU") == 0
    assert echo(gw.port, calling="LOCALSCU") == 0
    assert echo(gw.port, calling="UNKNOWN") is None
    assert echo(gw.port, calling="FARSCU") is None  # right AE title, wrong host
    assert echo(gw.port, calling="GOODSCU") == 0  # and it keeps serving


def test_spool_full_answers_out_of_resources_and_keeps_running(
        make_gateway: Callable[..., Gateway], destination: Destination,
        galactogram_files: list[Path]) -> None:
    images = new_study(galactogram_files)
    one_image_mb = galactogram_files[0].stat().st_size / 2**20
    gw = make_gateway(spool_max_mb=one_image_mb * 1.5, **destination.settings())
    assert store(gw.port, images) == [0, OUT_OF_RESOURCES]
    assert gw.metrics.instances.labels("refused_quota")._value.get() == 1
    assert echo(gw.port) == 0
    first = gw.wait(job_of(gw, str(images[0].StudyInstanceUID)), timeout_s=30)
    assert first.state is JobState.SENT and first.instances_received == 1
    # the sent job's instance freed its space: the refused instance is accepted now
    assert store(gw.port, images[1:]) == [0]
    second = gw.wait(job_of(gw, str(images[0].StudyInstanceUID)), timeout_s=30)
    assert second.id != first.id and second.state is JobState.SENT


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_disk_errors_and_bad_data_sets_get_dimse_statuses(
        make_gateway: Callable[..., Gateway], galactogram_files: list[Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    gw = make_gateway(quiet_period_s=30)
    images = new_study(galactogram_files)
    spool = gw.spool

    def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool, "store", disk_full)
    assert store(gw.port, images[:1]) == [OUT_OF_RESOURCES]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(spool, "store", broken)
    assert store(gw.port, images[:1]) == [PROCESSING_FAILURE]
    monkeypatch.undo()
    assert echo(gw.port) == 0 and store(gw.port, images[:1]) == [0]

    scp = StoreSCP(gw.settings, gw.spool, gw.metrics)

    def event(data: bytes, sop_class: str, sop_instance: str) -> Any:
        return store_event(data, sop_class, sop_instance, "TESTSCU")

    ds = images[1]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    assert scp._on_store(event(b"not dicom at all" * 8, ds.SOPClassUID, ds.SOPInstanceUID)) \
        == CANNOT_UNDERSTAND
    assert scp._on_store(event(data, SECONDARY_CAPTURE, ds.SOPInstanceUID)) \
        == DOES_NOT_MATCH_SOP_CLASS
    assert scp._on_store(event(data, ds.SOPClassUID, "1.2.3")) == DOES_NOT_MATCH_SOP_CLASS
    ds.StudyInstanceUID = "1.2.03.x/../../etc"  # not a UID: never used as a path
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert scp._on_store(event(buf.getvalue(), ds.SOPClassUID, ds.SOPInstanceUID)) \
        == CANNOT_UNDERSTAND
    assert not (gw.settings.spool_dir.parent / "etc").exists()


def test_spool_checks_uids_before_using_them_as_paths(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for bad in ("../../evil", "1.2.3/../4", "1.02.3", "1." + "1" * 70, ""):
        with pytest.raises(InvalidInstanceError) as info:
            spool.store(b"x", study_uid="1.2.3", sop_uid=bad, sop_class_uid="1.2.3",
                        calling_ae=None)
        assert bad not in str(info.value) or bad == ""  # the value is not echoed
    assert spool.store(b"x", study_uid="1.2.3", sop_uid="1.2.3.4", sop_class_uid="1.2",
                       calling_ae=None).outcome is StoreOutcome.STORED
    assert sorted(p.name for p in (tmp_path / "spool").rglob("*.dcm")) == ["1.2.3.4.dcm"]
    spool.close()


# --------------------------------------------------------------------------------------------
# grouping, triage
# --------------------------------------------------------------------------------------------


def test_non_galactogram_instances_are_skipped_with_a_reason(
        make_gateway: Callable[..., Gateway], destination: Destination,
        galactogram_files: list[Path]) -> None:
    gw = make_gateway(**destination.settings())
    images = new_study(galactogram_files)
    study = str(images[0].StudyInstanceUID)
    same = {"StudyInstanceUID": study}
    others = [
        make_dataset(sop_class=SECONDARY_CAPTURE, photometric="RGB", samples_per_pixel=3,
                     bits_stored=8, extra={**same, "PlanarConfiguration": 0}),
        make_dataset(sop_class=SECONDARY_CAPTURE, pixel_spacing=None, extra=same),
        make_dataset(modality="US", extra=same),
    ]
    others[0].PixelData = bytes(64 * 48 * 3)
    assert store(gw.port, [*images, *others]) == [0] * 5
    job = gw.wait(job_of(gw, study), timeout_s=30)
    assert job.state is JobState.SENT
    assert (job.instances_received, job.instances_analysed) == (5, 2)
    reasons = {s.sop_instance_uid: s.reason.split(":")[0] for s in job.skipped}
    assert reasons == {str(others[0].SOPInstanceUID): "color_image",
                       str(others[1].SOPInstanceUID): "missing_spacing",
                       str(others[2].SOPInstanceUID): "wrong_modality"}
    [sr] = destination.of_study(study)
    assert set(read_cad_sr(sr)) <= {str(d.SOPInstanceUID) for d in images}

    alone = make_dataset(sop_class=SECONDARY_CAPTURE, pixel_spacing=None)
    assert store(gw.port, [alone]) == [0]
    job = gw.wait(job_of(gw, str(alone.StudyInstanceUID)), timeout_s=30)
    assert job.state is JobState.SKIPPED and job.results_total == 0
    assert job.reason is not None and "no galactogram image" in job.reason
    assert "missing_spacing x1" in job.reason  # the reason code, not only a count
    assert not destination.of_study(str(alone.StudyInstanceUID))

    # the sender corrects the instance and sends it again: a skipped instance is not held
    # as a duplicate, it starts a new job and is analysed
    fixed = make_dataset(modality="MG", extra={
        k: alone.get(k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")})
    assert store(gw.port, [fixed]) == [0]
    again = gw.wait(job_of(gw, str(alone.StudyInstanceUID)), timeout_s=30)
    assert again.id != job.id and again.instances_analysed == 1
    assert again.state is JobState.SENT

    # an object this gateway made, sent back, stays a duplicate once its job skipped it
    own = make_dataset(modality="MG", extra={"Manufacturer": MANUFACTURER})
    assert store(gw.port, [own]) == [0]
    first = gw.wait(job_of(gw, str(own.StudyInstanceUID)), timeout_s=30)
    assert first.state is JobState.SKIPPED and "own_result" in (first.reason or "")
    assert store(gw.port, [own]) == [0]
    assert job_of(gw, str(own.StudyInstanceUID)) == first.id
    assert gw.metrics.instances.labels("duplicate")._value.get() >= 1


# --------------------------------------------------------------------------------------------
# sending: retries, failure, resend, restart
# --------------------------------------------------------------------------------------------


def test_destination_down_retries_then_fails_then_resend_sends_once(
        make_gateway: Callable[..., Gateway], galactogram_files: list[Path]) -> None:
    down = Destination(port=free_port())  # nobody listens there yet
    gw = make_gateway(**down.settings())
    images = new_study(galactogram_files)
    study = str(images[0].StudyInstanceUID)
    assert store(gw.port, images) == [0, 0]
    job = gw.wait(job_of(gw, study), timeout_s=30)
    assert job.state is JobState.FAILED and job.attempts == 3  # 1 + send_retries
    assert job.reason is not None and "sending failed after 3 attempt(s)" in job.reason
    assert f"DEST@127.0.0.1:{down.port}" in job.reason
    assert job.results_total == 1 and job.results_sent == 0
    assert gw.metrics.send_failures._value.get() == 3
    assert gw.metrics.studies.labels("failed")._value.get() == 1

    down.start()  # the destination comes up on the same port
    try:
        assert gw.resend(job.id).state is JobState.WAITING
        job = gw.wait(job.id, timeout_s=30)
        assert job.state is JobState.SENT and job.attempts == 1
        time.sleep(QUIET_S * 3)
        assert len(down.of_study(study)) == 1  # exactly once
        with pytest.raises(JobStateError, match="only failed, kept, sent jobs"):
            gw.spool.resend(_received_job(gw))
    finally:
        down.stop()


def _received_job(gw: Gateway) -> int:
    """A job still in its quiet period (its one instance dated an hour ahead)."""
    return gw.spool.store(b"\0" * 132, study_uid=generate_uid(), sop_uid=generate_uid(),
                          sop_class_uid=SECONDARY_CAPTURE, calling_ae="X",
                          now=time.time() + 3600).job_id


def test_restart_resumes_unfinished_jobs(tmp_path: Path, bundled_model: DetectorModel,
                                         destination: Destination,
                                         galactogram_files: list[Path]) -> None:
    settings = GatewaySettings(port=0, spool_dir=tmp_path / "spool", quiet_period_s=QUIET_S,
                               **destination.settings())
    slow = settings.with_overrides(quiet_period_s=60)
    images = new_study(galactogram_files)
    study = str(images[0].StudyInstanceUID)
    gw = Gateway(slow, model=bundled_model).start()
    assert store(gw.port, images) == [0, 0]
    with pytest.raises(GatewayError, match="in use by another gateway"):
        Gateway(slow, model=bundled_model).start()
    gw.stop()  # stopped in the quiet period: the job stays "received"
    spool = Spool(settings.spool_dir)  # a job a crash left "running"
    [other] = new_study(galactogram_files[:1])
    stored = spool.store(b"".join([b"\0" * 128, b"DICM"]), study_uid=str(other.StudyInstanceUID),
                         sop_uid=str(other.SOPInstanceUID), sop_class_uid="1.2.3",
                         calling_ae="X")
    spool.mark_waiting(stored.job_id)
    assert spool.claim() == stored.job_id
    spool.close()

    gw = Gateway(settings, model=bundled_model).start()
    try:
        job = gw.wait(job_of(gw, study), timeout_s=30)
        assert job.state is JobState.SENT and job.instances_received == 2
        crashed = gw.wait(stored.job_id, timeout_s=30)
        assert crashed.state is JobState.SKIPPED  # resumed, analysed: not a DICOM image
        time.sleep(QUIET_S * 2)
        assert len(destination.of_study(study)) == 1
    finally:
        gw.stop()


def test_results_kept_in_spool_without_destination(make_gateway: Callable[..., Gateway],
                                                   galactogram_files: list[Path]) -> None:
    gw = make_gateway(results="sr,tid1500,gsps")
    images = new_study(galactogram_files)
    assert store(gw.port, images) == [0, 0]
    job = gw.wait(job_of(gw, str(images[0].StudyInstanceUID)), timeout_s=60)
    assert job.state is JobState.KEPT and job.results_total == 3 and job.results_sent == 0
    classes = sorted(str(pydicom.dcmread(r.path).SOPClassUID) for r in gw.spool.results(job.id))
    assert classes == sorted(RESULT_CLASSES)
    with pytest.raises(GatewayError, match="no destination"):
        gw.resend(job.id)


def test_stow_rs_sender(make_gateway: Callable[..., Gateway],
                        galactogram_files: list[Path]) -> None:
    requests: list[httpx.Request] = []
    answers = iter([httpx.Response(503), httpx.Response(200, json={})])

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return next(answers)

    sender = StowSender("http://pacs.example/dicomweb", token="t0k3n-for-tests",
                        transport=httpx.MockTransport(handler))
    gw = make_gateway(stow_url="http://pacs.example/dicomweb", stow_token="t0k3n-for-tests")
    gw.sender = sender
    images = new_study(galactogram_files)
    assert store(gw.port, images) == [0, 0]
    job = gw.wait(job_of(gw, str(images[0].StudyInstanceUID)), timeout_s=30)
    assert job.state is JobState.SENT and job.attempts == 2
    assert [str(r.url) for r in requests] == ["http://pacs.example/dicomweb/studies"] * 2
    content_type = requests[-1].headers["content-type"]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    assert requests[-1].headers["authorization"] == "Bearer t0k3n-for-tests"
    assert b"\r\nContent-Type: application/dicom\r\n\r\n" in requests[-1].content

    # 202: only the referenced instances count as stored
    result = gw.spool.results(job.id)
    partial = {"00081199": {"vr": "SQ", "Value": [
        {"00081155": {"vr": "UI", "Value": [result[0].sop_instance_uid]}}]}}
    mock = StowSender("http://x", transport=httpx.MockTransport(
        lambda r: httpx.Response(202, json=partial)))
    outcome = mock.send(result)
    assert outcome.sent == [result[0].sop_instance_uid] and "HTTP 202" in str(outcome.error)


# --------------------------------------------------------------------------------------------
# HTTP admin endpoints, metrics, settings, CLI
# --------------------------------------------------------------------------------------------


def test_http_jobs_endpoints_and_metrics(tmp_path: Path, bundled_model: DetectorModel,
                                         destination: Destination,
                                         galactogram_files: list[Path]) -> None:
    from serving.api.main import create_app
    from serving.settings import Settings

    app = create_app(Settings(results_dir=tmp_path / "results"))
    if not any(getattr(r, "path", "") == "/v1/jobs" for r in app.routes):
        app.include_router(jobs_router)  # until serving.api.main includes it
    with TestClient(app, base_url="http://localhost") as client:  # an allowed Host
        assert client.get("/v1/jobs").json()["detail"] == "gateway_disabled"
        settings = GatewaySettings(port=0, spool_dir=tmp_path / "spool",
                                   quiet_period_s=QUIET_S, **destination.settings())
        gw = Gateway(settings, registry=app.state.galacto.metrics.registry,
                     model=bundled_model).start()
        app.state.gateway = gw
        try:
            images = new_study(galactogram_files)
            assert store(gw.port, images) == [0, 0]
            job_id = job_of(gw, str(images[0].StudyInstanceUID))
            gw.wait(job_id, timeout_s=30)
            body = client.get("/v1/jobs").json()
            assert body["counts"]["sent"] == 1 and body["jobs"][0]["id"] == job_id
            one = client.get(f"/v1/jobs/{job_id}")
            assert one.status_code == 200
            assert one.json()["state"] == "sent" and one.json()["results_sent"] == 1
            assert one.json()["duration_s"] > QUIET_S
            assert client.get("/v1/jobs/999").json()["detail"] == "job_not_found"
            assert client.get("/v1/jobs?state=bogus").status_code == 422
            again = client.post(f"/v1/jobs/{job_id}/resend")
            assert again.status_code == 202 and again.json()["state"] == "waiting"
            assert gw.wait(job_id, timeout_s=30).state is JobState.SENT
            sent = destination.of_study(str(images[0].StudyInstanceUID))
            assert len(sent) == 2 and sent[0].SOPInstanceUID == sent[1].SOPInstanceUID
            received = _received_job(gw)
            refused = client.post(f"/v1/jobs/{received}/resend")
            assert refused.status_code == 409 and refused.json()["detail"] == \
                "job_not_resendable"
            eventually(lambda: 'galacto_gateway_studies_processed_total{outcome="sent"} 2.0'
                       in client.get("/metrics").text)  # counted just after the state
            metrics = client.get("/metrics").text
            assert 'galacto_gateway_instances_received_total{outcome="stored"} 2.0' in metrics
            assert "galacto_gateway_queue_depth" in metrics
        finally:
            gw.stop()


def test_serve_runs_the_gateway_when_enabled(tmp_path: Path, destination: Destination,
                                             galactogram_files: list[Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``galacto serve`` with GALACTO_GATEWAY_ENABLED: the app's lifespan starts and stops the
    gateway, /v1/jobs shows its jobs and /metrics its counters."""
    from serving.api.main import create_app
    from serving.settings import Settings

    port = free_port()
    env = {"ENABLED": "true", "PORT": str(port), "SPOOL_DIR": str(tmp_path / "spool"),
           "QUIET_PERIOD_S": str(QUIET_S), "DESTINATION_AE_TITLE": "DEST",
           "DESTINATION_HOST": "127.0.0.1", "DESTINATION_PORT": str(destination.port)}
    for key, value in env.items():
        monkeypatch.setenv(f"GALACTO_GATEWAY_{key}", value)
    app = create_app(Settings(results_dir=tmp_path / "results"))
    images = new_study(galactogram_files)
    with TestClient(app, base_url="http://localhost") as client:  # an allowed Host
        assert echo(port) == 0
        assert store(port, images) == [0, 0]

        def sent() -> bool:
            jobs = client.get("/v1/jobs").json()["jobs"]
            return bool(jobs) and jobs[0]["state"] == "sent"

        eventually(sent, timeout_s=30)
        eventually(lambda: 'galacto_gateway_studies_processed_total{outcome="sent"} 1.0'
                   in client.get("/metrics").text)
    assert echo(port) is None  # stopped with the app
    assert len(destination.of_study(str(images[0].StudyInstanceUID))) == 1


@pytest.mark.parametrize(("env", "message"), [
    ({"AE_TITLE": "A\\B"}, "AE title of 1 to 16"),
    ({"AE_TITLE": "WAY-TOO-LONG-AE-TITLE"}, "AE title of 1 to 16"),
    ({"PORT": "70000"}, "less than or equal to 65535"),
    ({"ALLOWED_CALLERS": "GOOD,BAD@"}, "nothing after '@'"),
    ({"ALLOWED_CALLERS": "GOOD@not a host"}, "IP address, a network"),
    ({"RESULTS": "sr,pdf"}, "unknown result kind 'pdf'"),
    ({"RESULTS": "sr,sr"}, "lists a kind twice"),
    ({"DESTINATION_AE_TITLE": "PACS"}, "DESTINATION_HOST, GALACTO_GATEWAY_DESTINATION_PORT"),
    ({"DESTINATION_AE_TITLE": "PACS", "DESTINATION_HOST": "pacs", "DESTINATION_PORT": "104",
      "STOW_URL": "http://pacs/dicomweb"}, "expected one of them"),
    ({"STOW_URL": "ftp://pacs"}, "http:// or https:// URL"),
    ({"QUIET_PERIOD_S": "0"}, "greater than 0"),
    ({"WORKERS": "0"}, "greater than or equal to 1"),
])
def test_settings_refuse_nonsense(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                  message: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(f"GALACTO_GATEWAY_{key}", value)
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GatewaySettings()


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GALACTO_GATEWAY_ALLOWED_CALLERS", "PACS, MODALITY@10.0.0.0/8")
    monkeypatch.setenv("GALACTO_GATEWAY_RESULTS", "sr, gsps")
    monkeypatch.setenv("GALACTO_GATEWAY_STOW_URL", "https://pacs/dicomweb/")
    s = GatewaySettings()
    assert s.allowed_callers == [CallerRule("PACS"), CallerRule("MODALITY", "10.0.0.0/8")]
    assert [k.value for k in s.results] == ["sr", "gsps"]
    assert s.stow_url == "https://pacs/dicomweb" and s.describe_destination().startswith("STOW")
    assert (s.port, s.quiet_period_s, s.send_retries, s.backoff_s) == (11112, 10.0, 5, 2.0)
    assert parse_destination("PACS@[::1]:104") == ("PACS", "::1", 104)
    with pytest.raises(ValueError, match="AE@host:port"):
        parse_destination("PACS:104")


def test_cli_jobs_table_and_resend_without_a_running_gateway(
        tmp_path: Path, bundled_model: DetectorModel, galactogram_files: list[Path],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from serving.cli.gateway import main

    down = Destination(port=free_port())
    settings = GatewaySettings(port=0, spool_dir=tmp_path / "spool", quiet_period_s=QUIET_S,
                               send_retries=0, **down.settings())
    gw = Gateway(settings, model=bundled_model).start()
    images = new_study(galactogram_files)
    store(gw.port, images)
    job = gw.wait(job_of(gw, str(images[0].StudyInstanceUID)), timeout_s=30)
    assert job.state is JobState.FAILED
    gw.stop()

    spool_dir = str(settings.spool_dir)
    assert main(["jobs", "--spool-dir", spool_dir]) == 0
    table = capsys.readouterr().out
    assert "failed" in table and str(images[0].StudyInstanceUID) not in table
    assert main(["jobs", "--spool-dir", spool_dir, "--json", "--state", "failed"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == job.id

    for key, value in {"DESTINATION_AE_TITLE": "DEST", "DESTINATION_HOST": "127.0.0.1",
                       "DESTINATION_PORT": str(down.port)}.items():
        monkeypatch.setenv(f"GALACTO_GATEWAY_{key}", value)
    down.start()
    try:
        assert main(["resend", str(job.id), "--spool-dir", spool_dir]) == 0
        assert f"job {job.id}: sent" in capsys.readouterr().out
        assert len(down.of_study(str(images[0].StudyInstanceUID))) == 1
        assert main(["resend", "999", "--spool-dir", spool_dir]) == 2
        assert "no job 999" in capsys.readouterr().err
    finally:
        down.stop()


def test_cli_on_a_missing_spool_creates_nothing(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped --spool-dir is an error, not a new empty spool (resend used to create one
    before failing)."""
    from serving.cli.gateway import main

    missing = tmp_path / "no-such-spool"
    for argv in (["resend", "1"], ["jobs"], ["purge", "--dry-run"]):
        assert main([*argv, "--spool-dir", str(missing)]) == 2, argv
        assert "not a gateway spool" in capsys.readouterr().err
        assert not missing.exists(), argv


def test_galacto_cli_has_the_gateway_command() -> None:
    from serving.cli import build_parser

    args = build_parser().parse_args(["gateway", "jobs", "--spool-dir", "x"])
    assert args.func.__name__ == "cmd_jobs"
