"""Decoding the one frame of an intake image into stored values.

Two decoder families, chosen per frame:

- **imagecodecs** (when installed: the ``serve`` extra), for unsigned single-component frames
  of the compressed syntaxes: libjpeg-turbo for the JPEG processes (baseline, extended,
  lossless, including 12- and 16-bit), CharLS for JPEG-LS, OpenJPEG for JPEG 2000 and HTJ2K.
  On a 4096 x 3328 14-bit image they decode JPEG Lossless SV1 about 5x and JPEG-LS about 4x
  faster than the pydicom plugins (README, "Detection pipeline speed"), and decode files the
  plugins refuse (a 12-bit JPEG Extended scan header libjpeg 6b rejects).
- **pydicom's decoders** (pylibjpeg, pyjpegls plugins) for everything else, and whenever the
  fast decoder fails or gives an unexpected shape or type: they decode again and name the
  failure. ``tests/test_transfer_syntaxes.py`` checks both give the same values on every
  syntax.

JPEG 2000 images may instead be decoded at a reduced resolution (:func:`decode_j2k_reduced`,
Pillow's OpenJPEG ``reduce``) when the model's spacing allows it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sized
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
)

from serving.pipeline.errors import DecodeError, Found, TruncatedPixelDataError
from serving.pipeline.intake.codestream import codestream_of, j2k_precision
from serving.pipeline.intake.parse import failure_text, is_failure
from serving.pipeline.intake.syntaxes import (
    HTJ2K_SYNTAXES,
    J2K_SYNTAXES,
    J2K_UIDS,
    JPEG_LS_SYNTAXES,
)
from serving.pipeline.intake.values import attr as _attr

if TYPE_CHECKING:
    from serving.pipeline.intake.types import ImageHeader

#: Transfer syntax -> the imagecodecs function that decodes its frames first. Bit-exact with
#: pydicom's decoders (tests/test_transfer_syntaxes.py); the lossy JPEG processes are not
#: (libjpeg-turbo's and libjpeg 6b's inverse DCTs differ by 1 in about 5 % of pixels), so
#: they keep pydicom's decoder and use imagecodecs only when it fails (FALLBACK_DECODERS).
FAST_DECODERS: Final[dict[str, str]] = {
    **dict.fromkeys((JPEGLossless, JPEGLosslessSV1), "jpeg8_decode"),
    **dict.fromkeys(JPEG_LS_SYNTAXES, "jpegls_decode"),
    **dict.fromkeys(J2K_SYNTAXES + HTJ2K_SYNTAXES, "jpeg2k_decode"),
}

#: Transfer syntax -> the imagecodecs function tried when pydicom's decoder fails: a 12-bit
#: JPEG Extended scan header that libjpeg 6b rejects and libjpeg-turbo (and GDCM) decode.
FALLBACK_DECODERS: Final[dict[str, str]] = dict.fromkeys(
    (JPEGBaseline8Bit, JPEGExtended12Bit), "jpeg8_decode")

#: Threads OpenJPEG may use for one JPEG 2000 frame.
J2K_THREADS: Final = 2


def fast_decode(frame: bytes, header: ImageHeader) -> npt.NDArray[np.integer[Any]] | None:
    """The stored values of one compressed ``frame`` decoded with imagecodecs, or None when
    this path does not apply (imagecodecs missing, another syntax, signed data, or the decoder
    fails or gives another shape or a non-integer type): the caller then decodes with
    pydicom's decoders, which report the failure."""
    return _imagecodecs_decode(frame, header, FAST_DECODERS.get(header.transfer_syntax_uid))


def _imagecodecs_decode(frame: bytes, header: ImageHeader, name: str | None
                        ) -> npt.NDArray[np.integer[Any]] | None:
    """``frame`` decoded by imagecodecs' function ``name``, or None (see :func:`fast_decode`)."""
    if name is None or header.pixel_representation != 0:
        return None
    try:
        import imagecodecs
    except ImportError:
        return None
    options = {"numthreads": J2K_THREADS} if name == "jpeg2k_decode" else {}
    try:
        array = getattr(imagecodecs, name)(frame, **options)
    except Exception:
        return None
    if not isinstance(array, np.ndarray) or array.shape != (header.rows, header.cols) or \
            array.dtype.kind != "u":
        return None
    return cast(npt.NDArray[np.integer[Any]], array)


def decode_stored(ds: Dataset, header: ImageHeader) -> npt.NDArray[np.integer[Any]]:
    """Decode the one frame of stored values, shape ``(rows, cols)``, as the decoder gives
    them (unused high bits are left to ``settle_stored_bits``): with :func:`fast_decode` when
    it applies, else with pydicom's decoders (which also name any failure).

    Raises:
        TruncatedPixelDataError: too few bytes (uncompressed), or a compressed frame that does
            not decode or decodes to the wrong size.
        DecodeError: any other decoder failure.
    """
    element = ds["PixelData"]
    data = element.value
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(
            "pixel data value is not bytes",
            attribute=_attr("PixelData"),
            value=Found(type(data).__name__),
            expected="bytes",
        )
    uid = UID(header.transfer_syntax_uid)
    if not uid.is_encapsulated:
        data = native_frame(bytes(data), header)
    options: dict[str, Any] = {
        "rows": header.rows,
        "columns": header.cols,
        "samples_per_pixel": 1,
        "bits_allocated": header.bits_allocated,
        "bits_stored": header.bits_stored,
        "pixel_representation": header.pixel_representation,
        "photometric_interpretation": header.photometric_interpretation,
        "number_of_frames": 1,
        "pixel_keyword": "PixelData",
        "pixel_vr": element.VR,
        "correct_unused_bits": False,  # done by _settle_stored_bits, which looks first
    }
    if uid.is_encapsulated:
        fast = fast_decode(_first_frame(bytes(data)), header)
        if fast is not None:
            return fast
    decoder = get_decoder(uid)
    if uid == RLELossless and "pylibjpeg" in decoder.available_plugins:
        # pydicom's own RLE decoder, the fallback when pylibjpeg-rle refuses a frame, expands
        # every segment whole (up to 64x the input) before checking its length (fuzz corpus
        # 006): decode with the bounded pylibjpeg-rle alone when it is installed.
        options["decoding_plugin"] = "pylibjpeg"
    try:
        array, _ = decoder.as_array(bytes(data), index=0, raw=True, **options)
    except BaseException as exc:
        if not is_failure(exc):  # a Rust decoder's PanicException is a failure, see there
            raise
        rescued = _imagecodecs_decode(_first_frame(bytes(data)), header,
                                      FALLBACK_DECODERS.get(uid))
        if rescued is not None:
            return rescued
        raise pixel_data_failure(
            TruncatedPixelDataError if uid.is_encapsulated else DecodeError,
            f"pixel data cannot be decoded as {header.transfer_syntax_name}",
            data, exc, expected=f"one {header.rows} x {header.cols} frame",
        ) from exc
    if array.shape != (header.rows, header.cols):
        raise TruncatedPixelDataError(
            "pixel data decodes to the wrong size",
            attribute=_attr("PixelData"),
            value=Found(f"shape {array.shape}"),
            expected=f"({header.rows}, {header.cols})",
        )
    return cast(npt.NDArray[np.integer[Any]], array)


def pixel_data_failure(
    error: type[DecodeError], problem: str, data: Sized, exc: BaseException, *, expected: str
) -> DecodeError:
    """The error to raise (``from exc``) when the Pixel Data (7FE0,0010) value ``data`` cannot
    be decoded, or split into frames, because of ``exc``: ``error`` with the message
    ``problem``, the attribute ``PixelData``, the value found ``"<len(data)> bytes; <the
    failure>"`` (:func:`~serving.pipeline.intake.parse.failure_text`: a Rust codec's panic is
    not quoted) and ``expected``. Returns the error; raises nothing itself."""
    return error(
        problem,
        attribute=_attr("PixelData"),
        value=Found(f"{len(data)} bytes; {failure_text(exc)}"),
        expected=expected,
    )


def reduction(header: ImageHeader, target_mm: float | None) -> int:
    """Power-of-two decode reduction (1 = none) for a JPEG 2000 image and a target spacing."""
    if target_mm is None or header.spacing_mm is None or \
            header.transfer_syntax_uid not in J2K_UIDS:
        return 1
    if not (math.isfinite(target_mm) and target_mm > 0):
        raise ValueError(f"reduce_to_spacing_mm must be a positive number, got {target_mm!r}")
    ratio = target_mm / max(header.spacing_mm)
    k = math.floor(math.log2(ratio) + 1e-9) if ratio >= 1 else 0
    return 2 ** min(max(k, 0), 3)




def decode_j2k_reduced(
    ds: Dataset, header: ImageHeader, scale: int
) -> npt.NDArray[np.integer[Any]] | None:
    """Stored values at ``1/scale`` resolution from the JPEG 2000 resolution levels (Pillow's
    ``reduce``), or None when this path does not apply (signed or multi-component data, an
    unexpected mode or size, a decoder failure): the caller then decodes in full."""
    from PIL import Image as PILImage  # the serve extra's Pillow; imported only when used
    from pydicom.encaps import generate_frames

    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        info = j2k_precision(codestream_of(frame))
        if info is None or info[1] or info[2] != 1 or info[0] > 16:
            return None
        with PILImage.open(io.BytesIO(frame)) as im:
            im.reduce = int(math.log2(scale))  # type: ignore[method-assign, assignment]
            im.load()
            mode = im.mode
            array = np.asarray(im)
    except Exception:  # any decoder trouble: fall back to the full, checked decode
        return None
    expected = (-(-header.rows // scale), -(-header.cols // scale))
    if array.shape != expected or mode not in ("I;16", "L"):
        return None
    if mode == "I;16" and info[0] < 16:  # Pillow scales the samples up to 16 bits
        shift = 16 - info[0]
        array = (array.astype(np.uint32) + (1 << (shift - 1))) >> shift
    return cast(npt.NDArray[np.integer[Any]], array.astype(np.uint16))


def native_frame(data: bytes, header: ImageHeader) -> bytes:
    """The bytes of the one uncompressed frame; :class:`TruncatedPixelDataError` if short."""
    expected = header.rows * header.cols * header.bits_allocated // 8
    if len(data) < expected:
        raise TruncatedPixelDataError(
            "pixel data is shorter than the image",
            attribute=_attr("PixelData"),
            value=Found(f"{len(data)} bytes"),
            expected=f"Rows x Columns x BitsAllocated / 8 = {header.rows} x {header.cols} x "
            f"{header.bits_allocated // 8} = {expected} bytes",
        )
    return data[: expected + expected % 2]


def _first_frame(pixel_data: bytes) -> bytes:
    """The one frame of encapsulated Pixel Data (empty when it cannot be found: the fast
    decoder then fails and pydicom's decoder reports why)."""
    try:
        return get_frame(pixel_data, 0, number_of_frames=1)
    except Exception:
        return b""
