"""Write reconstructed tomosynthesis views as Breast Tomosynthesis Image DICOM files.

:func:`build_dbt_dataset` makes an enhanced multi-frame Breast Tomosynthesis Image object
(PS3.3 Breast Tomosynthesis Image IOD, SOP class 1.2.840.10008.5.1.4.1.1.13.1.3) from one
:class:`~training.synth.types.DbtView` and the case's
:class:`~training.synth.types.CaseHeader` (the same Patient/Study attributes as the 2D MG
files of :mod:`training.synth.dicom_out`); :func:`write_dbt_view` writes it as a DICOM Part
10 file in Explicit VR Little Endian.

Layout:

- Pixel Data: ``view.frames`` ``(n_frames, rows, cols)``, MONOCHROME2, frame 1 nearest the
  breast support; NumberOfFrames = ``n_frames``.
- Shared Functional Groups: Pixel Measures (PixelSpacing = ``spacing_mm`` twice,
  SliceThickness = SpacingBetweenSlices = ``slice_mm``), Plane Orientation (Patient),
  Frame Anatomy (breast, FrameLaterality), Pixel Value Transformation (identity), Frame VOI
  LUT (one window for the volume), Contrast/Bolus Usage.
- Per-frame Functional Groups: Frame Content (DimensionIndexValues, StackID "1",
  InStackPositionNumber = frame number), Plane Position (Patient) and X-Ray 3D Frame Type
  (dciodvfy wants the latter per frame).
- Breast Tomosynthesis Acquisition (the sweep: arc, start angle, increment and one
  PerProjectionAcquisitionSequence item per projection with its tube angle) and X-Ray 3D
  Reconstruction (the algorithm) modules; top-level ImageLaterality, ViewCodeSequence,
  PatientOrientation and PositionerPrimaryAngle as in the 2D files (all but
  ViewCodeSequence are not part of this IOD: dciodvfy calls the object a Standard Extended
  SOP Class for them).
- Coordinates (:func:`plane_geometry`): Plane Orientation / Position (Patient) are in the
  patient-based coordinate system (PS3.3 C.7.6.2.1.1: x toward the patient's left, y
  posterior, z head, mm; one FrameOfReferenceUID per view, since each view is a new
  compression), consistent with PatientOrientation as C.7.6.1.1.1 requires:
  ImageOrientationPatient holds the patient directions of a row (increasing column) and of
  a column (increasing row) of the stored frames; ImagePositionPatient of frame ``k``, the
  centre of its top-left pixel, is ``z_k`` times the unit vector from the breast support
  toward the X-ray source (the compression axis ``w`` of
  :mod:`training.synth.dbt_geometry`: head for CC, medial for ML, superomedial at the C-arm
  angle for MLO), so the frame's height above the breast support is its position along the
  beam (a CC's is ``0\\0\\z_k``). The C-arm angle is also written at the top level as
  PositionerPrimaryAngle (0018,1510), where the 2D files (Mammography Image module) have
  it; in this IOD its standard place is each projection's item of the X-Ray 3D
  Acquisition Sequence.
- The output is a function of the inputs only (same inputs, byte-identical file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

from training.synth.dicom_out import (
    add_equipment,
    add_image_pixel,
    add_instance_and_series,
    breast_region_item,
    code_item,
    contrast_agent_code,
    iodine_concentration_mg_ml,
    route_code_item,
    view_code_item,
)
from training.synth.profiles import HeaderStyle, get_header_style
from training.synth.types import CaseHeader, DbtView, VendorProfile

BREAST_TOMOSYNTHESIS_IMAGE: Final = UID("1.2.840.10008.5.1.4.1.1.13.1.3")
"""Breast Tomosynthesis Image Storage."""

_PIXEL_DATA_TAG: Final = 0x7FE00010
_IMAGE_POSITION_TAG: Final = 0x00200032  # ImagePositionPatient
_PLANE_POSITION_SEQ_TAG: Final = 0x00209113  # PlanePositionSequence
_ORIENTATION_VALUE = re.compile(r"^[APRLHF]{1,3}$")
_UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
#: Iodine (SNOMED CT), the contrast ingredient (CID 13 "Radiographic Contrast Agent
#: Ingredient").
_IODINE_CODE: Final = ("44588005", "Iodine")
#: Sweep time per projection (s), for the acquisition duration (working assumption: a
#: 15-projection sweep takes about 4 s).
SECONDS_PER_PROJECTION: Final = 0.25
#: Height of the breast support above the detector surface (mm, working assumption).
SUPPORT_TO_DETECTOR_MM: Final = 20.0
#: Unit vectors of the PatientOrientation letters in the patient-based coordinate system
#: (PS3.3 C.7.6.2.1.1: x toward the patient's left, y posterior, z head).
_PATIENT_DIRECTIONS: Final[dict[str, tuple[float, float, float]]] = {
    "L": (1.0, 0.0, 0.0), "R": (-1.0, 0.0, 0.0), "P": (0.0, 1.0, 0.0), "A": (0.0, -1.0, 0.0),
    "H": (0.0, 0.0, 1.0), "F": (0.0, 0.0, -1.0),
}  # fmt: skip


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def _letters_vector(value: str) -> np.ndarray:
    """The sum of the unit vectors of a PatientOrientation value's letters (e.g. ``"FR"``)."""
    return np.sum([np.array(_PATIENT_DIRECTIONS[ch]) for ch in value], axis=0)


def plane_geometry(view: DbtView) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row, column, source)`` unit vectors of a view in the patient-based coordinate system
    (PS3.3 C.7.6.2.1.1: x toward the patient's left, y posterior, z head).

    ``row`` is the direction of increasing column and ``column`` that of increasing row of
    the stored frames (ImageOrientationPatient); ``source`` points from the breast support
    toward the X-ray source, along which frame heights are measured. From the breast frame
    ``(d, u, l)`` of :mod:`training.synth.anatomy` (``d`` posterior, ``u`` head, ``l``
    lateral: the patient's left for a left breast, right for a right one) and the C-arm
    angle ``a`` (``view.positioner_primary_angle_deg``: 0 CC, 90 ML):

    - the canonical render (:mod:`training.synth.render`) runs its rows toward the nipple
      (anterior) and its columns against the image's up axis ``v = sin(a) u + cos(a) l``
      (lateral for CC, head for ML, superolateral for MLO);
    - the stored frames may be mirrored (:func:`training.synth.case.patient_orientation`):
      each direction takes the sign that agrees with ``view.patient_orientation``;
    - ``source`` is the compression axis ``w = cos(a) u - sin(a) l`` of
      :func:`training.synth.dbt_geometry.compression_axis` (head for CC, medial for ML,
      superomedial for MLO).

    Raises:
        ValueError: an angle outside [0, 90] degrees, or a PatientOrientation that does not
            name the row or column direction of this view.
    """
    a_deg = float(view.positioner_primary_angle_deg)
    if not 0.0 <= a_deg <= 90.0:
        raise ValueError(f"view.positioner_primary_angle_deg must be within [0, 90], got "
                         f"{a_deg}")
    a = np.deg2rad(a_deg)
    lateral = 1.0 if view.laterality == "L" else -1.0  # patient x of the lateral direction
    anterior = np.array([0.0, -1.0, 0.0])
    down = -np.array([lateral * np.cos(a), 0.0, np.sin(a)])  # -v: increasing canonical row
    source = np.array([-lateral * np.sin(a), 0.0, np.cos(a)])
    axes = []
    for canonical, value in zip((anterior, down), view.patient_orientation, strict=True):
        agreement = float(_letters_vector(value) @ canonical)
        if abs(agreement) < 1e-6:
            raise ValueError(f"view.patient_orientation {view.patient_orientation!r} does "
                             f"not fit a {view.laterality} {view.view} at {a_deg:g} degrees")
        axes.append(canonical if agreement > 0 else -canonical)
    return axes[0], axes[1], source


def _check(view: DbtView, case: CaseHeader) -> None:
    """Raise ValueError naming the first inconsistent input value."""
    f = view.frames
    if f.dtype != np.uint16 or f.ndim != 3:
        raise ValueError(f"view.frames must be uint16 (frames, rows, cols), got {f.dtype} "
                         f"{f.shape}")
    if f.shape[0] < 1 or f.shape[1] < 1 or f.shape[2] < 1:
        raise ValueError(f"view.frames is empty: {f.shape}")
    if view.heights_mm.shape != (f.shape[0],):
        raise ValueError(f"view.heights_mm has shape {view.heights_mm.shape}, expected "
                         f"({f.shape[0]},)")
    if f.shape[0] > 1 and not bool(np.all(np.diff(view.heights_mm) > 0)):
        raise ValueError("view.heights_mm must increase from frame to frame")
    if not 8 < view.bits_stored <= 16:
        raise ValueError(f"bits_stored must be 9..16, got {view.bits_stored}")
    if int(f.max()) > (1 << view.bits_stored) - 1:
        raise ValueError(f"view.frames maximum {int(f.max())} exceeds 2**bits_stored - 1")
    if view.laterality not in ("L", "R"):
        raise ValueError(f"view.laterality must be 'L' or 'R', got {view.laterality!r}")
    if len(view.patient_orientation) != 2 or not all(
            _ORIENTATION_VALUE.match(v) for v in view.patient_orientation):
        raise ValueError("view.patient_orientation must be two values made of A/P/R/L/H/F, "
                         f"got {view.patient_orientation!r}")
    if view.spacing_mm <= 0 or view.slice_mm <= 0:
        raise ValueError(f"spacing_mm and slice_mm must be > 0, got {view.spacing_mm}, "
                         f"{view.slice_mm}")
    for name, value in (("series_instance_uid", view.series_instance_uid),
                        ("sop_instance_uid", view.sop_instance_uid),
                        ("frame_of_reference_uid", view.frame_of_reference_uid),
                        ("study_instance_uid", case.study_instance_uid)):
        if len(value) > 64 or not _UID_PATTERN.fullmatch(value):
            raise ValueError(f"{name} is not a valid UID: {value!r}")
    if not re.fullmatch(r"\d{6}", view.acquisition_time):
        raise ValueError(f"view.acquisition_time must be HHMMSS, got {view.acquisition_time!r}")
    plane_geometry(view)  # the C-arm angle and PatientOrientation fit the view


def volume_window(frames: np.ndarray) -> tuple[float, float]:
    """Window (center, width) in stored values spanning the 0.5th to 99.9th percentile of a
    subsample of ``frames`` (DICOM LINEAR convention)."""
    sample = frames[:, ::4, ::4]
    lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.9]))
    lo, hi = float(np.floor(lo)), float(np.ceil(hi))
    if hi <= lo:
        hi = lo + 1.0
    return (lo + hi) / 2 + 0.5, hi - lo + 1


def _contrast_agent_item(case: CaseHeader) -> Dataset:
    """The Enhanced Contrast/Bolus module's agent item (agent number 1)."""
    coded = contrast_agent_code(case.contrast_agent)
    if coded is None:  # the module needs a coded agent (Type 1)
        raise ValueError(f"case.contrast_agent {case.contrast_agent!r} names no agent with a "
                         "SNOMED CT code (iohexol, iopamidol, iodixanol, iopromide, ...)")
    item = code_item(coded[0], "SCT", coded[1])
    item.ContrastBolusAgentNumber = 1
    item.ContrastBolusAdministrationRouteSequence = Sequence([route_code_item()])
    ingredient = code_item(_IODINE_CODE[0], "SCT", _IODINE_CODE[1])
    item.ContrastBolusIngredientCodeSequence = Sequence([ingredient])
    item.ContrastBolusVolume = _ds(case.contrast_volume_ml)  # mL
    concentration = iodine_concentration_mg_ml(case.contrast_agent)
    if concentration is not None:
        item.ContrastBolusIngredientConcentration = _ds(concentration)  # mg/mL
    return item


def _shared_groups(view: DbtView, window: tuple[float, float]) -> Dataset:
    g = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [_ds(view.spacing_mm), _ds(view.spacing_mm)]
    pm.SliceThickness = _ds(view.slice_mm)
    pm.SpacingBetweenSlices = _ds(view.slice_mm)
    g.PixelMeasuresSequence = Sequence([pm])
    po = Dataset()
    row, column, _ = plane_geometry(view)
    po.ImageOrientationPatient = [_ds(round(float(v), 6) + 0.0) for v in (*row, *column)]
    g.PlaneOrientationSequence = Sequence([po])
    fa = Dataset()
    fa.AnatomicRegionSequence = Sequence([breast_region_item()])
    fa.FrameLaterality = view.laterality
    g.FrameAnatomySequence = Sequence([fa])
    pvt = Dataset()
    pvt.RescaleIntercept = "0"
    pvt.RescaleSlope = "1"
    pvt.RescaleType = "US"
    g.PixelValueTransformationSequence = Sequence([pvt])
    voi = Dataset()
    voi.WindowCenter = _ds(window[0])
    voi.WindowWidth = _ds(window[1])
    voi.VOILUTFunction = "LINEAR"
    voi.WindowCenterWidthExplanation = "AUTO"
    g.FrameVOILUTSequence = Sequence([voi])
    usage = Dataset()
    usage.ContrastBolusAgentNumber = 1
    usage.ContrastBolusAgentAdministered = "YES"
    usage.ContrastBolusAgentDetected = "YES"
    g.ContrastBolusUsageSequence = Sequence([usage])
    return g


def _per_frame_groups(view: DbtView, frame_datetime: str, duration_ms: float) -> Sequence:
    _, _, source = plane_geometry(view)
    items = []
    for k, z in enumerate(view.heights_mm, start=1):
        g = Dataset()
        fc = Dataset()
        fc.FrameAcquisitionDateTime = frame_datetime
        fc.FrameReferenceDateTime = frame_datetime
        fc.FrameAcquisitionDuration = duration_ms
        fc.StackID = "1"
        fc.InStackPositionNumber = k
        fc.DimensionIndexValues = [k]
        g.FrameContentSequence = Sequence([fc])
        pp = Dataset()
        pp.ImagePositionPatient = [_ds(round(float(z) * float(c), 6) + 0.0) for c in source]
        g.PlanePositionSequence = Sequence([pp])
        ft = Dataset()
        ft.FrameType = ["ORIGINAL", "PRIMARY", "TOMOSYNTHESIS", "NONE"]
        ft.PixelPresentation = "MONOCHROME"
        ft.VolumetricProperties = "VOLUME"
        ft.VolumeBasedCalculationTechnique = "TOMOSYNTHESIS"
        ft.ReconstructionIndex = 1
        g.XRay3DFrameTypeSequence = Sequence([ft])
        items.append(g)
    return Sequence(items)


def _acquisition_item(view: DbtView, style: HeaderStyle, duration_ms: float) -> Dataset:
    """The X-Ray 3D Acquisition Sequence item: detector, exposure, compression and one
    PerProjectionAcquisitionSequence item per projection of the sweep (tube angle
    relative to the C-arm's, in degrees; the exposure split evenly). Values that the
    simulator does not model (half value layer, detector temperature, paddle) are typical
    working assumptions."""
    acq = view.acquisition
    sid = style.distance_source_to_detector_mm
    dsp = sid - SUPPORT_TO_DETECTOR_MM - view.body_part_thickness_mm / 2.0
    item = Dataset()
    item.FieldOfViewShape = "RECTANGLE"
    item.FieldOfViewDimensionsInFloat = [float(view.frames.shape[1] * view.spacing_mm),
                                         float(view.frames.shape[2] * view.spacing_mm)]
    item.FieldOfViewOrigin = ["0", "0"]  # detector pixels (row, column offsets)
    item.XRayReceptorType = "DIGITAL_DETECTOR"
    item.DistanceSourceToDetector = _ds(sid)
    item.DistanceSourceToPatient = _ds(dsp)
    item.EstimatedRadiographicMagnificationFactor = _ds(round(sid / dsp, 4))
    item.BodyPartThickness = _ds(view.body_part_thickness_mm)
    item.CompressionForce = _ds(view.compression_force_n)
    item.PaddleDescription = "Standard compression paddle"
    item.ExposureControlMode = "AUTOMATIC"
    item.ExposureControlModeDescription = "Automatic exposure control"
    item.HalfValueLayer = _ds(0.5)  # mm Al, typical for W/Rh near 28 kV (assumption)
    item.AnodeTargetMaterial = style.anode_target_material
    item.FilterType = "FLAT"
    item.FilterMaterial = style.filter_material
    item.FilterThicknessMinimum = _ds(style.filter_thickness_mm)
    item.FilterThicknessMaximum = _ds(style.filter_thickness_mm)
    item.FocalSpots = _ds(style.focal_spot_mm)
    item.DetectorTemperature = _ds(30.0)  # degrees C (assumption)
    item.PrimaryPositionerScanArc = float(acq.arc_deg)
    item.PrimaryPositionerScanStartAngle = float(-acq.arc_deg / 2.0)
    item.PrimaryPositionerIncrement = float(
        acq.arc_deg / (acq.projections - 1) if acq.projections > 1 else 0.0)
    per_ms = duration_ms / acq.projections
    mas = view.exposure_mas / acq.projections
    projections = []
    for angle in acq.angles_deg():
        proj = Dataset()
        proj.KVP = _ds(view.kvp)
        proj.XRayTubeCurrentInmA = float(round(mas / (per_ms / 1000.0), 3))
        proj.ExposureTimeInms = float(per_ms)
        proj.ExposureInmAs = float(round(mas, 4))
        proj.RelativeXRayExposure = round(mas * 1000)  # µAs (this writer's unit)
        proj.PositionerPrimaryAngle = _ds(round(view.positioner_primary_angle_deg + angle, 4))
        projections.append(proj)
    item.PerProjectionAcquisitionSequence = Sequence(projections)
    return item


def _reconstruction_item() -> Dataset:
    """The X-Ray 3D Reconstruction Sequence item: how the slices were made."""
    item = Dataset()
    item.ReconstructionDescription = "Ramp-filtered shift-and-add (parallel beam with shear)"
    item.ApplicationName = "galacto synth"
    item.ApplicationVersion = "1"
    item.ApplicationManufacturer = "galacto"
    item.AlgorithmType = "FILTER_BACK_PROJ"
    item.AlgorithmDescription = "Shift-and-add of ramp-filtered log projections"
    item.AcquisitionIndex = [1]
    return item


def build_dbt_dataset(view: DbtView, case: CaseHeader, profile: VendorProfile) -> Dataset:
    """Build a Breast Tomosynthesis Image dataset for one reconstructed view.

    Args:
        view: the reconstructed view; ``view.frames`` ``(n_frames, rows, cols)`` uint16 in
            MONOCHROME2 sense within ``[0, 2**bits_stored - 1]``, ``view.heights_mm``
            increasing.
        case: patient and study attributes shared by the case's objects.
        profile: the 2D vendor profile of the case (header style: serial number, anode,
            filter); Manufacturer and model come from ``view.acquisition``.

    Returns:
        The dataset with native little-endian Pixel Data and file meta (Explicit VR Little
        Endian), so ``ds.pixel_array`` works in memory.

    Raises:
        ValueError: an input is inconsistent; the message names the value.
    """
    _check(view, case)
    style = get_header_style(profile)
    acq = view.acquisition
    n, rows, cols = (int(v) for v in view.frames.shape)
    dt = case.study_date + view.acquisition_time

    ds = Dataset()
    # SOP Common, Patient, General Study, General Series, Enhanced Mammography Series
    add_instance_and_series(ds, BREAST_TOMOSYNTHESIS_IMAGE, view, case, view.acquisition_time,
                            f"{view.laterality} {view.view} Tomo")

    # Frame of Reference
    ds.FrameOfReferenceUID = view.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""

    # General Equipment, Enhanced General Equipment
    add_equipment(ds, acq.manufacturer, acq.model_name, style)

    # Image Pixel
    add_image_pixel(ds, "MONOCHROME2", rows, cols, view.bits_stored)

    # Enhanced Contrast/Bolus
    ds.ContrastBolusAgentSequence = Sequence([_contrast_agent_item(case)])

    # Multi-frame Functional Groups, Multi-frame Dimension
    ds.NumberOfFrames = n
    ds.ContentDate = case.study_date
    ds.ContentTime = view.acquisition_time
    ds.SharedFunctionalGroupsSequence = Sequence([_shared_groups(view,
                                                                 volume_window(view.frames))])
    duration_ms = float(acq.projections * SECONDS_PER_PROJECTION * 1000.0)
    ds.PerFrameFunctionalGroupsSequence = _per_frame_groups(view, dt, duration_ms)
    dim_uid = UID(view.frame_of_reference_uid + ".1") if len(
        view.frame_of_reference_uid) <= 62 else UID(view.frame_of_reference_uid)
    org = Dataset()
    org.DimensionOrganizationUID = dim_uid
    ds.DimensionOrganizationSequence = Sequence([org])
    ds.DimensionOrganizationType = "3D"
    index = Dataset()
    index.DimensionOrganizationUID = dim_uid
    index.DimensionIndexPointer = _IMAGE_POSITION_TAG
    index.FunctionalGroupPointer = _PLANE_POSITION_SEQ_TAG
    index.DimensionDescriptionLabel = "Height above breast support"
    ds.DimensionIndexSequence = Sequence([index])

    # Acquisition Context
    ds.AcquisitionContextSequence = Sequence()

    # Breast View
    ds.ImageLaterality = view.laterality
    ds.ViewCodeSequence = Sequence([view_code_item(view.view)])
    ds.PatientOrientation = list(view.patient_orientation)
    ds.PositionerPrimaryAngle = _ds(view.positioner_primary_angle_deg)
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"

    # Enhanced Mammography Image
    ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMOSYNTHESIS", "NONE"]
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "TOMOSYNTHESIS"
    ds.ContentQualification = "PRODUCT"
    ds.PresentationLUTShape = "IDENTITY"
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"
    ds.ImageComments = (f"Synthetic galactogram tomosynthesis generated by galacto; not a "
                        f"real patient. Sweep {acq.projections} projections over "
                        f"{acq.arc_deg:g} degrees.")

    # Breast Tomosynthesis Acquisition, X-Ray 3D Reconstruction
    ds.XRay3DAcquisitionSequence = Sequence([_acquisition_item(view, style, duration_ms)])
    ds.XRay3DReconstructionSequence = Sequence([_reconstruction_item()])

    ds.add(DataElement(_PIXEL_DATA_TAG, "OW",
                       np.ascontiguousarray(view.frames, dtype="<u2").tobytes()))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = BREAST_TOMOSYNTHESIS_IMAGE
    ds.file_meta.MediaStorageSOPInstanceUID = UID(view.sop_instance_uid)
    return ds


def write_dbt_view(view: DbtView, case: CaseHeader, profile: VendorProfile, path: Path
                   ) -> Dataset:
    """Build the dataset for ``view`` and write it to ``path`` (Explicit VR Little Endian,
    preamble and file meta); return the dataset. See :func:`build_dbt_dataset`."""
    ds = build_dbt_dataset(view, case, profile)
    ds.save_as(path, enforce_file_format=True)
    return ds
