"""Run a released model on one intake image: preprocess -> ONNX Runtime -> decode -> boxes
in stored-image pixels. The single entry point that evaluation (and later every adapter)
calls, so what is evaluated is what is deployed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

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


def decoded_grid(image: Image) -> Image:
    """``image`` described on the grid of its ``pixels`` array: for a reduced-resolution
    decode (``decode_scale`` s > 1) rows/cols become the array's and the spacing s times
    coarser; otherwise ``image`` itself."""
    s = image.decode_scale
    if s == 1:
        return image
    spacing = None if image.spacing_mm is None else (image.spacing_mm[0] * s,
                                                      image.spacing_mm[1] * s)
    return replace(image, rows=int(image.pixels.shape[0]), cols=int(image.pixels.shape[1]),
                   spacing_mm=spacing, decode_scale=1)


def predict(image: Image, model: DetectorModel) -> RawDetections:
    """Detect filling defects in one image with ``model`` (all candidates, no threshold
    beyond the card's decode ``score_thresh``). Boxes are in stored pixels also for a
    reduced-resolution decode; ``transform`` then refers to the decoded grid."""
    t0 = time.perf_counter()
    grid = decoded_grid(image)
    prep = prepare(grid, model.preprocess)
    t1 = time.perf_counter()
    cls, reg = model.run(prep.array)
    t2 = time.perf_counter()
    boxes, scores, labels = decode(cls, reg, prep.array.shape, model.anchors, model.decode,
                                   clip_shape=prep.transform.model_shape)
    stored = prep.transform.model_to_stored(boxes) * np.float32(image.decode_scale)
    t3 = time.perf_counter()
    return RawDetections(boxes=stored, scores=scores, labels=labels, transform=prep.transform,
                         timings_ms={"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3,
                                     "postprocess": (t3 - t2) * 1e3})
