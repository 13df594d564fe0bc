"""``detect`` and ``galacto detect`` with the bundled model on generated studies, and how
its table and PNG overlays show findings and probable mimics."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import synth_lesion_study
from rich.console import Console

from serving.cli.detect import print_study
from serving.outputs.overlay import LESION_COLOR, MIMIC_COLOR, PAD, render_overlay
from serving.pipeline.detect import detect
from serving.pipeline.dicom_in import Image, read_image
from serving.pipeline.findings import DetectionResponse, ImageOut, MimicOut
from serving.pipeline.model import DetectorModel, default_model_dir, load_model

MIMIC_TEXT, MIMIC_SCORE = "probable air bubble", 0.91
EVIDENCE = "other view: partner scored 0.83"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_lesion_study(tmp_path_factory.mktemp("detect") / "study", cases=2, seed=77)


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
    assert matched >= 0.8 * len(boxes_a)
    # counts within 15 %: at high_sensitivity most findings are marginal candidates near the
    # threshold (0.05), which the 2x2 reduced decode can move across it
    assert abs(len(boxes_a) - len(boxes_b)) <= max(1, round(0.15 * len(boxes_a)))
    nip_a = [im.nipple_px for s in a.studies for im in s.images]
    nip_b = [im.nipple_px for s in b.studies for im in s.images]
    for p, q in zip(nip_a, nip_b, strict=True):
        # 4 mm at this 0.1 mm spacing: a flat or inverted nipple has no sharp apex, and the
        # reduced decode sees it on 2x2 stored pixels
        assert p is not None and q is not None and np.hypot(p[0] - q[0], p[1] - q[1]) < 40


def _free_box(img: ImageOut, size: float, label_px: float) -> list[float]:
    """A ``size`` x ``size`` box (stored pixels), from a grid over the image, as far as
    possible from every finding box (widened to the right by ``label_px``, where the overlay
    writes its label) and the nipple."""
    taken = [[x1, y1, x2 + label_px, y2] for x1, y1, x2, y2 in (f.box_px for f in img.findings)]
    if img.nipple_px is not None:
        nx, ny = img.nipple_px
        taken.append([nx - 100, ny - 100, nx + 100, ny + 100])

    def gap(a: list[float], b: list[float]) -> float:
        return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])

    grid = [[x, y, x + size, y + size]
            for x in (0.05 * img.cols + k * (0.9 * img.cols - size) / 9 for k in range(10))
            for y in (0.05 * img.rows + k * (0.9 * img.rows - size) / 9 for k in range(10))]
    best = max(grid, key=lambda c: min((gap(c, t) for t in taken), default=math.inf))
    return [round(v, 1) for v in best]


@pytest.fixture(scope="module")
def with_mimic(galactogram_files: list[Path], bundled_model: DetectorModel
               ) -> tuple[list[Image], DetectionResponse]:
    """The images of the shared generated case and a real :func:`detect` run on them at the
    high-sensitivity operating point, to which one :class:`MimicOut` (an air bubble away from
    every finding) is added on the first image, and an evidence text to that image's first
    finding: the bundled model (0.3.0) has no mimic classes and no rescoring model, so its own
    results carry neither."""
    images = [read_image(f) for f in galactogram_files]
    result = detect(images, bundled_model, "high_sensitivity",
                    sources=[str(f) for f in galactogram_files])
    first = result.studies[0].images[0]
    assert first.findings and all(not im.mimics for s in result.studies for im in s.images)
    box = _free_box(first, 120.0, label_px=500.0)
    sy, sx = first.spacing_mm
    first.mimics.append(MimicOut(
        label="air_bubble", text=MIMIC_TEXT, score=MIMIC_SCORE, box_px=box,
        box_mm=[box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]))
    first.findings[0].evidence = EVIDENCE
    return images, result


def test_cli_table_lists_mimics_apart(with_mimic: tuple[list[Image], DetectionResponse]
                                      ) -> None:
    """The table ``galacto detect`` prints: the evidence in its finding's row, the mimic in a
    table of its own after the findings, never in the findings table."""
    _, result = with_mimic
    study = result.studies[0]
    console = Console(record=True, width=300, color_system=None)
    print_study(console, study, result)
    text = console.export_text()
    head, sep, tail = text.partition("probable mimics \N{EM DASH} not lesions")
    assert sep, text
    # the findings' evidence may name a mimic score at their place; the mimic itself and its
    # wording stay out of the findings table
    assert MIMIC_TEXT not in head and "not a lesion" not in head
    for img in study.images:
        for f in img.findings:
            assert f.id in head
    assert result.operating_point.source in head
    row = next(line for line in head.splitlines() if EVIDENCE in line)
    assert f" {study.images[0].findings[0].id} " in row
    rows = [line for line in tail.splitlines() if MIMIC_TEXT in line]
    assert len(rows) == 1 and f"{MIMIC_SCORE:.2f}" in rows[0], tail
    mx1, my1, mx2, my2 = study.images[0].mimics[0].box_mm
    assert f"{mx2 - mx1:.1f} x {my2 - my1:.1f}" in rows[0]
    assert Path(str(study.images[0].source)).name in rows[0]

    without = study.model_copy(deep=True)
    for img in without.images:
        img.mimics = []
    console = Console(record=True, width=300, color_system=None)
    print_study(console, without, result)
    assert "probable mimics" not in console.export_text()


def test_overlay_draws_mimics_apart(with_mimic: tuple[list[Image], DetectionResponse]) -> None:
    """The PNG overlay: the mimic box in the mimic colour, dashed, with no lesion colour
    there; the findings in the lesion colour and none of them in the mimic colour."""
    images, result = with_mimic
    out: ImageOut = result.studies[0].images[0]
    image = images[out.index]
    max_height = 1600
    pic = np.asarray(render_overlay(image, out, max_height=max_height))
    step = max(math.ceil(image.pixels.shape[0] / max_height), 1)
    s = 1.0 / (step * image.decode_scale)

    def region(box: list[float], margin: int) -> np.ndarray:
        x1, y1, x2, y2 = (round(v * s) for v in box)
        return pic[max(y1 - margin, 0):y2 + margin + 1, max(x1 - margin, 0):x2 + margin + 1]

    def count(area: np.ndarray, color: tuple[int, int, int]) -> int:
        return int(np.all(area == np.asarray(color, np.uint8), axis=-1).sum())

    mimic = out.mimics[0]
    around = region(mimic.box_px, PAD + 2)
    assert count(around, MIMIC_COLOR) > 50
    assert count(around, LESION_COLOR) == 0
    # dashed: along the top edge, some columns carry the mimic colour and some do not
    x1, y1, x2, _ = (round(v * s) for v in mimic.box_px)
    edge = pic[y1 - PAD - 1:y1 - PAD + 2, x1 - PAD:x2 + PAD + 1]
    share = float(np.any(np.all(edge == np.asarray(MIMIC_COLOR, np.uint8), axis=-1),
                         axis=0).mean())
    assert 0.3 < share < 0.9, share
    for f in out.findings:
        ring = region(f.box_px, PAD + 2)
        assert count(ring, LESION_COLOR) > 0, f.id
        assert count(ring, MIMIC_COLOR) == 0, f.id


def test_cc_like_and_oblique_views_are_each_others_other_view_everywhere(study: Path) -> None:
    """XCCL is a CC-like view and ML an ML/MLO-like one for the two-view rescoring, so the
    fusion pairs them too (one rule, ``breast_frame.view_group``): a study whose CC views
    are labelled XCCL gives the same scores and the same fused findings as the original."""
    from dataclasses import replace

    from serving.pipeline.locate.breast_frame import view_group

    assert [view_group(v) for v in ("CC", "XCCL", "XCCM", "FB", "ML", "LM", "MLO", "LMO",
                                    "SIO", "ISO", "SPOT", None)] == \
        ["cc"] * 4 + ["other"] * 6 + [None, None]
    model = load_model(default_model_dir())
    images = [read_image(f) for f in sorted(study.rglob("*.dcm"))]
    base = detect(images, model, "high_sensitivity")
    relabelled = detect([replace(im, view="XCCL") if im.view == "CC" else im for im in images],
                        model, "high_sensitivity")
    fused = [(f.finding_ids, f.phrase) for s in base.studies for f in s.fused]
    assert fused, "the study must have fused findings"
    assert [(f.finding_ids, f.phrase) for s in relabelled.studies for f in s.fused] == fused
    assert [f.score for s in relabelled.studies for im in s.images for f in im.findings] == \
        [f.score for s in base.studies for im in s.images for f in im.findings]
