"""Lesion-detection metrics: hand-made cases with answers worked out by hand."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from training.metrics import (
    DEFAULT_FP_RATES,
    HIT_RULE,
    average_precision,
    box_iou,
    evaluate,
    format_tables,
    froc,
    hits,
    operating_point,
    plot_froc,
    sensitivity_at,
)


def item(image: str, boxes: Sequence[Sequence[float]], *,
         sizes: list[float] | None = None,
         kinds: list[str] | None = None, profile: str = "hologic",
         mimics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A dataset.json item."""
    return {
        "image": image, "boxes": [list(b) for b in boxes],
        "labels": ["filling_defect"] * len(boxes),
        "lesion_kind": kinds if kinds is not None else ["round"] * len(boxes),
        "lesion_size_mm": sizes if sizes is not None else [4.0] * len(boxes),
        "mimics": mimics or [], "profile": profile,
    }


def pred(boxes: Sequence[Sequence[float]], scores: Sequence[float]) -> dict[str, np.ndarray]:
    return {"boxes": np.asarray(boxes, dtype=float).reshape(-1, 4),
            "scores": np.asarray(scores, dtype=float)}


def small_set() -> tuple[list[dict[str, Any]], list[dict[str, np.ndarray]]]:
    """3 images, 4 lesions, 7 predictions.

    By score: 0.9 hits L1, 0.8 FP, 0.7 hits L3, 0.65 FP (normal image), 0.6 FP,
    0.5 duplicate on L3 (neither), 0.3 hits L2; L4 is never hit.
    Curve (sens, FP/image): .9 (1/4, 0) .8 (1/4, 1/3) .7 (2/4, 1/3) .65 (2/4, 2/3)
    .6 (2/4, 1) .5 (2/4, 1) .3 (3/4, 1).
    """
    truths = [
        item("a.dcm", [[10, 10, 20, 20], [50, 50, 60, 60]]),
        item("b.dcm", [[10, 10, 30, 30], [100, 100, 110, 110]]),
        item("c.dcm", []),
    ]
    preds = [
        pred([[10, 10, 20, 20], [200, 200, 210, 210], [50, 50, 60, 60]], [0.9, 0.8, 0.3]),
        pred([[12, 12, 28, 28], [300, 300, 310, 310], [15, 15, 25, 25]], [0.7, 0.6, 0.5]),
        pred([[40, 40, 50, 50]], [0.65]),
    ]
    return truths, preds


def test_hand_computed_froc() -> None:
    truths, preds = small_set()
    r = froc(truths, preds)
    assert (r.n_images, r.n_lesions) == (3, 4)
    np.testing.assert_allclose(r.thresholds, [0.9, 0.8, 0.7, 0.65, 0.6, 0.5, 0.3])
    np.testing.assert_allclose(r.sensitivity, [0.25, 0.25, 0.5, 0.5, 0.5, 0.5, 0.75])
    np.testing.assert_allclose(r.fp_per_image, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1, 1])
    assert r.fp_rates == DEFAULT_FP_RATES
    # rates 1/8, 1/4, 1/2, 1, 2, 4
    np.testing.assert_allclose(r.sensitivity_at_rates, [0.25, 0.25, 0.5, 0.75, 0.75, 0.75])
    np.testing.assert_allclose(r.thresholds_at_rates, [0.9, 0.9, 0.7, 0.3, 0.3, 0.3])
    assert r.cpm == pytest.approx((0.25 + 0.25 + 0.5 + 3 * 0.75) / 6)


def test_operating_point_picks_lowest_threshold_within_budget() -> None:
    truths, preds = small_set()
    assert operating_point(truths, preds, 0.5) == pytest.approx((0.7, 0.5, 1 / 3))
    assert operating_point(truths, preds, 2.0) == pytest.approx((0.3, 0.75, 1.0))
    assert operating_point(truths, preds, 0.0) == pytest.approx((0.9, 0.25, 0.0))
    # between 1/3 and 2/3 FP/image: 0.7 is the lowest threshold that keeps within budget
    assert operating_point(truths, preds, 0.6)[0] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="max_fp_per_image"):
        operating_point(truths, preds, -1)


def test_operating_point_is_infinite_when_top_prediction_breaks_budget() -> None:
    truths = [item("a.dcm", [[0, 0, 10, 10]])]
    preds = [pred([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.4])]
    assert operating_point(truths, preds, 0.5) == (math.inf, 0.0, 0.0)
    assert operating_point(truths, preds, 1.0) == pytest.approx((0.4, 1.0, 1.0))


def test_perfect_predictions() -> None:
    truths = [item("a.dcm", [[10, 10, 20, 20], [40, 40, 44, 46]]), item("b.dcm", []),
              item("c.dcm", [[0, 0, 100, 50]])]
    preds = [pred(t["boxes"], [0.9 - 0.1 * i for i in range(len(t["boxes"]))]) for t in truths]
    r = froc(truths, preds)
    assert r.sensitivity_at_rates == (1.0,) * 6
    assert r.cpm == 1.0
    assert np.all(r.fp_per_image == 0)
    at = sensitivity_at(truths, preds, 0.5)
    assert at.overall.value == 1.0 and at.false_positives.count == 0
    assert average_precision(truths, preds) == pytest.approx({0.1: 1.0, 0.3: 1.0, 0.5: 1.0})


def test_all_predictions_wrong() -> None:
    truths = [item("a.dcm", [[10, 10, 20, 20]]), item("b.dcm", [[10, 10, 20, 20]])]
    preds = [pred([[100, 100, 120, 120], [200, 10, 210, 20]], [0.9, 0.2]),
             pred([[100, 100, 120, 120]], [0.5])]
    r = froc(truths, preds)
    assert r.sensitivity_at_rates == (0.0,) * 6
    assert r.cpm == 0.0
    np.testing.assert_allclose(r.fp_per_image, [0.5, 1.0, 1.5])
    assert average_precision(truths, preds) == {0.1: 0.0, 0.3: 0.0, 0.5: 0.0}


def test_no_predictions_at_all() -> None:
    truths = [item("a.dcm", [[10, 10, 20, 20]])]
    r = froc(truths, [pred([], [])])
    assert r.thresholds.size == 0 and r.sensitivity_at_rates == (0.0,) * 6


def test_box_iou_uses_exclusive_corners() -> None:
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    assert box_iou([[0, 0, 10, 10]], [[10, 0, 20, 10]])[0, 0] == 0.0
    assert box_iou([[0, 0, 0, 10]], [[0, 0, 0, 10]])[0, 0] == 0.0


def test_centre_rule_and_iou_rule() -> None:
    truth = [[0, 0, 10, 10]]
    big = [-10, -10, 20, 20]     # IoU 100/900 < 0.3, centre (5, 5) inside: hit
    shifted = [5, 0, 15, 10]     # centre (10, 5) outside (x2 exclusive), IoU 1/3: hit
    too_far = [6, 0, 16, 10]     # centre (11, 5) outside, IoU 0.25: miss
    tiny = [9, 9, 10, 10]        # centre (9.5, 9.5) inside, IoU 0.01: hit
    assert box_iou([big], truth)[0, 0] < 0.3
    assert hits([big, shifted, too_far, tiny], truth)[:, 0].tolist() == [True, True, False, True]
    for box, found in ((big, True), (shifted, True), (too_far, False), (tiny, True)):
        at = sensitivity_at([item("a.dcm", truth)], [pred([box], [0.8])], 0.5)
        assert at.overall.detected == int(found)
        assert at.false_positives.count == int(not found)


def test_duplicate_hits_are_not_false_positives() -> None:
    truths = [item("a.dcm", [[10, 10, 30, 30]])]
    preds = [pred([[10, 10, 30, 30], [12, 12, 28, 28], [8, 8, 32, 32]], [0.9, 0.8, 0.7])]
    r = froc(truths, preds)
    np.testing.assert_allclose(r.sensitivity, [1, 1, 1])
    np.testing.assert_allclose(r.fp_per_image, [0, 0, 0])
    at = sensitivity_at(truths, preds, 0.0)
    assert (at.overall.detected, at.false_positives.count) == (1, 0)
    # a lesion is found at the score of its best hit, not of a lower duplicate
    assert sensitivity_at(truths, preds, 0.95).overall.detected == 0


def test_normal_images_contribute_false_positives_but_no_lesions() -> None:
    truths = [item("lesion.dcm", [[10, 10, 20, 20]]), item("normal1.dcm", []),
              item("normal2.dcm", [])]
    preds = [pred([[10, 10, 20, 20]], [0.9]), pred([[50, 50, 60, 60]], [0.8]), pred([], [])]
    r = froc(truths, preds)
    assert (r.n_images, r.n_lesions) == (3, 1)
    np.testing.assert_allclose(r.fp_per_image, [0, 1 / 3])
    at = sensitivity_at(truths, preds, 0.5)
    assert at.false_positives.count == 1 and at.false_positives.per_image == pytest.approx(1 / 3)


def test_mimic_false_positive_attribution() -> None:
    mimics = [{"kind": "air_bubble", "box": [100, 100, 110, 110]},
              {"kind": "air_bubble", "box": [300, 300, 304, 304]},
              {"kind": "extravasation", "box": [200, 200, 220, 220]}]
    truths = [item("a.dcm", [[10, 10, 20, 20]], mimics=mimics), item("b.dcm", [])]
    preds = [
        pred([[10, 10, 20, 20],         # the lesion
              [98, 98, 112, 112],       # centre (105, 105) in the first bubble
              [210, 200, 230, 220],     # centre (220, 210) outside, IoU 1/3 with extravasation
              [400, 400, 410, 410],     # on nothing
              [99, 99, 111, 111]],      # second FP on the first bubble, lower score
             [0.9, 0.8, 0.7, 0.6, 0.2]),
        pred([[100, 100, 110, 110]], [0.9]),  # other image has no mimic: plain FP
    ]
    at = sensitivity_at(truths, preds, 0.5)
    assert at.overall.detected == 1
    assert at.false_positives.count == 4 and at.false_positives.per_image == 2.0
    assert (at.fp_on_mimics.count, at.fp_on_mimics.images) == (2, 2)
    assert {k: v.count for k, v in at.fp_on_mimic_kind.items()} == {
        "air_bubble": 1, "extravasation": 1}
    assert at.fp_on_mimic_kind["air_bubble"].per_image == 0.5
    assert {k: (v.detected, v.lesions) for k, v in at.mimics_flagged.items()} == {
        "air_bubble": (1, 2), "extravasation": (1, 1)}
    low = sensitivity_at(truths, preds, 0.1)
    assert low.fp_on_mimic_kind["air_bubble"].count == 2
    assert low.mimics_flagged["air_bubble"].detected == 1


def test_size_kind_and_profile_breakdown() -> None:
    boxes = [[i * 40, 0, i * 40 + 10, 10] for i in range(6)]
    truths = [
        item("a.dcm", boxes[:3], sizes=[2.0, 3.0, 7.0],
             kinds=["round", "lobulated", "irregular"], profile="hologic"),
        item("b.dcm", boxes[3:], sizes=[12.0, 1.0, 4.99],
             kinds=["round", "round", "irregular"], profile="ge"),
    ]
    # find lesions 0 (2 mm), 2 (7 mm), 3 (12 mm), 5 (4.99 mm); miss 1 (3 mm) and 4 (1 mm)
    preds = [pred([boxes[0], boxes[2]], [0.9, 0.6]), pred([boxes[3], boxes[5]], [0.8, 0.7])]
    at = sensitivity_at(truths, preds, 0.5)
    assert list(at.by_size) == ["[1.5, 3)", "[3, 5)", "[5, 10)", "[10, inf)", "< 1.5"]
    assert {k: (v.detected, v.lesions) for k, v in at.by_size.items()} == {
        "[1.5, 3)": (1, 1), "[3, 5)": (1, 2), "[5, 10)": (1, 1), "[10, inf)": (1, 1),
        "< 1.5": (0, 1)}
    assert {k: (v.detected, v.lesions) for k, v in at.by_kind.items()} == {
        "irregular": (2, 2), "lobulated": (0, 1), "round": (2, 3)}
    assert {k: (v.detected, v.lesions) for k, v in at.by_profile.items()} == {
        "ge": (2, 3), "hologic": (2, 3)}
    # configurable bins: every bin is listed, even empty ones
    custom = sensitivity_at(truths, preds, 0.5, size_bins_mm=(1.0, 5.0, 20.0))
    assert {k: (v.detected, v.lesions) for k, v in custom.by_size.items()} == {
        "[1, 5)": (2, 4), "[5, 20)": (2, 2), "[20, inf)": (0, 0)}
    assert math.isnan(custom.by_size["[20, inf)"].value)


def test_fp_per_profile_uses_that_profiles_image_count() -> None:
    truths = [item("a.dcm", [], profile="ge"), item("b.dcm", [], profile="ge"),
              item("c.dcm", [], profile="hologic")]
    preds = [pred([[0, 0, 5, 5]], [0.9]), pred([], []), pred([[0, 0, 5, 5]] * 3, [0.9] * 3)]
    at = sensitivity_at(truths, preds, 0.5)
    assert {k: (v.count, v.images) for k, v in at.fp_by_profile.items()} == {
        "ge": (1, 2), "hologic": (3, 1)}
    assert math.isnan(at.overall.value)


def test_average_precision_hand_value() -> None:
    # TP (IoU 1) at 0.9, FP at 0.8, then at 0.7 a box with IoU 1/3 on the second lesion.
    truths = [item("a.dcm", [[0, 0, 10, 10], [50, 50, 60, 60]])]
    preds = [pred([[0, 0, 10, 10], [200, 200, 210, 210], [55, 50, 65, 60]], [0.9, 0.8, 0.7])]
    ap = average_precision(truths, preds)
    # IoU 0.1 / 0.3: recall 0.5 at precision 1, recall 1 at precision 2/3; 101 recall points
    # 0..0.5 read 1, 0.51..1 read 2/3.  IoU 0.5: recall stops at 0.5, the rest read 0.
    assert ap[0.1] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert ap[0.3] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert ap[0.5] == pytest.approx(51 / 101)


def test_validation_messages_name_the_image() -> None:
    truths = [item("a.dcm", [[0, 0, 10, 10]])]
    with pytest.raises(ValueError, match="1 truths but 2 predictions"):
        froc(truths, [pred([], []), pred([], [])])
    with pytest.raises(ValueError, match=r"a\.dcm: 1 predicted boxes but 2 scores"):
        froc(truths, [pred([[0, 0, 1, 1]], [0.5, 0.4])])
    bad = dict(truths[0], lesion_size_mm=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"a\.dcm: lesion_size_mm has 2 entries for 1 boxes"):
        froc([bad], [pred([], [])])


def test_evaluate_report_is_json_and_renders() -> None:
    truths, preds = small_set()
    truths[0]["mimics"] = [{"kind": "air_bubble", "box": [195, 195, 215, 215]}]
    report = evaluate(truths, preds, threshold=0.7)
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    assert report["hit_rule"] == HIT_RULE
    assert (report["images"], report["normal_images"], report["lesions"],
            report["predictions"]) == (3, 1, 4, 7)
    assert report["froc"]["sensitivity"] == pytest.approx([0.25, 0.25, 0.5, 0.75, 0.75, 0.75])
    assert set(report["ap"]) == {"0.1", "0.3", "0.5"}
    at = report["at_threshold"]
    assert at["overall"] == {"detected": 2, "lesions": 4, "sensitivity": 0.5}
    assert at["false_positives"]["count"] == 1  # the 0.8 FP, which lies on the bubble
    assert at["fp_on_mimic_kind"]["air_bubble"]["count"] == 1
    assert at["mimics_flagged"]["air_bubble"] == {"flagged": 1, "mimics": 1, "fraction": 1.0}

    console = Console(record=True, width=120)
    tables = format_tables(report)
    assert len(tables) == 4
    for t in tables:
        console.print(t)
    out = console.export_text()
    assert "CPM 0.542" in out and "air_bubble" in out and "[1.5, 3)" in out


def test_evaluate_without_lesions_gives_none_not_nan() -> None:
    truths = [item("n.dcm", [])]
    report = evaluate(truths, [pred([[0, 0, 5, 5]], [0.4])], threshold=0.5)
    json.dumps(report, allow_nan=False)
    assert report["froc"]["cpm"] is None and report["ap"]["0.3"] is None
    assert report["at_threshold"]["overall"]["sensitivity"] is None
    format_tables(report)


def test_plot_froc_writes_png(tmp_path: Path) -> None:
    truths, preds = small_set()
    one = plot_froc(froc(truths, preds), tmp_path / "one.png")
    worse = [pred([], []), *preds[1:]]
    two = plot_froc({"fp32": froc(truths, preds), "int8": froc(truths, worse)},
                    tmp_path / "sub" / "two.png", title="fp32 vs int8")
    for path in (one, two):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 5000
