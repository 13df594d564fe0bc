"""Typed rejections of the DICOM intake (:mod:`serving.pipeline.dicom_in`).

Every way the intake can refuse an object is a subclass of :class:`IntakeError`, and the intake
never lets any other exception escape for problems in the object itself (pydicom and codec
plugin failures are wrapped, with the original exception chained as ``__cause__``). Adapters
therefore need exactly one ``except IntakeError`` and can map :attr:`IntakeError.code` to an HTTP
``detail`` code or a DIMSE status.

Each error carries:

- :attr:`~IntakeError.code`: a stable ``snake_case`` string, one per class (never reworded);
- :attr:`~IntakeError.attribute`: the DICOM keyword and tag at fault, e.g.
  ``"PhotometricInterpretation (0028,0004)"``, or ``None`` when no single attribute is at fault;
- :attr:`~IntakeError.value`: what was found, as ``repr`` truncated to 80 characters
  (``"absent"`` when the attribute is missing), or ``None``;
- :attr:`~IntakeError.expected`: what would have been accepted;
- a message (``str(error)``) that names all of the above.

This module depends on nothing but the standard library.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

#: Longest rendering of a found value, in characters.
MAX_VALUE_CHARS: Final = 80


class _Absent:
    """Marker for "the attribute is not in the object" (renders as ``absent``)."""

    _instance: ClassVar[_Absent | None] = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "absent"

    def __reduce__(self) -> str:
        return "ABSENT"


#: Pass as ``value`` when the attribute is missing.
ABSENT: Final = _Absent()


class Found(str):
    """A value description that is shown as is (without ``repr`` quotes), e.g. ``"1400 bytes"``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def describe_value(value: object) -> str:
    """Render a found value for a message: ``repr`` truncated to :data:`MAX_VALUE_CHARS`."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real problem
        text = f"<unprintable {type(value).__name__}>"
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 3] + "..."
    return text


_NOT_GIVEN: Final = object()


class IntakeError(Exception):
    """Base class: the object cannot be used as a galactogram image.

    Args:
        problem: what is wrong, in a few words (``"color images are not supported"``).
        attribute: DICOM keyword and tag at fault, e.g. ``"Rows (0028,0010)"``.
        value: what was found (any object; rendered with :func:`describe_value`), or
            :data:`ABSENT` when the attribute is missing; omit when there is no value to show.
        expected: what would have been accepted (``"MONOCHROME1 or MONOCHROME2"``).
    """

    #: Stable machine-readable reason; one per subclass.
    code: ClassVar[str] = "intake_error"

    def __init__(
        self,
        problem: str,
        *,
        attribute: str | None = None,
        value: object = _NOT_GIVEN,
        expected: str | None = None,
    ) -> None:
        self.problem = problem
        self.attribute = attribute
        self.value: str | None = None if value is _NOT_GIVEN else describe_value(value)
        self.expected = expected
        #: The object's header (a pydicom ``Dataset`` without pixel data) when it could be
        #: parsed before it was refused, else None: lets a caller name the refused instance
        #: (SOP Class and Instance UIDs) without parsing its bytes again. Not pickled.
        self.dataset: Any = None
        super().__init__(self._compose())

    def _compose(self) -> str:
        parts = [self.problem]
        if self.attribute is not None and self.value is not None:
            parts.append(f"{self.attribute} is {self.value}")
        elif self.attribute is not None:
            parts.append(f"attribute {self.attribute}")
        elif self.value is not None:
            parts.append(f"found {self.value}")
        text = ": ".join(parts)
        if self.expected is not None:
            text += f"; expected {self.expected}"
        return text

    @property
    def message(self) -> str:
        """The full human-readable message (same as ``str(error)``)."""
        return str(self.args[0]) if self.args else self.problem

    def to_dict(self) -> dict[str, str | None]:
        """JSON-ready summary: ``code``, ``message``, ``attribute``, ``value``, ``expected``."""
        return {
            "code": self.code,
            "message": self.message,
            "attribute": self.attribute,
            "value": self.value,
            "expected": self.expected,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructor arguments do not survive the default exception pickling;
        # rebuild from the rendered parts so errors can cross process boundaries.
        return (_rebuild, (type(self), self.problem, self.attribute, self.value, self.expected))


def _rebuild(
    cls: type[IntakeError],
    problem: str,
    attribute: str | None,
    value: str | None,
    expected: str | None,
) -> IntakeError:
    """Unpickle an :class:`IntakeError` without re-rendering its (already rendered) value."""
    error = cls(
        problem,
        attribute=attribute,
        value=_NOT_GIVEN if value is None else Found(value),
        expected=expected,
    )
    return error


class NotDicomError(IntakeError):
    """The input is empty or cannot be parsed as a DICOM object (no ``DICM`` prefix and not a
    plausible preamble-less data set, or pydicom failed to parse it)."""

    code: ClassVar[str] = "not_dicom"


class NoPixelDataError(IntakeError):
    """The object has no integer Pixel Data (7FE0,0010) (e.g. a structured report, or only
    Float Pixel Data)."""

    code: ClassVar[str] = "no_pixel_data"


class ColorImageError(IntakeError):
    """The image is in color: SamplesPerPixel (0028,0002) is not 1, or the photometric
    interpretation is RGB, YBR_*, PALETTE COLOR, ..."""

    code: ClassVar[str] = "color_image"


class UnsupportedPhotometricError(IntakeError):
    """PhotometricInterpretation (0028,0004) is neither MONOCHROME1 nor MONOCHROME2 (and is not
    a color interpretation)."""

    code: ClassVar[str] = "unsupported_photometric"


class MultiFrameError(IntakeError):
    """NumberOfFrames (0028,0008) is greater than 1: only single-frame images are accepted."""

    code: ClassVar[str] = "multi_frame"


class MissingSpacingError(IntakeError):
    """Neither PixelSpacing (0028,0030) nor ImagerPixelSpacing (0018,1164) is present (and the
    caller did not pass ``allow_missing_spacing=True``)."""

    code: ClassVar[str] = "missing_spacing"


class InvalidSpacingError(IntakeError):
    """A spacing attribute is present but no usable spacing results: not two finite numbers
    in (0, 10] mm (and the caller did not pass ``allow_missing_spacing=True``)."""

    code: ClassVar[str] = "invalid_spacing"


class ImageTooLargeError(IntakeError):
    """Rows x Columns exceeds the caller's ``max_pixels``; checked from the header before any
    pixel data is decoded."""

    code: ClassVar[str] = "image_too_large"


class UnsupportedTransferSyntaxError(IntakeError):
    """The transfer syntax is not one the intake decodes (or its decoder plugin is not
    installed); the message names the UID and its name."""

    code: ClassVar[str] = "unsupported_transfer_syntax"


class UnsupportedSopClassError(IntakeError):
    """SOPClassUID (0008,0016) is not an accepted image storage class (MG, DX, CR, SC)."""

    code: ClassVar[str] = "unsupported_sop_class"


class InvalidHeaderError(IntakeError):
    """A header attribute needed to interpret the pixels is missing or inconsistent
    (Rows/Columns missing or 0, BitsAllocated not 8/16, BitsStored > BitsAllocated, HighBit
    not BitsStored - 1, unreadable values, ...)."""

    code: ClassVar[str] = "invalid_header"


class DecodeError(IntakeError):
    """Decoding the pixel data failed unexpectedly; the pydicom/plugin exception is chained as
    ``__cause__``."""

    code: ClassVar[str] = "decode_error"


class TruncatedPixelDataError(DecodeError):
    """The pixel data is too short (uncompressed data shorter than
    Rows x Columns x BitsAllocated / 8 bytes), or a compressed frame fails to decode or decodes
    to the wrong number of pixels."""

    code: ClassVar[str] = "truncated_pixel_data"


#: Every concrete error class, for adapters that build code tables (e.g. DIMSE statuses).
ALL_ERRORS: Final[tuple[type[IntakeError], ...]] = (
    NotDicomError,
    NoPixelDataError,
    ColorImageError,
    UnsupportedPhotometricError,
    MultiFrameError,
    MissingSpacingError,
    InvalidSpacingError,
    ImageTooLargeError,
    UnsupportedTransferSyntaxError,
    UnsupportedSopClassError,
    InvalidHeaderError,
    DecodeError,
    TruncatedPixelDataError,
)

__all__ = [
    "ABSENT",
    "ALL_ERRORS",
    "MAX_VALUE_CHARS",
    "ColorImageError",
    "DecodeError",
    "Found",
    "ImageTooLargeError",
    "IntakeError",
    "InvalidHeaderError",
    "InvalidSpacingError",
    "MissingSpacingError",
    "MultiFrameError",
    "NoPixelDataError",
    "NotDicomError",
    "TruncatedPixelDataError",
    "UnsupportedPhotometricError",
    "UnsupportedSopClassError",
    "describe_value",
]
