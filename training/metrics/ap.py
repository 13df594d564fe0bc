"""COCO-style average precision, computed by MONAI's detection metrics.

Not the hit rule of :mod:`training.metrics`: the usual one-to-one greedy matching by IoU alone,
at each IoU threshold, with :func:`~training.metrics.matching.box_iou` (boxes
``[x1, y1, x2, y2]``, x2/y2 exclusive) as the overlap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from training.metrics.matching import (
    Prediction,
    Truth,
    as_boxes,
    box_iou,
    image_id,
    match,
    prediction_arrays,
)

__all__ = ["DEFAULT_AP_IOUS", "average_precision"]

DEFAULT_AP_IOUS: tuple[float, ...] = (0.1, 0.3, 0.5)
"""IoU thresholds at which COCO-style AP is reported."""


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
    true box is a lesion. The hit rule of :mod:`training.metrics` (centre inside) is *not*
    used here.
    AP is nan when the data set has no lesion.
    """
    m = match(truths, predictions)  # validates the inputs
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
    gt = [as_boxes(t.get("boxes"), "boxes", image_id(t, i)) for i, t in enumerate(truths)]
    pairs = [prediction_arrays(p, image_id(truths[i], i)) for i, p in enumerate(predictions)]
    pb = [b for b, _ in pairs]
    ps = [s for _, s in pairs]
    matched = matching_batch(
        iou_fn=box_iou, iou_thresholds=metric.get_iou_thresholds(),
        pred_boxes=pb, pred_classes=[np.zeros(len(b), dtype=np.int64) for b in pb],
        pred_scores=ps, gt_boxes=gt, gt_classes=[np.zeros(len(b), dtype=np.int64) for b in gt],
        max_detections=max_detections)
    values, _ = metric(matched)
    return {t: float(values[f"AP_IoU_{t:.2f}_MaxDet_{max_detections}"]) for t in ious}
