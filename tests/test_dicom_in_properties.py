"""Property tests of the DICOM intake: random header variations, with the expected Image (or
the expected typed error) derived here, independently of serving.pipeline.dicom_in."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from serving.pipeline.dicom_in import Image, read_header, read_image
from serving.pipeline.errors import (
    IntakeError,
    InvalidHeaderError,
    InvalidSpacingError,
    MissingSpacingError,
)
from tests.dicomgen import VIEW_SNOMED, make_dataset, stored_pixels, stored_range, to_bytes

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Mammography ViewPosition strings (DICOM CID 4014 abbreviations).
MAMMO_VIEWS = {"CC", "MLO", "ML", "LM", "LMO", "FB", "SIO", "ISO", "XCCL", "XCCM"}
ORIENTATION_LETTERS = set("APRLHF")


@dataclass(frozen=True)
class Header:
    """One drawn header variation (the arguments of ``make_dataset``)."""

    rows: int
    cols: int
    bits_stored: int
    bits_allocated: int
    signed: bool
    photometric: str
    rescale: tuple[float, float] | None
    pixel_spacing: tuple[float, ...] | None
    imager_pixel_spacing: tuple[float, ...] | None
    magnification: float | None
    laterality: str | None
    series_laterality: str | None
    view: str | None
    view_position: str | None
    patient_orientation: tuple[str, ...] | None
    allow_missing_spacing: bool
    encoding: str
    seed: int

    def dataset_kwargs(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "cols": self.cols,
            "bits_stored": self.bits_stored,
            "bits_allocated": self.bits_allocated,
            "signed": self.signed,
            "photometric": self.photometric,
            "rescale": self.rescale,
            "pixel_spacing": self.pixel_spacing,
            "imager_pixel_spacing": self.imager_pixel_spacing,
            "magnification": self.magnification,
            "laterality": self.laterality,
            "series_laterality": self.series_laterality,
            "view": self.view,
            "view_position": self.view_position,
            "patient_orientation": self.patient_orientation,
            "seed": self.seed,
        }


millimetres = st.integers(1, 3000).map(lambda k: k / 1000)  # 0.001 .. 3 mm, exact as DS text
bad_millimetres = st.sampled_from([0.0, -0.5, 12.5, 1e6])
valid_spacings = st.tuples(millimetres, millimetres)
spacings = st.one_of(
    st.none(),
    valid_spacings,
    valid_spacings,
    valid_spacings,
    st.tuples(bad_millimetres, millimetres),
    st.tuples(millimetres, bad_millimetres),
    st.tuples(millimetres),
    st.tuples(millimetres, millimetres, millimetres),
)
magnifications = st.one_of(
    st.none(), st.integers(50, 250).map(lambda k: k / 100), st.sampled_from([0.0, -1.0])
)
lateralities = st.sampled_from([None, "L", "R", "B", "U"])
orientations = st.sampled_from(
    [None, ("A", "R"), ("P", "L"), ("A", "FR"), ("P", "FL"), ("A",), ("A", "R", "F"), ("X", "R")]
)


@st.composite
def headers(draw: st.DrawFn) -> Header:
    bits_stored = draw(st.integers(8, 16))
    return Header(
        rows=draw(st.integers(1, 12)),
        cols=draw(st.integers(1, 12)),
        bits_stored=bits_stored,
        bits_allocated=draw(st.sampled_from([8, 16])) if bits_stored == 8 else 16,
        signed=draw(st.booleans()),
        photometric=draw(st.sampled_from(["MONOCHROME1", "MONOCHROME2"])),
        rescale=draw(
            st.none()
            | st.tuples(
                st.sampled_from([1.0, 0.5, 2.0, 0.25, -1.0, 1.5, 0.0]),
                st.integers(-2048, 2048).map(float),
            )
        ),
        pixel_spacing=draw(spacings),
        imager_pixel_spacing=draw(spacings),
        magnification=draw(magnifications),
        laterality=draw(lateralities),
        series_laterality=draw(lateralities),
        view=draw(st.none() | st.sampled_from(sorted(VIEW_SNOMED))),
        view_position=draw(st.sampled_from([None, "CC", "MLO", "ML", "XCCL", "AP", "PA"])),
        patient_orientation=draw(orientations),
        allow_missing_spacing=draw(st.booleans()),
        encoding=draw(st.sampled_from(["dataset", "explicit", "implicit", "big"])),
        seed=draw(st.integers(0, 2**16)),
    )


# ---- expectations, written independently of the intake ------------------------------------


def valid_pair(values: tuple[float, ...] | None) -> bool:
    return (
        values is not None
        and len(values) == 2
        and all(math.isfinite(v) and 0 < v <= 10 for v in values)
    )


def expected_spacing(h: Header) -> tuple[tuple[float, ...] | None, str] | type[IntakeError]:
    """``(spacing, source)`` the rules give, or the error class expected. A PixelSpacing that
    repeats ImagerPixelSpacing (uncalibrated) with a magnification factor present is the
    detector plane, corrected like ImagerPixelSpacing alone (one rule for both encodings)."""
    if valid_pair(h.pixel_spacing) and not (
            valid_pair(h.imager_pixel_spacing) and h.magnification is not None
            and all(abs(p - i) <= 1e-3 * i for p, i in zip(h.pixel_spacing or (),
                                                          h.imager_pixel_spacing or (),
                                                          strict=True))):
        return h.pixel_spacing, "PixelSpacing"
    if valid_pair(h.imager_pixel_spacing):
        assert h.imager_pixel_spacing is not None
        if h.magnification is not None and h.magnification > 0:
            corrected = tuple(v / h.magnification for v in h.imager_pixel_spacing)
            if valid_pair(corrected):
                return corrected, "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
        return h.imager_pixel_spacing, "ImagerPixelSpacing"
    if h.allow_missing_spacing:
        return None, "none"
    if h.pixel_spacing is not None or h.imager_pixel_spacing is not None:
        return InvalidSpacingError
    return MissingSpacingError


def expected_laterality(h: Header) -> str:
    value = h.laterality if h.laterality is not None else h.series_laterality
    return value if value in ("L", "R") else "U"


def expected_view(h: Header) -> str | None:
    if h.view is not None:
        return h.view
    return h.view_position if h.view_position in MAMMO_VIEWS else None


def expected_orientation(h: Header) -> tuple[str, ...] | None:
    values = h.patient_orientation
    if values is None or len(values) != 2:
        return None
    if not all(v and set(v) <= ORIENTATION_LETTERS for v in values):
        return None
    return values


def expected_pixels(h: Header, stored: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Pixels and value range: rescale, then MONOCHROME1 as ``max_possible - value``."""
    slope, intercept = h.rescale if h.rescale is not None else (1.0, 0.0)
    lo, hi = stored_range(h.bits_stored, h.signed)
    low, high = sorted((lo * slope + intercept, hi * slope + intercept))
    values = stored.astype(np.float64) * slope + intercept
    if h.photometric == "MONOCHROME1":
        return high - values, (0.0, high - low)
    return values, (low, high)


def source_of(h: Header) -> Any:
    ds = make_dataset(**h.dataset_kwargs())
    syntax = {
        "explicit": ExplicitVRLittleEndian,
        "implicit": ImplicitVRLittleEndian,
        "big": ExplicitVRBigEndian,
    }
    return (ds if h.encoding == "dataset" else to_bytes(ds, syntax[h.encoding])), ds


# ---- properties -----------------------------------------------------------------------------


@SETTINGS
@given(headers())
def test_image_matches_the_independently_derived_expectation(h: Header) -> None:
    source, ds = source_of(h)
    spacing = expected_spacing(h)
    expected_error: type[IntakeError] | None = None
    if h.rescale is not None and h.rescale[0] == 0.0:
        expected_error = InvalidHeaderError
    elif isinstance(spacing, type):
        expected_error = spacing
    event(f"expected {expected_error.__name__ if expected_error else 'an image'}")
    if expected_error is not None:
        with pytest.raises(expected_error):
            read_image(source, allow_missing_spacing=h.allow_missing_spacing)
        return
    assert not isinstance(spacing, type)
    image = read_image(source, allow_missing_spacing=h.allow_missing_spacing)
    check_image(image, h, spacing, stored_pixels(ds))
    assert read_header(source, allow_missing_spacing=h.allow_missing_spacing) == image.header


def check_image(
    image: Image,
    h: Header,
    spacing: tuple[tuple[float, ...] | None, str],
    stored: np.ndarray,
) -> None:
    pixels, value_range = expected_pixels(h, stored)
    assert image.pixels.shape == (h.rows, h.cols)
    assert image.pixels.dtype == np.float32
    np.testing.assert_allclose(image.pixels, pixels, rtol=1e-6, atol=0.02)
    assert image.value_range == pytest.approx(value_range)
    assert float(image.pixels.min()) >= value_range[0] - 0.02
    assert float(image.pixels.max()) <= value_range[1] + 0.02
    expected_mm, source = spacing
    assert image.spacing_source == source
    if expected_mm is None:
        assert image.spacing_mm is None
    else:
        assert image.spacing_mm == pytest.approx(expected_mm, rel=1e-12)
    assert image.laterality == expected_laterality(h)
    assert image.view == expected_view(h)
    assert image.patient_orientation == expected_orientation(h)
    assert (image.bits_stored, image.bits_allocated) == (h.bits_stored, h.bits_allocated)
    assert image.pixel_representation == int(h.signed)
    assert image.photometric_interpretation == h.photometric


@dataclass(frozen=True)
class PixelFormat:
    bits_allocated: int
    bits_stored: int
    high_bit: int
    pixel_representation: int

    @property
    def valid(self) -> bool:
        return (
            self.bits_allocated in (8, 16)
            and 8 <= self.bits_stored <= self.bits_allocated
            and self.high_bit == self.bits_stored - 1
            and self.pixel_representation in (0, 1)
        )


@st.composite
def pixel_formats(draw: st.DrawFn) -> PixelFormat:
    stored = draw(st.integers(1, 20))
    return PixelFormat(
        bits_allocated=draw(st.sampled_from([1, 8, 12, 16, 32])),
        bits_stored=stored,
        high_bit=draw(st.sampled_from([stored - 1, stored - 1, stored, 15, 7])),
        pixel_representation=draw(st.sampled_from([0, 1, 1, 0, 2])),
    )


@SETTINGS
@given(pixel_formats())
def test_pixel_format_is_accepted_exactly_when_consistent(fmt: PixelFormat) -> None:
    ds = make_dataset(
        extra={
            "BitsAllocated": fmt.bits_allocated,
            "BitsStored": fmt.bits_stored,
            "HighBit": fmt.high_bit,
            "PixelRepresentation": fmt.pixel_representation,
        }
    )
    if not fmt.valid:
        with pytest.raises(InvalidHeaderError) as info:
            read_image(ds)
        assert info.value.code == "invalid_header"
        return
    ds.PixelData = np.zeros((64, 48), f"<u{fmt.bits_allocated // 8}").tobytes()
    image = read_image(ds)
    assert image.bits_stored == fmt.bits_stored
    assert not image.pixels.any()


_VALID_FILE = to_bytes(make_dataset(rows=16, cols=12))


@SETTINGS
@pytest.mark.filterwarnings("ignore")
@given(
    st.lists(st.tuples(st.integers(0, len(_VALID_FILE) - 1), st.integers(0, 255)), max_size=8),
    st.integers(0, len(_VALID_FILE)),
)
def test_corrupted_files_give_an_image_or_an_intake_error(
    changes: list[tuple[int, int]], length: int
) -> None:
    data = bytearray(_VALID_FILE[:length])
    for position, byte in changes:
        if position < len(data):
            data[position] = byte
    try:
        image = read_image(bytes(data))
    except IntakeError as error:
        assert error.code and str(error)
    else:
        assert image.pixels.shape == (image.rows, image.cols)
