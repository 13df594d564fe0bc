"""Tomosynthesis (DBT) dataset items through serving's volume pipeline, as predictions for
:mod:`training.metrics.frames`.

What is measured is what serving does with a request's volumes (:func:`serving.pipeline.
detect.detect`): each volume through :func:`serving.pipeline.detect_volume.analyse_volume`
(the 2D detector on slabs, candidates linked in depth, refocused, nested tracks suppressed,
located from the single view), then the volumes of one study rescored together with their
other views (:func:`serving.pipeline.volume_rescore.rescore_volumes`, the card's
``tomosynthesis.rescoring`` unless told otherwise). Items are grouped into studies by
:func:`training.datasets.study_groups`, as a PACS sends them.

Boxes are ``[x1, y1, x2, y2]`` stored pixels of a frame (x = column, x2/y2 exclusive); frame
numbers are 1-based (DICOM), as in ``dataset.json``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from serving.pipeline.detect_volume import TomoSettings, VolumeCandidates, analyse_volume
from serving.pipeline.dicom_in import Image
from serving.pipeline.intake.volume import read_volume
from serving.pipeline.model import DetectorModel
from serving.pipeline.rescore import RescoreModel
from serving.pipeline.tomo import VolumeHeaderLike
from serving.pipeline.volume_rescore import rescore_volumes
from training.datasets import study_groups
from training.metrics import FRAME_TOLERANCE
from training.metrics.frames import volume_hits

__all__ = [
    "VolumeResult",
    "analyse_items",
    "candidate_labels",
    "predict_volumes",
    "prediction_of",
    "rescore_items",
]


@dataclass
class VolumeResult:
    """One volume through the DBT pipeline.

    Attributes:
        prediction: for :mod:`training.metrics.frames`: the lesion-class candidates'
            ``boxes`` ``(N, 4)`` stored px, ``scores`` ``(N,)`` (final: rescored when a
            rescoring applied), ``best_frames``, ``first_frames``, ``last_frames`` (1-based
            frame numbers, ``(N,)``), ``heights_mm`` (best frame above the detector),
            ``clock_hours`` (``N`` single-view hours 1-12 or ``None``), ``regions`` (``N``
            single-view quadrants or regions, e.g. ``"UOQ"``, ``"central"``, or ``None``),
            and the mimic-class
            candidates ``mimic_boxes``, ``mimic_scores``, ``mimic_labels``,
            ``mimic_best_frames``.
        seconds: wall time for the volume: read, detect and link, locate.
        locate_seconds: of which suppressing nested tracks and locating the candidates.
        frames: frames in the volume.
        detector_runs: frames (or slabs) the detector ran on.
        frames_read: frames decoded for detection.
        timings_ms: the volume's stage times (:attr:`~serving.pipeline.detect_volume.
            VolumeCandidates.timings_ms`).
        locate_error: why the candidates have no location (landmarks not found), else None.
    """

    prediction: dict[str, Any]
    seconds: float
    locate_seconds: float
    frames: int
    detector_runs: int
    frames_read: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    locate_error: str | None = None


def _boxes(cands: Sequence[Any]) -> NDArray[np.float64]:
    return np.asarray([c.box for c in cands], dtype=np.float64).reshape(-1, 4)


def _frames(cands: Sequence[Any], attr: str) -> NDArray[np.int64]:
    return np.asarray([getattr(c, attr) for c in cands], dtype=np.int64)


def prediction_of(vc: VolumeCandidates) -> dict[str, Any]:
    """The prediction mapping of :class:`VolumeResult` for one analysed volume, with its
    final scores (``vc.scores``)."""
    return {
        "boxes": _boxes(vc.lesions),
        "scores": np.asarray(vc.scores, dtype=np.float64).reshape(-1),
        "best_frames": _frames(vc.lesions, "best_frame_number"),
        "first_frames": _frames(vc.lesions, "first_frame_number"),
        "last_frames": _frames(vc.lesions, "last_frame_number"),
        "heights_mm": [c.height_mm for c in vc.lesions],
        "clock_hours": [None if loc is None else loc.clock_hour for loc in vc.locations],
        "regions": [None if loc is None else loc.quadrant for loc in vc.locations],
        "mimic_boxes": _boxes(vc.mimics),
        "mimic_scores": np.asarray([c.score for c in vc.mimics], dtype=np.float64),
        "mimic_labels": list(vc.mimic_labels),
        "mimic_best_frames": _frames(vc.mimics, "best_frame_number"),
    }


@dataclass(frozen=True)
class _Released:
    """A volume's header without its pixel data: what an analysis keeps of it here, so that
    a dataset's analyses do not hold every volume's stored frames (about 0.2 GB each)."""

    header: VolumeHeaderLike

    def frame(self, index: int) -> Image:
        raise RuntimeError(f"frame {index + 1}: the pixel data was released after analysis")


def analyse_items(model: DetectorModel, items: Sequence[Mapping[str, Any]],
                  settings: TomoSettings, *, root: Path | None = None, progress: bool = True,
                  desc: str = "volumes") -> tuple[list[VolumeCandidates], list[float]]:
    """Every item (``root / item["image"]``, ``root`` default ``item["_root"]``) through
    :func:`~serving.pipeline.detect_volume.analyse_volume`, not rescored; returns the
    analyses and each one's wall time in seconds (read, detect, link, locate). The analyses
    keep each volume's header only (its frames cannot be read from them).

    Raises:
        serving.pipeline.errors.IntakeError: a file is not a readable volume.
    """
    out, seconds = [], []
    for it in tqdm(items, desc=desc, unit="volume", disable=not progress):
        t0 = time.perf_counter()
        path = (root if root is not None else Path(str(it["_root"]))) / str(it["image"])
        vc = analyse_volume(read_volume(path), model, settings)
        seconds.append(time.perf_counter() - t0)
        out.append(replace(vc, volume=_Released(vc.volume.header)))
    return out, seconds


def rescore_items(items: Sequence[Mapping[str, Any]], analysed: Sequence[VolumeCandidates],
                  rescoring: RescoreModel | None) -> list[VolumeCandidates]:
    """:func:`~serving.pipeline.volume_rescore.rescore_volumes` per study of ``items``
    (:func:`study_groups`): rescored copies of ``analysed`` (as analysed, not rescored), in
    item order; ``rescoring`` None keeps the detector's scores and fills the partner
    evidence only."""
    out: list[VolumeCandidates | None] = [None] * len(analysed)
    for group in study_groups(items):
        for i, vc in zip(group, rescore_volumes([analysed[i] for i in group], rescoring),
                         strict=True):
            out[i] = vc
    return [vc for vc in out if vc is not None]


def predict_volumes(model: DetectorModel, items: Sequence[Mapping[str, Any]], *,
                    settings: TomoSettings | None = None, root: Path | None = None,
                    rescore: bool = True, progress: bool = True) -> list[VolumeResult]:
    """Every DBT item through the pipeline as serving runs a study's volumes (see the module
    docstring): ``settings`` default the card's (:attr:`~serving.pipeline.model.
    DetectorModel.tomo_settings`); ``rescore`` applies the card's ``tomosynthesis.
    rescoring`` (when it has one).

    Raises:
        serving.pipeline.errors.IntakeError: a file is not a readable volume.
    """
    settings = settings if settings is not None else model.tomo_settings
    analysed, seconds = analyse_items(model, items, settings, root=root, progress=progress,
                                      desc="evaluate DBT")
    analysed = rescore_items(items, analysed, model.tomo_rescoring if rescore else None)
    results = []
    for vc, sec in zip(analysed, seconds, strict=True):
        error = next((w.removeprefix("no location: ") for w in vc.warnings
                      if w.startswith("no location: ")), None)
        results.append(VolumeResult(
            prediction=prediction_of(vc), seconds=sec,
            locate_seconds=vc.timings_ms.get("locate", 0.0) / 1e3,
            frames=vc.number_of_frames, detector_runs=len(vc.detections.centres),
            frames_read=vc.detections.frames_read, timings_ms=dict(vc.timings_ms),
            locate_error=error))
    return results


def candidate_labels(item: Mapping[str, Any], prediction: Mapping[str, Any],
                     frame_tolerance: int = FRAME_TOLERANCE) -> NDArray[np.float64]:
    """1.0 for each lesion candidate of ``prediction`` (:func:`prediction_of`) that hits a
    true lesion of ``item`` by the frame rule (:func:`training.metrics.frames.volume_hits`:
    the 2D box rule, and the best frame within the lesion's frames +/- ``frame_tolerance``),
    else 0.0; ``(N,)``.

    Raises:
        ValueError: the item or prediction breaks :mod:`training.metrics.frames`' conventions.
    """
    _, hit = volume_hits(item, prediction, tolerance=frame_tolerance)
    rule = np.asarray(hit, bool).reshape(len(prediction["scores"]), -1)
    return np.asarray([float(row.any()) for row in rule], np.float64)
