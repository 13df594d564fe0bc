"""Tomosynthesis volumes through the DICOM gateway in process (a real pynetdicom listener on a
free localhost port, a pynetdicom SCU as the sending modality, the in-test Storage SCP of
``test_gateway.py`` as the destination): Breast Tomosynthesis Image Storage is accepted at
association, a volume sent by C-STORE is analysed and its CAD SR, TID 1500 SR and GSPS come
back referencing the frames of its findings; a volume whose frame cannot be decoded is
skipped alone (the study's 2D image is analysed and sent); a volume over the frame bound is
skipped with the intake's code; an instance over ``MAX_INSTANCE_MB`` gets 0xA700;
``GALACTO_TOMO_SLAB`` / ``GALACTO_TOMO_STRIDE`` reach the gateway (unset: the model card's).

The volume with a lesion is the CC view of the generated case of ``galactogram_files`` as a
9-frame Breast Tomosynthesis Image (``test_detect_volume.stacked_bto``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid
from pynetdicom import AE
from test_api_dbt import broken_frame_bto
from test_detect_volume import stacked_bto
from test_gateway import (
    CAD_SR,
    COMPREHENSIVE_3D_SR,
    GSPS,
    Destination,
    job_of,
    new_study,
)

from serving.dicom_status import OUT_OF_RESOURCES
from serving.gateway import Gateway, GatewaySettings, JobState
from serving.gateway.scp import STORAGE_CLASSES
from serving.outputs.cad_sr import read_cad_sr, read_cad_sr_frames
from serving.outputs.gsps import read_gsps_frames
from serving.outputs.tid1500 import read_tid1500_frames
from serving.pipeline.dicom_in import read_header
from serving.pipeline.model import DetectorModel
from tests.dbt_files import make_bto
from tests.dicomgen import BREAST_TOMOSYNTHESIS, to_bytes
from tests.gateway_helpers import clear_gateway_env, gateway_factory

FRAMES = 9
FOCUS = 5  # 1-based frame where the lesion is sharp


def modality(calling: str = "DBTSCU") -> AE:
    """A Storage SCU proposing every class the gateway stores, uncompressed and RLE (one
    context each: the acceptor picks one transfer syntax per context)."""
    ae = AE(calling)
    for sop_class in STORAGE_CLASSES:
        for syntax in (ExplicitVRLittleEndian, RLELossless):
            ae.add_requested_context(sop_class, [syntax])
    return ae


def send(port: int, datasets: Sequence[Dataset]) -> list[int]:
    """C-STORE ``datasets`` over one association; the statuses."""
    assoc = modality().associate("127.0.0.1", port, ae_title="GALACTO")
    assert assoc.is_established, "association refused"
    try:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        assert BREAST_TOMOSYNTHESIS in accepted
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def as_study(ds: Dataset, study: str | None = None) -> Dataset:
    """``ds`` with new Series and SOP Instance UIDs, in ``study`` (default: a new one)."""
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


@pytest.fixture(autouse=True)
def _no_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_gateway_env(monkeypatch)


@pytest.fixture(scope="module")
def volume_bytes(galactogram_files: list[Path]) -> bytes:
    """The CC view as a 9-frame Breast Tomosynthesis Image, lesion in focus at frame 5."""
    cc = next(f for f in galactogram_files if read_header(f).view == "CC")
    return to_bytes(stacked_bto(cc, view="CC", frames=FRAMES, focus=FOCUS - 1))


@pytest.fixture
def destination() -> Iterator[Destination]:
    dest = Destination().start()
    yield dest
    dest.stop()


@pytest.fixture
def make_gateway(tmp_path: Path, bundled_model: DetectorModel
                 ) -> Iterator[Callable[..., Gateway]]:
    with gateway_factory(tmp_path / "spool", bundled_model,
                         results="sr,tid1500,gsps") as make:
        yield make


def test_a_volume_by_c_store_gets_results_on_its_frames(
        make_gateway: Callable[..., Gateway], destination: Destination,
        volume_bytes: bytes) -> None:
    gw = make_gateway(**destination.settings())
    volume = as_study(pydicom.dcmread(io.BytesIO(volume_bytes)))
    study, uid = str(volume.StudyInstanceUID), str(volume.SOPInstanceUID)
    assert send(gw.port, [volume]) == [0]
    job = gw.wait(job_of(gw, study), timeout_s=180)
    assert job.state is JobState.SENT, job.reason
    assert (job.instances_received, job.instances_analysed, job.skipped) == (1, 1, ())
    assert job.findings > 0 and job.results_sent == job.results_total == 3

    [sr] = destination.of_study(study, CAD_SR)
    marks = read_cad_sr(sr)
    frames = read_cad_sr_frames(sr)
    assert set(marks) == {uid} and len(marks[uid]) == job.findings
    best = frames[uid]
    assert all(len(m) == 1 and 1 <= m[0] <= FRAMES for m in best), best
    assert any(abs(m[0] - FOCUS) <= 1 for m in best), best
    [tid1500] = destination.of_study(study, COMPREHENSIVE_3D_SR)
    assert sorted(read_tid1500_frames(tid1500)[uid]) == sorted(best)
    [gsps] = destination.of_study(study, GSPS)
    assert sorted(read_gsps_frames(gsps)[uid]) == sorted(best)
    referenced = {str(ref.ReferencedSOPInstanceUID)
                  for series in gsps.ReferencedSeriesSequence
                  for ref in series.ReferencedImageSequence}
    assert referenced == {uid}


def test_an_undecodable_volume_is_skipped_and_the_study_still_analysed(
        make_gateway: Callable[..., Gateway], destination: Destination,
        galactogram_files: list[Path]) -> None:
    gw = make_gateway(**destination.settings())
    [image] = new_study(galactogram_files[:1])
    study = str(image.StudyInstanceUID)
    broken = as_study(pydicom.dcmread(io.BytesIO(broken_frame_bto())), study)
    assert send(gw.port, [image, broken]) == [0, 0]
    job = gw.wait(job_of(gw, study), timeout_s=180)
    assert job.state is JobState.SENT, job.reason
    assert (job.instances_received, job.instances_analysed) == (2, 1)
    [skipped] = job.skipped
    assert skipped.sop_instance_uid == str(broken.SOPInstanceUID)
    code, _, text = skipped.reason.partition(": ")
    assert code in ("truncated_pixel_data", "decode_error")
    assert text.startswith("frame 5 of the volume could not be decoded")
    [sr] = destination.of_study(study, CAD_SR)
    assert set(read_cad_sr(sr)) <= {str(image.SOPInstanceUID)}


def test_volume_bounds(make_gateway: Callable[..., Gateway], volume_bytes: bytes) -> None:
    gw = make_gateway(max_frames=8, max_instance_mb=len(volume_bytes) / 2**20 / 2,
                      quiet_period_s=0.3)
    too_many = as_study(make_bto(frames=9))
    too_large = as_study(pydicom.dcmread(io.BytesIO(volume_bytes)))
    assert send(gw.port, [too_many, too_large]) == [0, OUT_OF_RESOURCES]
    job = gw.wait(job_of(gw, str(too_many.StudyInstanceUID)), timeout_s=120)
    assert job.state is JobState.SKIPPED
    [skipped] = job.skipped
    assert skipped.reason.startswith("image_too_large: ")
    assert "at most 8 frames" in skipped.reason


def test_volume_settings(monkeypatch: pytest.MonkeyPatch, bundled_model: DetectorModel) -> None:
    """GALACTO_TOMO_* (shared with galacto serve) set how volumes run, unless the gateway's
    own GALACTO_GATEWAY_TOMO_* do; unset, the model card's settings apply; the volume bound
    follows MAX_PIXELS unless set."""
    for name in ("GALACTO_TOMO_SLAB", "GALACTO_TOMO_STRIDE"):
        monkeypatch.delenv(name, raising=False)
    settings = GatewaySettings()
    assert settings.tomo_for(bundled_model) is None
    assert settings.limits.max_volume_pixels == settings.max_pixels
    assert GatewaySettings(max_pixels=1000).limits.parse_pixels == 1000
    monkeypatch.setenv("GALACTO_TOMO_SLAB", "1")
    monkeypatch.setenv("GALACTO_TOMO_STRIDE", "2")
    tomo = GatewaySettings().tomo_for(bundled_model)
    assert tomo is not None and (tomo.slab, tomo.stride) == (1, 2)
    monkeypatch.setenv("GALACTO_GATEWAY_TOMO_STRIDE", "4")
    tomo = GatewaySettings().tomo_for(bundled_model)
    assert tomo is not None and (tomo.slab, tomo.stride) == (1, 4)
    monkeypatch.setenv("GALACTO_TOMO_SLAB", "0")
    with pytest.raises(ValueError, match="GALACTO_TOMO_SLAB"):
        GatewaySettings()
