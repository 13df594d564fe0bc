"""The synthetic galactogram generator: geometry, ground truth, determinism, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from serving.pipeline.dicom_in import read_image
from training.synth.anatomy import (
    BreastShape,
    LesionParams,
    clock_hour,
    grow_duct_tree,
    place_lesions,
    quadrant,
)
from training.synth.case import CaseParams, generate_case, patient_orientation
from training.synth.dataset import SynthOptions, build_index, parse_split
from training.synth.profiles import get_profile
from training.synth.render import upsample, upsample_window

TEST = get_profile("test")
#: a mid-size detector (1024 x 832 at 0.28 mm) where lesions span enough pixels to measure
MID = replace(TEST, name="mid", rows=1024, cols=832, detector_spacing_mm=0.28)
LESION_CASES = CaseParams(normal_p=0.0)


# ----------------------------------------------------------------------------- anatomy


def test_clock_face_mirrors_between_breasts() -> None:
    """12 superior; 3 o'clock is lateral on the left breast and medial on the right."""
    sup, lat, inf, med = ([10, 5, 0], [10, 0, 5], [10, -5, 0], [10, 0, -5])
    assert [clock_hour(np.array(p), "L") for p in (sup, lat, inf, med)] == [12, 3, 6, 9]
    assert [clock_hour(np.array(p), "R") for p in (sup, lat, inf, med)] == [12, 9, 6, 3]
    # upper outer is 1-2 o'clock on the left, 10-11 on the right
    uo = np.array([30.0, 10.0, 10.0])
    assert clock_hour(uo, "L") in (1, 2) and clock_hour(uo, "R") in (10, 11)
    assert quadrant(uo, "L") == quadrant(uo, "R") == "UOQ"
    assert quadrant(np.array([5.0, 1.0, 1.0]), "L") == "retroareolar"


def test_duct_tree_respects_anatomy() -> None:
    """Trees start at the nipple, taper, stay in the breast and within VICTRE's limits."""
    for seed in range(8):
        rng = np.random.default_rng(seed)
        breast = BreastShape(depth_mm=100.0, radius_sup_mm=60.0, radius_lat_mm=70.0)
        tree = grow_duct_tree(breast, rng)
        assert 1 <= len(tree.branches) <= 400
        assert np.allclose(tree.branches[0].points[0], 0.0)
        assert max(b.generation for b in tree.branches) <= 7
        for b in tree.branches:
            assert b.radii.min() >= 0.08, "branching stops near 0.1 mm radius"
            assert b.radii.max() <= 4.0
            assert np.all(b.points[:, 0] >= -1.0), "ducts run posterior from the nipple"
            if b.parent is not None:
                parent = tree.branches[b.parent]
                assert np.allclose(b.points[0], parent.points[-1])
                assert b.radii[0] <= parent.radii[-1] * 1.0 + 1e-9 or tree.ectasia


def test_every_lesion_sits_in_an_opacified_duct() -> None:
    """A cut-off stops the filling distal to it; it must never leave an earlier lesion in an
    unfilled duct (that lesion would be drawn as a bare contrast ring)."""
    breast = BreastShape(depth_mm=100.0, radius_sup_mm=60.0, radius_lat_mm=70.0)
    params = LesionParams(cutoff_p=0.9, multiple_p=1.0)
    cutoffs = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        tree = grow_duct_tree(breast, rng)
        lesions = place_lesions(tree, 4, rng, params)
        for les in lesions:
            cutoffs += les.cutoff
            assert les.point_index < tree.branches[les.branch].fill_until, (seed, les.lesion_id)
    assert cutoffs >= 20, "the test must exercise cut-offs"


# ----------------------------------------------------------------------------- views


@pytest.mark.parametrize(("lat", "view", "hflip", "vflip", "expected"), [
    ("L", "CC", False, False, ("A", "R")),
    ("R", "CC", True, False, ("P", "L")),
    ("L", "MLO", False, False, ("A", "FR")),
    ("R", "MLO", True, False, ("P", "FL")),
    ("R", "ML", False, True, ("A", "H")),
    ("L", "CC", True, True, ("P", "L")),
])
def test_patient_orientation(lat: str, view: str, hflip: bool, vflip: bool,
                             expected: tuple[str, str]) -> None:
    assert patient_orientation(lat, view, hflip, vflip) == expected  # type: ignore[arg-type]


def test_both_views_show_the_same_lesions_and_nipple_side() -> None:
    """CC and ML/MLO project one 3D phantom: same lesion ids, nipple on the side the
    orientation says, boxes inside the image, ground truth complete."""
    seen_flip = set()
    for index in range(6):
        res = generate_case(11, index, MID, LESION_CASES)
        cc, other = res.items
        assert cc["view"] == "CC" and other["view"] in ("ML", "MLO")
        assert cc["lesion_ids"] == other["lesion_ids"] == [
            les["id"] for les in res.ground_truth["lesions"]]
        for view, item in zip(res.views, res.items, strict=True):
            rows, cols = view.pixels.shape
            nx = item["nipple_xy"][0]
            left, right = view.pixels[:, :8].mean(), view.pixels[:, -8:].mean()
            if view.patient_orientation[0] == "A":  # columns run towards the nipple
                assert left > right, "chest wall (tissue) on the left, air on the right"
                assert view.pixels[:, int(nx) + 10:].mean() < left
            else:
                assert right > left
                assert view.pixels[:, : int(nx) - 10].mean() < right
            seen_flip.add(view.patient_orientation[0])
            for x1, y1, x2, y2 in item["boxes"]:
                assert 0 <= x1 < x2 <= cols and 0 <= y1 < y2 <= rows
        for les in res.ground_truth["lesions"]:
            assert 1 <= les["clock_hour"] <= 12
            assert les["depth"] in ("anterior", "middle", "posterior")
            assert 1.4 <= les["size_mm"] <= 16.0
            assert les["distance_from_nipple_mm"] > 0
    assert seen_flip == {"A", "P"}, "both nipple directions occur"


def test_filling_defects_are_dark_voids_in_bright_contrast() -> None:
    """Inside a lesion box the image is darker than the contrast rim just around it: the
    defining sign of a filling defect. Checked on the stored pixels."""
    darker, total = 0, 0
    for index in range(10):
        res = generate_case(21, index, MID, LESION_CASES)
        for view, item in zip(res.views, res.items, strict=True):
            img = view.pixels.astype(np.float32)
            for x1, y1, x2, y2 in item["boxes"]:
                cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
                w = max(int((x2 - x1) / 2) + 3, 3)
                core = img[cy - 1: cy + 2, cx - 1: cx + 2].mean()
                ring = img[max(cy - w, 0): cy + w + 1, max(cx - w, 0): cx + w + 1]
                total += 1
                darker += bool(np.percentile(ring, 95) > core + 0.02 * float(np.ptp(img)))
    assert total >= 8
    assert darker / total >= 0.8, f"only {darker}/{total} lesions look like filling defects"


def test_normal_share_and_mimics_are_not_labelled() -> None:
    """Normal cases have no boxes; mimics are listed apart from the lesion boxes."""
    normals = sum(not generate_case(4, i, TEST, CaseParams(normal_p=0.5)).ground_truth[
        "lesions"] for i in range(12))
    assert 2 <= normals <= 10
    kinds: set[str] = set()
    for i in range(30):
        res = generate_case(9, i, TEST, CaseParams(normal_p=1.0))
        for item in res.items:
            assert item["boxes"] == [] and item["labels"] == []
            kinds.update(m["kind"] for m in item["mimics"])
    assert "air_bubble" in kinds


def test_upsample_matches_scipy_and_windows() -> None:
    from scipy import ndimage

    low = np.random.default_rng(0).random((37, 29)).astype(np.float32)
    shape = (146, 113)
    ref = ndimage.zoom(low, 4, order=1, grid_mode=True, mode="nearest",
                       prefilter=False)[: shape[0], : shape[1]]
    np.testing.assert_allclose(upsample(low, shape), ref, atol=1e-5)
    win = upsample_window(low, shape, slice(10, 90), slice(50, 113))
    np.testing.assert_allclose(win, ref[10:90, 50:113], atol=1e-5)


# ----------------------------------------------------------------------------- dataset


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "synth_timing.json"}


def _galacto(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_same_seed_same_bytes_any_worker_count(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--cases", "3", "--seed", "17", "--profile", "test",
              "--split", "training=0.5,validation=0.25,test=0.25",
              "--compressed-share", "0.7", "--monochrome1-share", "0.5"]
    ra = _galacto("synth", "--out", str(a), "--workers", "1", *common)
    rb = _galacto("synth", "--out", str(b), "--workers", "2", "--preview", *common)
    assert ra.returncode == 0, ra.stderr
    assert rb.returncode == 0, rb.stderr
    da, db = _digest(a), _digest(b)
    db.pop("preview.png")
    assert da == db
    assert (b / "preview.png").stat().st_size > 1000
    index = json.loads((a / "dataset.json").read_text())
    items = [it for s in ("training", "validation", "test") for it in index[s]]
    assert len(items) == 6
    for it in items:
        img = read_image(a / it["image"])  # the service's intake reads every file
        assert img.laterality == it["laterality"] and img.view == it["view"]
        assert img.spacing_mm == pytest.approx((TEST.patient_spacing_mm,) * 2)
        assert "\\".join(img.patient_orientation or ()) == it["patient_orientation"]
        assert img.photometric_interpretation == it["photometric"]
        assert img.transfer_syntax_uid == it["transfer_syntax"]
        assert len(it["boxes"]) == len(it["labels"]) == len(it["lesion_ids"])
    c = _galacto("synth", "--out", str(tmp_path / "c"), "--first-index", "1", *common[2:],
                 "--cases", "1")
    assert c.returncode == 0, c.stderr
    same = json.loads((tmp_path / "c" / "dataset.json").read_text())
    case1 = [it for s in ("training", "validation", "test") for it in same[s]]
    assert {it["image"] for it in case1} <= {it["image"] for it in items}
    assert _digest(tmp_path / "c")["cases/case_000001/" + Path(case1[0]["image"]).name] == \
        da["cases/case_000001/" + Path(case1[0]["image"]).name]


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    bad = _galacto("synth", "--out", str(tmp_path), "--cases", "1", "--split", "train=1")
    assert bad.returncode == 2
    assert "unknown split name" in bad.stderr and "train" in bad.stderr
    bad = _galacto("synth", "--out", str(tmp_path), "--profile", "siemens")
    assert bad.returncode == 2 and "siemens" in bad.stderr and "hologic" in bad.stderr
    ok = _galacto("synth", "--out", str(tmp_path), "--cases", "1", "--profile", "test")
    assert ok.returncode == 0, ok.stderr
    again = _galacto("synth", "--out", str(tmp_path), "--cases", "1", "--profile", "test")
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_parse_split() -> None:
    assert parse_split("test") == {"test": 1.0}
    assert parse_split("training=0.8,validation=0.2") == {"training": 0.8, "validation": 0.2}
    with pytest.raises(ValueError, match="fraction"):
        parse_split("training=abc")
    with pytest.raises(ValueError, match="sum to 1"):
        SynthOptions(cases=1, seed=0, split={"training": 0.5})
    index = build_index(SynthOptions(cases=1, seed=0), [])
    assert set(index) == {"training", "validation", "test", "meta"}


@pytest.mark.skipif(shutil.which("dciodvfy") is None and os.environ.get("CI") != "true",
                    reason="dicom3tools (dciodvfy) not installed")
def test_generated_files_pass_dciodvfy(tmp_path: Path) -> None:
    """dciodvfy (dicom3tools) reports no error on generated MG files."""
    r = _galacto("synth", "--out", str(tmp_path), "--cases", "2", "--seed", "2",
                 "--profile", "test", "--compressed-share", "0", "--monochrome1-share", "0.5")
    assert r.returncode == 0, r.stderr
    for f in sorted(tmp_path.rglob("*.dcm")):
        out = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True)
        errors = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, f"{f}: {errors}"


def test_many_cases_generate_without_error() -> None:
    """A sweep over many seeds/cases with lesions, multiple lesions and mimics (tiny
    geometry) finds no crash and keeps lesion ids aligned with the ground truth."""
    params = CaseParams(normal_p=0.0, lesions=replace(CaseParams().lesions, multiple_p=0.8))
    for index in range(80):
        res = generate_case(1234, index, TEST, params)
        ids = [les["id"] for les in res.ground_truth["lesions"]]
        assert ids == list(range(len(ids)))
        for item in res.items:
            assert item["lesion_ids"] == ids


# ----------------------------------------------------------------------------- styles


def test_alt_style_differs_from_standard_and_both_are_deterministic() -> None:
    """Same seed, same case: each style reproduces its bytes; the two styles differ."""
    for index in range(2):
        std = generate_case(31, index, TEST, CaseParams(style="standard"))
        std2 = generate_case(31, index, TEST, CaseParams(style="standard"))
        alt = generate_case(31, index, TEST, CaseParams(style="alt"))
        alt2 = generate_case(31, index, TEST, CaseParams(style="alt"))
        for a, b in ((std, std2), (alt, alt2)):
            assert [v.pixels.tobytes() for v in a.views] == [v.pixels.tobytes() for v in b.views]
            assert a.items == b.items and a.ground_truth == b.ground_truth
        assert std.views[0].pixels.tobytes() != alt.views[0].pixels.tobytes()
        assert {it["style"] for it in std.items} == {"standard"} == {std.ground_truth["style"]}
        assert {it["style"] for it in alt.items} == {"alt"} == {alt.ground_truth["style"]}


@pytest.mark.parametrize("style", ["standard", "alt"])
def test_truth_boxes_lie_inside_the_breast(style: str, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """Lesion and air-bubble boxes are centred inside the rendered breast mask, for both
    styles; bubbles occur at a similar rate in both (1-5 per case in ~30 % of cases)."""
    import training.synth.case as case_mod
    from training.synth.render import LOWRES

    renders: list = []
    original = case_mod.render

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = original(*args, **kwargs)
        renders.append(out)
        return out

    monkeypatch.setattr(case_mod, "render", spy)
    params = CaseParams(normal_p=0.2, style=style)  # type: ignore[arg-type]
    checked, with_bubbles = 0, 0
    for index in range(24):
        res = generate_case(77, index, TEST, params)
        with_bubbles += "air_bubble" in res.ground_truth["mimics"]
    for vr in renders:
        mask = vr.breast_mask_low
        assert mask is not None
        boxes = list(vr.lesion_boxes.values()) + [b for k, b in vr.mimic_boxes
                                                  if k == "air_bubble"]
        for x1, y1, x2, y2 in boxes:
            r, c = int((y1 + y2) / 2) // LOWRES, int((x1 + x2) / 2) // LOWRES
            assert mask[min(r, mask.shape[0] - 1), min(c, mask.shape[1] - 1)], (x1, y1, x2, y2)
            checked += 1
    assert checked >= 10
    assert 2 <= with_bubbles <= 16


def test_style_recorded_in_dataset_json(tmp_path: Path) -> None:
    from training.synth.dataset import generate_one

    opts = SynthOptions(cases=1, seed=3, profiles=("test",), style="alt")
    res = generate_one(opts, tmp_path, 0)
    assert [it["style"] for it in res["items"]] == ["alt", "alt"]
    assert all(it["case"]["style"] == "alt" for it in res["items"])
    index = build_index(opts, [res])
    assert index["meta"]["options"]["style"] == "alt"
    assert all(it["style"] == "alt" for it in index["training"])
    with pytest.raises(ValueError, match="style"):
        SynthOptions(cases=1, seed=3, style="fancy")


def test_widened_ranges_occur() -> None:
    """Over many cases the standard family shows every nipple kind (some not protruding),
    both cannula types, air pockets, varied trees, every LUT, structures; alt never has a
    protruding nipple and uses its own cannula and processing."""
    from training.synth.variety import (
        look_rng,
        sample_case_look,
        sample_processing,
        sample_structures,
    )

    looks = [sample_case_look("standard", look_rng(5, i)) for i in range(300)]
    assert {lk.nipple.kind for lk in looks} == {"protruding", "flat", "inverted"}
    assert sum(lk.nipple.kind != "protruding" for lk in looks) >= 60
    assert {lk.cannula.kind for lk in looks} == {"metal", "catheter"}
    assert {lk.cannula.tubing_path for lk in looks} == {"quadratic", "s_curve", "straight"}
    assert 10 <= sum(lk.cannula.air_pocket_mm > 0 for lk in looks) <= 70
    assert {lk.tree.max_generations for lk in looks} == {4, 5, 6, 7}
    assert min(lk.tree.branch_angle_deg[1] for lk in looks) < 45 < max(
        lk.tree.branch_angle_deg[1] for lk in looks)
    assert all(lk.tree.max_branches <= 400 for lk in looks)
    procs = [sample_processing("standard", look_rng(5, i, 0)) for i in range(300)]
    assert {p.lut for p in procs} == {"gamma", "sigmoid", "log", "hist_eq"}
    assert any(p.periph_eq > 0 for p in procs) and any(p.usm_gain == 0 for p in procs)
    structs = [sample_structures("standard", look_rng(5, i, 1)) for i in range(300)]
    assert any(s.skin_fold for s in structs) and any(s.calcifications for s in structs)
    assert any(s.vessels for s in structs) and any(s.ligaments > 20 for s in structs)
    alt = [sample_case_look("alt", look_rng(5, i)) for i in range(50)]
    assert all(lk.nipple.length_mm == 0 and lk.nipple.kind == "flat" for lk in alt)
    assert {lk.cannula.kind for lk in alt} == {"alt_line"}
    assert {sample_processing("alt", look_rng(5, i, 0)).lut for i in range(20)} == {"sigmoid"}
    # the duct trees of generated cases vary in size
    sizes = {generate_case(8, i, TEST).ground_truth["branches"] for i in range(6)}
    assert len(sizes) >= 4


def test_cli_alt_style_same_bytes_any_worker_count(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--cases", "2", "--seed", "19", "--profile", "test", "--style", "alt"]
    ra = _galacto("synth", "--out", str(a), "--workers", "1", *common)
    rb = _galacto("synth", "--out", str(b), "--workers", "2", *common)
    assert ra.returncode == 0, ra.stderr
    assert rb.returncode == 0, rb.stderr
    assert _digest(a) == _digest(b)
    index = json.loads((a / "dataset.json").read_text())
    assert {it["style"] for it in index["training"]} == {"alt"}
    bad = _galacto("synth", "--out", str(tmp_path / "c"), "--style", "other")
    assert bad.returncode == 2 and "style" in bad.stderr
