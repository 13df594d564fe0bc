"""Reading single attribute values for the DICOM intake, with typed errors.

Shared by :mod:`serving.pipeline.dicom_in` (header checks) and
:mod:`serving.pipeline.intake.pixel_semantics` (how stored values map to attenuation). Every helper
either returns a plain Python value or raises :class:`~serving.pipeline.errors.InvalidHeaderError`
/ ``ValueError`` as documented (:func:`get_noted` instead appends the error to the caller's
notes); none of them logs or warns.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from serving.pipeline.errors import ABSENT, Found, InvalidHeaderError

__all__ = ["as_float", "as_int", "attr", "get", "get_noted", "scalar", "text", "try_int"]


def attr(keyword: str) -> str:
    """``"Keyword (gggg,eeee)"`` for messages."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return keyword
    return f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def get(ds: Dataset, keyword: str) -> object:
    """The value of ``keyword`` in ``ds``, or :data:`ABSENT` when missing or empty.

    Raises:
        InvalidHeaderError: pydicom cannot convert the stored value.
    """
    try:
        if keyword not in ds:
            return ABSENT
        value = ds[keyword].value
    except Exception as exc:
        raise InvalidHeaderError(
            "unreadable attribute value",
            attribute=attr(keyword),
            value=Found(f"{type(exc).__name__}: {exc}"),
            expected="a value valid for its VR",
        ) from exc
    if value is None:
        return ABSENT
    if isinstance(value, str | bytes | list | MultiValue | DicomSequence) and len(value) == 0:
        return ABSENT
    return value


def get_noted(ds: Dataset, keyword: str, notes: list[str]) -> object:
    """:func:`get`, with an unreadable value noted (``"ignored <error>"`` appended to
    ``notes``) and taken as absent (:data:`ABSENT`)."""
    try:
        return get(ds, keyword)
    except InvalidHeaderError as exc:
        notes.append(f"ignored {exc}")
        return ABSENT


def scalar(value: object) -> object:
    """``value`` itself, or its only item if multi-valued; ``ValueError`` for several."""
    if isinstance(value, MultiValue | list | tuple):
        if len(value) != 1:
            raise ValueError(f"{len(value)} values")
        return value[0]
    return value


def as_float(value: object) -> float:
    """One finite-or-not float from a DS/FD/IS/str/int value; ``ValueError`` otherwise."""
    value = scalar(value)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {value!r}")
    return float(value.strip() if isinstance(value, str) else value)


def as_int(value: object) -> int:
    """One int from a US/IS/str value (``"12"``, ``12``, ``12.0``); ``ValueError`` otherwise."""
    number = as_float(value)
    if not number.is_integer():
        raise ValueError(f"not an integer: {value!r}")
    return int(number)


def try_int(value: object) -> int | None:
    """``as_int(value)`` or ``None``."""
    try:
        return as_int(value)
    except (ValueError, TypeError, OverflowError):
        return None


def text(value: object) -> str:
    """A DICOM string value as one stripped string (multiple values joined with ``\\``)."""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(text(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace").strip(" \x00")
    return str(value).strip(" \x00")
