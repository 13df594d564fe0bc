"""Write rendered synthetic views as Digital Mammography X-Ray Image DICOM files.

:func:`build_dataset` makes a complete MG object (PS3.3 A.26, SOP classes
1.2.840.10008.5.1.4.1.1.1.2 For Presentation and 1.2.840.10008.5.1.4.1.1.1.2.1 For Processing)
from one :class:`~training.synth.types.RenderedView` and its
:class:`~training.synth.types.CaseHeader`; :func:`write_dicom` writes it as a DICOM Part 10 file
in one of :data:`SYNTH_TRANSFER_SYNTAXES` (all lossless); :func:`write_view` does both.

Conventions:

- ``view.pixels`` are stored values in MONOCHROME2 sense (larger = more attenuation =
  brighter). For MONOCHROME1 the stored values are ``(2**bits_stored - 1) - pixels``, so a
  viewer that honours PhotometricInterpretation shows the same picture either way.
- PatientOrientation (0020,0020) is written exactly as ``view.patient_orientation``.
- Spacings are mm per pixel; see :mod:`training.synth.profiles` for which spacing attributes
  each profile writes.
- The output is a function of the inputs only (no wall clock, no random UIDs): the same
  inputs give byte-identical files. Dates and times come from the case (``YYYYMMDD``,
  ``HHMMSS``); Content, Acquisition and InstanceCreation times are ``view.acquisition_time``,
  or the study time when the view keeps the dataclass default ``"000000"``.

Optional keys read from ``view.extra``:

- ``"window"``: ``(center, width)`` of the display window in MONOCHROME2 stored values;
  without it the window spans the 0.5th to 99.9th percentile of the pixels.
"""

from __future__ import annotations

import copy
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.pixels import compress, get_encoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from pydicom.valuerep import format_number_as_ds

from training.synth.profiles import HeaderStyle, get_header_style
from training.synth.types import CaseHeader, DbtView, Photometric, RenderedView, VendorProfile

MG_FOR_PRESENTATION: Final = UID("1.2.840.10008.5.1.4.1.1.1.2")
"""Digital Mammography X-Ray Image Storage - For Presentation."""
MG_FOR_PROCESSING: Final = UID("1.2.840.10008.5.1.4.1.1.1.2.1")
"""Digital Mammography X-Ray Image Storage - For Processing."""

SYNTH_TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    ExplicitVRLittleEndian,  # 1.2.840.10008.1.2.1
    DeflatedExplicitVRLittleEndian,  # 1.2.840.10008.1.2.1.99
    JPEG2000Lossless,  # 1.2.840.10008.1.2.4.90
    JPEGLSLossless,  # 1.2.840.10008.1.2.4.80
    RLELossless,  # 1.2.840.10008.1.2.5
)
"""Transfer syntaxes :func:`write_dicom` supports; all are lossless."""

_DEFAULT_WEIGHTS: Final[dict[str, float]] = {
    ExplicitVRLittleEndian: 0.70,
    DeflatedExplicitVRLittleEndian: 0.05,
    JPEG2000Lossless: 0.10,
    JPEGLSLossless: 0.10,
    RLELossless: 0.05,
}

# Encoder plugins in order of preference (fastest first, measured on 4096 x 3328 14-bit
# images: pylibjpeg-rle 0.5 s vs pydicom's pure-Python RLE 4.4 s).
_ENCODER_PREFERENCE: Final[dict[str, tuple[str, ...]]] = {
    RLELossless: ("pylibjpeg", "gdcm", "pydicom"),
    JPEGLSLossless: ("pyjpegls",),
    JPEG2000Lossless: ("pylibjpeg",),
}

# View codes: CID 4014 "View for Mammography" (SNOMED CT), code meanings as in PS3.16.
_VIEW_CODES: Final[dict[str, tuple[str, str]]] = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
    "ML": ("399260004", "medial-lateral"),
}
# CID 4013 "Anatomic Region for Mammography".
_BREAST_CODE: Final = ("76752008", "Breast")
# CID 12 "Imaging Contrast Agent" (SNOMED CT), for the iodinated agents used in ductography.
_CONTRAST_AGENT_CODES: Final[dict[str, tuple[str, str]]] = {
    "iohexol": ("109218004", "Iohexol"),
    "iopamidol": ("109219007", "Iopamidol"),
    "iodixanol": ("353962003", "Iodixanol"),
    "iopromide": ("353903006", "Iopromide"),
    "ioversol": ("109222009", "Ioversol"),
    "ioxilan": ("409484007", "Ioxilan"),
    "iothalamate": ("353912008", "Iothalamate"),
    "diatrizoate": ("12335007", "Diatrizoate"),
}
# CID 11 "Route of Administration" has no "intraductal"; the duct lumen is intraluminal.
_ROUTE_CODE: Final = ("37737002", "Intraluminal route")
# Procedure: CPT-4 (coding scheme designator "C4", PS3.16 Table 8-1). The full CPT descriptor
# is longer than CodeMeaning's 64 characters (LO), so the usual abbreviation RS&I is used.
_PROCEDURE_CODE: Final = (
    "77053",
    "C4",
    "Mammary ductogram or galactogram, single duct, RS&I",
)
_IODINE_CONCENTRATION = re.compile(r"(\d+(?:\.\d+)?)\s*mg\s*I\s*/\s*ml", re.IGNORECASE)
_UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_ORIENTATION_VALUE = re.compile(r"^[APRLHF]{1,3}$")
_UNSET_TIME = "000000"
_PIXEL_DATA_TAG = 0x7FE00010
_DEFLATE_LEVEL = 1  # zlib level for Deflated Explicit VR Little Endian, see _save_deflated


def default_transfer_syntax_weights() -> dict[str, float]:
    """Sampling weights over :data:`SYNTH_TRANSFER_SYNTAXES` for the dataset CLI (sum 1).

    70 % Explicit VR Little Endian, the rest spread over the lossless compressed syntaxes,
    so that readers are exercised on every decoder without slowing the generator down much
    (write time for a rendered 4096 x 3328 14-bit view, one core: Explicit LE 0.05 s, RLE
    0.6 s, JPEG-LS 0.65 s, Deflated 0.8 s, JPEG 2000 2.3 s; about 0.4 s on average with these
    weights). Returns a fresh dict the caller may modify.
    """
    return dict(_DEFAULT_WEIGHTS)


def sample_transfer_syntax(
    rng: np.random.Generator, weights: Mapping[str, float] | None = None
) -> str:
    """Draw one transfer syntax UID from ``weights`` (default: the default weights).

    Raises:
        ValueError: a weight names an unsupported transfer syntax, is negative, or all are 0.
    """
    table = dict(weights) if weights is not None else _DEFAULT_WEIGHTS
    for uid, weight in table.items():
        if uid not in SYNTH_TRANSFER_SYNTAXES:
            raise ValueError(f"unsupported transfer syntax {uid!r} in weights")
        if weight < 0:
            raise ValueError(f"negative weight {weight} for transfer syntax {uid}")
    uids = list(table)
    p = np.array([table[u] for u in uids], dtype=np.float64)
    if p.sum() <= 0:
        raise ValueError("transfer syntax weights sum to 0")
    return uids[int(rng.choice(len(uids), p=p / p.sum()))]


def _ds(value: float) -> str:
    """Format a number as a valid DS string (at most 16 characters)."""
    return format_number_as_ds(float(value))


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """A Code Sequence item: CodeValue, CodingSchemeDesignator, CodeMeaning."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _check_inputs(view: RenderedView, case: CaseHeader, profile: VendorProfile) -> None:
    """Raise ValueError naming the first inconsistent input value."""
    pixels = view.pixels
    if pixels.dtype != np.uint16:
        raise ValueError(f"view.pixels must be uint16, got {pixels.dtype}")
    if pixels.shape != (profile.rows, profile.cols):
        raise ValueError(
            f"view.pixels has shape {pixels.shape}, profile {profile.name!r} expects "
            f"(rows, cols) = ({profile.rows}, {profile.cols})"
        )
    if view.bits_stored != profile.bits_stored:
        raise ValueError(
            f"view.bits_stored {view.bits_stored} != profile {profile.name!r} bits_stored "
            f"{profile.bits_stored}"
        )
    if not 8 < view.bits_stored <= 16:
        raise ValueError(f"bits_stored must be 9..16, got {view.bits_stored}")
    max_value = (1 << view.bits_stored) - 1
    if pixels.size and int(pixels.max()) > max_value:
        raise ValueError(
            f"view.pixels maximum {int(pixels.max())} exceeds 2**bits_stored - 1 = {max_value}"
        )
    if view.laterality not in ("L", "R"):
        raise ValueError(f"view.laterality must be 'L' or 'R', got {view.laterality!r}")
    if view.view not in _VIEW_CODES:
        raise ValueError(f"view.view must be one of {sorted(_VIEW_CODES)}, got {view.view!r}")
    if len(view.patient_orientation) != 2 or not all(
        isinstance(v, str) and _ORIENTATION_VALUE.match(v) for v in view.patient_orientation
    ):
        raise ValueError(
            "view.patient_orientation must be two values made of A/P/R/L/H/F, got "
            f"{view.patient_orientation!r}"
        )
    if profile.magnification < 1.0:
        raise ValueError(f"profile magnification must be >= 1, got {profile.magnification}")
    for owner, name, value in (
        ("view", "series_instance_uid", view.series_instance_uid),
        ("view", "sop_instance_uid", view.sop_instance_uid),
        ("case", "study_instance_uid", case.study_instance_uid),
    ):
        if len(value) > 64 or not _UID_PATTERN.fullmatch(value):
            raise ValueError(f"{owner}.{name} is not a valid UID: {value!r}")
    for name in ("study_date", "patient_birth_date"):
        value = getattr(case, name)
        if not re.fullmatch(r"\d{8}", value):
            raise ValueError(f"case.{name} must be YYYYMMDD, got {value!r}")
    for owner, name, value in (
        ("case", "study_time", case.study_time),
        ("view", "acquisition_time", view.acquisition_time),
    ):
        if not re.fullmatch(r"\d{6}", value):
            raise ValueError(f"{owner}.{name} must be HHMMSS, got {value!r}")


def add_patient_and_study(ds: Dataset, case: CaseHeader) -> None:
    """Set the Patient, Patient Study and General Study attributes of ``case`` on ``ds``
    (the same in every object of a case, 2D or tomosynthesis)."""
    # Patient
    ds.PatientName = case.patient_name
    ds.PatientID = case.patient_id
    ds.PatientBirthDate = case.patient_birth_date
    ds.PatientSex = "F"
    # Patient Study
    ds.PatientAge = case.patient_age

    # General Study
    ds.StudyInstanceUID = case.study_instance_uid
    ds.StudyDate = case.study_date
    ds.StudyTime = case.study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = case.study_id
    ds.AccessionNumber = case.accession_number
    ds.StudyDescription = "Galactography"
    ds.ProcedureCodeSequence = Sequence([code_item(*_PROCEDURE_CODE)])


def add_instance_and_series(ds: Dataset, sop_class: str, view: RenderedView | DbtView,
                            case: CaseHeader, time: str, series_description: str) -> None:
    """Set the SOP Common, Patient, General Study (:func:`add_patient_and_study`) and
    General Series attributes of one MG object of ``view`` (2D or tomosynthesis) on ``ds``;
    ``time`` is the instance creation and series time (HHMMSS)."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = UID(view.sop_instance_uid)
    ds.InstanceCreationDate = case.study_date
    ds.InstanceCreationTime = time
    ds.InstanceNumber = view.instance_number
    add_patient_and_study(ds, case)
    ds.Modality = "MG"
    ds.SeriesInstanceUID = view.series_instance_uid
    ds.SeriesNumber = view.series_number
    ds.SeriesDate = case.study_date
    ds.SeriesTime = time
    ds.SeriesDescription = series_description
    ds.BodyPartExamined = "BREAST"


def add_equipment(ds: Dataset, manufacturer: str, model_name: str, style: HeaderStyle) -> None:
    """Set the General Equipment (and Enhanced General Equipment) attributes on ``ds``: the
    device's ``manufacturer`` and ``model_name``, serial number, software versions and station
    name from ``style`` (2D or tomosynthesis)."""
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model_name
    ds.DeviceSerialNumber = style.device_serial_number
    ds.SoftwareVersions = style.software_versions
    ds.StationName = style.station_name
    ds.InstitutionName = "galacto synthetic"


def add_image_pixel(ds: Dataset, photometric: Photometric, rows: int, cols: int,
                    bits_stored: int) -> None:
    """Set the Image Pixel attributes of one unsigned, 16-bit allocated, single-sample
    ``rows x cols`` image (or frame) with ``bits_stored`` bits on ``ds`` (2D or
    tomosynthesis); the pixel data itself is set by the caller."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0


def view_code_item(view: str) -> Dataset:
    """The ViewCodeSequence item of ``view`` (CID 4014, SNOMED CT) with an empty
    ViewModifierCodeSequence.

    Raises:
        ValueError: ``view`` is not CC, MLO or ML.
    """
    if view not in _VIEW_CODES:
        raise ValueError(f"view must be one of {sorted(_VIEW_CODES)}, got {view!r}")
    item = code_item(_VIEW_CODES[view][0], "SCT", _VIEW_CODES[view][1])
    item.ViewModifierCodeSequence = Sequence()
    return item


def breast_region_item() -> Dataset:
    """The AnatomicRegionSequence item for the breast (CID 4013, SNOMED CT)."""
    return code_item(_BREAST_CODE[0], "SCT", _BREAST_CODE[1])


def contrast_agent_code(agent: str) -> tuple[str, str] | None:
    """SNOMED CT ``(code, meaning)`` (CID 12) of the agent named in free text ``agent``."""
    key = next((k for k in _CONTRAST_AGENT_CODES if k in agent.lower()), None)
    return None if key is None else _CONTRAST_AGENT_CODES[key]


def iodine_concentration_mg_ml(agent: str) -> float | None:
    """The iodine concentration (mg/mL) written in ``agent`` (e.g. ``"300 mgI/mL"``)."""
    match = _IODINE_CONCENTRATION.search(agent)
    return None if match is None else float(match.group(1))


def route_code_item() -> Dataset:
    """The administration route item: intraluminal (CID 11 has no intraductal)."""
    return code_item(_ROUTE_CODE[0], "SCT", _ROUTE_CODE[1])


def _window_monochrome2(view: RenderedView) -> tuple[float, float]:
    """Window (center, width) in MONOCHROME2 stored values, DICOM LINEAR convention."""
    given = view.extra.get("window")
    if given is not None:
        if not (isinstance(given, tuple | list) and len(given) == 2):
            raise ValueError(f"view.extra['window'] must be (center, width), got {given!r}")
        center, width = float(given[0]), float(given[1])
        if width < 1:
            raise ValueError(f"view.extra['window'] width must be >= 1, got {width}")
        return center, width
    full = float(1 << view.bits_stored)
    sample = view.pixels[::4, ::4]
    if sample.size == 0:
        return full / 2, full
    lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.9]))
    lo, hi = np.floor(lo), np.ceil(hi)
    if hi <= lo:
        return full / 2, full
    # LINEAR maps [c - 0.5 - (w-1)/2, c - 0.5 + (w-1)/2] onto the output range.
    return (lo + hi) / 2 + 0.5, hi - lo + 1


def build_dataset(
    view: RenderedView,
    case: CaseHeader,
    profile: VendorProfile,
    *,
    photometric: Photometric = "MONOCHROME2",
    for_processing: bool = False,
) -> Dataset:
    """Build a complete Digital Mammography X-Ray Image dataset for one view.

    Args:
        view: the rendered view; ``view.pixels`` is ``(profile.rows, profile.cols)`` uint16 in
            MONOCHROME2 sense within ``[0, 2**bits_stored - 1]``.
        case: patient and study attributes shared by the case's views.
        profile: detector geometry and header style; ``profile.bits_stored`` must equal
            ``view.bits_stored``.
        photometric: ``"MONOCHROME2"`` stores the pixels as given; ``"MONOCHROME1"`` stores
            ``(2**bits_stored - 1) - pixels`` with an inverted window and Presentation LUT
            Shape ``INVERSE``.
        for_processing: write the For Processing SOP class (PresentationIntentType
            ``FOR PROCESSING``) instead of For Presentation.

    Returns:
        The dataset with native (uncompressed) little-endian Pixel Data and a file meta
        whose TransferSyntaxUID is Explicit VR Little Endian, so ``ds.pixel_array`` works in
        memory. LossyImageCompression is ``"00"``.

    Raises:
        ValueError: an input is inconsistent (shape, bits, UID, laterality, view,
            orientation, date or time format); the message names the value.
    """
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    _check_inputs(view, case, profile)
    style = get_header_style(profile)
    bits = view.bits_stored
    max_value = (1 << bits) - 1
    sop_class = MG_FOR_PROCESSING if for_processing else MG_FOR_PRESENTATION
    acq_time = view.acquisition_time if view.acquisition_time != _UNSET_TIME else case.study_time

    ds = Dataset()
    # SOP Common, Patient, General Study, General Series
    add_instance_and_series(ds, sop_class, view, case, acq_time,
                            f"{view.laterality} {view.view}")
    # DX Series, Mammography Series
    ds.PresentationIntentType = "FOR PROCESSING" if for_processing else "FOR PRESENTATION"

    # General Equipment, Enhanced General Equipment
    add_equipment(ds, profile.manufacturer, profile.model_name, style)

    # General Image, General Acquisition
    ds.PatientOrientation = list(view.patient_orientation)
    ds.ContentDate = case.study_date
    ds.ContentTime = acq_time
    ds.AcquisitionDate = case.study_date
    ds.AcquisitionTime = acq_time
    ds.AcquisitionDateTime = case.study_date + acq_time
    # Value 3 is enumerated in MG (e.g. TOMOSYNTHESIS is not allowed here): present, empty.
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.QualityControlImage = "NO"
    ds.LossyImageCompression = "00"
    ds.ImageComments = "Synthetic galactogram generated by galacto; not a real patient."

    # Image Pixel, DX Image
    add_image_pixel(ds, photometric, profile.rows, profile.cols, bits)
    ds.PixelIntensityRelationship = "LOG"
    # +1: lower stored values = less X-ray intensity (denser); MONOCHROME2 here stores denser
    # tissue as larger values, so its sign is -1, and the inverted MONOCHROME1 store is +1.
    ds.PixelIntensityRelationshipSign = 1 if photometric == "MONOCHROME1" else -1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"

    # VOI LUT: For Presentation only (the MG IOD forbids it in For Processing images). The
    # window is in stored values of this photometric interpretation.
    if not for_processing:
        center, width = _window_monochrome2(view)
        if photometric == "MONOCHROME1":
            center = max_value + 1 - center
        ds.WindowCenter = _ds(center)
        ds.WindowWidth = _ds(width)
        ds.VOILUTFunction = "LINEAR"
        ds.WindowCenterWidthExplanation = "AUTO"

    # Contrast/Bolus
    ds.ContrastBolusAgent = case.contrast_agent
    agent_key = next((k for k in _CONTRAST_AGENT_CODES if k in case.contrast_agent.lower()), None)
    if agent_key is not None:
        agent_code, agent_meaning = _CONTRAST_AGENT_CODES[agent_key]
        ds.ContrastBolusAgentSequence = Sequence([code_item(agent_code, "SCT", agent_meaning)])
    concentration = _IODINE_CONCENTRATION.search(case.contrast_agent)
    if agent_key is not None or concentration is not None:
        ds.ContrastBolusIngredient = "IODINE"
    if concentration is not None:
        ds.ContrastBolusIngredientConcentration = _ds(float(concentration.group(1)))  # mg/mL
    # Free text route; the coded route is the nearest CID 11 concept (no "intraductal").
    ds.ContrastBolusRoute = "INTRADUCTAL"
    ds.ContrastBolusAdministrationRouteSequence = Sequence(
        [code_item(_ROUTE_CODE[0], "SCT", _ROUTE_CODE[1])]
    )
    ds.ContrastBolusVolume = _ds(case.contrast_volume_ml)  # mL

    # DX Anatomy Imaged, Mammography Image
    ds.ImageLaterality = view.laterality
    ds.AnatomicRegionSequence = Sequence([code_item(_BREAST_CODE[0], "SCT", _BREAST_CODE[1])])
    ds.OrganExposed = "BREAST"
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.PositionerType = "MAMMOGRAPHIC"

    # DX Positioning
    # DX's defined terms for ViewPosition are AP/PA/...; MG vendors write CC/MLO/ML anyway and
    # readers use it (dciodvfy warns "Unrecognized defined term"). ViewCodeSequence is the
    # standard's carrier of the view.
    ds.ViewPosition = view.view
    view_item = code_item(_VIEW_CODES[view.view][0], "SCT", _VIEW_CODES[view.view][1])
    view_item.ViewModifierCodeSequence = Sequence()
    ds.ViewCodeSequence = Sequence([view_item])
    ds.PositionerPrimaryAngle = _ds(view.positioner_primary_angle_deg)
    ds.BodyPartThickness = _ds(view.body_part_thickness_mm)
    ds.CompressionForce = _ds(view.compression_force_n)
    ds.DistanceSourceToDetector = _ds(style.distance_source_to_detector_mm)
    ds.EstimatedRadiographicMagnificationFactor = _ds(profile.magnification)

    # DX Detector
    ds.DetectorType = style.detector_type
    ds.DetectorConfiguration = "AREA"
    ds.DetectorID = style.detector_id
    spacing = _ds(profile.detector_spacing_mm)
    ds.ImagerPixelSpacing = [spacing, spacing]
    if profile.pixel_spacing_attribute == "both":
        patient_spacing = _ds(profile.patient_spacing_mm)
        ds.PixelSpacing = [patient_spacing, patient_spacing]
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = (
            "ImagerPixelSpacing / EstimatedRadiographicMagnificationFactor"
        )

    # X-Ray Acquisition Dose, X-Ray Generation, X-Ray Filtration, X-Ray Grid
    ds.KVP = _ds(view.kvp)
    ds.Exposure = round(view.exposure_mas)  # IS, mAs
    ds.ExposureInuAs = round(view.exposure_mas * 1000)  # IS, µAs
    ds.AnodeTargetMaterial = style.anode_target_material
    ds.FilterMaterial = style.filter_material
    ds.FilterThicknessMinimum = _ds(style.filter_thickness_mm)
    ds.FilterThicknessMaximum = _ds(style.filter_thickness_mm)
    ds.FocalSpots = _ds(style.focal_spot_mm)
    if style.grid:
        ds.Grid = style.grid

    # Acquisition Context
    ds.AcquisitionContextSequence = Sequence()

    stored = view.pixels if photometric == "MONOCHROME2" else max_value - view.pixels
    ds.add(DataElement(_PIXEL_DATA_TAG, "OW", np.ascontiguousarray(stored, dtype="<u2").tobytes()))

    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = UID(view.sop_instance_uid)
    return ds


def _encoding_plugin(transfer_syntax: UID) -> str:
    """Return the fastest available encoder plugin for a compressed transfer syntax."""
    available = get_encoder(transfer_syntax).available_plugins
    for plugin in _ENCODER_PREFERENCE[transfer_syntax]:
        if plugin in available:
            return plugin
    raise RuntimeError(
        f"no encoder plugin for {transfer_syntax.name} ({transfer_syntax}); install one of "
        f"{_ENCODER_PREFERENCE[transfer_syntax]} (available: {available})"
    )


def write_dicom(ds: Dataset, path: Path, transfer_syntax: str) -> None:
    """Write ``ds`` as a DICOM Part 10 file (preamble, file meta) in ``transfer_syntax``.

    ``ds`` must have native Pixel Data (as :func:`build_dataset` returns); it is not modified:
    the file is written from a copy whose Pixel Data is encoded with the fastest available
    plugin. LossyImageCompression is set to ``"00"`` (every supported syntax is lossless).
    An existing file at ``path`` is overwritten.

    Raises:
        ValueError: ``transfer_syntax`` is not in :data:`SYNTH_TRANSFER_SYNTAXES`, or ``ds``
            has no native Pixel Data.
    """
    uid = UID(transfer_syntax)
    if uid not in SYNTH_TRANSFER_SYNTAXES:
        raise ValueError(
            f"unsupported transfer syntax {transfer_syntax!r}; supported: "
            + ", ".join(f"{u} ({UID(u).name})" for u in SYNTH_TRANSFER_SYNTAXES)
        )
    source_ts = ds.get("file_meta", FileMetaDataset()).get("TransferSyntaxUID")
    if "PixelData" not in ds or (source_ts is not None and UID(source_ts).is_compressed):
        raise ValueError("write_dicom needs a dataset with native (uncompressed) Pixel Data")

    out = Dataset()
    for elem in ds:
        if elem.tag != _PIXEL_DATA_TAG:
            out.add(copy.deepcopy(elem))
    out.add(DataElement(0x00282110, "CS", "00"))  # LossyImageCompression
    out.file_meta = FileMetaDataset()
    out.file_meta.TransferSyntaxUID = uid
    out.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    out.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    pixel_bytes = ds.PixelData
    if uid.is_compressed:
        arr = np.frombuffer(pixel_bytes, dtype="<u2").reshape(int(ds.Rows), int(ds.Columns))
        compress(
            out,
            uid,
            arr,
            encoding_plugin=_encoding_plugin(uid),
            generate_instance_uid=False,
        )
    else:
        out.add(DataElement(_PIXEL_DATA_TAG, "OW", pixel_bytes))
    if uid == DeflatedExplicitVRLittleEndian:
        _save_deflated(out, path)
    else:
        out.save_as(path, enforce_file_format=True)


def _save_deflated(ds: Dataset, path: Path) -> None:
    """Write a Deflated Explicit VR Little Endian file (PS3.5 A.5) with a fast zlib level.

    pydicom's writer deflates at zlib's default level 6, which takes 2.6 s for a rendered
    4096 x 3328 image; level 1 takes 0.6 s for a 2 % larger file. The layout is the one
    ``save_as`` writes: preamble, "DICM", file meta (Explicit VR Little Endian), then the
    raw deflate stream of the Explicit VR Little Endian dataset, padded to even length.
    """
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    compressor = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(body.getvalue()) + compressor.flush()
    with Path(path).open("wb") as fp:
        fp.write(b"\x00" * 128 + b"DICM")
        fp.write(meta.getvalue())
        fp.write(deflated)
        if len(deflated) % 2:
            fp.write(b"\x00")


def write_view(
    view: RenderedView,
    case: CaseHeader,
    profile: VendorProfile,
    path: Path,
    *,
    photometric: Photometric = "MONOCHROME2",
    transfer_syntax: str = ExplicitVRLittleEndian,
    for_processing: bool = False,
) -> Dataset:
    """Build the dataset for ``view`` and write it to ``path``; return the (native) dataset.

    See :func:`build_dataset` and :func:`write_dicom` for arguments and errors.
    """
    ds = build_dataset(view, case, profile, photometric=photometric, for_processing=for_processing)
    write_dicom(ds, path, transfer_syntax)
    return ds
