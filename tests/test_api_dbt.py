"""Tomosynthesis volumes through the HTTP service in process (FastAPI TestClient with the
model loaded, as ``test_api.py``): ``/v1/detect`` and STOW-RS take Breast Tomosynthesis Image
files and answer findings that carry their frames, DICOM results that reference them, and the
typed refusals of the intake (raw projections, too many frames or pixels, a frame that cannot
be decoded); ``/v1/render`` draws one frame (``frame``, 1-based) and refuses a frame the
object does not have with ``invalid_frame``; the settings ``GALACTO_MAX_FRAMES``,
``GALACTO_MAX_VOLUME_PIXELS``, ``GALACTO_TOMO_SLAB`` and ``GALACTO_TOMO_STRIDE`` reach the
service.

The volume with a lesion is the CC view of the generated case of ``galactogram_files`` as a
9-frame Breast Tomosynthesis Image (``test_detect_volume.stacked_bto``: the lesion in
focus at frame 5, fainter on its neighbours, 0.2 mm pixels).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from pydicom.encaps import encapsulate, get_frame
from pydicom.uid import RLELossless
from test_detect_volume import stacked_bto

from serving.outputs.cad_sr import read_cad_sr_frames
from serving.outputs.gsps import read_gsps_frames
from serving.outputs.tid1500 import read_tid1500_frames
from serving.pipeline.dicom_in import read_header
from serving.pipeline.findings import DetectionResponse
from serving.pipeline.model import DetectorModel
from serving.settings import Settings
from tests.dbt_files import BREAST_PROJECTION_PRESENTATION, make_bto
from tests.dicomgen import BREAST_TOMOSYNTHESIS, to_bytes
from tests.served_app import app_client as _client

FRAMES = 9
FOCUS = 5  # 1-based frame where the lesion is sharp
DICOM = {"Content-Type": "application/dicom"}
CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"




def _related(parts: list[bytes], boundary: str = "galacto-dbt-boundary") -> tuple[bytes, str]:
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                    + p + b"\r\n" for p in parts) + f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def broken_frame_bto(frames: int = 6, broken: int = 5, seed: int = 3) -> bytes:
    """A small RLE Lossless Breast Tomosynthesis Image whose frame ``broken`` (1-based) is
    not a valid RLE segment: its header is read and checked at intake, the frame fails only
    when it is decoded, during detection."""
    ds = pydicom.dcmread(io.BytesIO(to_bytes(make_bto(frames=frames, rows=128, cols=128,
                                                      seed=seed), RLELossless)))
    parts = [get_frame(ds.PixelData, i, number_of_frames=frames) for i in range(frames)]
    parts[broken - 1] = b"\x01\x00\x00\x00\x40\x00\x00\x00" + b"\x00" * 56 + b"\xff" * 10
    ds.PixelData = encapsulate(parts)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _png(content: bytes) -> PILImage.Image:
    return PILImage.open(io.BytesIO(content))


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def views(galactogram_files: list[Path]) -> dict[str, Path]:
    """The generated case's 2D files by view (``CC``, ``MLO``)."""
    return {str(read_header(f).view): f for f in galactogram_files}


@pytest.fixture(scope="module")
def bto(views: dict[str, Path]) -> bytes:
    """The CC view as a 9-frame Breast Tomosynthesis Image, lesion in focus at frame 5."""
    return to_bytes(stacked_bto(views["CC"], view="CC", frames=FRAMES, focus=FOCUS - 1))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The service with its default settings."""
    with _client(tmp_path_factory.mktemp("api-dbt")) as c:
        yield c


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The service with at most 8 frames and 200,000 pixels per volume, every frame run
    alone (``GALACTO_TOMO_SLAB=1``, ``GALACTO_TOMO_STRIDE=1``)."""
    with _client(tmp_path_factory.mktemp("api-dbt-bounded"), max_frames=8,
                 max_volume_pixels=200_000, tomo_slab=1, tomo_stride=1) as c:
        yield c


@pytest.fixture(scope="module")
def detected(client: TestClient, bto: bytes) -> dict[str, Any]:
    """``/v1/detect`` of the volume, default operating point."""
    r = client.post("/v1/detect", content=bto, headers=DICOM)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# --------------------------------------------------------------------------------------------
# /v1/detect and STOW-RS
# --------------------------------------------------------------------------------------------


def test_a_volume_upload_gives_findings_on_frames(detected: dict[str, Any]) -> None:
    assert detected["rejected"] == []
    [study] = detected["studies"]
    [image] = study["images"]
    assert image["number_of_frames"] == FRAMES
    assert image["view"] == "CC"
    assert image["findings"], "the lesion at least"
    for f in image["findings"]:
        frame = f["frame"]
        assert 1 <= frame["first"] <= frame["best"] <= frame["last"] <= FRAMES, f
        assert f["single_view_location"] is not None
    assert any(abs(f["frame"]["best"] - FOCUS) <= 1 for f in image["findings"])
    assert any("tomosynthesis" in w for w in image["warnings"])


def test_dicom_results_of_a_volume_reference_the_best_frames(
        client: TestClient, bto: bytes, detected: dict[str, Any]) -> None:
    [image] = detected["studies"][0]["images"]
    best = sorted(f["frame"]["best"] for f in image["findings"])
    uid = image["sop_instance_uid"]
    r = client.post("/v1/detect?output=sr", content=bto, headers=DICOM)
    assert r.status_code == 200, r.text
    sr = pydicom.dcmread(io.BytesIO(r.content))
    assert sr.SOPClassUID == CAD_SR
    frames = read_cad_sr_frames(sr)
    assert sorted(f for marks in frames[uid] for f in marks) == best


def test_a_volume_beside_a_2d_image_and_through_stow_rs(
        client: TestClient, bto: bytes, views: dict[str, Path]) -> None:
    body, ctype = _related([bto, views["MLO"].read_bytes()])
    r = client.post("/v1/detect", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text
    images = [img for s in r.json()["studies"] for img in s["images"]]
    assert [img["number_of_frames"] for img in images] == [FRAMES, None]
    assert all(f["frame"] is None for f in images[1]["findings"])

    body, ctype = _related([bto])
    r = client.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text
    ref = r.json()["00081199"]["Value"][0]
    assert ref["00081150"]["Value"] == [BREAST_TOMOSYNTHESIS]
    study = pydicom.dcmread(io.BytesIO(bto), stop_before_pixels=True).StudyInstanceUID
    got = client.get(f"/dicomweb/studies/{study}")
    assert got.status_code == 200
    boundary = got.headers["content-type"].split("boundary=")[1].strip('"')
    results = [pydicom.dcmread(io.BytesIO(chunk.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n")))
               for chunk in got.content.split(f"--{boundary}".encode())[1:-1]]
    by_class = {str(ds.SOPClassUID): ds for ds in results}
    assert set(by_class) == {CAD_SR, COMPREHENSIVE_3D_SR, GSPS}
    for reader, sop_class in ((read_cad_sr_frames, CAD_SR),
                              (read_tid1500_frames, COMPREHENSIVE_3D_SR),
                              (read_gsps_frames, GSPS)):
        frames = reader(by_class[sop_class])
        assert frames and all(1 <= n <= FRAMES for marks in frames.values() for m in marks
                              for n in m), (sop_class, frames)


def _texts(ds: pydicom.Dataset) -> list[str]:
    """Every TEXT value and every code meaning of an SR content tree, in tree order."""
    out: list[str] = []
    for item in ds.get("ContentSequence") or []:
        if "TextValue" in item:
            out.append(str(item.TextValue))
        for code in item.get("ConceptCodeSequence") or []:
            out.append(str(code.CodeMeaning))
        out += _texts(item)
    return out


def _evidence(ds: pydicom.Dataset) -> set[str]:
    """SOP Instance UIDs a result object lists as its evidence."""
    return {str(ref.ReferencedSOPInstanceUID)
            for study in ds.get("CurrentRequestedProcedureEvidenceSequence") or []
            for series in study.get("ReferencedSeriesSequence") or []
            for ref in series.get("ReferencedSOPSequence") or []}


def test_stow_rs_results_state_the_operating_point_as_detect_does(
        client: TestClient, bto: bytes, views: dict[str, Path]) -> None:
    """The CAD SR stored by STOW-RS says what the one /v1/detect returns says: for a volume
    the tomosynthesis threshold, its false positives per volume and sensitivity, and that
    volume scores are the detector's own; for a 2D image the point's validation figures."""
    for name, data in (("volume", bto), ("2D", views["MLO"].read_bytes())):
        r = client.post("/v1/detect?output=sr", content=data, headers=DICOM)
        assert r.status_code == 200, r.text
        direct = pydicom.dcmread(io.BytesIO(r.content))
        body, ctype = _related([data])
        r = client.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 200, r.text
        study = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).StudyInstanceUID
        got = client.get(f"/dicomweb/studies/{study}")
        boundary = got.headers["content-type"].split("boundary=")[1].strip('"')
        stored = [pydicom.dcmread(io.BytesIO(c.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n")))
                  for c in got.content.split(f"--{boundary}".encode())[1:-1]]
        uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        # every CAD SR stored for this instance (another test may have stored one before)
        srs = [ds for ds in stored if ds.SOPClassUID == CAD_SR and uid in _evidence(ds)]
        assert srs, name
        for sr in srs:
            assert _texts(sr) == _texts(direct), name
            if name == "volume":
                assert any("false positives per volume" in t for t in _texts(sr))


def test_raw_projections_get_the_typed_refusal(client: TestClient) -> None:
    data = to_bytes(make_bto(sop_class=BREAST_PROJECTION_PRESENTATION))
    r = client.post("/v1/detect", content=data, headers=DICOM)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "unsupported_sop_class"
    assert "send the reconstructed volume" in r.json()["message"]


def test_a_volume_over_the_frame_limit_is_refused(bounded: TestClient) -> None:
    r = bounded.post("/v1/detect", content=to_bytes(make_bto(frames=9)), headers=DICOM)
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == "image_too_large"
    assert "NumberOfFrames" in r.json()["message"] and "at most 8 frames" in r.json()["message"]
    # beside a volume within the bounds: answered for that one, the other listed
    body, ctype = _related([to_bytes(make_bto(frames=6)), to_bytes(make_bto(frames=9))])
    r = bounded.post("/v1/detect", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text
    assert [(x["part"], x["detail"], x["status"]) for x in r.json()["rejected"]] == \
        [(1, "image_too_large", 413)]
    [image] = r.json()["studies"][0]["images"]
    assert any("every frame" in w for w in image["warnings"]), image["warnings"]  # slab 1


def test_a_volume_over_the_pixel_limit_is_refused(bounded: TestClient,
                                                  client: TestClient) -> None:
    r = bounded.post("/v1/detect", content=to_bytes(make_bto(frames=8, rows=256, cols=128)),
                     headers=DICOM)
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == "image_too_large"
    assert "at most 200000 pixels" in r.json()["message"]
    # default bounds: a volume holds no more pixels than one 2D image (GALACTO_MAX_PIXELS):
    # 60 frames of 2457 x 1996, 589 MB uncompressed, is refused from its header
    big = make_bto(frames=2, rows=64, cols=64)
    big.NumberOfFrames, big.Rows, big.Columns = 60, 2457, 1996
    r = client.post("/v1/detect", content=to_bytes(big), headers=DICOM)
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == "image_too_large"
    assert f"at most {Settings().max_pixels} pixels" in r.json()["message"]


def test_a_frame_that_cannot_be_decoded_is_that_instances_refusal(client: TestClient) -> None:
    good = to_bytes(make_bto(frames=6, rows=128, cols=128, seed=11))
    body, ctype = _related([good, broken_frame_bto()])
    r = client.post("/v1/detect", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text
    [refusal] = r.json()["rejected"]
    assert refusal["part"] == 1 and refusal["status"] == 400
    assert refusal["detail"] in ("truncated_pixel_data", "decode_error")
    assert refusal["message"].startswith("frame 5 of the volume could not be decoded")
    assert [img["number_of_frames"] for s in r.json()["studies"] for img in s["images"]] == [6]

    r = client.post("/v1/detect", content=broken_frame_bto(), headers=DICOM)
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == refusal["detail"]
    r = client.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 202, r.text
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert client.get("/healthz").status_code == 200


def test_tomo_and_frame_settings_come_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, bundled_model: DetectorModel) -> None:
    for name in ("GALACTO_MAX_FRAMES", "GALACTO_MAX_VOLUME_PIXELS", "GALACTO_MAX_PIXELS",
                 "GALACTO_TOMO_SLAB", "GALACTO_TOMO_STRIDE"):
        monkeypatch.delenv(name, raising=False)
    defaults = Settings()
    assert (defaults.max_frames, defaults.volume_pixels) == (200, defaults.max_pixels)
    assert Settings(max_pixels=1000).volume_pixels == 1000  # follows GALACTO_MAX_PIXELS
    assert defaults.tomo_for(bundled_model) is None  # as the model card says
    card = bundled_model.tomo_settings
    only_slab = Settings(tomo_slab=1).tomo_for(bundled_model)
    assert only_slab is not None and (only_slab.slab, only_slab.stride) == (1, card.stride)
    for name, value in (("GALACTO_MAX_FRAMES", "90"), ("GALACTO_MAX_VOLUME_PIXELS", "400000000"),
                        ("GALACTO_TOMO_SLAB", "1"), ("GALACTO_TOMO_STRIDE", "2")):
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.max_frames, settings.volume_pixels) == (90, 400_000_000)
    tomo = settings.tomo_for(bundled_model)
    assert tomo is not None and (tomo.slab, tomo.stride) == (1, 2)


# --------------------------------------------------------------------------------------------
# /v1/render
# --------------------------------------------------------------------------------------------


def test_render_a_frame_of_a_volume(client: TestClient, bto: bytes) -> None:
    shown: dict[int, np.ndarray] = {}
    for frame in (2, FOCUS):
        r = client.post(f"/v1/render?frame={frame}&overlay=false&max_size=512", content=bto,
                        headers=DICOM)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        assert (r.headers["x-galacto-frame"], r.headers["x-galacto-frames"]) == \
            (str(frame), str(FRAMES))
        png = _png(r.content)
        assert max(png.size) <= 512 and png.mode == "L"
        shown[frame] = np.asarray(png, dtype=np.float64)
    assert np.abs(shown[2] - shown[FOCUS]).mean() > 0.5  # two different frames


def test_render_a_volume_draws_its_top_finding_on_its_best_frame(
        client: TestClient, bto: bytes, detected: dict[str, Any]) -> None:
    [image] = detected["studies"][0]["images"]
    top = max(image["findings"], key=lambda f: f["score"])
    r = client.post("/v1/render", content=bto, headers=DICOM)  # overlay by default
    assert r.status_code == 200, r.text
    assert r.headers["x-galacto-frame"] == str(top["frame"]["best"])
    rgb = np.asarray(_png(r.content).convert("RGB"), dtype=np.int32)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 110) & (rgb[..., 2] < 110)
    assert red.sum() > 50, "the finding's box is drawn"


@pytest.mark.parametrize("frame", [0, -1, FRAMES + 1])
def test_render_refuses_a_frame_the_volume_does_not_have(client: TestClient, bto: bytes,
                                                         frame: int) -> None:
    r = client.post(f"/v1/render?frame={frame}&overlay=false", content=bto, headers=DICOM)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "invalid_frame"
    expected = f"frame {frame} is not a frame of this object"
    assert r.json()["message"].startswith(expected)
    if frame > 0:
        assert r.json()["message"].endswith(f"the volume has frames 1 to {FRAMES}")


def test_render_of_a_2d_image_knows_one_frame(client: TestClient,
                                              views: dict[str, Path]) -> None:
    data = views["CC"].read_bytes()
    r = client.post("/v1/render?frame=1&max_size=256", content=data, headers=DICOM)
    assert r.status_code == 200, r.text
    assert "x-galacto-frame" not in r.headers and _png(r.content).mode == "L"
    r = client.post("/v1/render?frame=2", content=data, headers=DICOM)
    assert r.status_code == 422 and r.json()["detail"] == "invalid_frame"
    assert "a 2D image has frame 1 only" in r.json()["message"]


def test_cli_refuses_a_volume_with_a_broken_frame_alone(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """``galacto detect`` on a good volume and one whose frame 5 cannot be decoded: the broken
    file is rejected naming the file and the frame (exit 1), the good one is analysed and its
    JSON written."""
    from serving.cli import main

    good, bad = tmp_path / "good.dcm", tmp_path / "bad.dcm"
    good.write_bytes(to_bytes(make_bto(frames=6, rows=128, cols=128, seed=11)))
    bad.write_bytes(broken_frame_bto())
    out = tmp_path / "out.json"
    assert main(["detect", str(good), str(bad), "--json", str(out)]) == 1
    text = capsys.readouterr().out.replace("\n", " ")
    assert f"rejected {bad}" in text and "frame 5 of the volume could not be decoded" in text
    written = json.loads(out.read_text())
    images = [img for s in DetectionResponse.model_validate(written).studies for img in s.images]
    assert [img.source for img in images] == [str(good)]
    # the JSON lists the rejected file as /v1/detect lists a refused part
    [refused] = written["rejected"]
    assert refused["file"] == str(bad) and refused["detail"] == "truncated_pixel_data"
    assert refused["message"].startswith("frame 5 of the volume could not be decoded")
    # the console shows each analysed image's warnings, e.g. how the volume was run
    assert all(f"warning {good.name}: {w}"[:60] in text for w in images[0].warnings)
    assert any("tomosynthesis: the 2D detector ran on" in w for w in images[0].warnings)


def test_models_lists_the_tomosynthesis_points(client: TestClient) -> None:
    """/v1/models shows the thresholds volumes take, with their validation figures, and
    says when two points share one (asking for either gives the same findings)."""
    from serving.pipeline.model import default_model_dir, load_model

    [info] = client.get("/v1/models").json()
    model = load_model(default_model_dir())
    assert model.tomo is not None
    points = {p["name"]: p for p in info["tomosynthesis_operating_points"]}
    assert set(points) == set(model.tomo.operating_points)
    for name, op in model.tomo.operating_points.items():
        assert points[name]["score_threshold"] == op.score_threshold
        assert points[name]["fp_per_volume"] == op.fp_per_volume
        shared = [n for n, o in model.tomo.operating_points.items()
                  if n != name and o.score_threshold == op.score_threshold]
        if shared and op.note is None:
            assert points[name]["note"] == f"same threshold as {', '.join(shared)}"
