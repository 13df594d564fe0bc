"""The one guarded parse of untrusted DICOM bytes.

Every parse of bytes that came from outside (an HTTP body part, a C-STORE data set, a spooled
instance file) goes through :func:`parsed` (used by the intake's
:func:`~serving.pipeline.dicom_in.read_instance`, ``read_image`` and ``read_header``) or
:func:`read_dataset` (a header for triage). Both apply the same budgets, cheapest check first:

1. the first 132 bytes: empty input, or neither a Part 10 preamble nor a plausible raw data set
   (all-zero bodies, text, images) -> :class:`NotDicomError`, nothing else read;
2. a Deflated Explicit VR Little Endian data set is inflated in 1 MiB steps that are counted
   and dropped, and refused once it exceeds ``2 * max_pixels`` +
   :data:`DEFLATE_HEADER_ALLOWANCE` bytes (:class:`ImageTooLargeError`), before pydicom
   inflates it whole;
3. pydicom parses with a budget of :data:`MAX_DATA_ELEMENTS` data elements and sequence items
   (:class:`InvalidHeaderError` beyond it: element and item floods);
4. any other failure of pydicom or a codec plugin is wrapped as :class:`DecodeError` or
   :class:`NotDicomError` with the cause chained.

So whatever the entry point, an object costs at most about ``2 * max_pixels`` bytes plus a few
tens of MB, and a refused object is refused in well under a second (``tests/test_fuzz_intake.py``,
``tests/test_untrusted_input.py``). Callers keep the parsed data set (the intake's
:class:`~serving.pipeline.dicom_in.Instance`, :attr:`IntakeError.dataset`) instead of parsing
the same bytes again.

This module never imports torch, monai or ``training``.
"""

from __future__ import annotations

import io
import os
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, Literal, TypeAlias, cast

import pydicom
import pydicom.filereader
from pydicom.datadict import dictionary_has_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from serving.pipeline.errors import (
    DecodeError,
    Found,
    ImageTooLargeError,
    IntakeError,
    InvalidHeaderError,
    NotDicomError,
    TruncatedPixelDataError,
)
from serving.pipeline.intake.values import attr as _attr

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFLATE_HEADER_ALLOWANCE",
    "HEADER_DEFER_SIZE",
    "MAX_DATA_ELEMENTS",
    "DicomSource",
    "SharedBudget",
    "failure_text",
    "is_failure",
    "parsed",
    "read_dataset",
    "shared_budget",
]

#: Default upper bound on Rows x Columns (a 3328 x 4096 Hologic image is 13.6 M pixels).
DEFAULT_MAX_PIXELS: Final = 100_000_000

#: Bytes above which a header-only parse leaves an element's value unread (the pixel data).
HEADER_DEFER_SIZE: Final = 4096

#: Bytes a deflated data set may inflate to beyond 2 bytes per allowed pixel (its other
#: attributes); anything larger is refused before pydicom inflates it (a deflate bomb).
DEFLATE_HEADER_ALLOWANCE: Final = 8 * 1024 * 1024

#: Most data elements plus sequence items pydicom may parse for one object (a real image
#: header has a few hundred). Parsing costs about 300 bytes of memory per element of 8 to 12
#: input bytes (700 per empty item): 12 MB of tiny elements took 5 s and 350 MB (fuzz corpus
#: 007-009), so floods of elements or items are refused as soon as they exceed the budget.
MAX_DATA_ELEMENTS: Final = 20_000

_PIXEL_DATA: Final = Tag(0x7FE0, 0x0010)

#: What the guarded parse reads from.
DicomSource: TypeAlias = (
    bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO | Dataset
)


@contextmanager
def parsed(source: DicomSource, *, header_only: bool, max_pixels: int) -> Iterator[Dataset]:
    """Parse ``source`` under every guard and yield the data set; the guards stay on while the
    block runs (the intake's checks and decoding run inside it).

    Args:
        source: DICOM Part 10 bytes (or a preamble-less data set), a path, a binary file
            object positioned at the object's start, or a pydicom ``Dataset`` (used as is).
        header_only: leave values longer than :data:`HEADER_DEFER_SIZE` (the pixel data)
            unread.
        max_pixels: largest accepted Rows x Columns; bounds a deflated data set's inflation.

    Raises:
        IntakeError: a subclass naming what was wrong (any failure inside the block that is
            not an IntakeError is wrapped as :class:`DecodeError`).
        OSError: ``source`` is a path that cannot be opened or read.
        TypeError: ``source`` is none of the accepted types.
        ValueError: ``max_pixels`` is not a positive int.
    """
    check_max_pixels(max_pixels)
    with open_source(source) as opened, guard(), element_budget():
        yield as_dataset(opened, header_only=header_only, max_pixels=max_pixels)


def read_dataset(source: DicomSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Dataset:
    """The header of an untrusted DICOM object, parsed once under every guard of
    :func:`parsed`, without its pixel data (Pixel Data and other values over
    :data:`HEADER_DEFER_SIZE` bytes are absent from the result).

    For triage (which instances of a study to analyse) and for naming a refused instance;
    it does not check that the object is an image the detector can use (that is
    :func:`serving.pipeline.dicom_in.read_header`).

    Raises:
        IntakeError: :class:`NotDicomError`, :class:`ImageTooLargeError` (deflate bomb),
            :class:`InvalidHeaderError` (element flood), :class:`DecodeError`.
        OSError: ``source`` is a path that cannot be opened or read.
        TypeError: ``source`` is none of the accepted types.
    """
    with parsed(source, header_only=True, max_pixels=max_pixels) as ds:
        return header_of(ds)


def header_of(ds: Dataset) -> Dataset:
    """A new data set with the elements of ``ds`` but Pixel Data, the values left unread
    (deferred) and byte values over :data:`MAX_KEPT_VALUE`: what may be kept after the source
    is gone. Every element is converted here,
    so call it inside :func:`parsed`: defined-length sequences are parsed under the element
    budget, not later by whoever reads them. The original encoding, character set and file
    meta are carried over; ``ds`` itself is not changed."""
    elements: dict[Any, Any] = {}
    for tag in ds.keys():  # noqa: SIM118 (iterating would convert every raw element)
        element = ds.get_item(tag, keep_deferred=True)
        deferred = isinstance(element, RawDataElement) and element.value is None \
            and element.length > 0
        if tag != _PIXEL_DATA and not deferred and not _bulky(element):
            elements[tag] = _converted(ds[tag])
    out = Dataset(elements)
    implicit, little = ds.original_encoding
    if implicit is not None and little is not None:
        out.set_original_encoding(implicit, little, ds.original_character_set)
    if hasattr(ds, "file_meta"):
        out.file_meta = ds.file_meta
    return out


#: Values longer than this (bytes) are left out of a kept header: a private blob of a refused
#: part (a deflate bomb's 128 MiB of zeros) must not stay in memory to name it.
MAX_KEPT_VALUE: Final = 64 * 1024


def _bulky(element: Any) -> bool:
    """Whether ``element`` holds a byte value longer than :data:`MAX_KEPT_VALUE`."""
    if isinstance(element, RawDataElement):
        return element.VR != "SQ" and element.length != 0xFFFFFFFF \
            and element.length > MAX_KEPT_VALUE
    value = getattr(element, "value", None)
    return isinstance(value, bytes | bytearray) and len(value) > MAX_KEPT_VALUE


def _converted(element: Any) -> Any:
    """``element`` with every nested sequence item's elements converted (pydicom converts
    raw elements, and parses defined-length sequences, on first access)."""
    if element.VR == "SQ":
        for item in element.value:
            for nested in item:
                _converted(nested)
    return element


def check_max_pixels(max_pixels: int) -> None:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")


def is_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means "this object cannot be read": any ``Exception``, and the
    ``PanicException`` a Rust codec (pylibjpeg-rle) raises on malformed data, which PyO3
    derives from ``BaseException`` (fuzz corpus 001). KeyboardInterrupt, SystemExit and
    friends are not failures of the object."""
    return isinstance(exc, Exception) or _is_codec_panic(exc)


def _is_codec_panic(exc: BaseException) -> bool:
    return type(exc).__module__ == "pyo3_runtime"


def failure_text(exc: BaseException) -> str:
    """How a failure (:func:`is_failure`) is quoted in a refusal: ``"<type>: <message>"``,
    except a Rust codec's panic, whose text is the codec's internals (e.g. "index out of
    bounds: the len is 512 but the index is 513"): ``"the decoder failed on malformed
    data"``."""
    if _is_codec_panic(exc):
        return "the decoder failed on malformed data"
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def guard() -> Iterator[None]:
    """Let :class:`IntakeError` through; wrap any other failure (see :func:`is_failure`)
    into :class:`DecodeError`."""
    try:
        yield
    except IntakeError:
        raise
    except BaseException as exc:
        if not is_failure(exc):
            raise
        raise DecodeError(
            "unexpected error while reading the DICOM object",
            value=Found(failure_text(exc)),
            expected="an object pydicom and its plugins can read",
        ) from exc


# ---- element budget ------------------------------------------------------------------------
#
# pydicom has no limit on how many elements it parses, and parses undefined-length sequences
# eagerly and nested ones recursively. Its reader creates each data set (top level and every
# sequence item) with ``pydicom.filereader.data_element_generator``; that name is replaced
# once, here, by a wrapper that charges every data set and element to a per-thread budget.
# Outside an intake call (other threads, other code using pydicom) there is no budget and the
# wrapper only passes the elements on.

_budget = threading.local()
_shared = threading.local()
_data_element_generator = pydicom.filereader.data_element_generator


@dataclass
class SharedBudget:
    """What several objects parsed together, the parts of one request, may cost in all: data
    elements and sequence items (each part also has its own :data:`MAX_DATA_ELEMENTS`), and
    bytes held (inflated for a deflated part, as received otherwise). Without it a request
    of many small deflate bombs, each under the pixel limit, inflated to 13 GB, and one of
    many element floods, each under the element budget, held the triage for a minute."""

    elements: int
    held_bytes: int
    what: str = "the parts of this request"


@contextmanager
def shared_budget(budget: SharedBudget) -> Iterator[SharedBudget]:
    """Charge every guarded parse the calling thread makes while the block runs to
    ``budget`` as well; once it is spent, each further parse is refused before it starts."""
    previous = getattr(_shared, "budget", None)
    _shared.budget = budget
    try:
        yield budget
    finally:
        _shared.budget = previous


def _shared_budget() -> SharedBudget | None:
    return getattr(_shared, "budget", None)


def _charge() -> None:
    """Count one data set or element against the calling thread's budget, if it has one."""
    left: int | None = getattr(_budget, "left", None)
    if left is None:
        return
    if left <= 0:
        limit = getattr(_budget, "limit", MAX_DATA_ELEMENTS)
        shared = _shared_budget()
        where = f" ({shared.what} together)" if shared and limit < MAX_DATA_ELEMENTS else ""
        raise InvalidHeaderError(
            "too many data elements and sequence items" + where,
            value=Found(f"more than {limit}"),
            expected=f"at most {MAX_DATA_ELEMENTS} per object (an image header has a few "
                     "hundred)",
        )
    _budget.left = left - 1


def _budgeted_data_element_generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
    """pydicom's ``data_element_generator``, charging the data set and each element."""
    _charge()
    for element in _data_element_generator(*args, **kwargs):
        _charge()
        yield element


pydicom.filereader.data_element_generator = _budgeted_data_element_generator


@contextmanager
def element_budget() -> Iterator[None]:
    """Give the calling thread a budget of :data:`MAX_DATA_ELEMENTS` (or what is left of a
    :class:`SharedBudget`, if smaller) while the block runs; charge what it used to the
    shared budget."""
    shared = _shared_budget()
    if shared is not None and shared.elements <= 0:
        raise InvalidHeaderError(
            f"too many data elements and sequence items in {shared.what} together",
            value=Found("the request's element budget is spent"),
            expected=f"at most {MAX_DATA_ELEMENTS} per object and fewer in all",
        )
    limit = MAX_DATA_ELEMENTS if shared is None else min(MAX_DATA_ELEMENTS, shared.elements)
    previous = (getattr(_budget, "left", None), getattr(_budget, "limit", None))
    _budget.left, _budget.limit = limit, limit
    try:
        yield
    finally:
        if shared is not None:
            shared.elements -= limit - max(int(_budget.left), 0)
        _budget.left, _budget.limit = previous


# --------------------------------------------------------------------------------------------
# Reading the object
# --------------------------------------------------------------------------------------------


@contextmanager
def open_source(source: DicomSource) -> Iterator[BinaryIO | Dataset]:
    """Yield a readable binary stream positioned at the object's start, or the Dataset itself.

    Paths are opened here (and closed on exit); ``OSError`` from opening propagates.
    """
    if isinstance(source, Dataset):
        yield source
    elif isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(bytes(source))
    elif isinstance(source, str | os.PathLike):
        with open(os.fspath(source), "rb") as fp:
            yield fp
    elif hasattr(source, "read"):
        yield _seekable(cast(BinaryIO, source))
    else:
        raise TypeError(
            "source must be bytes, a path, a binary file object or a pydicom Dataset, "
            f"not {type(source).__name__}"
        )


def _seekable(fp: BinaryIO) -> BinaryIO:
    """Return ``fp`` if it can seek, else its remaining content in a ``BytesIO``."""
    try:
        if fp.seekable():
            return fp
    except (AttributeError, OSError, ValueError):
        pass
    data = fp.read()
    if not isinstance(data, bytes | bytearray):
        raise TypeError(f"file object must be opened in binary mode, read() gave {type(data)}")
    return io.BytesIO(bytes(data))


def as_dataset(opened: BinaryIO | Dataset, *, header_only: bool, max_pixels: int) -> Dataset:
    """Parse ``opened`` (unless it is a Dataset already); :class:`NotDicomError` if impossible.

    With ``header_only``, values longer than :data:`HEADER_DEFER_SIZE` (the pixel data) are
    left unread: their elements are present but their values are never loaded here. A
    deflated data set is refused (:class:`ImageTooLargeError`) when it inflates beyond what an
    image of ``max_pixels`` needs, before pydicom inflates it.
    """
    if isinstance(opened, Dataset):
        return opened
    start = opened.tell()
    head = opened.read(132)
    opened.seek(start)
    if not head:
        raise NotDicomError("empty input", value=Found("0 bytes"), expected="a DICOM Part 10 file")
    has_prefix = len(head) == 132 and head[128:132] == b"DICM"
    if not has_prefix and not _plausible_raw_dataset(head):
        raise NotDicomError(
            "not a DICOM file",
            value=head[:16],
            expected="a 128-byte preamble followed by b'DICM' "
            "(or a data set starting with group 0002 or 0008)",
        )
    _check_inflated_size(opened, start, force=not has_prefix, max_pixels=max_pixels)
    try:
        ds = pydicom.dcmread(
            opened,
            force=not has_prefix,
            defer_size=HEADER_DEFER_SIZE if header_only else None,
        )
    except IntakeError:
        raise
    except Exception as exc:
        raise NotDicomError(
            "cannot be parsed as DICOM",
            value=Found(f"{type(exc).__name__}: {exc}"),
            expected="a well-formed DICOM data set",
        ) from exc
    if "PixelData" not in ds and _pixel_data_cut_off(opened, start):
        raise TruncatedPixelDataError(
            "the object ends inside its pixel data",
            attribute=_attr("PixelData"),
            value=Found("cut off before its end"),
            expected="a complete Pixel Data element (the file looks truncated)",
        )
    # Iterating a Dataset converts its elements; keys() only lists the tags.
    if not any(dictionary_has_tag(tag) for tag in ds.keys()):  # noqa: SIM118
        raise NotDicomError(
            "no standard DICOM attribute could be read",
            value=Found(f"{len(ds)} unrecognized elements"),
            expected="a DICOM data set (SOPClassUID, Rows, Columns, PixelData, ...)",
        )
    return ds


def _check_inflated_size(fp: BinaryIO, start: int, *, force: bool, max_pixels: int) -> None:
    """Refuse a Deflated Explicit VR Little Endian data set that inflates to more than
    ``2 * max_pixels`` + :data:`DEFLATE_HEADER_ALLOWANCE` bytes.

    pydicom inflates the whole data set in memory with no limit (a 300 KB deflate bomb became
    600 MB, fuzz corpus 002). This reads the file meta exactly as ``dcmread`` does (pydicom's
    own readers) and, when the transfer syntax is deflated, inflates in 1 MiB steps that are
    counted and dropped. Problems reading the file meta are left to ``dcmread`` (it reads the
    same bytes the same way, and fails before inflating anything).
    """
    from pydicom.filereader import (  # the steps of pydicom.filereader.read_partial
        _read_command_set_elements,
        _read_file_meta_info,
        read_preamble,
    )

    try:
        fp.seek(start)
        read_preamble(fp, force)
        meta = _read_file_meta_info(fp)
        syntax = meta.get("TransferSyntaxUID")
        if syntax != DeflatedExplicitVRLittleEndian:
            _charge_held(fp, start)
            return
        _read_command_set_elements(fp)
        zipped = fp.read()
    except IntakeError:
        raise
    except Exception:
        _charge_held(fp, start)
        return
    finally:
        fp.seek(start)
    own = 2 * max_pixels + DEFLATE_HEADER_ALLOWANCE
    shared = _shared_budget()
    limit = own if shared is None else min(own, shared.held_bytes)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size, pending = 0, zipped
    try:
        while True:
            size += len(inflater.decompress(pending, 1024 * 1024))
            pending = inflater.unconsumed_tail
            if size > limit:
                raise ImageTooLargeError(
                    "deflated data set inflates beyond the pixel limit" if limit == own else
                    f"deflated data set inflates beyond what {shared.what} may hold together"
                    if shared else "",
                    attribute=_attr("TransferSyntaxUID"),
                    value=Found(f"{len(zipped)} deflated bytes inflate to more than {limit}"),
                    expected=f"at most 2 x {max_pixels} pixel bytes + "
                    f"{DEFLATE_HEADER_ALLOWANCE} bytes of other attributes",
                )
            if inflater.eof or not pending:
                break
    except zlib.error:
        return  # not a valid deflate stream: dcmread fails on it before inflating it all
    if shared is not None:
        shared.held_bytes -= size


def _charge_held(fp: BinaryIO, start: int) -> None:
    """Charge the bytes of a data set that is not deflated (held as received) to the
    calling thread's :class:`SharedBudget`, if any; refuse it when they do not fit."""
    shared = _shared_budget()
    if shared is None:
        return
    fp.seek(0, io.SEEK_END)
    size = fp.tell() - start
    fp.seek(start)
    if size > shared.held_bytes:
        raise ImageTooLargeError(
            f"the object does not fit in what {shared.what} may hold together",
            value=Found(f"{size} bytes, {max(shared.held_bytes, 0)} left"),
            expected="fewer or smaller objects in one request",
        )
    shared.held_bytes -= size


def _plausible_raw_dataset(head: bytes) -> bool:
    """True if ``head`` could start a data set written without preamble (groups 0002/0008)."""
    if len(head) < 8:
        return False
    groups = (int.from_bytes(head[:2], "little"), int.from_bytes(head[:2], "big"))
    return any(group in (0x0002, 0x0008) for group in groups)


def _pixel_data_cut_off(fp: BinaryIO, start: int) -> bool:
    """True if the raw stream ends inside a top-level Pixel Data element.

    pydicom drops an element cut off by the end of the file (for encapsulated pixel data it
    returns an empty data set), so look at the bytes: the last (7FE0,0010) tag must either
    declare more bytes than remain, or be of undefined length without a sequence delimiter.
    """
    fp.seek(start)
    data = fp.read()
    orders: tuple[tuple[bytes, Literal["little", "big"]], ...] = (
        (b"\xe0\x7f\x10\x00", "little"),
        (b"\x7f\xe0\x00\x10", "big"),
    )
    for tag, order in orders:
        pos = data.rfind(tag)
        if pos < 0:
            continue
        if data[pos + 4 : pos + 6] in (b"OB", b"OW"):  # explicit VR: 2 reserved bytes, 4 length
            header, length = 12, int.from_bytes(data[pos + 8 : pos + 12], order)
        else:
            header, length = 8, int.from_bytes(data[pos + 4 : pos + 8], order)
        if length == 0xFFFFFFFF:
            delimiter = b"\xfe\xff\xdd\xe0" if order == "little" else b"\xff\xfe\xe0\xdd"
            if data.rfind(delimiter, pos) < 0:
                return True
        elif pos + header + length > len(data):
            return True
    return False
