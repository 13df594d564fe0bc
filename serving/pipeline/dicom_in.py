"""DICOM intake: bytes, a path, a binary file object or a pydicom ``Dataset`` -> :class:`Image`.

The one place where the service looks at a DICOM object. It accepts a single-frame grayscale
image from a mammography-like SOP class (MG, DX, CR, Secondary Capture), checks the header
*before* decoding any pixels, decodes the pixel data with pydicom's decoders (and the
pylibjpeg / pyjpegls plugins for compressed transfer syntaxes) and returns one frozen
:class:`Image`: float32 pixels where larger means more attenuation (contrast is bright), the
pixel spacing in mm and the attribute it came from, laterality, view, patient orientation and
the identifying UIDs.

Every refusal is a subclass of :class:`serving.pipeline.errors.IntakeError` with a stable
``code``; nothing else escapes for problems in the object itself (pydicom and plugin failures are
wrapped, cause chained). Only I/O errors opening a *path* you passed (``OSError``) and a source
of the wrong Python type (``TypeError``) are raised as such.

Conventions:

- Arrays are ``(rows, cols)``: axis 0 runs down the rows (DICOM "row direction" is along a
  row, i.e. across columns), ``pixels[r, c]`` is the pixel in row ``r``, column ``c``, as stored.
  Nothing is flipped or rotated here; :attr:`ImageHeader.patient_orientation` says which way
  rows and columns run.
- Spacing is ``(row spacing, column spacing)`` in mm, i.e. the distance between the centers of
  adjacent rows, then of adjacent columns (DICOM PixelSpacing order).

This module never imports torch, monai or ``training``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any, Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from serving.pipeline.codestream import (
    J2K_UIDS,
    JPEG_UIDS,
    check_frame_header,
    codestream_bits,
)
from serving.pipeline.decode import decode_j2k_reduced, decode_stored, reduction
from serving.pipeline.dicom_parse import (
    DEFAULT_MAX_PIXELS,
    DicomSource,
    guard,
    header_of,
    parsed,
)
from serving.pipeline.dicom_values import as_float as _as_float
from serving.pipeline.dicom_values import as_int as _as_int
from serving.pipeline.dicom_values import attr as _attr
from serving.pipeline.dicom_values import get as _get
from serving.pipeline.dicom_values import text as _text
from serving.pipeline.dicom_values import try_int as _try_int
from serving.pipeline.errors import (
    ABSENT,
    ColorImageError,
    Found,
    ImageTooLargeError,
    IntakeError,
    InvalidHeaderError,
    InvalidSpacingError,
    MissingSpacingError,
    MultiFrameError,
    NoPixelDataError,
    UnsupportedPhotometricError,
    UnsupportedSopClassError,
    UnsupportedTransferSyntaxError,
)
from serving.pipeline.pixel_semantics import PixelPlan, apply_plan, plan_pixels, settle_stored_bits

__all__ = [
    "ACCEPTED_SOP_CLASSES",
    "DEFAULT_MAX_PIXELS",
    "MAX_SPACING_MM",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "VIEW_CODES",
    "VIEW_POSITIONS",
    "DicomSource",
    "Image",
    "ImageHeader",
    "Instance",
    "Laterality",
    "SpacingSource",
    "read_header",
    "read_image",
    "read_instance",
]

# --------------------------------------------------------------------------------------------
# Public constants and types
# --------------------------------------------------------------------------------------------

#: Largest accepted pixel spacing, mm (anything coarser is not a mammography detector).
MAX_SPACING_MM: Final = 10.0

Laterality: TypeAlias = Literal["L", "R", "U"]
SpacingSource: TypeAlias = Literal[
    "PixelSpacing",
    "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor",
    "ImagerPixelSpacing",
    "none",
]

#: Accepted SOP classes (UID -> short name). Single-frame grayscale only, whatever the class.
ACCEPTED_SOP_CLASSES: Final[dict[str, str]] = {
    "1.2.840.10008.5.1.4.1.1.1.2": "MG For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "MG For Processing",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX For Processing",
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture",
}

#: Transfer syntaxes the intake decodes (a decoder plugin must also be installed).
SUPPORTED_TRANSFER_SYNTAXES: Final[frozenset[str]] = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        JPEGBaseline8Bit,
        JPEGExtended12Bit,
        JPEGLossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEGLSNearLossless,
        JPEG2000Lossless,
        JPEG2000,
        HTJ2KLossless,
        HTJ2KLosslessRPCL,
        HTJ2K,
        RLELossless,
    }
)

#: ViewCodeSequence code value -> ViewPosition string, CID 4014 "View for Mammography":
#: SNOMED CT (SCT) codes, the older SNOMED RT (SRT) codes and the deprecated Y-X177x codes.
VIEW_CODES: Final[dict[str, str]] = {
    "399260004": "ML", "R-10224": "ML",  # medio-lateral
    "399368009": "MLO", "R-10226": "MLO",  # medio-lateral oblique
    "399352003": "LM", "R-10228": "LM",  # latero-medial
    "399099002": "LMO", "R-10230": "LMO",  # latero-medial oblique
    "399162004": "CC", "R-10242": "CC",  # cranio-caudal
    "399196006": "FB", "R-10244": "FB",  # caudo-cranial (from below)
    "399188001": "SIO", "R-102D0": "SIO",  # superolateral to inferomedial oblique
    "441555000": "ISO", "R-40AAA": "ISO",  # inferomedial to superolateral oblique
    "399192008": "XCCL", "R-1024A": "XCCL", "Y-X1770": "XCCL",  # cranio-caudal exagg. laterally
    "399101009": "XCCM", "R-1024B": "XCCM", "Y-X1771": "XCCM",  # cranio-caudal exagg. medially
}  # fmt: skip

#: ViewPosition (0018,5101) values taken as a view when there is no usable ViewCodeSequence.
VIEW_POSITIONS: Final[frozenset[str]] = frozenset(set(VIEW_CODES.values()))

_COLOR_PHOTOMETRICS: Final = frozenset(
    {"RGB", "ARGB", "CMYK", "HSV", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422",
     "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT"}
)  # fmt: skip
_MONOCHROME: Final = frozenset({"MONOCHROME1", "MONOCHROME2"})
_ORIENTATION_VALUE: Final = re.compile(r"^[APRLHF]{1,3}$")
_SPACING_EXPECTED: Final = (
    f"two finite numbers in (0, {MAX_SPACING_MM:g}] mm (row spacing, column spacing)"
)
_SPACING_MISSING: Final = "PixelSpacing (0028,0030) or ImagerPixelSpacing (0018,1164)"


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ImageHeader:
    """Everything the intake reads from a DICOM header, checked, without the pixels.

    Attributes:
        rows: Rows (0028,0010), number of pixel rows (height), >= 1.
        cols: Columns (0028,0011), number of pixel columns (width), >= 1.
        bits_allocated: BitsAllocated (0028,0100), 8 or 16.
        bits_stored: BitsStored (0028,0101), 8..16 and <= ``bits_allocated``.
        high_bit: HighBit (0028,0102), always ``bits_stored - 1``.
        pixel_representation: PixelRepresentation (0028,0103): 0 unsigned, 1 two's complement.
        photometric_interpretation: as found, ``"MONOCHROME1"`` (bright = low attenuation,
            inverted by the intake) or ``"MONOCHROME2"``.
        rescale_slope: RescaleSlope (0028,1053) applied to stored values (1.0 when absent, or
            when a Modality LUT Sequence (0028,3000) is applied instead).
        rescale_intercept: RescaleIntercept (0028,1052) (0.0 when absent or not applied).
        value_range: ``(min, max)`` that :attr:`Image.pixels` can take: the BitsStored /
            PixelRepresentation range after the Modality LUT (``[0, 2**bits - 1]`` for a
            Modality LUT Sequence), and when inverted (see :attr:`Image.pixels`)
            ``(0, max - min)``. Use it to normalize, not the observed min/max.
        window_center: first WindowCenter (0028,1050) value, a display hint only (not applied),
            in rescaled units; ``None`` when absent or unreadable.
        window_width: first WindowWidth (0028,1051) value, display hint only; or ``None``.
        spacing_mm: ``(row spacing, column spacing)`` in mm at the patient (or at the detector
            when only ImagerPixelSpacing was available, see ``spacing_source``); ``None`` only
            when the caller allowed missing spacing.
        spacing_source: where ``spacing_mm`` came from: ``"PixelSpacing"``,
            ``"ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"``,
            ``"ImagerPixelSpacing"`` or ``"none"``.
        laterality: ``"L"``/``"R"`` from ImageLaterality (0020,0062), else Laterality
            (0020,0060); ``"U"`` when unknown (absent, ``U``, ``B`` or anything else), which
            is always noted in ``warnings``.
        view: mammography view (``"CC"``, ``"MLO"``, ``"ML"``, ``"LM"``, ``"LMO"``, ``"FB"``,
            ``"SIO"``, ``"ISO"``, ``"XCCL"``, ``"XCCM"``) from ViewCodeSequence (0054,0220),
            else ViewPosition (0018,5101); ``None`` if neither gives a known view.
        view_modifiers: code meanings (or values) of the ViewModifierCodeSequence inside the
            first ViewCodeSequence item, e.g. ``("Magnification",)``; usually empty.
        patient_orientation: PatientOrientation (0020,0020) as ``(row direction, column
            direction)``, e.g. ``("A", "R")``: the patient direction along a row (increasing
            column index) and along a column (increasing row index). ``None`` if absent or
            malformed (noted in ``warnings``).
        transfer_syntax_uid: the transfer syntax of the pixel data as read.
        transfer_syntax_name: its name, e.g. ``"JPEG 2000 Image Compression (Lossless Only)"``.
        sop_class_uid: SOPClassUID (0008,0016), or MediaStorageSOPClassUID from the file meta
            when only that is present; ``None`` when both are absent (noted in ``warnings``).
        sop_class_name: short name of the accepted class (e.g. ``"MG For Presentation"``).
        modality: Modality (0008,0060), e.g. ``"MG"``.
        presentation_intent: PresentationIntentType (0008,0068), ``"FOR PRESENTATION"`` or
            ``"FOR PROCESSING"``, as found; ``None`` when absent.
        study_instance_uid: StudyInstanceUID (0020,000D).
        series_instance_uid: SeriesInstanceUID (0020,000E).
        sop_instance_uid: SOPInstanceUID (0008,0018).
        patient_id: PatientID (0010,0020).
        accession_number: AccessionNumber (0008,0050).
        manufacturer: Manufacturer (0008,0070).
        positioner_primary_angle: PositionerPrimaryAngle (0018,1510), degrees: the C-arm
            rotation from the cranio-caudal position (0 for CC, about 45-60 for MLO, 90 for
            ML; the sign depends on the side); ``None`` when absent or unreadable.
        warnings: human-readable notes about tolerated problems and about every attribute
            that changed the pixels' polarity, range or "not image" pixels (each names the
            attribute and what was assumed), in reading order.
    """

    rows: int
    cols: int
    bits_allocated: int
    bits_stored: int
    high_bit: int
    pixel_representation: int
    photometric_interpretation: str
    rescale_slope: float
    rescale_intercept: float
    value_range: tuple[float, float]
    window_center: float | None
    window_width: float | None
    spacing_mm: tuple[float, float] | None
    spacing_source: SpacingSource
    laterality: Laterality
    view: str | None
    view_modifiers: tuple[str, ...]
    patient_orientation: tuple[str, str] | None
    transfer_syntax_uid: str
    transfer_syntax_name: str
    sop_class_uid: str | None
    sop_class_name: str | None
    modality: str | None
    presentation_intent: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None
    patient_id: str | None
    accession_number: str | None
    manufacturer: str | None
    warnings: tuple[str, ...]
    positioner_primary_angle: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return (self.rows, self.cols)

    @property
    def header(self) -> ImageHeader:
        """The header fields alone (a plain :class:`ImageHeader`, also for an :class:`Image`)."""
        return ImageHeader(**_header_fields(self))


@dataclass(frozen=True, kw_only=True, eq=False)
class Image(ImageHeader):
    """A decoded, checked galactogram image: every :class:`ImageHeader` field plus the pixels.

    Attributes:
        pixels: float32 array of shape ``(rows, cols)``, read-only. Stored values with the
            Modality LUT applied (the Modality LUT Sequence, else
            ``stored * rescale_slope + rescale_intercept``) and inverted as
            ``max_possible - value`` (``max_possible``: the largest value the Modality LUT can
            give for BitsStored/PixelRepresentation) when Presentation LUT Shape is INVERSE
            or, without it, Photometric Interpretation MONOCHROME1; so larger always means
            more attenuation (contrast-filled ducts are bright) and values lie in
            :attr:`ImageHeader.value_range`. Padding (PixelPaddingValue / RangeLimit) and
            pixels outside a display shutter hold the lowest value of the other pixels (the
            image's own air). No VOI LUT or window is applied. See
            :mod:`serving.pipeline.pixel_semantics` for every attribute involved and the
            rule when they contradict each other.
            Shape ``(ceil(rows / decode_scale), ceil(cols / decode_scale))``.
        decode_scale: stored pixels per ``pixels`` element along each axis: 1 normally;
            2, 4 or 8 when a JPEG 2000 image was decoded at a reduced resolution level
            (``read_image(..., reduce_to_spacing_mm=...)``); ``pixels[i, j]`` then covers
            stored pixels ``[i*s, (i+1)*s) x [j*s, (j+1)*s)``.
        image_area: ``(row0, row1, col0, col1)`` in ``pixels`` indices, end exclusive: the
            bounding box of the pixels that are image (not padding, inside the shutters);
            ``None`` when every pixel is. Preprocessing keeps its crop inside it.

    Equality compares the header fields, the pixel values and the image area; images are
    not hashable. ``read_image(x).header`` can differ from ``read_header(x)`` where only the
    pixel data tell: ``value_range`` when a codestream is wider than BitsStored, and the
    warnings about padding, shutters, stored bits and a polarity decided from the image.
    """

    pixels: npt.NDArray[np.float32]
    decode_scale: int = 1
    image_area: tuple[int, int, int, int] | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Image):
            return NotImplemented
        return (
            self.header == other.header
            and self.image_area == other.image_area
            and bool(np.array_equal(self.pixels, other.pixels))
        )


def _header_fields(obj: ImageHeader) -> dict[str, Any]:
    """The :class:`ImageHeader` fields of ``obj`` as a dict (shallow)."""
    return {f.name: getattr(obj, f.name) for f in fields(ImageHeader)}


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def read_header(
    source: DicomSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_missing_spacing: bool = False,
) -> ImageHeader:
    """Read and check the header of a DICOM image without decoding (or loading) its pixels.

    Applies every check of :func:`read_image` that needs no pixel data: SOP class, transfer
    syntax (and that a decoder is installed), presence of Pixel Data, grayscale single frame,
    pixel format, ``max_pixels``, rescale, spacing. Pixel data longer than 4 KiB is not read
    from a path, bytes or seekable file object.

    Args:
        source: DICOM Part 10 bytes (or a preamble-less data set), a path, a binary file object
            positioned at the start of the object, or a pydicom ``Dataset``.
        max_pixels: largest accepted Rows x Columns.
        allow_missing_spacing: accept objects without a usable spacing (``spacing_mm`` is then
            ``None`` and ``spacing_source`` ``"none"``) instead of raising.

    Returns:
        The checked :class:`ImageHeader`.

    Raises:
        IntakeError: a subclass naming the attribute, value and expectation of the first
            problem found.
        OSError: ``source`` is a path that cannot be opened or read.
        TypeError: ``source`` is none of the accepted types.
    """
    with parsed(source, header_only=True, max_pixels=max_pixels) as ds:
        header, _ = _read_header(
            ds, max_pixels=max_pixels, allow_missing_spacing=allow_missing_spacing,
            load_luts=False,
        )
        return header


@dataclass(frozen=True, eq=False)
class Instance:
    """One parse of an instance: the checked, decoded :class:`Image` and the header data set
    it came from (without Pixel Data: see :func:`serving.pipeline.dicom_parse.header_of`),
    which the DICOM results copy patient, study and reference attributes from."""

    image: Image
    dataset: Dataset


def read_image(
    source: DicomSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_missing_spacing: bool = False,
    reduce_to_spacing_mm: float | None = None,
) -> Image:
    """Read, check and decode a single-frame grayscale DICOM image.

    The header is checked first (see :func:`read_header`; Rows x Columns against
    ``max_pixels`` before any decoding), then the pixel data is decoded, rescaled and (for
    MONOCHROME1) inverted; see :attr:`Image.pixels`.

    Args:
        source: DICOM Part 10 bytes (or a preamble-less data set), a path, a binary file object
            positioned at the start of the object, or a pydicom ``Dataset`` (not modified).
        max_pixels: largest accepted Rows x Columns.
        allow_missing_spacing: accept objects without a usable spacing (``spacing_mm`` is then
            ``None`` and ``spacing_source`` ``"none"``) instead of raising.
        reduce_to_spacing_mm: when given and the image is JPEG 2000, decode only the
            resolution levels needed for this spacing (mm): the largest power-of-two
            reduction whose spacing stays at or below it (at most 8x). Much faster for large
            images; see :attr:`Image.decode_scale`. Other transfer syntaxes ignore it.

    Returns:
        The decoded :class:`Image`.

    Raises:
        IntakeError: a subclass naming the attribute, value and expectation of the first
            problem found (decoder failures are chained as ``__cause__``).
        OSError: ``source`` is a path that cannot be opened or read.
        TypeError: ``source`` is none of the accepted types.
    """
    return read_instance(source, max_pixels=max_pixels,
                         allow_missing_spacing=allow_missing_spacing,
                         reduce_to_spacing_mm=reduce_to_spacing_mm).image


def read_instance(
    source: DicomSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_missing_spacing: bool = False,
    reduce_to_spacing_mm: float | None = None,
) -> Instance:
    """:func:`read_image`, also keeping the header data set: the one parse of an untrusted
    instance that a service needs (the image to analyse, the header to build results from).

    Arguments, checks and errors are those of :func:`read_image`. An :class:`IntakeError`
    raised after the object was parsed carries its header as :attr:`IntakeError.dataset`
    (``None`` when the bytes could not be parsed), so a refused instance can be named without
    parsing it again.
    """
    with parsed(source, header_only=False, max_pixels=max_pixels) as ds:
        try:
            with guard():
                image = _decode_image(ds, max_pixels=max_pixels,
                                      allow_missing_spacing=allow_missing_spacing,
                                      reduce_to_spacing_mm=reduce_to_spacing_mm)
        except IntakeError as exc:
            exc.dataset = _header_or_none(ds)
            raise
        return Instance(image=image, dataset=header_of(ds))


def _header_or_none(ds: Dataset) -> Dataset | None:
    """:func:`header_of` ``ds``, or None when even that fails (e.g. the element budget is
    spent: a flood)."""
    try:
        with guard():
            return header_of(ds)
    except IntakeError:
        return None


def _decode_image(ds: Dataset, *, max_pixels: int, allow_missing_spacing: bool,
                  reduce_to_spacing_mm: float | None) -> Image:
    """Check the header of parsed ``ds`` and decode its pixels (see :func:`read_image`)."""
    header, plan = _read_header(
        ds, max_pixels=max_pixels, allow_missing_spacing=allow_missing_spacing,
        load_luts=True,
    )
    check_frame_header(ds, header.transfer_syntax_uid, header.rows, header.cols)
    scale = reduction(header, reduce_to_spacing_mm)
    stored = decode_j2k_reduced(ds, header, scale) if scale > 1 else None
    if stored is None:
        scale = 1
        stored = decode_stored(ds, header)
    notes: list[str] = []
    stored, bits = _settle_stored_bits(ds, header, stored, notes)
    pixels, value_range, area = apply_plan(
        stored, plan, ds, bits_stored=bits,
        pixel_representation=header.pixel_representation, scale=scale, notes=notes,
    )
    fields = _header_fields(header)
    fields.update(value_range=value_range, warnings=header.warnings + tuple(notes))
    return Image(**fields, pixels=pixels, decode_scale=scale, image_area=area)


# --------------------------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------------------------


def _read_header(
    ds: Dataset, *, max_pixels: int, allow_missing_spacing: bool, load_luts: bool
) -> tuple[ImageHeader, PixelPlan]:
    """Check ``ds``'s header and build the :class:`ImageHeader` and the plan for its pixels
    (first problem raises). ``load_luts``: read LUT data (not in :func:`read_header`)."""
    notes: list[str] = []
    sop_class_uid = _sop_class(ds, notes)
    transfer_syntax = _transfer_syntax(ds, notes)
    _require_pixel_data(ds)
    photometric = _photometric(ds, notes)
    _single_frame(ds)
    rows, cols = _size(ds, max_pixels)
    bits_allocated, bits_stored, high_bit, pixel_representation = _bits(ds, notes)
    slope, intercept = _rescale(ds)
    plan = plan_pixels(
        ds, photometric=photometric, bits_stored=bits_stored,
        pixel_representation=pixel_representation, slope=slope, intercept=intercept,
        sop_class_uid=sop_class_uid, notes=notes, load_luts=load_luts,
    )
    spacing, spacing_source = _spacing(ds, notes, allow_missing=allow_missing_spacing)
    laterality = _laterality(ds, notes)
    view, view_modifiers = _view(ds, notes)
    orientation = _patient_orientation(ds, notes)
    window_center = _optional_first_float(ds, "WindowCenter", notes)
    window_width = _optional_first_float(ds, "WindowWidth", notes)
    header = ImageHeader(
        rows=rows,
        cols=cols,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        high_bit=high_bit,
        pixel_representation=pixel_representation,
        photometric_interpretation=photometric,
        rescale_slope=plan.slope,
        rescale_intercept=plan.intercept,
        value_range=plan.value_range(bits_stored, pixel_representation),
        window_center=window_center,
        window_width=window_width,
        spacing_mm=spacing,
        spacing_source=spacing_source,
        laterality=laterality,
        view=view,
        view_modifiers=view_modifiers,
        patient_orientation=orientation,
        transfer_syntax_uid=str(transfer_syntax),
        transfer_syntax_name=_uid_name(transfer_syntax),
        sop_class_uid=sop_class_uid,
        sop_class_name=ACCEPTED_SOP_CLASSES.get(sop_class_uid) if sop_class_uid else None,
        modality=_optional_text(ds, "Modality", notes),
        presentation_intent=_optional_text(ds, "PresentationIntentType", notes),
        study_instance_uid=_optional_text(ds, "StudyInstanceUID", notes),
        series_instance_uid=_optional_text(ds, "SeriesInstanceUID", notes),
        sop_instance_uid=_optional_text(ds, "SOPInstanceUID", notes),
        patient_id=_optional_text(ds, "PatientID", notes),
        accession_number=_optional_text(ds, "AccessionNumber", notes),
        manufacturer=_optional_text(ds, "Manufacturer", notes),
        positioner_primary_angle=_optional_first_float(ds, "PositionerPrimaryAngle", notes),
        warnings=tuple(notes),
    )
    return header, plan


# ---- element access ------------------------------------------------------------------------


def _required_int(ds: Dataset, keyword: str, expected: str) -> int:
    """Integer value of a type 1 attribute; :class:`InvalidHeaderError` if missing/invalid."""
    value = _get(ds, keyword)
    if value is ABSENT:
        raise InvalidHeaderError(
            "missing required attribute",
            attribute=_attr(keyword),
            value=ABSENT,
            expected=expected,
        )
    try:
        return _as_int(value)
    except ValueError as exc:
        raise InvalidHeaderError(
            "not an integer", attribute=_attr(keyword), value=value, expected=expected
        ) from exc


def _optional_text(ds: Dataset, keyword: str, notes: list[str]) -> str | None:
    """Stripped string value of ``keyword``, ``None`` when absent; unreadable -> warning."""
    try:
        value = _get(ds, keyword)
    except InvalidHeaderError as exc:
        notes.append(f"ignored {exc}")
        return None
    if value is ABSENT:
        return None
    return _text(value) or None


def _optional_first_float(ds: Dataset, keyword: str, notes: list[str]) -> float | None:
    """First value of a numeric multi-valued attribute (e.g. WindowCenter), ``None`` if absent
    or unusable (with a warning)."""
    try:
        value = _get(ds, keyword)
        if value is ABSENT:
            return None
        first = value[0] if isinstance(value, MultiValue | list | tuple) else value
        number = _as_float(first)
    except (InvalidHeaderError, ValueError, TypeError):
        notes.append(f"ignored unreadable {_attr(keyword)}")
        return None
    if not math.isfinite(number):
        notes.append(f"ignored non-finite {_attr(keyword)} = {number!r}")
        return None
    return number


def _uid_name(uid: UID) -> str:
    """Registered name of ``uid``, or ``"unknown"``."""
    name = uid.name
    return "unknown" if name == str(uid) else name


# ---- object-level checks -------------------------------------------------------------------


def _file_meta_value(ds: Dataset, keyword: str) -> str | None:
    """Stripped value of a file meta attribute, or ``None``."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return None
    value = _get(meta, keyword)
    return None if value is ABSENT else _text(value) or None


def _sop_class(ds: Dataset, notes: list[str]) -> str | None:
    """SOPClassUID (or MediaStorageSOPClassUID), checked against :data:`ACCEPTED_SOP_CLASSES`."""
    value = _get(ds, "SOPClassUID")
    uid = None if value is ABSENT else _text(value) or None
    if uid is None:
        uid = _file_meta_value(ds, "MediaStorageSOPClassUID")
        if uid is None:
            notes.append("SOPClassUID (0008,0016) is absent; accepted as the image is usable")
            return None
        notes.append("SOPClassUID (0008,0016) is absent; used MediaStorageSOPClassUID")
    if uid not in ACCEPTED_SOP_CLASSES:
        raise UnsupportedSopClassError(
            f"unsupported SOP class ({_uid_name(UID(uid))})",
            attribute=_attr("SOPClassUID"),
            value=uid,
            expected="MG, DX or CR image storage, or single-frame grayscale Secondary Capture",
        )
    return uid


def _transfer_syntax(ds: Dataset, notes: list[str]) -> UID:
    """The transfer syntax of the pixel data; must be supported and have a decoder installed.

    A Dataset without TransferSyntaxUID (built in memory, or read without file meta) is taken
    to be in the encoding it was read with, or Explicit VR Little Endian (with a warning);
    encapsulated pixel data without a transfer syntax cannot be decoded.
    """
    text = _file_meta_value(ds, "TransferSyntaxUID")
    if text is None:
        return _guess_transfer_syntax(ds, notes)
    uid = UID(text)
    if uid not in SUPPORTED_TRANSFER_SYNTAXES:
        raise UnsupportedTransferSyntaxError(
            f"unsupported transfer syntax ({_uid_name(uid)})",
            attribute=_attr("TransferSyntaxUID"),
            value=str(uid),
            expected="uncompressed, deflated, JPEG lossless/baseline/extended, JPEG-LS, "
            "JPEG 2000, HTJ2K or RLE Lossless",
        )
    if not get_decoder(uid).is_available:
        raise UnsupportedTransferSyntaxError(
            f"no decoder plugin is installed for {_uid_name(uid)}",
            attribute=_attr("TransferSyntaxUID"),
            value=str(uid),
            expected="a transfer syntax with an installed decoder (pip install 'galacto[serve]')",
        )
    return uid


def _guess_transfer_syntax(ds: Dataset, notes: list[str]) -> UID:
    """Transfer syntax for a data set without TransferSyntaxUID (see :func:`_transfer_syntax`)."""
    if _looks_encapsulated(ds):
        raise UnsupportedTransferSyntaxError(
            "compressed pixel data without a transfer syntax",
            attribute=_attr("TransferSyntaxUID"),
            value=ABSENT,
            expected="the TransferSyntaxUID of the compressed pixel data",
        )
    implicit, little = ds.original_encoding
    if implicit is None:
        uid = ExplicitVRLittleEndian
    elif not little:
        uid = ExplicitVRBigEndian
    else:
        uid = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    notes.append(f"TransferSyntaxUID (0002,0010) is absent; assumed {uid.name}")
    return uid


def _looks_encapsulated(ds: Dataset) -> bool:
    """True if the Pixel Data value starts with an item tag (encapsulated format)."""
    if "PixelData" not in ds:
        return False
    value = ds["PixelData"].value
    return isinstance(value, bytes) and value[:4] == b"\xfe\xff\x00\xe0"


def _require_pixel_data(ds: Dataset) -> None:
    """:class:`NoPixelDataError` unless integer Pixel Data (7FE0,0010) is present."""
    if "PixelData" in ds:
        return
    others = [kw for kw in ("FloatPixelData", "DoubleFloatPixelData") if kw in ds]
    raise NoPixelDataError(
        "no pixel data" + (f" (only {others[0]})" if others else ""),
        attribute=_attr("PixelData"),
        value=ABSENT,
        expected="one frame of integer pixel data",
    )


def _photometric(ds: Dataset, notes: list[str]) -> str:
    """MONOCHROME1/2 with SamplesPerPixel 1, else a color/photometric/header error."""
    value = _get(ds, "PhotometricInterpretation")
    if value is ABSENT:
        raise InvalidHeaderError(
            "missing required attribute",
            attribute=_attr("PhotometricInterpretation"),
            value=ABSENT,
            expected="MONOCHROME1 or MONOCHROME2",
        )
    photometric = _text(value)
    if photometric.upper() in _COLOR_PHOTOMETRICS or photometric.upper().startswith("YBR"):
        raise ColorImageError(
            "color images are not supported",
            attribute=_attr("PhotometricInterpretation"),
            value=photometric,
            expected="MONOCHROME1 or MONOCHROME2",
        )
    samples = _get(ds, "SamplesPerPixel")
    if samples is ABSENT:
        notes.append("SamplesPerPixel (0028,0002) is absent; assumed 1")
    elif _try_int(samples) != 1:
        raise ColorImageError(
            "only single-sample (grayscale) images are supported",
            attribute=_attr("SamplesPerPixel"),
            value=samples,
            expected="1",
        )
    if photometric not in _MONOCHROME:
        raise UnsupportedPhotometricError(
            "unsupported photometric interpretation",
            attribute=_attr("PhotometricInterpretation"),
            value=photometric,
            expected="MONOCHROME1 or MONOCHROME2",
        )
    return photometric


def _single_frame(ds: Dataset) -> None:
    """:class:`MultiFrameError` if NumberOfFrames > 1 (absent means 1)."""
    value = _get(ds, "NumberOfFrames")
    if value is ABSENT:
        return
    frames = _try_int(value)
    if frames is None or frames < 1:
        raise InvalidHeaderError(
            "invalid number of frames",
            attribute=_attr("NumberOfFrames"),
            value=value,
            expected="a positive integer (1)",
        )
    if frames > 1:
        raise MultiFrameError(
            "multi-frame images are not supported",
            attribute=_attr("NumberOfFrames"),
            value=frames,
            expected="1",
        )


def _size(ds: Dataset, max_pixels: int) -> tuple[int, int]:
    """``(rows, cols)``, both >= 1 and with ``rows * cols <= max_pixels``."""
    rows = _required_int(ds, "Rows", "a positive integer")
    cols = _required_int(ds, "Columns", "a positive integer")
    for keyword, number in (("Rows", rows), ("Columns", cols)):
        if number < 1:
            raise InvalidHeaderError(
                "empty image",
                attribute=_attr(keyword),
                value=number,
                expected="a positive integer",
            )
    if rows * cols > max_pixels:
        raise ImageTooLargeError(
            f"image too large ({rows * cols} pixels)",
            attribute=f"{_attr('Rows')} x {_attr('Columns')}",
            value=Found(f"{rows} x {cols}"),
            expected=f"at most {max_pixels} pixels",
        )
    return rows, cols


def _bits(ds: Dataset, notes: list[str]) -> tuple[int, int, int, int]:
    """``(bits_allocated, bits_stored, high_bit, pixel_representation)``, consistent."""
    allocated = _required_int(ds, "BitsAllocated", "8 or 16")
    if allocated not in (8, 16):
        raise InvalidHeaderError(
            "unsupported bits allocated",
            attribute=_attr("BitsAllocated"),
            value=allocated,
            expected="8 or 16",
        )
    stored = _required_int(ds, "BitsStored", f"8 to {allocated}")
    if not 8 <= stored <= allocated:
        raise InvalidHeaderError(
            "bits stored out of range" if stored < 8 else "bits stored exceed bits allocated",
            attribute=_attr("BitsStored"),
            value=stored,
            expected=f"8 to BitsAllocated ({allocated})",
        )
    representation = _required_int(ds, "PixelRepresentation", "0 (unsigned) or 1 (signed)")
    if representation not in (0, 1):
        raise InvalidHeaderError(
            "invalid pixel representation",
            attribute=_attr("PixelRepresentation"),
            value=representation,
            expected="0 (unsigned) or 1 (signed)",
        )
    high_bit_value = _get(ds, "HighBit")
    if high_bit_value is ABSENT:
        notes.append(f"HighBit (0028,0102) is absent; assumed {stored - 1}")
        return allocated, stored, stored - 1, representation
    high_bit = _try_int(high_bit_value)
    if high_bit != stored - 1:
        raise InvalidHeaderError(
            "high bit inconsistent with bits stored",
            attribute=_attr("HighBit"),
            value=high_bit_value,
            expected=f"BitsStored - 1 = {stored - 1}",
        )
    return allocated, stored, high_bit, representation


def _rescale(ds: Dataset) -> tuple[float, float]:
    """``(slope, intercept)`` of the Modality LUT; ``(1.0, 0.0)`` when absent."""
    result = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        value = _get(ds, keyword)
        try:
            number = default if value is ABSENT else _as_float(value)
        except ValueError as exc:
            raise InvalidHeaderError(
                "not a number",
                attribute=_attr(keyword),
                value=value,
                expected="one finite decimal number",
            ) from exc
        if not math.isfinite(number) or (keyword == "RescaleSlope" and number == 0.0):
            raise InvalidHeaderError(
                "invalid rescale",
                attribute=_attr(keyword),
                value=value,
                expected="a finite number" + (", not 0" if keyword == "RescaleSlope" else ""),
            )
        result.append(number)
    return result[0], result[1]


# ---- spacing -------------------------------------------------------------------------------


def _spacing_pair(ds: Dataset, keyword: str) -> tuple[object, tuple[float, float] | None]:
    """``(value as found or ABSENT, valid (row, col) spacing in mm or None)``."""
    try:
        value = _get(ds, keyword)
    except InvalidHeaderError as exc:
        return Found(str(exc.value)), None
    if value is ABSENT:
        return ABSENT, None
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    if len(items) != 2:
        return value, None
    try:
        pair = (_as_float(items[0]), _as_float(items[1]))
    except ValueError:
        return value, None
    return value, pair if all(_valid_spacing(v) for v in pair) else None


def _valid_spacing(value: float) -> bool:
    return math.isfinite(value) and 0.0 < value <= MAX_SPACING_MM


def _magnification(ds: Dataset, notes: list[str]) -> float | None:
    """A valid (finite, > 0) EstimatedRadiographicMagnificationFactor, else ``None``."""
    keyword = "EstimatedRadiographicMagnificationFactor"
    try:
        value = _get(ds, keyword)
        if value is ABSENT:
            return None
        factor = _as_float(value)
    except (InvalidHeaderError, ValueError):
        notes.append(f"ignored unreadable {_attr(keyword)}")
        return None
    if not (math.isfinite(factor) and factor > 0.0):
        notes.append(f"ignored invalid {_attr(keyword)} = {factor!r}; expected > 0")
        return None
    return factor


def _spacing(
    ds: Dataset, notes: list[str], *, allow_missing: bool
) -> tuple[tuple[float, float] | None, SpacingSource]:
    """Pixel spacing by precedence: PixelSpacing, ImagerPixelSpacing / magnification,
    ImagerPixelSpacing. Raises Missing/InvalidSpacingError unless ``allow_missing``.

    One rule for both encodings of the same geometry (PS3.3 10.7.1.3 and C.8.11.7): spacing
    at the detector is divided by EstimatedRadiographicMagnificationFactor, whether it came
    as ImagerPixelSpacing alone or as a PixelSpacing that merely repeats ImagerPixelSpacing
    without a PixelSpacingCalibrationType (vendors write either). A calibrated PixelSpacing
    (with PixelSpacingCalibrationType) or one that differs from ImagerPixelSpacing is taken
    as it is."""
    invalid: list[tuple[str, object]] = []
    found, pixel_spacing = _spacing_pair(ds, "PixelSpacing")
    found_imager, imager = _spacing_pair(ds, "ImagerPixelSpacing")
    if pixel_spacing is not None:
        if imager is not None and _detector_plane_copy(ds, pixel_spacing, imager):
            notes.append(f"{_attr('PixelSpacing')} equals {_attr('ImagerPixelSpacing')} and "
                         "is not calibrated (no PixelSpacingCalibrationType): taken as the "
                         "detector plane and corrected by the magnification factor")
            return _imager_spacing(ds, imager, notes)
        return pixel_spacing, "PixelSpacing"
    if found is not ABSENT:
        invalid.append(("PixelSpacing", found))
    if imager is None and found_imager is not ABSENT:
        invalid.append(("ImagerPixelSpacing", found_imager))
    for keyword, value in invalid:
        notes.append(f"ignored invalid {_attr(keyword)} = {value!r}; expected {_SPACING_EXPECTED}")
    if imager is not None:
        return _imager_spacing(ds, imager, notes)
    if allow_missing:
        notes.append("no usable pixel spacing; spacing_mm is None")
        return None, "none"
    if invalid:
        keyword, value = invalid[0]
        raise InvalidSpacingError(
            "invalid pixel spacing",
            attribute=_attr(keyword),
            value=value,
            expected=_SPACING_EXPECTED,
        )
    raise MissingSpacingError(
        "no pixel spacing", attribute=_SPACING_MISSING, value=ABSENT, expected=_SPACING_EXPECTED
    )


def _detector_plane_copy(ds: Dataset, pixel_spacing: tuple[float, float],
                         imager: tuple[float, float]) -> bool:
    """Whether PixelSpacing only repeats ImagerPixelSpacing (within 0.1 %), uncalibrated, in an
    object that states a magnification factor to correct it with."""
    if "PixelSpacingCalibrationType" in ds and _text(ds.get("PixelSpacingCalibrationType")):
        return False
    if "EstimatedRadiographicMagnificationFactor" not in ds:
        return False
    return all(abs(p - i) <= 1e-3 * i for p, i in zip(pixel_spacing, imager, strict=True))


def _imager_spacing(
    ds: Dataset, imager: tuple[float, float], notes: list[str]
) -> tuple[tuple[float, float], SpacingSource]:
    """ImagerPixelSpacing, divided by the magnification factor when that is valid."""
    factor = _magnification(ds, notes)
    if factor is None:
        return imager, "ImagerPixelSpacing"
    corrected = (imager[0] / factor, imager[1] / factor)
    if not all(_valid_spacing(v) for v in corrected):
        notes.append(
            f"ignored EstimatedRadiographicMagnificationFactor {factor!r}: it gives spacing "
            f"{corrected!r}"
        )
        return imager, "ImagerPixelSpacing"
    return corrected, "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"


# ---- laterality, view, orientation ---------------------------------------------------------


def _laterality(ds: Dataset, notes: list[str]) -> Laterality:
    """L/R from ImageLaterality, else Laterality; ``"U"`` otherwise (see ImageHeader)."""
    image_lat = _optional_text(ds, "ImageLaterality", notes)
    series_lat = _optional_text(ds, "Laterality", notes)
    keyword, value = (
        ("ImageLaterality", image_lat) if image_lat is not None else ("Laterality", series_lat)
    )
    if value is None:
        notes.append(
            "laterality unknown: ImageLaterality (0020,0062) and Laterality (0020,0060) are absent"
        )
        return "U"
    normalized = value.upper()
    if normalized == "L":
        result: Laterality = "L"
    elif normalized == "R":
        result = "R"
    else:
        notes.append(f"laterality unknown: {_attr(keyword)} is {value!r}; expected L or R")
        return "U"
    if image_lat is not None and series_lat is not None and series_lat.upper() != normalized:
        notes.append(
            f"ImageLaterality {image_lat!r} differs from Laterality {series_lat!r}; "
            "used ImageLaterality"
        )
    return result


def _view(ds: Dataset, notes: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """``(view, modifiers)`` from ViewCodeSequence, else ViewPosition (see ImageHeader)."""
    coded, modifiers = _coded_view(ds, notes)
    position_text = _optional_text(ds, "ViewPosition", notes)
    position = position_text.upper() if position_text else None
    if position is not None and position not in VIEW_POSITIONS:
        notes.append(f"ignored unknown ViewPosition (0018,5101) {position_text!r}")
        position = None
    if coded is not None and position is not None and coded != position:
        notes.append(
            f"ViewCodeSequence says {coded} but ViewPosition says {position}; used ViewCodeSequence"
        )
    return (coded if coded is not None else position), modifiers


def _coded_view(ds: Dataset, notes: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """View and modifier meanings from the first ViewCodeSequence item."""
    try:
        sequence = _get(ds, "ViewCodeSequence")
        if sequence is ABSENT or not isinstance(sequence, DicomSequence):
            return None, ()
        item = sequence[0]
        code = _optional_text(item, "CodeValue", notes)
        modifiers = tuple(
            _optional_text(m, "CodeMeaning", notes) or _optional_text(m, "CodeValue", notes) or ""
            for m in (item.get("ViewModifierCodeSequence") or [])
        )
    except Exception:  # the view is optional: a malformed sequence only costs a warning
        notes.append("ignored unreadable ViewCodeSequence (0054,0220)")
        return None, ()
    view = VIEW_CODES.get(code or "")
    if view is None:
        meaning = _optional_text(item, "CodeMeaning", notes)
        notes.append(f"ignored unknown view code {code!r} ({meaning!r}) in ViewCodeSequence")
    return view, tuple(m for m in modifiers if m)


def _patient_orientation(ds: Dataset, notes: list[str]) -> tuple[str, str] | None:
    """PatientOrientation as ``(row direction, column direction)``, or ``None`` (warning)."""
    try:
        value = _get(ds, "PatientOrientation")
    except InvalidHeaderError:
        value = Found("unreadable")
    if value is ABSENT:
        notes.append("PatientOrientation (0020,0020) is absent")
        return None
    items = (
        [_text(v).upper() for v in value]
        if isinstance(value, MultiValue | list | tuple)
        else [_text(value).upper()]
    )
    if len(items) != 2 or not all(_ORIENTATION_VALUE.match(v) for v in items):
        notes.append(
            f"ignored malformed PatientOrientation (0020,0020) {value!r}; "
            "expected two values like A\\R"
        )
        return None
    return items[0], items[1]


# --------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------


def _settle_stored_bits(
    ds: Dataset, header: ImageHeader, stored: npt.NDArray[np.integer[Any]], notes: list[str]
) -> tuple[npt.NDArray[np.integer[Any]], int]:
    """Clear or keep the bits above HighBit (see :func:`pixel_semantics.settle_stored_bits`):
    ``(stored values, effective bits stored)``."""
    uid = header.transfer_syntax_uid
    codec = UID(uid).name
    overlay = any(
        ((group << 16) | 0x0102) in ds for group in range(0x6000, 0x6020, 2)
    )
    return settle_stored_bits(
        stored,
        bits_stored=header.bits_stored,
        pixel_representation=header.pixel_representation,
        encapsulated=uid in J2K_UIDS or uid in JPEG_UIDS,
        codestream_bits=codestream_bits(ds, uid),
        overlay_in_high_bits=overlay,
        codec=codec,
        notes=notes,
    )
