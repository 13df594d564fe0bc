"""The synthetic tomosynthesis (DBT) generator: depth truth, DICOM object, determinism, CLI.

Volumes are tiny (the 102 x 77 mm ``test`` field at 0.4-0.8 mm pixels), so each test takes
seconds.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from training.synth.anatomy import Branch, BreastShape, DuctSystem, Lesion, Phantom, Sphere
from training.synth.case import CaseParams, generate_case
from training.synth.dbt import DbtParams, generate_dbt_case, render_dbt
from training.synth.dbt_geometry import (
    DBT_ACQUISITIONS,
    frame_count,
    frame_heights,
    frame_of_height,
    frame_range,
    height_above_support,
)
from training.synth.dicom_out_dbt import BREAST_TOMOSYNTHESIS_IMAGE, write_dbt_view
from training.synth.profiles import get_profile
from training.synth.render import ViewGeometry
from training.synth.variety import sample_case_look

TEST = get_profile("test")
COARSE = DbtParams(spacing_mm=0.8)
LESION_CASES = CaseParams(normal_p=0.0)


def _duct_phantom(u_mm: float) -> Phantom:
    """A small breast with one straight contrast-filled duct at ``u_mm`` above the nipple
    axis and a 4 mm void inside a 6.4 mm distension halfway along it."""
    breast = BreastShape(depth_mm=50.0, radius_sup_mm=32.0, radius_lat_mm=32.0)
    d = np.linspace(2.0, 44.0, 22)
    pts = np.stack([d, np.full_like(d, u_mm), np.zeros_like(d)], axis=1)
    duct = Branch(points=pts, radii=np.full(len(d), 1.0), generation=0, parent=None)
    c = pts[16].copy()
    lesion = Lesion(0, "round", 4.0, [Sphere(c, 2.0)], Sphere(c, 3.2), 0, 16, False, c)
    return Phantom(breast, DuctSystem([duct], 0.0, False, False, False, []), [lesion], [],
                   contrast_mu_per_mm=1.0)


def _void_contrast(frames: np.ndarray, box: list[float], spacing: float) -> np.ndarray:
    """Per frame: mean of the contrast rim (2-3 mm from the void's centre) minus the mean
    of the void's core (within 1 mm); ``(n_frames,)``."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    yy, xx = np.mgrid[0: frames.shape[1], 0: frames.shape[2]]
    r = np.hypot(xx + 0.5 - cx, yy + 0.5 - cy) * spacing
    core, rim = r < 1.0, (r > 2.0) & (r < 3.0)
    f = frames.astype(np.float32)
    return np.asarray(f[:, rim].mean(axis=1) - f[:, core].mean(axis=1))


# ----------------------------------------------------------------------------- geometry


def test_frame_numbering_and_heights() -> None:
    """Frame k (1-based) lies (k - 0.5) * slice above the support; ranges are inclusive."""
    assert frame_count(47.2, 1.0) == 48 and frame_count(40.0, 1.0) == 40
    assert frame_heights(3, 2.0).tolist() == [1.0, 3.0, 5.0]
    assert frame_of_height(0.0, 40, 1.0) == 1 and frame_of_height(39.99, 40, 1.0) == 40
    assert frame_of_height(12.4, 40, 1.0) == 13
    assert frame_range(10.2, 13.7, 40, 1.0) == [11, 14]
    assert frame_range(10.6, 10.9, 40, 1.0) == [11, 11]  # no plane inside: the nearest
    assert frame_range(-5.0, 80.0, 40, 1.0) == [1, 40]


def test_compression_keeps_the_phantom_between_support_and_paddle() -> None:
    """The nipple is at mid-height; every duct point lies within [0, T]; superior points
    are higher in CC (detector under the breast) and medial ones higher in ML."""
    breast = BreastShape(depth_mm=80.0, radius_sup_mm=50.0, radius_lat_mm=55.0)
    for angle, up in ((0.0, np.array([40.0, 20.0, 0.0])), (90.0, np.array([40.0, 0.0, -20.0]))):
        geo = ViewGeometry("CC" if angle == 0 else "ML", angle, 1.1, 50.0, (90.0, 50.0), 5.0)
        assert float(height_above_support(np.zeros(3), breast, geo)) == pytest.approx(25.0)
        assert float(height_above_support(up, breast, geo)) > 30.0
        assert float(height_above_support(-up * np.array([-1, 1, 1]), breast, geo)) < 20.0
        pts = np.random.default_rng(0).uniform(-60, 90, (2000, 3))
        z = height_above_support(pts, breast, geo)
        assert z.min() >= 0.0 and z.max() <= 50.0


# ----------------------------------------------------------------------------- (a) focus


def test_lesion_void_is_sharpest_inside_its_frame_range() -> None:
    """A void in a contrast-filled duct has its highest rim-to-core contrast in a frame of
    its truth range and is blurred away 12 frames from its best frame, whether it lies
    above or below mid-height (a wide-arc sweep, where depth resolution is best)."""
    checked = 0
    for u_mm, seed in ((-10.0, 3), (10.0, 3), (10.0, 4)):
        look = sample_case_look("standard", np.random.default_rng(seed + 100))
        r = render_dbt(_duct_phantom(u_mm), "CC", TEST, np.random.default_rng(seed), False,
                       look, np.random.default_rng(seed + 200), DBT_ACQUISITIONS["siemens"],
                       DbtParams(spacing_mm=0.4))
        truth = r.lesion_truth[0]
        first, last = truth["frame_range"]
        best = truth["best_frame"]
        assert first <= best <= last
        assert (truth["height_mm"] > r.geometry.thickness_mm / 2) == (u_mm > 0)
        g = _void_contrast(r.frames, truth["box"], 0.4)
        sharpest = int(np.argmax(g)) + 1
        assert first <= sharpest <= last, (sharpest, truth)
        far = [g[k - 1] for k in range(1, len(g) + 1) if abs(k - best) >= 12]
        assert far and max(far) < 0.5 * g[best - 1]
        checked += 1
    assert checked == 3


# ----------------------------------------------------------------------------- (b) DICOM


def test_written_file_has_functional_groups_and_rising_heights(tmp_path: Path) -> None:
    res = generate_dbt_case(5, 1, TEST, LESION_CASES, COARSE)
    view, item = res.views[0], res.items[0]
    path = tmp_path / "v.dcm"
    write_dbt_view(view, res.header, TEST, path)
    ds = pydicom.dcmread(path)
    n = int(ds.NumberOfFrames)
    assert ds.SOPClassUID == BREAST_TOMOSYNTHESIS_IMAGE
    assert n == item["frames"] == view.frames.shape[0]
    assert ds.pixel_array.shape == view.frames.shape
    assert np.array_equal(ds.pixel_array, view.frames)
    shared = ds.SharedFunctionalGroupsSequence[0]
    pm = shared.PixelMeasuresSequence[0]
    assert [float(v) for v in pm.PixelSpacing] == [0.8, 0.8]
    assert float(pm.SliceThickness) == float(pm.SpacingBetweenSlices) == 1.0
    assert shared.FrameAnatomySequence[0].FrameLaterality == item["laterality"]
    assert ds.ImageLaterality == item["laterality"]
    assert ds.ViewCodeSequence[0].CodeValue == {"CC": "399162004"}[item["view"]]
    per = ds.PerFrameFunctionalGroupsSequence
    assert len(per) == n
    z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in per]
    assert all(b > a for a, b in itertools.pairwise(z))
    assert z == pytest.approx(((np.arange(n) + 0.5) * 1.0).tolist())
    assert [int(f.FrameContentSequence[0].InStackPositionNumber) for f in per] == \
        list(range(1, n + 1))
    # the same study and patient header as the case's 2D views
    two_d = generate_case(5, 1, TEST, LESION_CASES)
    assert two_d.header == res.header
    assert ds.StudyInstanceUID == res.header.study_instance_uid
    assert ds.PatientID == res.header.patient_id
    if shutil.which("dciodvfy"):
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [ln for ln in (out.stdout + out.stderr).splitlines()
                  if ln.startswith("Error")]
        assert not errors, errors


# ----------------------------------------------------------------------------- (c) seeds


def test_same_seed_same_volume_and_truth(tmp_path: Path) -> None:
    a = generate_dbt_case(11, 2, TEST, LESION_CASES, COARSE)
    b = generate_dbt_case(11, 2, TEST, LESION_CASES, COARSE)
    for va, vb in zip(a.views, b.views, strict=True):
        assert va.frames.tobytes() == vb.frames.tobytes()
    assert a.items == b.items
    write_dbt_view(a.views[1], a.header, TEST, tmp_path / "a.dcm")
    write_dbt_view(b.views[1], b.header, TEST, tmp_path / "b.dcm")
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()
    other = generate_dbt_case(11, 3, TEST, LESION_CASES, COARSE)
    assert other.views[0].frames.tobytes() != a.views[0].frames.tobytes()


def test_dbt_truth_matches_the_2d_case() -> None:
    """Same phantom as the 2D case: same lesions, laterality, orientation and (at the same
    pixel size) the same lesion boxes as the 2D view."""
    two_d = generate_case(13, 4, TEST, LESION_CASES)
    dbt = generate_dbt_case(13, 4, TEST, LESION_CASES, DbtParams(spacing_mm=0.4))
    assert dbt.ground_truth == two_d.ground_truth
    for it2, it3 in zip(two_d.items, dbt.items, strict=True):
        assert (it3["laterality"], it3["view"], it3["patient_orientation"]) == \
            (it2["laterality"], it2["view"], it2["patient_orientation"])
        assert it3["lesion_ids"] == it2["lesion_ids"]
        for b2, b3 in zip(it2["boxes"], it3["boxes"], strict=True):
            assert np.abs(np.array(b2) - np.array(b3)).max() <= 1.0
        n = it3["frames"]
        assert len(it3["frame_ranges"]) == len(it3["best_frames"]) == len(it3["boxes"])
        for (first, last), best in zip(it3["frame_ranges"], it3["best_frames"], strict=True):
            assert 1 <= first <= best <= last <= n


# ----------------------------------------------------------------------------- (d) CLI


def _galacto(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_writes_dbt_dataset(tmp_path: Path) -> None:
    out = tmp_path / "dbt"
    r = _galacto("synth", "--dbt", "--out", str(out), "--cases", "2", "--seed", "3",
                 "--profile", "test", "--dbt-spacing-mm", "0.8", "--arc-deg", "30",
                 "--projections", "11", "--workers", "1", "--normal-share", "0")
    assert r.returncode == 0, r.stderr
    index = json.loads((out / "dataset.json").read_text())
    assert index["meta"]["options"]["dbt"]["spacing_mm"] == 0.8
    items = [it for s in ("training", "validation", "test") for it in index[s]]
    assert len(items) == 4
    for it in items:
        assert it["image"].endswith("_tomo.dcm")
        n = it["frames"]
        k = len(it["boxes"])
        assert k == len(it["labels"]) == len(it["frame_ranges"]) == len(it["best_frames"]) \
            == len(it["heights_mm"]) == len(it["lesion_ids"])
        for (first, last), best in zip(it["frame_ranges"], it["best_frames"], strict=True):
            assert 1 <= first <= best <= last <= n
        for m in it["mimics"]:
            assert {"kind", "box", "frame_range", "best_frame", "height_mm"} <= set(m)
        assert it["dbt"]["arc_deg"] == 30.0 and it["dbt"]["projections"] == 11
        assert {"clock_hour", "quadrant"} <= set(it["lesions"][0])
        ds = pydicom.dcmread(out / it["image"], stop_before_pixels=True)
        assert int(ds.NumberOfFrames) == n
        assert ds.Rows == 128 and ds.Columns == 96
        assert ds.SOPInstanceUID == it["sop_instance_uid"]
    bad = _galacto("synth", "--out", str(tmp_path / "x"), "--cases", "1", "--arc-deg", "20")
    assert bad.returncode == 2 and "--dbt" in bad.stderr


@pytest.mark.parametrize(("flag", "value", "bound"), [("--projections", "1", ">= 3"),
                                                      ("--projections", "2", ">= 3"),
                                                      ("--arc-deg", "0", "[5, 90)"),
                                                      ("--arc-deg", "4.5", "[5, 90)"),
                                                      ("--arc-deg", "90", "[5, 90)")])
def test_synth_refuses_a_sweep_without_depth(tmp_path: Path, flag: str, value: str,
                                             bound: str) -> None:
    """One projection, or a sweep of no arc, gives planes that are all the same image: the
    frame ranges of the truth would mean nothing, so the sweep is refused, by name."""
    out = tmp_path / "x"
    r = _galacto("synth", "--dbt", "--out", str(out), "--cases", "1", flag, value)
    assert r.returncode == 2
    assert flag.lstrip("-").replace("-", "_") in r.stderr and bound in r.stderr
    assert value in r.stderr
    assert not (out / "dataset.json").exists()
