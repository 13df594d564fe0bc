"""What every DICOM result object (Mammography CAD SR, TID 1500 SR, GSPS) is built from, and
the attributes they share.

A result belongs to the source study: same StudyInstanceUID and patient/study attributes
(copied exactly from the first source instance), a new series with new UIDs, the algorithm
named in Contributing Equipment. Everything but UIDs and the creation date/time is a function
of the input alone (no clocks or randomness elsewhere), so the same input gives the same object.

Coordinates: findings carry ``box_px`` ``[x1, y1, x2, y2]`` in stored-image pixels with the
origin at the top-left corner of the top-left pixel (x = column, y = row, x2/y2 exclusive).
DICOM SCOORD and GRAPHIC data use the same image-relative pixel frame with (column, row)
pairs and sub-pixel resolution (PS3.3 C.18.6.1.1: "the top left corner of the top left pixel
is 0.0\\0.0"), so boxes go into DICOM unchanged.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypedDict

import numpy as np
import numpy.typing as npt
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

import serving
from serving.outputs import codes
from serving.pipeline.detect_volume import TomoSettings
from serving.pipeline.findings import (
    FrameOut,
    ImageOut,
    ModelOut,
    OperatingPointOut,
    StudyOut,
)
from serving.pipeline.model import DetectorModel
from serving.pipeline.volume_points import VolumePoints, volume_points

MANUFACTURER = "galacto"
"""Manufacturer written in every result object and in Contributing Equipment."""

#: Patient and study attributes copied verbatim from the source (when present there) into
#: every result object, so all objects of a study carry the same Patient and Study information
#: entities (PS3.3 C.7.1.1 Patient, C.7.2.1 General Study, C.7.2.2 Patient Study modules).
PATIENT_STUDY_KEYWORDS: tuple[str, ...] = (
    # Patient
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate", "PatientBirthTime", "PatientSex", "OtherPatientIDsSequence",
    "OtherPatientNames", "EthnicGroup", "PatientComments", "PatientSpeciesDescription",
    "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
    # General Study
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence", "StudyID", "AccessionNumber",
    "IssuerOfAccessionNumberSequence", "StudyDescription", "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence", "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence", "RequestingServiceCodeSequence",
    "ReferencedStudySequence", "ProcedureCodeSequence", "ReasonForPerformedProcedureCodeSequence",
    # Patient Study
    "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "PatientAge",
    "PatientSize", "PatientWeight", "Occupation", "AdditionalPatientHistory",
    "PregnancyStatus", "SmokingStatus",
)


#: SOP classes of the tomosynthesis volumes the results reference frame by frame: Breast
#: Tomosynthesis Image (PS3.3 A.55) and the multi-frame grayscale Secondary Captures (A.8.3,
#: A.8.4). A finding on one of them carries a :class:`FrameOut`; its marks reference that
#: frame with Referenced Frame Number (0008,1160).
VOLUME_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.13.1.3": "Breast Tomosynthesis Image",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture",
}


def is_volume(source: Dataset) -> bool:
    """Whether ``source`` is a tomosynthesis volume (:data:`VOLUME_SOP_CLASSES`)."""
    return str(source.get("SOPClassUID", "")) in VOLUME_SOP_CLASSES


def number_of_frames(source: Dataset) -> int | None:
    """NumberOfFrames (0028,0008) of ``source`` as a positive integer, ``None`` when absent or
    unusable."""
    try:
        count = int(str(source.get("NumberOfFrames", "")).strip())
    except ValueError:
        return None
    return count if count >= 1 else None


def referenced_frame(source: Dataset, frame: FrameOut | None, what: str) -> int | None:
    """The frame number a mark of ``frame`` references in ``source`` (Referenced Frame Number,
    1-based): ``frame.best`` for a tomosynthesis volume, ``None`` for a 2D image.

    Args:
        source: the image the mark is drawn on.
        frame: the finding's or mimic's :class:`FrameOut` (``None`` on a 2D image).
        what: names the finding in error messages.

    Raises:
        ValueError: ``frame`` is given for a source that is not a volume, or its frames are
            not ``1 <= first <= best <= last <= NumberOfFrames``.
    """
    if frame is None:
        return None
    sop_class = str(source.get("SOPClassUID", ""))
    if sop_class not in VOLUME_SOP_CLASSES:
        raise ValueError(f"{what} has a frame ({frame.best}) but its source is SOP Class "
                         f"{sop_class!r}, not a multi-frame volume (expected one of "
                         f"{sorted(VOLUME_SOP_CLASSES)})")
    count = number_of_frames(source)
    if count is None:
        raise ValueError(f"{what}: its source has no usable NumberOfFrames")
    if not 1 <= frame.first <= frame.best <= frame.last <= count:
        raise ValueError(f"{what}: expected 1 <= first <= best <= last <= {count} "
                         f"(NumberOfFrames), got first={frame.first}, best={frame.best}, "
                         f"last={frame.last}")
    return frame.best


class ResultKind(StrEnum):
    """The DICOM result objects the service produces."""

    CAD_SR = "sr"
    """Mammography CAD SR (TID 4000), what mammography workstations read for CAD marks."""
    TID1500 = "tid1500"
    """Comprehensive 3D SR with a TID 1500 measurement report (highdicom), for OHIF and co."""
    GSPS = "gsps"
    """Grayscale Softcopy Presentation State with rectangles and labels (highdicom)."""


#: Series number of each result kind: fixed, so a PACS shows them in a stable order.
SERIES_NUMBER: dict[ResultKind, int] = {
    ResultKind.CAD_SR: 9001, ResultKind.TID1500: 9002, ResultKind.GSPS: 9003,
}
SERIES_DESCRIPTION: dict[ResultKind, str] = {
    ResultKind.CAD_SR: "galacto CAD SR",
    ResultKind.TID1500: "galacto measurement report",
    ResultKind.GSPS: "galacto CAD marks",
}


@dataclass(frozen=True)
class OperatingPointPerformance:
    """What the applied operating point promises, as the model card (validation data) or a site
    calibration (the site's normal studies) states it.

    Attributes:
        sensitivity: share of lesions marked on validation data (0-1); ``None`` when not
            measured (a site calibration measures only false positives).
        fp_per_image: false marks per image measured there.
    """

    sensitivity: float | None
    fp_per_image: float | None

    @classmethod
    def of(cls, point: object) -> OperatingPointPerformance:
        """From any object with ``sensitivity`` and ``fp_per_image`` attributes (e.g. the
        model's ``OperatingPoint``)."""
        sens, fp = getattr(point, "sensitivity", None), getattr(point, "fp_per_image", None)
        return cls(None if sens is None else float(sens), None if fp is None else float(fp))


@dataclass(frozen=True)
class VolumePromise:
    """The operating point applied to the tomosynthesis volumes of a result, and what it
    promises there (volume scores are the detector's highest slab scores, rescored only by the
    card's tomosynthesis rescoring, so the 2D point's threshold and figures do not describe
    them).

    Attributes:
        score_threshold: volume findings have a final score (rescored when
            :attr:`rescored`, else the detector's) ``>= score_threshold``.
        fp_per_volume: false positives per volume measured on DBT validation data, ``None``
            when not measured.
        sensitivity: share of lesions found there (0-1), ``None`` when not measured.
        source: where the threshold is from and how far it can be trusted, e.g. ``"model card
            tomosynthesis point balanced"`` or ``"the 2D threshold of balanced applied to raw
            volume scores, not fitted on tomosynthesis"``.
        rescored: the volume scores were rescored with the other view (the card's
            tomosynthesis rescoring).
    """

    score_threshold: float
    fp_per_volume: float | None
    sensitivity: float | None
    source: str
    rescored: bool = False

    @classmethod
    def of(cls, points: VolumePoints) -> VolumePromise:
        """From the request's :class:`~serving.pipeline.volume_points.VolumePoints`."""
        point = points.point
        if point is None:
            if points.thresholds_2d:
                source = (f"the 2D threshold of {points.name} applied to raw volume scores, "
                          "not fitted on tomosynthesis")
            else:
                source = "set by the request, not fitted on tomosynthesis"
            return cls(points.score_threshold, None, None, source, points.rescored)
        source = f"model card tomosynthesis point {point.name}"
        if not points.calibrated:
            source += " (fitted with other slab settings than these volumes ran on)"
        return cls(point.score_threshold, point.fp_per_volume, point.sensitivity, source,
                   points.rescored)


def volume_promise(model: DetectorModel, operating_point: str | None,
                   tomo: TomoSettings | None = None) -> VolumePromise:
    """What the volumes of a request ran at (operating point name, the caller's settings) and
    what it promises, for :attr:`ResultInput.volume_promise`."""
    return VolumePromise.of(volume_points(model, operating_point, tomo=tomo))


@dataclass(frozen=True)
class ResultInput:
    """One study's detection result and the instances it was computed from.

    Attributes:
        sources: the analysed source instances, ``sources[i]`` being the image described by
            ``study.images[i]`` (same order, same length). Headers suffice: builders never
            read Pixel Data (it may have been removed to save memory).
        study: the study's per-image findings and two-view fused findings.
        model: name and version of the model that produced them.
        operating_point: the operating point (name, score threshold) that was applied.
        performance: the applied operating point's sensitivity and false-positive rate, when
            the caller knows them (stated in the report text and the CAD operating point
            table).
        volume_promise: the operating point applied to the study's tomosynthesis volumes
            (ImageOut.number_of_frames set) and what it promises; the text about volume
            findings states it instead of the 2D point. Ignored when the study has no volume.
    """

    sources: Sequence[Dataset]
    study: StudyOut
    model: ModelOut
    operating_point: OperatingPointOut
    performance: OperatingPointPerformance | None = None
    volume_promise: VolumePromise | None = None

    def __post_init__(self) -> None:
        if len(self.sources) != len(self.study.images):
            raise ValueError(f"ResultInput needs one source dataset per image: got "
                             f"{len(self.sources)} sources for {len(self.study.images)} images")
        for src, img in zip(self.sources, self.study.images, strict=True):
            uid = str(getattr(src, "SOPInstanceUID", ""))
            if img.sop_instance_uid is not None and uid != img.sop_instance_uid:
                raise ValueError(f"source SOPInstanceUID {uid!r} does not match image "
                                 f"{img.index}'s {img.sop_instance_uid!r}")
        studies = {str(getattr(s, "StudyInstanceUID", "")) for s in self.sources}
        if len(studies) != 1:
            raise ValueError(f"all sources must belong to one study, found {len(studies)}")

    @property
    def pairs(self) -> list[tuple[Dataset, ImageOut]]:
        """``(source dataset, its ImageOut)`` for each analysed image."""
        return list(zip(self.sources, self.study.images, strict=True))

    @property
    def has_volumes(self) -> bool:
        """Whether the study has a tomosynthesis volume (an image with a number of frames)."""
        return any(img.number_of_frames is not None for img in self.study.images)

    @property
    def volume_point(self) -> VolumePromise | None:
        """:attr:`volume_promise` when the study has a volume, else ``None``."""
        return self.volume_promise if self.has_volumes else None

    @property
    def algorithm_name(self) -> str:
        """The model name, e.g. ``"galacto-small"``."""
        return self.model.name

    @property
    def algorithm_version(self) -> str:
        """The model version, e.g. ``"0.1.0"``."""
        return self.model.version


def software_versions(model: ModelOut) -> str:
    """SoftwareVersions value: package and model version, e.g. ``"galacto 0.1.0 model 0.1.0"``."""
    return f"{MANUFACTURER} {serving.__version__} model {model.version}"


#: Type 2 attributes of the Patient and General Study modules: written empty when the source
#: lacks them (what highdicom writes too, so every result object has the same set).
TYPE2_PATIENT_STUDY: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)


def copy_patient_study(source: Dataset, target: Dataset) -> None:
    """Copy :data:`PATIENT_STUDY_KEYWORDS` present in ``source`` into ``target`` verbatim (with
    the source's Specific Character Set, which the copied names are encoded in), and write the
    :data:`TYPE2_PATIENT_STUDY` attributes the source lacks empty."""
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in source:
            target[keyword] = source[keyword]
    for keyword in TYPE2_PATIENT_STUDY:
        if keyword not in target:
            setattr(target, keyword, "")
    if "SpecificCharacterSet" in source:
        target.SpecificCharacterSet = source.SpecificCharacterSet


def contributing_equipment(model: ModelOut, when: dt.datetime) -> Dataset:
    """One Contributing Equipment Sequence (0018,A001) item naming the algorithm.

    Purpose of reference :data:`serving.outputs.codes.PROCESSING_EQUIPMENT` (DCM, 109102,
    "Processing Equipment") from CID 7005.
    """
    code = codes.PROCESSING_EQUIPMENT
    purpose = Dataset()
    purpose.CodeValue = code.value
    purpose.CodingSchemeDesignator = code.scheme_designator
    purpose.CodeMeaning = code.meaning
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [purpose]
    item.Manufacturer = MANUFACTURER
    item.ManufacturerModelName = model.name
    item.SoftwareVersions = software_versions(model)
    item.ContributionDateTime = when.strftime("%Y%m%d%H%M%S")
    item.ContributionDescription = f"Filling-defect detection by {model.name} {model.version}"
    return item


def new_uid() -> str:
    """A new UID (pydicom's root, random)."""
    return str(generate_uid())


def now() -> dt.datetime:
    """Creation time for result objects (local time, no time zone), whole seconds."""
    return dt.datetime.now().replace(microsecond=0)


# --------------------------------------------------------------------------------------------
# Helpers of the result builders
# --------------------------------------------------------------------------------------------

#: Patient/study attributes highdicom reads from the first source without a default.
_HIGHDICOM_REQUIRED: tuple[str, ...] = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "StudyID", "StudyDate", "StudyTime",
)




#: DA, TM and DT value syntax (PS3.5 6.2), one value.
_TEMPORAL_FORMS: dict[str, re.Pattern[str]] = {
    "DA": re.compile(r"\d{8}"),
    "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
    "DT": re.compile(r"\d{4}(\d{2}){0,5}(\.\d{1,6})?([+-]\d{4})?"),
}


def _valid_temporal(element: DataElement) -> bool:
    """Whether every value of a DA/TM/DT element has the standard's syntax (empty is valid)."""
    values = element.value if element.VM > 1 else [element.value]
    form = _TEMPORAL_FORMS[element.VR]
    return all(v in (None, "") or form.fullmatch(str(v).strip()) is not None for v in values)


def element_values(value: object) -> list[object]:
    """The values of a possibly multi-valued element value (``[]`` when absent or empty)."""
    if value is None or value == "":
        return []
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    return [value]


def pixel_spacing_mm(source: Dataset) -> list[float]:
    """``[row spacing, column spacing]`` in mm: ImagerPixelSpacing (the attribute a
    mammogram must have), else PixelSpacing, else (an enhanced multi-frame image) the
    PixelSpacing of the Shared Functional Groups' Pixel Measures; ``[]`` when none holds two
    positive numbers."""
    shared = (source.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    measures = (shared.get("PixelMeasuresSequence") or [Dataset()])[0]
    for where, keyword in ((source, "ImagerPixelSpacing"), (source, "PixelSpacing"),
                           (measures, "PixelSpacing")):
        try:
            values = [float(str(v)) for v in element_values(where.get(keyword))]
        except ValueError:
            continue
        if len(values) == 2 and all(v > 0 for v in values):
            return values
    return []


def evidence_header(source: Dataset) -> Dataset:
    """A shallow copy of ``source`` without Pixel Data, with the Type 2 patient/study
    attributes highdicom reads unconditionally added empty where the source lacks them.

    The result objects copy the real values from the source afterwards
    (:func:`serving.outputs.common.copy_patient_study`), so nothing is invented."""
    header = Dataset()
    for element in source:
        if element.keyword == "PixelData":
            continue
        if element.VR in _TEMPORAL_FORMS and not _valid_temporal(element):
            # highdicom parses dates and times and fails on malformed ones (e.g. a birth date
            # written 1947-03-12); the header copy gets an empty value, the result object
            # still receives the source's value verbatim.
            header.add(DataElement(element.tag, element.VR, None))
            continue
        header.add(element)
    for keyword in _HIGHDICOM_REQUIRED:
        if keyword not in header:
            setattr(header, keyword, None)
    return header


def box_polyline(box: Sequence[float], rows: int, cols: int, what: str) -> npt.NDArray[np.float64]:
    """The closed rectangle polyline of ``box`` ``[x1, y1, x2, y2]`` (stored-image pixels,
    origin at the top-left corner of the top-left pixel): 5 (column, row) points,
    (x1,y1) (x2,y1) (x2,y2) (x1,y2) (x1,y1).

    Raises:
        ValueError: unless ``0 <= x1 < x2 <= cols`` and ``0 <= y1 < y2 <= rows``; ``what``
            names the box in the message.
    """
    if len(box) != 4:
        raise ValueError(f"{what}: expected a box [x1, y1, x2, y2], got {list(box)!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (0.0 <= x1 < x2 <= cols and 0.0 <= y1 < y2 <= rows):
        raise ValueError(f"{what}: expected 0 <= x1 < x2 <= {cols} and 0 <= y1 < y2 <= {rows} "
                         f"(image {cols} x {rows} px), got {[x1, y1, x2, y2]!r}")
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=np.float64)


def polyline_box(graphic_data: Sequence[float]) -> list[float]:
    """``[x1, y1, x2, y2]`` bounding the flat (column, row) pairs ``graphic_data`` (pixels).

    Raises:
        ValueError: for an odd number of values or fewer than two points.
    """
    values = [float(v) for v in graphic_data]
    if len(values) % 2 or len(values) < 4:
        raise ValueError(f"expected (column, row) pairs of at least two points, got "
                         f"{len(values)} values")
    xs, ys = values[0::2], values[1::2]
    return [min(xs), min(ys), max(xs), max(ys)]


def frame_numbers(reference: Dataset) -> list[int]:
    """Referenced Frame Number (0008,1160) of an image reference item as a list (1-based);
    ``[]`` when absent: the reference is to every frame, or to a single-frame image."""
    value = reference.get("ReferencedFrameNumber")
    if value is None or value == "":
        return []
    return [int(v) for v in (value if isinstance(value, Sequence) and not isinstance(value, str)
                             else [value])]


def device_uid(model: ModelOut) -> str:
    """A UID that identifies the algorithm (manufacturer, name, version): the same model always
    gets the same UID (a hash, not random)."""
    return str(generate_uid(entropy_srcs=[MANUFACTURER, model.name, model.version]))


def derived_uid(*parts: str) -> str:
    """A UID that is a hash of ``parts`` (pydicom's root): the same parts, the same UID."""
    return str(generate_uid(entropy_srcs=[MANUFACTURER, *parts]))


class SeriesIdentity(TypedDict):
    """The highdicom constructor arguments that name a result object's series and maker."""

    series_number: int
    series_description: str
    manufacturer: str


def series_identity(kind: ResultKind) -> SeriesIdentity:
    """:class:`SeriesIdentity` of a result object of ``kind``: its :data:`SERIES_NUMBER` and
    :data:`SERIES_DESCRIPTION`, and :data:`MANUFACTURER`."""
    return SeriesIdentity(series_number=SERIES_NUMBER[kind],
                          series_description=SERIES_DESCRIPTION[kind], manufacturer=MANUFACTURER)


def stamp_result(ds: Dataset, result: ResultInput, when: dt.datetime) -> None:
    """After construction by highdicom: patient/study attributes verbatim from the first
    source, Manufacturer, instance creation date/time ``when`` and Contributing Equipment
    (the algorithm only, replacing highdicom's own items)."""
    copy_patient_study(result.sources[0], ds)
    ds.Manufacturer = MANUFACTURER
    ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = when.strftime("%H%M%S")
    ds.ContributingEquipmentSequence = [contributing_equipment(result.model, when)]
