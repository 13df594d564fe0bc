"""Pixel semantics of the DICOM intake (serving.pipeline.intake.pixel_semantics): every
attribute that changes how stored values map to attenuation, or marks pixels as not image.

The property, for each attribute: a *neutral re-encoding* of a generated galactogram (the same
image stored another way that the attribute describes) gives the same findings through
``detect`` with the bundled model (same boxes at IoU >= 0.3, scores within 0.05), and, where
the mapping is exact, the same ``read_image(...).pixels``. Where the header contradicts itself
the image decides, and the warning names the attributes; refusals carry a typed code.

One generated study (the session's ``galactogram_files``: GE profile, one case with lesions,
uncompressed MONOCHROME2) is re-encoded in memory for every case.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

from serving.pipeline.detect import detect
from serving.pipeline.dicom_in import Image, read_header, read_image
from serving.pipeline.errors import InvalidHeaderError
from serving.pipeline.findings import DetectionResponse
from serving.pipeline.model import DetectorModel
from serving.pipeline.preprocess import prepare
from tests.dicomgen import make_dataset, random_pixels, require_executable, to_bytes

OPERATING_POINT = "high_sensitivity"
MIN_IOU, MAX_SCORE_CHANGE = 0.3, 0.05
PADDING_MM = 6.0

Change = Callable[[Dataset, npt.NDArray[np.int64]], npt.NDArray[np.int64]]


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def originals(galactogram_files: list[Path]) -> list[Dataset]:
    """The two generated views (MONOCHROME2, IDENTITY, sign -1, 12 bits, 0.1 mm)."""
    datasets: list[Dataset] = [pydicom.dcmread(f) for f in galactogram_files]
    for ds in datasets:
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.PresentationLUTShape == "IDENTITY"
        assert ds.PixelIntensityRelationshipSign == -1
    return datasets


@pytest.fixture(scope="module")
def base(originals: list[Dataset], bundled_model: DetectorModel
         ) -> tuple[list[Image], DetectionResponse]:
    images = [read_image(to_bytes(ds)) for ds in originals]
    assert all(im.warnings == () for im in images)
    response = detect(images, bundled_model, OPERATING_POINT)
    assert any(im.findings for s in response.studies for im in s.images), "nothing to compare"
    return images, response


def maxval(ds: Dataset) -> int:
    return int(2 ** int(ds.BitsStored) - 1)


def border_px(ds: Dataset) -> int:
    """PADDING_MM in pixels of ``ds``."""
    spacing = float((ds.get("PixelSpacing") or ds.ImagerPixelSpacing)[0])
    return round(PADDING_MM / spacing)


def reencode(originals: list[Dataset], change: Change) -> list[bytes]:
    """Part 10 bytes of each original with ``change(ds, stored values)`` applied: it edits
    the header in place and returns the new stored values (any shape)."""
    out = []
    for original in originals:
        ds = copy.deepcopy(original)
        stored = change(ds, ds.pixel_array.astype(np.int64))
        ds.Rows, ds.Columns = stored.shape
        ds.PixelData = np.ascontiguousarray(stored, dtype=np.uint16).tobytes()
        out.append(to_bytes(ds))
    return out


def iou(a: list[float], b: list[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def assert_same_findings(
    expected: DetectionResponse, found: DetectionResponse, offset: float = 0.0
) -> None:
    """Every finding has a partner in the other response (IoU >= MIN_IOU, score within
    MAX_SCORE_CHANGE), except ones so close to the threshold that the change may cross it.
    ``offset`` is subtracted from ``found``'s boxes (a frame added around the image)."""
    threshold = expected.operating_point.score_threshold
    a_images = [im for s in expected.studies for im in s.images]
    b_images = [im for s in found.studies for im in s.images]
    assert len(a_images) == len(b_images)
    for a_img, b_img in zip(a_images, b_images, strict=True):
        a = [([float(v) for v in f.box_px], f.score) for f in a_img.findings]
        b = [([float(v) - offset for v in f.box_px], f.score) for f in b_img.findings]
        for mine, theirs in ((a, b), (b, a)):
            for box, score in mine:
                partner = any(iou(box, other) >= MIN_IOU
                              and abs(score - other_score) <= MAX_SCORE_CHANGE
                              for other, other_score in theirs)
                assert partner or abs(score - threshold) <= MAX_SCORE_CHANGE, (box, score, theirs)


def findings_of(data: list[bytes], model: DetectorModel) -> DetectionResponse:
    return detect([read_image(d) for d in data], model, OPERATING_POINT)


def polarity_warnings(image: Image) -> list[str]:
    return [w for w in image.warnings if "polarity" in w or "contradicts" in w]


# --------------------------------------------------------------------------------------------
# F1 and the polarity attributes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sign", [1, -1, None], ids=["sign+1", "stale-sign-1", "no-sign"])
def test_inverse_shape_on_monochrome2_is_honoured(
    originals: list[Dataset], base: tuple[list[Image], DetectionResponse],
    bundled_model: DetectorModel, sign: int | None,
) -> None:
    """F1: stored ``max - pixels``, MONOCHROME2 kept, Presentation LUT Shape INVERSE (with the
    sign re-encoded, left stale, or absent): the shape is honoured."""
    def change(ds: Dataset, px: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        ds.PresentationLUTShape = "INVERSE"
        if sign is None:
            del ds.PixelIntensityRelationshipSign
        else:
            ds.PixelIntensityRelationshipSign = sign
        return maxval(ds) - px

    data = reencode(originals, change)
    images = [read_image(d) for d in data]
    for image, expected in zip(images, base[0], strict=True):
        np.testing.assert_array_equal(image.pixels, expected.pixels)
        assert any("PresentationLUTShape (2050,0020) INVERSE contradicts "
                   "PhotometricInterpretation (0028,0004) MONOCHROME2" in w
                   for w in image.warnings)
        assert any("so they were inverted" in w for w in image.warnings)
        assert image.value_range == expected.value_range
    if sign == -1:  # the stale sign is named too
        assert any("PixelIntensityRelationshipSign (0028,1041) -1" in w
                   for w in images[0].warnings)
    assert_same_findings(base[1], detect(images, bundled_model, OPERATING_POINT))


@pytest.mark.parametrize("keep_sign", [True, False])
def test_monochrome1_with_identity_shape_follows_the_image(
    originals: list[Dataset], base: tuple[list[Image], DetectionResponse],
    bundled_model: DetectorModel, keep_sign: bool,
) -> None:
    """MONOCHROME1 + IDENTITY on the original (not inverted) values: contradictory; the image
    (and the shape, PS3.3 C.11.6.1.2) say the values are not to be inverted."""
    def change(ds: Dataset, px: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PresentationLUTShape = "IDENTITY"
        if not keep_sign:
            del ds.PixelIntensityRelationshipSign
        return px

    data = reencode(originals, change)
    images = [read_image(d) for d in data]
    for image, expected in zip(images, base[0], strict=True):
        np.testing.assert_array_equal(image.pixels, expected.pixels)
        assert any("PresentationLUTShape (2050,0020) IDENTITY contradicts "
                   "PhotometricInterpretation (0028,0004) MONOCHROME1" in w
                   for w in image.warnings)
        assert any("so they were not inverted" in w for w in image.warnings)
    assert_same_findings(base[1], detect(images, bundled_model, OPERATING_POINT))


def test_monochrome1_with_inverse_shape_inverts_once(
    originals: list[Dataset], base: tuple[list[Image], DetectionResponse],
    bundled_model: DetectorModel,
) -> None:
    """MONOCHROME1 + INVERSE + sign +1 is the pairing PS3.3 C.8.11.3 requires: one inversion,
    no warning."""
    def change(ds: Dataset, px: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PresentationLUTShape = "INVERSE"
        ds.PixelIntensityRelationshipSign = 1
        return maxval(ds) - px

    data = reencode(originals, change)
    images = [read_image(d) for d in data]
    for image, expected in zip(images, base[0], strict=True):
        np.testing.assert_array_equal(image.pixels, expected.pixels)
        assert image.warnings == ()
    assert_same_findings(base[1], detect(images, bundled_model, OPERATING_POINT))


def test_pixel_intensity_relationship_sign_alone_flips_polarity(
    originals: list[Dataset], base: tuple[list[Image], DetectionResponse],
    bundled_model: DetectorModel,
) -> None:
    """Stored ``max - pixels`` with MONOCHROME2, no Presentation LUT Shape and Pixel Intensity
    Relationship Sign +1 (PS3.3 C.8.11.3.1.2: lower stored values = less X-ray intensity, so
    larger stored values are *less* attenuating): contradicts MONOCHROME2; the image agrees
    with the sign, and the warning names it."""
    def change(ds: Dataset, px: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        del ds.PresentationLUTShape
        ds.PixelIntensityRelationshipSign = 1
        return maxval(ds) - px

    data = reencode(originals, change)
    images = [read_image(d) for d in data]
    for image, expected in zip(images, base[0], strict=True):
        np.testing.assert_array_equal(image.pixels, expected.pixels)
        assert any(w.startswith("PixelIntensityRelationshipSign (0028,1041) 1 ") and
                   "contradicts PhotometricInterpretation (0028,0004)" in w
                   for w in image.warnings)
        assert any("inverted, as PixelIntensityRelationshipSign (0028,1041) 1 says" in w
                   for w in image.warnings)
    assert_same_findings(base[1], detect(images, bundled_model, OPERATING_POINT))


def test_sign_and_image_can_overrule_photometric_and_shape(
    originals: list[Dataset], base: tuple[list[Image], DetectionResponse],
    bundled_model: DetectorModel,
) -> None:
    """MONOCHROME1 + INVERSE on values that are *not* inverted, with the original sign -1
    (larger = more attenuating): the PS3.3 rule alone would invert (a negative image); the
    sign and the image agree that the values are not to be inverted, and that wins."""
    def change(ds: Dataset, px: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PresentationLUTShape = "INVERSE"
        return px

    data = reencode(originals, change)
    images = [read_image(d) for d in data]
    for image, expected in zip(images, base[0], strict=True):
        np.testing.assert_array_equal(image.pixels, expected.pixels)
        assert any("PixelIntensityRelationshipSign (0028,1041) -1" in w and "contradicts" in w
                   for w in image.warnings)
        assert any("not inverted, as PixelIntensityRelationshipSign (0028,1041) -1 says" in w
                   for w in image.warnings)
    assert_same_findings(base[1], detect(images, bundled_model, OPERATING_POINT))


def test_a_conflict_is_named_already_by_read_header(originals: list[Dataset]) -> None:
    data = reencode(originals[:1], lambda ds, px: _set(ds, PresentationLUTShape="INVERSE",
                                                       result=maxval(ds) - px))
    header = read_header(data[0])
    assert any("contradicts" in w and "polarity decided from the image when decoded" in w
               for w in header.warnings)


def test_without_image_evidence_the_shape_decides_as_dcmtk_does() -> None:
    """Noise says nothing about air: a contradiction falls back to the Presentation LUT Shape,
    which is what DCMTK renders (checked against dcm2pnm)."""
    tool = require_executable("dcm2pnm")
    stored = random_pixels(32, 48, 12, seed=3)
    for photometric, shape in (("MONOCHROME2", "INVERSE"), ("MONOCHROME1", "IDENTITY"),
                               ("MONOCHROME1", "INVERSE"), ("MONOCHROME1", None),
                               ("MONOCHROME2", None)):
        extra = {"PresentationLUTShape": shape} if shape else {}
        data = to_bytes(make_dataset(rows=32, cols=48, pixels=stored, photometric=photometric,
                                     extra=extra))
        image = read_image(data)
        inverted = (shape == "INVERSE") if shape else photometric == "MONOCHROME1"
        expected = 4095.0 - stored if inverted else stored.astype(np.float64)
        np.testing.assert_array_equal(image.pixels, expected)
        if shape is not None and (shape == "INVERSE") != (photometric == "MONOCHROME1"):
            assert any("does not show which way" in w and "PresentationLUTShape" in w
                       for w in image.warnings)
        rendered = _dcm2pnm(tool, data)  # min-max window, 8 bits: brighter = larger P-value
        assert np.corrcoef(rendered.ravel(), image.pixels.ravel())[0, 1] > 0.99, (photometric,
                                                                                  shape)


def test_unknown_presentation_lut_shape_is_named() -> None:
    image = read_image(make_dataset(extra={"PresentationLUTShape": "LIN OD"}))
    assert any("ignored PresentationLUTShape (2050,0020) 'LIN OD'" in w for w in image.warnings)


def _dcm2pnm(tool: str, data: bytes) -> npt.NDArray[np.uint8]:
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder, "in.dcm"), Path(folder, "out.pgm")
        source.write_bytes(data)
        subprocess.run([tool, "+Wm", "+op", str(source), str(target)], check=True,
                       capture_output=True, timeout=60)
        raw = target.read_bytes()
    header_end = raw.index(b"255\n") + 4
    return np.frombuffer(raw[header_end:], dtype=np.uint8).reshape(32, 48)


def _set(ds: Dataset, *, result: npt.NDArray[np.int64], **values: Any) -> npt.NDArray[np.int64]:
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return result


# --------------------------------------------------------------------------------------------
# F2: padding and display shutters are not image
# --------------------------------------------------------------------------------------------


def _framed(px: npt.NDArray[np.int64], border: int, value: int | npt.NDArray[np.int64]
            ) -> npt.NDArray[np.int64]:
    out = np.empty((px.shape[0] + 2 * border, px.shape[1] + 2 * border), dtype=np.int64)
    out[...] = value
    out[border:-border, border:-border] = px
    return out


def test_padding_is_masked_as_air_before_inversion_crop_and_percentiles(
    originals: list[Dataset], base: tuple[list[Image], DetectionResponse],
    bundled_model: DetectorModel,
) -> None:
    """F2: MONOCHROME1 with a 6 mm frame of 0 and Pixel Padding Value 0 (0 becomes the
    brightest value after the inversion)."""
    border = border_px(originals[0])

    def change(ds: Dataset, px: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PresentationLUTShape = "INVERSE"
        ds.PixelIntensityRelationshipSign = 1
        _us(ds, "PixelPaddingValue", 0)
        return _framed(maxval(ds) - px, border, 0)

    data = reencode(originals, change)
    images = [read_image(d) for d in data]
    for image, expected in zip(images, base[0], strict=True):
        inner = image.pixels[border:-border, border:-border]
        np.testing.assert_array_equal(inner, expected.pixels)
        frame = image.pixels.copy()
        frame[border:-border, border:-border] = np.nan
        assert np.nanmax(frame) == np.nanmin(frame) == expected.pixels.min()
        assert image.image_area == (border, border + expected.rows, border,
                                    border + expected.cols)
        assert any("PixelPaddingValue (0028,0120)" in w and "padding pixels" in w
                   for w in image.warnings)
    response = detect(images, bundled_model, OPERATING_POINT)
    assert_same_findings(base[1], response, offset=border)
    for a, b in zip(base[1].studies[0].images, response.studies[0].images, strict=True):
        assert a.nipple_px is not None and b.nipple_px is not None
        assert np.hypot(a.nipple_px[0] - (b.nipple_px[0] - border),
                        a.nipple_px[1] - (b.nipple_px[1] - border)) < 2.0
    unmasked = reencode(originals[:1], lambda ds, px: _without(change(ds, px), ds,
                                                               "PixelPaddingValue"))
    assert read_image(unmasked[0]).pixels[0, 0] == maxval(originals[0])  # the F2 misread


def _us(ds: Dataset, keyword: str, value: int) -> None:
    """Set an attribute of VR "US or SS" as US (pydicom cannot write it ambiguous)."""
    setattr(ds, keyword, value)
    ds[keyword].VR = "US"


def _without(result: npt.NDArray[np.int64], ds: Dataset, keyword: str) -> npt.NDArray[np.int64]:
    delattr(ds, keyword)
    return result


def test_a_padded_frame_gives_the_same_network_input(originals: list[Dataset],
                                                     base: tuple[list[Image], Any]) -> None:
    """The crop and the orientation test (here without PatientOrientation) stay inside
    ``Image.image_area``: the prepared array is the one of the image without the frame."""
    border = border_px(originals[0])

    def change(ds: Dataset, px: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        _us(ds, "PixelPaddingValue", 0)
        del ds.PatientOrientation
        return _framed(px, border, 0)

    for data, expected in zip(reencode(originals, change), base[0], strict=True):
        padded = prepare(read_image(data))
        plain = prepare(dataclasses.replace(expected, patient_orientation=None))
        assert padded.transform.flipped == plain.transform.flipped
        assert padded.transform.model_shape == plain.transform.model_shape
        np.testing.assert_allclose(padded.array, plain.array, atol=1e-5)


def test_padding_range_limit_masks_a_range(
    originals: list[Dataset], base: tuple[list[Image], DetectionResponse],
    bundled_model: DetectorModel,
) -> None:
    """MONOCHROME2 with a frame of values 0..40 and Pixel Padding Value 40 / Range Limit 0
    (PS3.3 C.7.5.1.1.2: the range between them, either order)."""
    border = border_px(originals[0])
    rng = np.random.default_rng(5)

    def change(ds: Dataset, px: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        _us(ds, "PixelPaddingValue", 40)
        _us(ds, "PixelPaddingRangeLimit", 0)
        noise = rng.integers(0, 41, size=(px.shape[0] + 2 * border, px.shape[1] + 2 * border))
        return _framed(px, border, noise)

    data = reencode(originals, change)
    images = [read_image(d) for d in data]
    for image, expected in zip(images, base[0], strict=True):
        np.testing.assert_array_equal(image.pixels[border:-border, border:-border],
                                      expected.pixels)
        assert any("PixelPaddingRangeLimit (0028,0121)" in w for w in image.warnings)
    assert_same_findings(base[1], detect(images, bundled_model, OPERATING_POINT),
                         offset=border)


def test_outside_a_display_shutter_is_not_image(
    originals: list[Dataset], base: tuple[list[Image], DetectionResponse],
    bundled_model: DetectorModel,
) -> None:
    """A bright 6 mm frame (a collimator edge) outside a rectangular display shutter
    (PS3.3 C.7.6.11; 1-based pixel edges)."""
    border = border_px(originals[0])

    def change(ds: Dataset, px: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        rows, cols = px.shape
        ds.ShutterShape = "RECTANGULAR"
        ds.ShutterLeftVerticalEdge, ds.ShutterRightVerticalEdge = border + 1, border + cols
        ds.ShutterUpperHorizontalEdge, ds.ShutterLowerHorizontalEdge = border + 1, border + rows
        return _framed(px, border, maxval(ds))

    data = reencode(originals, change)
    images = [read_image(d) for d in data]
    for image, expected in zip(images, base[0], strict=True):
        np.testing.assert_array_equal(image.pixels[border:-border, border:-border],
                                      expected.pixels)
        assert image.pixels[0, 0] == expected.pixels.min()
        assert any("outside the display shutter (ShutterShape (0018,1600) RECTANGULAR)" in w
                   for w in image.warnings)
    assert_same_findings(base[1], detect(images, bundled_model, OPERATING_POINT),
                         offset=border)


def test_circular_and_polygonal_shutters() -> None:
    stored = np.full((40, 40), 1000, dtype=np.uint16)
    stored[18:22, 18:22] = 3000
    circle = read_image(make_dataset(rows=40, cols=40, pixels=stored, extra={
        "ShutterShape": "CIRCULAR", "CenterOfCircularShutter": [20, 20],
        "RadiusOfCircularShutter": 10}))
    assert circle.pixels[19, 19] == 3000 and circle.pixels[19, 29] == 1000
    assert circle.pixels[0, 0] == 1000  # outside: the lowest value of the image
    assert circle.image_area == (9, 30, 9, 30)
    triangle = read_image(make_dataset(rows=40, cols=40, pixels=stored, extra={
        "ShutterShape": "POLYGONAL", "VerticesOfThePolygonalShutter": [1, 1, 1, 40, 40, 1]}))
    assert triangle.image_area == (0, 40, 0, 40)
    assert triangle.pixels[18, 18] == 3000  # 1-based (19, 19): inside the triangle
    assert triangle.pixels[21, 21] == 1000  # 1-based (22, 22): outside, the lowest value
    broken = read_image(make_dataset(rows=40, cols=40, pixels=stored, extra={
        "ShutterShape": "CIRCULAR", "CenterOfCircularShutter": [20, 20]}))
    assert broken.image_area is None
    assert any("ignored the CIRCULAR display shutter" in w for w in broken.warnings)


def test_padding_value_outside_the_stored_range_is_ignored_and_named() -> None:
    ds = make_dataset()
    _us(ds, "PixelPaddingValue", 5000)
    image = read_image(to_bytes(ds))
    assert image.image_area is None
    assert any("ignored PixelPaddingValue (0028,0120)" in w for w in image.warnings)


# --------------------------------------------------------------------------------------------
# Modality LUT on MG
# --------------------------------------------------------------------------------------------


def test_negative_rescale_on_mg_is_applied_and_named(
    originals: list[Dataset], base: tuple[list[Image], DetectionResponse],
    bundled_model: DetectorModel,
) -> None:
    """Stored ``max - pixels`` with Rescale Slope -1, Intercept max (and the matching sign):
    the rescale gives back the original values; MG requires identity (C.8.11.3.1.2)."""
    def change(ds: Dataset, px: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        ds.RescaleSlope, ds.RescaleIntercept = "-1", str(maxval(ds))
        ds.PixelIntensityRelationshipSign = 1
        return maxval(ds) - px

    data = reencode(originals, change)
    images = [read_image(d) for d in data]
    for image, expected in zip(images, base[0], strict=True):
        np.testing.assert_array_equal(image.pixels, expected.pixels)
        assert image.value_range == expected.value_range
        assert any(w.startswith("RescaleSlope (0028,1053) -1 / RescaleIntercept (0028,1052)")
                   and "reverses" in w for w in image.warnings)
        assert not polarity_warnings(image)
    assert_same_findings(base[1], detect(images, bundled_model, OPERATING_POINT))


def _lut_item(values: list[int], bits: int = 16, first: int = 0) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(values) % 65536, first, bits]
    item.LUTData = values
    item["LUTData"].VR = "US"
    item.ModalityLUTType = "US"
    return item


def test_modality_lut_sequence_is_applied_and_named(
    originals: list[Dataset], base: tuple[list[Image], DetectionResponse],
    bundled_model: DetectorModel,
) -> None:
    """Stored ``max - pixels`` with a decreasing Modality LUT that maps them back (and a
    Rescale that the LUT overrides, PS3.3 C.11.1, as pydicom and DCMTK do)."""
    def change(ds: Dataset, px: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        top = maxval(ds)
        ds.ModalityLUTSequence = DicomSequence([_lut_item(list(range(top, -1, -1)))])
        ds.RescaleSlope, ds.RescaleIntercept = "2", "7"
        ds.PixelIntensityRelationshipSign = 1
        return top - px

    data = reencode(originals, change)
    images = [read_image(d) for d in data]
    for image, expected in zip(images, base[0], strict=True):
        np.testing.assert_array_equal(image.pixels, expected.pixels)
        assert (image.rescale_slope, image.rescale_intercept) == (1.0, 0.0)
        assert image.value_range == (0.0, 65535.0)
        assert any(w.startswith("ModalityLUTSequence (0028,3000) applied") and "reverses" in w
                   and "MG and DX" in w for w in image.warnings)
        assert any("RescaleSlope (0028,1053) 2" in w and "ignored" in w for w in image.warnings)
        assert not polarity_warnings(image)
    assert_same_findings(base[1], detect(images, bundled_model, OPERATING_POINT))


@pytest.mark.parametrize(("item", "attribute"), [
    (_lut_item(list(range(4096)), bits=12), "ModalityLUTSequence (0028,3000)"),
    (_lut_item(list(range(100))), "LUTData"),
])
def test_a_modality_lut_that_cannot_be_applied_is_refused(item: Dataset, attribute: str
                                                          ) -> None:
    if attribute == "LUTData":
        item.LUTDescriptor = [4096, 0, 16]  # says 4096 entries, holds 100
    ds = make_dataset(extra={"ModalityLUTSequence": DicomSequence([item])})
    with pytest.raises(InvalidHeaderError) as info:
        read_image(to_bytes(ds))
    assert info.value.code == "invalid_header"
    assert attribute in str(info.value.attribute)


# --------------------------------------------------------------------------------------------
# Stored values beyond Bits Stored; codestream precision
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_codestream_wider_than_bits_stored_keeps_its_precision(
    originals: list[Dataset], base: tuple[list[Image], DetectionResponse],
    bundled_model: DetectorModel, photometric: str,
) -> None:
    """A 12-bit JPEG-LS codestream in a header that says Bits Stored 10: clearing the bits
    above 10 would wrap the values around (what pydicom's decoder does by default)."""
    data = []
    for original in originals:
        ds = copy.deepcopy(original)
        if photometric == "MONOCHROME1":
            ds.PixelData = (maxval(ds) - ds.pixel_array).astype(np.uint16).tobytes()
            ds.PhotometricInterpretation, ds.PresentationLUTShape = "MONOCHROME1", "INVERSE"
            ds.PixelIntensityRelationshipSign = 1
        ds = pydicom.dcmread(io.BytesIO(to_bytes(ds, JPEGLSLossless)))
        ds.BitsStored, ds.HighBit = 10, 9
        data.append(_part10(ds))
    images = [read_image(d) for d in data]
    for image, expected in zip(images, base[0], strict=True):
        np.testing.assert_array_equal(image.pixels, expected.pixels)
        assert image.value_range == expected.value_range
        assert any(w.startswith("BitsStored (0028,0101) is 10 but the JPEG-LS") and
                   "12-bit samples" in w for w in image.warnings)
    assert_same_findings(base[1], detect(images, bundled_model, OPERATING_POINT))


def test_jpeg2000_wider_than_bits_stored_keeps_its_precision() -> None:
    stored = random_pixels(64, 48, 14, seed=2)
    ds = pydicom.dcmread(io.BytesIO(to_bytes(make_dataset(bits_stored=14, pixels=stored),
                                             JPEG2000Lossless)))
    ds.BitsStored, ds.HighBit = 12, 11
    image = read_image(_part10(ds))
    np.testing.assert_array_equal(image.pixels, stored)
    assert image.value_range == (0.0, 16383.0)
    assert any("14-bit samples" in w for w in image.warnings)


def _part10(ds: Dataset) -> bytes:
    """``ds`` written as it is (its transfer syntax kept)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_native_bits_above_high_bit_are_cleared_and_named() -> None:
    stored = random_pixels(32, 24, 12, seed=4)
    polluted = stored | np.uint16(0x3000)
    image = read_image(to_bytes(make_dataset(rows=32, cols=24, pixels=polluted)))
    np.testing.assert_array_equal(image.pixels, stored)
    assert any("have bits set above HighBit (0028,0102) 11" in w for w in image.warnings)
    with_overlay = make_dataset(rows=32, cols=24, pixels=polluted)
    with_overlay.add_new(0x60000102, "US", 12)  # OverlayBitPosition: an overlay lives there
    image = read_image(to_bytes(with_overlay))
    np.testing.assert_array_equal(image.pixels, stored)
    assert not any("HighBit" in w for w in image.warnings)


# --------------------------------------------------------------------------------------------
# Display-only attributes: not applied, by decision
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [
    {"VOILUTFunction": "SIGMOID", "WindowCenter": "1000", "WindowWidth": "500"},
    {"VOILUTFunction": "LINEAR_EXACT", "WindowCenter": "10", "WindowWidth": "2"},
    {"VOILUTSequence": DicomSequence([_lut_item([v // 16 for v in range(4096)])])},
], ids=["sigmoid", "linear-exact", "voi-lut"])
def test_voi_stage_is_display_only(extra: dict[str, Any]) -> None:
    """VOI LUT Function / window / VOI LUT Sequence never change the intake's pixels: the
    detector normalises by breast percentiles, a window would only clip (PS3.3 C.11.2)."""
    ds = make_dataset(extra=extra)
    image = read_image(to_bytes(ds))
    np.testing.assert_array_equal(image.pixels, read_image(to_bytes(make_dataset())).pixels)
    assert image.warnings == ()


def test_decreasing_voi_lut_is_named() -> None:
    lut = DicomSequence([_lut_item([4095 - v for v in range(4096)])])
    image = read_image(to_bytes(make_dataset(extra={"VOILUTSequence": lut})))
    assert any(w.startswith("VOILUTSequence (0028,3010) decreases") for w in image.warnings)


def test_linear_pixel_intensity_relationship_is_named() -> None:
    image = read_image(to_bytes(make_dataset(extra={"PixelIntensityRelationship": "LIN"})))
    np.testing.assert_array_equal(image.pixels, read_image(to_bytes(make_dataset())).pixels)
    assert any(w.startswith("PixelIntensityRelationship (0028,1040) is LIN")
               for w in image.warnings)
