"""The frame headers of compressed pixel data, read before any decoder sees the frame.

JPEG (ISO 10918-1, SOFn segment), JPEG-LS (ISO 14495-1, SOF55) and JPEG 2000 / HTJ2K
(ISO 15444-1 and -15, SIZ segment) codestreams state their own size, components and sample
precision. Decoders allocate what the codestream claims, so the intake compares it with Rows,
Columns and BitsStored first (:func:`check_frame_header`). A JPEG 2000 frame wrapped in a JP2
file-format header (PS3.5 A.4.4 wants the bare codestream, but such files exist) is read from
its ``jp2c`` box (:func:`codestream_of`).
"""

from __future__ import annotations

from typing import Final

from pydicom.dataset import Dataset
from pydicom.encaps import get_frame

from serving.pipeline.errors import Found, TruncatedPixelDataError
from serving.pipeline.intake.syntaxes import J2K_UIDS, JPEG_UIDS
from serving.pipeline.intake.values import attr as _attr

#: The JP2 signature box (ISO 15444-1 I.5.1) that starts a JP2 file.
JP2_SIGNATURE: Final = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_SOC_SIZ: Final = b"\xff\x4f\xff\x51"


#: Start-of-frame markers: SOF0-3, 5-7, 9-11, 13-15 (JPEG) and SOF55 (JPEG-LS).
_SOF_MARKERS: Final = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB,
                                 0xCD, 0xCE, 0xCF, 0xF7})


def check_frame_header(ds: Dataset, uid: str, rows: int, cols: int) -> None:
    """Refuse a JPEG / JPEG-LS / JPEG 2000 frame whose own frame header does not give
    ``Rows x Columns`` and one component, before any decoder sees it.

    The decoders allocate what the codestream's header claims, not what Rows and Columns
    (checked against ``max_pixels``) say: an 8 KB frame claiming 20000 x 20000 took 2.4 GB
    and up to a minute to refuse (fuzz corpus 003-005). Such a frame could never decode to
    the image anyway. The frame is taken as pydicom's decoders take it; when that fails, the
    decoder fails the same way and reports it.

    Raises:
        TruncatedPixelDataError: no frame header found, or it gives another size.
    """
    if uid not in J2K_UIDS and uid not in JPEG_UIDS:
        return
    try:
        frame = get_frame(ds.PixelData, 0, number_of_frames=1)
    except Exception:
        return
    found = j2k_frame_size(codestream_of(frame)) if uid in J2K_UIDS \
        else jpeg_frame_header(frame)
    found = found[:3] if found else None
    if found != (rows, cols, 1):
        raise TruncatedPixelDataError(
            "the compressed frame does not match the image header",
            attribute=_attr("PixelData"),
            value=Found("no frame header" if found is None
                        else f"a {found[0]} x {found[1]} frame of {found[2]} component(s)"),
            expected=f"a {rows} x {cols} frame of 1 component (Rows x Columns)",
        )


def j2k_frame_size(frame: bytes) -> tuple[int, int, int] | None:
    """``(rows, cols, components)`` from the SIZ segment of a JPEG 2000 codestream that
    starts with SOC (see :func:`codestream_of` for JP2-wrapped frames); None if not found."""
    if len(frame) < 42 or frame[:4] != _SOC_SIZ:
        return None
    xsiz, ysiz, xosiz, yosiz = (int.from_bytes(frame[i : i + 4], "big") for i in (8, 12, 16, 20))
    return ysiz - yosiz, xsiz - xosiz, int.from_bytes(frame[40:42], "big")


def jpeg_frame_header(frame: bytes) -> tuple[int, int, int, int] | None:
    """``(rows, cols, components, sample precision)`` from the first SOFn/SOF55 segment of a
    JPEG or JPEG-LS codestream that starts with SOI, walking the marker segments; None if
    there is none before the first scan."""
    if frame[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(frame):
        if frame[pos] != 0xFF:
            return None
        marker = frame[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or SOS before any frame header
            return None
        if marker in _SOF_MARKERS:
            if pos + 10 > len(frame):
                return None
            rows = int.from_bytes(frame[pos + 5 : pos + 7], "big")
            cols = int.from_bytes(frame[pos + 7 : pos + 9], "big")
            return rows, cols, frame[pos + 9], frame[pos + 4]
        length = int.from_bytes(frame[pos + 2 : pos + 4], "big")
        if length < 2:
            return None
        pos += 2 + length
    return None


def j2k_precision(codestream: bytes) -> tuple[int, bool, int] | None:
    """``(bit depth, signed, components)`` from the codestream's SIZ marker, or None."""
    if len(codestream) < 43 or codestream[:4] != _SOC_SIZ:
        return None
    components = int.from_bytes(codestream[40:42], "big")
    ssiz = codestream[42]
    return (ssiz & 0x7F) + 1, bool(ssiz & 0x80), components


def codestream_of(frame: bytes) -> bytes:
    """The JPEG 2000 codestream of ``frame``: the frame itself, or the content of the
    contiguous codestream box (``jp2c``) of a JP2-wrapped frame; ``frame`` unchanged when it
    is neither (the size check then fails on it)."""
    if not frame.startswith(JP2_SIGNATURE):
        return frame
    pos = 0
    while pos + 8 <= len(frame):
        length = int.from_bytes(frame[pos : pos + 4], "big")
        kind = frame[pos + 4 : pos + 8]
        header = 8
        if length == 1 and pos + 16 <= len(frame):  # extended length
            length, header = int.from_bytes(frame[pos + 8 : pos + 16], "big"), 16
        elif length == 0:  # the box runs to the end
            length = len(frame) - pos
        if kind == b"jp2c":
            return frame[pos + header : pos + length]
        if length < header:
            break
        pos += length
    return frame


def codestream_bits(ds: Dataset, uid: str) -> int | None:
    """The sample precision the compressed frame's own header states (SIZ or SOFn), or
    None when it is not found or the syntax is not JPEG / JPEG-LS / JPEG 2000."""
    if uid not in J2K_UIDS and uid not in JPEG_UIDS:
        return None
    try:
        frame = get_frame(ds.PixelData, 0, number_of_frames=1)
    except Exception:
        return None
    if uid in J2K_UIDS:
        info = j2k_precision(codestream_of(frame))
        return info[0] if info else None
    found = jpeg_frame_header(frame)
    return found[3] if found else None
