"""The geometry of a tomosynthesis volume, read from its header: which SOP classes are volumes,
the Shared and Per-frame Functional Groups (PS3.3 C.7.6.16), pixel spacing and slice thickness
(Pixel Measures, C.7.6.16.2.1), frame laterality (Frame Anatomy, C.7.6.16.2.8), the rescale
(Pixel Value Transformation, C.7.6.16.2.9), the window (Frame VOI LUT, C.7.6.16.2.10) and the
height of every frame above the breast support (Plane Position / Orientation (Patient),
C.7.6.16.2.3-4, Plane Position / Orientation (Volume), C.7.6.16.2.24-25, Slice Location Vector
of the SC Multi-frame Image Module, C.8.6.3, Spacing Between Slices).

Sources, PS3.3: A.55 "Breast Tomosynthesis Image IOD" (its Image Pixel module is the only
place for Pixel Data; its Breast View module, C.8.21.6, holds View Code Sequence at the top
level; Frame Anatomy Sequence > Frame Laterality is where the breast side is, usually in the
Shared Functional Groups; A.55.3.1: no Modality LUT or VOI LUT module at the top level, the
Frame VOI LUT functional group carries the window); A.8.3 / A.8.4 "Multi-frame Grayscale
Byte / Word SC Image IOD" (Pixel Spacing, Nominal Scanned Pixel Spacing, Slice Location
Vector); A.74 "Breast Projection X-Ray Image IOD" (the raw projections, refused here);
C.8.21.3.4 "Breast Tomosynthesis Acquisition Module" (Distance Source to Patient is measured
to the breast support along the beam).

**Height of a frame** (:func:`frame_heights`): the distance in mm of the frame's reconstructed
plane above the breast support, measured along the plane normal toward the X-ray source.
DBT planes are parallel to the breast support and the reconstruction starts at it, but no
attribute of these IODs states how far the lowest plane lies above it: heights are measured
from the lowest frame (height 0). In order of preference they come from

1. Image Position (Patient) of every frame, projected on the normal of Image Orientation
   (Patient). Which way the normal points to the source is taken from the view (View Code
   Sequence and laterality give the beam direction in patient coordinates: CC from the head,
   ML from the medial side, MLO from superomedial, ...); when the view does not tell, from
   the mammography display convention that an image is seen from the source side (then
   ``column x row`` of the direction cosines points to the source: L CC ``A\\R`` and R MLO
   ``P\\F`` are examples), with a warning.
2. Image Position (Volume) with Image Orientation (Volume), the same way (display convention).
3. Slice Location Vector (0018,2005) (SC): larger locations taken as higher, with a warning.
4. Spacing Between Slices (Pixel Measures, else top level): frame ``i`` (0-based, or In-Stack
   Position Number - 1 when every frame has a distinct one) at ``i * spacing``, assuming frame
   1 lowest, with a warning; for Breast Tomosynthesis only, Slice Thickness the same way.

Frames stay in DICOM order whatever their heights (a volume stored top-down has decreasing
heights). Two frames in one plane, or frames that are not parallel, are refused.

This module never imports torch, monai or ``training``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from serving.pipeline.errors import (
    ABSENT,
    Found,
    IntakeError,
    InvalidHeaderError,
    InvalidSpacingError,
    MissingSpacingError,
)
from serving.pipeline.intake.types import MAX_SPACING_MM, VIEW_CODES, VIEW_POSITIONS
from serving.pipeline.intake.values import as_float, attr, get, get_noted, text, try_int

__all__ = [
    "BREAST_PROJECTION_SOP_CLASSES",
    "BREAST_TOMOSYNTHESIS",
    "MULTIFRAME_SC_SOP_CLASSES",
    "FrameGeometry",
    "FunctionalGroups",
    "PixelMeasures",
    "frame_heights",
    "frame_laterality",
    "frame_window",
    "patient_orientation_from",
    "pixel_measures",
    "pixel_value_transformation",
    "plane_orientation",
    "source_direction",
    "upward_normal",
    "view_of",
]

#: Breast Tomosynthesis Image Storage (PS3.4 B.5, IOD PS3.3 A.55).
BREAST_TOMOSYNTHESIS: Final = "1.2.840.10008.5.1.4.1.1.13.1.3"
#: Breast Projection X-Ray Image Storage (IOD PS3.3 A.74): the raw projections of a DBT scan.
BREAST_PROJECTION_SOP_CLASSES: Final[dict[str, str]] = {
    "1.2.840.10008.5.1.4.1.1.13.1.4": "Breast Projection X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "Breast Projection X-Ray Image Storage - For Processing",
}
#: Multi-frame grayscale Secondary Capture (IODs PS3.3 A.8.3 and A.8.4).
MULTIFRAME_SC_SOP_CLASSES: Final[dict[str, str]] = {
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture",
}

#: Two frames whose heights differ by less than this (mm) lie in one plane.
SAME_PLANE_MM: Final = 1e-3
#: Direction cosines of frames that differ by more than this are not parallel.
PARALLEL_TOLERANCE: Final = 1e-3
#: A direction cosine vector whose length differs from 1 by more than this is unusable.
UNIT_TOLERANCE: Final = 1e-2
#: Least |cos| between the plane normal and a view's beam direction for the view to decide
#: which way the normal points (60 degrees; an MLO beam is 40-60 degrees off vertical).
VIEW_AGREEMENT: Final = 0.5
#: A direction cosine component larger than this gives a PatientOrientation letter.
ORIENTATION_LETTER: Final = 0.3

Vector = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# Functional groups
# --------------------------------------------------------------------------------------------


class FunctionalGroups:
    """The Shared and Per-frame Functional Groups of an enhanced multi-frame object
    (PS3.3 C.7.6.16): each macro's sequence is looked up in the frame's Per-frame item first,
    then in the Shared item (a macro is in one of them, C.7.6.16.1).

    Args:
        ds: the data set.
        frames: NumberOfFrames, checked.

    Raises:
        InvalidHeaderError: a functional groups sequence that cannot be read, or a Per-frame
            sequence whose number of items is not NumberOfFrames.
    """

    def __init__(self, ds: Dataset, frames: int) -> None:
        self.frames = frames
        shared = get(ds, "SharedFunctionalGroupsSequence")
        per_frame = get(ds, "PerFrameFunctionalGroupsSequence")
        for keyword, value in (("SharedFunctionalGroupsSequence", shared),
                               ("PerFrameFunctionalGroupsSequence", per_frame)):
            if value is not ABSENT and not isinstance(value, DicomSequence):
                raise InvalidHeaderError(
                    "not a sequence", attribute=attr(keyword),
                    value=Found(type(value).__name__), expected="a sequence of items (SQ)",
                )
        self.shared: Dataset | None = _first_item(shared)
        self.per_frame: list[Dataset] = list(per_frame) if isinstance(
            per_frame, DicomSequence) else []
        if self.per_frame and len(self.per_frame) != frames:
            raise InvalidHeaderError(
                "the per-frame functional groups do not match the number of frames",
                attribute=attr("PerFrameFunctionalGroupsSequence"),
                value=Found(f"{len(self.per_frame)} items"),
                expected=f"one item per frame (NumberOfFrames {frames})",
            )

    def item(self, index: int, sequence: str) -> tuple[Dataset | None, str]:
        """``(first item of the macro's sequence for frame index (0-based), where it was)``;
        ``(None, "")`` when neither group has it."""
        if self.per_frame:
            found = _first_item(get(self.per_frame[index], sequence))
            if found is not None:
                return found, f"PerFrameFunctionalGroupsSequence item {index + 1} > {sequence}"
        if self.shared is not None:
            found = _first_item(get(self.shared, sequence))
            if found is not None:
                return found, f"SharedFunctionalGroupsSequence > {sequence}"
        return None, ""

    def values(self, sequence: str, keyword: str) -> list[tuple[object, str]]:
        """``(value or ABSENT, "where > Keyword (gggg,eeee)")`` of ``keyword`` in the macro
        ``sequence`` for every frame."""
        found = []
        for index in range(self.frames):
            item, where = self.item(index, sequence)
            value = ABSENT if item is None else get(item, keyword)
            found.append((value, f"{where} > {attr(keyword)}" if where else attr(keyword)))
        return found

    def element(self, index: int, sequence: str, keyword: str) -> DataElement | None:
        """The element ``keyword`` of the macro ``sequence`` for frame ``index``, or None."""
        item, _ = self.item(index, sequence)
        if item is None or get(item, keyword) is ABSENT:
            return None
        return item[keyword]


def _first_item(value: object) -> Dataset | None:
    if isinstance(value, DicomSequence) and len(value) > 0:
        return value[0]
    return None


def _numbers(value: object, count: int | None) -> list[float] | None:
    """``value`` as finite floats (exactly ``count`` of them when given), or None."""
    if value is ABSENT:
        return None
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    try:
        numbers = [as_float(v) for v in items]
    except (ValueError, TypeError):
        return None
    if (count is not None and len(numbers) != count) or not all(map(math.isfinite, numbers)):
        return None
    return numbers


def _distinct(found: Sequence[tuple[object, str]]) -> list[tuple[object, str]]:
    """The first ``(value, where)`` of each different value, in frame order."""
    seen: list[tuple[object, str]] = []
    for value, where in found:
        if all(str(value) != str(other) for other, _ in seen):
            seen.append((value, where))
    return seen


# --------------------------------------------------------------------------------------------
# Pixel measures, laterality, rescale, window
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PixelMeasures:
    """What the Pixel Measures macro (PS3.3 C.7.6.16.2.1) gives, checked.

    Attributes:
        spacing: the PixelSpacing element (row, column spacing in mm), the same in every
            frame, or None when no frame has one.
        slice_thickness_mm: SliceThickness (mm, > 0), here or else at the top level; None.
        slice_spacing_mm: SpacingBetweenSlices (mm, > 0), here or else at the top level; None.
    """

    spacing: DataElement | None
    slice_thickness_mm: float | None
    slice_spacing_mm: float | None


def pixel_measures(ds: Dataset, groups: FunctionalGroups, notes: list[str]) -> PixelMeasures:
    """Read the Pixel Measures macro of every frame (falling back to the top-level
    SliceThickness and SpacingBetweenSlices).

    Raises:
        InvalidSpacingError: a PixelSpacing that is not two numbers in (0, 10] mm, or one that
            differs between frames.
    """
    spacing = None
    found = _distinct([(v, w) for v, w in groups.values("PixelMeasuresSequence", "PixelSpacing")
                       if v is not ABSENT])
    if found:
        value, where = found[0]
        pair = _numbers(value, 2)
        if pair is None or not all(0.0 < v <= MAX_SPACING_MM for v in pair):
            raise InvalidSpacingError(
                "invalid pixel spacing", attribute=where, value=value,
                expected=f"two finite numbers in (0, {MAX_SPACING_MM:g}] mm",
            )
        if len(found) > 1:
            raise InvalidSpacingError(
                "the pixel spacing differs between frames", attribute=found[1][1],
                value=found[1][0], expected=f"the same spacing in every frame ({value!r})",
            )
        spacing = next(element for index in range(groups.frames)
                       if (element := groups.element(index, "PixelMeasuresSequence",
                                                     "PixelSpacing")) is not None)
    thickness = _length(ds, groups, "SliceThickness", notes)
    between = _length(ds, groups, "SpacingBetweenSlices", notes)
    return PixelMeasures(spacing=spacing, slice_thickness_mm=thickness, slice_spacing_mm=between)


def _length(ds: Dataset, groups: FunctionalGroups, keyword: str, notes: list[str]
            ) -> float | None:
    """A positive length (mm) from the Pixel Measures macro, else the top level; None when
    absent or unusable (noted); a value that differs between frames is noted, frame 1's
    used."""
    found = _distinct([(v, w) for v, w in groups.values("PixelMeasuresSequence", keyword)
                       if v is not ABSENT])
    if not found:
        value = get_noted(ds, keyword, notes)
        found = [] if value is ABSENT else [(value, attr(keyword))]
    if not found:
        return None
    value, where = found[0]
    if len(found) > 1:
        notes.append(f"{keyword} differs between frames ({found[1][1]} is {found[1][0]!r}); "
                     f"used {value!r}")
    number = _numbers(value, 1)
    if number is None or number[0] <= 0:
        notes.append(f"ignored {where} {value!r}; expected a positive number of mm")
        return None
    return number[0]


def frame_laterality(groups: FunctionalGroups, notes: list[str]) -> str | None:
    """FrameLaterality (0020,9072) of the Frame Anatomy macro, the same in every frame that
    has one: ``"L"``, ``"R"``, ``"U"``/``"B"`` or whatever was found; ``"U"`` when the frames
    disagree (noted); None when no frame has one."""
    found = _distinct([(text(v).upper(), w)
                       for v, w in groups.values("FrameAnatomySequence", "FrameLaterality")
                       if v is not ABSENT and text(v)])
    if not found:
        return None
    if len(found) > 1:
        sides = ", ".join(f"{value} ({where})" for value, where in found)
        notes.append(f"laterality unknown: the frames disagree on FrameLaterality: {sides}")
        return "U"
    side, where = str(found[0][0]), found[0][1]
    if side not in ("L", "R"):
        notes.append(f"laterality unknown: {where} is {side!r} (taken as the image's "
                     "laterality below)")
    return side


def pixel_value_transformation(groups: FunctionalGroups) -> tuple[DataElement, DataElement] | None:
    """``(RescaleSlope, RescaleIntercept)`` elements of the Pixel Value Transformation macro,
    or None when no frame has one.

    Raises:
        InvalidHeaderError: frames with different rescales (one pixel mapping per volume is
            supported), or a macro without both values.
    """
    slopes = groups.values("PixelValueTransformationSequence", "RescaleSlope")
    intercepts = groups.values("PixelValueTransformationSequence", "RescaleIntercept")
    pairs = [(f"{s}\\{i}", w) for (s, w), (i, _) in zip(slopes, intercepts, strict=True)
             if s is not ABSENT or i is not ABSENT]
    if not pairs:
        return None
    found = _distinct(pairs)
    if len(found) > 1 or len(pairs) != groups.frames:
        other = found[1] if len(found) > 1 else (Found("absent in some frames"), found[0][1])
        raise InvalidHeaderError(
            "the rescale differs between frames", attribute=other[1], value=other[0],
            expected=f"one RescaleSlope\\RescaleIntercept for the volume ({found[0][0]})",
        )
    slope = groups.element(0, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = groups.element(0, "PixelValueTransformationSequence", "RescaleIntercept")
    if slope is None or intercept is None:
        raise InvalidHeaderError(
            "incomplete rescale", attribute=slopes[0][1], value=Found(found[0][0]),
            expected="both RescaleSlope and RescaleIntercept (PS3.3 C.7.6.16.2.9)",
        )
    return slope, intercept


def frame_window(groups: FunctionalGroups) -> tuple[DataElement, DataElement] | None:
    """``(WindowCenter, WindowWidth)`` elements of frame 1's Frame VOI LUT macro, or None
    (a display hint only)."""
    center = groups.element(0, "FrameVOILUTSequence", "WindowCenter")
    width = groups.element(0, "FrameVOILUTSequence", "WindowWidth")
    return None if center is None or width is None else (center, width)


# --------------------------------------------------------------------------------------------
# View, beam and orientation
# --------------------------------------------------------------------------------------------


def view_of(ds: Dataset) -> str | None:
    """The mammography view from View Code Sequence (CID 4014), else View Position; None.
    (The same precedence as the 2D header; unreadable values give None.)"""
    try:
        item = _first_item(get(ds, "ViewCodeSequence"))
        if item is not None:
            code = get(item, "CodeValue")
            view = None if code is ABSENT else VIEW_CODES.get(text(code))
            if view is not None:
                return view
        position = get(ds, "ViewPosition")
    except IntakeError:
        return None
    found = None if position is ABSENT else text(position).upper()
    return found if found in VIEW_POSITIONS else None


#: View -> beam source direction in patient coordinates (x toward the patient's left, y
#: posterior, z head, PS3.3 C.7.6.2.1.1), as ``(medial, head)`` components: "medial" is +x for
#: a right breast and -x for a left one. From the view definitions of CID 4014: CC cranio-
#: caudal (source above), FB from below, ML medio-lateral (source medial), LM latero-medial,
#: MLO from superomedial, LMO from inferolateral, SIO from superolateral, ISO from
#: inferomedial.
_BEAM_SOURCE: Final[dict[str, tuple[float, float]]] = {
    "CC": (0.0, 1.0), "XCCL": (0.0, 1.0), "XCCM": (0.0, 1.0), "FB": (0.0, -1.0),
    "ML": (1.0, 0.0), "LM": (-1.0, 0.0), "MLO": (1.0, 1.0), "LMO": (-1.0, -1.0),
    "SIO": (-1.0, 1.0), "ISO": (1.0, -1.0),
}  # fmt: skip


def source_direction(view: str | None, laterality: str | None) -> Vector | None:
    """Unit vector from the breast toward the X-ray source in patient coordinates for a
    mammography ``view`` of the ``laterality`` (``"L"``/``"R"``) breast; None when the view
    is unknown, or needs a side that is unknown."""
    if view not in _BEAM_SOURCE:
        return None
    medial, head = _BEAM_SOURCE[view]
    if medial != 0.0 and laterality not in ("L", "R"):
        return None
    side = 1.0 if laterality == "R" else -1.0
    vector = np.array([medial * side, 0.0, head], dtype=np.float64)
    return vector / float(np.linalg.norm(vector))


def plane_orientation(
    ds: Dataset, groups: FunctionalGroups, sequence: str, keyword: str, notes: list[str]
) -> tuple[Vector, Vector] | None:
    """``(row direction, column direction)`` unit vectors of the frames from the orientation
    macro ``sequence`` (or ``keyword`` at the top level), or None when absent or unusable
    (noted).

    Raises:
        InvalidHeaderError: frames whose orientations differ (not one stack of parallel
            planes).
    """
    found = [(v, w) for v, w in groups.values(sequence, keyword) if v is not ABSENT]
    if not found:
        value = get_noted(ds, keyword, notes)
        found = [] if value is ABSENT else [(value, attr(keyword))]
    if not found:
        return None
    vectors = []
    for value, where in found:
        numbers = _numbers(value, 6)
        row, col = (None, None) if numbers is None else (np.array(numbers[:3]),
                                                         np.array(numbers[3:]))
        if row is None or col is None or not _orthonormal(row, col):
            notes.append(f"ignored {where} {value!r}: not two orthogonal unit vectors")
            return None
        vectors.append((row / np.linalg.norm(row), col / np.linalg.norm(col)))
    first = vectors[0]
    for (row, col), (value, where) in zip(vectors, found, strict=True):
        if max(float(np.abs(row - first[0]).max()), float(np.abs(col - first[1]).max())) \
                > PARALLEL_TOLERANCE:
            raise InvalidHeaderError(
                "the frames are not parallel planes", attribute=where, value=value,
                expected=f"the same orientation in every frame ({found[0][0]!r})",
            )
    return first


def _orthonormal(row: Vector, col: Vector) -> bool:
    norms = (float(np.linalg.norm(row)), float(np.linalg.norm(col)))
    return all(abs(n - 1.0) <= UNIT_TOLERANCE for n in norms) and \
        abs(float(row @ col)) <= UNIT_TOLERANCE


def patient_orientation_from(row: Vector, col: Vector) -> tuple[str, str]:
    """PatientOrientation letters (PS3.3 C.7.6.1.1.1) of unit row and column directions in
    patient coordinates: up to three of L/R, P/A, H/F, largest component first."""
    return _letters(row), _letters(col)


def _letters(vector: Vector) -> str:
    names = (("R", "L"), ("A", "P"), ("F", "H"))
    order = sorted(range(3), key=lambda axis: -abs(float(vector[axis])))
    return "".join(names[axis][float(vector[axis]) > 0] for axis in order
                   if abs(float(vector[axis])) > ORIENTATION_LETTER)


def upward_normal(
    row: Vector, col: Vector, view: str | None, laterality: str | None, notes: list[str]
) -> tuple[Vector, bool]:
    """``(unit normal of the frames toward the X-ray source, whether the view confirmed it
    and the frames are seen from the source side)`` for patient coordinates (see the module
    docstring); notes every assumption."""
    normal = np.cross(row, col)  # away from a viewer at the source, by the display convention
    convention = -normal
    source = source_direction(view, laterality)
    if source is None:
        notes.append("frame heights: the direction toward the X-ray source is taken from the "
                     "mammography display convention (frames seen from the source side); "
                     "the view and laterality do not give the beam direction")
        return convention, False
    agreement = float(normal @ source)
    if abs(agreement) < VIEW_AGREEMENT:
        notes.append(f"frame heights: the frames' normal (ImageOrientationPatient) is not "
                     f"along the beam of a {view} view; the direction toward the X-ray source "
                     "is taken from the mammography display convention")
        return convention, False
    up = normal if agreement > 0 else -normal
    if float(up @ convention) < 0:
        notes.append(f"ImageOrientationPatient (0020,0037) has the frames seen from the "
                     f"detector side (mirrored against the mammography convention), or does "
                     f"not describe the patient; frame heights follow the {view} view")
        return up, False
    return up, True


# --------------------------------------------------------------------------------------------
# Frame heights
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameGeometry:
    """Where the frames are.

    Attributes:
        heights_mm: height of each frame's plane above the lowest one (mm), DICOM order.
        patient_orientation: PatientOrientation letters ``(row, column direction)`` of the
            frames from Image Orientation (Patient), only when the view confirmed that it
            describes the patient and the frames are seen from the source side; else None.
    """

    heights_mm: tuple[float, ...]
    patient_orientation: tuple[str, str] | None = None


def frame_heights(
    ds: Dataset,
    groups: FunctionalGroups,
    measures: PixelMeasures,
    *,
    tomosynthesis: bool,
    view: str | None,
    laterality: str | None,
    pixel_spacing: tuple[float, float] | None,
    notes: list[str],
) -> FrameGeometry:
    """Height in mm of every frame's plane above the lowest one (taken as on the breast
    support), in DICOM frame order; see the module docstring for the sources and their
    order. Every assumption is noted.

    Args:
        ds: the data set.
        groups: its functional groups.
        measures: its Pixel Measures.
        tomosynthesis: a Breast Tomosynthesis Image (may fall back on SliceThickness).
        view, laterality: for the beam direction (patient coordinates only).
        pixel_spacing: in-plane spacing (mm), to report frames shifted in-plane.
        notes: warnings are appended here.

    Raises:
        MissingSpacingError: nothing gives the distance between the frames.
        InvalidHeaderError: frames in one plane, or not parallel.
    """
    frames = groups.frames
    for position, orientation, patient in (
        (("PlanePositionSequence", "ImagePositionPatient"),
         ("PlaneOrientationSequence", "ImageOrientationPatient"), True),
        (("PlanePositionVolumeSequence", "ImagePositionVolume"),
         ("PlaneOrientationVolumeSequence", "ImageOrientationVolume"), False),
    ):
        points = _positions(groups, *position, notes)
        if points is None:
            continue
        axes = plane_orientation(ds, groups, *orientation, notes)
        if axes is None:
            notes.append(f"ignored the frames' {position[1]}: no usable {orientation[1]}")
            continue
        derived = None
        if patient:
            up, confirmed = upward_normal(*axes, view, laterality, notes)
            derived = patient_orientation_from(*axes) if confirmed else None
        else:
            up = -np.cross(*axes)
            notes.append(f"frame heights from {attr(position[1])}: the direction toward the "
                         "X-ray source is taken from the mammography display convention "
                         "(frames seen from the source side)")
        heights = _along(points, up, position, pixel_spacing, notes)
        return FrameGeometry(heights, derived)
    if frames == 1:
        return FrameGeometry((0.0,))
    located = _slice_locations(ds, frames, notes)
    if located is None:
        located = _stacked(groups, measures, tomosynthesis, notes)
    return FrameGeometry(located)


def _positions(groups: FunctionalGroups, sequence: str, keyword: str, notes: list[str]
               ) -> npt.NDArray[np.float64] | None:
    """``(frames, 3)`` positions from the macro ``sequence`` of every frame, or None when no
    frame has one or some frame's is missing or unusable (noted)."""
    found = groups.values(sequence, keyword)
    if all(value is ABSENT for value, _ in found):
        return None
    points = []
    for value, where in found:
        numbers = _numbers(value, 3)
        if numbers is None:
            notes.append(f"ignored the frames' {keyword}: {where} is "
                         f"{'absent' if value is ABSENT else repr(value)}")
            return None
        points.append(numbers)
    return np.array(points, dtype=np.float64)


def _along(points: npt.NDArray[np.float64], up: Vector, position: tuple[str, str],
           pixel_spacing: tuple[float, float] | None, notes: list[str]) -> tuple[float, ...]:
    """Heights of ``points`` along ``up`` above the lowest; refuses two frames in one plane
    and notes frames shifted in-plane by more than half a pixel."""
    levels = points @ up
    lowest = int(np.argmin(levels))
    heights = levels - levels[lowest]
    order = np.argsort(heights, kind="stable")
    gaps = np.diff(heights[order])
    if gaps.size and float(gaps.min()) < SAME_PLANE_MM:
        first = int(order[int(np.argmin(gaps))])
        second = int(order[int(np.argmin(gaps)) + 1])
        raise InvalidHeaderError(
            "two frames lie in the same plane",
            attribute=f"{position[0]} > {attr(position[1])}",
            value=Found(f"frames {min(first, second) + 1} and {max(first, second) + 1} at "
                        f"{float(heights[first]):.4g} mm"),
            expected="one plane per frame",
        )
    offsets = points - points[lowest]
    in_plane = offsets - np.outer(offsets @ up, up)
    shift = float(np.linalg.norm(in_plane, axis=1).max())
    if pixel_spacing is not None and shift > 0.5 * min(pixel_spacing):
        notes.append(f"the frames are shifted in-plane by up to {shift:.3g} mm "
                     f"({attr(position[1])}); pixels of different frames do not line up")
    return tuple(round(float(h), 6) + 0.0 for h in heights)


def _slice_locations(ds: Dataset, frames: int, notes: list[str]) -> tuple[float, ...] | None:
    """Heights from Slice Location Vector (0018,2005), or None when absent or unusable."""
    value = get_noted(ds, "SliceLocationVector", notes)
    if value is ABSENT:
        return None
    numbers = _numbers(value, frames)
    if numbers is None:
        notes.append(f"ignored {attr('SliceLocationVector')}: not {frames} numbers")
        return None
    levels = np.array(numbers, dtype=np.float64)
    heights = levels - levels.min()
    if np.unique(np.round(heights / SAME_PLANE_MM)).size != frames:
        raise InvalidHeaderError(
            "two frames lie in the same plane", attribute=attr("SliceLocationVector"),
            value=value, expected="one slice location per frame",
        )
    notes.append(f"frame heights from {attr('SliceLocationVector')}, taking larger slice "
                 "locations as farther from the breast support")
    return tuple(round(float(h), 6) + 0.0 for h in heights)


def _stacked(groups: FunctionalGroups, measures: PixelMeasures, tomosynthesis: bool,
             notes: list[str]) -> tuple[float, ...]:
    """Heights ``i * spacing`` from Spacing Between Slices (or, for tomosynthesis, Slice
    Thickness); MissingSpacingError when neither is usable."""
    spacing, keyword = measures.slice_spacing_mm, "SpacingBetweenSlices"
    if spacing is None and tomosynthesis and measures.slice_thickness_mm is not None:
        spacing, keyword = measures.slice_thickness_mm, "SliceThickness"
    if spacing is None:
        raise MissingSpacingError(
            "no distance between the frames",
            attribute=f"{attr('SpacingBetweenSlices')}, {attr('SliceLocationVector')} or the "
                      "frames' PlanePositionSequence > ImagePositionPatient (0020,0032)",
            value=ABSENT,
            expected="the frames' positions or the spacing between them in mm",
        )
    ranks = _in_stack_positions(groups)
    what = "(InStackPositionNumber - 1)" if ranks is not None else "its 0-based index"
    ranks = ranks if ranks is not None else list(range(groups.frames))
    notes.append(
        f"frame heights assumed: the file gives no frame positions; each frame lies {what} x "
        f"{attr(keyword)} {spacing:g} mm above the first, which is taken as lowest (on the "
        "breast support)" + ("; contiguous slices assumed" if keyword == "SliceThickness"
                             else "")
    )
    return tuple(round(rank * spacing, 6) + 0.0 for rank in ranks)


def _in_stack_positions(groups: FunctionalGroups) -> list[int] | None:
    """In-Stack Position Number - 1 of every frame (Frame Content macro, C.7.6.16.2.2) when
    they are exactly 1..frames, else None."""
    found = [try_int(v) for v, _ in groups.values("FrameContentSequence", "InStackPositionNumber")]
    if any(v is None for v in found):
        return None
    numbers = [int(v) for v in found if v is not None]
    if sorted(numbers) != list(range(1, groups.frames + 1)):
        return None
    return [n - 1 for n in numbers]
