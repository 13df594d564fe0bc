"""Comprehensive 3D SR with a TID 1500 "Imaging Measurement Report" (highdicom), the result
form OHIF and other SR-aware viewers read, and a reader of its boxes.

Content tree (PS3.16 TID 1500)::

    Imaging Measurement Report (DCM 126000)
      Language (en-US, as the CAD SR), observation context (device observer: the model),
      procedure reported
      Image Library (TID 1600): the analysed images, each with the TID 1602/1603 descriptors
        highdicom writes plus Image Laterality (CID 244) and Image View (CID 4014)
      Imaging Measurements
        Measurement Group (TID 1501): CAD processing summary, references every source image
        Measurement Group (TID 1410), one per finding (per view):
          Tracking Identifier "Filling defect <n> (<views>)" and Tracking Unique Identifier:
            one per lesion, shared by the two views of a fused finding, derived from the
            study, the model and the lesion's images and boxes (the same input, the same UID)
          Finding = Intraluminal filling defect; Finding Site = Breast (+ Laterality)
          Algorithm Name / Version / Parameters (TID 4019)
          Image Region: SCOORD closed POLYLINE (rectangle), SELECTED FROM the source image
            (on a tomosynthesis volume: its best frame, Referenced Frame Number)
          NUM Certainty of Finding (%), NUM Distance from nipple (mm)
          CODE Clockface or region, Quadrant location, Depth (when known)

Codes (:mod:`serving.outputs.codes`, from pydicom's copy of the PS3.16 dictionary):

- Finding type: (111425, DCM, "Intraluminal filling defect"), CID 6057 "Ductography Finding
  for Breast": the BI-RADS ductography term for exactly what the model detects.
- Finding site: (76752008, SCT, "Breast") with Laterality (7771000 Left / 24028007 Right,
  CID 244).
- Score: NUM (111012, DCM, "Certainty of Finding"), CID 6048, in percent (UCUM "%", 0-100),
  the same concept the Mammography CAD SR (TID 4006) uses for a CAD mark's score; the
  Algorithm Parameters say what the score is and what the operating point promises.
- Distance from nipple: NUM (121242, DCM, "Distance from nipple"), CID 6165, in mm (UCUM).
- Clock face: CODE (111014, DCM, "Clockface or region") with CID 6019 values; quadrant: CODE
  (111048, DCM, "Quadrant location") with CID 6020 values; depth: CODE (111020, DCM, "Depth")
  with CID 6024 values.
- Summary: CODE (111017, DCM, "CAD Processing and Findings Summary") with CID 6047 values.
- Procedure reported: (18102001, SCT, "Mammary ductogram"), CID 6050.

Location: a finding matched across CC and ML/MLO (a ``FusedFindingOut``) is reported with the
fused BI-RADS location (clock face or region, quadrant, depth, distance); a finding seen in one
view only with that view's depth and distance (a single view cannot tell the clock face). When
an image's PatientOrientation does not give its orientation, the clock face and quadrant are
left out (:mod:`serving.outputs.wording`). Probable mimics are not written.

Coordinates: SCOORD graphic data are (column, row) pairs in stored-image pixels, origin at the
top-left corner of the top-left pixel (PS3.3 C.18.6.1.1), i.e. the frame of ``box_px``; a box
``[x1, y1, x2, y2]`` becomes the closed polyline (x1,y1) (x2,y1) (x2,y2) (x1,y2) (x1,y1)
unchanged. The file stores them as 32-bit floats (FL), about 1e-4 px at 4096 px.

Tomosynthesis (a source in :data:`serving.outputs.common.VOLUME_SOP_CLASSES`): a finding's box
is on its best frame (``FindingOut.frame.best``), so the Image Region's source image item
(highdicom's ``SourceImageForRegion``) carries Referenced Frame Number (0008,1160) = that
frame; the finding site, measurements and evaluations are those of a 2D finding (the location
of a finding seen on one DBT view is that view's own, with clock face and quadrant). The
lesion's Tracking Unique Identifier includes the frame. :func:`read_tid1500_frames` reads the
frames back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from serving.outputs import codes as c
from serving.outputs.common import (
    MANUFACTURER,
    ResultInput,
    ResultKind,
    box_polyline,
    derived_uid,
    device_uid,
    element_values,
    evidence_header,
    frame_numbers,
    is_volume,
    new_uid,
    now,
    pixel_spacing_mm,
    polyline_box,
    referenced_frame,
    series_identity,
    stamp_result,
)
from serving.outputs.wording import Lesion, StudyWords, algorithm_notes
from serving.pipeline.findings import FindingOut, ImageOut, ModelOut
from serving.pipeline.intake.volume_header import patient_orientation_from

__all__ = ["COMPREHENSIVE_3D_SR_STORAGE", "box_polyline", "build_report", "build_tid1500",
           "lesion_uid", "read_tid1500_boxes", "read_tid1500_frames"]

COMPREHENSIVE_3D_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"
"""SOP Class UID of Comprehensive 3D SR Storage."""

# --------------------------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------------------------


def _algorithm(result: ResultInput, *, full: bool = False, volume: bool = False
               ) -> hd.sr.AlgorithmIdentification:
    """TID 4019: model name and version; the operating point, its threshold and source as
    parameters, with ``full`` also what it promises and what the scores are (once per
    measurement group, not in every measurement); ``volume``: of a finding on a
    tomosynthesis volume (the volumes' point, see :func:`algorithm_notes`)."""
    return hd.sr.AlgorithmIdentification(
        name=result.algorithm_name,
        version=result.algorithm_version,
        parameters=algorithm_notes(result, full=full, volume=volume),
        manufacturer=MANUFACTURER,
    )


def _observation_context(model: ModelOut) -> hd.sr.ObservationContext:
    """TID 1001 with a device observer: the model."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid(model), name=model.name, manufacturer_name=MANUFACTURER,
        model_name=f"{model.name} {model.version}",
    )
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept.from_code(c.DEVICE),
        observer_identifying_attributes=device))


def _finding_sites(laterality: str) -> list[hd.sr.FindingSite]:
    """Breast, with its laterality when known (``"L"``/``"R"``)."""
    return [hd.sr.FindingSite(anatomic_location=c.BREAST, laterality=c.LATERALITY.get(laterality))]


def _location_evaluations(finding: FindingOut,
                          lesion: Lesion) -> list[hd.sr.QualitativeEvaluation]:
    """Clock face or region, quadrant and depth as the lesion's location states them (parts
    that rest on an assumed orientation are already left out)."""
    where = lesion.where
    out: list[hd.sr.QualitativeEvaluation] = []
    region = c.REGION.get(where.quadrant or "")
    if region is None and where.clock_hour is not None:
        region = c.CLOCK_POSITION.get(where.clock_hour)
    if region is not None:
        out.append(hd.sr.QualitativeEvaluation(c.CLOCKFACE_OR_REGION, region))
    if where.quadrant in c.QUADRANT:
        out.append(hd.sr.QualitativeEvaluation(c.QUADRANT_LOCATION, c.QUADRANT[where.quadrant]))
    if where.depth in c.DEPTH_VALUE:
        out.append(hd.sr.QualitativeEvaluation(c.DEPTH, c.DEPTH_VALUE[where.depth]))
    return out


def _measurements(finding: FindingOut, lesion: Lesion,
                  algorithm: hd.sr.AlgorithmIdentification) -> list[hd.sr.Measurement]:
    """Certainty of finding (score x 100, %) and distance from the nipple (mm; fused when the
    finding was matched across views, else this view's estimate)."""
    out = [hd.sr.Measurement(name=c.CERTAINTY_OF_FINDING, value=round(finding.score * 100.0, 4),
                             unit=c.PERCENT, algorithm_id=algorithm)]
    if lesion.where.distance_mm is not None:
        out.append(hd.sr.Measurement(name=c.DISTANCE_FROM_NIPPLE,
                                     value=round(lesion.where.distance_mm, 3),
                                     unit=c.MILLIMETER, algorithm_id=algorithm))
    return out


def lesion_uid(result: ResultInput, lesion: Lesion) -> str:
    """The lesion's Tracking Unique Identifier: a hash of the study, the model and, for each of
    its findings, the image's SOP Instance UID and the box (and on a tomosynthesis volume its
    best frame), so the same input always gives the same UID and the two views of a fused
    finding share it."""
    parts = [str(result.sources[0].get("StudyInstanceUID", "")), result.model.name,
             result.model.version]
    for index, finding in lesion.members:
        box = ",".join(f"{v:.1f}" for v in finding.box_px)
        if finding.frame is not None:
            box += f"@{finding.frame.best}"
        parts.append(f"{result.sources[index].get('SOPInstanceUID', index)}:{box}")
    return derived_uid("lesion", *parts)


def _finding_group(result: ResultInput, source: Dataset, finding: FindingOut, lesion: Lesion,
                   algorithm: hd.sr.AlgorithmIdentification,
                   measurement_algorithm: hd.sr.AlgorithmIdentification,
                   ) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410 measurement group of one finding on one image."""
    polyline = box_polyline(finding.box_px, int(source.Rows), int(source.Columns),
                            f"finding {finding.id} box_px")
    frame = referenced_frame(source, finding.frame, f"finding {finding.id}")
    source_image = hd.sr.SourceImageForRegion.from_source_image(
        source, referenced_frame_numbers=None if frame is None else [frame])
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                               graphic_data=polyline, source_image=source_image)
    tracking = hd.sr.TrackingIdentifier(uid=lesion_uid(result, lesion),
                                        identifier=f"{lesion.name} ({lesion.where.views})")
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_region=region,
        finding_type=c.FILLING_DEFECT,
        algorithm_id=algorithm,
        finding_sites=_finding_sites(lesion.where.laterality),
        measurements=_measurements(finding, lesion, measurement_algorithm),
        qualitative_evaluations=_location_evaluations(finding, lesion),
    )


def _summary_group(result: ResultInput, sources: Sequence[Dataset],
                   algorithm: hd.sr.AlgorithmIdentification, any_findings: bool,
                   ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group stating that the algorithm ran on every source image, with or without
    findings (always present, so a study without findings still has a valid report)."""
    summary = c.ALL_SUCCEEDED_WITH_FINDINGS if any_findings else c.ALL_SUCCEEDED_WITHOUT_FINDINGS
    uid = derived_uid("summary", str(result.sources[0].get("StudyInstanceUID", "")),
                      result.model.name, result.model.version)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid,
                                                     identifier="CAD processing summary"),
        algorithm_id=algorithm,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(c.CAD_PROCESSING_SUMMARY, summary)],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(s)
                       for s in sources],
    )


def _describable(source: Dataset) -> bool:
    """Whether highdicom can write the TID 1602/1603 descriptors of ``source``."""
    try:
        hd.sr.ImageLibraryEntryDescriptors(source)
    except (AttributeError, IndexError, KeyError, ValueError):
        return False
    return True


def _plane_orientation_letters(source: Dataset) -> tuple[str, str] | None:
    """PatientOrientation letters of the Image Orientation (Patient) in the Shared Functional
    Groups' Plane Orientation of a multi-frame image, or None when absent or unusable."""
    shared = (source.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    plane = (shared.get("PlaneOrientationSequence") or [Dataset()])[0]
    try:
        values = [float(str(v)) for v in element_values(plane.get("ImageOrientationPatient"))]
    except ValueError:
        return None
    if len(values) != 6:
        return None
    row, col = np.array(values[:3]), np.array(values[3:])
    if not (np.isclose(np.linalg.norm(row), 1.0, atol=1e-3)
            and np.isclose(np.linalg.norm(col), 1.0, atol=1e-3)):
        return None
    return patient_orientation_from(row, col)


def _library_images(sources: Sequence[Dataset]) -> list[Dataset]:
    """The sources the Image Library describes (TID 1602/1603 need PatientOrientation and
    ImagerPixelSpacing for MG). A tomosynthesis volume keeps its spacing in the Pixel
    Measures functional group (PS3.3 C.7.6.16.2.1), not in ImagerPixelSpacing: it enters
    as a header copy whose ImagerPixelSpacing is that plane spacing
    (:func:`serving.outputs.common.pixel_spacing_mm`), so its entry states the spacing its
    boxes are in, and, when it has no PatientOrientation, the letters of its frames' shared
    Plane Orientation (PS3.3 C.7.6.1.1.1). Sources still not describable are left out of the
    library (they are still referenced by the measurement groups and listed as evidence)."""
    out = []
    for src in sources:
        if _describable(src):
            out.append(src)
            continue
        spacing = pixel_spacing_mm(src)
        if not is_volume(src) or not spacing or "ImagerPixelSpacing" in src:
            continue
        described = Dataset()
        described.update(src)
        described.ImagerPixelSpacing = [f"{v:g}" for v in spacing]
        if "PatientOrientation" not in src:
            orientation = _plane_orientation_letters(src)
            if orientation is None:
                continue
            described.PatientOrientation = list(orientation)
        if _describable(described):
            out.append(described)
    return out


def _add_laterality_and_view(report: hd.sr.MeasurementReport,
                             images: dict[str, ImageOut]) -> None:
    """Image Laterality (CID 244) and Image View (CID 4014) in every Image Library entry
    (TID 1602), which highdicom does not write."""
    acquisition = hd.sr.RelationshipTypeValues.HAS_ACQ_CONTEXT
    for item in _content_items(report[0].ContentSequence):
        if item.get("ValueType") != "IMAGE" or item.get("RelationshipType") != "CONTAINS":
            continue
        uid = str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        image = images.get(uid)
        if image is None or "ContentSequence" not in item:
            continue
        if image.laterality in c.LATERALITY:
            item.ContentSequence.append(hd.sr.CodeContentItem(
                name=c.IMAGE_LATERALITY, value=c.LATERALITY[image.laterality],
                relationship_type=acquisition))
        if image.view in c.VIEW:
            item.ContentSequence.append(hd.sr.CodeContentItem(
                name=c.IMAGE_VIEW, value=c.VIEW[image.view], relationship_type=acquisition))


def build_report(result: ResultInput, sources: Sequence[Dataset]) -> hd.sr.MeasurementReport:
    """The TID 1500 content tree of ``result``; ``sources`` are its source headers in
    ``result.study.images`` order (see :func:`evidence_header`)."""
    algorithm, short = _algorithm(result, full=True), _algorithm(result)
    short_volume = _algorithm(result, volume=True)
    words = StudyWords(result)
    groups: list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
                 | hd.sr.MeasurementsAndQualitativeEvaluations]
    groups = [_summary_group(result, sources, algorithm, bool(words.lesions))]
    for source, image in zip(sources, result.study.images, strict=True):
        groups.extend(_finding_group(result, source, f, words.lesion_of(f.id), algorithm,
                                     short if f.frame is None else short_volume)
                      for f in image.findings)
    library = _library_images(sources)
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(result.model),
        procedure_reported=c.PROCEDURE_REPORTED,
        imaging_measurements=groups,
        language_of_content_item_and_descendants=hd.sr.LanguageOfContentItemAndDescendants(
            hd.sr.CodedConcept(c.LANGUAGE.value, c.LANGUAGE.scheme_designator,
                               c.LANGUAGE.meaning)),
        referenced_images=library or None,
    )
    _add_laterality_and_view(report, {str(img.sop_instance_uid): img
                                      for img in result.study.images})
    return report


# --------------------------------------------------------------------------------------------
# Document
# --------------------------------------------------------------------------------------------


def build_tid1500(result: ResultInput, *, when: dt.datetime | None = None) -> Dataset:
    """A Comprehensive 3D SR document with the TID 1500 measurement report of ``result``.

    The document belongs to the source study (same StudyInstanceUID, patient/study attributes
    copied verbatim from the first source), in a new series (number
    ``SERIES_NUMBER[TID1500]``) with new UIDs; the algorithm is named in Contributing Equipment.
    Content, series, instance and contributing dates/times are ``when`` (default: now). The
    report is complete but unverified and preliminary (no physician has reviewed it). Apart
    from UIDs and those dates/times the object is a function of ``result`` alone.

    Args:
        result: findings and their source headers (Pixel Data not needed).
        when: creation date/time.

    Returns:
        The SR dataset (with file meta), ready for ``save_as(..., enforce_file_format=True)``.
    """
    when = now() if when is None else when
    sources = [evidence_header(s) for s in result.sources]
    report = build_report(result, sources)
    sr = hd.sr.Comprehensive3DSR(
        evidence=sources,
        content=report,
        series_instance_uid=new_uid(),
        sop_instance_uid=new_uid(),
        instance_number=1,
        is_complete=True,
        is_final=False,
        is_verified=False,
        content_date=when.date(),
        content_time=when.time(),
        series_date=when.date(),
        series_time=when.time(),
        **series_identity(ResultKind.TID1500),
    )
    stamp_result(sr, result, when)
    return sr


# --------------------------------------------------------------------------------------------
# Reading back
# --------------------------------------------------------------------------------------------


def _content_items(items: Sequence[Dataset]) -> Iterator[Dataset]:
    """Every content item under ``items``, depth first, in document order."""
    for item in items:
        yield item
        yield from _content_items(item.get("ContentSequence", []))


def _is_image_region(item: Dataset) -> bool:
    """An SCOORD content item named (111030, DCM, "Image Region")."""
    if item.get("ValueType") != "SCOORD" or not item.get("ConceptNameCodeSequence"):
        return False
    name = item.ConceptNameCodeSequence[0]
    return bool(name.CodeValue == c.IMAGE_REGION.value
                and name.CodingSchemeDesignator == c.IMAGE_REGION.scheme_designator)


def _region_image(item: Dataset) -> Dataset:
    """The Referenced SOP Sequence item of the image an Image Region is SELECTED FROM."""
    for child in item.get("ContentSequence", []):
        if child.get("ValueType") == "IMAGE" and child.get("ReferencedSOPSequence"):
            return child.ReferencedSOPSequence[0]
    raise ValueError("expected an Image Region SCOORD with a SELECTED FROM IMAGE child item, "
                     "found none")


def _region_image_uid(item: Dataset) -> str:
    """SOP Instance UID of the image an Image Region is SELECTED FROM."""
    return str(_region_image(item).ReferencedSOPInstanceUID)


def _check_sop_class(ds: Dataset) -> None:
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class != COMPREHENSIVE_3D_SR_STORAGE:
        raise ValueError(f"expected a Comprehensive 3D SR (SOP Class "
                         f"{COMPREHENSIVE_3D_SR_STORAGE}), found SOP Class {sop_class!r}")


def read_tid1500_boxes(ds: Dataset) -> dict[str, list[list[float]]]:
    """The boxes of a TID 1500 SR: SOPInstanceUID of the source image -> ``[x1, y1, x2, y2]``
    per Image Region (stored-image pixels, the ``box_px`` frame), in document order.

    Each region's box bounds its SCOORD points, so a rectangle written by
    :func:`build_tid1500` comes back as the box it was built from.

    Raises:
        ValueError: when ``ds`` is not a Comprehensive 3D SR or a region has no source image.
    """
    _check_sop_class(ds)
    boxes: dict[str, list[list[float]]] = {}
    for item in _content_items(ds.get("ContentSequence", [])):
        if _is_image_region(item):
            boxes.setdefault(_region_image_uid(item), []).append(polyline_box(item.GraphicData))
    return boxes


def read_tid1500_frames(ds: Dataset) -> dict[str, list[list[int]]]:
    """The frames of a TID 1500 SR's Image Regions: SOPInstanceUID of the source image -> the
    Referenced Frame Numbers of each region's source image (1-based; ``[]`` for a 2D image or
    a reference to every frame), in the order of :func:`read_tid1500_boxes`' boxes. A region
    written by :func:`build_tid1500` on a tomosynthesis volume has one frame, the finding's
    ``FrameOut.best``.

    Raises:
        ValueError: as :func:`read_tid1500_boxes`.
    """
    _check_sop_class(ds)
    frames: dict[str, list[list[int]]] = {}
    for item in _content_items(ds.get("ContentSequence", [])):
        if _is_image_region(item):
            ref = _region_image(item)
            frames.setdefault(str(ref.ReferencedSOPInstanceUID), []).append(frame_numbers(ref))
    return frames
