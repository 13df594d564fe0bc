"""Run a released model on one intake image: preprocess -> ONNX Runtime -> decode -> boxes
in stored-image pixels. The single entry point that evaluation (and later every adapter)
calls, so what is evaluated is what is deployed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from serving.pipeline.dicom_in import Image
from serving.pipeline.model import DetectorModel
from serving.pipeline.postprocess import decode
from serving.pipeline.preprocess import Transform, prepare


@dataclass
class RawDetections:
    """All detections above the card's decode score threshold, before any operating point.

    Attributes:
        boxes: ``(N, 4)`` ``[x1, y1, x2, y2]`` stored-image pixels (x = column, x2/y2
            exclusive), sorted by descending score.
        scores: ``(N,)`` foreground probability.
        labels: ``(N,)`` class index into the model's classes.
        transform: the stored <-> model-pixel mapping used.
        timings_ms: per stage (preprocess, inference, postprocess).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    transform: Transform
    timings_ms: dict[str, float] = field(default_factory=dict)

    def above(self, threshold: float) -> RawDetections:
        """Only the detections with ``score >= threshold``."""
        keep = self.scores >= threshold
        return RawDetections(self.boxes[keep], self.scores[keep], self.labels[keep],
                             self.transform, dict(self.timings_ms))


def predict(image: Image, model: DetectorModel) -> RawDetections:
    """Detect filling defects in one image with ``model`` (all candidates, no threshold
    beyond the card's decode ``score_thresh``)."""
    t0 = time.perf_counter()
    prep = prepare(image, model.preprocess)
    t1 = time.perf_counter()
    cls, reg = model.run(prep.array)
    t2 = time.perf_counter()
    boxes, scores, labels = decode(cls, reg, prep.array.shape, model.anchors, model.decode,
                                   clip_shape=prep.transform.model_shape)
    stored = prep.transform.model_to_stored(boxes)
    t3 = time.perf_counter()
    return RawDetections(boxes=stored, scores=scores, labels=labels, transform=prep.transform,
                         timings_ms={"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3,
                                     "postprocess": (t3 - t2) * 1e3})
