"""The transfer syntaxes the intake decodes, in named groups by pixel data encoding.

Each group is a tuple in a fixed order (tables keyed by syntax keep it); the frozensets
:data:`J2K_UIDS` and :data:`JPEG_UIDS` say where a compressed frame states its own size.
:data:`serving.pipeline.intake.types.SUPPORTED_TRANSFER_SYNTAXES` is every group together.
"""

from __future__ import annotations

from typing import Final

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
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

__all__ = [
    "HTJ2K_SYNTAXES",
    "J2K_SYNTAXES",
    "J2K_UIDS",
    "JPEG_LS_SYNTAXES",
    "JPEG_PROCESS_SYNTAXES",
    "JPEG_UIDS",
    "NATIVE_SYNTAXES",
    "RLE_SYNTAXES",
]

#: Native (not encapsulated) pixel data: Implicit VR Little Endian, Explicit VR Little Endian,
#: Deflated Explicit VR Little Endian, Explicit VR Big Endian.
NATIVE_SYNTAXES: Final[tuple[str, ...]] = (
    ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
#: The JPEG processes (ISO 10918-1): baseline (1), extended (2/4), lossless (14) and lossless
#: first-order prediction (14 SV1).
JPEG_PROCESS_SYNTAXES: Final[tuple[str, ...]] = (
    JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1,
)
#: JPEG-LS (ISO 14495-1): lossless and near-lossless.
JPEG_LS_SYNTAXES: Final[tuple[str, ...]] = (JPEGLSLossless, JPEGLSNearLossless)
#: JPEG 2000 (ISO 15444-1): lossless only, and lossless or lossy.
J2K_SYNTAXES: Final[tuple[str, ...]] = (JPEG2000Lossless, JPEG2000)
#: High-Throughput JPEG 2000 (ISO 15444-15): lossless, lossless RPCL, and lossless or lossy.
HTJ2K_SYNTAXES: Final[tuple[str, ...]] = (HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K)
#: RLE Lossless (PS3.5 annex G).
RLE_SYNTAXES: Final[tuple[str, ...]] = (RLELossless,)

#: JPEG 2000 (15444-1) and High-Throughput JPEG 2000 (15444-15) transfer syntaxes: the frame
#: size is in the SIZ segment of the codestream.
J2K_UIDS: Final[frozenset[str]] = frozenset(J2K_SYNTAXES + HTJ2K_SYNTAXES)
#: JPEG (10918) and JPEG-LS (14495) transfer syntaxes: frame size in an SOFn / SOF55 segment.
JPEG_UIDS: Final[frozenset[str]] = frozenset(JPEG_PROCESS_SYNTAXES + JPEG_LS_SYNTAXES)
