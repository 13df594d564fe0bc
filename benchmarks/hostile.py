"""Hostile inputs of the classes that the resource bounds are tested and benchmarked with.

Each builder returns bytes that a client could send as one DICOM instance (or one request
body), small to send and expensive to parse without the intake's guards
(:mod:`serving.pipeline.intake.parse`):

- :func:`deflate_bomb`: a Deflated Explicit VR Little Endian file of about 2 MB whose data set
  inflates to more than 2 GiB (a private OB element of zeros);
- :func:`element_flood`: a file whose data set is megabytes of empty private elements;
- :func:`zeros`: an all-zero body (no preamble, no data set);
- :func:`many_parts_body`: a ``multipart/related`` body of a great many empty parts.

Used by ``tests/test_untrusted_input.py`` and ``benchmarks/http_load.py --hostile``.
"""

from __future__ import annotations

import struct
import zlib
from functools import cache
from typing import Final

from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

MIB: Final = 1024 * 1024
MG_FOR_PRESENTATION: Final = "1.2.840.10008.5.1.4.1.1.1.2"
#: The SOP Instance UID the hostile instances carry (the gateway needs one to match the
#: C-STORE request's Affected SOP Instance UID).
HOSTILE_SOP_INSTANCE: Final = "1.2.826.0.1.3680043.8.498.1"
HOSTILE_STUDY: Final = "1.2.826.0.1.3680043.8.498.2"
_CHUNK: Final = 64 * MIB


def _element(tag: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little-endian element (4-byte length for OB/UN/SQ, else 2)."""
    group, elem = tag >> 16, tag & 0xFFFF
    if vr in ("OB", "OW", "UN", "SQ", "UT"):
        return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\x00" * (len(raw) % 2)


def _part10(syntax: str, dataset: bytes) -> bytes:
    """A 128-byte preamble, ``DICM``, a minimal file meta and ``dataset``."""
    meta = b"".join([
        _element(0x00020001, "OB", b"\x00\x01"),
        _element(0x00020002, "UI", _uid(MG_FOR_PRESENTATION)),
        _element(0x00020003, "UI", _uid(HOSTILE_SOP_INSTANCE)),
        _element(0x00020010, "UI", _uid(syntax)),
    ])
    group_length = _element(0x00020000, "UL", struct.pack("<I", len(meta)))
    return b"\x00" * 128 + b"DICM" + group_length + meta + dataset


def _identity() -> bytes:
    """The few attributes that make a data set an MG instance of a study."""
    return b"".join([
        _element(0x00080016, "UI", _uid(MG_FOR_PRESENTATION)),
        _element(0x00080018, "UI", _uid(HOSTILE_SOP_INSTANCE)),
        _element(0x00080060, "CS", b"MG"),
        _element(0x0020000D, "UI", _uid(HOSTILE_STUDY)),
    ])


@cache
def deflate_bomb(inflated_chunks: int = 34) -> bytes:
    """A Deflated Explicit VR Little Endian instance whose data set inflates to
    ``inflated_chunks`` x 64 MiB of zeros (34: 2.1 GiB from about 2.2 MB) in a private OB
    element, followed by a tiny Pixel Data element.

    Deflate back-references reach 32 KiB back, so a block run that only repeats zeros can be
    emitted once and repeated: building the bomb costs two 64 MiB compressions, not 2 GiB.
    """
    if inflated_chunks < 2:
        raise ValueError("inflated_chunks must be >= 2")
    size = inflated_chunks * _CHUNK
    head = _identity() + struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, size)
    zeros_chunk = b"\x00" * _CHUNK
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = compressor.compress(head) + compressor.compress(zeros_chunk) + \
        compressor.flush(zlib.Z_SYNC_FLUSH)
    repeat = compressor.compress(zeros_chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
    tail = compressor.compress(_element(0x7FE00010, "OB", b"\x00" * 4)) + compressor.flush()
    body = first + repeat * (inflated_chunks - 1) + tail
    return _part10(DeflatedExplicitVRLittleEndian, body)


@cache
def element_flood(megabytes: int = 20, count: int | None = None) -> bytes:
    """An Explicit VR Little Endian instance whose data set, after its identity, is
    ``megabytes`` MiB (or ``count`` elements) of empty private LO elements with distinct,
    ascending tags (8 bytes each: about 2.6 million for 20 MiB, in odd groups from 0021)."""
    element = struct.Struct("<HH2sH")
    count = megabytes * MIB // element.size if count is None else count
    chunks, group = [], 0x0021
    while count > 0:
        n = min(count, 0xFFFF - 0x1000)
        chunks.append(b"".join(element.pack(group, 0x1000 + i, b"LO", 0) for i in range(n)))
        count -= n
        group += 2
    return _part10(ExplicitVRLittleEndian, _identity() + b"".join(chunks))


def zeros(megabytes: int = 96) -> bytes:
    """``megabytes`` MiB of zero bytes."""
    return b"\x00" * (megabytes * MIB)


def many_parts_body(parts: int, boundary: str = "hostile") -> bytes:
    """A ``multipart/related; type="application/dicom"`` body of ``parts`` empty parts."""
    part = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n\r\n".encode()
    return part * parts + f"--{boundary}--\r\n".encode()
