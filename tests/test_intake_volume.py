"""Tomosynthesis intake (serving.pipeline.intake.volume): Breast Tomosynthesis Image and
multi-frame grayscale Secondary Capture volumes read from real DICOM bytes built here
(tests/dbt_files.py): geometry from the functional groups and the top-level fallbacks, frames
decoded one at a time with the 2D pixel semantics, every refusal with its code, the budgets,
and the 2D path still refusing volumes.
"""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

import serving.pipeline.dicom_in as dicom_in
from serving.pipeline.errors import (
    ColorImageError,
    ImageTooLargeError,
    IntakeError,
    InvalidHeaderError,
    InvalidSpacingError,
    MissingSpacingError,
    MultiFrameError,
    TruncatedPixelDataError,
    UnsupportedSopClassError,
)
from serving.pipeline.intake import (
    Volume,
    VolumeHeader,
    is_volume,
    read_image,
    read_volume,
    read_volume_header,
)
from tests.dbt_files import (
    BREAST_PROJECTION_PRESENTATION,
    BREAST_PROJECTION_PROCESSING,
    frame_stored,
    make_bto,
    make_sc_volume,
    orientation_cosines,
)
from tests.dicomgen import MULTIFRAME_GRAYSCALE_WORD_SC, make_dataset, to_bytes


def refuses(source: Any, error_type: type[IntakeError], code: str, *words: str,
            **kwargs: Any) -> IntakeError:
    """``read_volume_header`` and ``read_volume`` both raise exactly ``error_type`` with
    ``code`` and every one of ``words`` in the message."""
    error: IntakeError | None = None
    for read in (read_volume_header, read_volume):
        with pytest.raises(error_type) as info:
            read(source, **kwargs)
        error = info.value
        assert type(error) is error_type and error.code == code
        for word in words:
            assert word in str(error), str(error)
    assert error is not None
    return error


def stored_float(ds: Dataset, index: int) -> np.ndarray:
    return frame_stored(ds, index).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Header: geometry from the functional groups, and the top-level fallbacks
# --------------------------------------------------------------------------------------------


def test_breast_tomosynthesis_header_from_functional_groups() -> None:
    heights = [0.0, 1.0, 2.0, 3.0, 4.5, 5.5, 6.5, 7.5]
    ds = make_bto(heights=heights, pixel_spacing=(0.085, 0.09), top_pixel_spacing=(0.2, 0.2),
                  slice_thickness=1.0)
    header = read_volume_header(to_bytes(ds))
    assert isinstance(header, VolumeHeader)
    assert header.source == "breast_tomosynthesis"
    assert header.number_of_frames == 8 and len(header.frame_heights_mm) == 8
    assert header.frame_heights_mm == pytest.approx(heights)
    assert header.slice_thickness_mm == 1.0
    image = header.image
    assert (image.rows, image.cols) == (48, 64)
    assert image.spacing_mm == (0.085, 0.09)  # Pixel Measures wins over the top level
    assert image.spacing_source == "PixelSpacing"
    assert image.laterality == "L"  # FrameLaterality; no ImageLaterality at the top level
    assert image.view == "CC"
    assert image.sop_class_uid == "1.2.840.10008.5.1.4.1.1.13.1.3"
    assert image.sop_class_name == "Breast Tomosynthesis"
    assert image.sop_instance_uid == ds.SOPInstanceUID
    assert image.patient_orientation == ("A", "R")  # derived from the frames' orientation
    assert any("derived from the frames' ImageOrientationPatient" in w for w in image.warnings)
    assert not any("frame heights" in w for w in image.warnings)


def test_every_source_gives_the_same_header(tmp_path: Path) -> None:
    ds = make_bto()
    data = to_bytes(ds)
    path = tmp_path / "volume.dcm"
    path.write_bytes(data)
    expected = read_volume_header(data)
    assert read_volume_header(path) == expected
    assert read_volume_header(str(path)) == expected
    assert read_volume_header(io.BytesIO(data)) == expected
    assert read_volume_header(pydicom.dcmread(io.BytesIO(data))) == expected


def test_top_level_fallbacks() -> None:
    ds = make_bto(pixel_spacing=None, top_pixel_spacing=(0.07, 0.07), frame_laterality=None,
                  image_laterality="R", positions=False, spacing_between=0.5,
                  slice_thickness=None, laterality="R")
    header = read_volume_header(to_bytes(ds))
    assert header.image.spacing_mm == (0.07, 0.07)
    assert header.image.laterality == "R"
    assert header.frame_heights_mm == pytest.approx([0.5 * k for k in range(8)])
    assert header.slice_thickness_mm is None
    assert any("frame heights assumed" in w and "SpacingBetweenSlices" in w
               for w in header.image.warnings)


def test_spacing_only_follows_in_stack_positions() -> None:
    ds = make_bto(positions=False, spacing_between=1.0)
    order = [3, 1, 2, 4, 5, 6, 8, 7]
    for item, number in zip(ds.PerFrameFunctionalGroupsSequence, order, strict=True):
        item.FrameContentSequence[0].InStackPositionNumber = number
    header = read_volume_header(to_bytes(ds))
    assert header.frame_heights_mm == pytest.approx([n - 1.0 for n in order])
    assert any("InStackPositionNumber" in w for w in header.image.warnings)


def test_slice_thickness_is_the_last_resort_for_tomosynthesis() -> None:
    ds = make_bto(positions=False, spacing_between=None, slice_thickness=1.0)
    header = read_volume_header(to_bytes(ds))
    assert header.frame_heights_mm == pytest.approx(range(8))
    assert any("contiguous slices assumed" in w for w in header.image.warnings)


def test_top_level_spacing_between_slices() -> None:
    ds = make_bto(positions=False, slice_thickness=None, extra={"SpacingBetweenSlices": "2"})
    assert read_volume_header(to_bytes(ds)).frame_heights_mm == pytest.approx(
        [2.0 * k for k in range(8)])


def test_frames_stored_top_down_keep_dicom_order() -> None:
    heights = [7.0 - k for k in range(8)]
    ds = make_bto(heights=heights)
    volume = read_volume(to_bytes(ds))
    assert volume.header.frame_heights_mm == pytest.approx(heights)
    assert np.array_equal(volume.frame(0).pixels, stored_float(ds, 0))


@pytest.mark.parametrize(("laterality", "view"), [("R", "CC"), ("L", "MLO"), ("R", "MLO")])
def test_heights_along_the_beam_of_each_hanging(laterality: str, view: str) -> None:
    heights = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    ds = make_bto(frames=6, laterality=laterality, view=view, heights=heights)
    header = read_volume_header(to_bytes(ds))
    assert header.frame_heights_mm == pytest.approx(heights)
    assert header.image.laterality == laterality and header.image.view == view
    assert not any("convention" in w or "mirrored" in w for w in header.image.warnings)


def test_mirrored_orientation_still_measures_toward_the_source() -> None:
    heights = [0.0, 1.0, 2.0, 3.0]
    cosines = orientation_cosines("A", "R")
    ds = make_bto(frames=4, heights=heights)
    mirrored = [-cosines[0], -cosines[1], -cosines[2], *cosines[3:]]  # rows reversed
    for item in ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence:
        item.ImageOrientationPatient = [f"{v:g}" for v in mirrored]
    header = read_volume_header(to_bytes(ds))
    assert header.frame_heights_mm == pytest.approx(heights)  # the CC view decides
    assert any("mirrored" in w for w in header.image.warnings)
    assert header.image.patient_orientation is None  # not derived from a doubtful orientation


def test_without_a_view_the_display_convention_decides_and_says_so() -> None:
    ds = make_bto(frames=4, view=None, heights=[0.0, 2.0, 4.0, 6.0])
    header = read_volume_header(to_bytes(ds))
    assert header.frame_heights_mm == pytest.approx([0.0, 2.0, 4.0, 6.0])
    assert any("display convention" in w for w in header.image.warnings)


def test_in_plane_shift_is_noted() -> None:
    ds = make_bto(frames=3)
    ds.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence[0].ImagePositionPatient = \
        ["15", "-20", "32"]  # 5 mm sideways at height 2
    header = read_volume_header(to_bytes(ds))
    assert header.frame_heights_mm == pytest.approx([0.0, 1.0, 2.0])
    assert any("shifted in-plane" in w for w in header.image.warnings)


def test_plane_position_volume_is_the_second_choice() -> None:
    ds = make_bto(frames=4, positions=False, view=None)
    cosines = orientation_cosines("A", "R")
    orientation = Dataset()
    orientation.ImageOrientationVolume = list(cosines)
    ds.SharedFunctionalGroupsSequence[0].PlaneOrientationVolumeSequence = \
        DicomSequence([orientation])
    for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        position = Dataset()
        position.ImagePositionVolume = [0.0, 0.0, 1.25 * k]  # up = column x row = +z here
        item.PlanePositionVolumeSequence = DicomSequence([position])
    header = read_volume_header(to_bytes(ds))
    assert header.frame_heights_mm == pytest.approx([1.25 * k for k in range(4)])
    assert any("ImagePositionVolume" in w and "display convention" in w
               for w in header.image.warnings)


def test_frame_laterality_other_than_left_or_right_is_unknown() -> None:
    header = read_volume_header(to_bytes(make_bto(frames=2, frame_laterality="B")))
    assert header.image.laterality == "U"
    assert any("FrameLaterality" in w and "'B'" in w for w in header.image.warnings)


def test_frame_laterality_overrules_image_laterality() -> None:
    ds = make_bto(laterality="L", image_laterality="R")
    header = read_volume_header(to_bytes(ds))
    assert header.image.laterality == "L"
    assert any("FrameLaterality 'L'" in w and "ImageLaterality" in w
               for w in header.image.warnings)


def test_frames_that_disagree_on_laterality_are_unknown() -> None:
    ds = make_bto(frames=4, frame_laterality=["L", "L", "R", "L"], view="CC")
    header = read_volume_header(to_bytes(ds))
    assert header.image.laterality == "U"
    assert any("frames disagree on FrameLaterality" in w for w in header.image.warnings)


def test_pixel_value_transformation_is_applied() -> None:
    ds = make_bto(frames=3, rescale=(2.0, -100.0))
    volume = read_volume(to_bytes(ds))
    assert (volume.header.image.rescale_slope, volume.header.image.rescale_intercept) == \
        (2.0, -100.0)
    assert np.array_equal(volume.frame(1).pixels, stored_float(ds, 1) * 2.0 - 100.0)


def test_frame_voi_lut_gives_the_window() -> None:
    ds = make_bto(frames=2)
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = "2048", "4096"
    ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence = DicomSequence([voi])
    image = read_volume_header(to_bytes(ds)).image
    assert (image.window_center, image.window_width) == (2048.0, 4096.0)


# --------------------------------------------------------------------------------------------
# Secondary Capture volumes
# --------------------------------------------------------------------------------------------


def test_secondary_capture_volume() -> None:
    ds = make_sc_volume(frames=5, spacing_between=1.5)
    volume = read_volume(to_bytes(ds))
    assert volume.header.source == "secondary_capture"
    assert volume.header.image.sop_class_uid == MULTIFRAME_GRAYSCALE_WORD_SC
    assert volume.header.frame_heights_mm == pytest.approx([1.5 * k for k in range(5)])
    assert all(np.array_equal(f.pixels, stored_float(ds, k))
               for k, f in enumerate(volume.frames()))


def test_secondary_capture_nominal_spacing_and_slice_locations() -> None:
    ds = make_sc_volume(frames=4, pixel_spacing=None, nominal_spacing=(0.05, 0.05),
                        spacing_between=None, slice_locations=[12.0, 10.0, 11.0, 13.0])
    header = read_volume_header(to_bytes(ds))
    assert header.image.spacing_mm == (0.05, 0.05)
    assert header.frame_heights_mm == pytest.approx([2.0, 0.0, 1.0, 3.0])
    assert any("NominalScannedPixelSpacing" in w for w in header.image.warnings)
    assert any("SliceLocationVector" in w for w in header.image.warnings)


def test_secondary_capture_without_pixel_spacing_is_refused() -> None:
    ds = make_sc_volume(pixel_spacing=None)
    refuses(to_bytes(ds), MissingSpacingError, "missing_spacing", "PixelSpacing",
            "NominalScannedPixelSpacing")


def test_secondary_capture_without_slice_spacing_is_refused() -> None:
    ds = make_sc_volume(spacing_between=None)
    refuses(to_bytes(ds), MissingSpacingError, "missing_spacing", "SpacingBetweenSlices",
            "ImagePositionPatient", "absent")


def test_secondary_capture_of_one_frame_is_not_a_volume() -> None:
    ds = make_sc_volume(frames=1)
    refuses(to_bytes(ds), InvalidHeaderError, "invalid_header", "NumberOfFrames", "1")
    assert not is_volume(ds)


# --------------------------------------------------------------------------------------------
# Frames: decoded lazily, with the 2D pixel semantics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian,
                                    DeflatedExplicitVRLittleEndian, RLELossless,
                                    JPEG2000Lossless])
def test_every_frame_decodes_to_its_stored_values(syntax: str) -> None:
    ds = make_bto(frames=4)
    volume = read_volume(to_bytes(ds, syntax))
    assert isinstance(volume, Volume) and len(volume) == 4
    for k in range(4):
        frame = volume.frame(k)
        assert frame.pixels.shape == (48, 64) and frame.pixels.dtype == np.float32
        assert np.array_equal(frame.pixels, stored_float(ds, k)), k
        assert frame.header.laterality == "L" and frame.spacing_mm == (0.1, 0.1)


def test_monochrome1_is_inverted_in_every_frame() -> None:
    ds = make_bto(frames=3, photometric="MONOCHROME1", bits_stored=12)
    volume = read_volume(to_bytes(ds, RLELossless))
    for k, frame in enumerate(volume.frames()):
        assert np.array_equal(frame.pixels, 4095.0 - stored_float(ds, k))
        assert frame.value_range == (0.0, 4095.0)


def test_padding_is_masked_per_frame() -> None:
    pixels = np.full((2, 48, 64), 1000, dtype=np.uint16)
    pixels[:, 10:40, 20:60] = 3000
    pixels[1, 0, 0] = 1000
    ds = make_bto(frames=2, photometric="MONOCHROME1", pixels=pixels,
                  extra={"PixelPaddingValue": 1000})
    frame = read_volume(to_bytes(ds)).frame(1)
    assert frame.image_area == (10, 40, 20, 60)
    assert float(frame.pixels[0, 0]) == float(frame.pixels[10:40, 20:60].min())
    assert any("padding" in w for w in frame.warnings)


def test_frame_and_frames_bounds() -> None:
    ds = make_bto(frames=5)
    volume = read_volume(to_bytes(ds))
    assert [np.array_equal(f.pixels, stored_float(ds, k))
            for k, f in zip(range(2, 4), volume.frames(2, 4), strict=True)] == [True, True]
    assert len(list(volume.frames(3))) == 2
    for bad in (5, -1, 99):
        with pytest.raises(IndexError):
            volume.frame(bad)
    with pytest.raises(IndexError):
        volume.frames(0, 6)
    with pytest.raises(IndexError):
        volume.frames(3, 2)
    with pytest.raises(TypeError):
        volume.frame("1")  # type: ignore[arg-type]
    assert np.array_equal(volume.frame(np.int64(2)).pixels,  # type: ignore[arg-type]
                          stored_float(ds, 2))


def test_compressed_frame_decodes_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading frame 3 of a JPEG 2000 volume hands exactly one codestream to the decoder:
    frame 3's."""
    imagecodecs = pytest.importorskip("imagecodecs")
    ds = make_bto(frames=8)
    data = to_bytes(ds, JPEG2000Lossless)
    codestreams = list(generate_frames(pydicom.dcmread(io.BytesIO(data)).PixelData,
                                       number_of_frames=8))
    seen: list[bytes] = []
    original = imagecodecs.jpeg2k_decode

    def counting(frame: bytes, *args: Any, **kwargs: Any) -> Any:
        seen.append(bytes(frame))
        return original(frame, *args, **kwargs)

    monkeypatch.setattr(imagecodecs, "jpeg2k_decode", counting)
    volume = read_volume(data)
    assert seen == []  # reading the volume decodes nothing
    frame = volume.frame(3)
    assert seen == [codestreams[3]]
    assert np.array_equal(frame.pixels, stored_float(ds, 3))


def test_a_corrupt_frame_fails_alone() -> None:
    ds = make_bto(frames=6)
    data = to_bytes(ds, JPEG2000Lossless)
    parsed = pydicom.dcmread(io.BytesIO(data))
    frames = list(generate_frames(parsed.PixelData, number_of_frames=6))
    frames[4] = b"\xff\x4f\xff\x51" + b"\x00" * 60  # a broken codestream
    parsed.PixelData = encapsulate(frames)
    buffer = io.BytesIO()
    parsed.save_as(buffer, enforce_file_format=True)
    volume = read_volume(buffer.getvalue())
    assert np.array_equal(volume.frame(3).pixels, stored_float(ds, 3))
    with pytest.raises(TruncatedPixelDataError):
        volume.frame(4)
    assert np.array_equal(volume.frame(5).pixels, stored_float(ds, 5))


def test_a_missing_compressed_frame_is_named() -> None:
    ds = make_bto(frames=4)
    parsed = pydicom.dcmread(io.BytesIO(to_bytes(ds, RLELossless)))
    frames = list(generate_frames(parsed.PixelData, number_of_frames=4))
    parsed.PixelData = encapsulate(frames[:3])
    buffer = io.BytesIO()
    parsed.save_as(buffer, enforce_file_format=True)
    volume = read_volume(buffer.getvalue())
    assert np.array_equal(volume.frame(2).pixels, stored_float(ds, 2))
    with pytest.raises(TruncatedPixelDataError, match="frame 4"):
        volume.frame(3)


def test_a_frame_costs_about_one_frame_of_memory() -> None:
    frames, rows, cols = 24, 256, 256
    ds = make_bto(frames=frames, rows=rows, cols=cols)
    volume = read_volume(to_bytes(ds))
    one_frame = rows * cols * 4  # float32
    tracemalloc.start()
    try:
        frame = volume.frame(7)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(frame.pixels, stored_float(ds, 7))
    assert peak < 4 * one_frame, peak  # all frames decoded would be 24 x one_frame


# --------------------------------------------------------------------------------------------
# Refusals and budgets
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sop_class", [BREAST_PROJECTION_PRESENTATION,
                                       BREAST_PROJECTION_PROCESSING])
def test_breast_projections_are_refused(sop_class: str) -> None:
    ds = make_bto(frames=3, sop_class=sop_class)
    error = refuses(to_bytes(ds), UnsupportedSopClassError, "unsupported_sop_class",
                    "raw tomosynthesis projections", "send the reconstructed volume",
                    "SOPClassUID", sop_class)
    assert error.attribute is not None and "SOPClassUID" in error.attribute
    assert not is_volume(ds)


def test_a_2d_image_is_not_a_volume() -> None:
    ds = make_dataset()
    refuses(to_bytes(ds), UnsupportedSopClassError, "unsupported_sop_class",
            "not a tomosynthesis volume", "1.2.840.10008.5.1.4.1.1.1.2")


def test_frame_budget() -> None:
    ds = make_bto(frames=8)
    refuses(to_bytes(ds), ImageTooLargeError, "image_too_large", "NumberOfFrames", "8",
            "at most 4 frames", max_frames=4)
    assert read_volume_header(to_bytes(ds), max_frames=8).number_of_frames == 8


def test_pixel_budget_counts_every_frame() -> None:
    ds = make_bto(frames=8)  # 8 x 48 x 64 = 24576 pixels
    refuses(to_bytes(ds), ImageTooLargeError, "image_too_large", "NumberOfFrames",
            "8 x 48 x 64", "49152 bytes uncompressed", "at most 20000 pixels", max_pixels=20_000)
    assert read_volume_header(to_bytes(ds), max_pixels=24_576).number_of_frames == 8


def test_a_deflated_volume_may_not_inflate_beyond_the_pixel_budget() -> None:
    ds = make_bto(frames=2, rows=16, cols=16, extra={"EncapsulatedDocument": bytes(12 << 20)})
    data = to_bytes(ds, DeflatedExplicitVRLittleEndian)
    assert len(data) < 100_000
    refuses(data, ImageTooLargeError, "image_too_large", "inflate", max_pixels=1000)


def test_budget_arguments_are_checked() -> None:
    data = to_bytes(make_bto(frames=2))
    for kwargs in ({"max_frames": 0}, {"max_frames": True}, {"max_pixels": 0}):
        with pytest.raises(ValueError):
            read_volume_header(data, **kwargs)


def test_truncated_native_pixel_data_is_refused_at_read() -> None:
    ds = make_bto(frames=4)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) - 100]
    with pytest.raises(TruncatedPixelDataError) as info:
        read_volume(to_bytes(ds))
    assert "NumberOfFrames x Rows x Columns" in str(info.value)
    assert info.value.dataset is not None and "PixelData" not in info.value.dataset


def test_per_frame_groups_must_match_the_frames() -> None:
    ds = make_bto(frames=4)
    del ds.PerFrameFunctionalGroupsSequence[3]
    refuses(to_bytes(ds), InvalidHeaderError, "invalid_header",
            "PerFrameFunctionalGroupsSequence", "3 items")


def test_two_frames_in_one_plane_are_refused() -> None:
    ds = make_bto(frames=4, heights=[0.0, 1.0, 1.0, 2.0])
    refuses(to_bytes(ds), InvalidHeaderError, "invalid_header", "same plane",
            "frames 2 and 3")


def test_frames_that_are_not_parallel_are_refused() -> None:
    ds = make_bto(frames=3)
    cosines = orientation_cosines("A", "R")
    for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        tilted = cosines if k < 2 else (0.0, -0.8, 0.6, -1.0, 0.0, 0.0)
        item.PlaneOrientationSequence = DicomSequence([Dataset()])
        item.PlaneOrientationSequence[0].ImageOrientationPatient = [f"{v:g}" for v in tilted]
    del ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
    refuses(to_bytes(ds), InvalidHeaderError, "invalid_header", "not parallel",
            "PerFrameFunctionalGroupsSequence item 3")


def test_pixel_spacing_that_differs_between_frames_is_refused() -> None:
    ds = make_bto(frames=3, pixel_spacing=None)
    for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        measures = Dataset()
        measures.PixelSpacing = ["0.1", "0.1"] if k != 1 else ["0.2", "0.2"]
        item.PixelMeasuresSequence = DicomSequence([measures])
    refuses(to_bytes(ds), InvalidSpacingError, "invalid_spacing", "differs between frames")


def test_no_spacing_at_all_is_refused() -> None:
    ds = make_bto(frames=3, pixel_spacing=None)
    refuses(to_bytes(ds), MissingSpacingError, "missing_spacing", "PixelMeasuresSequence",
            "ImagerPixelSpacing", "NominalScannedPixelSpacing")


def test_missing_number_of_frames_is_refused() -> None:
    ds = make_bto(frames=2)
    del ds.NumberOfFrames
    refuses(to_bytes(ds), InvalidHeaderError, "invalid_header", "NumberOfFrames", "absent")


def test_2d_checks_apply_to_volumes() -> None:
    ds = make_bto(frames=2, extra={"PhotometricInterpretation": "RGB"})
    refuses(to_bytes(ds), ColorImageError, "color_image", "PhotometricInterpretation")


# --------------------------------------------------------------------------------------------
# Parsing, routing and the unchanged 2D path
# --------------------------------------------------------------------------------------------


def _defined_length_groups(ds: Dataset) -> bytes:
    """``ds`` written with defined-length sequences (left unread by a header-only parse
    when over 4 KiB)."""
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        ds[keyword].is_undefined_length = False
    return to_bytes(ds)


class _Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        chunk = self._inner.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_defined_length_functional_groups_are_read_back(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Functional groups over the header-only parse's 4 KiB are read back from the source;
    the pixel data never is."""
    ds = make_bto(frames=64, rows=16, cols=16, heights=[0.5 * k for k in range(64)])
    data = _defined_length_groups(ds)
    header = pydicom.dcmread(io.BytesIO(data), defer_size=4096)
    raw = header.get_item("PerFrameFunctionalGroupsSequence", keep_deferred=True)
    assert raw.value is None  # left unread by a header-only parse
    read_back: list[int] = []
    original = pydicom.filereader.read_deferred_data_element

    def recording(fileobj_type: Any, source: Any, timestamp: Any, element: Any) -> Any:
        read_back.append(int(element.tag))
        return original(fileobj_type, source, timestamp, element)

    monkeypatch.setattr(pydicom.filereader, "read_deferred_data_element", recording)
    expected = [0.5 * k for k in range(64)]
    path = tmp_path / "defined.dcm"
    path.write_bytes(data)
    stream = io.BytesIO(b"junk" + data)
    stream.seek(4)
    for source in (data, path, stream, _Unseekable(data)):
        result = read_volume_header(source)  # type: ignore[arg-type]
        assert result.frame_heights_mm == pytest.approx(expected), type(source)
    assert 0x52009230 in read_back
    assert 0x7FE00010 not in read_back


def test_header_of_a_file_without_meta_reads_its_pixel_data_lazily() -> None:
    ds = make_bto(frames=32, rows=16, cols=16)
    data = to_bytes(ds, file_meta=False)
    header = read_volume_header(data)
    assert header.number_of_frames == 32
    assert any("TransferSyntaxUID" in w for w in header.image.warnings)
    assert np.array_equal(read_volume(data).frame(31).pixels, stored_float(ds, 31))


def test_volume_keeps_the_header_dataset() -> None:
    ds = make_bto(frames=2)
    volume = read_volume(to_bytes(ds))
    assert "PixelData" not in volume.dataset
    assert volume.dataset.SOPInstanceUID == ds.SOPInstanceUID
    assert "PerFrameFunctionalGroupsSequence" in volume.dataset


def test_is_volume() -> None:
    assert is_volume(make_bto(frames=2))
    assert is_volume(make_bto(frames=1))
    assert is_volume(make_sc_volume(frames=2))
    assert not is_volume(make_sc_volume(frames=1))
    assert not is_volume(make_dataset())
    assert not is_volume(make_dataset(number_of_frames=3))  # MG: not a volume class
    assert not is_volume(Dataset())
    only_meta = make_bto(frames=2)
    del only_meta.SOPClassUID
    assert is_volume(only_meta)  # MediaStorageSOPClassUID


def test_a_one_frame_tomosynthesis_object_is_a_volume_of_one() -> None:
    ds = make_bto(frames=1)
    volume = read_volume(to_bytes(ds))
    assert volume.header.frame_heights_mm == (0.0,)
    assert np.array_equal(volume.frame(0).pixels, stored_float(ds, 0))


def test_the_2d_path_still_refuses_volumes() -> None:
    with pytest.raises(UnsupportedSopClassError) as bto:
        read_image(to_bytes(make_bto(frames=3)))
    assert bto.value.code == "unsupported_sop_class"
    with pytest.raises(MultiFrameError) as sc:
        read_image(to_bytes(make_sc_volume(frames=3)))
    assert sc.value.code == "multi_frame"


def test_dicom_in_re_exports_the_volume_api() -> None:
    for name in ("Volume", "VolumeHeader", "read_volume", "read_volume_header", "is_volume",
                 "DEFAULT_MAX_FRAMES", "DEFAULT_MAX_VOLUME_PIXELS"):
        assert name in dicom_in.__all__ and hasattr(dicom_in, name)


def _sweep(angles: list[str]) -> DicomSequence:
    """An X-Ray 3D Acquisition Sequence item whose projections have these angles."""
    item = Dataset()
    projections = []
    for a in angles:
        p = Dataset()
        p.PositionerPrimaryAngle = a
        projections.append(p)
    item.PerProjectionAcquisitionSequence = DicomSequence(projections)
    return DicomSequence([item])


def test_the_carm_angle_of_a_volume_comes_from_its_projections_when_not_at_the_top() -> None:
    """The BTO IOD keeps the C-arm angle per projection; without a top-level value the
    sweep's centre is taken, and said; a top-level value stays as it is."""
    ds = make_bto(frames=4, view="MLO")
    ds.XRay3DAcquisitionSequence = _sweep(["37.5", "41.25", "45", "48.75", "52.5"])
    header = read_volume_header(to_bytes(ds))
    assert header.image.positioner_primary_angle == pytest.approx(45.0)
    assert any("centre of the 5 projections' angles" in w and "45 degrees" in w
               for w in header.image.warnings)
    ds.PositionerPrimaryAngle = "50"
    header = read_volume_header(to_bytes(ds))
    assert header.image.positioner_primary_angle == pytest.approx(50.0)
    assert not any("projections' angles" in w for w in header.image.warnings)
    del ds.PositionerPrimaryAngle
    ds.XRay3DAcquisitionSequence = _sweep(["", ""])
    assert read_volume_header(to_bytes(ds)).image.positioner_primary_angle is None
