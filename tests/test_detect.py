"""``detect`` and ``galacto detect`` with the bundled model on generated studies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from serving.pipeline.detect import detect
from serving.pipeline.dicom_in import read_image
from serving.pipeline.findings import DetectionResponse
from serving.pipeline.model import default_model_dir, load_model


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("detect") / "study"
    r = subprocess.run([sys.executable, "-m", "serving.cli", "synth", "--out", str(out),
                        "--cases", "2", "--seed", "77", "--profile", "ge", "--normal-share", "0",
                        "--compressed-share", "0", "--monochrome1-share", "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def _variant(path: Path, out: Path, *, mirror: bool, invert: bool) -> Path:
    """A copy of a file with the pixels mirrored left-right (PatientOrientation A<->P)
    and/or stored as MONOCHROME1."""
    ds = pydicom.dcmread(path)
    px = ds.pixel_array.copy()
    if mirror:
        px = px[:, ::-1]
        row, col = ds.PatientOrientation
        ds.PatientOrientation = [{"A": "P", "P": "A"}[row], col]
    if invert:
        px = (2 ** ds.BitsStored - 1) - px
        ds.PhotometricInterpretation = "MONOCHROME1" if ds.PhotometricInterpretation == \
            "MONOCHROME2" else "MONOCHROME2"
    ds.PixelData = np.ascontiguousarray(px).tobytes()
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    target = out / f"{'m' if mirror else ''}{'i' if invert else ''}_{path.parent.name}_{path.name}"
    ds.save_as(target)
    return target


def test_same_findings_for_mirrored_and_inverted_copies(study: Path, tmp_path: Path) -> None:
    model = load_model(default_model_dir())
    files = sorted(study.rglob("*.dcm"))
    base = detect([read_image(f) for f in files], model, "high_sensitivity")
    for mirror, invert in ((True, False), (False, True), (True, True)):
        variants = [_variant(f, tmp_path, mirror=mirror, invert=invert) for f in files]
        other = detect([read_image(f) for f in variants], model, "high_sensitivity")
        for a, b in zip(base.studies[0].images + base.studies[1].images,
                        other.studies[0].images + other.studies[1].images, strict=True):
            assert len(a.findings) == len(b.findings), (mirror, invert)
            for fa, fb in zip(a.findings, b.findings, strict=True):
                box = list(fb.box_px)
                if mirror:
                    box = [a.cols - box[2], box[1], a.cols - box[0], box[3]]
                assert np.allclose(fa.box_px, box, atol=1.0), (fa.box_px, box)
                assert abs(fa.score - fb.score) < 1e-3
                if fa.location and fb.location:
                    assert fa.location.half == fb.location.half
        phrases = [f.phrase for s in base.studies for f in s.fused]
        assert phrases == [f.phrase for s in other.studies for f in s.fused]


def test_cli_detect_writes_json_and_overlays(study: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom file")
    r = subprocess.run([sys.executable, "-m", "serving.cli", "detect", str(study), str(junk),
                        "--json", str(tmp_path / "out.json"), "--overlay", str(tmp_path / "ov")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr  # one file rejected, the rest analysed
    assert "not_dicom" in r.stdout
    result = DetectionResponse.model_validate_json((tmp_path / "out.json").read_text())
    assert len(result.studies) == 2
    assert all(len(s.images) == 2 for s in result.studies)
    assert result.operating_point.name == "balanced"
    pngs = sorted((tmp_path / "ov").glob("*.png"))
    assert len(pngs) == 4 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    missing = subprocess.run([sys.executable, "-m", "serving.cli", "detect", "nowhere"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "nowhere" in missing.stderr
    bad_op = subprocess.run([sys.executable, "-m", "serving.cli", "detect", str(study),
                             "--operating-point", "reckless"],
                            capture_output=True, text=True, timeout=120)
    assert bad_op.returncode == 2 and "reckless" in bad_op.stderr and "balanced" in bad_op.stderr


def test_response_is_deterministic(study: Path) -> None:
    model = load_model(default_model_dir())
    files = sorted(study.rglob("*.dcm"))
    a = detect([read_image(f) for f in files], model)
    b = detect([read_image(f) for f in files], model)
    for r in (a, b):  # timings differ from run to run; everything else must not
        for s in r.studies:
            for img in s.images:
                img.timings_ms = {}
    assert a.model_dump() == b.model_dump()


def test_jpeg2000_reduced_resolution_decode_finds_the_same(study: Path, tmp_path: Path
                                                           ) -> None:
    """A JPEG 2000 copy decoded at a reduced resolution level (0.1 mm -> 0.2 mm here) gives
    the same findings, in stored pixels, as the uncompressed original."""
    model = load_model(default_model_dir())
    spacing = model.preprocess.spacing_mm
    files = sorted(study.rglob("*.dcm"))
    j2k = []
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(pydicom.uid.JPEG2000Lossless)
        target = tmp_path / f"j2k_{f.parent.name}_{f.name}"
        ds.save_as(target)
        j2k.append(target)
    reduced = [read_image(f, reduce_to_spacing_mm=spacing) for f in j2k]
    assert all(im.decode_scale == 2 for im in reduced)
    assert reduced[0].pixels.shape == (-(-reduced[0].rows // 2), -(-reduced[0].cols // 2))
    full = [read_image(f) for f in files]
    assert all(im.decode_scale == 1 for im in full)
    a = detect(full, model, "high_sensitivity")
    b = detect(reduced, model, "high_sensitivity")
    boxes_a = [f.box_px for s in a.studies for im in s.images for f in im.findings]
    boxes_b = [f.box_px for s in b.studies for im in s.images for f in im.findings]
    assert boxes_a, "the study must give findings to compare"
    def same(x: list[float], y: list[float]) -> bool:
        """Within 4 stored pixels, or 5 % of the box size for large boxes (the reduced
        decode works on 2x2 stored pixels)."""
        size = max(x[2] - x[0], x[3] - x[1])
        return bool(np.abs(np.subtract(x, y)).max() <= max(4.0, 0.05 * size))

    matched = sum(any(same(x, y) for y in boxes_b) for x in boxes_a)
    assert matched >= 0.8 * len(boxes_a) and abs(len(boxes_a) - len(boxes_b)) <= 1
    nip_a = [im.nipple_px for s in a.studies for im in s.images]
    nip_b = [im.nipple_px for s in b.studies for im in s.images]
    for p, q in zip(nip_a, nip_b, strict=True):
        assert p is not None and q is not None and np.hypot(p[0] - q[0], p[1] - q[1]) < 20
