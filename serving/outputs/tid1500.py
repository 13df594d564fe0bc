"""Comprehensive 3D SR with a TID 1500 "Imaging Measurement Report" (highdicom), the result
form OHIF and other SR-aware viewers read, and a reader of its boxes.

Content tree (PS3.16 TID 1500)::

    Imaging Measurement Report (DCM 126000)
      Language, observation context (device observer: the model), procedure reported
      Image Library (TID 1600): the analysed images
      Imaging Measurements
        Measurement Group (TID 1501): CAD processing summary, references every source image
        Measurement Group (TID 1410), one per finding:
          Tracking Identifier "Finding <id>[, lesion <k>]" and a Tracking Unique Identifier
          Finding = Intraluminal filling defect; Finding Site = Breast (+ Laterality)
          Algorithm Name / Version / Parameters (TID 4019)
          Image Region: SCOORD closed POLYLINE (rectangle), SELECTED FROM the source image
          NUM Certainty of Finding (%), NUM Distance from nipple (mm)
          CODE Clockface or region, Quadrant location, Depth (when known)

Codes (verified against PS3.16 via pydicom's code dictionary and the DICOM value sets):

- Finding type: (111425, DCM, "Intraluminal filling defect"), CID 6057 "Ductography Finding
  for Breast": the BI-RADS ductography term for exactly what the model detects.
- Finding site: (76752008, SCT, "Breast") with Laterality (7771000 Left / 24028007 Right,
  CID 244).
- Score: NUM (111012, DCM, "Certainty of Finding"), CID 6048, in percent (UCUM "%", 0-100),
  the same concept the Mammography CAD SR (TID 4006) uses for a CAD mark's score.
- Distance from nipple: NUM (121242, DCM, "Distance from nipple"), CID 6165, in mm (UCUM).
- Clock face: CODE (111014, DCM, "Clockface or region") with CID 6019 values
  (129772004..129783008 "1..12 o'clock position", 129784002 "Subareolar region" for
  retroareolar, 129786000 "Central region of breast").
- Quadrant: CODE (111048, DCM, "Quadrant location") with CID 6020 values (76365002 UOQ,
  77831004 UIQ, 33564002 LOQ, 19100000 LIQ).
- Depth: CODE (111020, DCM, "Depth") with CID 6024 values (255549009 SCT "Anterior",
  C25569 NCIt "Middle", 255551008 SCT "Posterior").
- Summary: CODE (111017, DCM, "CAD Processing and Findings Summary") with CID 6047 values
  (111242 "All algorithms succeeded; with findings", 111241 "...; without findings").
- Procedure reported: (18102001, SCT, "Mammary ductogram"), CID 6050.

Location: a finding matched across CC and ML/MLO (a ``FusedFindingOut``) is reported with the
fused BI-RADS location (clock face or region, quadrant, depth, distance); a finding seen in one
view only with that view's depth and distance (a single view cannot tell the clock face).

Coordinates: SCOORD graphic data are (column, row) pairs in stored-image pixels, origin at the
top-left corner of the top-left pixel (PS3.3 C.18.6.1.1), i.e. the frame of ``box_px``; a box
``[x1, y1, x2, y2]`` becomes the closed polyline (x1,y1) (x2,y1) (x2,y2) (x1,y2) (x1,y1)
unchanged. The file stores them as 32-bit floats (FL), about 1e-4 px at 4096 px.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from serving.outputs.common import (
    MANUFACTURER,
    SERIES_DESCRIPTION,
    SERIES_NUMBER,
    ResultInput,
    ResultKind,
    box_polyline,
    device_uid,
    evidence_header,
    fused_by_finding,
    new_uid,
    now,
    polyline_box,
    stamp_result,
)
from serving.pipeline.findings import FindingOut, FusedFindingOut, ImageOut, ModelOut

COMPREHENSIVE_3D_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"
"""SOP Class UID of Comprehensive 3D SR Storage."""

FINDING_TYPE = Code("111425", "DCM", "Intraluminal filling defect")
BREAST = Code("76752008", "SCT", "Breast")
LATERALITY: dict[str, Code] = {
    "L": Code("7771000", "SCT", "Left"),
    "R": Code("24028007", "SCT", "Right"),
}
CERTAINTY_OF_FINDING = Code("111012", "DCM", "Certainty of Finding")
DISTANCE_FROM_NIPPLE = Code("121242", "DCM", "Distance from nipple")
CLOCKFACE_OR_REGION = Code("111014", "DCM", "Clockface or region")
QUADRANT_LOCATION = Code("111048", "DCM", "Quadrant location")
DEPTH = Code("111020", "DCM", "Depth")
CAD_SUMMARY = Code("111017", "DCM", "CAD Processing and Findings Summary")
SUCCEEDED_WITH_FINDINGS = Code("111242", "DCM", "All algorithms succeeded; with findings")
SUCCEEDED_WITHOUT_FINDINGS = Code("111241", "DCM", "All algorithms succeeded; without findings")
PROCEDURE_REPORTED = Code("18102001", "SCT", "Mammary ductogram")
PERCENT = Code("%", "UCUM", "Percent")
MILLIMETER = Code("mm", "UCUM", "mm")
IMAGE_REGION = Code("111030", "DCM", "Image Region")

#: CID 6019 clock face positions, by whole hour.
CLOCK_POSITION: dict[int, Code] = {
    hour: Code(value, "SCT", f"{hour} o'clock position")
    for hour, value in {
        1: "129772004", 2: "129773009", 3: "129774003", 4: "129775002", 5: "129776001",
        6: "129777005", 7: "129778000", 8: "129779008", 9: "129780006", 10: "129781005",
        11: "129782003", 12: "129783008",
    }.items()
}
#: CID 6019 regions that BI-RADS states instead of a clock face.
REGION: dict[str, Code] = {
    "retroareolar": Code("129784002", "SCT", "Subareolar region"),
    "central": Code("129786000", "SCT", "Central region of breast"),
}
#: CID 6020 quadrants.
QUADRANT: dict[str, Code] = {
    "UOQ": Code("76365002", "SCT", "Upper outer quadrant of breast"),
    "UIQ": Code("77831004", "SCT", "Upper inner quadrant of breast"),
    "LOQ": Code("33564002", "SCT", "Lower outer quadrant of breast"),
    "LIQ": Code("19100000", "SCT", "Lower inner quadrant of breast"),
}
#: CID 6024 depths (thirds of the posterior nipple line).
DEPTH_VALUE: dict[str, Code] = {
    "anterior": Code("255549009", "SCT", "Anterior"),
    "middle": Code("C25569", "NCIt", "Middle"),
    "posterior": Code("255551008", "SCT", "Posterior"),
}

# --------------------------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------------------------


def _algorithm(result: ResultInput) -> hd.sr.AlgorithmIdentification:
    """TID 4019: model name and version, the operating point as parameters."""
    op = result.operating_point
    return hd.sr.AlgorithmIdentification(
        name=result.algorithm_name,
        version=result.algorithm_version,
        parameters=[f"operating point {op.name}", f"score threshold {op.score_threshold:g}",
                    f"threshold source: {op.source}"],
        manufacturer=MANUFACTURER,
    )


def _observation_context(model: ModelOut) -> hd.sr.ObservationContext:
    """TID 1001 with a device observer: the model."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid(model), name=model.name, manufacturer_name=MANUFACTURER,
        model_name=f"{model.name} {model.version}",
    )
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))


def _finding_sites(laterality: str) -> list[hd.sr.FindingSite]:
    """Breast, with its laterality when known (``"L"``/``"R"``)."""
    return [hd.sr.FindingSite(anatomic_location=BREAST, laterality=LATERALITY.get(laterality))]


def _location_evaluations(finding: FindingOut,
                          lesion: FusedFindingOut | None) -> list[hd.sr.QualitativeEvaluation]:
    """Clock face or region, quadrant and depth: fused when the finding was matched across
    views, else the depth this view tells."""
    out: list[hd.sr.QualitativeEvaluation] = []
    if lesion is not None:
        quadrant = lesion.quadrant or ""
        where = REGION.get(quadrant)
        if where is None and lesion.clock_hour is not None:
            where = CLOCK_POSITION.get(lesion.clock_hour)
        if where is not None:
            out.append(hd.sr.QualitativeEvaluation(CLOCKFACE_OR_REGION, where))
        if quadrant in QUADRANT:
            out.append(hd.sr.QualitativeEvaluation(QUADRANT_LOCATION, QUADRANT[quadrant]))
        depth: str | None = lesion.depth
    else:
        depth = finding.location.depth if finding.location is not None else None
    if depth in DEPTH_VALUE:
        out.append(hd.sr.QualitativeEvaluation(DEPTH, DEPTH_VALUE[depth]))
    return out


def _measurements(finding: FindingOut, lesion: FusedFindingOut | None,
                  algorithm: hd.sr.AlgorithmIdentification) -> list[hd.sr.Measurement]:
    """Certainty of finding (score x 100, %) and distance from the nipple (mm; fused when the
    finding was matched across views, else this view's estimate)."""
    out = [hd.sr.Measurement(name=CERTAINTY_OF_FINDING, value=round(finding.score * 100.0, 4),
                             unit=PERCENT, algorithm_id=algorithm)]
    distance: float | None = None
    if lesion is not None:
        distance = lesion.distance_from_nipple_mm
    elif finding.location is not None:
        distance = finding.location.distance_from_nipple_mm
    if distance is not None:
        out.append(hd.sr.Measurement(name=DISTANCE_FROM_NIPPLE, value=round(distance, 3),
                                     unit=MILLIMETER, algorithm_id=algorithm))
    return out


def _tracking_identifier(finding: FindingOut, lesion_number: int | None) -> str:
    """Human-readable tracking identifier, e.g. ``"Finding 0.1, lesion 2"`` (the lesion number
    is shared by the two views of a fused finding)."""
    text = f"Finding {finding.id}"
    return text if lesion_number is None else f"{text}, lesion {lesion_number}"


def _finding_group(source: Dataset, image: ImageOut, finding: FindingOut,
                   fused: tuple[int, FusedFindingOut] | None,
                   algorithm: hd.sr.AlgorithmIdentification,
                   ) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410 measurement group of one finding on one image."""
    polyline = box_polyline(finding.box_px, int(source.Rows), int(source.Columns),
                            f"finding {finding.id} box_px")
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                               graphic_data=polyline,
                               source_image=hd.sr.SourceImageForRegion.from_source_image(source))
    lesion_number, lesion = fused if fused is not None else (None, None)
    tracking = hd.sr.TrackingIdentifier(uid=new_uid(),
                                        identifier=_tracking_identifier(finding, lesion_number))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_region=region,
        finding_type=FINDING_TYPE,
        algorithm_id=algorithm,
        finding_sites=_finding_sites(image.laterality),
        measurements=_measurements(finding, lesion, algorithm),
        qualitative_evaluations=_location_evaluations(finding, lesion),
    )


def _summary_group(result: ResultInput, sources: Sequence[Dataset],
                   algorithm: hd.sr.AlgorithmIdentification,
                   ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group stating that the algorithm ran on every source image, with or without
    findings (always present, so a study without findings still has a valid report)."""
    any_findings = any(img.findings for img in result.study.images)
    summary = SUCCEEDED_WITH_FINDINGS if any_findings else SUCCEEDED_WITHOUT_FINDINGS
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=new_uid(),
                                                     identifier="CAD processing summary"),
        algorithm_id=algorithm,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(CAD_SUMMARY, summary)],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(s)
                       for s in sources],
    )


def _library_images(sources: Sequence[Dataset]) -> list[Dataset]:
    """The sources highdicom can describe in the Image Library (TID 1602/1603 need e.g.
    PatientOrientation and ImagerPixelSpacing for MG); others are left out of the library
    (they are still referenced by the measurement groups and listed as evidence)."""
    out = []
    for src in sources:
        try:
            hd.sr.ImageLibraryEntryDescriptors(src)
        except (AttributeError, IndexError, KeyError, ValueError):
            continue
        out.append(src)
    return out


def build_report(result: ResultInput, sources: Sequence[Dataset]) -> hd.sr.MeasurementReport:
    """The TID 1500 content tree of ``result``; ``sources`` are its source headers in
    ``result.study.images`` order (see :func:`evidence_header`)."""
    algorithm = _algorithm(result)
    fused = fused_by_finding(result.study.images, result.study.fused)
    groups: list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
                 | hd.sr.MeasurementsAndQualitativeEvaluations]
    groups = [_summary_group(result, sources, algorithm)]
    for source, image in zip(sources, result.study.images, strict=True):
        groups.extend(_finding_group(source, image, f, fused.get(f.id), algorithm)
                      for f in image.findings)
    return hd.sr.MeasurementReport(
        observation_context=_observation_context(result.model),
        procedure_reported=PROCEDURE_REPORTED,
        imaging_measurements=groups,
        referenced_images=_library_images(sources) or None,
    )


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
        series_number=SERIES_NUMBER[ResultKind.TID1500],
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=SERIES_DESCRIPTION[ResultKind.TID1500],
        content_date=when.date(),
        content_time=when.time(),
        series_date=when.date(),
        series_time=when.time(),
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
    return bool(name.CodeValue == IMAGE_REGION.value
                and name.CodingSchemeDesignator == IMAGE_REGION.scheme_designator)


def _region_image_uid(item: Dataset) -> str:
    """SOP Instance UID of the image an Image Region is SELECTED FROM."""
    for child in item.get("ContentSequence", []):
        if child.get("ValueType") == "IMAGE" and child.get("ReferencedSOPSequence"):
            return str(child.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    raise ValueError("expected an Image Region SCOORD with a SELECTED FROM IMAGE child item, "
                     "found none")


def read_tid1500_boxes(ds: Dataset) -> dict[str, list[list[float]]]:
    """The boxes of a TID 1500 SR: SOPInstanceUID of the source image -> ``[x1, y1, x2, y2]``
    per Image Region (stored-image pixels, the ``box_px`` frame), in document order.

    Each region's box bounds its SCOORD points, so a rectangle written by
    :func:`build_tid1500` comes back as the box it was built from.

    Raises:
        ValueError: when ``ds`` is not a Comprehensive 3D SR or a region has no source image.
    """
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class != COMPREHENSIVE_3D_SR_STORAGE:
        raise ValueError(f"expected a Comprehensive 3D SR (SOP Class "
                         f"{COMPREHENSIVE_3D_SR_STORAGE}), found SOP Class {sop_class!r}")
    boxes: dict[str, list[list[float]]] = {}
    for item in _content_items(ds.get("ContentSequence", [])):
        if _is_image_region(item):
            boxes.setdefault(_region_image_uid(item), []).append(polyline_box(item.GraphicData))
    return boxes
