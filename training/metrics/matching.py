"""The hit rule and the matching of predictions to true lesions, image by image.

Boxes are ``[x1, y1, x2, y2]`` stored-image pixels (x = column, x2/y2 exclusive); see
:mod:`training.metrics` for the inputs and the hit rule in full.

- :func:`box_iou` and :func:`hits`: the overlap and the hit rule as ``(N, M)`` matrices.
- :func:`match`: the rule applied to every image, pooled into one :class:`Matched` (what
  :mod:`~training.metrics.froc` and :mod:`~training.metrics.breakdown` read);
  :func:`scored_marks` is its per-lesion / per-false-positive view for resampling.
- :func:`check_pairs`, :func:`image_id`, :func:`as_boxes`, :func:`prediction_arrays`,
  :func:`image_arrays`, :func:`mimic_boxes` and :func:`best_hit_scores`: the input checks and
  per-image steps that :mod:`training.mimic_metrics` and :mod:`training.metrics.frames` share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from serving.pipeline.boxes import box_areas, box_centres, box_intersections

__all__ = [
    "HIT_IOU",
    "HIT_RULE",
    "UNKNOWN",
    "FloatArray",
    "Matched",
    "Prediction",
    "Truth",
    "as_boxes",
    "best_hit_scores",
    "box_iou",
    "check_pairs",
    "hits",
    "image_arrays",
    "image_id",
    "match",
    "mimic_boxes",
    "pool_matches",
    "prediction_arrays",
    "scored_marks",
]

HIT_IOU = 0.3
"""IoU at or above which a prediction hits a true lesion (or a mimic), centre rule aside."""

HIT_RULE = (
    "a prediction hits a true lesion when its box centre lies inside the true box or IoU >= 0.3; "
    "each lesion counts once (its highest-scoring hit); predictions hitting no lesion are false "
    "positives; further hits on an already-hit lesion are neither (LUNA16 FROC practice)"
)
"""The hit rule in one sentence, as written into every report."""

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
    inter = box_intersections(a, b)
    union = box_areas(a)[:, None] + box_areas(b)[None, :] - inter
    out: FloatArray = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return out


def hits(pred_boxes: ArrayLike, true_boxes: ArrayLike, iou: float = HIT_IOU) -> NDArray[np.bool_]:
    """The hit rule as a ``(N, M)`` boolean matrix: prediction ``i`` hits true box ``j``.

    True when the centre of predicted box ``i`` lies inside true box ``j`` (half-open,
    ``x1 <= cx < x2``, ``y1 <= cy < y2``) or their IoU is ``>= iou``.
    """
    p = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    t = np.asarray(true_boxes, dtype=np.float64).reshape(-1, 4)
    centres = box_centres(p)
    cx, cy = centres[:, 0], centres[:, 1]
    inside = ((t[None, :, 0] <= cx[:, None]) & (cx[:, None] < t[None, :, 2])
              & (t[None, :, 1] <= cy[:, None]) & (cy[:, None] < t[None, :, 3]))
    result: NDArray[np.bool_] = inside | (box_iou(p, t) >= iou)
    return result


def best_hit_scores(scores: FloatArray, hit: NDArray[np.bool_]) -> FloatArray:
    """Per column of ``hit`` (``(N, M)``, e.g. from :func:`hits`) the highest of ``scores``
    (``(N,)``) among the rows that hit it: ``(M,)``, ``-inf`` where no row does."""
    masked = np.where(hit, np.asarray(scores, dtype=np.float64)[:, None], -math.inf)
    out: FloatArray = masked.max(axis=0, initial=-math.inf)
    return out


# --------------------------------------------------------------------------- inputs

def check_pairs(truths: Sequence[Any], predictions: Sequence[Any]) -> None:
    """Raise ``ValueError`` unless there is one prediction per truth, and at least one."""
    if len(truths) != len(predictions):
        raise ValueError(f"{len(truths)} truths but {len(predictions)} predictions: "
                         "give one prediction per image, in the same order")
    if not truths:
        raise ValueError("no images to evaluate")


def image_id(truth: Truth, index: int) -> str:
    """The item's ``image`` (its id in error messages), else ``#<index>``."""
    return str(truth.get("image", f"#{index}"))


def as_boxes(value: Any, what: str, image: str) -> FloatArray:
    """``value`` as ``(N, 4)`` float64 boxes (``(0, 4)`` for ``None`` or empty).

    Raises:
        ValueError: not ``(N, 4)``, or a non-finite coordinate; the message names ``image``
            and ``what``.
    """
    arr = np.asarray(value if value is not None else [], dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{image}: {what} must be (N, 4) [x1, y1, x2, y2], got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{image}: {what} contain non-finite coordinates")
    return arr


def prediction_arrays(pred: Mapping[str, Any], image: str) -> tuple[FloatArray, FloatArray]:
    """A prediction's ``boxes`` ``(N, 4)`` and ``scores`` ``(N,)`` as float64, checked.

    Raises:
        ValueError: bad boxes (see :func:`as_boxes`), a score count that differs from the box
            count, or a non-finite score.
    """
    pb = as_boxes(pred.get("boxes"), "predicted boxes", image)
    scores = np.asarray(pred.get("scores", []), dtype=np.float64).reshape(-1)
    if scores.shape[0] != pb.shape[0]:
        raise ValueError(f"{image}: {pb.shape[0]} predicted boxes but {scores.shape[0]} scores")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{image}: predicted scores must be finite")
    return pb, scores


def image_arrays(truth: Truth, pred: Prediction, index: int
                 ) -> tuple[str, FloatArray, FloatArray, FloatArray]:
    """One item's id and arrays, checked: ``(image, true_boxes, pred_boxes, scores)`` with
    ``true_boxes`` ``(M, 4)``, ``pred_boxes`` ``(N, 4)`` and ``scores`` ``(N,)`` float64;
    ``image`` is :func:`image_id` (``index`` is the item's position).

    Raises:
        ValueError: as :func:`as_boxes` (the truth's ``boxes``) and :func:`prediction_arrays`.
    """
    image = image_id(truth, index)
    gt = as_boxes(truth.get("boxes"), "boxes", image)
    pb, scores = prediction_arrays(pred, image)
    return image, gt, pb, scores


def mimic_boxes(truth: Truth, image: str) -> tuple[FloatArray, list[str]]:
    """The truth's ``mimics``: their boxes ``(K, 4)`` and kinds (``"unknown"`` when absent)."""
    mimics = list(truth.get("mimics") or [])
    boxes = as_boxes([m["box"] for m in mimics], "mimic boxes", image)
    return boxes, [str(m.get("kind", UNKNOWN)) for m in mimics]


def _per_box(truth: Truth, key: str, n: int, image: str) -> list[Any] | None:
    values = truth.get(key)
    if values is None:
        return None
    if len(values) != n:
        raise ValueError(f"{image}: {key} has {len(values)} entries for {n} boxes")
    return list(values)


# --------------------------------------------------------------------------- matching

@dataclass(frozen=True)
class Matched:
    """Every lesion and every false positive of a data set, pooled over images.

    ``lesion_score[j]`` is the score of the highest-scoring prediction hitting lesion ``j``
    (``-inf`` when none does); ``fp_score[k]`` the score of false positive ``k``. Arrays
    indexed by lesion have one entry per true box of the data set, in item order; those
    indexed by false positive one per false positive.
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


def match(truths: Sequence[Truth], predictions: Sequence[Prediction]) -> Matched:
    """Apply the hit rule to every image (see :mod:`training.metrics`) and pool the results.

    Raises:
        ValueError: the inputs break the conventions of :mod:`training.metrics` (lengths,
            box shapes, non-finite values, per-box lists of the wrong length).
    """
    return pool_matches(truths, predictions, _image_hits, _image_mimic_hits)


def _image_hits(truth: Truth, pred: Prediction, index: int
                ) -> tuple[FloatArray, NDArray[np.bool_]]:
    _, gt, pb, scores = image_arrays(truth, pred, index)
    return scores, hits(pb, gt)


def _image_mimic_hits(truth: Truth, pred: Prediction, index: int, fp: NDArray[np.bool_]
                      ) -> tuple[NDArray[np.bool_], list[str]]:
    image = image_id(truth, index)
    pb, _ = prediction_arrays(pred, image)
    mboxes, mkinds = mimic_boxes(truth, image)
    return hits(pb[fp], mboxes), mkinds


def pool_matches(
    truths: Sequence[Truth],
    predictions: Sequence[Prediction],
    image_hits: Callable[[Truth, Prediction, int], tuple[FloatArray, NDArray[np.bool_]]],
    mimic_hits: Callable[[Truth, Prediction, int, NDArray[np.bool_]],
                         tuple[NDArray[np.bool_], list[str]]],
) -> Matched:
    """Apply a hit rule to every image (or volume) and pool the results into a
    :class:`Matched`; :func:`match` (boxes) and :func:`training.metrics.frames.match_volumes`
    (boxes and frames) differ only in the rule.

    ``image_hits(truth, pred, index)`` gives the prediction scores ``(N,)`` and the rule's
    ``(N, M)`` matrix against the item's ``M`` lesions; ``mimic_hits(truth, pred, index, fp)``
    the ``(n_fp, K)`` matrix of the false positives (``fp``, a mask of the ``N``
    predictions) against the item's ``K`` mimics, and the mimics' kinds. ``index`` is the
    item's position (for :func:`image_id` in errors).

    Raises:
        ValueError: ``truths`` and ``predictions`` differ in length, a per-box list
            (``lesion_size_mm``, ``lesion_kind``) has the wrong length, or as the rules raise.
    """
    check_pairs(truths, predictions)
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
        image = image_id(truth, i)
        profile = str(truth.get("profile") or UNKNOWN)
        image_profile.append(profile)
        scores, hit = image_hits(truth, pred, i)  # (N,), (N, M)
        all_scores.append(scores)
        n = hit.shape[1]
        sizes = _per_box(truth, "lesion_size_mm", n, image)
        kinds = _per_box(truth, "lesion_kind", n, image)
        lesion_score.extend(best_hit_scores(scores, hit).tolist())
        for j in range(n):
            lesion_image.append(i)
            lesion_size.append(float(sizes[j]) if sizes is not None else math.nan)
            lesion_kind.append(str(kinds[j]) if kinds is not None else UNKNOWN)
            lesion_profile.append(profile)

        fp = np.asarray(~hit.any(axis=1), dtype=np.bool_)
        on_mimic, mkinds = mimic_hits(truth, pred, i, fp)  # (n_fp, n_mimics)
        for k, s in enumerate(scores[fp]):
            fp_score.append(float(s))
            fp_image.append(i)
            fp_kinds.append(frozenset(mkinds[m] for m in np.flatnonzero(on_mimic[k])))
        mimic_kind.extend(mkinds)
        mimic_best.extend(best_hit_scores(scores[fp], on_mimic).tolist())
    return Matched(
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
    """The hit rule applied image by image (see :mod:`training.metrics`), for resampling.

    Returns:
        ``(lesion_score, lesion_image, fp_score, fp_image)``: per true lesion the score of its
        highest-scoring hit (``-inf`` when missed) and its image index; per false positive its
        score and image index.
    """
    m = match(truths, predictions)
    return m.lesion_score, m.lesion_image, m.fp_score, m.fp_image
