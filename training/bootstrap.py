"""Bootstrap confidence intervals for the FROC sensitivities and the CPM, resampling patients.

Real test sets are small, and the images of one patient (two views, several studies) are not
independent, so the resampling unit is the patient: each resample draws as many patients as
the set has, with replacement, and keeps all their images. On each resample the FROC is
computed exactly as :func:`training.metrics.froc` does (same hit rule, stepwise reading: the
highest sensitivity with at most ``r`` false positives per image, 0 when no threshold
qualifies) at each rate ``r``, and the CPM is their mean. The interval is the percentile
interval (2.5th and 97.5th percentiles for 95 %) over the resamples; resamples that happen to
contain no lesion are left out of the sensitivity percentiles. Fixed seed: same data, same
intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from training.metrics import Prediction, Truth, scored_marks

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
_BATCH = 100  # resamples per matrix product


@dataclass(frozen=True)
class PatientCounts:
    """Per patient (rows) and descending score threshold (columns): ``detected`` lesions and
    false ``positives`` at ``score >= threshold``; ``lesions`` and ``images`` per patient."""

    detected: NDArray[np.float64]
    positives: NDArray[np.float64]
    lesions: NDArray[np.float64]
    images: NDArray[np.float64]


def patient_counts(truths: Sequence[Truth], predictions: Sequence[Prediction],
                   patients: Sequence[str]) -> PatientCounts:
    """Count each patient's detected lesions and false positives at every threshold.

    Raises:
        ValueError: ``patients`` is not one name per image (or the metrics' own errors).
    """
    if len(patients) != len(truths):
        raise ValueError(f"{len(patients)} patient names for {len(truths)} images; expected "
                         f"one per image")
    l_score, l_image, f_score, f_image = scored_marks(truths, predictions)
    names = sorted(set(patients))
    row = {p: i for i, p in enumerate(names)}
    image_row = np.array([row[p] for p in patients], dtype=np.int64)
    scores = np.concatenate([l_score[np.isfinite(l_score)], f_score])
    thresholds = np.unique(scores)[::-1]
    detected = np.zeros((len(names), thresholds.size))
    positives = np.zeros((len(names), thresholds.size))
    for r in range(len(names)):
        own_l = np.sort(l_score[image_row[l_image] == r])
        own_f = np.sort(f_score[image_row[f_image] == r])
        detected[r] = own_l.size - np.searchsorted(own_l, thresholds, side="left")
        positives[r] = own_f.size - np.searchsorted(own_f, thresholds, side="left")
    lesions = np.bincount(image_row[l_image], minlength=len(names)).astype(np.float64)
    images = np.bincount(image_row, minlength=len(names)).astype(np.float64)
    return PatientCounts(detected, positives, lesions, images)


def froc_of_weights(counts: PatientCounts, weights: NDArray[np.float64],
                    fp_rates: Sequence[float]) -> NDArray[np.float64]:
    """Stepwise FROC sensitivities of weighted patient sets.

    Args:
        counts: from :func:`patient_counts`.
        weights: ``(B, P)`` how many times each patient is drawn in each of ``B`` resamples.
        fp_rates: the FP-per-image rates.

    Returns:
        ``(B, len(fp_rates))`` sensitivities (nan for a resample without lesions).
    """
    lesions = weights @ counts.lesions
    images = weights @ counts.images
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = (weights @ counts.detected) / lesions[:, None]
        fppi = (weights @ counts.positives) / images[:, None]
    out = np.zeros((weights.shape[0], len(fp_rates)))
    rows = np.arange(weights.shape[0])
    for j, rate in enumerate(fp_rates):
        last = np.sum(fppi <= rate + 1e-12, axis=1) - 1  # fppi grows along the thresholds
        if sens.shape[1]:
            out[:, j] = np.where(last >= 0, sens[rows, np.clip(last, 0, None)], 0.0)
    out[lesions == 0] = math.nan
    return out


def _interval(values: NDArray[np.float64], level: float) -> list[float] | None:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return [round(float(lo), 4), round(float(hi), 4)]


def bootstrap_froc(truths: Sequence[Truth], predictions: Sequence[Prediction],
                   patients: Sequence[str], fp_rates: Sequence[float],
                   resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                   level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """Percentile bootstrap intervals of the FROC sensitivities and the CPM over patients.

    Args:
        truths, predictions: as for :func:`training.metrics.froc`.
        patients: the patient of each image (same order).
        fp_rates: FP-per-image rates of the FROC reading.
        resamples: number of resamples (>= 1).
        seed: seed of the resampling.
        level: coverage, e.g. 0.95.

    Returns:
        JSON: ``method``, ``level``, ``resamples``, ``seed``, ``patients``, ``sensitivity``
        (``[low, high]`` per rate, ``None`` when undefined) and ``cpm`` (``[low, high]``).

    Raises:
        ValueError: ``resamples < 1``, ``level`` outside (0, 1), or bad inputs.
    """
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"expected resamples >= 1 and 0 < level < 1, got {resamples}, {level}")
    counts = patient_counts(truths, predictions, patients)
    n = counts.images.size
    rng = np.random.default_rng(seed)
    sens = []
    for start in range(0, resamples, _BATCH):
        b = min(_BATCH, resamples - start)
        draws = rng.integers(0, n, size=(b, n))
        weights = np.stack([np.bincount(d, minlength=n) for d in draws]).astype(np.float64)
        sens.append(froc_of_weights(counts, weights, fp_rates))
    all_sens = np.concatenate(sens)
    cpm = all_sens.mean(axis=1) if fp_rates else np.full(resamples, math.nan)
    return {"method": "percentile bootstrap, patients resampled with replacement",
            "level": level, "resamples": resamples, "seed": seed, "patients": n,
            "sensitivity": [_interval(all_sens[:, j], level) for j in range(len(fp_rates))],
            "cpm": _interval(cpm, level)}
