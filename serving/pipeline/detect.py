"""``detect``: the one entry point every adapter calls (CLI, HTTP, DICOM gateway).

Images -> per-image detections at the chosen operating point (``serving.pipeline.run``) ->
landmarks and per-view location (``serving.pipeline.locate``) -> grouping by study and breast
-> CC vs ML/MLO matching with clock face, quadrant, depth and distance -> a
:class:`~serving.pipeline.findings.DetectionResponse`.

Tomosynthesis volumes (:class:`~serving.pipeline.dicom_in.Volume`) may be given beside 2D
images: each is analysed by :func:`serving.pipeline.detect_volume.analyse_volume` (the 2D
detector through its slabs, candidates linked in 3D, located from the one view) and reported
as one :class:`~serving.pipeline.findings.ImageOut` with ``number_of_frames``, each finding
with its ``frame`` and ``single_view_location``. Two-view fusion pairs a CC volume with an
ML/MLO volume of the same breast and study, by the findings' in-plane locations, as it pairs
2D images; 2D images and volumes are fused each among their own kind, never across: a
combined 2D + DBT exam shows each lesion in both, and one greedy matching over both kinds
would pair a lesion's 2D view with the other kind's second view (two fused findings for one
lesion, from scores of different scales: 2D scores against DBT scores).
The volumes of a study are rescored together with their other views when the card has a
tomosynthesis rescoring (:func:`serving.pipeline.volume_rescore.rescore_volumes`).
2D images are analysed, rescored and reported exactly as without volumes.

Volumes are thresholded by :func:`serving.pipeline.volume_points.volume_points`: the model
card's tomosynthesis operating point of the requested name when the card has them, else the
2D threshold with a warning on every volume; the response's ``operating_point.source`` and
each volume's warnings say which threshold applied.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Final

import numpy as np

from serving.pipeline.candidates import (
    LESION_CLASS,
    ImageCandidates,
    analyse_study,
    rescore_model,
)
from serving.pipeline.detect_volume import (
    TomoSettings,
    VolumeCandidates,
    analyse_volume,
    mimics_to_report,
    single_view_location_out,
)
from serving.pipeline.dicom_in import Image, ImageHeader, Volume
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
    stated_clock_hour,
)
from serving.pipeline.locate.breast_frame import view_group
from serving.pipeline.model import DetectorModel
from serving.pipeline.rescore import OVERLAP_IOS, CandidateEvidence, intersection_over_smaller
from serving.pipeline.volume_points import VolumePoints, volume_points
from serving.pipeline.volume_rescore import rescore_volumes

log = logging.getLogger(__name__)
#: how a mimic class is worded for a reader
MIMIC_TEXT = {"air_bubble": "probable air bubble", "cyst": "probable contrast-filled cyst",
              "extravasation": "probable contrast extravasation"}


#: The warning of an image whose orientation had to be assumed (field case Q3).
ORIENTATION_WARNING: Final = (f"{ORIENTATION_UNKNOWN} for this view: the standard hanging was "
                              "assumed; no half, clock face or quadrant is stated")

def _mm_box(box: np.ndarray, image: ImageHeader) -> tuple[list[float], list[float]]:
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
             evidence: str | None, image: ImageHeader, model: DetectorModel,
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


def _mimic_threshold(model: DetectorModel, threshold: float) -> float:
    """The score a mimic call needs to be reported: the card's mimic threshold, or the
    operating point's threshold when that is higher (0: the card's)."""
    return max(model.decode.mimic_score_thresh, threshold) if threshold > 0 \
        else model.decode.mimic_score_thresh


def _identity(h: Image | ImageHeader) -> dict[str, Any]:
    """The :class:`ImageOut` fields that name and describe the analysed image or volume
    (``h``: the image, or the volume's in-plane header): UIDs, laterality, view, stored size
    and pixel spacing."""
    return {"sop_instance_uid": h.sop_instance_uid,
            "series_instance_uid": h.series_instance_uid,
            "study_instance_uid": h.study_instance_uid, "laterality": h.laterality,
            "view": h.view, "rows": h.rows, "cols": h.cols,
            "spacing_mm": list(h.spacing_mm or ()), "spacing_source": h.spacing_source}


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
    mimic_threshold = _mimic_threshold(model, threshold)
    timings = {k: round(v, 1) for k, v in c.timings_ms.items()}
    marks = c.landmarks
    assumed = orientation_assumed(image.view, image.laterality, image.patient_orientation)
    warnings = list(c.warnings) + ([ORIENTATION_WARNING] if assumed else [])
    out = ImageOut(
        index=index, source=source, **_identity(image),
        nipple_px=[round(v * scale, 1) for v in marks.nipple_xy] if marks else None,
        pnl_length_mm=round(marks.pnl_length_mm, 1) if marks else None,
        findings=findings, mimics=_mimics(c, c.boxes[keep], mimic_threshold),
        orientation_assumed=assumed, timings_ms=timings, warnings=warnings)
    return out, locs


def detect_tomo(index: int, vc: VolumeCandidates, model: DetectorModel, points: VolumePoints,
                source: str | None = None) -> tuple[ImageOut, list[ViewLocation | None]]:
    """The findings (lesion candidates whose final score, ``vc.scores``: rescored with the other
    view when the card has a tomosynthesis rescoring, else the detector's, is >=
    ``points.score_threshold``, best first),
    mimics and in-plane locations (for two-view fusion) of one analysed tomosynthesis volume.
    Boxes lie on each finding's best frame (``frame.best``, 1-based); each finding lists the
    points of ``points.thresholds`` it passes, and the volume's warnings end with
    ``points.warnings``."""
    header = vc.header
    threshold = points.score_threshold
    keep = sorted((i for i, s in enumerate(vc.scores) if s >= threshold),
                  key=lambda i: (-vc.scores[i], i))
    findings, locs = [], []
    for k, i in enumerate(keep):
        c, tomo, score = vc.lesions[i], vc.locations[i], vc.scores[i]
        loc = tomo.in_plane if tomo is not None else None
        if loc is not None:
            loc = replace(loc, score=score)  # fusion weighs by the final score, as in 2D
        locs.append(loc)
        f = _finding(index, k, np.asarray(c.box, np.float64), score, c.score, vc.evidence[i],
                     header, model, loc)
        f.frame = vc.lesion_frames[i]
        f.operating_points = points.passes(score)
        f.single_view_location = single_view_location_out(tomo) if tomo else None
        findings.append(f)
    mimics = []
    for k in mimics_to_report(vc, keep, _mimic_threshold(model, threshold)):
        m, label = vc.mimics[k], vc.mimic_labels[k]
        box_px, box_mm = _mm_box(np.asarray(m.box, np.float64), header)
        mimics.append(MimicOut(label=label, text=MIMIC_TEXT.get(label, f"probable {label}"),
                               score=round(float(m.score), 4), box_px=box_px, box_mm=box_mm,
                               frame=vc.mimic_frames[k]))
    marks = vc.landmarks
    assumed = orientation_assumed(header.view, header.laterality, header.patient_orientation)
    out = ImageOut(
        index=index, source=source, **_identity(header),
        number_of_frames=vc.number_of_frames,
        nipple_px=[round(v, 1) for v in vc.nipple_px] if vc.nipple_px else None,
        pnl_length_mm=round(marks.pnl_length_mm, 1) if marks else None,
        findings=findings, mimics=mimics, orientation_assumed=assumed,
        timings_ms={k: round(v, 1) for k, v in vc.timings_ms.items()},
        warnings=[*vc.warnings, *points.warnings, *([ORIENTATION_WARNING] if assumed else [])])
    return out, locs


def _fuse_study(images: list[ImageOut], locs: list[list[ViewLocation | None]]
                ) -> list[FusedFindingOut]:
    """Match CC-like with lateral and oblique findings per breast (all images of that
    breast pooled; :func:`~serving.pipeline.locate.breast_frame.view_group`)."""
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
                group = view_group(img.view)
                if group == "cc":
                    cc.append((f.id, loc))
                elif group == "other":
                    other.append((f.id, loc))
        if not cc or not other:
            continue
        for m in match_views([c[1] for c in cc], [o[1] for o in other]):
            fused.append(FusedFindingOut(
                laterality=lat, finding_ids=[cc[m.cc_index][0], other[m.other_index][0]],
                score=round(float(np.sqrt(m.cc.score * m.other.score)), 4),
                clock_hour=stated_clock_hour(m.clock_hour, m.quadrant), quadrant=m.quadrant,
                depth=m.depth, distance_from_nipple_mm=round(m.distance_mm, 1),
                distance_from_nipple_cm=m.distance_cm, oblique=m.oblique, phrase=m.phrase,
                orientation_assumed=m.orientation_assumed))
    return fused


def _study_of(item: Image | Volume) -> str | None:
    """The StudyInstanceUID of a 2D image or of a volume."""
    return item.study_instance_uid if isinstance(item, Image) else \
        item.header.image.study_instance_uid


def detect(images: Sequence[Image | Volume], model: DetectorModel,
           operating_point: str | None = None, sources: Sequence[str | None] | None = None,
           request_id: str | None = None, score_threshold: float | None = None,
           tomo: TomoSettings | None = None) -> DetectionResponse:
    """Detect and locate filling defects in ``images`` (any number of studies): 2D images
    and tomosynthesis volumes, in any mix.

    Images are grouped by StudyInstanceUID (in order of first appearance, each study's
    images in input order); within a study, findings of the CC and ML/MLO images of each
    breast are matched and located, 2D images among themselves and volumes among themselves
    (see the module docstring). ``score_threshold`` overrides the operating point's
    threshold (0.0: every candidate); it applies to the rescored score of a 2D finding and to
    a volume finding's final score (rescored with the other view when the card has a
    tomosynthesis rescoring, else the detector's). Without it, volumes are thresholded by
    the model card's tomosynthesis operating point of that name, or by the 2D threshold with
    a warning when the card has none (:func:`~serving.pipeline.volume_points.volume_points`).
    ``tomo`` sets how volumes are run (default: the slab settings the card's tomosynthesis
    points were fitted with, :attr:`~serving.pipeline.model.DetectorModel.tomo_settings`);
    2D images ignore it.

    Raises:
        serving.pipeline.model.ModelError: an unknown operating point.
        serving.pipeline.errors.IntakeError: a volume's frame cannot be decoded (frames are
            decoded here, one at a time, not at intake).
        ValueError: a malformed rescoring section of the card, or a malformed volume header.
    """
    op = model.operating_point(operating_point)
    threshold = op.score_threshold if score_threshold is None else score_threshold
    srcs = list(sources) if sources is not None else [None] * len(images)
    order: OrderedDict[str | None, list[int]] = OrderedDict()
    for i, item in enumerate(images):
        order.setdefault(_study_of(item), []).append(i)
    rescored = rescore_model(model) is not None
    vp = None
    if any(not isinstance(item, Image) for item in images):
        vp = volume_points(model, operating_point, score_threshold, tomo)
    studies = []
    for uid, members in order.items():
        flat = [(i, item) for i in members if isinstance(item := images[i], Image)]
        outs: dict[int, tuple[ImageOut, list[ViewLocation | None]]] = {}
        if flat:  # the 2D images, analysed and rescored together as without volumes
            analysed = analyse_study([item for _, item in flat], model)
            for (i, _), c in zip(flat, analysed, strict=True):
                outs[i] = detect_image(i, c, model, threshold, srcs[i], rescored)
        if vp is not None:  # the volumes, rescored together with their other views
            vols = [(i, v) for i in members if isinstance(v := images[i], Volume)]
            found = [analyse_volume(v, model, vp.settings) for _, v in vols]
            for (i, _), vc in zip(vols, rescore_volumes(found, model.tomo_rescoring),
                                  strict=True):
                outs[i] = detect_tomo(i, vc, model, vp, srcs[i])
        planar = [i for i, _ in flat]
        volumes = [i for i in members if not isinstance(images[i], Image)]
        fused = [*_fuse_study([outs[i][0] for i in planar], [outs[i][1] for i in planar]),
                 *_fuse_study([outs[i][0] for i in volumes], [outs[i][1] for i in volumes])]
        studies.append(StudyOut(study_instance_uid=uid, images=[outs[i][0] for i in members],
                                fused=fused))
    source = model.operating_points_source if vp is None else \
        f"{model.operating_points_source}; {vp.source}"
    return DetectionResponse(model=ModelOut(name=model.name, version=model.version),
                             operating_point=OperatingPointOut(
                                 name=op.name, score_threshold=threshold, source=source),
                             studies=studies, request_id=request_id)
