"""``detect``: the one entry point every adapter calls (CLI, HTTP, DICOM gateway).

Images -> per-image detections at the chosen operating point (``serving.pipeline.run``) ->
landmarks and per-view location (``serving.pipeline.locate``) -> grouping by study and breast
-> CC vs ML/MLO matching with clock face, quadrant, depth and distance -> a
:class:`~serving.pipeline.findings.DetectionResponse`.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from serving.pipeline.dicom_in import Image
from serving.pipeline.findings import (
    DetectionResponse,
    FindingOut,
    FusedFindingOut,
    ImageOut,
    ModelOut,
    OperatingPointOut,
    StudyOut,
    ViewLocationOut,
)
from serving.pipeline.locate import (
    LandmarkError,
    Landmarks,
    ViewLocation,
    describe_view,
    find_landmarks,
    locate_in_view,
    match_views,
)
from serving.pipeline.model import DetectorModel
from serving.pipeline.run import RawDetections, decoded_grid, predict

log = logging.getLogger(__name__)
OTHER_VIEWS = ("ML", "MLO", "LM")


def _finding(index: int, k: int, box: np.ndarray, score: float, label: str,
             image: Image, model: DetectorModel, loc: ViewLocation | None) -> FindingOut:
    sy, sx = image.spacing_mm or (1.0, 1.0)
    x1, y1, x2, y2 = (float(v) for v in box)
    passes = [name for name, op in model.operating_points.items() if score >= op.score_threshold]
    location = None
    if loc is not None:
        location = ViewLocationOut(distance_from_nipple_mm=round(loc.distance_mm, 1),
                                   distance_from_nipple_cm=loc.distance_cm, depth=loc.depth,
                                   depth_fraction=round(loc.depth_fraction, 3),
                                   half=loc.half, oblique=loc.oblique,
                                   text=describe_view(loc))
    return FindingOut(
        id=f"{index}.{k}", label=label, score=round(score, 4), operating_points=passes,
        box_px=[round(v, 1) for v in (x1, y1, x2, y2)],
        box_mm=[round(x1 * sx, 2), round(y1 * sy, 2), round(x2 * sx, 2), round(y2 * sy, 2)],
        center_px=[round((x1 + x2) / 2, 1), round((y1 + y2) / 2, 1)],
        center_mm=[round((x1 + x2) / 2 * sx, 2), round((y1 + y2) / 2 * sy, 2)],
        size_mm=[round((x2 - x1) * sx, 2), round((y2 - y1) * sy, 2)],
        location=location)


def _landmarks(image: Image, warnings: list[str]) -> Landmarks | None:
    try:
        return find_landmarks(image)
    except LandmarkError as exc:
        warnings.append(f"no location: {exc}")
        return None


def detect_image(index: int, image: Image, model: DetectorModel, threshold: float,
                 source: str | None = None
                 ) -> tuple[ImageOut, list[ViewLocation | None]]:
    """Detections, landmarks and per-view locations of one image."""
    warnings = list(image.warnings)
    raw: RawDetections = predict(image, model).above(threshold)
    t0 = time.perf_counter()
    grid = decoded_grid(image)  # landmarks work on the decoded pixels' own grid
    scale = float(image.decode_scale)
    marks = _landmarks(grid, warnings)
    locs: list[ViewLocation | None] = []
    findings = []
    for k, (box, score, lab) in enumerate(zip(raw.boxes, raw.scores, raw.labels, strict=True)):
        loc = (locate_in_view(box / scale, grid, marks, score=float(score)) if marks
               else None)
        locs.append(loc)
        findings.append(_finding(index, k, box, float(score), model.classes[int(lab)], image,
                                 model, loc))
    timings = {k: round(v, 1) for k, v in raw.timings_ms.items()}
    timings["locate"] = round((time.perf_counter() - t0) * 1e3, 1)
    out = ImageOut(
        index=index, source=source, sop_instance_uid=image.sop_instance_uid,
        series_instance_uid=image.series_instance_uid,
        study_instance_uid=image.study_instance_uid, laterality=image.laterality,
        view=image.view, rows=image.rows, cols=image.cols,
        spacing_mm=list(image.spacing_mm or ()), spacing_source=image.spacing_source,
        nipple_px=[round(v * scale, 1) for v in marks.nipple_xy] if marks else None,
        pnl_length_mm=round(marks.pnl_length_mm, 1) if marks else None,
        findings=findings, timings_ms=timings, warnings=warnings)
    return out, locs


def _fuse_study(images: list[ImageOut], locs: list[list[ViewLocation | None]]
                ) -> list[FusedFindingOut]:
    """Match CC with ML/MLO findings per breast (all images of that breast pooled)."""
    fused: list[FusedFindingOut] = []
    for lat in ("L", "R"):
        cc: list[tuple[str, ViewLocation]] = []
        other: list[tuple[str, ViewLocation]] = []
        for img, img_locs in zip(images, locs, strict=True):
            if img.laterality != lat:
                continue
            for f, loc in zip(img.findings, img_locs, strict=True):
                if loc is None:
                    continue
                if img.view == "CC":
                    cc.append((f.id, loc))
                elif img.view in OTHER_VIEWS:
                    other.append((f.id, loc))
        if not cc or not other:
            continue
        for m in match_views([c[1] for c in cc], [o[1] for o in other]):
            fused.append(FusedFindingOut(
                laterality=lat, finding_ids=[cc[m.cc_index][0], other[m.other_index][0]],
                score=round(float(np.sqrt(m.cc.score * m.other.score)), 4),
                clock_hour=m.clock_hour, quadrant=m.quadrant, depth=m.depth,
                distance_from_nipple_mm=round(m.distance_mm, 1),
                distance_from_nipple_cm=m.distance_cm, oblique=m.oblique, phrase=m.phrase))
    return fused


def detect(images: Sequence[Image], model: DetectorModel, operating_point: str | None = None,
           sources: Sequence[str | None] | None = None, request_id: str | None = None
           ) -> DetectionResponse:
    """Detect and locate filling defects in ``images`` (any number of studies).

    Images are grouped by StudyInstanceUID (in order of first appearance); within a study,
    findings of the CC and ML/MLO images of each breast are matched and located.
    """
    op = model.operating_point(operating_point)
    srcs = list(sources) if sources is not None else [None] * len(images)
    groups: OrderedDict[str | None, list[tuple[ImageOut, list[ViewLocation | None]]]] = \
        OrderedDict()
    for i, (image, src) in enumerate(zip(images, srcs, strict=True)):
        out, locs = detect_image(i, image, model, op.score_threshold, src)
        groups.setdefault(image.study_instance_uid, []).append((out, locs))
    studies = [StudyOut(study_instance_uid=uid, images=[g[0] for g in group],
                        fused=_fuse_study([g[0] for g in group], [g[1] for g in group]))
               for uid, group in groups.items()]
    return DetectionResponse(model=ModelOut(name=model.name, version=model.version),
                             operating_point=OperatingPointOut(
                                 name=op.name, score_threshold=op.score_threshold),
                             studies=studies, request_id=request_id)
