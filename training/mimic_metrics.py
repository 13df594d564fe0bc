"""Mimic and operating-point measures for ``galacto evaluate``, next to :mod:`training.metrics`.

What the lesion metrics do not show: how often the reported lesions are really air bubbles,
cysts or extravasation, how many fall next to the nipple, whether the false-positive rate the
model card promises holds on this data, how often the model marks one lesion twice (a box
inside another), and how many true mimics the model itself recognised as mimics.

Inputs
------
``truths``: dataset items as in :mod:`training.metrics`, plus the optional keys used here:
``mimics`` (``[{"kind": ..., "box": [x1, y1, x2, y2]}]``), ``nipple_xy`` (``[x, y]`` stored
pixels), ``spacing_mm`` (pixel spacing of the stored image: one number, or ``[row, col]`` mm)
and ``style`` (e.g. ``standard`` or ``alt``).

``predictions``: one mapping per image, in the same order. ``boxes`` ``(N, 4)`` and ``scores``
``(N,)`` are the reported ``filling_defect`` candidates (stored pixels, x = column, x2/y2
exclusive; reported at threshold ``t`` when ``score >= t``). Optional: ``mimic_boxes``
``(K, 4)``, ``mimic_scores`` ``(K,)`` and ``mimic_labels`` (``K`` class names), the boxes the
model itself classed as a mimic; ``spacing_mm`` (as above), used when the truth has none. The
old format (``boxes`` and ``scores`` only) is accepted: the mimic-recognition counts are then
``None`` (not measurable).

Rules (all at one score threshold; every count is over the reported findings)
-----------------------------------------------------------------------------
- **Hit**: :func:`training.metrics.hits` (box centre inside the true box, or IoU >= 0.3), for
  lesions, true mimics and the model's mimic calls alike. A **false positive** is a reported
  finding that hits no true lesion of its image (duplicates on a found lesion are not FPs),
  exactly as in :mod:`training.metrics`.
- **Air bubbles flagged**: a true air bubble is flagged when at least one reported finding
  (false positive or not) hits it; a bubble hit by two findings counts once. Share of all true
  air bubbles; ``None``/nan without bubbles. (``training.metrics``' ``mimics_flagged`` counts
  only false positives on the mimic.)
- **FP by mimic kind**: a false positive is counted under every mimic kind it hits (one FP on
  a bubble and a cyst counts under both) and under ``other`` when it hits no mimic; per image
  over all images of the group. ``air_bubble``, ``cyst`` and ``extravasation`` are always
  listed, other kinds when the data has them.
- **FP near the nipple**: a false positive whose box centre lies within
  :data:`NIPPLE_RADIUS_MM` (10 mm, inclusive) of the truth ``nipple_xy``; distances in mm with
  the row and column spacing applied separately (anisotropic pixels). Spacing comes from the
  truth item, else from the prediction. Images without ``nipple_xy`` or spacing are left out of
  both the count and the image denominator and reported as ``images_unassessed``.
- **Nested pairs**: two reported findings of the same image are nested when their intersection
  covers at least :data:`NESTED_MIN_FRACTION` (0.8) of the smaller box's area; each unordered
  pair counts once; a zero-area box nests with nothing.
- **Recognised mimics**: a true mimic of kind ``k`` is recognised when a model mimic call
  labelled ``k`` hits it (all calls count unless ``mimic_threshold`` is given); counted once.
- **Operating points**: for each named point of the model card, the FP/image measured on this
  data at its ``score_threshold`` divided by the card's promise (``fp_per_image``, or
  ``max_fp_per_image`` when that is absent). Promise 0: the ratio is inf with any FP and nan
  without (both ``None`` in JSON); ``fp_excess_per_image`` (measured - promised) and
  ``within_promise`` are always defined.
- **By style**: every measure again per ``style`` when any item carries one (items without
  it go under ``unknown``); the promises are the card's pooled ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from rich.table import Table

from serving.pipeline.boxes import box_areas, box_centres, box_intersections
from training.metrics.counts import Count, FalsePositives, Sensitivity
from training.metrics.matching import (
    HIT_RULE,
    UNKNOWN,
    as_boxes,
    best_hit_scores,
    check_pairs,
    hits,
    image_arrays,
    mimic_boxes,
)
from training.metrics.report import (
    decimal,
    false_positives_json,
    json_number,
    percent,
    sensitivity_json,
)

__all__ = [
    "AIR_BUBBLE",
    "MIMIC_KINDS",
    "MIMIC_RULES",
    "NESTED_MIN_FRACTION",
    "NIPPLE_RADIUS_MM",
    "OTHER",
    "Count",
    "MimicBreakdown",
    "PointCheck",
    "check_operating_points",
    "distance_to_nipple_mm",
    "format_mimic_table",
    "mimic_breakdown",
    "mimic_report",
    "nested_pairs",
]

AIR_BUBBLE = "air_bubble"
MIMIC_KINDS: tuple[str, ...] = (AIR_BUBBLE, "cyst", "extravasation")
"""Mimic kinds always listed in the FP-by-kind breakdown (others are added when present)."""

OTHER = "other"
"""FP-by-kind key for false positives that hit no true mimic."""

NIPPLE_RADIUS_MM = 10.0
"""A false positive whose box centre is at most this far from the nipple is 'near the nipple'."""

NESTED_MIN_FRACTION = 0.8
"""Intersection / area of the smaller box at or above which two findings are nested."""

MIMIC_RULES: dict[str, str] = {
    "hit": HIT_RULE,
    "air_bubbles_flagged": "a true air bubble is flagged when any reported finding hits it "
                           "(counted once however many do); share of all true air bubbles",
    "fp_by_mimic_kind": "a false positive counts under every mimic kind it hits, under 'other' "
                        "when it hits none; per image over all images",
    "fp_near_nipple": "false positives whose box centre is within 10 mm (inclusive) of the truth "
                      "nipple_xy, row/column spacing applied separately; images without nipple "
                      "or spacing are left out (images_unassessed)",
    "nested_pairs": "pairs of reported findings of one image whose intersection is >= 0.8 of the "
                    "smaller box's area; each pair once",
    "mimics_recognised": "a true mimic is recognised when a model mimic call with its kind's "
                         "label hits it; None when the predictions carry no mimic calls",
    "fp_ratio": "FP/image measured at the point's score_threshold / the card's fp_per_image "
                "(max_fp_per_image when absent); None when the promise is 0",
}
"""Each rule in one sentence, as written into the report (``rules``)."""

FloatArray = NDArray[np.float64]
Truth = Mapping[str, Any]
Prediction = Mapping[str, Any]


# --------------------------------------------------------------------------- geometry

def nested_pairs(boxes: ArrayLike, min_fraction: float = NESTED_MIN_FRACTION) -> int:
    """Number of unordered pairs of ``boxes`` (``(N, 4)``, one image) where one lies mostly
    inside the other: intersection area / area of the smaller box ``>= min_fraction``.

    Areas as in :func:`training.metrics.box_iou` (x2/y2 exclusive). A zero-area box nests with
    nothing. Identical boxes are nested.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(b) < 2:
        return 0
    area = box_areas(b)
    inter = box_intersections(b, b)
    smaller = np.minimum(area[:, None], area[None, :])
    frac = np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)
    return int(np.sum(np.triu(frac >= min_fraction, k=1)))


def _spacing(value: Any) -> tuple[float, float] | None:
    """``(row_mm, col_mm)`` from one number or ``[row, col]``; None when absent or invalid."""
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        return None
    return float(arr[0]), float(arr[1])


def distance_to_nipple_mm(boxes: ArrayLike, nipple_xy: Sequence[float],
                          spacing_mm: float | Sequence[float]) -> FloatArray:
    """Distance in mm from each box centre (``(N, 4)`` stored pixels) to ``nipple_xy``.

    ``nipple_xy`` is ``[x, y]`` (column, row) in stored pixels; ``spacing_mm`` is one number
    or ``[row_mm, col_mm]``: ``sqrt(((cx - x) * col_mm)^2 + ((cy - y) * row_mm)^2)``.
    Returns ``(N,)``.
    """
    sp = _spacing(spacing_mm)
    if sp is None:
        raise ValueError(f"spacing_mm must be a positive number or [row, col], got {spacing_mm!r}")
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    nx, ny = (float(v) for v in nipple_xy)
    centres = box_centres(b)
    dx = (centres[:, 0] - nx) * sp[1]
    dy = (centres[:, 1] - ny) * sp[0]
    out: FloatArray = np.hypot(dx, dy)
    return out


# --------------------------------------------------------------------------- per image

@dataclass(frozen=True)
class _Image:
    """What one image contributes, independent of the threshold."""

    style: str
    scores: FloatArray          # (N,)
    boxes: FloatArray           # (N, 4)
    lesion_best: FloatArray     # (M,) best hitting score per lesion, -inf when none
    is_fp: NDArray[np.bool_]    # (N,)
    fp_kinds: list[frozenset[str]]  # (N,) mimic kinds each prediction hits
    near_nipple: NDArray[np.bool_] | None  # (N,), None when not assessable
    bubble_best: FloatArray     # (B,) best score of any prediction hitting each true bubble
    mimic_kinds: list[str]      # kinds of the true mimics
    recognised: NDArray[np.bool_] | None  # (n_mimics,), None without mimic calls


def _image_facts(i: int, truth: Truth, pred: Prediction, radius_mm: float,
                 mimic_threshold: float | None) -> _Image:
    image, gt, pb, scores = image_arrays(truth, pred, i)
    hit = hits(pb, gt)
    lesion_best = best_hit_scores(scores, hit)
    is_fp: NDArray[np.bool_] = np.asarray(~hit.any(axis=1), dtype=bool)

    mboxes, mkinds = mimic_boxes(truth, image)
    on_mimic = hits(pb, mboxes)  # (N, n_mimics)
    fp_kinds = [frozenset(mkinds[k] for k in np.flatnonzero(on_mimic[n])) for n in range(len(pb))]
    bubbles = [k for k, kind in enumerate(mkinds) if kind == AIR_BUBBLE]
    bubble_best = best_hit_scores(scores, on_mimic[:, bubbles])

    near: NDArray[np.bool_] | None = None
    nipple = truth.get("nipple_xy")
    spacing = _spacing(truth.get("spacing_mm"))
    if spacing is None:
        spacing = _spacing(pred.get("spacing_mm"))
    if nipple is not None and len(nipple) == 2 and spacing is not None:
        near = distance_to_nipple_mm(pb, nipple, spacing) <= radius_mm + 1e-9

    recognised: NDArray[np.bool_] | None = None
    if "mimic_boxes" in pred:
        cb = as_boxes(pred.get("mimic_boxes"), "mimic_boxes", image)
        raw_labels = pred.get("mimic_labels")
        labels = [] if raw_labels is None else [str(v) for v in raw_labels]
        if len(labels) != len(cb):
            raise ValueError(f"{image}: {len(cb)} mimic_boxes but {len(labels)} mimic_labels")
        keep = np.ones(len(cb), dtype=bool)
        if mimic_threshold is not None and pred.get("mimic_scores") is not None:
            cs = np.asarray(pred["mimic_scores"], dtype=np.float64).reshape(-1)
            if cs.shape[0] != len(cb):
                raise ValueError(f"{image}: {len(cb)} mimic_boxes but {cs.shape[0]} "
                                 "mimic_scores")
            keep = cs >= mimic_threshold
        call_hits = hits(cb, mboxes)  # (K, n_mimics)
        lab = np.asarray(labels, dtype=object)
        recognised = np.asarray(
            [bool(np.any(call_hits[:, k] & keep & (lab == kind))) for k, kind in enumerate(mkinds)],
            dtype=bool)
    return _Image(style=str(truth.get("style") or UNKNOWN), scores=scores, boxes=pb,
                  lesion_best=lesion_best, is_fp=is_fp, fp_kinds=fp_kinds, near_nipple=near,
                  bubble_best=bubble_best, mimic_kinds=mkinds, recognised=recognised)


def _facts(truths: Sequence[Truth], predictions: Sequence[Prediction],
           radius_mm: float = NIPPLE_RADIUS_MM,
           mimic_threshold: float | None = None) -> list[_Image]:
    check_pairs(truths, predictions)
    return [_image_facts(i, t, p, radius_mm, mimic_threshold)
            for i, (t, p) in enumerate(zip(truths, predictions, strict=True))]


# --------------------------------------------------------------------------- at a threshold

@dataclass(frozen=True)
class PointCheck:
    """One named operating point re-measured on this data.

    Attributes:
        score_threshold: the card's threshold (report ``score >= score_threshold``).
        promised_fp_per_image: the card's ``fp_per_image``, else its ``max_fp_per_image``.
        promised_key: which of the two it is.
        false_positives: FPs measured at the threshold, over the group's images.
        sensitivity: lesions detected at the threshold.
        air_bubbles_flagged: true air bubbles hit by a reported finding.
        nested_pairs: nested pairs of reported findings.
    """

    score_threshold: float
    promised_fp_per_image: float
    promised_key: str
    false_positives: FalsePositives
    sensitivity: Sensitivity
    air_bubbles_flagged: Count
    nested_pairs: int

    @property
    def fp_ratio(self) -> float:
        """Measured / promised FP per image; inf (any FP) or nan (none) when promised is 0."""
        actual = self.false_positives.per_image
        if self.promised_fp_per_image > 0:
            return actual / self.promised_fp_per_image
        return math.inf if actual > 0 else math.nan

    @property
    def fp_excess_per_image(self) -> float:
        """Measured minus promised FP per image (negative: better than promised)."""
        return self.false_positives.per_image - self.promised_fp_per_image

    @property
    def within_promise(self) -> bool:
        """Whether the measured FP per image is at most the promised one."""
        return self.false_positives.per_image <= self.promised_fp_per_image + 1e-12


@dataclass(frozen=True)
class MimicBreakdown:
    """The mimic and operating-point measures of one group of images at one threshold.

    Attributes:
        threshold: the score threshold.
        images: images in the group.
        sensitivity: lesions detected.
        false_positives: all FPs over the group's images.
        fp_by_mimic_kind: FPs hitting a true mimic of each kind, plus ``"other"`` (no mimic),
            each over the group's images.
        fp_near_nipple: FPs with box centre within the radius of the nipple, over the images
            that could be assessed (nipple and spacing known).
        images_unassessed: images left out of ``fp_near_nipple``.
        air_bubbles_flagged: true air bubbles hit by at least one reported finding.
        mimics_recognised: per true-mimic kind present, mimics hit by a model mimic call with
            that label; None when no prediction carries mimic calls.
        nested_pairs: nested pairs of reported findings, summed over images.
        operating_points: :class:`PointCheck` per named point (empty when none were given).
    """

    threshold: float
    images: int
    sensitivity: Sensitivity
    false_positives: FalsePositives
    fp_by_mimic_kind: dict[str, FalsePositives]
    fp_near_nipple: FalsePositives
    images_unassessed: int
    air_bubbles_flagged: Count
    mimics_recognised: dict[str, Count] | None
    nested_pairs: int
    operating_points: dict[str, PointCheck]


def _sensitivity(images: Sequence[_Image], t: float) -> Sensitivity:
    best = np.concatenate([im.lesion_best for im in images]) if images else np.zeros(0)
    return Sensitivity(int(np.sum(best >= t)), int(best.size))


def _fps(images: Sequence[_Image], t: float) -> FalsePositives:
    return FalsePositives(sum(int(np.sum(im.is_fp & (im.scores >= t))) for im in images),
                          len(images))


def _bubbles(images: Sequence[_Image], t: float) -> Count:
    best = np.concatenate([im.bubble_best for im in images]) if images else np.zeros(0)
    return Count(int(np.sum(best >= t)), int(best.size))


def _nested(images: Sequence[_Image], t: float) -> int:
    return sum(nested_pairs(im.boxes[im.scores >= t]) for im in images)


def _promise(op: Any) -> tuple[float, float, str]:
    """``(score_threshold, promised FP/image, key)`` from an OperatingPoint or a mapping."""
    get = op.get if isinstance(op, Mapping) else lambda k: getattr(op, k, None)
    threshold = get("score_threshold")
    if threshold is None:
        raise ValueError(f"operating point without score_threshold: {op!r}")
    for key in ("fp_per_image", "max_fp_per_image"):
        value = get(key)
        if value is not None:
            if not float(value) >= 0:
                raise ValueError(f"operating point {key} must be >= 0, got {value}")
            return float(threshold), float(value), key
    raise ValueError(f"operating point without fp_per_image or max_fp_per_image: {op!r}")


def _points(images: Sequence[_Image], operating_points: Mapping[str, Any] | None
            ) -> dict[str, PointCheck]:
    out = {}
    for name, op in (operating_points or {}).items():
        t, promised, key = _promise(op)
        out[str(name)] = PointCheck(
            score_threshold=t, promised_fp_per_image=promised, promised_key=key,
            false_positives=_fps(images, t), sensitivity=_sensitivity(images, t),
            air_bubbles_flagged=_bubbles(images, t), nested_pairs=_nested(images, t))
    return out


def _breakdown(images: Sequence[_Image], t: float, operating_points: Mapping[str, Any] | None,
               with_calls: bool) -> MimicBreakdown:
    n = len(images)
    kinds = list(MIMIC_KINDS) + sorted({k for im in images for k in im.mimic_kinds}
                                       - set(MIMIC_KINDS))
    by_kind = dict.fromkeys([*kinds, OTHER], 0)
    near = 0
    assessed = 0
    for im in images:
        rep = im.is_fp & (im.scores >= t)
        for idx in np.flatnonzero(rep):
            ks = im.fp_kinds[idx]
            for k in ks:
                by_kind[k] += 1
            if not ks:
                by_kind[OTHER] += 1
        if im.near_nipple is not None:
            assessed += 1
            near += int(np.sum(rep & im.near_nipple))
    recognised: dict[str, Count] | None = None
    if with_calls:
        present = [k for k in kinds if any(k in im.mimic_kinds for im in images)]
        recognised = {}
        for kind in present:
            hit = total = 0
            for im in images:
                sel = np.asarray(im.mimic_kinds, dtype=object) == kind
                total += int(sel.sum())
                if im.recognised is not None:
                    hit += int(np.sum(im.recognised & sel))
            recognised[kind] = Count(hit, total)
        if AIR_BUBBLE not in recognised:
            recognised = {AIR_BUBBLE: Count(0, 0), **recognised}
    return MimicBreakdown(
        threshold=float(t), images=n, sensitivity=_sensitivity(images, t),
        false_positives=_fps(images, t),
        fp_by_mimic_kind={k: FalsePositives(v, n) for k, v in by_kind.items()},
        fp_near_nipple=FalsePositives(near, assessed), images_unassessed=n - assessed,
        air_bubbles_flagged=_bubbles(images, t), mimics_recognised=recognised,
        nested_pairs=_nested(images, t), operating_points=_points(images, operating_points))


def _styles(facts: Sequence[_Image], truths: Sequence[Truth]) -> list[str]:
    if not any(t.get("style") for t in truths):
        return []
    return sorted({im.style for im in facts})


def mimic_breakdown(truths: Sequence[Truth], predictions: Sequence[Prediction], threshold: float,
                    operating_points: Mapping[str, Any] | None = None, *,
                    style: str | None = None, nipple_radius_mm: float = NIPPLE_RADIUS_MM,
                    mimic_threshold: float | None = None) -> MimicBreakdown:
    """All measures of the module docstring at ``threshold`` (score ``>= threshold``).

    ``operating_points``: name -> the card's point (a ``serving.pipeline.model.OperatingPoint``
    or a mapping with ``score_threshold`` and ``fp_per_image`` and/or ``max_fp_per_image``);
    each is re-measured into a :class:`PointCheck`. ``style``: only the images whose ``style``
    is this (``"unknown"`` selects those without one). ``mimic_threshold``: count only model
    mimic calls with ``mimic_scores >= mimic_threshold`` (default: all). Returns a
    :class:`MimicBreakdown`.
    """
    facts = _facts(truths, predictions, nipple_radius_mm, mimic_threshold)
    with_calls = any("mimic_boxes" in p for p in predictions)
    if style is not None:
        facts = [im for im in facts if im.style == style]
    return _breakdown(facts, threshold, operating_points, with_calls)


def check_operating_points(truths: Sequence[Truth], predictions: Sequence[Prediction],
                           operating_points: Mapping[str, Any]) -> dict[str, PointCheck]:
    """Each named operating point re-measured on this data: ``{name: PointCheck}``.

    FP/image, sensitivity, air bubbles flagged and nested pairs at the point's
    ``score_threshold``, against the card's promise (see :class:`PointCheck`).
    """
    return _points(_facts(truths, predictions), operating_points)


# --------------------------------------------------------------------------- report

def _bubbles_json(c: Count) -> dict[str, Any]:
    return {"flagged": c.hit, "bubbles": c.total, "fraction": json_number(c.value)}


def _point_json(p: PointCheck) -> dict[str, Any]:
    return {
        "score_threshold": p.score_threshold,
        "promised_fp_per_image": p.promised_fp_per_image,
        "promised_key": p.promised_key,
        "fp_per_image": json_number(p.false_positives.per_image),
        "false_positives": false_positives_json(p.false_positives),
        "fp_ratio": json_number(p.fp_ratio),
        "fp_excess_per_image": json_number(p.fp_excess_per_image),
        "within_promise": p.within_promise,
        "sensitivity": sensitivity_json(p.sensitivity),
        "air_bubbles_flagged": _bubbles_json(p.air_bubbles_flagged),
        "nested_pairs": p.nested_pairs,
    }


def _breakdown_json(b: MimicBreakdown) -> dict[str, Any]:
    return {
        "images": b.images,
        "sensitivity": sensitivity_json(b.sensitivity),
        "false_positives": false_positives_json(b.false_positives),
        "fp_by_mimic_kind": {k: false_positives_json(v) for k, v in b.fp_by_mimic_kind.items()},
        "fp_near_nipple": {**false_positives_json(b.fp_near_nipple),
                           "images_unassessed": b.images_unassessed},
        "air_bubbles_flagged": _bubbles_json(b.air_bubbles_flagged),
        "mimics_recognised": None if b.mimics_recognised is None else {
            k: {"recognised": v.hit, "mimics": v.total, "fraction": json_number(v.value)}
            for k, v in b.mimics_recognised.items()},
        "nested_pairs": b.nested_pairs,
        "operating_points": {k: _point_json(v) for k, v in b.operating_points.items()},
    }


def mimic_report(truths: Sequence[Truth], predictions: Sequence[Prediction], threshold: float,
                 operating_points: Mapping[str, Any] | None = None, *,
                 nipple_radius_mm: float = NIPPLE_RADIUS_MM,
                 mimic_threshold: float | None = None) -> dict[str, Any]:
    """The measures as JSON (``json.dumps(..., allow_nan=False)``), for ``report["mimics"]``.

    Keys: ``rules`` (:data:`MIMIC_RULES`), ``threshold``, ``nipple_radius_mm``,
    ``nested_min_fraction``, ``mimic_calls`` (whether any prediction carries model mimic
    calls), ``all`` (every image) and ``by_style`` (``{style: ...}``, empty when no item has a
    ``style``). Each group: ``images``; ``sensitivity`` ``{detected, lesions, sensitivity}``;
    ``false_positives``, ``fp_by_mimic_kind`` (``air_bubble``, ``cyst``, ``extravasation``,
    any other kind present, ``other``) as ``{count, images, per_image}``; ``fp_near_nipple``
    (the same plus ``images_unassessed``); ``air_bubbles_flagged`` ``{flagged, bubbles,
    fraction}``; ``mimics_recognised`` (``{kind: {recognised, mimics, fraction}}``, always
    with ``air_bubble``, or ``None`` without mimic calls); ``nested_pairs`` (int);
    ``operating_points`` ``{name: {score_threshold, promised_fp_per_image, promised_key,
    fp_per_image, false_positives, fp_ratio, fp_excess_per_image, within_promise,
    sensitivity, air_bubbles_flagged, nested_pairs}}``. Undefined values (no bubbles, no
    lesions, promise 0) are ``None``.
    """
    facts = _facts(truths, predictions, nipple_radius_mm, mimic_threshold)
    with_calls = any("mimic_boxes" in p for p in predictions)
    return {
        "rules": dict(MIMIC_RULES),
        "threshold": float(threshold),
        "nipple_radius_mm": float(nipple_radius_mm),
        "nested_min_fraction": NESTED_MIN_FRACTION,
        "mimic_calls": with_calls,
        "all": _breakdown_json(_breakdown(facts, threshold, operating_points, with_calls)),
        "by_style": {
            s: _breakdown_json(_breakdown([im for im in facts if im.style == s], threshold,
                                          operating_points, with_calls))
            for s in _styles(facts, truths)},
    }


def _frac(d: Mapping[str, Any] | None, hit: str, total: str, value: str) -> str:
    if d is None:
        return "–"
    return f"{d[hit]}/{d[total]} ({percent(d[value])})"


def format_mimic_table(section: Mapping[str, Any]) -> Table:
    """One compact rich table, "mimics and operating points", from ``mimic_report``'s output.

    One column for all images and one per style; rows: sensitivity, FP/image, FP/image per
    mimic kind and "other", FP/image near the nipple, air bubbles flagged and recognised,
    nested pairs, then per operating point FP/image actual vs promised (ratio) and
    sensitivity. The caption states the nested and nipple rules.
    """
    groups = {"all": section["all"], **section["by_style"]}
    table = Table(title=f"Mimics and operating points (threshold {section['threshold']:.3g})",
                  caption=(f"nested: intersection >= {section['nested_min_fraction']:g} of the "
                           f"smaller box; near nipple: FP box centre <= "
                           f"{section['nipple_radius_mm']:g} mm from nipple_xy"))
    table.add_column("measure")
    for name, g in groups.items():
        table.add_column(f"{name} ({g['images']} img)", justify="right")

    def row(label: str, cell: Any) -> None:
        table.add_row(label, *(cell(g) for g in groups.values()))

    row("sensitivity", lambda g: _frac(g["sensitivity"], "detected", "lesions", "sensitivity"))
    row("FP / image", lambda g: decimal(g["false_positives"]["per_image"]))
    for kind in section["all"]["fp_by_mimic_kind"]:
        row(f"  FP / image on {kind}" if kind != OTHER else "  FP / image on no mimic (other)",
            lambda g, k=kind: decimal(g["fp_by_mimic_kind"].get(k, {}).get("per_image")))
    row(f"  FP / image <= {section['nipple_radius_mm']:g} mm of nipple",
        lambda g: decimal(g["fp_near_nipple"]["per_image"])
        + (f" ({g['fp_near_nipple']['images_unassessed']} img n/a)"
           if g["fp_near_nipple"]["images_unassessed"] else ""))
    row("air bubbles flagged",
        lambda g: _frac(g["air_bubbles_flagged"], "flagged", "bubbles", "fraction"))
    row("air bubbles recognised",
        lambda g: _frac((g["mimics_recognised"] or {}).get(AIR_BUBBLE)
                        if g["mimics_recognised"] is not None else None,
                        "recognised", "mimics", "fraction"))
    row("nested pairs", lambda g: str(g["nested_pairs"]))
    for name, p in section["all"]["operating_points"].items():
        table.add_section()
        row(f"{name} (>= {p['score_threshold']:.3f}): FP/img vs {p['promised_fp_per_image']:g}",
            lambda g, n=name: _ratio(g["operating_points"].get(n)))
        row(f"{name}: sensitivity",
            lambda g, n=name: _frac((g["operating_points"].get(n) or {}).get("sensitivity"),
                                    "detected", "lesions", "sensitivity"))
        row(f"{name}: bubbles flagged / nested",
            lambda g, n=name: _bubbles_nested(g["operating_points"].get(n)))
    return table


def _ratio(p: Mapping[str, Any] | None) -> str:
    if p is None:
        return "–"
    ratio = p["fp_ratio"]
    r = f"{ratio:.2f}×" if ratio is not None else ("ok" if p["within_promise"] else "over")
    return f"{decimal(p['fp_per_image'])} ({r})"


def _bubbles_nested(p: Mapping[str, Any] | None) -> str:
    if p is None:
        return "–"
    b = p["air_bubbles_flagged"]
    return f"{b['flagged']}/{b['bubbles']} · {p['nested_pairs']}"
