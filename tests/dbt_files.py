"""Small tomosynthesis volumes for tests: Breast Tomosynthesis Image Storage objects with
Shared and Per-frame Functional Groups, and multi-frame grayscale Secondary Captures.

Typical use::

    from tests.dbt_files import make_bto, frame_stored
    ds = make_bto(frames=8, heights=[0, 1, 2, 3, 4, 5, 6, 7])   # Dataset, native pixel data
    data = to_bytes(ds, JPEG2000Lossless)                        # tests.dicomgen.to_bytes
    stored = frame_stored(ds, 3)                                 # (rows, cols) stored values

Geometry written (PS3.3 C.7.6.16.2.1-4, C.7.6.16.2.8): Pixel Measures (PixelSpacing,
SliceThickness) and Plane Orientation (Patient) and Frame Anatomy (FrameLaterality) in the
Shared Functional Groups; Frame Content (InStackPositionNumber) and Plane Position (Patient)
per frame. A frame's Image Position (Patient) is ``origin + height * up`` where ``up`` is the
direction toward the X-ray source, ``column x row`` of the orientation for the usual
mammography display (the image seen from the source side): :data:`ORIENTATIONS` gives the
direction cosines of the standard hangings (L CC ``A\\R``, R CC ``P\\L``, L MLO ``A\\F``,
R MLO ``P\\F``). Every attribute can be left out (``None``) or overridden (``extra``).

Pixels: frame ``k`` holds random stored values (seed ``seed + k``), so every frame differs;
:func:`volume_pixels` returns them as ``(frames, rows, cols)``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from tests.dicomgen import (
    BREAST_TOMOSYNTHESIS,
    MULTIFRAME_GRAYSCALE_WORD_SC,
    make_dataset,
    random_pixels,
)

#: Breast Projection X-Ray Image Storage, For Presentation / For Processing.
BREAST_PROJECTION_PRESENTATION = "1.2.840.10008.5.1.4.1.1.13.1.4"
BREAST_PROJECTION_PROCESSING = "1.2.840.10008.5.1.4.1.1.13.1.5"

#: Unit vectors of the patient directions (x left, y posterior, z head; PS3.3 C.7.6.2.1.1).
DIRECTIONS: dict[str, tuple[float, float, float]] = {
    "L": (1.0, 0.0, 0.0), "R": (-1.0, 0.0, 0.0), "P": (0.0, 1.0, 0.0), "A": (0.0, -1.0, 0.0),
    "H": (0.0, 0.0, 1.0), "F": (0.0, 0.0, -1.0),
}  # fmt: skip

#: (laterality, view) -> PatientOrientation of the standard hanging (row, column direction).
ORIENTATIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("L", "CC"): ("A", "R"), ("R", "CC"): ("P", "L"),
    ("L", "MLO"): ("A", "F"), ("R", "MLO"): ("P", "F"),
}  # fmt: skip


def orientation_cosines(row: str, col: str) -> tuple[float, ...]:
    """ImageOrientationPatient for PatientOrientation letters ``row\\col`` (one letter each)."""
    return DIRECTIONS[row] + DIRECTIONS[col]


def up_vector(cosines: Sequence[float]) -> npt.NDArray[np.float64]:
    """``column x row`` of ImageOrientationPatient: toward the source for the usual display."""
    row, col = np.array(cosines[:3], dtype=float), np.array(cosines[3:], dtype=float)
    return np.cross(col, row)


def volume_pixels(frames: int, rows: int, cols: int, bits_stored: int = 12,
                  seed: int = 0) -> npt.NDArray[np.integer[Any]]:
    """Stored values ``(frames, rows, cols)``: frame ``k`` random with seed ``seed + k``."""
    return np.stack([random_pixels(rows, cols, bits_stored, seed=seed + k)
                     for k in range(frames)])


def frame_stored(ds: Dataset, index: int) -> npt.NDArray[np.integer[Any]]:
    """Frame ``index`` (0-based) of the native little-endian pixel data of ``ds``."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    dtype = np.dtype("<u2") if int(ds.BitsAllocated) == 16 else np.dtype("u1")
    size = rows * cols
    values = np.frombuffer(ds.PixelData, dtype=dtype, count=size,
                           offset=index * size * dtype.itemsize)
    return cast(npt.NDArray[np.integer[Any]], values.reshape(rows, cols))


def _item(**values: Any) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        if value is not None:
            setattr(item, keyword, value)
    return item


def _ds(value: float) -> str:
    return f"{value:.6g}"


def make_bto(
    *,
    frames: int = 8,
    rows: int = 48,
    cols: int = 64,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    sop_class: str = BREAST_TOMOSYNTHESIS,
    laterality: str = "L",
    view: str | None = "CC",
    frame_laterality: str | Sequence[str] | None = "same",
    image_laterality: str | None = None,
    patient_orientation: Sequence[str] | None = None,
    orientation: Sequence[float] | None = None,
    heights: Sequence[float] | None = None,
    origin: Sequence[float] = (10.0, -20.0, 30.0),
    positions: bool = True,
    pixel_spacing: Sequence[float] | None = (0.1, 0.1),
    top_pixel_spacing: Sequence[float] | None = None,
    slice_thickness: float | None = 1.0,
    spacing_between: float | None = None,
    in_stack: bool = True,
    rescale: tuple[float, float] | None = None,
    pixels: npt.NDArray[np.integer[Any]] | None = None,
    seed: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Dataset:
    """A Breast Tomosynthesis Image (or, with ``sop_class``, another enhanced multi-frame
    class) with native pixel data and file meta (Explicit VR Little Endian).

    Args:
        frames, rows, cols, bits_stored, photometric: the pixel format.
        laterality: the breast; written as FrameLaterality (Shared Functional Groups).
        view: ViewCodeSequence view (``None``: absent).
        frame_laterality: ``"same"`` (``laterality``), ``None`` (no Frame Anatomy), a
            string, or one string per frame (written per frame).
        image_laterality: top-level ImageLaterality (``None``: absent).
        patient_orientation: top-level PatientOrientation (``None``: absent).
        orientation: ImageOrientationPatient; default the standard hanging of
            (laterality, view) (L CC when unknown).
        heights: frame heights above the lowest frame (mm); default ``0, 1, 2, ...``.
        origin: Image Position (Patient) of height 0.
        positions: write Plane Position (Patient) per frame.
        pixel_spacing: Pixel Measures > PixelSpacing (``None``: absent).
        top_pixel_spacing: top-level PixelSpacing.
        slice_thickness: Pixel Measures > SliceThickness.
        spacing_between: Pixel Measures > SpacingBetweenSlices.
        in_stack: write Frame Content > InStackPositionNumber 1..frames.
        rescale: Pixel Value Transformation (slope, intercept), shared.
        pixels: stored values ``(frames, rows, cols)``; default :func:`volume_pixels`.
        seed: seed of the default pixels.
        extra: top-level ``keyword -> value`` set last (``None`` deletes).
    """
    if pixels is None:
        pixels = volume_pixels(frames, rows, cols, bits_stored, seed)
    ds = make_dataset(
        rows=rows, cols=cols, bits_stored=bits_stored, photometric=photometric,
        sop_class=sop_class, pixel_spacing=top_pixel_spacing, laterality=image_laterality,
        view=view, patient_orientation=patient_orientation, number_of_frames=frames,
        pixels=pixels, presentation_intent="FOR PRESENTATION",
    )
    if orientation is None:
        hanging = ORIENTATIONS.get((laterality, view or ""), ("A", "R"))
        orientation = orientation_cosines(*hanging)
    heights = list(range(frames)) if heights is None else list(heights)
    up = up_vector(orientation)
    shared = _item(
        PixelMeasuresSequence=DicomSequence([_item(
            PixelSpacing=None if pixel_spacing is None else [_ds(v) for v in pixel_spacing],
            SliceThickness=None if slice_thickness is None else _ds(slice_thickness),
            SpacingBetweenSlices=None if spacing_between is None else _ds(spacing_between),
        )]),
        PlaneOrientationSequence=DicomSequence([_item(
            ImageOrientationPatient=[_ds(v) for v in orientation])]),
    )
    if rescale is not None:
        shared.PixelValueTransformationSequence = DicomSequence([_item(
            RescaleSlope=_ds(rescale[0]), RescaleIntercept=_ds(rescale[1]), RescaleType="US")])
    per_frame_sides: list[str] | None = None
    if frame_laterality == "same":
        frame_laterality = laterality
    if isinstance(frame_laterality, str):
        shared.FrameAnatomySequence = DicomSequence([_anatomy(frame_laterality)])
    elif frame_laterality is not None:
        per_frame_sides = list(frame_laterality)
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    items = []
    for k in range(frames):
        item = Dataset()
        if in_stack:
            item.FrameContentSequence = DicomSequence([_item(
                InStackPositionNumber=k + 1, StackID="1")])
        if positions:
            point = np.asarray(origin, dtype=float) + heights[k] * up
            item.PlanePositionSequence = DicomSequence([_item(
                ImagePositionPatient=[_ds(v) for v in point])])
        if per_frame_sides is not None:
            item.FrameAnatomySequence = DicomSequence([_anatomy(per_frame_sides[k])])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(items)
    for keyword, value in (extra or {}).items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def _anatomy(side: str) -> Dataset:
    region = _item(CodeValue="76752008", CodingSchemeDesignator="SCT", CodeMeaning="Breast")
    return _item(FrameLaterality=side, AnatomicRegionSequence=DicomSequence([region]))


def make_sc_volume(
    *,
    frames: int = 6,
    rows: int = 48,
    cols: int = 64,
    bits_stored: int = 12,
    pixel_spacing: Sequence[float] | None = (0.1, 0.1),
    nominal_spacing: Sequence[float] | None = None,
    spacing_between: float | None = 1.0,
    slice_locations: Sequence[float] | None = None,
    seed: int = 0,
) -> Dataset:
    """A Multi-frame Grayscale Word Secondary Capture (no functional groups) with native
    pixel data: PixelSpacing / NominalScannedPixelSpacing, SpacingBetweenSlices and
    SliceLocationVector as given (``None``: absent)."""
    pixels = volume_pixels(frames, rows, cols, bits_stored, seed)
    ds = make_dataset(
        rows=rows, cols=cols, bits_stored=bits_stored, sop_class=MULTIFRAME_GRAYSCALE_WORD_SC,
        pixel_spacing=pixel_spacing, number_of_frames=frames, pixels=pixels, view=None,
        patient_orientation=None,
    )
    if nominal_spacing is not None:
        ds.NominalScannedPixelSpacing = [_ds(v) for v in nominal_spacing]
    if spacing_between is not None:
        ds.SpacingBetweenSlices = _ds(spacing_between)
    if slice_locations is not None:
        ds.SliceLocationVector = [float(v) for v in slice_locations]
    return ds


#: ``galacto synth --dbt`` arguments for the smallest generated DBT set the commands that fit
#: on DBT validation volumes accept: one case (a CC and an ML/MLO volume with a lesion),
#: 0.8 mm pixels, 3 mm slices, 9 projections over 30 degrees.
TINY_DBT_SET_ARGS: Final = ("--cases", "1", "--profile", "test", "--dbt-spacing-mm", "0.8",
                            "--dbt-slice-mm", "3", "--arc-deg", "30", "--projections", "9",
                            "--workers", "1", "--normal-share", "0", "--split", "validation")


def tiny_dbt_set(out: Path, seed: int = 5) -> Path:
    """Generate :data:`TINY_DBT_SET_ARGS`'s set into ``out`` with the ``galacto`` CLI (a
    child process) and return ``out``; fails the test with the command's stderr."""
    r = subprocess.run([sys.executable, "-m", "serving.cli", "synth", "--dbt", "--out",
                        str(out), "--seed", str(seed), *TINY_DBT_SET_ARGS],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    return out
