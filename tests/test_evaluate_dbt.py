"""DBT evaluation and DBT slices for training: the frame rule, the clock-face accuracy, the
focus rule of training frames, and ``galacto evaluate`` end to end on a tiny synthetic volume
pair (the ``test`` field at 0.8 mm pixels and 3 mm planes, so it takes seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.pipeline.intake.volume import read_volume
from serving.pipeline.preprocess import PreprocessConfig
from training.data import build_cache, load_cached, load_split
from training.data_dbt import (
    expand_dbt_items,
    focus_halfwidth,
    frame_item,
    in_focus,
    read_frame,
    release_volumes,
    sample_frames,
    usable_frames,
)
from training.evaluate_dbt import clock_distance_h, clock_face_report, evaluate_volumes
from training.metrics import (
    FRAME_TOLERANCE,
    VOLUME_FP_RATES,
    best_hit_index,
    frame_hits,
    match_volumes,
)
from training.metrics.froc import froc_of

BOX = [100.0, 100.0, 120.0, 120.0]


def volume(boxes: list[list[float]], ranges: list[list[int]], *, frames: int = 40,
           view: str = "CC", hours: list[int] | None = None,
           mimics: list[dict[str, Any]] | None = None, image: str = "v.dcm") -> dict[str, Any]:
    """A DBT dataset.json item."""
    n = len(boxes)
    truth_hours: list[int | None] = list(hours) if hours is not None else [None] * n
    return {"image": image, "boxes": boxes, "labels": ["filling_defect"] * n,
            "lesion_ids": list(range(n)), "lesion_kind": ["round"] * n,
            "lesion_size_mm": [4.0] * n, "frames": frames, "frame_ranges": ranges,
            "best_frames": [(a + b) // 2 for a, b in ranges], "view": view,
            "mimics": mimics or [], "profile": "hologic",
            "lesions": [{"id": j, "clock_hour": truth_hours[j]} for j in range(n)]}


def cands(boxes: list[list[float]], scores: list[float], frames: list[int],
          hours: list[int | None] | None = None) -> dict[str, Any]:
    """A DBT prediction: boxes, scores, 1-based best frames, single-view clock hours."""
    return {"boxes": np.asarray(boxes, float).reshape(-1, 4), "scores": np.asarray(scores),
            "best_frames": np.asarray(frames, np.int64),
            "clock_hours": hours if hours is not None else [None] * len(boxes)}


# --------------------------------------------------------------------------- frame rule


def test_frame_rule_hits_within_two_frames_of_the_range_only() -> None:
    """Same box, best frames around the range [10, 12]: 8..14 hit, 7 and 15 miss."""
    frames = [7, 8, 10, 12, 14, 15]
    hit = frame_hits([BOX] * len(frames), frames, [BOX], [[10, 12]])
    assert hit[:, 0].tolist() == [False, True, True, True, True, False]
    assert FRAME_TOLERANCE == 2
    # tolerance 0: only the range itself
    assert frame_hits([BOX] * 3, [9, 10, 13], [BOX], [[10, 12]], 0)[:, 0].tolist() == [
        False, True, False]
    # the right frame but the wrong place is no hit
    assert not frame_hits([[300, 300, 320, 320]], [11], [BOX], [[10, 12]]).any()
    with pytest.raises(ValueError, match="frames"):
        frame_hits([BOX], [1, 2], [BOX], [[1, 2]])


def test_match_volumes_counts_out_of_depth_candidates_as_false_positives() -> None:
    """Volume a: 0.9 on the right spot 5 frames too deep (FP), 0.6 in depth (hit).
    Volume b (normal): one FP. Volume c: a bubble at frames 3-5; a candidate on it at
    frame 4 is an FP on the bubble, one at frame 20 an FP elsewhere."""
    bubble = {"kind": "air_bubble", "box": [10, 10, 20, 20], "frame_range": [3, 5],
              "best_frame": 4}
    truths = [volume([BOX], [[10, 12]]), volume([], [], image="b.dcm"),
              volume([], [], image="c.dcm", mimics=[bubble])]
    preds = [cands([BOX, BOX], [0.9, 0.6], [17, 11]), cands([BOX], [0.5], [3]),
             cands([[10, 10, 20, 20]] * 2, [0.8, 0.7], [4, 20])]
    m = match_volumes(truths, preds)
    assert m.n_images == 3
    assert m.lesion_score.tolist() == [0.6]
    assert sorted(m.fp_score.tolist()) == [0.5, 0.7, 0.8, 0.9]
    on = {s: k for s, k in zip(m.fp_score.tolist(), m.fp_mimic_kinds, strict=True)}
    assert on[0.8] == frozenset({"air_bubble"}) and on[0.7] == frozenset()
    fr = froc_of(m, VOLUME_FP_RATES)
    # at 1 FP/volume (3 FPs allowed) the threshold 0.6 finds the lesion with 3 FPs
    assert fr.read(1.0)[1] == 1.0
    assert fr.read(0.5)[1] == 0.0
    assert len(fr.sensitivity_at_rates) == 7 and VOLUME_FP_RATES[-1] == 8.0
    report = evaluate_volumes(truths, preds, threshold=0.65)
    assert report["volumes"] == 3 and report["lesions"] == 1
    assert report["sensitivity_at_1_fp_per_volume"] == 1.0
    assert report["at_threshold"]["overall"]["detected"] == 0
    assert report["mimics"]["air_bubbles_flagged"] == {"flagged": 1, "bubbles": 1,
                                                       "fraction": 1.0}
    assert report["mimics"]["fp_per_volume_by_mimic_kind"]["air_bubble"]["count"] == 1
    json.dumps(report, allow_nan=False)


def test_best_hit_index_takes_the_highest_scoring_hit() -> None:
    hit = np.array([[True, False], [True, False], [False, False]])
    assert best_hit_index([0.2, 0.7, 0.9], hit).tolist() == [1, -1]
    assert best_hit_index([], np.zeros((0, 2), bool)).tolist() == [-1, -1]


def test_missing_depth_truth_is_refused() -> None:
    item = volume([BOX], [[10, 12]])
    del item["frame_ranges"]
    with pytest.raises(ValueError, match="frame_ranges"):
        match_volumes([item], [cands([BOX], [0.5], [11])])
    with pytest.raises(ValueError, match="best_frames"):
        match_volumes([volume([BOX], [[10, 12]])], [{"boxes": [BOX], "scores": [0.5]}])
    with pytest.raises(ValueError, match="frame range"):
        match_volumes([volume([BOX], [[12, 10]])], [cands([BOX], [0.5], [11])])


# --------------------------------------------------------------------------- clock face


def test_clock_distance_is_circular() -> None:
    assert clock_distance_h(12, 1) == 1 and clock_distance_h(1, 12) == 1
    assert clock_distance_h(11, 1) == 2 and clock_distance_h(3, 9) == 6
    assert clock_distance_h(6, 6) == 0 and clock_distance_h(12, 12) == 0


def test_clock_face_accuracy_per_view_family() -> None:
    """CC: truth 12, candidate 1 (within) and truth 3, candidate 5 (not); MLO: truth 9,
    candidate without a clock hour (wrong, counted apart), and a lesion never hit (left out).
    """
    truths = [volume([BOX, [300, 300, 320, 320]], [[10, 12], [20, 22]], hours=[12, 3]),
              volume([BOX, [300, 300, 320, 320]], [[10, 12], [20, 22]], view="MLO",
                     hours=[9, 6], image="m.dcm")]
    preds = [cands([BOX, [300, 300, 320, 320], BOX], [0.9, 0.4, 0.3], [11, 21, 12],
                   hours=[1, 5, 12]),
             cands([BOX], [0.8], [10], hours=[None])]
    rep = clock_face_report(truths, preds)
    raw = ("lesions_hit", "within", "no_clock_hour", "accuracy")
    assert {k: rep["CC"][k] for k in raw} == {"lesions_hit": 2, "within": 1,
                                              "no_clock_hour": 0, "accuracy": 0.5}
    assert {k: rep["ML/MLO"][k] for k in raw} == {"lesions_hit": 1, "within": 0,
                                                  "no_clock_hour": 1, "accuracy": 0.0}
    assert rep["all"]["lesions_hit"] == 3 and rep["all"]["within"] == 1
    # no truth region given: every lesion is off-axis, and the stated location is the hour
    assert rep["CC"]["off_axis"] == rep["CC"]["stated"] == {
        "lesions_hit": 2, "right": 1, "accuracy": 0.5}
    assert rep["CC"]["central"] == {"lesions_hit": 0, "right": 0, "accuracy": None}
    # at a threshold of 0.5 the CC lesion found at 0.4 no longer counts
    at = clock_face_report(truths, preds, threshold=0.5)
    assert {k: at["CC"][k] for k in raw} == {"lesions_hit": 1, "within": 1,
                                             "no_clock_hour": 0, "accuracy": 1.0}
    # the highest-scoring hit is the one compared (0.9 says 1 o'clock, not 0.3's 12)
    truths[0]["lesions"][0]["clock_hour"] = 11
    assert clock_face_report(truths, preds)["CC"]["within"] == 0
    assert rep["threshold"] is None


def test_retroareolar_and_central_lesions_are_judged_by_the_region_stated() -> None:
    """BI-RADS names a lesion on the nipple axis by its region, not a clock face: a truth
    ``central`` lesion is right when the candidate's region is retroareolar or central,
    whatever its clock hour; an off-axis lesion is judged by its clock hour alone."""
    truths = [volume([BOX, [300, 300, 320, 320], [500, 500, 520, 520]],
                     [[10, 12], [20, 22], [30, 32]], hours=[2, 9, 4])]
    for les, region in zip(truths[0]["lesions"], ["central", "retroareolar", "UOQ"],
                           strict=True):
        les["quadrant"] = region
    pred = cands([BOX, [300, 300, 320, 320], [500, 500, 520, 520]], [0.9, 0.8, 0.7],
                 [11, 21, 31], hours=[7, 9, 4])
    pred["regions"] = ["retroareolar", "LIQ", "UOQ"]
    rep = clock_face_report(truths, [pred])["CC"]
    assert (rep["lesions_hit"], rep["within"]) == (3, 2)  # every lesion's hour: 7 vs 2 wrong
    assert rep["central"] == {"lesions_hit": 2, "right": 1, "accuracy": 0.5}
    assert rep["off_axis"] == {"lesions_hit": 1, "right": 1, "accuracy": 1.0}
    assert rep["stated"] == {"lesions_hit": 3, "right": 2, "accuracy": 2 / 3}


# --------------------------------------------------------------------------- DBT slices


def test_focus_rule_puts_boxes_only_near_the_best_frame() -> None:
    """A 12-frame lesion (range 15..26, best 20): boxes on 17..23 (+/- 3); a 3-frame one
    (30..32, best 31): on all three; frames where a lesion is blurred are never drawn."""
    item = volume([BOX, [300, 300, 320, 320]], [[15, 26], [30, 32]], frames=50)
    item["best_frames"] = [20, 31]
    item["mimics"] = [{"kind": "air_bubble", "box": [5, 5, 9, 9], "frame_range": [40, 44],
                       "best_frame": 42}]
    assert focus_halfwidth(15, 26) == 3 and focus_halfwidth(30, 32) == 1
    assert in_focus(23, 15, 26, 20) and not in_focus(24, 15, 26, 20)
    on = {f: frame_item(item, f)["boxes"] for f in range(1, 51)}
    assert [f for f, b in on.items() if BOX in b] == list(range(17, 24))
    assert [f for f, b in on.items() if [300, 300, 320, 320] in b] == [30, 31, 32]
    f20 = frame_item(item, 20)
    assert f20["_frame"] == 19 and f20["frame_number"] == 20
    assert f20["lesion_size_mm"] == [4.0] and f20["lesion_ids"] == [0]
    assert "frames" not in f20 and "frame_ranges" not in f20
    assert [len(frame_item(item, f)["mimics"]) for f in (39, 41, 42, 43, 45)] == [0, 1, 1, 1, 0]
    with_lesion, clean = usable_frames(item)
    assert with_lesion == [*range(17, 24), 30, 31, 32]
    assert 13 not in clean and 24 not in clean and 29 not in clean and 34 not in clean
    assert clean == [*range(1, 13), *range(35, 51)]


def test_frame_sampling_is_balanced_and_repeatable() -> None:
    item = volume([BOX], [[15, 26]], frames=50)
    a = sample_frames(item, 4, seed=1, epoch=0)
    assert a == sample_frames(item, 4, seed=1, epoch=0) and len(a) == 4
    assert sum(1 for f in a if 17 <= f <= 23) == 2
    assert any(sample_frames(item, 4, seed=1, epoch=e) != a for e in range(1, 6))
    normal = volume([], [], frames=10)
    assert len(sample_frames(normal, 4)) == 4 and sample_frames(normal, 0) == []
    assert len(sample_frames(normal, 30)) == 10
    flat = {"image": "x.dcm", "boxes": [BOX], "labels": ["filling_defect"]}
    out = expand_dbt_items([flat, item, normal], 3)
    assert out[0] is flat and len(out) == 7
    assert all(o.get("_frame") is not None for o in out[1:])


# --------------------------------------------------------------------------- end to end


def _galacto(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def tiny_dbt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dbt") / "set"
    r = _galacto("synth", "--dbt", "--out", str(out), "--cases", "1", "--seed", "5",
                 "--profile", "test", "--dbt-spacing-mm", "0.8", "--dbt-slice-mm", "3",
                 "--arc-deg", "30", "--projections", "9", "--workers", "1",
                 "--normal-share", "0", "--split", "test")
    assert r.returncode == 0, r.stderr
    return out


def test_galacto_evaluate_writes_the_dbt_report(tiny_dbt: Path, tmp_path: Path) -> None:
    model = Path("models") / Path("models/DEFAULT").read_text().strip()
    out = tmp_path / "report.json"
    r = _galacto("evaluate", "--model", str(model), "--data", str(tiny_dbt), "--out", str(out),
                 "--bootstrap", "50", "--dbt-slab", "3", "--dbt-stride", "2")
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["kind"] == "dbt" and report["volumes"] == 2
    assert report["dbt"]["slab"] == 3 and report["dbt"]["stride"] == 2
    assert report["froc"]["fp_rates"] == list(VOLUME_FP_RATES)
    assert len(report["froc"]["ci"]["sensitivity"]) == 7
    assert "sensitivity_at_1_fp_per_volume" in report and "cpm" in report["froc"]
    assert {"air_bubbles_flagged", "fp_per_volume_by_mimic_kind"} <= set(report["mimics"])
    for key in ("all_hits", "at_threshold"):
        assert {"CC", "ML/MLO", "all"} <= set(report["clock_face"][key])
    assert report["timing"]["seconds_per_volume"]["mean"] > 0
    assert len(report["per_volume"]) == 2
    assert all(v["detector_runs"] >= 1 for v in report["per_volume"])
    assert "DBT FROC" in r.stdout and "clock face" in r.stdout
    bad = _galacto("evaluate", "--model", str(model), "--data", str(tiny_dbt),
                   "--dbt-slab", "0", "--bootstrap", "0")
    assert bad.returncode != 0 and "--dbt-slab" in bad.stderr


def test_dbt_frames_load_as_training_images(tiny_dbt: Path, tmp_path: Path) -> None:
    """Frame items through the 2D cache: lesion boxes exactly on the in-focus frames."""
    volumes = load_split(tiny_dbt, "test")
    assert all("frames" in it for it in volumes)
    items = load_split(tiny_dbt, "test", dbt_frames_per_volume=4, seed=0)
    assert len(items) == 8
    paths = build_cache(items, PreprocessConfig(), tmp_path / "cache")
    assert len(set(paths)) == 8
    for p, it in zip(paths, items, strict=True):
        img = load_cached(p, it)
        src = next(v for v in volumes if v["image"] == it["image"])
        focused = [j for j, (r, b) in enumerate(zip(src["frame_ranges"], src["best_frames"],
                                                    strict=True))
                   if in_focus(it["frame_number"], r[0], r[1], b)]
        assert len(img.boxes) == len(focused) == len(it["boxes"])
        assert img.array.ndim == 2 and img.array.shape[0] > 0
    assert any(len(it["boxes"]) for it in items)
    assert any(not it["boxes"] for it in items)


def test_dbt_slab_frames_are_the_mean_serving_feeds_the_detector(tiny_dbt: Path,
                                                                  tmp_path: Path) -> None:
    """``data.dbt_slab``: a frame item is the mean of the slab around it, cut at the ends as
    serving cuts it, and cached apart from the single frame."""
    single = load_split(tiny_dbt, "test", dbt_frames_per_volume=4, seed=0)
    slabs = load_split(tiny_dbt, "test", dbt_frames_per_volume=4, seed=0, dbt_slab=3)
    assert [it["_frame"] for it in slabs] == [it["_frame"] for it in single]
    assert all(it["_slab"] == 3 for it in slabs) and all("_slab" not in it for it in single)
    assert [it["boxes"] for it in slabs] == [it["boxes"] for it in single]
    for it in slabs:
        volume = read_volume(tiny_dbt / it["image"])
        c = it["_frame"]
        lo, hi = max(c - 1, 0), min(c + 2, len(volume))
        want = np.mean([volume.frame(i).pixels.astype(np.float64) for i in range(lo, hi)],
                       axis=0)
        got = read_frame(it)
        assert np.allclose(got.pixels, want, atol=1e-3)
    release_volumes()
    a = build_cache(single[:1], PreprocessConfig(), tmp_path / "cache")
    b = build_cache(slabs[:1], PreprocessConfig(), tmp_path / "cache")
    assert a != b
    with pytest.raises(ValueError, match="slab"):
        load_split(tiny_dbt, "test", dbt_frames_per_volume=4, dbt_slab=0)


def test_export_fits_2d_points_on_2d_images_only(tiny_dbt: Path,
                                                  tmp_path_factory: pytest.TempPathFactory
                                                  ) -> None:
    """A config validating on DBT frames lists a DBT folder among its validation folders:
    export's 2D operating points leave its volumes out (they get theirs from --dbt-val), and
    a folder set with no 2D image is refused by name."""
    from serving.errors import CommandError
    from training.export import planar_validation_items

    flat = tmp_path_factory.mktemp("flat") / "set"
    r = _galacto("synth", "--out", str(flat), "--cases", "1", "--seed", "5", "--profile",
                 "test", "--workers", "1", "--split", "test")
    assert r.returncode == 0, r.stderr
    items, used = planar_validation_items([flat, tiny_dbt], "test", 10)
    assert used == [flat] and len(items) == 2
    assert all("frames" not in it for it in items)
    items, used = planar_validation_items([flat, tiny_dbt], "test", 1)
    assert len(items) == 1
    with pytest.raises(CommandError, match="no 2D test image"):
        planar_validation_items([tiny_dbt], "test", 10)
