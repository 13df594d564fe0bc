"""The frame rule: the hit rule of :mod:`training.metrics` for tomosynthesis (DBT) volumes.

A DBT volume is a stack of reconstructed planes; a lesion is sharp in the plane at its height
and blurred in the planes above and below. A detection on the right spot of the wrong plane
has not found the lesion's height, and the height is what a single DBT view adds (it gives
the clock face without a second view). So a detection must match in the plane *and* in depth.

Inputs
------
``truths``: DBT items of ``dataset.json`` (``galacto synth --dbt``, see
:mod:`training.synth.dataset`): as 2D items (``image``, ``boxes`` ``[x1, y1, x2, y2]`` stored
pixels of every frame, x = column, x2/y2 exclusive, ``lesion_kind``, ``lesion_size_mm``,
``profile``), plus ``frames`` (the number of frames) and, parallel to ``boxes``,
``frame_ranges``: ``[first, last]`` DICOM frame numbers (1-based, inclusive) of the planes the
lesion occupies. Each ``mimics`` entry may carry its own ``frame_range``; a mimic without one
matches at any frame.

``predictions``: one mapping per volume, same order: ``boxes`` ``(N, 4)`` and ``scores``
``(N,)`` as for 2D (one linked candidate per lesion,
:class:`serving.pipeline.tomo.TomoCandidate`: the best frame's box and the track's highest
score), plus ``best_frames`` ``(N,)``: the best frame of each candidate as a DICOM frame
number (1-based, ``TomoCandidate.best_frame_number``). Other keys are ignored here.

Frame rule
----------
Candidate ``i`` **hits** lesion ``j`` when the 2D rule holds for their boxes
(:func:`training.metrics.hits`: box centre inside the true box, or IoU >= 0.3) **and** the
candidate's best frame lies within the lesion's frame range widened by
:data:`FRAME_TOLERANCE` frames on both sides: ``first - 2 <= best <= last + 2``. The
tolerance allows for the blur of the reconstruction (a void still reads darkest a plane or
two beyond the planes the lesion occupies) and for a slab or stride that puts the best
detection on a neighbouring plane (slab 3 / stride 2: the centre frame is at most one plane
from any frame of its slab). The same rule places a false positive on a mimic.

Everything else is the 2D practice of :mod:`training.metrics` (LUNA16 FROC): each lesion
counts once, at its highest-scoring hit; a candidate hitting no lesion of its volume is a
false positive; further hits on a found lesion are neither. Rates are false positives per
**volume** (one DBT view), read at :data:`VOLUME_FP_RATES`, 0.125 to 8 as in LUNA16, whose
CPM averages these seven rates.

Source: the 2D hit rule of this project (:data:`training.metrics.HIT_RULE`), the LUNA16
evaluation (Setio et al., Med Image Anal 2017) for the FROC and CPM, and the frame-range
truth of ``galacto synth --dbt``; the ±2 frames are a working choice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from training.metrics.matching import (
    FloatArray,
    Matched,
    Prediction,
    Truth,
    as_boxes,
    best_hit_scores,
    check_pairs,
    hits,
    image_arrays,
    image_id,
    mimic_boxes,
    pool_matches,
    prediction_arrays,
)

__all__ = [
    "FRAME_HIT_RULE",
    "FRAME_TOLERANCE",
    "VOLUME_FP_RATES",
    "best_hit_index",
    "frame_hits",
    "lesion_frame_ranges",
    "match_volumes",
    "mimic_frame_ranges",
    "mimic_hit_scores",
    "prediction_frames",
    "volume_hits",
]

FRAME_TOLERANCE = 2
"""Frames by which a lesion's frame range is widened on each side for the frame rule."""

VOLUME_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""False positives per volume at which the DBT FROC is read (LUNA16's seven rates)."""

FRAME_HIT_RULE = (
    "a candidate hits a true lesion when the 2D rule holds for its box (centre inside the true "
    "box or IoU >= 0.3) and its best frame lies within the lesion's frame range +/- 2 frames; "
    "each lesion counts once (its highest-scoring hit); candidates hitting no lesion of their "
    "volume are false positives; further hits on an already-hit lesion are neither (LUNA16 "
    "FROC practice)"
)
"""The frame rule in one sentence, as written into every DBT report."""

IntArray = NDArray[np.int64]


def frame_hits(pred_boxes: ArrayLike, pred_frames: ArrayLike, true_boxes: ArrayLike,
               true_frame_ranges: ArrayLike, tolerance: int = FRAME_TOLERANCE
               ) -> NDArray[np.bool_]:
    """The frame rule as a ``(N, M)`` boolean matrix: candidate ``i`` hits true box ``j``.

    Args:
        pred_boxes: ``(N, 4)`` ``[x1, y1, x2, y2]`` stored pixels.
        pred_frames: ``(N,)`` each candidate's best frame (1-based frame number).
        true_boxes: ``(M, 4)`` stored pixels.
        true_frame_ranges: ``(M, 2)`` ``[first, last]`` 1-based frame numbers, inclusive.
        tolerance: frames added to both ends of each range, >= 0.

    Returns:
        ``hits(pred_boxes, true_boxes) & (first - tolerance <= frame <= last + tolerance)``.

    Raises:
        ValueError: a negative tolerance, or frames / ranges of the wrong shape.
    """
    if tolerance < 0:
        raise ValueError(f"frame tolerance must be >= 0 frames, got {tolerance!r}")
    frames = np.asarray(pred_frames, dtype=np.float64).reshape(-1)
    ranges = np.asarray(true_frame_ranges, dtype=np.float64).reshape(-1, 2)
    in_plane = hits(pred_boxes, true_boxes)
    if frames.shape[0] != in_plane.shape[0] or ranges.shape[0] != in_plane.shape[1]:
        raise ValueError(f"{in_plane.shape[0]} candidate boxes with {frames.shape[0]} frames, "
                         f"{in_plane.shape[1]} true boxes with {ranges.shape[0]} frame ranges")
    in_depth = ((ranges[None, :, 0] - tolerance <= frames[:, None])
                & (frames[:, None] <= ranges[None, :, 1] + tolerance))
    result: NDArray[np.bool_] = in_plane & in_depth
    return result


def best_hit_index(scores: ArrayLike, hit: NDArray[np.bool_]) -> IntArray:
    """Per column of ``hit`` (``(N, M)``) the row with the highest of ``scores`` (``(N,)``)
    among the rows that hit it (ties: the lower row), ``-1`` where none does: ``(M,)``."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    masked = np.where(hit, s[:, None], -math.inf)
    if masked.shape[0] == 0:
        return np.full(masked.shape[1], -1, dtype=np.int64)
    best = masked.argmax(axis=0).astype(np.int64)
    best[~hit.any(axis=0)] = -1
    return best


def _ranges(values: Sequence[Any], what: str, image: str, n_frames: int | None) -> IntArray:
    """``values`` as ``(K, 2)`` int64 ``[first, last]``, checked."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1, 2) if len(values) else np.zeros((0, 2))
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise ValueError(f"{image}: {what} must be whole frame numbers, got {values!r}")
    bad = (arr[:, 0] < 1) | (arr[:, 1] < arr[:, 0])
    if n_frames is not None:
        bad |= arr[:, 1] > n_frames
    if bad.any():
        raise ValueError(f"{image}: {what} {arr[bad][0].astype(int).tolist()} is not "
                         f"[first, last] with 1 <= first <= last"
                         + (f" <= {n_frames} frames" if n_frames is not None else ""))
    return arr.astype(np.int64)


def lesion_frame_ranges(truth: Truth, image: str) -> IntArray:
    """The truth's ``frame_ranges``, ``(M, 2)`` 1-based ``[first, last]``, one per box.

    Raises:
        ValueError: missing while the item has boxes, one range per box not given, or a
            range outside ``[1, frames]``.
    """
    n_boxes = len(truth.get("boxes") or [])
    values = truth.get("frame_ranges")
    if values is None:
        if n_boxes:
            raise ValueError(f"{image}: a DBT item with boxes needs frame_ranges")
        return np.zeros((0, 2), dtype=np.int64)
    if len(values) != n_boxes:
        raise ValueError(f"{image}: frame_ranges has {len(values)} entries for {n_boxes} boxes")
    frames = truth.get("frames")
    return _ranges(list(values), "frame range", image, int(frames) if frames else None)


def mimic_frame_ranges(truth: Truth, image: str) -> IntArray:
    """Per ``mimics`` entry its ``frame_range`` ``(K, 2)``; a mimic without one gets
    ``[1, frames]`` (every frame; ``[1, 2**31]`` when ``frames`` is unknown)."""
    frames = truth.get("frames")
    every = [1, int(frames) if frames else 2**31]
    values = [m.get("frame_range") or every for m in (truth.get("mimics") or [])]
    return _ranges(values, "mimic frame range", image, None)


def prediction_frames(pred: Mapping[str, Any], n: int, image: str) -> IntArray:
    """A prediction's ``best_frames`` ``(n,)`` as int64 (1-based frame numbers).

    Raises:
        ValueError: missing while there are candidates, or not one whole number per box.
    """
    values = pred.get("best_frames")
    if values is None:
        if n:
            raise ValueError(f"{image}: DBT predictions need best_frames (1-based)")
        return np.zeros(0, dtype=np.int64)
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise ValueError(f"{image}: {n} predicted boxes need {n} whole best_frames, got "
                         f"{arr.tolist()[:5]}")
    return arr.astype(np.int64)


def volume_hits(truth: Truth, pred: Prediction, index: int = 0,
                tolerance: int = FRAME_TOLERANCE) -> tuple[FloatArray, NDArray[np.bool_]]:
    """The candidates' ``scores`` ``(N,)`` and the frame rule ``(N, M)`` against the
    volume's lesions (see :func:`frame_hits`); ``index`` names the item in errors."""
    image, gt, pb, scores = image_arrays(truth, pred, index)
    hit = frame_hits(pb, prediction_frames(pred, len(pb), image), gt,
                     lesion_frame_ranges(truth, image), tolerance)
    return scores, hit


def match_volumes(truths: Sequence[Truth], predictions: Sequence[Prediction],
                  tolerance: int = FRAME_TOLERANCE) -> Matched:
    """Apply the frame rule to every volume and pool the results, as
    :func:`training.metrics.matching.match` does for images (``n_images`` counts volumes).

    Raises:
        ValueError: the inputs break the conventions above (lengths, shapes, frame ranges,
            missing ``best_frames``).
    """
    def mimic_hits(truth: Truth, pred: Prediction, index: int, fp: NDArray[np.bool_]
                   ) -> tuple[NDArray[np.bool_], list[str]]:
        image = image_id(truth, index)
        pb = as_boxes(pred.get("boxes"), "predicted boxes", image)
        frames = prediction_frames(pred, len(pb), image)
        mboxes, mkinds = mimic_boxes(truth, image)
        return frame_hits(pb[fp], frames[fp], mboxes, mimic_frame_ranges(truth, image),
                          tolerance), mkinds

    return pool_matches(truths, predictions,
                        lambda truth, pred, index: volume_hits(truth, pred, index, tolerance),
                        mimic_hits)


def mimic_hit_scores(truths: Sequence[Truth], predictions: Sequence[Prediction],
                     tolerance: int = FRAME_TOLERANCE) -> tuple[list[str], FloatArray]:
    """Per true mimic of every volume (in item order): its kind and the highest score of any
    candidate that hits it by the frame rule, false positive or not (``-inf`` when none): a
    mimic is *flagged* at threshold ``t`` when that score is ``>= t``."""
    check_pairs(truths, predictions)
    kinds: list[str] = []
    best: list[float] = []
    for i, (truth, pred) in enumerate(zip(truths, predictions, strict=True)):
        image = image_id(truth, i)
        pb, scores = prediction_arrays(pred, image)
        mboxes, mkinds = mimic_boxes(truth, image)
        hit = frame_hits(pb, prediction_frames(pred, len(pb), image), mboxes,
                         mimic_frame_ranges(truth, image), tolerance)
        kinds.extend(mkinds)
        best.extend(best_hit_scores(scores, hit).tolist())
    return kinds, np.asarray(best, dtype=np.float64)
