"""Mammography CAD SR (SOP Class 1.2.840.10008.5.1.4.1.1.88.50): the object mammography
workstations read for CAD marks, built with pydicom along PS3.16 TID 4000 "Mammography CAD
Document Root".

Content tree (relationship, value type, concept; TID rows of PS3.16 in brackets)::

    CONTAINER (111036, DCM, "Mammography CAD Report")                         [4000]
     HAS CONCEPT MOD CODE Language of Content Item and Descendants = en-US    [1204]
     CONTAINS CONTAINER Image Library                                          [4000]
      CONTAINS IMAGE <source image>, one per analysed image                    [4020]
       HAS ACQ CONTEXT CODE Image Laterality (CID 6022), CODE Image View (CID 4014)
         (> HAS CONCEPT MOD CODE Image View Modifier), TEXT Patient Orientation Row/Column,
         DATE/TIME Study Date/Time, DATE/TIME Content Date/Time, NUM Horizontal/Vertical
         Pixel Spacing (mm), NUM Positioner Primary Angle (deg) (each when in the source)
      CONTAINS IMAGE <one frame of a tomosynthesis volume>, one per frame a mark is on
       (Referenced Frame Number; the same descriptors)                         [4020]
     CONTAINS CODE CAD Processing and Findings Summary (CID 6047)              [4001]
      INFERRED FROM CONTAINER Individual Impression/Recommendation, per lesion [4003]
       HAS CONCEPT MOD CODE Rendering Intent = Presentation Required
       CONTAINS CODE Differential Diagnosis/Impression = Intraluminal filling defect
        (> HAS CONCEPT MOD CODE Laterality = Left/Right breast),
       CONTAINS TEXT Impression Description, TEXT Algorithm Name/Version/Parameters [4002]
       CONTAINS CODE Single Image Finding          (a finding seen on one view) [4006]
       or CONTAINS CODE Composite Feature          (a two-view fused finding)   [4004, 4005]
         HAS CONCEPT MOD Rendering Intent, HAS PROPERTIES Composite type, Scope of Feature,
         Algorithm Identification, Certainty of Feature (%),
         INFERRED FROM CODE Single Image Finding (CC), INFERRED FROM ... (ML/MLO)
     CONTAINS CODE Summary of Detections = Succeeded (CID 6042)                [4000]
      INFERRED FROM CONTAINER Successful Detections                            [4015]
       CONTAINS CODE Detection Performed = Mammographic breast mass            [4017]
        HAS PROPERTIES Algorithm Identification, CAD Operating Points,         [4019, 4023]
        R-HAS PROPERTIES IMAGE (by reference to each Image Library entry)
     CONTAINS CODE Summary of Analyses = Succeeded | Not Attempted             [4000]
      INFERRED FROM CONTAINER Successful Analyses                              [4016]
       CONTAINS CODE Analysis Performed = Spatial collocation analysis          [4018]

Each Single Image Finding [4006] is (129788004, SCT, "Mammographic breast mass") and carries:
HAS CONCEPT MOD Rendering Intent = Presentation Required, HAS PROPERTIES Algorithm
Name/Version/Parameters [4019], NUM Certainty of Finding (the score in %), and the geometry
[4021]: SCOORD Center (POINT) and SCOORD Outline (closed POLYLINE, 5 points), each R-SELECTED
FROM (by reference) the IMAGE of the Image Library. Why that code, and the other coding
choices: :mod:`serving.outputs.codes` and README, "DICOM results" > "Coding choices".

Tomosynthesis (a source in :data:`serving.outputs.common.VOLUME_SOP_CLASSES`): the SCOORDs of
a mark are drawn on one frame, the finding's best frame (``FindingOut.frame.best``). A SCOORD
is SELECTED FROM an IMAGE (PS3.3 C.18.6: its coordinates are in that image's pixels), and an
IMAGE without Referenced Frame Number references every frame (PS3.3 C.18.4), so the Image
Library gets one more entry [4020] per (volume, best frame) with Referenced Frame Number
(0008,1160) = that frame and the volume's descriptors, after the entries of the whole
images; the marks on that frame reference it. The whole-volume entry stays, referenced by
Detection Performed (the detector ran on every frame). TID 4006 and TID 4021 have no row for
a frame range or a height, so the frames the finding is detected in and the best frame's
height are stated in the Impression Description [4002] (:func:`serving.outputs.wording.
lesion_frames`, e.g. "Tomosynthesis: best seen on frame 23 of 48 (height 21 mm), detected
in frames 20-26"), and a finding seen on one DBT view only is located with that view's own
phrase (``FindingOut.single_view_location``).

Operating point (PS3.4 O.2.2.1, PS3.17 E.4, PS3.16 TID 4023): every mark is a finding at the
applied operating point and has Rendering Intent "Presentation Required", so no mark carries a
CAD Operating Point (a workstation uses that value only to choose among "Presentation
Optional" marks). The CAD Operating Points of Detection Performed describe the one point the
marks were made at: Maximum and Recommended CAD Operating Point 0, and a table with one row,
point 0, on the FROC axes False Markers per Image (X) and Lesion Sensitivity (Y), with the
model card's validation values (or a site calibration's measured false-positive rate) and a
description naming the point and its score threshold.

Coordinates: SCOORD GraphicData are (column, row) pairs in stored-image pixels with
0.0\\0.0 the top-left corner of the top-left pixel (PS3.3 C.18.6.1.1), the frame of
``FindingOut.box_px``, so boxes go in unchanged (as 32-bit floats: about 1e-4 px at these
image sizes). Percentages are the scores times 100.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.coding import Code
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from serving.outputs import codes as c
from serving.outputs import sr_items as si
from serving.outputs.cad_sr_reader import (
    MAMMOGRAPHY_CAD_SR_STORAGE,
    CadMark,
    read_cad_sr,
    read_cad_sr_frames,
)
from serving.outputs.common import (
    MANUFACTURER,
    SERIES_DESCRIPTION,
    SERIES_NUMBER,
    ResultInput,
    ResultKind,
    contributing_equipment,
    copy_patient_study,
    element_values,
    new_uid,
    now,
    pixel_spacing_mm,
    referenced_frame,
    software_versions,
)
from serving.outputs.wording import (
    Lesion,
    StudyWords,
    algorithm_notes,
    impression,
    on_volume,
    volume_promise_text,
    volume_score_meaning,
)
from serving.pipeline.findings import FindingOut, ImageOut
from serving.pipeline.locate.breast_frame import view_group

__all__ = ["MAMMOGRAPHY_CAD_SR_STORAGE", "CadMark", "build_cad_sr", "read_cad_sr",
           "read_cad_sr_frames"]

DCMR_UID = "1.2.840.10008.8.1.1"
"""Mapping Resource UID of the DICOM Content Mapping Resource (PS3.16)."""
ROOT_TEMPLATE = "4000"
#: Position of the Image Library in the root's Content Sequence (1-based): the second child,
#: after the language; entry ``k`` (0-based) is ``(1, IMAGE_LIBRARY_POSITION, k + 1)``.
IMAGE_LIBRARY_POSITION = 2


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------


def _algorithm_identification(relationship: str, result: ResultInput, *, full: bool = False,
                              volume: bool = False) -> list[Dataset]:
    """TID 4019: Algorithm Name, Algorithm Version, Algorithm Parameters (the operating point,
    its threshold and source; with ``full`` also its promise and what the scores are: once,
    under Detection Performed, since every mark repeats its algorithm identification)."""
    return [
        si.text(relationship, c.ALGORITHM_NAME, result.algorithm_name),
        si.text(relationship, c.ALGORITHM_VERSION, result.algorithm_version),
        *(si.text(relationship, c.ALGORITHM_PARAMETERS, note)
          for note in algorithm_notes(result, full=full, volume=volume)),
    ]


def _library_entry(source: Dataset, image: ImageOut, frame: int | None = None) -> Dataset:
    """TID 4020: the IMAGE (with ``frame``: that frame of a multi-frame image) with its
    laterality, view, orientation, dates, pixel spacing and C-arm angle (HAS ACQ CONTEXT),
    each when the source has it."""
    rel = "HAS ACQ CONTEXT"
    children: list[Dataset] = []
    if image.laterality in c.BREAST_SIDE:
        children.append(si.code(rel, c.IMAGE_LATERALITY, c.BREAST_SIDE[image.laterality]))
    if image.view in c.VIEW:
        children.append(si.code(rel, c.IMAGE_VIEW, c.VIEW[image.view], _view_modifiers(source)))
    orientation = element_values(source.get("PatientOrientation"))
    if len(orientation) == 2:
        children.append(si.text(rel, c.PATIENT_ORIENTATION_ROW, str(orientation[0])))
        children.append(si.text(rel, c.PATIENT_ORIENTATION_COLUMN, str(orientation[1])))
    for keyword, name, make in (("StudyDate", c.STUDY_DATE, si.date),
                                ("StudyTime", c.STUDY_TIME, si.time),
                                ("ContentDate", c.CONTENT_DATE, si.date),
                                ("ContentTime", c.CONTENT_TIME, si.time)):
        value = str(source.get(keyword) or "")
        if value:
            children.append(make(rel, name, value))
    spacing = pixel_spacing_mm(source)
    if spacing:  # rows 11-12: horizontal = between columns, vertical = between rows
        children.append(si.num(rel, c.HORIZONTAL_PIXEL_SPACING, spacing[1], c.MILLIMETER))
        children.append(si.num(rel, c.VERTICAL_PIXEL_SPACING, spacing[0], c.MILLIMETER))
    angle = element_values(source.get("PositionerPrimaryAngle"))
    with contextlib.suppress(IndexError, ValueError):  # row 13, may be present
        children.append(si.num(rel, c.POSITIONER_PRIMARY_ANGLE, float(str(angle[0])), c.DEGREE))
    return si.image("CONTAINS", _required_uid(source, "SOPClassUID"),
                    _required_uid(source, "SOPInstanceUID"), children, frame=frame)


def _view_modifiers(source: Dataset) -> list[Dataset]:
    """Image View Modifier codes copied from the source's ViewModifierCodeSequence."""
    views = source.get("ViewCodeSequence") or []
    if not views:
        return []
    modifiers = views[0].get("ViewModifierCodeSequence") or []
    return [si.code("HAS CONCEPT MOD", c.IMAGE_VIEW_MODIFIER,
                    Code(str(m.CodeValue), str(m.CodingSchemeDesignator), str(m.CodeMeaning)))
            for m in modifiers
            if all(k in m for k in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning"))]


def _required_uid(source: Dataset, keyword: str) -> str:
    value = str(source.get(keyword) or "")
    if not value:
        raise ValueError(f"source instance has no {keyword}: the CAD SR must reference every "
                         f"analysed image by SOP Class and SOP Instance UID")
    return value


def _image_path(index: int) -> tuple[int, int, int]:
    """By-reference path of Image Library entry ``index`` (0-based)."""
    return (1, IMAGE_LIBRARY_POSITION, index + 1)


def _frame_entries(result: ResultInput) -> list[tuple[int, int]]:
    """``(image index, frame number)`` of the Image Library entries for one frame of a
    volume: the best frame of every finding on a volume, once each, by image then frame.
    They follow the entries of the whole images.

    Raises:
        ValueError: a finding's frame does not fit its source
            (:func:`serving.outputs.common.referenced_frame`).
    """
    entries: set[tuple[int, int]] = set()
    for index, (source, image) in enumerate(result.pairs):
        for finding in image.findings:
            frame = referenced_frame(source, finding.frame, f"finding {finding.id}")
            if frame is not None:
                entries.add((index, frame))
    return sorted(entries)


def _finding_image_path(result: ResultInput, index: int, finding: FindingOut
                        ) -> tuple[int, int, int]:
    """By-reference path of the Image Library entry a finding's SCOORDs are selected from:
    its image, or on a volume the entry of its best frame."""
    frame = referenced_frame(result.sources[index], finding.frame, f"finding {finding.id}")
    if frame is None:
        return _image_path(index)
    position = _frame_entries(result).index((index, frame))
    return _image_path(len(result.sources) + position)


def _geometry(finding: FindingOut, image_path: Sequence[int]) -> list[Dataset]:
    """TID 4021: Center (POINT) and Outline (closed 5-point POLYLINE of ``box_px``)."""
    x1, y1, x2, y2 = finding.box_px
    outline = [x1, y1, x2, y1, x2, y2, x1, y2, x1, y1]
    return [
        si.scoord("HAS PROPERTIES", c.CENTER, "POINT", finding.center_px,
                  [si.by_reference("SELECTED FROM", image_path)]),
        si.scoord("HAS PROPERTIES", c.OUTLINE, "POLYLINE", outline,
                  [si.by_reference("SELECTED FROM", image_path)]),
    ]


def _single_image_finding(relationship: str, finding: FindingOut, image_index: int,
                          result: ResultInput) -> Dataset:
    """TID 4006 for one finding of image ``image_index``: a required mark, so no CAD
    Operating Point under its Rendering Intent."""
    children = [
        si.code("HAS CONCEPT MOD", c.RENDERING_INTENT, c.PRESENTATION_REQUIRED),
        *_algorithm_identification("HAS PROPERTIES", result, volume=finding.frame is not None),
        si.num("HAS PROPERTIES", c.CERTAINTY_OF_FINDING, finding.score * 100.0, c.PERCENT),
        *_geometry(finding, _finding_image_path(result, image_index, finding)),
    ]
    return si.code(relationship, c.SINGLE_IMAGE_FINDING, c.FINDING_MASS, children)


def _composite_feature(lesion: Lesion, result: ResultInput) -> Dataset:
    """TID 4004/4005: a CC + ML/MLO match, INFERRED FROM its two Single Image Findings."""
    assert lesion.fused is not None
    children = [
        si.code("HAS CONCEPT MOD", c.RENDERING_INTENT, c.PRESENTATION_REQUIRED),
        si.code("HAS PROPERTIES", c.COMPOSITE_TYPE, c.RELATED_SPATIALLY),
        si.code("HAS PROPERTIES", c.SCOPE_OF_FEATURE, c.ON_MULTIPLE_IMAGES),
        *_algorithm_identification("HAS PROPERTIES", result, volume=on_volume(lesion)),
        si.num("HAS PROPERTIES", c.CERTAINTY_OF_FEATURE, lesion.fused.score * 100.0, c.PERCENT),
        *(_single_image_finding("INFERRED FROM", f, i, result) for i, f in lesion.members),
    ]
    return si.code("CONTAINS", c.COMPOSITE_FEATURE, c.FINDING_MASS, children)


def _impression(lesion: Lesion, result: ResultInput) -> Dataset:
    """TID 4003 with its TID 4002 body: the coded impression (Intraluminal filling defect, with
    the breast), the Impression Description text, Algorithm Identification; then the
    feature."""
    side = c.BREAST_SIDE.get(lesion.where.laterality)
    laterality = ([si.code("HAS CONCEPT MOD", c.LATERALITY_CONCEPT, side)]
                  if side is not None else [])
    if lesion.fused is not None:
        feature = _composite_feature(lesion, result)
    else:
        index, finding = lesion.members[0]
        feature = _single_image_finding("CONTAINS", finding, index, result)
    return si.container("INFERRED FROM", c.INDIVIDUAL_IMPRESSION, [
        si.code("HAS CONCEPT MOD", c.RENDERING_INTENT, c.PRESENTATION_REQUIRED),
        si.code("CONTAINS", c.DIFFERENTIAL_DIAGNOSIS, c.FILLING_DEFECT, laterality),
        si.text("CONTAINS", c.IMPRESSION_DESCRIPTION, impression(lesion, result)),
        *_algorithm_identification("CONTAINS", result, volume=on_volume(lesion)),
        feature,
    ])


def _operating_points(result: ResultInput) -> list[Dataset]:
    """TID 4023: the one operating point the marks were made at (point 0), with its model
    card validation sensitivity and false-marker rate on the FROC axes when known.

    The table holds one point per SR: when the study has tomosynthesis volumes (and
    :attr:`ResultInput.volume_promise`), the coded rows stay the 2D point's (per image) and
    the description states the volumes' threshold and what it measured per volume."""
    op, perf = result.operating_point, result.performance
    description = f"{op.name}: every mark has score >= {op.score_threshold:g} ({op.source})"
    promise = result.volume_point
    if promise is not None:
        measured = volume_promise_text(promise) or "false positives per volume not measured"
        description = (f"{op.name}: every mark on a 2D image has score >= "
                       f"{op.score_threshold:g} ({op.source}); the false-marker rate and "
                       f"sensitivity here are the 2D point's. Marks on tomosynthesis volumes "
                       f"have score >= {promise.score_threshold:g} ({promise.source}; "
                       f"{measured}); {volume_score_meaning(promise.rescored)}")
    rows: list[Dataset] = [si.text("HAS PROPERTIES", c.CAD_OPERATING_POINT_DESCRIPTION,
                                   description)]
    if perf is not None and perf.fp_per_image is not None:
        rows.append(si.num("HAS PROPERTIES", c.FALSE_MARKERS_PER_IMAGE, perf.fp_per_image,
                           c.MARKS_PER_IMAGE))
    if perf is not None and perf.sensitivity is not None:
        rows.append(si.num("HAS PROPERTIES", c.LESION_SENSITIVITY, perf.sensitivity * 100.0,
                           c.PERCENT))
    table = si.container("HAS PROPERTIES", c.CAD_OPERATING_POINT_TABLE, [
        si.code("CONTAINS", c.X_CONCEPT, c.FALSE_MARKERS_PER_IMAGE),
        si.code("CONTAINS", c.Y_CONCEPT, c.LESION_SENSITIVITY),
        si.num("CONTAINS", c.CAD_OPERATING_POINT, 0, c.range_unit(0), rows),
    ])
    return [
        si.num("HAS PROPERTIES", c.MAXIMUM_CAD_OPERATING_POINT, 0, c.ARBITRARY_UNIT),
        si.num("HAS PROPERTIES", c.RECOMMENDED_CAD_OPERATING_POINT, 0, c.range_unit(0)),
        table,
    ]


def _detections(result: ResultInput) -> Dataset:
    """Summary of Detections with TID 4015/4017: the detector ran on every image."""
    performed = si.code("CONTAINS", c.DETECTION_PERFORMED, c.FINDING_MASS, [
        *_algorithm_identification("HAS PROPERTIES", result, full=True),
        *_operating_points(result),
        *(si.by_reference("HAS PROPERTIES", _image_path(i))
          for i in range(len(result.sources))),
    ])
    return si.code("CONTAINS", c.SUMMARY_OF_DETECTIONS, c.SUCCEEDED, [
        si.container("INFERRED FROM", c.SUCCESSFUL_DETECTIONS, [performed])])


def _fusion_images(result: ResultInput) -> list[int]:
    """Images of the breasts that have a CC-like and a lateral or oblique view (the two-view
    matching ran on them, :func:`~serving.pipeline.locate.breast_frame.view_group`); empty
    when no breast has both."""
    images = result.study.images
    chosen: list[int] = []
    for lat in ("L", "R"):
        side = [i for i, img in enumerate(images)
                if img.laterality == lat and view_group(img.view) is not None]
        if {view_group(images[i].view) for i in side} == {"cc", "other"}:
            chosen.extend(side)
    return sorted(chosen)


def _analyses(result: ResultInput) -> Dataset:
    """Summary of Analyses with TID 4016/4018: the CC vs ML/MLO matching, when it ran."""
    images = _fusion_images(result)
    if not images:
        return si.code("CONTAINS", c.SUMMARY_OF_ANALYSES, c.NOT_ATTEMPTED)
    performed = si.code("CONTAINS", c.ANALYSIS_PERFORMED, c.SPATIAL_COLLOCATION_ANALYSIS, [
        *_algorithm_identification("HAS PROPERTIES", result),
        *(si.by_reference("HAS PROPERTIES", _image_path(i)) for i in images),
    ])
    return si.code("CONTAINS", c.SUMMARY_OF_ANALYSES, c.SUCCEEDED, [
        si.container("INFERRED FROM", c.SUCCESSFUL_ANALYSES, [performed])])


def _root(result: ResultInput) -> Dataset:
    """TID 4000: the root CONTAINER and its whole content tree."""
    words = StudyWords(result)
    pairs = result.pairs
    library = si.container("CONTAINS", c.IMAGE_LIBRARY, [
        *(_library_entry(src, img) for src, img in pairs),
        *(_library_entry(*pairs[index], frame=frame) for index, frame in _frame_entries(result)),
    ])
    summary_value = (c.ALL_SUCCEEDED_WITH_FINDINGS if words.lesions
                     else c.ALL_SUCCEEDED_WITHOUT_FINDINGS)
    children = [
        si.code("HAS CONCEPT MOD", c.LANGUAGE_OF_CONTENT, c.LANGUAGE),
        library,
        si.code("CONTAINS", c.CAD_PROCESSING_SUMMARY, summary_value,
                [_impression(lesion, result) for lesion in words.lesions]),
        _detections(result),
        _analyses(result),
    ]
    assert children[IMAGE_LIBRARY_POSITION - 1] is library  # by-reference paths rely on it
    root = si.container(None, c.MAMMOGRAPHY_CAD_REPORT, children)
    template = Dataset()
    template.MappingResource = "DCMR"
    template.MappingResourceUID = DCMR_UID
    template.TemplateIdentifier = ROOT_TEMPLATE
    root.ContentTemplateSequence = [template]
    return root


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


def _evidence(result: ResultInput) -> list[Dataset]:
    """Current Requested Procedure Evidence: every source image, grouped by study and series
    in order of first appearance."""
    grouped: dict[str, dict[str, list[Dataset]]] = {}
    for src in result.sources:
        ref = Dataset()
        ref.ReferencedSOPClassUID = _required_uid(src, "SOPClassUID")
        ref.ReferencedSOPInstanceUID = _required_uid(src, "SOPInstanceUID")
        by_series = grouped.setdefault(_required_uid(src, "StudyInstanceUID"), {})
        by_series.setdefault(_required_uid(src, "SeriesInstanceUID"), []).append(ref)
    items = []
    for study_uid, by_series in grouped.items():
        study_item = Dataset()
        study_item.StudyInstanceUID = study_uid
        series_items = []
        for series_uid, refs in by_series.items():
            series_item = Dataset()
            series_item.SeriesInstanceUID = series_uid
            series_item.ReferencedSOPSequence = refs
            series_items.append(series_item)
        study_item.ReferencedSeriesSequence = series_items
        items.append(study_item)
    return items


def _file_meta(sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MAMMOGRAPHY_CAD_SR_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def build_cad_sr(result: ResultInput, *, when: dt.datetime | None = None) -> Dataset:
    """The Mammography CAD SR of ``result``, ready to be written as a Part 10 file
    (``ds.save_as(path, enforce_file_format=True)``; Explicit VR Little Endian).

    It belongs to the source study (patient/study attributes copied from ``result.sources[0]``,
    the same set as the other result objects) in a new series (number :data:`SERIES_NUMBER`
    ``[ResultKind.CAD_SR]``), references every source image in its Image Library and evidence,
    and has one Individual Impression per lesion (see :class:`serving.outputs.wording.Lesion`):
    a Single Image Finding for a finding seen on one view, a Composite Feature over two for a
    two-view fused finding. Probable mimics (``ImageOut.mimics``) are not written. The content
    tree is described in the module docstring.

    Args:
        result: the study's findings and the source headers they were computed from.
        when: creation time (Content Date/Time, Instance Creation, Series and Contribution
            Date/Time); default :func:`serving.outputs.common.now`. Everything else except the
            new SOP Instance and Series Instance UIDs is a function of ``result`` alone.

    Raises:
        ValueError: a source lacks a UID the references need, or a fused finding names an
            unknown finding or reuses one.
    """
    when = when or now()
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    sop_instance_uid = new_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(sop_instance_uid)
    # SOP Common
    ds.SOPClassUID = MAMMOGRAPHY_CAD_SR_STORAGE
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    # Patient, General Study, Patient Study
    copy_patient_study(result.sources[0], ds)
    # SR Document Series
    ds.Modality = "SR"
    ds.SeriesInstanceUID = new_uid()
    ds.SeriesNumber = SERIES_NUMBER[ResultKind.CAD_SR]
    ds.SeriesDescription = SERIES_DESCRIPTION[ResultKind.CAD_SR]
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ReferencedPerformedProcedureStepSequence = []
    # General Equipment (and Contributing Equipment, SOP Common)
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = result.model.name
    ds.SoftwareVersions = software_versions(result.model)
    ds.ContributingEquipmentSequence = [contributing_equipment(result.model, when)]
    # SR Document General
    ds.InstanceNumber = 1
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentDate, ds.ContentTime = date, time
    ds.PerformedProcedureCodeSequence = []
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(result)
    # SR Document Content
    ds.update(_root(result))
    return ds
