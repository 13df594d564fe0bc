"""Free-response ROC over a data set: the curve, its reading at FP-per-image rates, the CPM,
and operating points chosen on it.

Sensitivity is the fraction of true lesions detected (hit rule of
:mod:`training.metrics.matching`); false positives are counted per image, mean over all
images (normal ones included). A threshold ``t`` reports the predictions with ``score >= t``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.metrics.matching import FloatArray, Matched, Prediction, Truth, match

__all__ = [
    "DEFAULT_FP_RATES",
    "FrocResult",
    "froc",
    "froc_curve",
    "froc_of",
    "operating_point",
]

DEFAULT_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
"""Mean false positives per image at which the FROC sensitivity is read (LUNA16's rates)."""


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


def froc_curve(m: Matched) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The full curve of matched marks: ``(thresholds, sensitivity, fp_per_image)``, each
    ``(K,)``, one point per distinct prediction score, thresholds descending (see
    :class:`FrocResult`)."""
    thresholds = np.unique(m.all_scores)[::-1].astype(np.float64)
    lesions = np.sort(m.lesion_score)
    fps = np.sort(m.fp_score)
    # count of values >= t in a sorted array = len - searchsorted(left)
    detected = len(lesions) - np.searchsorted(lesions, thresholds, side="left")
    n_fp = len(fps) - np.searchsorted(fps, thresholds, side="left")
    sens = (detected / len(lesions) if len(lesions)
            else np.full(thresholds.shape, math.nan))
    return thresholds, sens.astype(np.float64), (n_fp / m.n_images).astype(np.float64)


def froc_of(m: Matched, fp_rates: Sequence[float]) -> FrocResult:
    """The :class:`FrocResult` of matched marks, read at ``fp_rates`` (see :func:`froc`).

    Raises:
        ValueError: a rate that is negative or not finite.
    """
    thresholds, sens, fppi = froc_curve(m)
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

    See :mod:`training.metrics` for the hit rule. Returns a :class:`FrocResult`: the full curve
    (one point per distinct score), the stepwise sensitivity at each FP-per-image rate, the
    threshold that achieves it, and their mean (CPM).
    """
    return froc_of(match(truths, predictions), fp_rates)


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

