"""Preprocessing: orientation, breast crop, resampling, normalization and the box transform."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from serving.pipeline.dicom_in import Image, read_image
from serving.pipeline.preprocess import (
    Prepared,
    PreprocessConfig,
    Transform,
    needs_mirroring,
    prepare,
)
from tests.dicomgen import make_dataset

# --------------------------------------------------------------------------------- helpers

#: A bright square inside the phantom breast, stored pixels ``[x1, y1, x2, y2]``.
SQUARE = (60.0, 180.0, 90.0, 210.0)


def phantom(rows: int = 400, cols: int = 300, *, tubing: bool = True) -> npt.NDArray[np.uint16]:
    """Stored values of a breast-like image, chest wall at column 0, nipple towards the right:
    air 100, a half-ellipse of tissue (~2000, with texture) fading at its edge, a bright
    square (:data:`SQUARE`), and optionally a thin bright "tubing" line from the nipple to the
    top-right corner. 12-bit values."""
    rng = np.random.default_rng(1)
    r, c = np.mgrid[0:rows, 0:cols].astype(np.float64)
    centre_r, radius_r, radius_c = rows / 2, rows * 0.42, cols * 0.6
    d = np.sqrt(((r - centre_r) / radius_r) ** 2 + (c / radius_c) ** 2)
    thickness = np.clip((1 - d) / 0.08, 0, 1)
    texture = 300 * np.sin(r / 9.0) * np.cos(c / 13.0) + rng.normal(0, 20, (rows, cols))
    img = 100 + thickness * (1900 + texture)
    x1, y1, x2, y2 = (int(v) for v in SQUARE)
    img[y1:y2, x1:x2] = 3500
    if tubing:
        nipple_c = int(radius_c)
        for t in np.linspace(0, 1, 4 * cols):
            rr = int(centre_r * (1 - t))
            cc = int(nipple_c + t * (cols - 1 - nipple_c))
            img[rr, cc] = 3000
    return np.clip(np.round(img), 0, 4095).astype(np.uint16)


def phantom_image(
    pixels: npt.NDArray[np.uint16],
    *,
    spacing: tuple[float, float] | None = (0.2, 0.2),
    orientation: tuple[str, str] | None = ("A", "R"),
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
) -> Image:
    """An intake image of stored values ``pixels`` (written as DICOM, read back)."""
    if photometric == "MONOCHROME1":
        pixels = ((1 << bits_stored) - 1 - pixels.astype(np.int64)).astype(np.uint16)
    ds = make_dataset(
        rows=pixels.shape[0], cols=pixels.shape[1], bits_stored=bits_stored, pixels=pixels,
        photometric=photometric, pixel_spacing=spacing, patient_orientation=orientation,
    )
    return read_image(ds, allow_missing_spacing=True)


def mirrored(image: Image) -> Image:
    """The same breast stored the other way round: columns reversed, PatientOrientation's row
    direction A <-> P."""
    assert image.patient_orientation is not None
    row_dir, col_dir = image.patient_orientation
    swapped = row_dir.translate(str.maketrans("AP", "PA"))
    pixels = np.ascontiguousarray(image.pixels[:, ::-1])
    pixels.setflags(write=False)
    return replace(image, pixels=pixels, patient_orientation=(swapped, col_dir))


def mirror_boxes(boxes: npt.NDArray[np.float64], cols: int) -> npt.NDArray[np.float64]:
    out = boxes.copy()
    out[:, 0], out[:, 2] = cols - boxes[:, 2], cols - boxes[:, 0]
    return out


def bright_extent(prep: Prepared, level: float) -> tuple[float, float, float, float]:
    """``[x1, y1, x2, y2]`` of the model pixels above ``level`` (normalized units)."""
    rr, cc = np.nonzero(prep.array > level)
    return (float(cc.min()), float(rr.min()), float(cc.max() + 1), float(rr.max() + 1))


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A small generated dataset (test profile): its root and items."""
    out = tmp_path_factory.mktemp("synth")
    done = subprocess.run(
        [sys.executable, "-m", "serving.cli", "synth", "--out", str(out), "--cases", "6",
         "--seed", "3", "--profile", "test", "--workers", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    index = json.loads((out / "dataset.json").read_text())
    return out, [it for split in index.values() if isinstance(split, list) for it in split]


# --------------------------------------------------------------------------------- config


def test_config_round_trip_and_errors() -> None:
    cfg = PreprocessConfig(spacing_mm=0.25, size_divisible=16)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert PreprocessConfig.from_dict({}) == PreprocessConfig()
    with pytest.raises(ValueError, match=r"'spacing'.*0\.2"):
        PreprocessConfig.from_dict({"spacing": 0.2})
    with pytest.raises(ValueError, match=r"spacing_mm.*-1"):
        PreprocessConfig.from_dict({"spacing_mm": -1})
    with pytest.raises(ValueError, match=r"size_divisible.*32\.5"):
        PreprocessConfig.from_dict({"size_divisible": 32.5})
    with pytest.raises(ValueError, match=r"high_percentile.*0\.5"):
        PreprocessConfig(low_percentile=1.0, high_percentile=0.5)
    with pytest.raises(ValueError, match=r"crop_margin_mm.*'4'"):
        PreprocessConfig.from_dict({"crop_margin_mm": "4"})


# --------------------------------------------------------------------------------- transform


@pytest.mark.parametrize("flipped", [False, True])
def test_box_round_trip(flipped: bool) -> None:
    t = Transform(stored_shape=(4096, 3328), flipped=flipped, crop=(500, 3700, 0, 1900),
                  scale=(0.35, 0.3501), model_shape=(1120, 665))
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [3328, 4096], size=(200, 2))
    wh = rng.uniform(1, 300, size=(200, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [3328, 4096])], axis=1)
    model = t.stored_to_model(boxes)
    assert np.all(model[:, 2] > model[:, 0]) and np.all(model[:, 3] > model[:, 1])
    np.testing.assert_allclose(t.model_to_stored(model), boxes, atol=1e-9)
    np.testing.assert_allclose(t.model_to_stored_points(t.stored_to_model_points(xy)), xy,
                               atol=1e-9)
    assert Transform.from_dict(json.loads(json.dumps(t.to_dict()))) == t


def test_model_to_stored_clips_and_maps_the_crop_corners() -> None:
    t = Transform(stored_shape=(100, 80), flipped=True, crop=(10, 90, 0, 60),
                  scale=(0.5, 0.5), model_shape=(40, 30))
    # the whole valid model region is the crop; mirrored, the crop is columns 20..80 stored
    np.testing.assert_allclose(t.model_to_stored([[0, 0, 30, 40]]), [[20, 10, 80, 90]])
    np.testing.assert_allclose(t.model_to_stored([[-50, -50, 500, 500]]), [[0, 0, 80, 100]])
    assert t.model_to_stored(np.zeros((0, 4))).shape == (0, 4)


# --------------------------------------------------------------------------------- prepare


def test_prepared_array_layout() -> None:
    cfg = PreprocessConfig()
    prep = prepare(phantom_image(phantom()), cfg)
    h, w = prep.transform.model_shape
    assert prep.array.dtype == np.float32 and prep.breast_mask.dtype == np.bool_
    assert prep.array.shape == prep.breast_mask.shape
    assert all(s % cfg.size_divisible == 0 for s in prep.array.shape)
    assert prep.array.shape[0] - h < 32 and prep.array.shape[1] - w < 32
    assert not prep.array[h:].any() and not prep.array[:, w:].any()
    assert not prep.breast_mask[h:].any() and not prep.breast_mask[:, w:].any()
    assert prep.array.min() >= -1 and prep.array.max() <= 3
    inside = prep.array[:h, :w][prep.breast_mask[:h, :w]]
    assert np.mean((inside >= 0) & (inside <= 1)) > 0.97  # p1..p99.5 of the breast
    assert not prep.transform.flipped


def test_crop_keeps_breast_and_drops_tubing() -> None:
    prep = prepare(phantom_image(phantom()), PreprocessConfig(crop_margin_mm=4.0))
    r0, r1, c0, c1 = prep.transform.crop
    # breast: rows 200 +- 168, columns 0..180 (+ 4 mm = 20 px margin); tubing runs to col 299
    assert c0 == 0 and 195 <= c1 <= 215
    assert 5 <= r0 <= 20 and 380 <= r1 <= 395


def test_resampling_keeps_positions_and_physical_size() -> None:
    """Anisotropic stored spacing (0.1 mm rows, 0.15 mm columns) to 0.3 mm: the bright square
    lands where the transform says, with its size in mm."""
    image = phantom_image(phantom(), spacing=(0.1, 0.15))
    cfg = PreprocessConfig(spacing_mm=0.3, crop_margin_mm=2.0)
    prep = prepare(image, cfg)
    box = np.array([SQUARE])
    model = prep.transform.stored_to_model(box)[0]
    found = bright_extent(prep, level=float(np.percentile(prep.array, 99.9)) * 0.9)
    np.testing.assert_allclose(found, model, atol=1.0)
    size_mm = (model[2:] - model[:2]) * cfg.spacing_mm
    expected_mm = (box[0, 2:] - box[0, :2]) * [0.15, 0.1]
    np.testing.assert_allclose(size_mm, expected_mm, rtol=0.01)


def test_mirrored_image_gives_the_same_array_and_mirrored_boxes() -> None:
    image = phantom_image(phantom())
    flipped = mirrored(image)
    a, b = prepare(image), prepare(flipped)
    assert not a.transform.flipped and b.transform.flipped
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(a.breast_mask, b.breast_mask)
    box = np.array([SQUARE])
    box_m = mirror_boxes(box, image.cols)
    np.testing.assert_allclose(b.transform.stored_to_model(box_m), a.transform.stored_to_model(box))
    model = a.transform.stored_to_model(box)
    np.testing.assert_allclose(b.transform.model_to_stored(model), box_m, atol=1e-9)


def test_orientation_from_pixels_when_patient_orientation_is_missing() -> None:
    image = phantom_image(phantom(), orientation=None)
    assert image.patient_orientation is None
    assert not needs_mirroring(image.pixels, None)
    assert needs_mirroring(np.ascontiguousarray(image.pixels[:, ::-1]), None)
    assert needs_mirroring(image.pixels, ("P", "L"))
    assert not needs_mirroring(image.pixels[:, ::-1], ("A", "FR"))


def test_monochrome1_and_bit_depth_do_not_change_the_array() -> None:
    mono2 = prepare(phantom_image(phantom()))
    mono1 = prepare(phantom_image(phantom(), photometric="MONOCHROME1"))
    np.testing.assert_array_equal(mono2.array, mono1.array)
    wide = prepare(phantom_image(phantom() * np.uint16(16) + np.uint16(37), bits_stored=16))
    assert wide.transform == mono2.transform
    np.testing.assert_array_equal(wide.breast_mask, mono2.breast_mask)
    np.testing.assert_allclose(wide.array, mono2.array, atol=1e-4)


def test_flat_image_uses_the_whole_image() -> None:
    prep = prepare(phantom_image(np.full((100, 80), 500, np.uint16)))
    assert prep.transform.crop == (0, 100, 0, 80)
    h, w = prep.transform.model_shape
    assert prep.breast_mask[:h, :w].all()
    assert np.isfinite(prep.array).all()


def test_image_without_spacing_is_refused() -> None:
    image = phantom_image(phantom(), spacing=None)
    assert image.spacing_mm is None
    with pytest.raises(ValueError, match="spacing_mm"):
        prepare(image)


# --------------------------------------------------------------------------------- generated data


def test_crop_contains_every_ground_truth_box(synth: tuple[Path, list[dict[str, Any]]]) -> None:
    root, items = synth
    n_boxes = 0
    for item in items:
        prep = prepare(read_image(root / item["image"]))
        t = prep.transform
        h, w = t.model_shape
        boxes = np.array(item["boxes"], dtype=np.float64).reshape(-1, 4)
        nipple = np.array([item["nipple_xy"]], dtype=np.float64)
        for x1, y1, x2, y2 in t.stored_to_model(boxes):
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, item["image"]
        (nx, ny), = t.stored_to_model_points(nipple)
        assert 0 <= nx <= w and 0 <= ny <= h, item["image"]
        assert t.flipped == (item["chest_wall_side"] == "right"), item["image"]
        n_boxes += len(boxes)
    assert n_boxes > 0


def test_generated_images_mirror_and_orient_from_pixels(
    synth: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, items = synth
    for item in items[:6]:
        image = read_image(root / item["image"])
        a, b = prepare(image), prepare(mirrored(image))
        np.testing.assert_array_equal(a.array, b.array)
        boxes = np.array(item["boxes"], dtype=np.float64).reshape(-1, 4)
        np.testing.assert_allclose(
            b.transform.model_to_stored(a.transform.stored_to_model(boxes)),
            mirror_boxes(boxes, image.cols), atol=1e-9,
        )
    for item in items:
        image = read_image(root / item["image"])
        assert needs_mirroring(image.pixels, None) == (item["chest_wall_side"] == "right")
