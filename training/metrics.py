"""Lesion-detection metrics for ``galacto evaluate``: FROC, operating points, COCO AP, breakdowns.

Inputs
------
``truths`` is a list of dataset items exactly as in ``dataset.json`` (README): ``image`` (used
as the id in error messages), ``boxes`` (``[x1, y1, x2, y2]`` in stored-image pixels, x =
column, x2/y2 exclusive), ``labels``, and optionally ``lesion_kind`` and ``lesion_size_mm``
(same order as ``boxes``), ``mimics`` (``[{"kind": ..., "box": [...]}]``) and ``profile``.
Every box counts as one lesion (the data set has one class, ``filling_defect``). An item with
no boxes is a normal image: it contributes false positives but no lesions. A lesion seen in
two views is two lesions here (one per image).

``predictions`` is a list of the same length, in the same order: for each image a mapping
with ``boxes`` (``(N, 4)``, same convention as the truths) and ``scores`` (``(N,)``): the
reported ``filling_defect`` candidates. A prediction is *reported* at a score threshold ``t``
when ``score >= t``. Other keys (the model's own mimic calls ``mimic_boxes``/``mimic_scores``/
``mimic_labels``, ``spacing_mm``) are ignored here; :mod:`training.mimic_metrics` uses them,
together with the truths' ``nipple_xy``, ``spacing_mm`` and ``style``, for air bubbles
flagged, FP/image by mimic kind and near the nipple, nested findings and operating-point checks.

Hit rule (FROC, operating points, sensitivity and false-positive breakdowns)
-----------------------------------------------------------------------------
A prediction **hits** a true lesion when the centre of the predicted box lies inside the true
box (half-open: ``x1 <= cx < x2`` and ``y1 <= cy < y2``) **or** their IoU is at least
:data:`HIT_IOU` (0.3). The centre rule accepts loose boxes around small lesions; the IoU rule
accepts well-overlapping boxes whose centre falls just outside.

- Each true lesion is hit at most once: it counts as detected at threshold ``t`` when the
  highest-scoring prediction that hits it has ``score >= t``.
- A prediction that hits no lesion of its image is a **false positive**.
- A prediction that hits a lesion that a higher-scoring prediction already hit is **neither**
  a true nor a false positive (standard FROC practice, as in the LUNA16 evaluation script: a
  duplicate mark on a found lesion is not penalised). A prediction that hits two adjacent
  lesions counts for both (also as in LUNA16).
- A false positive lies **on a mimic** (air bubble, extravasation, cyst) when the same rule
  holds against the mimic's box; one FP on two mimics of different kinds counts once in the
  "any mimic" total and once under each kind.

COCO AP (:func:`average_precision`) does not use this rule: it is the usual one-to-one greedy
matching by IoU alone, at each IoU threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from rich.table import Table

__all__ = [
    "DEFAULT_AP_IOUS",
    "DEFAULT_FP_RATES",
    "DEFAULT_SIZE_BINS_MM",
    "HIT_IOU",
    "HIT_RULE",
    "FalsePositives",
    "FrocResult",
    "Sensitivity",
    "ThresholdReport",
    "average_precision",
    "box_iou",
    "evaluate",
    "format_tables",
    "froc",
    "hits",
    "operating_point",
    "plot_froc",
    "scored_marks",
    "sensitivity_at",
    "size_bin_labels",
]

HIT_IOU = 0.3
"""IoU at or above which a prediction hits a true lesion (or a mimic), centre rule aside."""

HIT_RULE = (
    "a prediction hits a true lesion when its box centre lies inside the true box or IoU >= 0.3; "
    "each lesion counts once (its highest-scoring hit); predictions hitting no lesion are false "
    "positives; further hits on an already-hit lesion are neither (LUNA16 FROC practice)"
)
"""The hit rule in one sentence, as written into every report."""

DEFAULT_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
"""Mean false positives per image at which the FROC sensitivity is read (LUNA16's rates)."""

DEFAULT_SIZE_BINS_MM: tuple[float, ...] = (1.5, 3.0, 5.0, 10.0)
"""Lower edges of the lesion-size bins in mm: [1.5, 3), [3, 5), [5, 10), [10, inf)."""

DEFAULT_AP_IOUS: tuple[float, ...] = (0.1, 0.3, 0.5)
"""IoU thresholds at which COCO-style AP is reported."""

UNKNOWN = "unknown"
"""Group name for a lesion or image that lacks ``lesion_kind``/``lesion_size_mm``/``profile``."""

FloatArray = NDArray[np.float64]
Truth = Mapping[str, Any]
Prediction = Mapping[str, ArrayLike]


# --------------------------------------------------------------------------- geometry

def box_iou(a: ArrayLike, b: ArrayLike) -> FloatArray:
    """IoU of every box in ``a`` (``(N, 4)``) with every box in ``b`` (``(M, 4)``): ``(N, M)``.

    Boxes are ``[x1, y1, x2, y2]`` with x2/y2 exclusive, so a box's area is
    ``(x2 - x1) * (y2 - y1)``. Degenerate boxes (zero area) have IoU 0 with everything.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    out: FloatArray = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return out


def hits(pred_boxes: ArrayLike, true_boxes: ArrayLike, iou: float = HIT_IOU) -> NDArray[np.bool_]:
    """The hit rule as a ``(N, M)`` boolean matrix: prediction ``i`` hits true box ``j``.

    True when the centre of predicted box ``i`` lies inside true box ``j`` (half-open,
    ``x1 <= cx < x2``, ``y1 <= cy < y2``) or their IoU is ``>= iou``.
    """
    p = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    t = np.asarray(true_boxes, dtype=np.float64).reshape(-1, 4)
    cx = (p[:, 0] + p[:, 2]) / 2
    cy = (p[:, 1] + p[:, 3]) / 2
    inside = ((t[None, :, 0] <= cx[:, None]) & (cx[:, None] < t[None, :, 2])
              & (t[None, :, 1] <= cy[:, None]) & (cy[:, None] < t[None, :, 3]))
    result: NDArray[np.bool_] = inside | (box_iou(p, t) >= iou)
    return result


# --------------------------------------------------------------------------- matching

@dataclass(frozen=True)
class _Matched:
    """Every lesion and every false positive of a data set, pooled over images.

    ``lesion_score[j]`` is the score of the highest-scoring prediction hitting lesion ``j``
    (``-inf`` when none does); ``fp_score[k]`` the score of false positive ``k``.
    """

    n_images: int
    image_profile: list[str]
    all_scores: FloatArray
    lesion_score: FloatArray
    lesion_image: NDArray[np.int64]
    lesion_size_mm: FloatArray  # nan where unknown
    lesion_kind: list[str]
    lesion_profile: list[str]
    fp_score: FloatArray
    fp_image: NDArray[np.int64]
    fp_mimic_kinds: list[frozenset[str]]
    mimic_kind: list[str]  # one entry per mimic in the data set
    mimic_best_fp_score: FloatArray  # highest FP score on that mimic, -inf when none


def _image_id(truth: Truth, index: int) -> str:
    return str(truth.get("image", f"#{index}"))


def _as_boxes(value: Any, what: str, image: str) -> FloatArray:
    arr = np.asarray(value if value is not None else [], dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{image}: {what} must be (N, 4) [x1, y1, x2, y2], got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{image}: {what} contain non-finite coordinates")
    return arr


def _per_box(truth: Truth, key: str, n: int, image: str) -> list[Any] | None:
    values = truth.get(key)
    if values is None:
        return None
    if len(values) != n:
        raise ValueError(f"{image}: {key} has {len(values)} entries for {n} boxes")
    return list(values)


def _match(truths: Sequence[Truth], predictions: Sequence[Prediction]) -> _Matched:
    """Apply the hit rule to every image (see the module docstring) and pool the results."""
    if len(truths) != len(predictions):
        raise ValueError(f"{len(truths)} truths but {len(predictions)} predictions: "
                         "give one prediction per image, in the same order")
    if not truths:
        raise ValueError("no images to evaluate")
    all_scores: list[FloatArray] = []
    lesion_score: list[float] = []
    lesion_image: list[int] = []
    lesion_size: list[float] = []
    lesion_kind: list[str] = []
    lesion_profile: list[str] = []
    fp_score: list[float] = []
    fp_image: list[int] = []
    fp_kinds: list[frozenset[str]] = []
    mimic_kind: list[str] = []
    mimic_best: list[float] = []
    image_profile: list[str] = []
    for i, (truth, pred) in enumerate(zip(truths, predictions, strict=True)):
        image = _image_id(truth, i)
        profile = str(truth.get("profile") or UNKNOWN)
        image_profile.append(profile)
        gt = _as_boxes(truth.get("boxes"), "boxes", image)
        pb = _as_boxes(pred.get("boxes"), "predicted boxes", image)
        scores = np.asarray(pred.get("scores", []), dtype=np.float64).reshape(-1)
        if scores.shape[0] != pb.shape[0]:
            raise ValueError(f"{image}: {pb.shape[0]} predicted boxes but {scores.shape[0]} scores")
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"{image}: predicted scores must be finite")
        all_scores.append(scores)
        sizes = _per_box(truth, "lesion_size_mm", len(gt), image)
        kinds = _per_box(truth, "lesion_kind", len(gt), image)

        hit = hits(pb, gt)  # (N, M)
        for j in range(len(gt)):
            lesion_score.append(float(scores[hit[:, j]].max()) if hit[:, j].any() else -math.inf)
            lesion_image.append(i)
            lesion_size.append(float(sizes[j]) if sizes is not None else math.nan)
            lesion_kind.append(str(kinds[j]) if kinds is not None else UNKNOWN)
            lesion_profile.append(profile)

        fp = ~hit.any(axis=1)
        mimics = list(truth.get("mimics") or [])
        mboxes = _as_boxes([m["box"] for m in mimics], "mimic boxes", image)
        mkinds = [str(m.get("kind", UNKNOWN)) for m in mimics]
        on_mimic = hits(pb[fp], mboxes)  # (n_fp, n_mimics)
        for k, s in enumerate(scores[fp]):
            fp_score.append(float(s))
            fp_image.append(i)
            fp_kinds.append(frozenset(mkinds[m] for m in np.flatnonzero(on_mimic[k])))
        for m, kind in enumerate(mkinds):
            mimic_kind.append(kind)
            mimic_best.append(float(scores[fp][on_mimic[:, m]].max())
                              if on_mimic[:, m].any() else -math.inf)
    return _Matched(
        n_images=len(truths),
        image_profile=image_profile,
        all_scores=np.concatenate(all_scores) if all_scores else np.zeros(0),
        lesion_score=np.asarray(lesion_score, dtype=np.float64),
        lesion_image=np.asarray(lesion_image, dtype=np.int64),
        lesion_size_mm=np.asarray(lesion_size, dtype=np.float64),
        lesion_kind=lesion_kind,
        lesion_profile=lesion_profile,
        fp_score=np.asarray(fp_score, dtype=np.float64),
        fp_image=np.asarray(fp_image, dtype=np.int64),
        fp_mimic_kinds=fp_kinds,
        mimic_kind=mimic_kind,
        mimic_best_fp_score=np.asarray(mimic_best, dtype=np.float64),
    )


def scored_marks(truths: Sequence[Truth], predictions: Sequence[Prediction]
                 ) -> tuple[FloatArray, NDArray[np.int64], FloatArray, NDArray[np.int64]]:
    """The hit rule applied image by image (see the module docstring), for resampling.

    Returns:
        ``(lesion_score, lesion_image, fp_score, fp_image)``: per true lesion the score of its
        highest-scoring hit (``-inf`` when missed) and its image index; per false positive its
        score and image index.
    """
    m = _match(truths, predictions)
    return m.lesion_score, m.lesion_image, m.fp_score, m.fp_image


# --------------------------------------------------------------------------- FROC

@dataclass(frozen=True)
class FrocResult:
    """A FROC curve and its summary.

    Attributes:
        thresholds: ``(K,)`` distinct prediction scores, descending. Curve point ``k`` is what
            is reported at ``score >= thresholds[k]``. The implicit point "report nothing"
            (sensitivity 0, 0 FP) is not stored.
        sensitivity: ``(K,)`` fraction of true lesions detected at each threshold
            (nan when the data set has no lesion).
        fp_per_image: ``(K,)`` false positives per image (mean over all images, normal ones
            included) at each threshold.
        fp_rates: the FP-per-image rates at which the curve is read.
        sensitivity_at_rates: at each rate, the highest sensitivity of any curve point with at
            most that many FP per image (0 when none qualifies): a stepwise reading, so every
            value is achievable by some threshold. (The LUNA16 script interpolates linearly
            between curve points instead, which can read slightly higher.)
        thresholds_at_rates: at each rate, the lowest threshold that keeps FP per image within
            the rate (``inf`` when even the top-scoring prediction breaks it): the operating
            point of :func:`operating_point`.
        cpm: mean of ``sensitivity_at_rates`` (the Competition Performance Metric of LUNA16).
        n_images: images evaluated.
        n_lesions: true lesions (boxes) in them.
    """

    thresholds: FloatArray
    sensitivity: FloatArray
    fp_per_image: FloatArray
    fp_rates: tuple[float, ...]
    sensitivity_at_rates: tuple[float, ...]
    thresholds_at_rates: tuple[float, ...]
    cpm: float
    n_images: int
    n_lesions: int

    def read(self, max_fp_per_image: float) -> tuple[float, float, float]:
        """``(threshold, sensitivity, fp_per_image)`` of the lowest threshold within budget.

        The lowest threshold whose FP per image is ``<= max_fp_per_image``; since both
        sensitivity and FPs only grow as the threshold falls, this is also the most sensitive
        point within budget. ``(inf, 0.0, 0.0)`` (nan sensitivity without lesions) when no
        threshold qualifies.
        """
        ok = np.flatnonzero(self.fp_per_image <= max_fp_per_image + 1e-12)
        if ok.size == 0:
            return math.inf, (math.nan if self.n_lesions == 0 else 0.0), 0.0
        k = int(ok[-1])
        return (float(self.thresholds[k]), float(self.sensitivity[k]),
                float(self.fp_per_image[k]))


def _curve(m: _Matched) -> tuple[FloatArray, FloatArray, FloatArray]:
    thresholds = np.unique(m.all_scores)[::-1].astype(np.float64)
    lesions = np.sort(m.lesion_score)
    fps = np.sort(m.fp_score)
    # count of values >= t in a sorted array = len - searchsorted(left)
    detected = len(lesions) - np.searchsorted(lesions, thresholds, side="left")
    n_fp = len(fps) - np.searchsorted(fps, thresholds, side="left")
    sens = (detected / len(lesions) if len(lesions)
            else np.full(thresholds.shape, math.nan))
    return thresholds, sens.astype(np.float64), (n_fp / m.n_images).astype(np.float64)


def _froc(m: _Matched, fp_rates: Sequence[float]) -> FrocResult:
    thresholds, sens, fppi = _curve(m)
    rates = tuple(float(r) for r in fp_rates)
    if any(r < 0 or not math.isfinite(r) for r in rates):
        raise ValueError(f"fp_rates must be finite and >= 0, got {rates}")
    partial = FrocResult(thresholds, sens, fppi, rates, (), (), math.nan, m.n_images,
                         len(m.lesion_score))
    read = [partial.read(r) for r in rates]
    at_rates = tuple(r[1] for r in read)
    cpm = float(np.mean(at_rates)) if at_rates and len(m.lesion_score) else math.nan
    return FrocResult(thresholds, sens, fppi, rates, at_rates, tuple(r[0] for r in read), cpm,
                      m.n_images, len(m.lesion_score))


def froc(truths: Sequence[Truth], predictions: Sequence[Prediction],
         fp_rates: Sequence[float] = DEFAULT_FP_RATES) -> FrocResult:
    """Free-response ROC over a data set, with the sensitivity at each rate of ``fp_rates``.

    See the module docstring for the hit rule. Returns a :class:`FrocResult`: the full curve
    (one point per distinct score), the stepwise sensitivity at each FP-per-image rate, the
    threshold that achieves it, and their mean (CPM).
    """
    return _froc(_match(truths, predictions), fp_rates)


def operating_point(truths: Sequence[Truth], predictions: Sequence[Prediction],
                    max_fp_per_image: float) -> tuple[float, float, float]:
    """Choose a score threshold on validation data: the lowest one within an FP budget.

    Returns ``(score_threshold, sensitivity, fp_per_image)`` for the lowest threshold (a
    prediction score; report ``score >= threshold``) at which the mean FP per image is
    ``<= max_fp_per_image``, i.e. the most sensitive threshold within budget. When even the
    top-scoring prediction exceeds the budget the threshold is ``inf`` (report nothing). For
    named operating points, e.g. ``balanced`` at 0.5 and ``high_sensitivity`` at 2 FP/image.
    """
    if not max_fp_per_image >= 0:
        raise ValueError(f"max_fp_per_image must be >= 0, got {max_fp_per_image}")
    return froc(truths, predictions, fp_rates=()).read(max_fp_per_image)


# --------------------------------------------------------------------------- at a threshold

@dataclass(frozen=True)
class Sensitivity:
    """``detected`` of ``lesions`` true lesions found; ``value`` is nan without lesions."""

    detected: int
    lesions: int

    @property
    def value(self) -> float:
        return self.detected / self.lesions if self.lesions else math.nan


@dataclass(frozen=True)
class FalsePositives:
    """``count`` false positives over ``images`` images; ``per_image`` is their ratio."""

    count: int
    images: int

    @property
    def per_image(self) -> float:
        return self.count / self.images if self.images else math.nan


@dataclass(frozen=True)
class ThresholdReport:
    """Sensitivity and false positives at one score threshold (``score >= threshold``).

    Attributes:
        threshold: the score threshold.
        overall: all lesions.
        by_size: per lesion-size bin, keys like ``"[3, 5)"`` (mm, lower edge inclusive), in
            bin order; every configured bin is present, plus ``"< 1.5"``/``"unknown"`` when
            such lesions exist.
        by_kind: per ``lesion_kind`` (sorted).
        by_profile: per vendor ``profile`` (sorted).
        false_positives: all FPs over all images.
        fp_by_profile: FPs of each profile's images over that profile's image count.
        fp_on_mimics: FPs lying on any mimic, over all images.
        fp_on_mimic_kind: FPs lying on a mimic of each kind present in the data, over all images.
        mimics_flagged: per mimic kind, how many of the data set's mimics carry at least one FP
            (``detected`` of ``lesions`` reused: flagged of total mimics).
    """

    threshold: float
    overall: Sensitivity
    by_size: dict[str, Sensitivity]
    by_kind: dict[str, Sensitivity]
    by_profile: dict[str, Sensitivity]
    false_positives: FalsePositives
    fp_by_profile: dict[str, FalsePositives]
    fp_on_mimics: FalsePositives
    fp_on_mimic_kind: dict[str, FalsePositives]
    mimics_flagged: dict[str, Sensitivity]


def _fmt_edge(v: float) -> str:
    return f"{v:g}"


def size_bin_labels(edges_mm: Sequence[float]) -> list[str]:
    """Labels of the bins ``[e0, e1), [e1, e2), ..., [e_last, inf)`` for ascending ``edges_mm``."""
    edges = [float(e) for e in edges_mm]
    if not edges or any(b <= a for a, b in pairwise(edges)):
        raise ValueError(f"size bin edges must be non-empty and strictly ascending, got {edges}")
    return [f"[{_fmt_edge(a)}, {_fmt_edge(b)})" for a, b in pairwise(edges)] + [
        f"[{_fmt_edge(edges[-1])}, inf)"]


def _size_label(size: float, edges: Sequence[float], labels: Sequence[str]) -> str:
    if math.isnan(size):
        return UNKNOWN
    if size < edges[0]:
        return f"< {_fmt_edge(edges[0])}"
    return labels[int(np.searchsorted(np.asarray(edges), size, side="right")) - 1]


def _group_sensitivity(groups: Sequence[str], detected: NDArray[np.bool_],
                       order: Sequence[str] = ()) -> dict[str, Sensitivity]:
    names = list(order) + sorted(set(groups) - set(order))
    g = np.asarray(groups, dtype=object)
    return {n: Sensitivity(int(np.sum(detected[g == n])), int(np.sum(g == n))) for n in names}


def _at_threshold(m: _Matched, threshold: float,
                  size_bins_mm: Sequence[float]) -> ThresholdReport:
    edges = [float(e) for e in size_bins_mm]
    labels = size_bin_labels(edges)
    detected = m.lesion_score >= threshold
    sizes = [_size_label(float(s), edges, labels) for s in m.lesion_size_mm]
    extra = [x for x in (f"< {_fmt_edge(edges[0])}", UNKNOWN) if x in sizes]
    by_size = _group_sensitivity(sizes, detected, order=[*labels, *extra])

    reported = m.fp_score >= threshold
    fp_total = FalsePositives(int(reported.sum()), m.n_images)
    profiles = np.asarray(m.image_profile, dtype=object)
    fp_profile = profiles[m.fp_image] if len(m.fp_image) else np.zeros(0, dtype=object)
    fp_by_profile = {
        p: FalsePositives(int(np.sum(reported & (fp_profile == p))), int(np.sum(profiles == p)))
        for p in sorted(set(m.image_profile))}
    kinds_present = sorted(set(m.mimic_kind))
    on_any = sum(1 for r, k in zip(reported, m.fp_mimic_kinds, strict=True) if r and k)
    fp_on_kind = {kind: FalsePositives(
        sum(1 for r, k in zip(reported, m.fp_mimic_kinds, strict=True) if r and kind in k),
        m.n_images) for kind in kinds_present}
    mk = np.asarray(m.mimic_kind, dtype=object)
    flagged = m.mimic_best_fp_score >= threshold
    mimics_flagged = {kind: Sensitivity(int(np.sum(flagged[mk == kind])), int(np.sum(mk == kind)))
                      for kind in kinds_present}
    return ThresholdReport(
        threshold=float(threshold),
        overall=Sensitivity(int(detected.sum()), len(detected)),
        by_size=by_size,
        by_kind=_group_sensitivity(m.lesion_kind, detected),
        by_profile=_group_sensitivity(m.lesion_profile, detected),
        false_positives=fp_total,
        fp_by_profile=fp_by_profile,
        fp_on_mimics=FalsePositives(on_any, m.n_images),
        fp_on_mimic_kind=fp_on_kind,
        mimics_flagged=mimics_flagged,
    )


def sensitivity_at(truths: Sequence[Truth], predictions: Sequence[Prediction], threshold: float,
                   size_bins_mm: Sequence[float] = DEFAULT_SIZE_BINS_MM) -> ThresholdReport:
    """Sensitivity and false positives at one score threshold, broken down.

    Sensitivity overall, by lesion size (``size_bins_mm`` are ascending lower edges: the bins
    are ``[e0, e1), ..., [e_last, inf)`` in mm), by ``lesion_kind`` and by ``profile``; false
    positives per image overall and per profile, and how many lie on mimics, per mimic kind.
    Returns a :class:`ThresholdReport`.
    """
    return _at_threshold(_match(truths, predictions), threshold, size_bins_mm)


# --------------------------------------------------------------------------- COCO AP

def average_precision(truths: Sequence[Truth], predictions: Sequence[Prediction],
                      iou_thresholds: Sequence[float] = DEFAULT_AP_IOUS,
                      max_detections: int = 100) -> dict[float, float]:
    """COCO-style average precision at each IoU threshold: ``{iou: ap}``.

    Computed by MONAI (``monai.apps.detection.metrics.matching.matching_batch`` and
    ``coco.COCOMetric``), with :func:`box_iou` (x2/y2 exclusive) as the overlap: per image,
    predictions (the ``max_detections`` highest-scoring ones) are matched greedily in score
    order, each to the unmatched true box of highest IoU ``>= iou``; unmatched predictions are
    false positives. Precision is made monotone and read at 101 recall points 0, 0.01, ..., 1
    (0 beyond the highest recall reached) and averaged, as in pycocotools. One class: every
    true box is a lesion. The hit rule of this module (centre inside) is *not* used here.
    AP is nan when the data set has no lesion.
    """
    m = _match(truths, predictions)  # validates the inputs
    ious = [float(t) for t in iou_thresholds]
    if not ious:
        return {}
    if len(m.lesion_score) == 0:
        return dict.fromkeys(ious, math.nan)

    from monai.apps.detection.metrics.coco import COCOMetric
    from monai.apps.detection.metrics.matching import matching_batch

    # iou_range collapsed onto one listed value so the thresholds are exactly ``ious``.
    metric = COCOMetric(classes=["filling_defect"], iou_list=ious,
                        iou_range=(ious[0], ious[0], 1.0), max_detection=[max_detections],
                        per_class=False, verbose=False)
    gt = [_as_boxes(t.get("boxes"), "boxes", _image_id(t, i)) for i, t in enumerate(truths)]
    pb = [_as_boxes(p.get("boxes"), "predicted boxes", _image_id(truths[i], i))
          for i, p in enumerate(predictions)]
    ps = [np.asarray(p.get("scores", []), dtype=np.float64).reshape(-1) for p in predictions]
    matched = matching_batch(
        iou_fn=box_iou, iou_thresholds=metric.get_iou_thresholds(),
        pred_boxes=pb, pred_classes=[np.zeros(len(b), dtype=np.int64) for b in pb],
        pred_scores=ps, gt_boxes=gt, gt_classes=[np.zeros(len(b), dtype=np.int64) for b in gt],
        max_detections=max_detections)
    values, _ = metric(matched)
    return {t: float(values[f"AP_IoU_{t:.2f}_MaxDet_{max_detections}"]) for t in ious}


# --------------------------------------------------------------------------- report

def _num(v: float) -> float | None:
    """JSON-safe float: nan and inf become None."""
    return float(v) if math.isfinite(v) else None


def _sens_json(s: Sensitivity) -> dict[str, Any]:
    return {"detected": s.detected, "lesions": s.lesions, "sensitivity": _num(s.value)}


def _fp_json(f: FalsePositives) -> dict[str, Any]:
    return {"count": f.count, "images": f.images, "per_image": _num(f.per_image)}


def evaluate(truths: Sequence[Truth], predictions: Sequence[Prediction], threshold: float,
             fp_rates: Sequence[float] = DEFAULT_FP_RATES,
             size_bins_mm: Sequence[float] = DEFAULT_SIZE_BINS_MM,
             ap_ious: Sequence[float] = DEFAULT_AP_IOUS) -> dict[str, Any]:
    """Everything above in one JSON-serializable report (``json.dumps(..., allow_nan=False)``).

    Keys: ``hit_rule``; ``images``, ``normal_images``, ``lesions``, ``predictions``;
    ``froc`` (``fp_rates``, ``sensitivity``, ``thresholds`` at each rate, ``cpm`` and the full
    ``curve``: ``thresholds``, ``sensitivity``, ``fp_per_image``); ``ap`` (``{"0.1": ...}``);
    ``at_threshold`` (``threshold``, ``overall``, ``by_size``, ``by_kind``, ``by_profile`` as
    ``{detected, lesions, sensitivity}``; ``false_positives``, ``fp_by_profile``,
    ``fp_on_mimics``, ``fp_on_mimic_kind`` as ``{count, images, per_image}``;
    ``mimics_flagged`` as ``{flagged, mimics, fraction}``). Undefined values (sensitivity
    without lesions, an infinite threshold) are ``None``.
    """
    m = _match(truths, predictions)
    fr = _froc(m, fp_rates)
    at = _at_threshold(m, threshold, size_bins_mm)
    ap = average_precision(truths, predictions, ap_ious)
    return {
        "hit_rule": HIT_RULE,
        "images": m.n_images,
        "normal_images": sum(1 for t in truths if not t.get("boxes")),
        "lesions": fr.n_lesions,
        "predictions": int(m.all_scores.size),
        "froc": {
            "fp_rates": list(fr.fp_rates),
            "sensitivity": [_num(v) for v in fr.sensitivity_at_rates],
            "thresholds": [_num(v) for v in fr.thresholds_at_rates],
            "cpm": _num(fr.cpm),
            "curve": {
                "thresholds": [float(v) for v in fr.thresholds],
                "sensitivity": [_num(float(v)) for v in fr.sensitivity],
                "fp_per_image": [float(v) for v in fr.fp_per_image],
            },
        },
        "ap": {f"{t:g}": _num(v) for t, v in ap.items()},
        "at_threshold": {
            "threshold": float(threshold),
            "overall": _sens_json(at.overall),
            "by_size": {k: _sens_json(v) for k, v in at.by_size.items()},
            "by_kind": {k: _sens_json(v) for k, v in at.by_kind.items()},
            "by_profile": {k: _sens_json(v) for k, v in at.by_profile.items()},
            "false_positives": _fp_json(at.false_positives),
            "fp_by_profile": {k: _fp_json(v) for k, v in at.fp_by_profile.items()},
            "fp_on_mimics": _fp_json(at.fp_on_mimics),
            "fp_on_mimic_kind": {k: _fp_json(v) for k, v in at.fp_on_mimic_kind.items()},
            "mimics_flagged": {k: {"flagged": v.detected, "mimics": v.lesions,
                                   "fraction": _num(v.value)}
                               for k, v in at.mimics_flagged.items()},
        },
    }


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _f(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _ci(interval: Sequence[float] | None, fmt: Callable[[float | None], str]) -> str:
    return "–" if interval is None else f"{fmt(interval[0])} – {fmt(interval[1])}"


def format_tables(report: Mapping[str, Any]) -> list[Table]:
    """Rich tables for the CLI from an :func:`evaluate` report.

    In order: FROC (sensitivity and threshold at each FP/image rate, CPM, and their bootstrap
    confidence intervals when the report's ``froc`` has a ``ci``), COCO AP, sensitivity
    at the report's threshold by size / kind / profile, and false positives per image (overall,
    per profile, on mimics, per mimic kind, mimics flagged).
    """
    fr = report["froc"]
    ci = fr.get("ci")
    caption = f"CPM {_f(fr['cpm'])}"
    if ci:
        caption += (f" ({100 * ci['level']:g} % CI {_ci(ci['cpm'], _f)}; {ci['resamples']} "
                    f"bootstrap resamples of {ci['patients']} patients)")
    t_froc = Table(title=f"FROC ({report['images']} images, {report['lesions']} lesions)",
                   caption=caption)
    t_froc.add_column("FP / image", justify="right")
    t_froc.add_column("sensitivity", justify="right")
    if ci:
        t_froc.add_column(f"{100 * ci['level']:g} % CI", justify="right")
    t_froc.add_column("threshold", justify="right")
    for k, (rate, sens, thr) in enumerate(zip(fr["fp_rates"], fr["sensitivity"],
                                              fr["thresholds"], strict=True)):
        interval = [_ci(ci["sensitivity"][k], _pct)] if ci else []
        t_froc.add_row(f"{rate:g}", _pct(sens), *interval, _f(thr))

    t_ap = Table(title="COCO AP (101-point)")
    t_ap.add_column("IoU", justify="right")
    t_ap.add_column("AP", justify="right")
    for iou, ap in report["ap"].items():
        t_ap.add_row(iou, _f(ap))

    at = report["at_threshold"]
    t_sens = Table(title=f"Sensitivity at threshold {at['threshold']:.3g}")
    t_sens.add_column("group")
    t_sens.add_column("", justify="left")
    t_sens.add_column("detected / lesions", justify="right")
    t_sens.add_column("sensitivity", justify="right")
    ov = at["overall"]
    t_sens.add_row("all", "", f"{ov['detected']} / {ov['lesions']}", _pct(ov["sensitivity"]))
    for section, key in (("size (mm)", "by_size"), ("kind", "by_kind"), ("profile", "by_profile")):
        t_sens.add_section()
        for name, s in at[key].items():
            t_sens.add_row(section, name, f"{s['detected']} / {s['lesions']}",
                           _pct(s["sensitivity"]))

    t_fp = Table(title=f"False positives at threshold {at['threshold']:.3g}")
    t_fp.add_column("group")
    t_fp.add_column("", justify="left")
    t_fp.add_column("FPs / images", justify="right")
    t_fp.add_column("FP / image", justify="right")
    fp = at["false_positives"]
    t_fp.add_row("all", "", f"{fp['count']} / {fp['images']}", _f(fp["per_image"]))
    t_fp.add_section()
    for name, f in at["fp_by_profile"].items():
        t_fp.add_row("profile", name, f"{f['count']} / {f['images']}", _f(f["per_image"]))
    t_fp.add_section()
    om = at["fp_on_mimics"]
    t_fp.add_row("on mimics", "any", f"{om['count']} / {om['images']}", _f(om["per_image"]))
    for name, f in at["fp_on_mimic_kind"].items():
        flagged = at["mimics_flagged"].get(name)
        note = f" ({flagged['flagged']} of {flagged['mimics']} flagged)" if flagged else ""
        t_fp.add_row("on mimics", name + note, f"{f['count']} / {f['images']}",
                     _f(f["per_image"]))
    return [t_froc, t_ap, t_sens, t_fp]


# --------------------------------------------------------------------------- plot

def _stepwise(result: FrocResult, x: FloatArray) -> FloatArray:
    """Highest sensitivity with at most ``x`` FP per image, for each ``x`` (0 when none)."""
    if result.sensitivity.size == 0:
        return np.zeros_like(x)
    sens = np.maximum.accumulate(np.nan_to_num(result.sensitivity))  # fp ascending along k
    idx = np.searchsorted(result.fp_per_image, x + 1e-12, side="right") - 1
    out: FloatArray = np.where(idx >= 0, sens[np.clip(idx, 0, None)], 0.0)
    return out


def plot_froc(result_or_results: FrocResult | Mapping[str, FrocResult], path: str | Path,
              title: str = "FROC") -> Path:
    """Write a FROC plot as PNG to ``path`` and return the path.

    One curve for a :class:`FrocResult`, or one per entry of a ``{name: FrocResult}`` mapping
    (e.g. validation per epoch, fp32 vs int8), on one axis. The x axis (mean FP per image) is
    logarithmic and spans the results' ``fp_rates``; each curve is the stepwise FROC (best
    sensitivity at most x FP/image) with markers at the rates, its CPM in the legend.
    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = ({"": result_or_results} if isinstance(result_or_results, FrocResult)
               else dict(result_or_results))
    if not results:
        raise ValueError("plot_froc needs at least one FrocResult")
    rates = sorted({r for res in results.values() for r in res.fp_rates if r > 0}) or list(
        DEFAULT_FP_RATES)
    lo, hi = rates[0] / 2, rates[-1] * 2
    x = np.geomspace(lo, hi, 512)

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, res in results.items():
        label = f"{name}  CPM {res.cpm:.3f}" if name else f"CPM {res.cpm:.3f}"
        (line,) = ax.plot(x, _stepwise(res, x), label=label)
        marks = [r for r in res.fp_rates if r > 0]
        ax.plot(marks, _stepwise(res, np.asarray(marks, dtype=np.float64)), "o",
                color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(rates)
    ax.set_xticklabels([f"{r:g}" for r in rates])
    ax.minorticks_off()
    ax.set_xlabel("mean false positives per image")
    ax.set_ylabel("sensitivity (lesions detected)")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
