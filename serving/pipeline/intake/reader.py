"""The intake's entry points: :func:`read_header`, :func:`read_image` and
:func:`read_instance` (one guarded parse, the header checked before any pixel is decoded, then
decoding and the pixel semantics).
"""


from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
)

from serving.pipeline.errors import (
    IntakeError,
)
from serving.pipeline.intake.codestream import (
    check_frame_header,
    codestream_bits,
)
from serving.pipeline.intake.decode import decode_j2k_reduced, decode_stored, reduction
from serving.pipeline.intake.header import read_header_plan
from serving.pipeline.intake.parse import (
    DEFAULT_MAX_PIXELS,
    DicomSource,
    guard,
    header_of,
    parsed,
)
from serving.pipeline.intake.pixel_semantics import (
    apply_plan,
    settle_stored_bits,
)
from serving.pipeline.intake.syntaxes import J2K_UIDS, JPEG_UIDS
from serving.pipeline.intake.types import (
    Image,
    ImageHeader,
    header_fields,
)

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
        header, _ = read_header_plan(
            ds, max_pixels=max_pixels, allow_missing_spacing=allow_missing_spacing,
            load_luts=False,
        )
        return header


@dataclass(frozen=True, eq=False)
class Instance:
    """One parse of an instance: the checked, decoded :class:`Image` and the header data set
    it came from (without Pixel Data: see :func:`serving.pipeline.intake.parse.header_of`),
    which the DICOM results copy patient, study and reference attributes from."""

    image: Image
    dataset: Dataset


class ReadOptions(TypedDict, total=False):
    """The keyword options of :func:`read_image` and :func:`read_instance` (described at
    :func:`read_image`; defaults those of :func:`read_instance`)."""

    max_pixels: int
    allow_missing_spacing: bool
    reduce_to_spacing_mm: float | None


def read_image(source: DicomSource, **options: Unpack[ReadOptions]) -> Image:
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
    return read_instance(source, **options).image


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
    header, plan = read_header_plan(
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
    fields = header_fields(header)
    fields.update(value_range=value_range, warnings=header.warnings + tuple(notes))
    return Image(**fields, pixels=pixels, decode_scale=scale, image_area=area)


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

