"""Unit tests of the DICOM intake (serving.pipeline.dicom_in): sources, rejections, pixel
values (rescale, MONOCHROME1), spacing precedence, laterality, view, orientation."""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from serving.pipeline import errors
from serving.pipeline.dicom_in import (
    Image,
    ImageHeader,
    read_header,
    read_image,
)
from serving.pipeline.errors import (
    ColorImageError,
    DecodeError,
    ImageTooLargeError,
    IntakeError,
    InvalidHeaderError,
    InvalidSpacingError,
    MissingSpacingError,
    MultiFrameError,
    NoPixelDataError,
    NotDicomError,
    TruncatedPixelDataError,
    UnsupportedPhotometricError,
    UnsupportedSopClassError,
    UnsupportedTransferSyntaxError,
)
from tests.dicomgen import (
    BASIC_TEXT_SR,
    BREAST_TOMOSYNTHESIS,
    CR_IMAGE,
    CT_IMAGE,
    DX_FOR_PRESENTATION,
    DX_FOR_PROCESSING,
    MG_FOR_PRESENTATION,
    MG_FOR_PROCESSING,
    MULTIFRAME_GRAYSCALE_BYTE_SC,
    MULTIFRAME_GRAYSCALE_WORD_SC,
    SECONDARY_CAPTURE,
    VIEW_SRT,
    make_dataset,
    random_pixels,
    set_raw,
    stored_pixels,
    to_bytes,
    write,
)

PIXEL_SPACING = 0x00280030
IMAGER_PIXEL_SPACING = 0x00181164
RESCALE_SLOPE = 0x00281053


def rejects(
    source: Any,
    error_type: type[IntakeError],
    code: str,
    attribute: str | None,
    found: str,
    **kwargs: Any,
) -> IntakeError:
    """Assert ``read_image(source)`` raises exactly ``error_type`` with that code, naming
    ``attribute`` (keyword) and the ``found`` value in its message; return the error."""
    with pytest.raises(error_type) as info:
        read_image(source, **kwargs)
    error = info.value
    assert type(error) is error_type
    assert error.code == code
    message = str(error)
    if attribute is not None:
        assert error.attribute is not None and attribute in error.attribute
        assert attribute in message
    assert found in message, message
    assert error.value is not None and found in error.value
    return error


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


class NonSeekable(io.RawIOBase):
    """A read-only stream that cannot seek (like a socket or a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


class CountingReader(io.BytesIO):
    """A BytesIO that counts the bytes handed out by ``read``."""

    bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def test_all_source_kinds_give_the_same_image(tmp_path: Path) -> None:
    ds = make_dataset()
    data = to_bytes(ds)
    path = write(ds, tmp_path / "a.dcm")
    with path.open("rb") as fp:
        from_file = read_image(fp)
    sources: list[Any] = [
        data,
        bytearray(data),
        memoryview(data),
        path,
        str(path),
        io.BytesIO(data),
        NonSeekable(data),
        pydicom.dcmread(io.BytesIO(data)),
        ds,
    ]
    expected = stored_pixels(ds).astype(np.float32)
    for source in sources:
        image = read_image(source)
        assert image.header == from_file.header
        np.testing.assert_array_equal(image.pixels, expected)
    assert from_file.shape == (64, 48)


def test_file_object_is_read_from_its_current_position() -> None:
    data = to_bytes(make_dataset())
    stream = io.BytesIO(b"junk" + data)
    stream.seek(4)
    assert read_image(stream).rows == 64


def test_dataset_source_is_not_modified() -> None:
    ds = pydicom.dcmread(io.BytesIO(to_bytes(make_dataset(), RLELossless)))
    before = copy.deepcopy(ds)
    read_image(ds)
    assert ds == before
    assert ds.file_meta.TransferSyntaxUID == RLELossless


def test_dataset_without_file_meta_is_assumed_explicit_little_endian() -> None:
    ds = make_dataset()
    del ds.file_meta
    image = read_image(ds)
    assert image.transfer_syntax_uid == ExplicitVRLittleEndian
    assert any("TransferSyntaxUID" in w for w in image.warnings)


def test_preamble_less_data_set_is_read_in_its_own_encoding() -> None:
    ds = make_dataset()
    raw = to_bytes(ds, ImplicitVRLittleEndian, file_meta=False)
    assert raw[128:132] != b"DICM"
    image = read_image(raw)
    assert image.transfer_syntax_uid == ImplicitVRLittleEndian
    np.testing.assert_array_equal(image.pixels, stored_pixels(ds))


def test_wrong_source_type_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        read_image(42)  # type: ignore[arg-type]


def test_missing_path_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "absent.dcm")


def test_max_pixels_must_be_positive() -> None:
    with pytest.raises(ValueError):
        read_image(make_dataset(), max_pixels=0)


# --------------------------------------------------------------------------------------------
# The Image itself
# --------------------------------------------------------------------------------------------


def test_image_is_frozen_and_its_pixels_read_only() -> None:
    image = read_image(make_dataset())
    with pytest.raises(dataclasses.FrozenInstanceError):
        image.rows = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        image.pixels[0, 0] = 1.0
    assert image.pixels.dtype == np.float32
    assert image.pixels.shape == (image.rows, image.cols)


def test_image_fields_from_the_header() -> None:
    ds = make_dataset(window=(2000, 4000), extra={"StudyInstanceUID": "1.2.3.4"})
    image = read_image(ds)
    assert isinstance(image, ImageHeader)
    assert image.sop_class_uid == MG_FOR_PRESENTATION
    assert image.sop_class_name == "MG For Presentation"
    assert image.modality == "MG"
    assert image.presentation_intent == "FOR PRESENTATION"
    assert image.study_instance_uid == "1.2.3.4"
    assert image.series_instance_uid == ds.SeriesInstanceUID
    assert image.sop_instance_uid == ds.SOPInstanceUID
    assert image.patient_id == "GALACTO-TEST"
    assert image.accession_number == "ACC0001"
    assert image.manufacturer == "galacto tests"
    assert (image.bits_allocated, image.bits_stored, image.high_bit) == (16, 12, 11)
    assert image.pixel_representation == 0
    assert image.photometric_interpretation == "MONOCHROME2"
    assert image.transfer_syntax_name == "Explicit VR Little Endian"
    assert (image.window_center, image.window_width) == (2000.0, 4000.0)
    assert image.warnings == ()


def test_window_is_kept_but_not_applied() -> None:
    ds = make_dataset(window=(100, 10))
    image = read_image(ds)
    np.testing.assert_array_equal(image.pixels, stored_pixels(ds))
    assert image.pixels.max() == 4095.0


def test_images_compare_by_header_and_pixels() -> None:
    ds = make_dataset()
    assert read_image(ds) == read_image(ds)
    other = copy.deepcopy(ds)
    other.PixelData = random_pixels(64, 48, 12, seed=1).tobytes()
    assert read_image(ds) != read_image(other)


def test_read_header_equals_the_image_header() -> None:
    data = to_bytes(make_dataset(view="MLO", laterality="R"))
    header = read_header(data)
    assert type(header) is ImageHeader
    assert header == read_image(data).header


def test_read_header_does_not_read_the_pixel_data() -> None:
    ds = make_dataset(rows=512, cols=512, pixels=random_pixels(512, 512, 12))
    stream = CountingReader(to_bytes(ds))
    header = read_header(stream)
    assert header.shape == (512, 512)
    assert stream.bytes_read < 16_384 < 512 * 512 * 2


def test_read_header_does_not_decode(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.PixelData = encapsulate([b"\xff\xd8 not a jpeg stream"])
    ds.file_meta.TransferSyntaxUID = RLELossless
    path = tmp_path / "garbage.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert read_header(path).transfer_syntax_uid == RLELossless
    with pytest.raises(TruncatedPixelDataError):
        read_image(path)


# --------------------------------------------------------------------------------------------
# Pixel values
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signed", [False, True])
def test_monochrome2_pixels_are_the_stored_values(signed: bool) -> None:
    ds = make_dataset(bits_stored=12, signed=signed)
    image = read_image(ds)
    np.testing.assert_array_equal(image.pixels, stored_pixels(ds))
    assert image.value_range == ((-2048.0, 2047.0) if signed else (0.0, 4095.0))


@pytest.mark.parametrize(("signed", "max_possible"), [(False, 4095), (True, 2047)])
def test_monochrome1_is_inverted_from_the_largest_possible_value(
    signed: bool, max_possible: int
) -> None:
    ds = make_dataset(photometric="MONOCHROME1", signed=signed)
    image = read_image(ds)
    np.testing.assert_array_equal(image.pixels, max_possible - stored_pixels(ds).astype(float))
    assert image.value_range == (0.0, 4095.0)
    assert image.pixels.min() >= 0.0
    assert image.photometric_interpretation == "MONOCHROME1"


def test_rescale_slope_and_intercept_are_applied() -> None:
    ds = make_dataset(rescale=(0.5, -100.0))
    image = read_image(ds)
    expected = stored_pixels(ds).astype(np.float64) * 0.5 - 100.0
    np.testing.assert_allclose(image.pixels, expected, rtol=0, atol=1e-3)
    assert image.value_range == (-100.0, 4095 * 0.5 - 100.0)
    assert (image.rescale_slope, image.rescale_intercept) == (0.5, -100.0)


def test_rescale_then_monochrome1_inversion() -> None:
    ds = make_dataset(photometric="MONOCHROME1", rescale=(2.0, 10.0))
    image = read_image(ds)
    rescaled = stored_pixels(ds).astype(np.float64) * 2.0 + 10.0
    np.testing.assert_allclose(image.pixels, (4095 * 2.0 + 10.0) - rescaled, atol=1e-3)
    assert image.value_range == (0.0, 8190.0)


def test_unused_high_bits_are_ignored() -> None:
    stored = random_pixels(64, 48, 12)
    polluted = stored | np.uint16(0xA000)  # overlay bits above BitsStored
    image = read_image(make_dataset(pixels=polluted))
    np.testing.assert_array_equal(image.pixels, stored)


def test_signed_values_are_sign_extended_from_bits_stored() -> None:
    stored = random_pixels(64, 48, 12, signed=True)
    unsigned_view = stored.view(np.uint16) & np.uint16(0x0FFF)  # high bits zero, not sign
    image = read_image(make_dataset(pixels=unsigned_view.view(np.int16), signed=True))
    np.testing.assert_array_equal(image.pixels, stored)


@pytest.mark.parametrize("bits_stored", [8, 10, 14, 16])
def test_bits_stored_8_to_16(bits_stored: int) -> None:
    ds = make_dataset(bits_stored=bits_stored)
    image = read_image(to_bytes(ds))
    np.testing.assert_array_equal(image.pixels, stored_pixels(ds))
    assert image.bits_allocated == (8 if bits_stored == 8 else 16)


# --------------------------------------------------------------------------------------------
# SOP classes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sop_class",
    [
        MG_FOR_PRESENTATION,
        MG_FOR_PROCESSING,
        DX_FOR_PRESENTATION,
        DX_FOR_PROCESSING,
        CR_IMAGE,
        SECONDARY_CAPTURE,
        MULTIFRAME_GRAYSCALE_BYTE_SC,
        MULTIFRAME_GRAYSCALE_WORD_SC,
    ],
)
def test_accepted_sop_classes(sop_class: str) -> None:
    bits = 8 if sop_class == MULTIFRAME_GRAYSCALE_BYTE_SC else 12
    ds = make_dataset(sop_class=sop_class, bits_stored=bits, number_of_frames=1)
    image = read_image(to_bytes(ds))
    assert image.sop_class_uid == sop_class
    np.testing.assert_array_equal(image.pixels, stored_pixels(ds))


def test_multiframe_sc_class_with_two_frames_is_rejected() -> None:
    ds = make_dataset(sop_class=MULTIFRAME_GRAYSCALE_WORD_SC, number_of_frames=2)
    rejects(ds, MultiFrameError, "multi_frame", "NumberOfFrames", "2")


@pytest.mark.parametrize("sop_class", [CT_IMAGE, BASIC_TEXT_SR, BREAST_TOMOSYNTHESIS])
def test_other_sop_classes_are_rejected(sop_class: str) -> None:
    ds = make_dataset(sop_class=sop_class)
    rejects(ds, UnsupportedSopClassError, "unsupported_sop_class", "SOPClassUID", sop_class)


def test_missing_sop_class_is_accepted_with_a_warning() -> None:
    image = read_image(make_dataset(sop_class=None))
    assert image.sop_class_uid is None
    assert any("SOPClassUID" in w for w in image.warnings)


def test_sop_class_from_file_meta_when_the_data_set_lacks_it() -> None:
    ds = make_dataset(sop_class=DX_FOR_PRESENTATION)
    del ds.SOPClassUID
    image = read_image(to_bytes(ds))
    assert image.sop_class_uid == DX_FOR_PRESENTATION
    assert any("MediaStorageSOPClassUID" in w for w in image.warnings)


# --------------------------------------------------------------------------------------------
# Rejections
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b"", "0 bytes"),
        (b"hello, this is not a DICOM file at all", "hello"),
        (bytes(range(256)) * 4, "\\x00\\x01"),
    ],
)
def test_not_dicom(data: bytes, found: str) -> None:
    rejects(data, NotDicomError, "not_dicom", None, found)


@pytest.mark.parametrize("seed", range(5))
def test_not_dicom_for_a_preamble_and_prefix_followed_by_garbage(seed: int) -> None:
    garbage = np.random.default_rng(seed).integers(0, 256, 300, dtype=np.uint8).tobytes()
    with pytest.raises(NotDicomError) as info:
        read_image(b"\x00" * 128 + b"DICM" + garbage)
    assert info.value.code == "not_dicom"


def test_not_dicom_when_pydicom_cannot_parse() -> None:
    data = to_bytes(make_dataset(), DeflatedExplicitVRLittleEndian)
    # (0002,0000) File Meta Information Group Length: the deflated data set follows the meta.
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
    with pytest.raises(NotDicomError) as info:
        read_image(data[:meta_end] + b"\x00not zlib data" * 4)
    assert isinstance(info.value.__cause__, Exception)


def test_file_cut_inside_the_file_meta_is_not_dicom() -> None:
    data = to_bytes(make_dataset())[:200]
    rejects(data, NotDicomError, "not_dicom", None, "0 unrecognized elements")


def test_no_pixel_data() -> None:
    ds = make_dataset()
    del ds.PixelData
    rejects(ds, NoPixelDataError, "no_pixel_data", "PixelData", "absent")


def test_float_pixel_data_only() -> None:
    ds = make_dataset()
    del ds.PixelData
    ds.FloatPixelData = np.zeros(64 * 48, np.float32).tobytes()
    error = rejects(ds, NoPixelDataError, "no_pixel_data", "PixelData", "absent")
    assert "FloatPixelData" in str(error)


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL", "PALETTE COLOR", "YBR_FULL_422"])
def test_color_photometric(photometric: str) -> None:
    ds = make_dataset(photometric=photometric, samples_per_pixel=3)
    rejects(ds, ColorImageError, "color_image", "PhotometricInterpretation", photometric)


def test_more_than_one_sample_per_pixel() -> None:
    ds = make_dataset(samples_per_pixel=3)
    rejects(ds, ColorImageError, "color_image", "SamplesPerPixel", "3")


@pytest.mark.parametrize("photometric", ["MONOCHROME3", "XYZ"])
def test_unsupported_photometric(photometric: str) -> None:
    ds = make_dataset(photometric=photometric)
    rejects(
        ds,
        UnsupportedPhotometricError,
        "unsupported_photometric",
        "PhotometricInterpretation",
        photometric,
    )


def test_multi_frame() -> None:
    rejects(make_dataset(number_of_frames=3), MultiFrameError, "multi_frame", "NumberOfFrames", "3")


def test_missing_spacing() -> None:
    ds = make_dataset(pixel_spacing=None)
    error = rejects(ds, MissingSpacingError, "missing_spacing", "PixelSpacing", "absent")
    assert "ImagerPixelSpacing" in str(error)


@pytest.mark.parametrize(
    ("raw", "found"),
    [
        (b"0\\0.07", "0"),
        (b"-0.1\\0.1", "-0.1"),
        (b"nan\\0.1", "nan"),
        (b"11\\11", "11"),
        (b"0.07", "0.07"),
        (b"0.1\\0.1\\0.1", "0.1"),
        (b"abc\\0.1", "abc"),
        (b"inf\\0.1", "inf"),
    ],
)
def test_invalid_pixel_spacing(raw: bytes, found: str) -> None:
    ds = make_dataset(pixel_spacing=None)
    set_raw(ds, PIXEL_SPACING, "DS", raw + (b" " if len(raw) % 2 else b""))
    rejects(to_bytes(ds), InvalidSpacingError, "invalid_spacing", "PixelSpacing", found)


def test_invalid_imager_pixel_spacing() -> None:
    ds = make_dataset(pixel_spacing=None, imager_pixel_spacing=(0.0, 0.1))
    rejects(ds, InvalidSpacingError, "invalid_spacing", "ImagerPixelSpacing", "0")


def test_image_too_large_from_the_header() -> None:
    ds = make_dataset()
    rejects(ds, ImageTooLargeError, "image_too_large", "Rows", "64 x 48", max_pixels=1000)


def test_max_pixels_is_checked_before_any_decoding() -> None:
    # 40000 x 40000 with 10 bytes of pixel data: decoding would report truncation.
    ds = make_dataset(rows=4, cols=4, pixels=np.zeros((4, 4), np.uint16))
    ds.Rows = ds.Columns = 40_000
    ds.PixelData = b"\x00" * 10
    data = to_bytes(ds)
    error = rejects(data, ImageTooLargeError, "image_too_large", "Columns", "40000 x 40000")
    assert "1600000000" in str(error)
    with pytest.raises(TruncatedPixelDataError):
        read_image(data, max_pixels=2_000_000_000)


def test_max_pixels_is_checked_before_decoding_compressed_data() -> None:
    ds = make_dataset()
    ds.PixelData = encapsulate([b"garbage that no codec can read"])
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.Rows = ds.Columns = 50_000
    rejects(ds, ImageTooLargeError, "image_too_large", "Rows", "50000 x 50000")
    ds.Rows, ds.Columns = 64, 48
    rejects(ds, TruncatedPixelDataError, "truncated_pixel_data", "PixelData", "bytes")


def test_truncated_uncompressed_pixel_data() -> None:
    ds = make_dataset()
    ds.PixelData = ds.PixelData[:1000]
    error = rejects(ds, TruncatedPixelDataError, "truncated_pixel_data", "PixelData", "1000 bytes")
    assert "6144" in str(error)


def test_truncated_file_in_uncompressed_pixel_data() -> None:
    data = to_bytes(make_dataset())
    rejects(data[:-500], TruncatedPixelDataError, "truncated_pixel_data", "PixelData", "bytes")


@pytest.mark.filterwarnings("ignore:End of file reached")
def test_truncated_file_in_compressed_pixel_data() -> None:
    data = to_bytes(make_dataset(), RLELossless)
    rejects(data[:-300], TruncatedPixelDataError, "truncated_pixel_data", "PixelData", "cut off")


def test_compressed_fragment_that_does_not_decode() -> None:
    ds = pydicom.dcmread(io.BytesIO(to_bytes(make_dataset(), RLELossless)))
    ds.PixelData = encapsulate([b"\x01\x00\x00\x00" + b"\x00" * 60 + b"\x7f" * 20])
    error = rejects(ds, TruncatedPixelDataError, "truncated_pixel_data", "PixelData", "bytes")
    assert error.__cause__ is not None
    assert isinstance(error, DecodeError)


def test_compressed_frame_of_the_wrong_size() -> None:
    ds = pydicom.dcmread(io.BytesIO(to_bytes(make_dataset(rows=32, cols=48), RLELossless)))
    ds.Rows = 64
    rejects(ds, TruncatedPixelDataError, "truncated_pixel_data", "PixelData", "")


@pytest.mark.parametrize(
    ("uid", "name"),
    [
        ("1.2.840.10008.1.2.4.100", "MPEG2"),
        ("1.2.840.10008.1.2.4.102", "MPEG-4"),
        ("1.2.3.4.5", "unknown"),
    ],
)
def test_unsupported_transfer_syntax(uid: str, name: str) -> None:
    ds = make_dataset()
    ds.PixelData = encapsulate([b"\x00" * 16])
    ds.file_meta.TransferSyntaxUID = UID(uid)
    error = rejects(
        ds, UnsupportedTransferSyntaxError, "unsupported_transfer_syntax", "TransferSyntax", uid
    )
    assert name in str(error)


def test_compressed_pixel_data_without_transfer_syntax() -> None:
    ds = make_dataset()
    ds.PixelData = encapsulate([b"\x00" * 16])
    del ds.file_meta
    rejects(
        ds,
        UnsupportedTransferSyntaxError,
        "unsupported_transfer_syntax",
        "TransferSyntax",
        "absent",
    )


@pytest.mark.parametrize(
    ("changes", "attribute", "found"),
    [
        ({"Rows": None}, "Rows", "absent"),
        ({"Rows": 0}, "Rows", "0"),
        ({"Columns": 0}, "Columns", "0"),
        ({"BitsAllocated": 32}, "BitsAllocated", "32"),
        ({"BitsAllocated": 12}, "BitsAllocated", "12"),
        ({"BitsAllocated": None}, "BitsAllocated", "absent"),
        ({"BitsStored": 14, "BitsAllocated": 8}, "BitsStored", "14"),
        ({"BitsStored": 6, "HighBit": 5}, "BitsStored", "6"),
        ({"BitsStored": None}, "BitsStored", "absent"),
        ({"HighBit": 15}, "HighBit", "15"),
        ({"PixelRepresentation": 2}, "PixelRepresentation", "2"),
        ({"PixelRepresentation": None}, "PixelRepresentation", "absent"),
        ({"PhotometricInterpretation": None}, "PhotometricInterpretation", "absent"),
        ({"NumberOfFrames": 0}, "NumberOfFrames", "0"),
        ({"RescaleSlope": "0"}, "RescaleSlope", "0"),
    ],
)
def test_invalid_header(changes: dict[str, Any], attribute: str, found: str) -> None:
    ds = make_dataset(extra=changes)
    rejects(ds, InvalidHeaderError, "invalid_header", attribute, found)


def test_unreadable_rescale_slope() -> None:
    ds = make_dataset()
    set_raw(ds, RESCALE_SLOPE, "DS", b"abc ")
    rejects(to_bytes(ds), InvalidHeaderError, "invalid_header", "RescaleSlope", "abc")


def test_unexpected_failure_is_wrapped_with_its_cause(tmp_path: Path) -> None:
    path = write(make_dataset(), tmp_path / "a.dcm")
    ds = pydicom.dcmread(path, defer_size=1024)  # pixel data read later, from the file
    path.unlink()
    with pytest.raises(DecodeError) as info:
        read_image(ds)
    assert info.value.code == "decode_error"
    assert isinstance(info.value.__cause__, OSError)


def test_error_codes_are_unique_and_snake_case() -> None:
    codes = [cls.code for cls in errors.ALL_ERRORS]
    assert len(set(codes)) == len(codes)
    assert all(code.replace("_", "").isalpha() and code.islower() for code in codes)
    assert all(issubclass(cls, IntakeError) for cls in errors.ALL_ERRORS)


def test_errors_pickle_and_serialize() -> None:
    with pytest.raises(IntakeError) as info:
        read_image(make_dataset(photometric="RGB", samples_per_pixel=3))
    error = info.value
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is ColorImageError
    assert str(clone) == str(error)
    assert clone.to_dict() == error.to_dict()
    assert error.to_dict()["attribute"] == "PhotometricInterpretation (0028,0004)"
    assert error.to_dict()["value"] == "'RGB'"


@pytest.mark.filterwarnings("ignore:The value length")
def test_found_value_is_truncated() -> None:
    ds = make_dataset(photometric="MONOCHROME_" + "X" * 200)
    with pytest.raises(UnsupportedPhotometricError) as info:
        read_image(ds)
    assert info.value.value is not None and len(info.value.value) <= errors.MAX_VALUE_CHARS


# --------------------------------------------------------------------------------------------
# Spacing
# --------------------------------------------------------------------------------------------


def test_pixel_spacing_takes_precedence() -> None:
    ds = make_dataset(pixel_spacing=(0.1, 0.2), imager_pixel_spacing=(0.3, 0.3), magnification=1.5)
    image = read_image(ds)
    assert image.spacing_mm == (0.1, 0.2)
    assert image.spacing_source == "PixelSpacing"


def test_imager_spacing_divided_by_magnification() -> None:
    ds = make_dataset(pixel_spacing=None, imager_pixel_spacing=(0.1, 0.085), magnification=1.25)
    image = read_image(ds)
    assert image.spacing_mm == pytest.approx((0.08, 0.068))
    assert image.spacing_source == "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"


@pytest.mark.parametrize("encoding", ["imager_only", "pixel_spacing_repeats_imager"])
def test_one_magnification_rule_for_both_spacing_encodings(encoding: str) -> None:
    """Field case Q2: the same geometry written as ImagerPixelSpacing alone or as a
    PixelSpacing that repeats it (uncalibrated) gives the same spacing at the patient."""
    pixel = (0.1, 0.1) if encoding == "pixel_spacing_repeats_imager" else None
    ds = make_dataset(pixel_spacing=pixel, imager_pixel_spacing=(0.1, 0.1), magnification=1.08)
    image = read_image(ds)
    assert image.spacing_mm == pytest.approx((0.1 / 1.08, 0.1 / 1.08))
    assert image.spacing_source == "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
    if pixel is not None:
        assert any("detector plane" in w for w in image.warnings)


def test_calibrated_pixel_spacing_is_taken_as_it_is() -> None:
    ds = make_dataset(pixel_spacing=(0.1, 0.1), imager_pixel_spacing=(0.1, 0.1),
                      magnification=1.08)
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    image = read_image(ds)
    assert image.spacing_mm == (0.1, 0.1)
    assert image.spacing_source == "PixelSpacing"


def test_imager_spacing_alone() -> None:
    ds = make_dataset(pixel_spacing=None, imager_pixel_spacing=(0.07, 0.07))
    image = read_image(ds)
    assert image.spacing_mm == (0.07, 0.07)
    assert image.spacing_source == "ImagerPixelSpacing"
    assert image.warnings == ()


@pytest.mark.parametrize("magnification", [0.0, -1.2])
def test_invalid_magnification_is_ignored_with_a_warning(magnification: float) -> None:
    ds = make_dataset(
        pixel_spacing=None, imager_pixel_spacing=(0.1, 0.1), magnification=magnification
    )
    image = read_image(ds)
    assert image.spacing_mm == (0.1, 0.1)
    assert image.spacing_source == "ImagerPixelSpacing"
    assert any("EstimatedRadiographicMagnificationFactor" in w for w in image.warnings)


def test_invalid_pixel_spacing_falls_back_to_imager_spacing_with_a_warning() -> None:
    ds = make_dataset(pixel_spacing=(0.0, 0.0), imager_pixel_spacing=(0.1, 0.1))
    image = read_image(ds)
    assert image.spacing_source == "ImagerPixelSpacing"
    assert any("PixelSpacing (0028,0030)" in w for w in image.warnings)


def test_missing_spacing_allowed_on_request() -> None:
    image = read_image(make_dataset(pixel_spacing=None), allow_missing_spacing=True)
    assert image.spacing_mm is None
    assert image.spacing_source == "none"


def test_invalid_spacing_allowed_on_request() -> None:
    ds = make_dataset(pixel_spacing=(-1.0, 0.1))
    image = read_image(ds, allow_missing_spacing=True)
    assert (image.spacing_mm, image.spacing_source) == (None, "none")
    assert any("PixelSpacing" in w for w in image.warnings)


def test_spacing_is_row_then_column() -> None:
    image = read_image(make_dataset(pixel_spacing=(0.05, 0.1)))
    assert image.spacing_mm == (0.05, 0.1)
    assert all(math.isfinite(v) for v in image.spacing_mm)


# --------------------------------------------------------------------------------------------
# Laterality, view, orientation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_lat", "series_lat", "expected", "warns"),
    [
        ("L", None, "L", False),
        ("R", None, "R", False),
        (None, "R", "R", False),
        (None, "L", "L", False),
        ("L", "L", "L", False),
        ("R", "L", "R", True),
        (None, None, "U", True),
        ("B", None, "U", True),
        (None, "B", "U", True),
        ("U", None, "U", True),
    ],
)
def test_laterality(
    image_lat: str | None, series_lat: str | None, expected: str, warns: bool
) -> None:
    ds = make_dataset(laterality=image_lat, series_laterality=series_lat)
    image = read_image(ds)
    assert image.laterality == expected
    assert any("aterality" in w for w in image.warnings) == warns


@pytest.mark.parametrize("view", ["CC", "MLO", "ML", "LM", "XCCL", "XCCM", "FB", "LMO"])
def test_view_from_the_snomed_ct_code(view: str) -> None:
    assert read_image(make_dataset(view=view)).view == view


@pytest.mark.parametrize(("view", "code"), sorted(VIEW_SRT.items()))
def test_view_from_the_legacy_srt_code(view: str, code: str) -> None:
    ds = make_dataset(view_code=(code, "SRT", "some meaning"))
    assert read_image(ds).view == view


def test_view_code_takes_precedence_over_view_position() -> None:
    image = read_image(make_dataset(view="CC", view_position="MLO"))
    assert image.view == "CC"
    assert any("ViewPosition" in w for w in image.warnings)


def test_view_from_view_position_without_code_sequence() -> None:
    image = read_image(make_dataset(view=None, view_position="MLO"))
    assert image.view == "MLO"
    assert image.warnings == ()


def test_unknown_view_code_falls_back_to_view_position() -> None:
    image = read_image(make_dataset(view_code=("12345", "SCT", "odd"), view_position="ML"))
    assert image.view == "ML"
    assert any("12345" in w for w in image.warnings)


@pytest.mark.parametrize(("position", "warns"), [(None, False), ("AP", True)])
def test_no_known_view(position: str | None, warns: bool) -> None:
    image = read_image(make_dataset(view=None, view_position=position))
    assert image.view is None
    assert any("ViewPosition" in w for w in image.warnings) == warns


def test_view_modifiers() -> None:
    image = read_image(make_dataset(view="CC", view_modifiers=("Magnification",)))
    assert image.view_modifiers == ("Magnification",)
    assert read_image(make_dataset()).view_modifiers == ()


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [(("A", "R"), ("A", "R")), (("P", "L"), ("P", "L")), (("A", "FR"), ("A", "FR"))],
)
def test_patient_orientation(orientation: tuple[str, str], expected: tuple[str, str]) -> None:
    image = read_image(make_dataset(patient_orientation=orientation))
    assert image.patient_orientation == expected
    assert not any("PatientOrientation" in w for w in image.warnings)


@pytest.mark.parametrize("orientation", [None, ("A",), ("A", "R", "F"), ("A", "X")])
def test_absent_or_malformed_patient_orientation(orientation: tuple[str, ...] | None) -> None:
    image = read_image(make_dataset(patient_orientation=orientation))
    assert image.patient_orientation is None
    assert any("PatientOrientation" in w for w in image.warnings)


def test_warnings_are_a_tuple_of_strings() -> None:
    image = read_image(make_dataset(laterality="B", patient_orientation=None, view=None))
    assert isinstance(image.warnings, tuple)
    assert all(isinstance(w, str) for w in image.warnings)
    assert len(image.warnings) >= 2


def test_image_subclass_of_header_keeps_header_fields() -> None:
    header_names = {f.name for f in dataclasses.fields(ImageHeader)}
    image_names = {f.name for f in dataclasses.fields(Image)}
    assert image_names == header_names | {"pixels", "decode_scale", "image_area"}


def test_datasets_built_by_hand_work_too() -> None:
    ds = Dataset()
    ds.Rows, ds.Columns = 2, 3
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(range(6))
    image = read_image(ds, allow_missing_spacing=True)
    np.testing.assert_array_equal(image.pixels, [[0, 1, 2], [3, 4, 5]])
    assert image.laterality == "U"
