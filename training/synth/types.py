"""Data types passed between the simulator's renderer and its DICOM writer.

Conventions: arrays are ``(rows, cols)``; pixel boxes are ``[x1, y1, x2, y2]`` with x = column,
y = row, origin at the top-left corner of the top-left pixel, x2/y2 exclusive (DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Laterality = Literal["L", "R"]
ViewName = Literal["CC", "ML", "MLO"]
Photometric = Literal["MONOCHROME1", "MONOCHROME2"]


@dataclass(frozen=True)
class VendorProfile:
    """A detector geometry and header style to imitate.

    Attributes:
        name: profile id used on the command line (e.g. ``hologic``).
        manufacturer: value for Manufacturer (0008,0070).
        model_name: value for ManufacturersModelName (0008,1090).
        rows: image rows (pixels, chest wall runs along the rows' direction).
        cols: image columns.
        detector_spacing_mm: ImagerPixelSpacing at the detector, mm per pixel (square pixels).
        magnification: EstimatedRadiographicMagnificationFactor (>= 1).
        bits_stored: 12 or 14.
        pixel_spacing_attribute: which spacing attributes the header carries:
            ``"both"`` (PixelSpacing and ImagerPixelSpacing) or ``"imager"`` (ImagerPixelSpacing
            with the magnification factor only).
    """

    name: str
    manufacturer: str
    model_name: str
    rows: int
    cols: int
    detector_spacing_mm: float
    magnification: float
    bits_stored: int
    pixel_spacing_attribute: Literal["both", "imager"]

    @property
    def patient_spacing_mm(self) -> float:
        """Pixel spacing at the patient plane (mm): detector spacing / magnification."""
        return self.detector_spacing_mm / self.magnification


@dataclass
class CaseHeader:
    """Patient and study attributes shared by every view of one synthetic case.

    All identifiers are synthetic; dates are ``YYYYMMDD``, times ``HHMMSS``.
    """

    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_age: str  # DICOM AS, e.g. "052Y"
    study_instance_uid: str
    study_id: str
    accession_number: str
    study_date: str
    study_time: str
    contrast_agent: str  # ContrastBolusAgent, e.g. "Iohexol 300 mgI/mL"
    contrast_volume_ml: float


@dataclass(kw_only=True)
class ViewHeader:
    """The per-view header values that 2D (:class:`RenderedView`) and tomosynthesis
    (:class:`DbtView`) views share; keyword-only in the constructors.

    Attributes:
        laterality: ``"L"`` or ``"R"``.
        view: ``"CC"``, ``"ML"`` or ``"MLO"``.
        patient_orientation: the two PatientOrientation values ``(row_direction,
            column_direction)``, e.g. ``("A", "R")``: increasing column index points anterior
            (towards the nipple), increasing row index points to the patient's right.
        series_instance_uid: the view's series UID; sop_instance_uid: its instance UID.
        series_number / instance_number: as written in the header.
        kvp / exposure_mas / body_part_thickness_mm / compression_force_n: acquisition values
            (kVp, mAs, mm, N); ``body_part_thickness_mm`` is the compressed thickness.
        positioner_primary_angle_deg: C-arm angle (0 for CC, 90 for ML, 45-60 for MLO).
        acquisition_time: AcquisitionTime, ``HHMMSS``.
    """

    laterality: Laterality
    view: ViewName
    patient_orientation: tuple[str, str]
    series_instance_uid: str
    sop_instance_uid: str
    series_number: int
    instance_number: int
    kvp: float
    exposure_mas: float
    body_part_thickness_mm: float
    compression_force_n: float
    positioner_primary_angle_deg: float
    acquisition_time: str = "000000"


@dataclass
class RenderedView(ViewHeader):
    """One rendered mammographic view, ready to be written as DICOM.

    Attributes:
        pixels: ``(rows, cols)`` uint16 stored values in MONOCHROME2 sense (larger = more
            attenuation = brighter), in ``[0, 2**bits_stored - 1]``. The writer inverts for
            MONOCHROME1.
        bits_stored: 12 or 14.
        extra: further header values by keyword.
        Other attributes as in :class:`ViewHeader`.
    """

    pixels: np.ndarray
    bits_stored: int
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class DbtAcquisition:
    """A vendor-like tomosynthesis acquisition and the header style of its reconstruction.

    Attributes:
        name: table key (e.g. ``hologic``), recorded in ``dataset.json``.
        manufacturer / model_name: Manufacturer (0008,0070), ManufacturersModelName
            (0008,1090).
        arc_deg: total angular range of the X-ray tube sweep (degrees), symmetric about the
            perpendicular to the detector.
        projections: number of low-dose projections, equally spaced over the arc.
        bits_stored: BitsStored of the reconstructed slices.
    """

    name: str
    manufacturer: str
    model_name: str
    arc_deg: float
    projections: int
    bits_stored: int

    def angles_deg(self) -> tuple[float, ...]:
        """Projection angles (degrees), ``-arc/2 .. +arc/2`` equally spaced (0 if one)."""
        if self.projections <= 1:
            return (0.0,)
        step = self.arc_deg / (self.projections - 1)
        return tuple(-self.arc_deg / 2.0 + i * step for i in range(self.projections))


@dataclass
class DbtView(ViewHeader):
    """One reconstructed tomosynthesis view, ready to be written as DICOM.

    Attributes:
        frames: ``(n_frames, rows, cols)`` uint16 stored values in MONOCHROME2 sense, in the
            stored orientation, frame 0 nearest the breast support (the detector side).
        heights_mm: ``(n_frames,)`` height of each frame's plane above the breast support
            (mm), increasing.
        spacing_mm: in-plane pixel spacing of the frames (mm, square pixels).
        slice_mm: spacing between frames (mm), also written as the nominal slice thickness.
        bits_stored: BitsStored of the frames.
        acquisition: the sweep that was simulated and the header style.
        frame_of_reference_uid: one per view (the breast is compressed anew in each view).
        Other attributes as in :class:`ViewHeader`.
    """

    frames: np.ndarray
    heights_mm: np.ndarray
    spacing_mm: float
    slice_mm: float
    bits_stored: int
    acquisition: DbtAcquisition
    frame_of_reference_uid: str
