"""Fuzzing the DICOM intake: valid objects from :mod:`tests.dicomgen`, then corrupted.

The property, for every generated input and for every file of ``tests/fuzz_corpus/``:

- :func:`~serving.pipeline.dicom_in.read_image` (and :func:`read_header`) returns an ``Image``
  (``ImageHeader``) or raises an :class:`~serving.pipeline.errors.IntakeError` subclass; never
  anything else (a PyO3 ``PanicException`` from a Rust decoder, a ``MemoryError``, ...);
- it never hangs: each case runs under a wall-clock limit (``GALACTO_FUZZ_CASE_S``, 5 s by
  default): ``SIGALRM`` interrupts Python code, and a ``faulthandler`` watchdog ends the run
  (exit status 1, stacks in :data:`HANG_REPORT`) if C code holding the GIL does not come back;
- it never allocates beyond the configured pixel limit: with ``max_pixels = 256 * 256`` the
  growth of the process's peak RSS (reset before each case; catches what C libraries
  allocate) and, in a second traced run, the peak ``tracemalloc`` allocation (Python
  objects, NumPy arrays, buffers the codec bindings return) stay below
  ``32 * max_pixels + 4 * input size + 32 MiB``.

Corruptions: truncation at any offset; byte flips, insertions and deletions in the header or
the pixel data; wrong VRs and absurd values on the Image Pixel module (Rows, Columns,
BitsAllocated, BitsStored, HighBit, SamplesPerPixel, NumberOfFrames, ...); undefined
lengths with and without delimiters; deeply nested and very long sequences; broken
encapsulation (fragments split, emptied, cut, Basic Offset Table lies, wrong item lengths,
missing delimiters, codestreams whose own frame header claims another size); bogus transfer
syntax UIDs; deflate bombs.

CI runs a fixed, derandomized set of examples (500, about 40 s). A larger campaign:
``GALACTO_FUZZ_EXAMPLES=3000 pytest tests/test_fuzz_intake.py`` (random, not derandomized;
hypothesis prints the seed and the failing input). Every crasher found is saved in
``tests/fuzz_corpus/NNN-short-name.dcm`` (listed in its ``README.md``) and replayed by
:func:`test_corpus_file`.
"""

from __future__ import annotations

import contextlib
import copy
import faulthandler
import gzip
import io
import os
import shutil
import signal
import struct
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import pydicom
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSNearLossless,
    RLELossless,
)

from serving.pipeline.dicom_in import Image, ImageHeader, read_header, read_image
from serving.pipeline.errors import IntakeError
from serving.pipeline.intake.syntaxes import J2K_SYNTAXES, JPEG_LS_SYNTAXES, JPEG_PROCESS_SYNTAXES
from tests.dicomgen import PYDICOM_ENCODED, make_dataset, set_raw, to_bytes
from tests.memory import peak_rss, reset_peak_rss

# --------------------------------------------------------------------------------------------
# limits
# --------------------------------------------------------------------------------------------

#: ``max_pixels`` passed to the intake: small, so the memory bound below means something.
MAX_PIXELS = 256 * 256
#: Wall-clock limit of one case, seconds (generous: CI machines are small and shared).
CASE_LIMIT_S = float(os.environ.get("GALACTO_FUZZ_CASE_S", "5"))
#: Limit of the traced run of a case (allocation tracing makes pydicom several times slower).
TRACED_LIMIT_S = 4 * CASE_LIMIT_S
#: A case still running after this many seconds is a hang in C code: dump stacks and exit.
HARD_LIMIT_S = max(2 * TRACED_LIMIT_S, 30.0)
#: The watchdog's stack dump when it ends a run (exit status 1, no pytest summary).
HANG_REPORT = Path(tempfile.gettempdir()) / "galacto-fuzz-hang.txt"
#: Examples per property test in a local campaign (0: the small CI budgets below).
CAMPAIGN = int(os.environ.get("GALACTO_FUZZ_EXAMPLES", "0"))
MIB = 1024 * 1024
CORPUS = Path(__file__).parent / "fuzz_corpus"
#: Regression inputs: ``NNN-name.dcm``, or ``NNN-name.dcm.gz`` for large, repetitive ones.
CORPUS_FILES = sorted([*CORPUS.glob("*.dcm"), *CORPUS.glob("*.dcm.gz")])


def load_corpus(path: Path) -> bytes:
    """The bytes of a corpus file (gunzipped for ``.gz``)."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def memory_bound(input_size: int) -> int:
    """Most bytes one case may allocate: 32 bytes per allowed pixel (float32 pixels, a few
    integer copies), 4 copies of the input, 32 MiB of parser and codec working memory."""
    return 32 * MAX_PIXELS + 4 * input_size + 32 * MIB


def fuzz_settings(ci_examples: int) -> settings:
    """Reproducible small budgets in CI; ``GALACTO_FUZZ_EXAMPLES`` random examples locally."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]  # no slow "explain"
    if CAMPAIGN:
        return settings(max_examples=CAMPAIGN, deadline=None, derandomize=False, phases=phases,
                        suppress_health_check=list(HealthCheck), print_blob=True)
    return settings(max_examples=ci_examples, deadline=None, derandomize=True, database=None,
                    phases=phases, suppress_health_check=list(HealthCheck))


# --------------------------------------------------------------------------------------------
# running one case: outcome, time and memory
# --------------------------------------------------------------------------------------------


class CaseTimeout(BaseException):
    """Raised by SIGALRM in the case under test (a BaseException: the intake's ``except
    Exception`` wrappers must not turn a hang into a typed refusal)."""


@cache
def _hang_report() -> TextIO:
    """Where the watchdog writes the stacks before it ends a hung run (pytest captures the
    process's stderr, and a process that exits this way prints no captured output)."""
    return open(HANG_REPORT, "a")


@contextmanager
def wall_clock_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (Python code), kill the run after
    :data:`HARD_LIMIT_S` (C code that never returns to Python)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise CaseTimeout(f"case ran longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(HARD_LIMIT_S, exit=True, file=_hang_report())
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


@dataclass(frozen=True)
class Outcome:
    """What one call of the intake did: its result, wall-clock seconds and peak RSS growth
    (bytes) when run plainly, and the peak traced allocation (bytes) of a second, traced run
    (``tracemalloc`` slows pydicom's parser several times and adds its own bookkeeping to the
    RSS, so time and RSS come from the plain run)."""

    result: Image | ImageHeader | IntakeError
    seconds: float
    rss_growth: int
    traced_peak: int


def _call(call: Callable[[], Image | ImageHeader], limit_s: float
          ) -> Image | ImageHeader | IntakeError:
    """``call()`` under a wall-clock limit; an :class:`IntakeError` is returned, anything else
    it raises propagates (and fails the test)."""
    with wall_clock_limit(limit_s):
        try:
            return call()
        except IntakeError as exc:
            return exc


def run_case(call: Callable[[], Image | ImageHeader]) -> Outcome:
    """Run ``call`` plainly (time, peak RSS), then traced (peak allocation)."""
    rss_before = reset_peak_rss()
    t0 = time.perf_counter()
    result = _call(call, CASE_LIMIT_S)
    seconds = time.perf_counter() - t0
    rss_growth = peak_rss() - rss_before
    tracemalloc.start()
    try:
        traced = _call(call, TRACED_LIMIT_S)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert type(traced) is type(result), f"a second run gave {traced!r}, the first {result!r}"
    return Outcome(result, seconds, rss_growth, peak)


def _no_event(value: str) -> None:
    """Outside a hypothesis test case there is nothing to record events in."""


def check_intake(data: bytes, *, reduce_to_spacing_mm: float | None = None,
                 header_too: bool = True, note: Callable[[str], None] = event) -> Outcome:
    """The fuzz property for one input: ``read_image`` (and ``read_header``) return or refuse
    with a typed error, in time, within the memory bound. Returns the ``read_image`` outcome;
    ``note`` records the outcome as a hypothesis event."""
    bound = memory_bound(len(data))
    calls: list[tuple[str, Callable[[], Image | ImageHeader]]] = [
        ("read_image", lambda: read_image(data, max_pixels=MAX_PIXELS,
                                          reduce_to_spacing_mm=reduce_to_spacing_mm))]
    if header_too:
        calls.append(("read_header", lambda: read_header(data, max_pixels=MAX_PIXELS)))
    outcomes = []
    for name, call in calls:
        outcome = run_case(call)
        assert outcome.seconds < CASE_LIMIT_S, f"{name} took {outcome.seconds:.1f} s"
        assert outcome.traced_peak < bound, (
            f"{name} allocated {outcome.traced_peak / MIB:.1f} MiB (traced) for "
            f"{len(data)} input bytes; bound {bound / MIB:.1f} MiB")
        assert outcome.rss_growth < bound, (
            f"{name} grew the peak RSS by {outcome.rss_growth / MIB:.1f} MiB for {len(data)} "
            f"input bytes; bound {bound / MIB:.1f} MiB")
        outcomes.append(outcome)
    image = outcomes[0].result
    if isinstance(image, Image):
        assert image.rows * image.cols <= MAX_PIXELS
        scale = image.decode_scale
        assert image.pixels.shape == (-(-image.rows // scale), -(-image.cols // scale))
        note(f"accepted ({image.transfer_syntax_uid})")
    else:
        assert isinstance(image, IntakeError)
        assert image.code and str(image)
        note(f"refused: {image.code}")
    return outcomes[0]


# --------------------------------------------------------------------------------------------
# valid starting points
# --------------------------------------------------------------------------------------------

NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
          DeflatedExplicitVRLittleEndian)
ENCAPSULATED = PYDICOM_ENCODED
#: JPEG processes written with DCMTK's dcmcjpeg (used when it is installed).
DCMTK_JPEG = JPEG_PROCESS_SYNTAXES
HAVE_DCMTK = shutil.which("dcmcjpeg") is not None
SYNTAXES = NATIVE + ENCAPSULATED + (DCMTK_JPEG if HAVE_DCMTK else ())
ENCAPSULATED_SYNTAXES = ENCAPSULATED + (DCMTK_JPEG if HAVE_DCMTK else ())


@dataclass(frozen=True)
class Base:
    """A valid image to start from."""

    syntax: str
    rows: int
    cols: int
    bits_stored: int
    signed: bool
    monochrome1: bool


@cache
def base_bytes(base: Base) -> bytes:
    """The Part 10 bytes of ``base`` (cached: compression is the slow part)."""
    options: dict[str, Any] = {}
    if base.syntax == JPEGLSNearLossless:
        options["jls_error"] = 2
    elif base.syntax == JPEG2000:
        options["j2k_cr"] = [5]
    ds = make_dataset(rows=base.rows, cols=base.cols, bits_stored=base.bits_stored,
                      signed=base.signed,
                      photometric="MONOCHROME1" if base.monochrome1 else "MONOCHROME2",
                      seed=base.rows * base.cols + base.bits_stored)
    return to_bytes(ds, base.syntax, **options)


@cache
def base_dataset(base: Base) -> Dataset:
    """``base`` read back with pydicom (pixel data as stored: compressed or not)."""
    return pydicom.dcmread(io.BytesIO(base_bytes(base)))


def _base_ok(base: Base) -> bool:
    """Combinations the encoders support."""
    if base.syntax in (JPEGBaseline8Bit,):
        return base.bits_stored == 8 and not base.signed
    if base.syntax == JPEGExtended12Bit:
        return base.bits_stored in (8, 12) and not base.signed
    if base.syntax in (JPEGLossless, JPEGLosslessSV1):
        return not base.signed
    if base.syntax in JPEG_LS_SYNTAXES:
        return base.bits_stored > 8 or base.rows >= 16
    return True


@st.composite
def bases(draw: st.DrawFn, syntaxes: tuple[str, ...] = SYNTAXES) -> Base:
    base = Base(syntax=draw(st.sampled_from(syntaxes)), rows=draw(st.sampled_from([32, 40])),
                cols=draw(st.sampled_from([32, 45])),
                bits_stored=draw(st.sampled_from([8, 12, 16])), signed=draw(st.booleans()),
                monochrome1=draw(st.booleans()))
    if not _base_ok(base):
        base = Base(base.syntax, base.rows, base.cols, 8 if base.syntax == JPEGBaseline8Bit
                    else 12, False, base.monochrome1)
    return base


# --------------------------------------------------------------------------------------------
# Part 10 surgery
# --------------------------------------------------------------------------------------------

PIXEL_TAG_LE = b"\xe0\x7f\x10\x00"
ITEM = b"\xfe\xff\x00\xe0"
ITEM_DELIMITER = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
UNDEFINED = 0xFFFFFFFF
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def split_part10(data: bytes) -> tuple[bytes, bytes]:
    """``(preamble + DICM + file meta, data set)`` of Part 10 bytes written by pydicom."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    group_length = struct.unpack_from("<I", data, 140)[0]
    end = 144 + group_length
    return data[:end], data[end:]


def file_meta(transfer_syntax: bytes, sop_class: bytes, sop_instance: bytes,
              group_length_delta: int = 0) -> bytes:
    """Preamble, ``DICM`` and a file meta group with exactly these (raw) values."""

    def element(elem: int, vr: bytes, value: bytes) -> bytes:
        if len(value) % 2:
            value += b"\x00"
        if vr == b"OB":
            return struct.pack("<HH", 2, elem) + vr + b"\x00\x00" + struct.pack(
                "<I", len(value)) + value
        return struct.pack("<HH", 2, elem) + vr + struct.pack("<H", len(value)) + value

    body = (element(0x0001, b"OB", b"\x00\x01") + element(0x0002, b"UI", sop_class)
            + element(0x0003, b"UI", sop_instance) + element(0x0010, b"UI", transfer_syntax)
            + element(0x0012, b"UI", b"1.2.826.0.1.3680043.8.498.1"))
    length = struct.pack("<I", max(len(body) + group_length_delta, 0))
    return b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + length + body


def element_le(tag: int, vr: str | None, value: bytes, *, length: int | None = None) -> bytes:
    """One little-endian element: explicit VR when ``vr`` is given, else implicit; ``length``
    overrides the encoded length (e.g. :data:`UNDEFINED`)."""
    n = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if vr is None:
        return head + struct.pack("<I", n) + value
    if vr in LONG_VRS:
        return head + vr.encode() + b"\x00\x00" + struct.pack("<I", n) + value
    return head + vr.encode() + struct.pack("<H", n & 0xFFFF) + value


def nested_sequence(depth: int, explicit: bool, tag: int = 0x00091010,
                    delimited: bool = True) -> bytes:
    """``depth`` sequences nested in each other (undefined lengths), innermost empty."""
    vr = "SQ" if explicit else None
    inner = b""
    for _ in range(depth):
        item = ITEM + struct.pack("<I", UNDEFINED) + inner + (ITEM_DELIMITER if delimited
                                                               else b"")
        inner = element_le(tag, vr, item, length=UNDEFINED) + (SEQUENCE_DELIMITER if delimited
                                                               else b"")
    return inner


def long_sequence(items: int, explicit: bool, tag: int = 0x00540220) -> bytes:
    """One sequence (ViewCodeSequence by default: the intake reads it) of ``items`` items,
    each with one short code value."""
    vr_cs = "SH" if explicit else None
    item_body = element_le(0x00080100, vr_cs, b"R-10242 ")
    item = ITEM + struct.pack("<I", len(item_body)) + item_body
    value = item * items
    return element_le(tag, "SQ" if explicit else None, value)


def insert_before_pixel_data(dataset: bytes, blob: bytes) -> bytes:
    """``blob`` inserted just before the (last) top-level Pixel Data tag of a little-endian
    data set (appended when there is none)."""
    pos = dataset.rfind(PIXEL_TAG_LE)
    if pos < 0:
        return dataset + blob
    return dataset[:pos] + blob + dataset[pos:]


@cache
def deflate_bomb(base: Base, megabytes: int) -> bytes:
    """``base`` as Deflated Explicit VR Little Endian with ``megabytes`` MiB of zeros in a
    private OB element: a small file that inflates to a large data set."""
    plain = split_part10(base_bytes(base))[1]
    bomb = element_le(0x00091010, "OB", b"\x00" * (megabytes * MIB))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(insert_before_pixel_data(plain, bomb)) + compressor.flush()
    return file_meta(DeflatedExplicitVRLittleEndian.encode(), b"1.2.840.10008.5.1.4.1.1.1.2",
                     b"1.2.3.4") + deflated


def is_little_endian_plain(syntax: str) -> bool:
    """Data sets of this syntax are little endian and not deflated."""
    return syntax not in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)


# ---- header attribute corruption -----------------------------------------------------------

PIXEL_MODULE_TAGS = {
    "SamplesPerPixel": 0x00280002, "PhotometricInterpretation": 0x00280004,
    "PlanarConfiguration": 0x00280006, "NumberOfFrames": 0x00280008, "Rows": 0x00280010,
    "Columns": 0x00280011, "PixelSpacing": 0x00280030, "BitsAllocated": 0x00280100,
    "BitsStored": 0x00280101, "HighBit": 0x00280102, "PixelRepresentation": 0x00280103,
    "WindowCenter": 0x00281050, "WindowWidth": 0x00281051, "RescaleIntercept": 0x00281052,
    "RescaleSlope": 0x00281053, "ImagerPixelSpacing": 0x00181164,
    "EstimatedRadiographicMagnificationFactor": 0x00181114, "SOPClassUID": 0x00080016,
    "PatientOrientation": 0x00200020, "ImageLaterality": 0x00200062,
}
#: Pixel-module attributes holding one integer (US, or IS for NumberOfFrames).
INTEGER_ATTRIBUTES = frozenset({"Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                                "SamplesPerPixel", "PixelRepresentation", "PlanarConfiguration",
                                "NumberOfFrames"})
ABSURD_INTEGERS = [0, 1, 2, 3, 7, 9, 12, 15, 17, 24, 32, 64, 255, 256, 4096, 32767, 32768,
                   65535]
ABSURD_TEXT = [b"", b" ", b"0", b"-1", b"1e9", b"1e308", b"-1e308", b"nan", b"NaN", b"inf",
               b"-inf", b"1\\2", b"1\\2\\3", b"abc", b"0x10", b"\x00\x00", b"\xff\xfe\xfd",
               b"99999999999999999999", b"3.5", b"MONOCHROME3", b"RGB", b"PALETTE COLOR",
               b"YBR_FULL_422", b"1.2.840.10008.5.1.4.1.1.1.2", b"\\" * 40]
WRONG_VRS = ["US", "SS", "UL", "SL", "FL", "FD", "DS", "IS", "CS", "LO", "UI", "OB", "OW",
             "UN", "SQ", "AT", "DA", "PN", "UT"]


@st.composite
def raw_values(draw: st.DrawFn) -> tuple[str, bytes]:
    """A ``(VR, raw value bytes)`` that is wrong or absurd for most pixel-module attributes."""
    vr = draw(st.sampled_from(WRONG_VRS))
    kind = draw(st.sampled_from(["int", "text", "bytes", "float"]))
    if kind == "int":
        number = draw(st.sampled_from(ABSURD_INTEGERS) | st.integers(0, 2**32 - 1))
        value = struct.pack("<I", number) if vr in ("UL", "SL", "AT") else struct.pack(
            "<H", number & 0xFFFF)
    elif kind == "float":
        number_f = draw(st.floats(allow_nan=True, allow_infinity=True,
                                  width=64 if vr == "FD" else 32))
        value = struct.pack("<d" if vr == "FD" else "<f", number_f) if vr in ("FD", "FL") \
            else repr(number_f).encode()
    elif kind == "text":
        value = draw(st.sampled_from(ABSURD_TEXT))
    else:
        value = draw(st.binary(max_size=24))
    return vr, value


def corrupt_attribute(ds: Dataset, keyword: str, vr: str, value: bytes) -> None:
    """Put a raw ``value`` with ``vr`` as ``keyword`` (pydicom converts it only when read)."""
    set_raw(ds, PIXEL_MODULE_TAGS[keyword], vr, value)


def set_absurd(ds: Dataset, keyword: str, number: int) -> None:
    """Set ``keyword`` to an absurd but well-typed value."""
    if keyword in ("NumberOfFrames",):
        set_raw(ds, PIXEL_MODULE_TAGS[keyword], "IS", str(number).encode())
    else:
        set_raw(ds, PIXEL_MODULE_TAGS[keyword], "US", struct.pack("<H", number & 0xFFFF))


def dataset_bytes(ds: Dataset) -> bytes:
    """Part 10 bytes of a (possibly corrupted) data set with its own file meta.

    Raw elements are written as they are; pydicom may refuse a combination (an impossible
    value for the VR of an explicit encoding) and then the case is skipped by the caller.
    """
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# ---- encapsulated pixel data ----------------------------------------------------------------


def encapsulated_frame(ds: Dataset) -> bytes:
    """The one compressed frame of ``ds`` (all fragments joined, no offset table)."""
    return next(generate_frames(ds.PixelData, number_of_frames=1))


@st.composite
def fragment_layouts(draw: st.DrawFn, frame: bytes) -> bytes:
    """The bytes of a Pixel Data element (explicit VR little endian) holding ``frame`` in
    a drawn encapsulation: half of the time the plain one (empty offset table, one fragment),
    so that damage done to the frame itself reaches the decoder; else possibly broken."""
    if draw(st.booleans()):
        padded = frame + b"\x00" * (len(frame) % 2)
        return (PIXEL_TAG_LE + b"OB\x00\x00" + struct.pack("<I", UNDEFINED) + ITEM
                + b"\x00\x00\x00\x00" + ITEM + struct.pack("<I", len(padded)) + padded
                + SEQUENCE_DELIMITER)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(frame)), max_size=6))))
    pieces = [frame[a:b] for a, b in zip([0, *cuts], [*cuts, len(frame)], strict=True)]
    if draw(st.booleans()):
        pieces = [p for p in pieces if p] or [b""]
    if draw(st.integers(0, 4)) == 0:
        pieces.insert(draw(st.integers(0, len(pieces))), b"")  # an empty fragment
    offsets = []
    position = 0
    for piece in pieces:
        offsets.append(position)
        position += 8 + len(piece) + len(piece) % 2
    bot_kind = draw(st.sampled_from(["empty", "empty", "true", "lies", "odd", "huge"]))
    if bot_kind == "empty":
        bot = b""
    elif bot_kind == "true":
        bot = struct.pack(f"<{1}I", 0)
    elif bot_kind == "lies":
        lies = draw(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=8))
        bot = struct.pack(f"<{len(lies)}I", *lies)
    elif bot_kind == "odd":
        bot = b"\x00\x00\x00"
    else:
        bot = struct.pack("<I", 2**31) * 3
    items = [ITEM + struct.pack("<I", len(bot)) + bot]
    length_lie = draw(st.sampled_from([None] * 6 + ["longer", "shorter", "undefined", "zero"]))
    lie_at = draw(st.integers(0, len(pieces) - 1))
    for i, piece in enumerate(pieces):
        padded = piece + b"\x00" * (len(piece) % 2)
        n = len(padded)
        if i == lie_at and length_lie == "longer":
            n += draw(st.integers(1, 10_000))
        elif i == lie_at and length_lie == "shorter":
            n = max(n - draw(st.integers(1, 64)), 0)
        elif i == lie_at and length_lie == "undefined":
            n = UNDEFINED
        elif i == lie_at and length_lie == "zero":
            n = 0
        tag = ITEM if draw(st.integers(0, 15)) else draw(st.binary(min_size=4, max_size=4))
        items.append(tag + struct.pack("<I", n) + padded)
    ending = draw(st.sampled_from(["delimiter"] * 4 + ["none", "garbage", "item-delimiter"]))
    tail = {"delimiter": SEQUENCE_DELIMITER, "none": b"", "item-delimiter": ITEM_DELIMITER,
            "garbage": draw(st.binary(min_size=1, max_size=64))}[ending]
    return (PIXEL_TAG_LE + b"OB\x00\x00" + struct.pack("<I", UNDEFINED) + b"".join(items)
            + tail)


def patch_frame_header(frame: bytes, syntax: str, rows: int, cols: int, components: int,
                       tile: int | None) -> bytes:
    """``frame`` with its codestream header claiming ``rows x cols`` and ``components``
    (JPEG 2000 SIZ also a ``tile`` size); unchanged when the header is not found."""
    out = bytearray(frame)
    if syntax in J2K_SYNTAXES:
        pos = frame.find(b"\xff\x4f\xff\x51")
        if pos < 0 or len(frame) < pos + 42:
            return frame
        struct.pack_into(">II", out, pos + 8, cols, rows)  # Xsiz, Ysiz
        struct.pack_into(">II", out, pos + 16, 0, 0)  # XOsiz, YOsiz
        if tile is not None:
            struct.pack_into(">II", out, pos + 24, tile, tile)  # XTsiz, YTsiz
        struct.pack_into(">H", out, pos + 40, components)  # Csiz
        return bytes(out)
    if syntax == RLELossless:
        return frame
    markers = (b"\xff\xf7",) if syntax in JPEG_LS_SYNTAXES else (
        b"\xff\xc0", b"\xff\xc1", b"\xff\xc3")
    positions = [p for p in (frame.find(m) for m in markers) if p >= 0]
    if not positions:
        return frame
    pos = min(positions)
    struct.pack_into(">HHB", out, pos + 5, rows & 0xFFFF, cols & 0xFFFF, components & 0xFF)
    return bytes(out)


def with_pixel_element(data: bytes, element: bytes) -> bytes:
    """Part 10 little-endian ``data`` with everything from its Pixel Data element on replaced."""
    meta, dataset = split_part10(data)
    pos = dataset.rfind(PIXEL_TAG_LE)
    assert pos >= 0
    return meta + dataset[:pos] + element


# ---- byte-level damage ------------------------------------------------------------------------


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with 0 to 3 random byte-level damages."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        if not out:
            break
        kind = draw(st.sampled_from(["flip", "flip", "set", "insert", "delete", "truncate"]))
        region = draw(st.sampled_from(["any", "header", "tail"]))
        lo, hi = {"any": (0, len(out) - 1), "header": (0, min(len(out) - 1, 700)),
                  "tail": (max(len(out) - 600, 0), len(out) - 1)}[region]
        pos = draw(st.integers(lo, hi))
        if kind == "flip":
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            out[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif kind == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del out[pos:pos + draw(st.integers(1, 16))]
        else:
            del out[pos:]
    return bytes(out)


# --------------------------------------------------------------------------------------------
# the property tests
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _warm_up() -> None:
    """Pay one-off costs before any case is measured: codec libraries loaded by their first
    decode, Pillow's JPEG 2000 plugin, and the memory a Rust panic's backtrace printing takes
    the first time (``RUST_BACKTRACE=1``): otherwise the first case to touch each of them
    would be charged for it."""
    for syntax in SYNTAXES:
        data = base_bytes(Base(syntax, 32, 32, 8 if syntax == JPEGBaseline8Bit else 12,
                               False, False))
        for reduce in (None, 0.3):
            read_image(data, max_pixels=MAX_PIXELS, reduce_to_spacing_mm=reduce)
    for path in CORPUS_FILES:
        for reduce in (None, 0.3):
            with contextlib.suppress(IntakeError):
                read_image(load_corpus(path), max_pixels=MAX_PIXELS,
                           reduce_to_spacing_mm=reduce)

REDUCE = st.sampled_from([None, None, 0.3, 1.0])


@fuzz_settings(200)
@given(base=bases(), data=st.data())
def test_corrupted_headers_and_bytes(base: Base, data: st.DataObject) -> None:
    """Pixel-module attributes with wrong VRs or absurd values, then random byte damage
    (truncation, flips, insertions, deletions) anywhere in the file."""
    ds = copy.deepcopy(base_dataset(base))
    for _ in range(data.draw(st.integers(0, 3), label="corrupted attributes")):
        keyword = data.draw(st.sampled_from(sorted(PIXEL_MODULE_TAGS)), label="attribute")
        if keyword in INTEGER_ATTRIBUTES and data.draw(st.booleans(), label="well-typed"):
            set_absurd(ds, keyword, data.draw(st.sampled_from(ABSURD_INTEGERS), label="value"))
            continue
        vr, value = data.draw(raw_values(), label="raw value")
        corrupt_attribute(ds, keyword, vr, value)
    try:
        source = dataset_bytes(ds)
    except Exception as exc:  # pydicom cannot write that raw combination: nothing to test
        event(f"unwritable: {type(exc).__name__}")
        source = base_bytes(base)
    source = data.draw(damaged(source), label="damaged bytes")
    check_intake(source, reduce_to_spacing_mm=data.draw(REDUCE, label="reduce"))


@fuzz_settings(200)
@given(base=bases(ENCAPSULATED_SYNTAXES), data=st.data())
def test_broken_encapsulation(base: Base, data: st.DataObject) -> None:
    """Compressed frames cut, flipped, split over fragments, with lying Basic Offset Tables,
    item lengths and delimiters, and codestream headers that claim another frame size."""
    ds = base_dataset(base)
    frame = encapsulated_frame(ds)
    action = data.draw(st.sampled_from(["cut", "flip", "resize", "resize", "none"]),
                       label="frame damage")
    if action == "cut":
        frame = frame[:data.draw(st.integers(0, len(frame)), label="cut at")]
    elif action == "flip":
        frame = data.draw(damaged(frame), label="frame bytes")
    elif action == "resize":
        rows = data.draw(st.sampled_from([1, base.rows, base.rows + 1, 4096, 20000, 65535]),
                         label="claimed rows")
        cols = data.draw(st.sampled_from([1, base.cols, 4096, 20000, 65535]),
                         label="claimed cols")
        components = data.draw(st.sampled_from([1, 1, 3, 4, 255]), label="components")
        tile = data.draw(st.sampled_from([None, 1, 2, 16, 4096]), label="tile size")
        frame = patch_frame_header(frame, base.syntax, rows, cols, components, tile)
    element = data.draw(fragment_layouts(frame), label="encapsulation")
    source = with_pixel_element(base_bytes(base), element)
    check_intake(source, reduce_to_spacing_mm=data.draw(REDUCE, label="reduce"))


BOGUS_SYNTAXES = [b"", b"1.2.3", b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.4.80",
                  b"1.2.840.10008.1.2.4.90", b"1.2.840.10008.1.2.5", b"1.2.840.10008.1.2.2",
                  b"1.2.840.10008.1.2.1.99", b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.1",
                  b"1.2.840.10008.1.2.4.201", b"1.2.840.10008.1.2.4.100", b"\xff\xfe\x00\x01",
                  b"1.2.840.10008.1.2.1\x00\x00", b"1" * 200]


@fuzz_settings(100)
@given(base=bases(), data=st.data())
def test_structure_bombs_and_transfer_syntaxes(base: Base, data: st.DataObject) -> None:
    """Deeply nested or very long sequences, undefined lengths with or without delimiters,
    elements longer than the file, deflate bombs and transfer syntax UIDs that lie."""
    source = base_bytes(base)
    meta, dataset = split_part10(source)
    kind = data.draw(st.sampled_from(["nested", "long", "undefined", "overlong", "syntax",
                                      "deflate-bomb", "meta-length"]), label="kind")
    explicit = base.syntax != ImplicitVRLittleEndian
    if kind in ("nested", "long", "undefined", "overlong") and not is_little_endian_plain(
            base.syntax):
        kind = "syntax"
    if kind == "nested":
        depth = data.draw(st.sampled_from([2, 50, 200, 1000, 30000]), label="depth")
        tag = data.draw(st.sampled_from([0x00091010, 0x00540220, 0x00400275]), label="tag")
        blob = nested_sequence(depth, explicit, tag, delimited=data.draw(st.booleans()))
        source = meta + insert_before_pixel_data(dataset, blob)
    elif kind == "long":
        items = data.draw(st.sampled_from([10, 10, 1000, 12000]), label="items")
        source = meta + insert_before_pixel_data(dataset, long_sequence(items, explicit))
    elif kind == "undefined":
        vr = data.draw(st.sampled_from(["UN", "OB", "UT", "SQ"]), label="vr")
        body = data.draw(st.binary(max_size=64), label="body")
        ending = data.draw(st.sampled_from([SEQUENCE_DELIMITER, ITEM_DELIMITER, b""]),
                           label="ending")
        tag = data.draw(st.sampled_from([0x00091010, 0x00280010, 0x00280030, 0x7FE00010]),
                        label="tag")
        blob = element_le(tag, vr if explicit else None, body, length=UNDEFINED) + ending
        source = meta + insert_before_pixel_data(dataset, blob)
    elif kind == "overlong":
        tag = data.draw(st.sampled_from([0x00091010, 0x00280010, 0x7FE00010]), label="tag")
        length = data.draw(st.sampled_from([2**31, 2**32 - 2, 10**6]), label="length")
        blob = element_le(tag, "OB" if explicit else None, b"\x00" * 16, length=length)
        source = meta + insert_before_pixel_data(dataset, blob)
    elif kind == "syntax":
        syntax = data.draw(st.sampled_from(BOGUS_SYNTAXES), label="transfer syntax")
        source = file_meta(syntax, b"1.2.840.10008.5.1.4.1.1.1.2", b"1.2.3.4") + dataset
    elif kind == "deflate-bomb":
        megabytes = data.draw(st.sampled_from([1, 48]), label="inflated MiB")
        source = deflate_bomb(Base(ExplicitVRLittleEndian, base.rows, base.cols,
                                   base.bits_stored, base.signed, base.monochrome1), megabytes)
    else:
        delta = data.draw(st.sampled_from([-200, -1, 1, 7, 10**6]), label="group length delta")
        source = file_meta(base.syntax.encode(), b"1.2.840.10008.5.1.4.1.1.1.2", b"1.2.3.4",
                           group_length_delta=delta) + dataset
    event(f"kind: {kind}")
    # read_header parses the same way as read_image: corrupted_headers_and_bytes covers it
    check_intake(source, reduce_to_spacing_mm=data.draw(REDUCE, label="reduce"),
                 header_too=False)


# --------------------------------------------------------------------------------------------
# regression corpus
# --------------------------------------------------------------------------------------------



def test_corpus_is_documented() -> None:
    """Every corpus file is listed in the corpus README, and the numbers are unique."""
    readme = (CORPUS / "README.md").read_text()
    numbers = [p.name.split("-", 1)[0] for p in CORPUS_FILES]
    assert len(numbers) == len(set(numbers)), "corpus numbers must be unique"
    for path in CORPUS_FILES:
        assert path.name in readme, f"{path.name} is not described in fuzz_corpus/README.md"


CORPUS_CASES = [pytest.param(path, reduce, id=f"{path.name}-{label}")
                for path in CORPUS_FILES
                for reduce, label in ((None, "full"), (0.3, "reduced"))
                if reduce is None or path.suffix == ".dcm"]  # floods fail before any decoding


@pytest.mark.parametrize(("path", "reduce"), CORPUS_CASES)
def test_corpus_file(path: Path, reduce: float | None) -> None:
    """Each crasher found so far: an Image or a typed refusal, in time and memory."""
    outcome = check_intake(load_corpus(path), reduce_to_spacing_mm=reduce, header_too=False,
                           note=_no_event)
    assert isinstance(outcome.result, Image | IntakeError)
    if isinstance(outcome.result, IntakeError):  # the refusal speaks DICOM, not codec internals
        assert "Panic" not in str(outcome.result), str(outcome.result)
        assert "index out of bounds" not in str(outcome.result), str(outcome.result)
    if path.name.startswith("001-"):
        assert isinstance(outcome.result, IntakeError)
        assert "the decoder failed on malformed data" in str(outcome.result)
