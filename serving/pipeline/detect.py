"""``detect``: the one entry point every adapter calls (CLI, HTTP, DICOM gateway).

Images -> per-image detections at the chosen operating point (``serving.pipeline.run``) ->
landmarks and per-view location (``serving.pipeline.locate``) -> grouping by study and breast
-> CC vs ML/MLO matching with clock face, quadrant, depth and distance -> a
:class:`~serving.pipeline.findings.DetectionResponse`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

import numpy as np

from serving.pipeline.candidates import (
    LESION_CLASS,
    ImageCandidates,
    analyse_study,
    rescore_model,
)
from serving.pipeline.dicom_in import Image
from serving.pipeline.findings import (
    DetectionResponse,
    FindingOut,
    FusedFindingOut,
    ImageOut,
    MimicOut,
    ModelOut,
    OperatingPointOut,
    StudyOut,
    ViewLocationOut,
)
from serving.pipeline.locate import (
    ORIENTATION_UNKNOWN,
    ViewLocation,
    describe_view,
    match_views,
    orientation_assumed,
)
from serving.pipeline.model import DetectorModel
from serving.pipeline.rescore import OVERLAP_IOS, CandidateEvidence, intersection_over_smaller

log = logging.getLogger(__name__)
OTHER_VIEWS = ("ML", "MLO", "LM")
#: how a mimic class is worded for a reader
MIMIC_TEXT = {"air_bubble": "probable air bubble", "cyst": "probable contrast-filled cyst",
              "extravasation": "probable contrast extravasation"}


#: The warning of an image whose orientation had to be assumed (field case Q3).
ORIENTATION_WARNING: Final = (f"{ORIENTATION_UNKNOWN} for this view: the standard hanging was "
                              "assumed; no half, clock face or quadrant is stated")

def _mm_box(box: np.ndarray, image: Image) -> tuple[list[float], list[float]]:
    sy, sx = image.spacing_mm or (1.0, 1.0)
    x1, y1, x2, y2 = (float(v) for v in box)
    return ([round(v, 1) for v in (x1, y1, x2, y2)],
            [round(x1 * sx, 2), round(y1 * sy, 2), round(x2 * sx, 2), round(y2 * sy, 2)])


def _evidence_text(ev: CandidateEvidence, rescored: bool) -> str | None:
    if not rescored:
        return None
    parts = ["other view: " + (f"partner scored {ev.partner:.2f}" if ev.partner > 0
                               else "no partner at this depth")
             if ev.other_view else "single view"]
    if ev.bubble_here >= 0.05:
        parts.append(f"air-bubble score here {ev.bubble_here:.2f}")
    if ev.other_mimic_here >= 0.05:
        parts.append(f"other mimic score here {ev.other_mimic_here:.2f}")
    return "; ".join(parts)


def _finding(index: int, k: int, box: np.ndarray, score: float, detector_score: float,
             evidence: str | None, image: Image, model: DetectorModel,
             loc: ViewLocation | None) -> FindingOut:
    sy, sx = image.spacing_mm or (1.0, 1.0)
    x1, y1, x2, y2 = (float(v) for v in box)
    passes = [name for name, op in model.operating_points.items() if score >= op.score_threshold]
    location = None
    if loc is not None:
        location = ViewLocationOut(distance_from_nipple_mm=round(loc.distance_mm, 1),
                                   distance_from_nipple_cm=loc.distance_cm, depth=loc.depth,
                                   depth_fraction=round(loc.depth_fraction, 3),
                                   half=None if loc.orientation_assumed else loc.half,
                                   oblique=loc.oblique,
                                   orientation_assumed=loc.orientation_assumed,
                                   text=describe_view(loc))
    box_px, box_mm = _mm_box(box, image)
    return FindingOut(
        id=f"{index}.{k}", label=LESION_CLASS, score=round(score, 4),
        detector_score=round(detector_score, 4), evidence=evidence, operating_points=passes,
        box_px=box_px, box_mm=box_mm,
        center_px=[round((x1 + x2) / 2, 1), round((y1 + y2) / 2, 1)],
        center_mm=[round((x1 + x2) / 2 * sx, 2), round((y1 + y2) / 2 * sy, 2)],
        size_mm=[round((x2 - x1) * sx, 2), round((y2 - y1) * sy, 2)],
        location=location)


def _mimics(c: ImageCandidates, reported: np.ndarray, threshold: float) -> list[MimicOut]:
    """Mimic calls scoring at least ``threshold`` that are not at the place of a reported
    finding (the finding's score already weighed them)."""
    out = []
    ios = intersection_over_smaller(c.mimic_boxes, reported)
    for k, (box, score, label) in enumerate(zip(c.mimic_boxes, c.mimic_scores, c.mimic_labels,
                                                strict=True)):
        if score < threshold or (ios.shape[1] and ios[k].max() >= OVERLAP_IOS):
            continue
        box_px, box_mm = _mm_box(box, c.image)
        out.append(MimicOut(label=label, text=MIMIC_TEXT.get(label, f"probable {label}"),
                            score=round(float(score), 4), box_px=box_px, box_mm=box_mm))
    return out


def detect_image(index: int, c: ImageCandidates, model: DetectorModel, threshold: float,
                 source: str | None = None, rescored: bool = False
                 ) -> tuple[ImageOut, list[ViewLocation | None]]:
    """The findings (lesion candidates with final score >= ``threshold``), mimics and
    per-view locations of one analysed image."""
    image = c.image
    scale = float(image.decode_scale)
    keep = c.scores >= threshold
    findings, locs = [], []
    for k, i in enumerate(np.flatnonzero(keep)):
        locs.append(c.locations[i])
        findings.append(_finding(index, k, c.boxes[i], float(c.scores[i]),
                                 float(c.detector_scores[i]),
                                 _evidence_text(c.evidence[i], rescored), image, model,
                                 c.locations[i]))
    mimic_threshold = max(model.decode.mimic_score_thresh, threshold) if threshold > 0 \
        else model.decode.mimic_score_thresh
    timings = {k: round(v, 1) for k, v in c.timings_ms.items()}
    marks = c.landmarks
    assumed = orientation_assumed(image.view, image.laterality, image.patient_orientation)
    warnings = list(c.warnings) + ([ORIENTATION_WARNING] if assumed else [])
    out = ImageOut(
        index=index, source=source, sop_instance_uid=image.sop_instance_uid,
        series_instance_uid=image.series_instance_uid,
        study_instance_uid=image.study_instance_uid, laterality=image.laterality,
        view=image.view, rows=image.rows, cols=image.cols,
        spacing_mm=list(image.spacing_mm or ()), spacing_source=image.spacing_source,
        nipple_px=[round(v * scale, 1) for v in marks.nipple_xy] if marks else None,
        pnl_length_mm=round(marks.pnl_length_mm, 1) if marks else None,
        findings=findings, mimics=_mimics(c, c.boxes[keep], mimic_threshold),
        orientation_assumed=assumed, timings_ms=timings, warnings=warnings)
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
                distance_from_nipple_cm=m.distance_cm, oblique=m.oblique, phrase=m.phrase,
                orientation_assumed=m.orientation_assumed))
    return fused


def detect(images: Sequence[Image], model: DetectorModel, operating_point: str | None = None,
           sources: Sequence[str | None] | None = None, request_id: str | None = None,
           score_threshold: float | None = None) -> DetectionResponse:
    """Detect and locate filling defects in ``images`` (any number of studies).

    Images are grouped by StudyInstanceUID (in order of first appearance); within a study,
    findings of the CC and ML/MLO images of each breast are matched and located.
    ``score_threshold`` overrides the operating point's threshold (0.0: every candidate).
    """
    op = model.operating_point(operating_point)
    threshold = op.score_threshold if score_threshold is None else score_threshold
    srcs = list(sources) if sources is not None else [None] * len(images)
    order: OrderedDict[str | None, list[int]] = OrderedDict()
    for i, image in enumerate(images):
        order.setdefault(image.study_instance_uid, []).append(i)
    rescored = rescore_model(model) is not None
    studies = []
    for uid, members in order.items():
        analysed = analyse_study([images[i] for i in members], model)
        group = [detect_image(i, c, model, threshold, srcs[i], rescored)
                 for i, c in zip(members, analysed, strict=True)]
        studies.append(StudyOut(study_instance_uid=uid, images=[g[0] for g in group],
                                fused=_fuse_study([g[0] for g in group],
                                                  [g[1] for g in group])))
    return DetectionResponse(model=ModelOut(name=model.name, version=model.version),
                             operating_point=OperatingPointOut(
                                 name=op.name, score_threshold=threshold,
                                 source=model.operating_points_source),
                             studies=studies, request_id=request_id)
