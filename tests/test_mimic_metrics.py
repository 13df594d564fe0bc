"""Mimic and operating-point measures: hand-made cases with answers worked out by hand."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from serving.pipeline.model import OperatingPoint
from training.metrics import evaluate, sensitivity_at
from training.mimic_metrics import (
    MIMIC_RULES,
    check_operating_points,
    distance_to_nipple_mm,
    format_mimic_table,
    mimic_breakdown,
    mimic_report,
    nested_pairs,
)

BUBBLE_A = [100, 100, 110, 110]
BUBBLE_B = [200, 200, 210, 210]
BUBBLE_C = [300, 300, 310, 310]
BUBBLE_D = [12, 12, 18, 18]        # inside the lesion
CYST = [400, 400, 420, 420]


def item(image: str, boxes: Sequence[Sequence[float]], *,
         mimics: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """A dataset.json item."""
    return {"image": image, "boxes": [list(b) for b in boxes],
            "labels": ["filling_defect"] * len(boxes), "mimics": mimics or [],
            "profile": "hologic", **extra}


def pred(boxes: Sequence[Sequence[float]], scores: Sequence[float], **extra: Any
         ) -> dict[str, Any]:
    return {"boxes": np.asarray(boxes, dtype=float).reshape(-1, 4),
            "scores": np.asarray(scores, dtype=float), **extra}


def bubble_set() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Image a: one lesion, bubbles A-D (D inside the lesion), one cyst; image b: normal.

    Findings (score): the lesion, also hitting bubble D (0.9, a true positive); on bubble A
    (0.8) and nested inside that one, again on A (0.7); on bubble B (0.3); on the cyst (0.6);
    on nothing (0.55). At 0.5: 4 FPs (2 on bubbles, 1 cyst, 1 other) over 2 images; bubbles
    flagged A and D (2 of 4); one nested pair.
    """
    mimics = [{"kind": "air_bubble", "box": b} for b in (BUBBLE_A, BUBBLE_B, BUBBLE_C, BUBBLE_D)]
    mimics.append({"kind": "cyst", "box": CYST})
    truths = [item("a.dcm", [[10, 10, 20, 20]], mimics=mimics), item("b.dcm", [])]
    preds = [pred([[10, 10, 20, 20], BUBBLE_A, [101, 101, 109, 109], BUBBLE_B, CYST,
                   [600, 600, 610, 610]], [0.9, 0.8, 0.7, 0.3, 0.6, 0.55]),
             pred([], [])]
    return truths, preds


def test_bubbles_flagged_counts_each_bubble_once_and_any_finding() -> None:
    truths, preds = bubble_set()
    b = mimic_breakdown(truths, preds, 0.5)
    assert (b.air_bubbles_flagged.hit, b.air_bubbles_flagged.total) == (2, 4)
    assert b.air_bubbles_flagged.value == 0.5
    # bubble B's finding scores 0.3
    low = mimic_breakdown(truths, preds, 0.2).air_bubbles_flagged
    assert (low.hit, low.total) == (3, 4)
    # training.metrics counts only false positives on a mimic: bubble D (under the true
    # positive) is not flagged there
    assert sensitivity_at(truths, preds, 0.5).mimics_flagged["air_bubble"].detected == 1


def test_fp_by_mimic_kind_and_other() -> None:
    truths, preds = bubble_set()
    b = mimic_breakdown(truths, preds, 0.5)
    assert (b.sensitivity.detected, b.sensitivity.lesions) == (1, 1)
    assert (b.false_positives.count, b.false_positives.images) == (4, 2)
    assert {k: v.count for k, v in b.fp_by_mimic_kind.items()} == {
        "air_bubble": 2, "cyst": 1, "extravasation": 0, "other": 1}
    assert {k: v.per_image for k, v in b.fp_by_mimic_kind.items()} == {
        "air_bubble": 1.0, "cyst": 0.5, "extravasation": 0.0, "other": 0.5}


def test_fp_on_two_kinds_counts_under_each() -> None:
    mimics = [{"kind": "air_bubble", "box": [0, 0, 10, 10]},
              {"kind": "extravasation", "box": [0, 0, 12, 12]},
              {"kind": "fibrosis", "box": [50, 50, 60, 60]}]
    b = mimic_breakdown([item("a.dcm", [], mimics=mimics)],
                        [pred([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.9])], 0.5)
    assert {k: v.count for k, v in b.fp_by_mimic_kind.items()} == {
        "air_bubble": 1, "cyst": 0, "extravasation": 1, "fibrosis": 1, "other": 0}
    assert b.false_positives.count == 2


def test_no_bubbles_is_nan_and_none_in_json() -> None:
    truths = [item("a.dcm", [[10, 10, 20, 20]])]
    preds = [pred([[10, 10, 20, 20]], [0.9])]
    b = mimic_breakdown(truths, preds, 0.5)
    assert (b.air_bubbles_flagged.hit, b.air_bubbles_flagged.total) == (0, 0)
    assert math.isnan(b.air_bubbles_flagged.value)
    r = mimic_report(truths, preds, 0.5)
    json.dumps(r, allow_nan=False)
    assert r["all"]["air_bubbles_flagged"] == {"flagged": 0, "bubbles": 0, "fraction": None}


def test_nested_pairs_rule() -> None:
    assert nested_pairs([[0, 0, 10, 10], [0, 0, 10, 10]]) == 1           # identical
    assert nested_pairs([[0, 0, 10, 10], [1, 1, 9, 9]]) == 1             # inside
    assert nested_pairs([[0, 0, 10, 10], [2, 0, 12, 10]]) == 1           # exactly 80 %
    assert nested_pairs([[0, 0, 10, 10], [3, 0, 13, 10]]) == 0           # 70 %
    # a small box inside a big one nests although their IoU is only 0.2; half inside does not
    assert nested_pairs([[0, 0, 10, 10], [8, 0, 10, 10]]) == 1
    assert nested_pairs([[0, 0, 10, 10], [9, 0, 11, 10]]) == 0
    assert nested_pairs([[0, 0, 30, 30], [1, 1, 20, 20], [2, 2, 10, 10]]) == 3
    assert nested_pairs([[0, 0, 10, 10], [5, 5, 5, 9]]) == 0             # zero area
    assert nested_pairs(np.zeros((0, 4))) == 0 and nested_pairs([[0, 0, 1, 1]]) == 0


def test_nested_pairs_only_among_reported_findings_of_one_image() -> None:
    truths, preds = bubble_set()
    assert mimic_breakdown(truths, preds, 0.5).nested_pairs == 1
    assert mimic_breakdown(truths, preds, 0.75).nested_pairs == 0   # 0.7 not reported
    # the same box in two images is no pair
    two = [pred([[0, 0, 10, 10]], [0.9]), pred([[0, 0, 10, 10]], [0.9])]
    assert mimic_breakdown([item("a", []), item("b", [])], two, 0.5).nested_pairs == 0


def nipple_case(truth_spacing: Any, pred_spacing: Any = None
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Nipple at x=100, y=50; spacing 0.1 mm per row, 0.2 mm per column.

    FP centres and distances: (140, 50) 8 mm, (160, 50) 12 mm, (100, 140) 9 mm,
    (100, 160) 11 mm, (130, 130) exactly 10 mm. The true positive at the nipple is no FP.
    """
    extra: dict[str, Any] = {"nipple_xy": [100, 50]}
    if truth_spacing is not None:
        extra["spacing_mm"] = truth_spacing
    truths = [item("a.dcm", [[95, 45, 105, 55]], **extra), item("b.dcm", [])]
    centres = [(140, 50), (160, 50), (100, 140), (100, 160), (130, 130)]
    boxes = [[95, 45, 105, 55]] + [[x - 2, y - 2, x + 2, y + 2] for x, y in centres]
    pkw = {} if pred_spacing is None else {"spacing_mm": pred_spacing}
    preds = [pred(boxes, [0.9] * 6, **pkw), pred([[100, 50, 104, 54]], [0.9])]
    return truths, preds


def test_distance_to_nipple_uses_row_and_column_spacing() -> None:
    boxes = [[138, 48, 142, 52], [158, 48, 162, 52], [98, 138, 102, 142], [98, 158, 102, 162],
             [128, 128, 132, 132]]
    d = distance_to_nipple_mm(boxes, [100, 50], [0.1, 0.2])
    np.testing.assert_allclose(d, [8, 12, 9, 11, 10])
    np.testing.assert_allclose(distance_to_nipple_mm(boxes[:1], [100, 50], 0.2), [8])
    with pytest.raises(ValueError, match="spacing_mm"):
        distance_to_nipple_mm(boxes, [100, 50], [0.1, 0.0])


def test_fp_near_nipple_with_anisotropic_spacing() -> None:
    truths, preds = nipple_case([0.1, 0.2])
    b = mimic_breakdown(truths, preds, 0.5)
    assert b.false_positives.count == 6           # 5 on image a, 1 on image b
    # 8, 9 and 10 mm are within 10 mm; image b has no nipple and is left out
    assert (b.fp_near_nipple.count, b.fp_near_nipple.images, b.images_unassessed) == (3, 1, 1)
    # swapped spacing would change the answer: (140,50) 4 mm, (160,50) 6 mm, (100,140) 18 mm...
    swapped = mimic_breakdown(*nipple_case([0.2, 0.1]), 0.5)
    assert swapped.fp_near_nipple.count == 2
    # spacing from the prediction when the truth has none; truth wins when both have it
    assert mimic_breakdown(*nipple_case(None, [0.1, 0.2]), 0.5).fp_near_nipple.count == 3
    assert mimic_breakdown(*nipple_case([0.1, 0.2], [0.2, 0.1]), 0.5).fp_near_nipple.count == 3
    none = mimic_breakdown(*nipple_case(None), 0.5)
    assert (none.fp_near_nipple.images, none.images_unassessed) == (0, 2)
    assert math.isnan(none.fp_near_nipple.per_image)


def test_operating_points_ratio_and_zero_promise() -> None:
    truths, preds = bubble_set()
    ops = {
        # card object with fp_per_image absent: the promise is max_fp_per_image
        "balanced": OperatingPoint("balanced", 0.5, 0.5, 0.9, None),
        "strict": {"score_threshold": 0.85, "fp_per_image": 0.0, "max_fp_per_image": 0.125},
        "broken": {"score_threshold": 0.75, "fp_per_image": 0, "max_fp_per_image": 0.125},
        "sensitive": {"score_threshold": 0.2, "fp_per_image": 2.5, "max_fp_per_image": 2.0},
    }
    pts = check_operating_points(truths, preds, ops)
    bal = pts["balanced"]
    assert (bal.promised_fp_per_image, bal.promised_key) == (0.5, "max_fp_per_image")
    assert bal.false_positives.per_image == 2.0 and bal.fp_ratio == 4.0
    assert bal.fp_excess_per_image == 1.5 and not bal.within_promise
    assert (bal.sensitivity.detected, bal.sensitivity.lesions) == (1, 1)
    assert (bal.air_bubbles_flagged.hit, bal.nested_pairs) == (2, 1)
    # promise 0 kept: 0/0 is undefined, but within promise
    strict = pts["strict"]
    assert strict.promised_key == "fp_per_image" and strict.false_positives.count == 0
    assert math.isnan(strict.fp_ratio) and strict.within_promise
    # promise 0 broken: 1 FP (bubble A at 0.8) over 2 images
    broken = pts["broken"]
    assert broken.fp_ratio == math.inf and not broken.within_promise
    assert broken.fp_excess_per_image == 0.5
    # 5 FPs at 0.2 (bubble B's too) over 2 images against 2.5 promised
    assert pts["sensitive"].fp_ratio == pytest.approx(1.0) and pts["sensitive"].within_promise
    r = mimic_report(truths, preds, 0.5, ops)["all"]["operating_points"]
    json.dumps(r, allow_nan=False)
    assert r["strict"]["fp_ratio"] is None and r["strict"]["within_promise"] is True
    assert r["broken"]["fp_ratio"] is None and r["broken"]["fp_excess_per_image"] == 0.5
    assert r["balanced"]["fp_ratio"] == 4.0 and r["balanced"]["fp_per_image"] == 2.0
    with pytest.raises(ValueError, match="fp_per_image or max_fp_per_image"):
        check_operating_points(truths, preds, {"x": {"score_threshold": 0.5}})


def with_calls(preds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bubble set plus model mimic calls on image a (image b: old format, no keys)."""
    calls = {"mimic_boxes": np.asarray([BUBBLE_A, BUBBLE_B, [201, 201, 209, 209], BUBBLE_C,
                                        CYST], dtype=float),
             "mimic_scores": np.asarray([0.9, 0.4, 0.6, 0.9, 0.9]),
             "mimic_labels": np.asarray(["air_bubble", "air_bubble", "air_bubble", "cyst",
                                         "air_bubble"])}
    return [dict(preds[0], **calls), preds[1]]


def test_mimics_recognised() -> None:
    truths, preds = bubble_set()
    b = mimic_breakdown(truths, with_calls(preds), 0.5)
    assert b.mimics_recognised is not None
    # A and B (two calls, counted once) as bubbles; C is called a cyst (wrong label), the cyst
    # is called a bubble (wrong label), D is not called
    assert {k: (v.hit, v.total) for k, v in b.mimics_recognised.items()} == {
        "air_bubble": (2, 4), "cyst": (0, 1)}
    high = mimic_breakdown(truths, with_calls(preds), 0.5, mimic_threshold=0.7)
    assert high.mimics_recognised is not None
    assert high.mimics_recognised["air_bubble"].hit == 1  # only A's call scores >= 0.7
    # old format everywhere: not measurable
    assert mimic_breakdown(truths, preds, 0.5).mimics_recognised is None
    bad = [dict(preds[0], mimic_boxes=[BUBBLE_A], mimic_labels=[]), preds[1]]
    with pytest.raises(ValueError, match=r"a\.dcm: 1 mimic_boxes but 0 mimic_labels"):
        mimic_breakdown(truths, bad, 0.5)


def test_by_style_breakdown() -> None:
    truths, preds = bubble_set()
    truths[0]["style"], truths[1]["style"] = "standard", "alt"
    extra_truth = item("c.dcm", [], mimics=[{"kind": "air_bubble", "box": BUBBLE_A}],
                       style="alt")
    truths.append(extra_truth)
    preds.append(pred([BUBBLE_A], [0.6]))
    ops = {"balanced": {"score_threshold": 0.5, "fp_per_image": 0.5}}
    r = mimic_report(truths, preds, 0.5, ops)
    assert list(r["by_style"]) == ["alt", "standard"]
    std, alt, pooled = r["by_style"]["standard"], r["by_style"]["alt"], r["all"]
    assert (std["images"], alt["images"], pooled["images"]) == (1, 2, 3)
    assert std["false_positives"]["count"] == 4 and alt["false_positives"]["count"] == 1
    assert alt["fp_by_mimic_kind"]["air_bubble"] == {"count": 1, "images": 2, "per_image": 0.5}
    assert std["air_bubbles_flagged"] == {"flagged": 2, "bubbles": 4, "fraction": 0.5}
    assert alt["air_bubbles_flagged"] == {"flagged": 1, "bubbles": 1, "fraction": 1.0}
    assert pooled["air_bubbles_flagged"]["flagged"] == 3
    assert alt["sensitivity"]["sensitivity"] is None  # no lesion in the alt images
    assert std["operating_points"]["balanced"]["fp_ratio"] == 8.0   # 4 FP / 1 image / 0.5
    assert alt["operating_points"]["balanced"]["fp_ratio"] == 1.0   # 1 FP / 2 images / 0.5
    assert mimic_breakdown(truths, preds, 0.5, style="alt").false_positives.count == 1
    # an item without style, in a set that has styles, is "unknown"; no styles at all: empty
    del truths[2]["style"]
    assert list(mimic_report(truths, preds, 0.5)["by_style"]) == ["alt", "standard", "unknown"]
    plain, plain_preds = bubble_set()
    assert mimic_report(plain, plain_preds, 0.5)["by_style"] == {}


def test_report_is_json_documented_and_renders() -> None:
    truths, preds = bubble_set()
    truths[0].update(nipple_xy=[20, 20], spacing_mm=0.1, style="standard")
    truths[1].update(style="alt")
    ops = {"balanced": OperatingPoint("balanced", 0.5, 0.5, 0.9, 0.48),
           "high_sensitivity": OperatingPoint("high_sensitivity", 0.25, 2.0, 0.95, 1.9)}
    r = mimic_report(truths, with_calls(preds), 0.5, ops)
    assert json.loads(json.dumps(r, allow_nan=False)) == r
    assert r["rules"] == MIMIC_RULES and r["mimic_calls"] is True
    assert (r["threshold"], r["nipple_radius_mm"], r["nested_min_fraction"]) == (0.5, 10.0, 0.8)
    assert set(r["all"]) == {"images", "sensitivity", "false_positives", "fp_by_mimic_kind",
                             "fp_near_nipple", "air_bubbles_flagged", "mimics_recognised",
                             "nested_pairs", "operating_points"}
    assert set(r["all"]["operating_points"]["balanced"]) == {
        "score_threshold", "promised_fp_per_image", "promised_key", "fp_per_image",
        "false_positives", "fp_ratio", "fp_excess_per_image", "within_promise", "sensitivity",
        "air_bubbles_flagged", "nested_pairs"}
    # image a: the FP at (605, 605) is ~83 mm from the nipple, the others >= 12 mm
    assert r["all"]["fp_near_nipple"] == {"count": 0, "images": 1, "per_image": 0.0,
                                          "images_unassessed": 1}
    assert r["by_style"]["alt"]["mimics_recognised"] == {
        "air_bubble": {"recognised": 0, "mimics": 0, "fraction": None}}
    console = Console(record=True, width=200)
    console.print(format_mimic_table(r))
    out = console.export_text()
    for text in ("Mimics and operating points", "air bubbles flagged", "2/4 (50.0 %)",
                 "air bubbles recognised", "nested pairs", "balanced", "high_sensitivity",
                 "4.17×", "standard (1 img)", "alt (1 img)", "0.8 of the smaller box"):
        assert text in out, text


def test_old_prediction_format_through_both_reports() -> None:
    truths, preds = bubble_set()
    old = [{"boxes": p["boxes"], "scores": p["scores"]} for p in preds]
    full = evaluate(truths, old, 0.5)
    full["mimics"] = mimic_report(truths, old, 0.5)
    json.dumps(full, allow_nan=False)
    assert full["mimics"]["mimic_calls"] is False
    assert full["mimics"]["all"]["mimics_recognised"] is None
    assert full["mimics"]["all"]["operating_points"] == {}
    console = Console(record=True, width=200)
    console.print(format_mimic_table(full["mimics"]))
    assert "air bubbles recognised" in console.export_text()


def test_input_validation() -> None:
    truths, preds = bubble_set()
    with pytest.raises(ValueError, match="2 truths but 1 predictions"):
        mimic_report(truths, preds[:1], 0.5)
    with pytest.raises(ValueError, match=r"a\.dcm: 6 predicted boxes but 1 scores"):
        mimic_report(truths, [pred(preds[0]["boxes"], [0.5]), preds[1]], 0.5)
