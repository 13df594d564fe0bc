"""Round trips through every transfer syntax the intake must decode.

A known random image is encoded (pydicom's writer for native and deflated syntaxes,
``Dataset.compress`` for RLE / JPEG-LS / JPEG 2000, DCMTK ``dcmcjpeg`` for the JPEG processes)
and read back with :func:`serving.pipeline.dicom_in.read_image`: lossless syntaxes must give the
exact stored values, lossy ones stay within a tolerance. ``dcmcjpeg`` missing: skipped, or
failed when ``CI=true``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
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

from serving.pipeline.dicom_in import SUPPORTED_TRANSFER_SYNTAXES, read_header, read_image
from tests.dicomgen import make_dataset, smooth_pixels, stored_pixels, stored_range, to_bytes

LOSSLESS = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLossless,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
]

#: (transfer syntax, bits stored, encoding options, max abs error allowed in stored units:
#: the NEAR parameter for JPEG-LS, a fraction of the range for JPEG 2000 and JPEG).
#: Lossy codecs get a smooth image, unsigned only: DCMTK re-labels lossy signed JPEG as
#: unsigned and near-lossless JPEG-LS of two's complement data wraps around at the sign.
LOSSY: list[tuple[str, int, dict[str, Any], float]] = [
    (JPEGLSNearLossless, 8, {"jls_error": 2}, 2),
    (JPEGLSNearLossless, 12, {"jls_error": 3}, 3),
    (JPEGLSNearLossless, 16, {"jls_error": 5}, 5),
    (JPEG2000, 8, {"j2k_cr": [5]}, 0.02 * 255),
    (JPEG2000, 12, {"j2k_cr": [5]}, 0.02 * 4095),
    (JPEG2000, 16, {"j2k_cr": [5]}, 0.02 * 65535),
    (JPEGBaseline8Bit, 8, {}, 0.05 * 255),
    (JPEGExtended12Bit, 8, {}, 0.05 * 255),
    (JPEGExtended12Bit, 12, {}, 0.05 * 4095),
    (HTJ2K, 12, {"reversible": False}, 0.02 * 4095),
    (HTJ2K, 16, {"reversible": False}, 0.02 * 65535),
]


def case_id(syntax: str, bits: int, signed: bool) -> str:
    return f"{UID(syntax).name}-{bits}bit-{'signed' if signed else 'unsigned'}"


LOSSLESS_CASES = [
    pytest.param(syntax, bits, signed, id=case_id(syntax, bits, signed))
    for syntax in LOSSLESS
    for bits in (8, 12, 16)
    for signed in (False, True)
]


@pytest.mark.parametrize(("syntax", "bits_stored", "signed"), LOSSLESS_CASES)
def test_lossless_round_trip_is_exact(syntax: str, bits_stored: int, signed: bool) -> None:
    ds = make_dataset(bits_stored=bits_stored, signed=signed, seed=bits_stored)
    data = to_bytes(ds, syntax)
    image = read_image(data)
    assert image.transfer_syntax_uid == syntax
    assert image.transfer_syntax_name == UID(syntax).name
    assert image.pixel_representation == int(signed)
    np.testing.assert_array_equal(image.pixels, stored_pixels(ds))
    lo, hi = stored_range(bits_stored, signed)
    assert (image.pixels.min(), image.pixels.max()) == (lo, hi)  # the full range survives
    assert read_header(data) == image.header


@pytest.mark.parametrize(
    ("syntax", "bits_stored", "options", "tolerance"),
    [pytest.param(*case, id=case_id(case[0], case[1], False)) for case in LOSSY],
)
def test_lossy_round_trip_is_close(
    syntax: str, bits_stored: int, options: dict[str, Any], tolerance: float
) -> None:
    pixels = smooth_pixels(64, 48, bits_stored, seed=bits_stored)
    ds = make_dataset(bits_stored=bits_stored, pixels=pixels)
    image = read_image(to_bytes(ds, syntax, **options))
    assert image.transfer_syntax_uid == syntax
    error = np.abs(image.pixels.astype(np.float64) - pixels.astype(np.float64))
    assert error.max() <= tolerance, f"max error {error.max()} > {tolerance}"
    lo, hi = stored_range(bits_stored, False)
    assert lo <= image.pixels.min() and image.pixels.max() <= hi


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLosslessSV1])
def test_monochrome1_and_rescale_through_a_codec(syntax: str) -> None:
    ds = make_dataset(photometric="MONOCHROME1", rescale=(2.0, -50.0))
    image = read_image(to_bytes(ds, syntax))
    expected = (4095 * 2.0 - 50.0) - (stored_pixels(ds).astype(np.float64) * 2.0 - 50.0)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-3)


def test_compressed_file_from_a_path(tmp_path: Path) -> None:
    ds = make_dataset(bits_stored=14)
    path = tmp_path / "j2k.dcm"
    path.write_bytes(to_bytes(ds, JPEG2000Lossless))
    np.testing.assert_array_equal(read_image(path).pixels, stored_pixels(ds))


def test_every_supported_syntax_is_exercised() -> None:
    exercised = set(LOSSLESS) | {case[0] for case in LOSSY}
    assert exercised == set(SUPPORTED_TRANSFER_SYNTAXES)


COMPRESSED_CASES = [
    pytest.param(syntax, bits, {}, id=case_id(syntax, bits, False))
    for syntax in LOSSLESS if UID(syntax).is_encapsulated and syntax != RLELossless
    for bits in (8, 12, 16)
] + [pytest.param(syntax, bits, options, id=case_id(syntax, bits, False) + "-lossy")
     for syntax, bits, options, _ in LOSSY
     if syntax not in (JPEGBaseline8Bit, JPEGExtended12Bit)]  # pydicom's decoder first


@pytest.mark.parametrize(("syntax", "bits_stored", "options"), COMPRESSED_CASES)
def test_fast_decoder_matches_the_pydicom_decoders(
    syntax: str, bits_stored: int, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """imagecodecs (serving.pipeline.intake.decode.fast_decode) and pydicom's plugins give the same
    stored values, bit for bit, on every compressed syntax, lossy ones included."""
    from serving.pipeline.intake import decode

    pixels = smooth_pixels(64, 48, bits_stored, seed=bits_stored) if options else None
    ds = make_dataset(bits_stored=bits_stored, pixels=pixels, seed=bits_stored)
    data = to_bytes(ds, syntax, **options)
    header = read_header(data)
    frame = decode._first_frame(pydicom.dcmread(io.BytesIO(data)).PixelData)
    fast = decode.fast_decode(frame, header)
    assert fast is not None, "the fast decoder did not apply"
    monkeypatch.setattr(decode, "FAST_DECODERS", {})
    reference = read_image(data)
    assert decode.fast_decode(frame, header) is None
    np.testing.assert_array_equal(read_image(data).pixels, reference.pixels)
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(data).pixels, reference.pixels)


@pytest.mark.parametrize("fast", [True, False], ids=["imagecodecs", "pydicom"])
def test_jp2_wrapped_frame_is_decoded(fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A JPEG 2000 frame wrapped in a JP2 file-format header (field case Q1) gives the image,
    with either decoder family."""
    import imagecodecs
    from pydicom.encaps import encapsulate

    from serving.pipeline.intake import decode

    if not fast:
        monkeypatch.setattr(decode, "FAST_DECODERS", {})
    ds = make_dataset(bits_stored=12, seed=3)
    wrapped = imagecodecs.jpeg2k_encode(stored_pixels(ds), level=0, codecformat="jp2")
    assert wrapped.startswith(b"\x00\x00\x00\x0cjP  ")
    expected = stored_pixels(ds)
    ds.PixelData = encapsulate([wrapped])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    np.testing.assert_array_equal(read_image(buffer.getvalue()).pixels, expected)


def test_jpeg_extended_that_libjpeg6b_rejects_is_decoded() -> None:
    """pydicom's own ``JPEG-lossy.dcm`` (field case Q6): a 12-bit JPEG Extended frame whose scan
    header the libjpeg plugin rejects; libjpeg-turbo decodes it."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("JPEG-lossy.dcm")
    assert path is not None
    image = read_image(path, allow_missing_spacing=True)
    assert image.transfer_syntax_uid == JPEGExtended12Bit
    assert image.pixels.shape == (1024, 256)
    assert 0 < image.pixels.max() < 4096
