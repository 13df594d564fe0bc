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

Modules
-------
- :mod:`~training.metrics.matching`: the hit rule (:func:`hits`, :func:`box_iou`), the input
  checks and the pooled matching of every image (:func:`scored_marks`).
- :mod:`~training.metrics.froc`: the FROC curve, its reading at FP-per-image rates and the CPM
  (:func:`froc`, :class:`FrocResult`), and :func:`operating_point`.
- :mod:`~training.metrics.breakdown`: sensitivity and false positives at one threshold, by
  size, kind, profile and mimic (:func:`sensitivity_at`, :class:`ThresholdReport`).
- :mod:`~training.metrics.counts`: the tallies reports are made of (:class:`Sensitivity`,
  :class:`FalsePositives`).
- :mod:`~training.metrics.ap`: COCO AP through MONAI (:func:`average_precision`).
- :mod:`~training.metrics.report`: the JSON report (:func:`evaluate`) and the CLI's tables
  (:func:`format_tables`).
- :mod:`~training.metrics.plot`: the FROC plot (:func:`plot_froc`).
- :mod:`~training.metrics.frames`: the frame rule for tomosynthesis volumes (the 2D rule
  plus the candidate's best frame within the lesion's frame range +/- 2;
  :func:`frame_hits`, :func:`match_volumes`, FP per volume at :data:`VOLUME_FP_RATES`).

Every name below is importable from ``training.metrics`` as before the split.
"""

from __future__ import annotations

from training.metrics.ap import DEFAULT_AP_IOUS, average_precision
from training.metrics.breakdown import (
    DEFAULT_SIZE_BINS_MM,
    ThresholdReport,
    sensitivity_at,
    size_bin_labels,
)
from training.metrics.counts import FalsePositives, Sensitivity
from training.metrics.frames import (
    FRAME_HIT_RULE,
    FRAME_TOLERANCE,
    VOLUME_FP_RATES,
    best_hit_index,
    frame_hits,
    match_volumes,
    mimic_hit_scores,
)
from training.metrics.froc import DEFAULT_FP_RATES, FrocResult, froc, operating_point
from training.metrics.matching import HIT_IOU, HIT_RULE, box_iou, hits, scored_marks
from training.metrics.matching import UNKNOWN as UNKNOWN
from training.metrics.matching import FloatArray as FloatArray
from training.metrics.matching import Prediction as Prediction
from training.metrics.matching import Truth as Truth
from training.metrics.plot import plot_froc
from training.metrics.report import evaluate, format_tables

__all__ = [
    "DEFAULT_AP_IOUS",
    "DEFAULT_FP_RATES",
    "DEFAULT_SIZE_BINS_MM",
    "FRAME_HIT_RULE",
    "FRAME_TOLERANCE",
    "HIT_IOU",
    "HIT_RULE",
    "VOLUME_FP_RATES",
    "FalsePositives",
    "FrocResult",
    "Sensitivity",
    "ThresholdReport",
    "average_precision",
    "best_hit_index",
    "box_iou",
    "evaluate",
    "format_tables",
    "frame_hits",
    "froc",
    "hits",
    "match_volumes",
    "mimic_hit_scores",
    "operating_point",
    "plot_froc",
    "scored_marks",
    "sensitivity_at",
    "size_bin_labels",
]
