"""Box-aware patch augmentation (:mod:`training.augment`) on tiny patches (CPU).

Boxes passed to :func:`training.augment.augment` are project ``[x1, y1, x2, y2]`` (x =
column); the single steps take MONAI 2D ``[r1, c1, r2, c2]``. All in patch pixels.
"""

from __future__ import annotations

import numpy as np
import pytest

from serving.pipeline.boxes import monai_to_xyxy, xyxy_to_monai
from training import augment as aug
from training.config import AugmentConfig

P = 48


def _spatial_only(flip_p: float, rot90_p: float, zoom_p: float,
                  zoom_range: tuple[float, float]) -> AugmentConfig:
    """Intensity steps off, so the pixels keep their values and only move."""
    return AugmentConfig(flip_p=flip_p, rot90_p=rot90_p, zoom_p=zoom_p, zoom_range=zoom_range,
                         gamma_range=(1.0, 1.0), contrast_range=(1.0, 1.0), shift_range=0.0,
                         noise_std=0.0, blur_p=0.0)


CONFIGS = {
    "default": AugmentConfig(),
    "always": AugmentConfig(flip_p=1, rot90_p=1, zoom_p=1, blur_p=1),
    "zoom_in": AugmentConfig(zoom_p=1, zoom_range=(1.1, 1.5)),
    "zoom_out": AugmentConfig(zoom_p=1, zoom_range=(0.6, 0.9)),
}


def _bright_square(box_xyxy: list[int], background: float = 0.0) -> np.ndarray:
    """``(P, P)`` float32 patch of ``background`` with 1.0 inside ``box_xyxy``."""
    patch = np.full((P, P), background, np.float32)
    x1, y1, x2, y2 = box_xyxy
    patch[y1:y2, x1:x2] = 1.0
    return patch


def _bright_box(patch: np.ndarray, level: float = 0.5) -> np.ndarray:
    """``[x1, y1, x2, y2]`` (max exclusive) around the pixels above ``level``."""
    rows, cols = np.nonzero(patch > level)
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32)


def _inputs(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A noisy patch with two bright squares, their boxes and a third box in a corner
    (``[x1, y1, x2, y2]``), and labels."""
    rng = np.random.default_rng(seed)
    patch = (rng.random((P, P)) * 0.2).astype(np.float32)
    patch[8:16, 20:30] = 1.0
    patch[30:38, 4:10] = 0.8
    boxes = np.array([[20, 8, 30, 16], [4, 30, 10, 38], [44, 44, 48, 48]], np.float32)
    return patch, boxes, np.array([0, 2, 1], np.int64)


def _by_steps(patch: np.ndarray, boxes: np.ndarray, cfg: AugmentConfig,
              rng: np.random.Generator, labels: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chain of single ``random_*`` steps in the documented order."""
    mb = xyxy_to_monai(boxes, np.float32)
    patch, mb = aug.random_flip(patch, mb, rng, cfg.flip_p, 0)
    patch, mb = aug.random_flip(patch, mb, rng, cfg.flip_p, 1)
    patch, mb = aug.random_rot90(patch, mb, rng, cfg.rot90_p)
    patch, mb, keep = aug.random_zoom(patch, mb, rng, cfg.zoom_p, cfg.zoom_range)
    patch = np.ascontiguousarray(patch, dtype=np.float32)
    patch = aug.random_gamma(patch, rng, cfg.gamma_range)
    patch = aug.random_contrast(patch, rng, cfg.contrast_range)
    patch = aug.random_shift(patch, rng, cfg.shift_range)
    patch = aug.random_blur(patch, rng, cfg.blur_p)
    patch = aug.random_noise(patch, rng, cfg.noise_std)
    return patch, monai_to_xyxy(mb, np.float32), labels[keep]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_augment_is_the_chain_of_its_steps(name: str) -> None:
    """Same seed, same draws: the composed function equals the single steps bit for bit and
    leaves the generator in the same state."""
    cfg = CONFIGS[name]
    for seed in range(15):
        patch, boxes, labels = _inputs(seed)
        rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
        got = aug.augment(patch, boxes, cfg, rng_a, labels)
        want = _by_steps(patch, boxes, cfg, rng_b, labels)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape
            assert g.tobytes() == w.tobytes()
        assert rng_a.random() == rng_b.random()
        assert got[0].dtype == np.float32 and got[0].shape == (P, P)
        assert got[0].flags.c_contiguous
        assert got[1].dtype == np.float32 and got[1].shape == (len(got[2]), 4)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_boxes_stay_inside_the_patch(name: str) -> None:
    for seed in range(30):
        patch, boxes, labels = _inputs(seed)
        _, out, lab = aug.augment(patch, boxes, CONFIGS[name], np.random.default_rng(seed),
                                  labels)
        assert np.all(out >= 0) and np.all(out <= P), out
        assert np.all(out[:, 2:] > out[:, :2]), out
        assert set(lab.tolist()) <= {0, 1, 2}


def test_labels_default_to_zero_and_follow_dropped_boxes() -> None:
    """A zoom-in pushes the corner box out; its label goes with it."""
    patch, boxes, labels = _inputs(0)
    cfg = _spatial_only(0.0, 0.0, 1.0, (1.5, 1.5))
    _, out, lab = aug.augment(patch, boxes, cfg, np.random.default_rng(0), labels)
    assert lab.tolist() == [0, 2] and len(out) == 2
    _, _, lab = aug.augment(patch, boxes, cfg, np.random.default_rng(0))
    assert lab.dtype == np.int64 and lab.tolist() == [0, 0]


@pytest.mark.parametrize("axis", [0, 1])
def test_flip_twice_is_identity(axis: int) -> None:
    patch, boxes, _ = _inputs(1)
    mb = xyxy_to_monai(boxes, np.float32)
    once, mb1 = aug.flip(patch, mb, axis)
    twice, mb2 = aug.flip(once, mb1, axis)
    assert not np.array_equal(once, patch)
    np.testing.assert_array_equal(twice, patch)
    np.testing.assert_array_equal(mb2, mb)


def test_four_quarter_turns_are_identity() -> None:
    patch, boxes, _ = _inputs(2)
    p, mb = patch, xyxy_to_monai(boxes, np.float32)
    for _ in range(4):
        p, mb = aug.rot90(p, mb, 1)
    np.testing.assert_array_equal(p, patch)
    np.testing.assert_array_equal(monai_to_xyxy(mb), boxes)
    back, mb = aug.rot90(*aug.rot90(patch, xyxy_to_monai(boxes, np.float32), 3), 1)
    np.testing.assert_array_equal(back, patch)


@pytest.mark.parametrize("box", [[20, 8, 30, 16], [0, 30, 7, 48], [5, 5, 9, 21]])
def test_box_follows_a_bright_square_through_flips_and_turns(box: list[int]) -> None:
    """Exact moves: after every flip and rotation the box is the bright square's box."""
    patch = _bright_square(box)
    mb = xyxy_to_monai(np.array([box], np.float32))
    for axis in (0, 1):
        p, b = aug.flip(patch, mb, axis)
        np.testing.assert_array_equal(monai_to_xyxy(b)[0], _bright_box(p))
    for k in (1, 2, 3):
        p, b = aug.rot90(patch, mb, k)
        np.testing.assert_array_equal(monai_to_xyxy(b)[0], _bright_box(p))


@pytest.mark.parametrize("factor", [0.7, 0.85, 1.2, 1.45])
def test_box_follows_a_bright_square_through_zoom(factor: float) -> None:
    """Bilinear zoom: the bright square's box and the zoomed box agree to within 1 px."""
    box = [18, 14, 30, 26]
    patch = _bright_square(box)
    out, b, keep = aug.zoom(patch, xyxy_to_monai(np.array([box], np.float32)), factor)
    assert out.shape == (P, P) and keep.tolist() == [True]
    np.testing.assert_allclose(monai_to_xyxy(b)[0], _bright_box(out), atol=1.0)


def test_box_follows_a_bright_square_through_augment() -> None:
    """With the intensity steps off, every augmented square still sits in its box."""
    cfg = _spatial_only(0.5, 0.5, 0.5, (0.8, 1.25))
    box = [14, 20, 28, 30]
    for seed in range(40):
        out, b, _ = aug.augment(_bright_square(box), np.array([box], np.float32), cfg,
                                np.random.default_rng(seed))
        np.testing.assert_allclose(b[0], _bright_box(out), atol=1.0, err_msg=f"seed {seed}")


def test_coins_are_drawn_even_when_a_step_is_off() -> None:
    """A step with probability 0 still draws its coin, so the draws keep their order."""
    patch, boxes, _ = _inputs(3)
    mb = xyxy_to_monai(boxes, np.float32)
    rng, ref = np.random.default_rng(7), np.random.default_rng(7)
    p, b = aug.random_flip(patch, mb, rng, 0.0, 0)
    p, b = aug.random_rot90(p, b, rng, 0.0)
    p, b, keep = aug.random_zoom(p, b, rng, 0.0, (0.8, 1.2))
    p = aug.random_blur(p, rng, 0.0)
    ref.random(4)
    assert rng.random() == ref.random()
    assert p is patch and b is mb and keep.all()


def test_zoom_needs_a_square_patch() -> None:
    with pytest.raises(ValueError, match=r"square .* shape \(4, 6\)"):
        aug.zoom(np.zeros((4, 6), np.float32), np.zeros((0, 4), np.float32), 1.2)
