"""Mammography CAD SR (SOP Class 1.2.840.10008.5.1.4.1.1.88.50): the object mammography
workstations read for CAD marks, built with pydicom along PS3.16 TID 4000 "Mammography CAD
Document Root".

Content tree (relationship, value type, concept; TID rows of PS3.16 in brackets)::

    CONTAINER (111036, DCM, "Mammography CAD Report")                         [4000]
     HAS CONCEPT MOD CODE Language of Content Item and Descendants = English  [1204]
     CONTAINS CONTAINER Image Library                                          [4000]
      CONTAINS IMAGE <source image>, one per analysed image                    [4020]
       HAS ACQ CONTEXT CODE Image Laterality (CID 6022), CODE Image View (CID 4014)
         (> HAS CONCEPT MOD CODE Image View Modifier), TEXT Patient Orientation Row/Column,
         DATE/TIME Study Date/Time, DATE/TIME Content Date/Time (when in the source)
     CONTAINS CODE CAD Processing and Findings Summary (CID 6047)              [4001]
      INFERRED FROM CONTAINER Individual Impression/Recommendation, per lesion [4003]
       HAS CONCEPT MOD CODE Rendering Intent = Presentation Required
       CONTAINS TEXT Impression Description, TEXT Algorithm Name/Version/...   [4002, 4019]
       CONTAINS CODE Single Image Finding          (a finding seen on one view) [4006]
       or CONTAINS CODE Composite Feature          (a two-view fused finding)   [4004, 4005]
         HAS CONCEPT MOD Rendering Intent, HAS PROPERTIES Composite type, Scope of Feature,
         Algorithm Identification, Certainty of Feature (%),
         INFERRED FROM CODE Single Image Finding (CC), INFERRED FROM ... (ML/MLO)
     CONTAINS CODE Summary of Detections = Succeeded (CID 6042)                [4000]
      INFERRED FROM CONTAINER Successful Detections                            [4015]
       CONTAINS CODE Detection Performed = <finding code>                      [4017]
        HAS PROPERTIES Algorithm Identification, CAD Operating Points,         [4019, 4023]
        R-HAS PROPERTIES IMAGE (by reference to each Image Library entry)
     CONTAINS CODE Summary of Analyses = Succeeded | Not Attempted             [4000]
      INFERRED FROM CONTAINER Successful Analyses                              [4016]
       CONTAINS CODE Analysis Performed = Spatial collocation analysis          [4018]

Each Single Image Finding [4006] carries: HAS CONCEPT MOD Rendering Intent (>> HAS PROPERTIES
NUM CAD Operating Point), HAS PROPERTIES Algorithm Name/Version/Parameters [4019], NUM
Certainty of Finding (the detector score in %), and the geometry [4021]: SCOORD Center (POINT)
and SCOORD Outline (closed POLYLINE, 5 points), each R-SELECTED FROM (by reference) the IMAGE
of the Image Library.

Finding code (TID 4006 row 1, CID 6014 "Mammography Single Image Finding"): CID 6014 has no
ductography concept and no plain "mass"; a mass-like lesion on a single view is a
"density" in the CAD SR vocabulary, so a filling defect is (129793001, SCT, "Mammography
breast density"); a finding matched on CC and ML/MLO (a lesion seen in two projections, i.e.
a mass in BI-RADS terms) is the Composite Feature (129788004, SCT, "Mammographic breast mass")
from CID 6016. The precise galactographic meaning, (111425, DCM, "Intraluminal filling
defect") of CID 6057 "Ductography Finding", is not in either value set, so it is stated in
the Impression Description text of each Individual Impression/Recommendation.

Operating point: the service reports findings at one operating point (``ResultInput``
carries only the one applied), so the CAD Operating Points [4023] have one bin: Maximum
CAD Operating Point 0, every finding at CAD Operating Point 0, and the table row for point 0
gives the operating point's name and its score threshold as a Certainty of Finding in %.
The Algorithm Parameters text also says where the threshold is from (the model card or a
site calibration file and its date).

Coordinates: SCOORD GraphicData are (column, row) pairs in stored-image pixels with
0.0\\0.0 the top-left corner of the top-left pixel (PS3.3 C.18.6.1.1), the frame of
``FindingOut.box_px``, so boxes go in unchanged (as 32-bit floats: about 1e-4 px at these
image sizes). Percentages are the scores times 100.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from serving.outputs.common import (
    MANUFACTURER,
    SERIES_DESCRIPTION,
    SERIES_NUMBER,
    ResultInput,
    ResultKind,
    contributing_equipment,
    copy_patient_study,
    new_uid,
    now,
    software_versions,
)
from serving.pipeline.findings import FindingOut, FusedFindingOut, ImageOut

MAMMOGRAPHY_CAD_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.50"
"""SOP Class UID of Mammography CAD SR Storage."""
DCMR_UID = "1.2.840.10008.8.1.1"
"""Mapping Resource UID of the DICOM Content Mapping Resource (PS3.16)."""
ROOT_TEMPLATE = "4000"


@dataclass(frozen=True)
class Code:
    """A coded concept (Code Value, Coding Scheme Designator, Code Meaning)."""

    value: str
    scheme: str
    meaning: str

    def dataset(self) -> Dataset:
        """One code sequence item."""
        item = Dataset()
        item.CodeValue = self.value
        item.CodingSchemeDesignator = self.scheme
        item.CodeMeaning = self.meaning
        return item


def _dcm(value: str, meaning: str) -> Code:
    return Code(value, "DCM", meaning)


# Concept names (PS3.16 Annex D, DCM) -----------------------------------------------------
MAMMOGRAPHY_CAD_REPORT = _dcm("111036", "Mammography CAD Report")
LANGUAGE = _dcm("121049", "Language of Content Item and Descendants")
IMAGE_LIBRARY = _dcm("111028", "Image Library")
IMAGE_LATERALITY = _dcm("111027", "Image Laterality")
IMAGE_VIEW = _dcm("111031", "Image View")
IMAGE_VIEW_MODIFIER = _dcm("111032", "Image View Modifier")
PATIENT_ORIENTATION_ROW = _dcm("111044", "Patient Orientation Row")
PATIENT_ORIENTATION_COLUMN = _dcm("111043", "Patient Orientation Column")
STUDY_DATE = _dcm("111060", "Study Date")
STUDY_TIME = _dcm("111061", "Study Time")
CONTENT_DATE = _dcm("111018", "Content Date")
CONTENT_TIME = _dcm("111019", "Content Time")
CAD_PROCESSING_SUMMARY = _dcm("111017", "CAD Processing and Findings Summary")
INDIVIDUAL_IMPRESSION = _dcm("111034", "Individual Impression/Recommendation")
IMPRESSION_DESCRIPTION = _dcm("111033", "Impression Description")
RENDERING_INTENT = _dcm("111056", "Rendering Intent")
SINGLE_IMAGE_FINDING = _dcm("111059", "Single Image Finding")
COMPOSITE_FEATURE = _dcm("111015", "Composite Feature")
COMPOSITE_TYPE = _dcm("111016", "Composite type")
SCOPE_OF_FEATURE = _dcm("111057", "Scope of Feature")
CERTAINTY_OF_FEATURE = _dcm("111011", "Certainty of Feature")
CERTAINTY_OF_FINDING = _dcm("111012", "Certainty of Finding")
CENTER = _dcm("111010", "Center")
OUTLINE = _dcm("111041", "Outline")
ALGORITHM_NAME = _dcm("111001", "Algorithm Name")
ALGORITHM_VERSION = _dcm("111003", "Algorithm Version")
ALGORITHM_PARAMETERS = _dcm("111002", "Algorithm Parameters")
CAD_OPERATING_POINT = _dcm("111071", "CAD Operating Point")
MAXIMUM_CAD_OPERATING_POINT = _dcm("111072", "Maximum CAD Operating Point")
RECOMMENDED_CAD_OPERATING_POINT = _dcm("111092", "Recommended CAD Operating Point")
CAD_OPERATING_POINT_TABLE = _dcm("111093", "CAD Operating Point Table")
CAD_OPERATING_POINT_DESCRIPTION = _dcm("111081", "CAD Operating Point Description")
X_CONCEPT = _dcm("122698", "X-Concept")
Y_CONCEPT = _dcm("122699", "Y-Concept")
LESION_SENSITIVITY = _dcm("111089", "Lesion Sensitivity")
SUMMARY_OF_DETECTIONS = _dcm("111064", "Summary of Detections")
SUCCESSFUL_DETECTIONS = _dcm("111063", "Successful Detections")
DETECTION_PERFORMED = _dcm("111022", "Detection Performed")
SUMMARY_OF_ANALYSES = _dcm("111065", "Summary of Analyses")
SUCCESSFUL_ANALYSES = _dcm("111062", "Successful Analyses")
ANALYSIS_PERFORMED = _dcm("111004", "Analysis Performed")

# Values ------------------------------------------------------------------------------------
ENGLISH = Code("en", "RFC5646", "English")  # CID 5000
PRESENTATION_REQUIRED = _dcm("111150", "Presentation Required: Rendering device is "
                                       "expected to present")  # CID 6034
ALL_SUCCEEDED_WITH_FINDINGS = _dcm("111242", "All algorithms succeeded; with findings")
ALL_SUCCEEDED_WITHOUT_FINDINGS = _dcm("111241", "All algorithms succeeded; without findings")
SUCCEEDED = _dcm("111222", "Succeeded")  # CID 6042
NOT_ATTEMPTED = _dcm("111225", "Not Attempted")
RELATED_SPATIALLY = _dcm("111154", "Target Content Items are related spatially")  # CID 6035
ON_MULTIPLE_IMAGES = _dcm("111158", "Feature detected on multiple images")  # CID 6036
FILLING_DEFECT_FINDING = Code("129793001", "SCT", "Mammography breast density")  # CID 6014
FUSED_FINDING_FEATURE = Code("129788004", "SCT", "Mammographic breast mass")  # CID 6016
SPATIAL_COLLOCATION_ANALYSIS = Code("133884007", "SCT", "Spatial collocation analysis")
PERCENT = Code("%", "UCUM", "Percent")
ARBITRARY_UNIT = Code("[arb'U]", "UCUM", "arbitrary unit")

#: ``ImageOut.laterality`` -> CID 6022 "Side".
LATERALITY_CODES: dict[str, Code] = {
    "L": Code("80248007", "SCT", "Left breast"),
    "R": Code("73056007", "SCT", "Right breast"),
}
#: ``ImageOut.view`` -> CID 4014 "View for Mammography" (SNOMED CT).
VIEW_CODES: dict[str, Code] = {
    "CC": Code("399162004", "SCT", "cranio-caudal"),
    "MLO": Code("399368009", "SCT", "medio-lateral oblique"),
    "ML": Code("399260004", "SCT", "medial-lateral"),
    "LM": Code("399352003", "SCT", "latero-medial"),
    "LMO": Code("399099002", "SCT", "latero-medial oblique"),
    "FB": Code("399196006", "SCT", "caudo-cranial"),
    "SIO": Code("399188001", "SCT", "superolateral to inferomedial oblique"),
    "ISO": Code("441555000", "SCT", "inferomedial to superolateral oblique"),
    "XCCL": Code("399192008", "SCT", "cranio-caudal exaggerated laterally"),
    "XCCM": Code("399101009", "SCT", "cranio-caudal exaggerated medially"),
}
#: Views fused with a CC view into a Composite Feature (the pipeline's two-view matching).
OTHER_VIEWS = frozenset({"ML", "MLO", "LM"})
FINDING_TEXT = "Intraluminal filling defect (DCM 111425) on galactography"

#: Position of the Image Library in the root's Content Sequence (1-based): the second child,
#: after the language; entry ``k`` (0-based) is ``(1, IMAGE_LIBRARY_POSITION, k + 1)``.
IMAGE_LIBRARY_POSITION = 2


class CadMark(NamedTuple):
    """One Single Image Finding read back from a CAD SR.

    Attributes:
        box: ``[x1, y1, x2, y2]`` in stored-image pixels (x = column, y = row, origin at the
            top-left corner of the top-left pixel), the bounds of the Outline.
        certainty: Certainty of Finding as a fraction in [0, 1], ``None`` when absent.
    """

    box: list[float]
    certainty: float | None


# --------------------------------------------------------------------------------------------
# Content items
# --------------------------------------------------------------------------------------------


def _item(relationship: str | None, value_type: str, name: Code | None,
          children: Sequence[Dataset] = ()) -> Dataset:
    item = Dataset()
    if relationship is not None:
        item.RelationshipType = relationship
    item.ValueType = value_type
    if name is not None:
        item.ConceptNameCodeSequence = [name.dataset()]
    if children:
        item.ContentSequence = list(children)
    return item


def _container(relationship: str | None, name: Code, children: Sequence[Dataset]) -> Dataset:
    item = _item(relationship, "CONTAINER", name, children)
    item.ContinuityOfContent = "SEPARATE"
    return item


def _code(relationship: str, name: Code, value: Code, children: Sequence[Dataset] = ()
          ) -> Dataset:
    item = _item(relationship, "CODE", name, children)
    item.ConceptCodeSequence = [value.dataset()]
    return item


def _text(relationship: str, name: Code, text: str) -> Dataset:
    item = _item(relationship, "TEXT", name)
    item.TextValue = text
    return item


def _ds(value: float) -> str:
    """A Decimal String (at most 16 characters) for ``value``, 6 significant digits."""
    return format(value, ".6g")


def _num(relationship: str, name: Code, value: float, unit: Code,
         children: Sequence[Dataset] = ()) -> Dataset:
    item = _item(relationship, "NUM", name, children)
    measured = Dataset()
    measured.NumericValue = _ds(value)
    measured.MeasurementUnitsCodeSequence = [unit.dataset()]
    item.MeasuredValueSequence = [measured]
    return item


def _date(relationship: str, name: Code, value: str) -> Dataset:
    item = _item(relationship, "DATE", name)
    item.Date = value
    return item


def _time(relationship: str, name: Code, value: str) -> Dataset:
    item = _item(relationship, "TIME", name)
    item.Time = value
    return item


def _image(relationship: str, sop_class_uid: str, sop_instance_uid: str,
           children: Sequence[Dataset] = ()) -> Dataset:
    item = _item(relationship, "IMAGE", None, children)
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class_uid
    ref.ReferencedSOPInstanceUID = sop_instance_uid
    item.ReferencedSOPSequence = [ref]
    return item


def _scoord(relationship: str, name: Code, graphic_type: str, points: Sequence[float],
            children: Sequence[Dataset]) -> Dataset:
    item = _item(relationship, "SCOORD", name, children)
    item.GraphicType = graphic_type
    item.GraphicData = [float(v) for v in points]
    return item


def _by_reference(relationship: str, path: Sequence[int]) -> Dataset:
    """A by-reference relationship to the content item at ``path`` (1 = the root)."""
    item = Dataset()
    item.RelationshipType = relationship
    item.ReferencedContentItemIdentifier = list(path)
    return item


def _range_unit(maximum: int) -> Code:
    """UNITS of a CAD operating point, DT ({0:n}, UCUM, "range: 0:n") (TID 4023)."""
    return Code(f"{{0:{maximum}}}", "UCUM", f"range: 0:{maximum}")


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------


def _algorithm_identification(relationship: str, result: ResultInput) -> list[Dataset]:
    """TID 4019: Algorithm Name, Algorithm Version, Algorithm Parameters (operating point)."""
    op = result.operating_point
    return [
        _text(relationship, ALGORITHM_NAME, result.algorithm_name),
        _text(relationship, ALGORITHM_VERSION, result.algorithm_version),
        _text(relationship, ALGORITHM_PARAMETERS,
              f"operating point {op.name}: findings with score >= {op.score_threshold:g} "
              f"({op.source})"),
    ]


def _library_entry(source: Dataset, image: ImageOut) -> Dataset:
    """TID 4020: the IMAGE with its laterality, view and dates (HAS ACQ CONTEXT)."""
    rel = "HAS ACQ CONTEXT"
    children: list[Dataset] = []
    if image.laterality in LATERALITY_CODES:
        children.append(_code(rel, IMAGE_LATERALITY, LATERALITY_CODES[image.laterality]))
    if image.view in VIEW_CODES:
        children.append(_code(rel, IMAGE_VIEW, VIEW_CODES[image.view],
                              _view_modifiers(source)))
    orientation = _values(source.get("PatientOrientation"))
    if len(orientation) == 2:
        children.append(_text(rel, PATIENT_ORIENTATION_ROW, str(orientation[0])))
        children.append(_text(rel, PATIENT_ORIENTATION_COLUMN, str(orientation[1])))
    for keyword, name, make in (("StudyDate", STUDY_DATE, _date), ("StudyTime", STUDY_TIME, _time),
                                ("ContentDate", CONTENT_DATE, _date),
                                ("ContentTime", CONTENT_TIME, _time)):
        value = str(source.get(keyword) or "")
        if value:
            children.append(make(rel, name, value))
    return _image("CONTAINS", _required_uid(source, "SOPClassUID"),
                  _required_uid(source, "SOPInstanceUID"), children)


def _values(value: object) -> list[object]:
    """The values of a possibly multi-valued element value (``[]`` when absent or empty)."""
    if value is None or value == "":
        return []
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    return [value]


def _view_modifiers(source: Dataset) -> list[Dataset]:
    """Image View Modifier codes copied from the source's ViewModifierCodeSequence."""
    views = source.get("ViewCodeSequence") or []
    if not views:
        return []
    modifiers = views[0].get("ViewModifierCodeSequence") or []
    return [_code("HAS CONCEPT MOD", IMAGE_VIEW_MODIFIER,
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


def _geometry(finding: FindingOut, image_path: Sequence[int]) -> list[Dataset]:
    """TID 4021: Center (POINT) and Outline (closed 5-point POLYLINE of ``box_px``)."""
    x1, y1, x2, y2 = finding.box_px
    outline = [x1, y1, x2, y1, x2, y2, x1, y2, x1, y1]
    return [
        _scoord("HAS PROPERTIES", CENTER, "POINT", finding.center_px,
                [_by_reference("SELECTED FROM", image_path)]),
        _scoord("HAS PROPERTIES", OUTLINE, "POLYLINE", outline,
                [_by_reference("SELECTED FROM", image_path)]),
    ]


def _single_image_finding(relationship: str, finding: FindingOut, image_index: int,
                          result: ResultInput) -> Dataset:
    """TID 4006 for one finding of image ``image_index``."""
    intent = _code("HAS CONCEPT MOD", RENDERING_INTENT, PRESENTATION_REQUIRED,
                   [_num("HAS PROPERTIES", CAD_OPERATING_POINT, 0, _range_unit(0))])
    children = [
        intent,
        *_algorithm_identification("HAS PROPERTIES", result),
        _num("HAS PROPERTIES", CERTAINTY_OF_FINDING, finding.score * 100.0, PERCENT),
        *_geometry(finding, _image_path(image_index)),
    ]
    return _code(relationship, SINGLE_IMAGE_FINDING, FILLING_DEFECT_FINDING, children)


def _composite_feature(fused: FusedFindingOut, members: Sequence[tuple[int, FindingOut]],
                       result: ResultInput) -> Dataset:
    """TID 4004/4005: a CC + ML/MLO match, INFERRED FROM its two Single Image Findings."""
    children = [
        _code("HAS CONCEPT MOD", RENDERING_INTENT, PRESENTATION_REQUIRED),
        _code("HAS PROPERTIES", COMPOSITE_TYPE, RELATED_SPATIALLY),
        _code("HAS PROPERTIES", SCOPE_OF_FEATURE, ON_MULTIPLE_IMAGES),
        *_algorithm_identification("HAS PROPERTIES", result),
        _num("HAS PROPERTIES", CERTAINTY_OF_FEATURE, fused.score * 100.0, PERCENT),
        *(_single_image_finding("INFERRED FROM", f, i, result) for i, f in members),
    ]
    return _code("CONTAINS", COMPOSITE_FEATURE, FUSED_FINDING_FEATURE, children)


def _impression(description: str, feature: Dataset, result: ResultInput) -> Dataset:
    """TID 4003 with its TID 4002 body (Impression Description, Algorithm Identification)."""
    return _container("INFERRED FROM", INDIVIDUAL_IMPRESSION, [
        _code("HAS CONCEPT MOD", RENDERING_INTENT, PRESENTATION_REQUIRED),
        _text("CONTAINS", IMPRESSION_DESCRIPTION, description),
        *_algorithm_identification("CONTAINS", result),
        feature,
    ])


def _describe_single(image: ImageOut, finding: FindingOut) -> str:
    if finding.location is not None:
        where = finding.location.text
    else:
        side = {"L": "Left breast", "R": "Right breast"}.get(image.laterality, "Breast")
        where = f"{side}, {image.view or 'unknown'} view"
    return f"{FINDING_TEXT}: {where} (score {finding.score:.2f})"


def _finding_index(result: ResultInput) -> dict[str, tuple[int, FindingOut]]:
    """``FindingOut.id`` -> (image index in ``result.sources``, finding)."""
    return {f.id: (i, f) for i, img in enumerate(result.study.images) for f in img.findings}


def _impressions(result: ResultInput) -> list[Dataset]:
    """Individual Impressions: each fused pair as a Composite Feature, then every finding not
    in a pair as a Single Image Finding (each finding appears exactly once)."""
    index = _finding_index(result)
    used: set[str] = set()
    out: list[Dataset] = []
    for fused in result.study.fused:
        members = []
        for fid in fused.finding_ids:
            if fid not in index:
                raise ValueError(f"fused finding {fused.finding_ids} names finding {fid!r}, "
                                 f"expected one of the study's finding ids {sorted(index)}")
            if fid in used:
                raise ValueError(f"finding {fid!r} is in more than one fused finding; expected "
                                 f"each finding in at most one CC/ML-MLO pair")
            used.add(fid)
            members.append(index[fid])
        text = f"{FINDING_TEXT}, seen on two views: {fused.phrase} (score {fused.score:.2f})"
        out.append(_impression(text, _composite_feature(fused, members, result), result))
    for i, image in enumerate(result.study.images):
        for f in image.findings:
            if f.id not in used:
                out.append(_impression(_describe_single(image, f),
                                       _single_image_finding("CONTAINS", f, i, result), result))
    return out


def _has_findings(result: ResultInput) -> bool:
    return any(img.findings for img in result.study.images)


def _operating_points(result: ResultInput) -> list[Dataset]:
    """TID 4023 with one operating point (0): the applied one, its threshold as a
    Certainty of Finding (X axis) in %."""
    op = result.operating_point
    point = _num("CONTAINS", CAD_OPERATING_POINT, 0, _range_unit(0), [
        _text("HAS PROPERTIES", CAD_OPERATING_POINT_DESCRIPTION,
              f"{op.name}: findings with score >= {op.score_threshold:g}"),
        _num("HAS PROPERTIES", CERTAINTY_OF_FINDING, op.score_threshold * 100.0, PERCENT),
    ])
    table = _container("HAS PROPERTIES", CAD_OPERATING_POINT_TABLE, [
        _code("CONTAINS", X_CONCEPT, CERTAINTY_OF_FINDING),
        _code("CONTAINS", Y_CONCEPT, LESION_SENSITIVITY),
        point,
    ])
    return [
        _num("HAS PROPERTIES", MAXIMUM_CAD_OPERATING_POINT, 0, ARBITRARY_UNIT),
        _num("HAS PROPERTIES", RECOMMENDED_CAD_OPERATING_POINT, 0, _range_unit(0)),
        table,
    ]


def _detections(result: ResultInput) -> Dataset:
    """Summary of Detections with TID 4015/4017: the detector ran on every image."""
    performed = _code("CONTAINS", DETECTION_PERFORMED, FILLING_DEFECT_FINDING, [
        *_algorithm_identification("HAS PROPERTIES", result),
        *_operating_points(result),
        *(_by_reference("HAS PROPERTIES", _image_path(i)) for i in range(len(result.sources))),
    ])
    return _code("CONTAINS", SUMMARY_OF_DETECTIONS, SUCCEEDED, [
        _container("INFERRED FROM", SUCCESSFUL_DETECTIONS, [performed])])


def _fusion_images(result: ResultInput) -> list[int]:
    """Images of the breasts that have a CC and an ML/MLO/LM view (the two-view matching ran
    on them); empty when no breast has both."""
    images = result.study.images
    chosen: list[int] = []
    for lat in ("L", "R"):
        side = [i for i, img in enumerate(images) if img.laterality == lat]
        views = {images[i].view for i in side}
        if "CC" in views and views & OTHER_VIEWS:
            chosen.extend(i for i in side if images[i].view in {"CC", *OTHER_VIEWS})
    return sorted(chosen)


def _analyses(result: ResultInput) -> Dataset:
    """Summary of Analyses with TID 4016/4018: the CC vs ML/MLO matching, when it ran."""
    images = _fusion_images(result)
    if not images:
        return _code("CONTAINS", SUMMARY_OF_ANALYSES, NOT_ATTEMPTED)
    performed = _code("CONTAINS", ANALYSIS_PERFORMED, SPATIAL_COLLOCATION_ANALYSIS, [
        *_algorithm_identification("HAS PROPERTIES", result),
        *(_by_reference("HAS PROPERTIES", _image_path(i)) for i in images),
    ])
    return _code("CONTAINS", SUMMARY_OF_ANALYSES, SUCCEEDED, [
        _container("INFERRED FROM", SUCCESSFUL_ANALYSES, [performed])])


def _root(result: ResultInput) -> Dataset:
    """TID 4000: the root CONTAINER and its whole content tree."""
    library = _container("CONTAINS", IMAGE_LIBRARY,
                         [_library_entry(src, img) for src, img in result.pairs])
    summary_value = (ALL_SUCCEEDED_WITH_FINDINGS if _has_findings(result)
                     else ALL_SUCCEEDED_WITHOUT_FINDINGS)
    children = [
        _code("HAS CONCEPT MOD", LANGUAGE, ENGLISH),
        library,
        _code("CONTAINS", CAD_PROCESSING_SUMMARY, summary_value, _impressions(result)),
        _detections(result),
        _analyses(result),
    ]
    assert children[IMAGE_LIBRARY_POSITION - 1] is library  # by-reference paths rely on it
    root = _container(None, MAMMOGRAPHY_CAD_REPORT, children)
    template = Dataset()
    template.MappingResource = "DCMR"
    template.MappingResourceUID = DCMR_UID
    template.TemplateIdentifier = ROOT_TEMPLATE
    root.ContentTemplateSequence = [template]
    return root


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------

#: Type 2 attributes of the Patient and General Study modules, written empty when the source
#: lacks them.
_TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                        "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
                        "AccessionNumber")


def _patient_study(ds: Dataset, result: ResultInput) -> None:
    source = result.sources[0]
    copy_patient_study(source, ds)
    for keyword in _TYPE2_PATIENT_STUDY:
        if keyword not in ds:
            setattr(ds, keyword, "")
    if "SpecificCharacterSet" in source:  # the copied names keep their character set
        ds.SpecificCharacterSet = source.SpecificCharacterSet


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

    It belongs to the source study (patient/study attributes copied from ``result.sources[0]``)
    in a new series (number :data:`SERIES_NUMBER` ``[ResultKind.CAD_SR]``), references every
    source image in its Image Library and evidence, and has one Single Image Finding per
    ``FindingOut`` (two-view fused findings as Composite Features over two of them). The
    content tree is described in the module docstring.

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
    # Patient, General Study
    _patient_study(ds, result)
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


# --------------------------------------------------------------------------------------------
# Reading back
# --------------------------------------------------------------------------------------------


def _walk(item: Dataset, path: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], Dataset]]:
    yield path, item
    for k, child in enumerate(item.get("ContentSequence") or [], start=1):
        yield from _walk(child, (*path, k))


def _concept(item: Dataset) -> tuple[str, str] | None:
    names = item.get("ConceptNameCodeSequence") or []
    if not names:
        return None
    return str(names[0].CodeValue), str(names[0].CodingSchemeDesignator)


def _is(item: Dataset, value_type: str, name: Code) -> bool:
    return (item.get("ValueType") == value_type
            and _concept(item) == (name.value, name.scheme))


def _selected_image(scoord: Dataset, where: str, items: dict[tuple[int, ...], Dataset]) -> str:
    """SOP Instance UID of the IMAGE a SCOORD is SELECTED FROM (by value or by reference)."""
    for child in scoord.get("ContentSequence") or []:
        if child.get("RelationshipType") != "SELECTED FROM":
            continue
        if "ReferencedContentItemIdentifier" in child:
            ref = child.ReferencedContentItemIdentifier
            path = tuple(int(v) for v in (ref if isinstance(ref, Sequence) else [ref]))
            if path not in items:
                raise ValueError(f"SCOORD at {where} references content item "
                                 f"{'.'.join(map(str, path))}, which does not exist")
            child = items[path]
        if child.get("ValueType") == "IMAGE":
            return str(child.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    raise ValueError(f"SCOORD at {where} has no SELECTED FROM IMAGE; expected one")


def _mark(finding: Dataset, where: str, items: dict[tuple[int, ...], Dataset]
          ) -> tuple[str, CadMark]:
    outline = None
    certainty = None
    for child in finding.get("ContentSequence") or []:
        if _is(child, "SCOORD", OUTLINE):
            outline = child
        elif _is(child, "NUM", CERTAINTY_OF_FINDING):
            certainty = float(child.MeasuredValueSequence[0].NumericValue) / 100.0
    if outline is None:
        raise ValueError(f"Single Image Finding at {where} has no Outline (111041, DCM) "
                         f"SCOORD; expected one")
    data = [float(v) for v in outline.GraphicData]
    if len(data) < 4 or len(data) % 2:
        raise ValueError(f"Outline at {where} has {len(data)} GraphicData values; expected an "
                         f"even number, at least 4 (column\\row pairs)")
    xs, ys = data[0::2], data[1::2]
    uid = _selected_image(outline, where, items)
    return uid, CadMark([min(xs), min(ys), max(xs), max(ys)], certainty)


def read_cad_sr(ds: Dataset) -> dict[str, list[CadMark]]:
    """The Single Image Findings of a Mammography CAD SR, by referenced image.

    Returns:
        ``{SOP Instance UID of the image: [CadMark(box, certainty), ...]}`` in document order,
        ``box`` being the bounds of the finding's Outline SCOORD in stored-image pixels
        (``[x1, y1, x2, y2]``, the frame of ``FindingOut.box_px``) and ``certainty`` the
        Certainty of Finding as a fraction (``FindingOut.score``). Findings nested in
        Composite Features are included.

    Raises:
        ValueError: ``ds`` is not a Mammography CAD SR, or a finding has no Outline or no
            image reference.
    """
    sop_class = str(ds.get("SOPClassUID") or "")
    if sop_class != MAMMOGRAPHY_CAD_SR_STORAGE:
        raise ValueError(f"expected a Mammography CAD SR (SOP Class "
                         f"{MAMMOGRAPHY_CAD_SR_STORAGE}), found SOP Class {sop_class or 'none'}")
    items = dict(_walk(ds, (1,)))
    marks: dict[str, list[CadMark]] = {}
    for path, item in items.items():
        if _is(item, "CODE", SINGLE_IMAGE_FINDING):
            uid, mark = _mark(item, ".".join(map(str, path)), items)
            marks.setdefault(uid, []).append(mark)
    return marks
