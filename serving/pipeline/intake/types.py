"""The intake's results and tables: :class:`ImageHeader`, :class:`Image`, the accepted SOP
classes, the transfer syntaxes it decodes, the mammography view codes.

Conventions (see :mod:`serving.pipeline.intake`): arrays are ``(rows, cols)``; spacing is
``(row spacing, column spacing)`` in mm.
"""


from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from serving.pipeline.intake.syntaxes import (
    HTJ2K_SYNTAXES,
    J2K_SYNTAXES,
    JPEG_LS_SYNTAXES,
    JPEG_PROCESS_SYNTAXES,
    NATIVE_SYNTAXES,
    RLE_SYNTAXES,
)

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

#: Transfer syntaxes the intake decodes (a decoder plugin must also be installed): the groups
#: of :mod:`serving.pipeline.intake.syntaxes`.
SUPPORTED_TRANSFER_SYNTAXES: Final[frozenset[str]] = frozenset(
    NATIVE_SYNTAXES + JPEG_PROCESS_SYNTAXES + JPEG_LS_SYNTAXES + J2K_SYNTAXES + HTJ2K_SYNTAXES
    + RLE_SYNTAXES
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
        return ImageHeader(**header_fields(self))


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
            :mod:`serving.pipeline.intake.pixel_semantics` for every attribute involved and the
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


def header_fields(obj: ImageHeader) -> dict[str, Any]:
    """The :class:`ImageHeader` fields of ``obj`` as a dict (shallow)."""
    return {f.name: getattr(obj, f.name) for f in fields(ImageHeader)}

