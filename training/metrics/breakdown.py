"""Sensitivity and false positives at one score threshold, broken down.

Sensitivity overall, by lesion size, by ``lesion_kind`` and by ``profile``; false positives
per image overall and per profile, and how many lie on mimics (air bubble, extravasation,
cyst), per mimic kind. Hit rule and inputs: :mod:`training.metrics`. A threshold ``t``
reports the predictions with ``score >= t``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from numpy.typing import NDArray

from training.metrics.counts import FalsePositives, Sensitivity
from training.metrics.matching import UNKNOWN, Matched, Prediction, Truth, match

__all__ = [
    "DEFAULT_SIZE_BINS_MM",
    "ThresholdReport",
    "sensitivity_at",
    "size_bin_labels",
    "threshold_report",
]

DEFAULT_SIZE_BINS_MM: tuple[float, ...] = (1.5, 3.0, 5.0, 10.0)
"""Lower edges of the lesion-size bins in mm: [1.5, 3), [3, 5), [5, 10), [10, inf)."""


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


def threshold_report(m: Matched, threshold: float,
                     size_bins_mm: Sequence[float]) -> ThresholdReport:
    """The :class:`ThresholdReport` of matched marks at ``threshold`` (see
    :func:`sensitivity_at`).

    Raises:
        ValueError: ``size_bins_mm`` empty or not strictly ascending.
    """
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
    return threshold_report(match(truths, predictions), threshold, size_bins_mm)
