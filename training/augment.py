"""Box-aware augmentation of one training patch: small functions composed by :func:`augment`.

Spatial steps (:func:`flip`, :func:`rot90`, :func:`zoom`) move the boxes with the pixels
through MONAI's box ops (``monai.apps.detection.transforms.box_ops``). They take and return
a square patch ``(P, P)`` and boxes ``(M, 4)`` in **MONAI 2D order** ``[r1, c1, r2, c2]``
(row first, the array's axis order; see :mod:`serving.pipeline.boxes`), in patch pixels,
max exclusive. Intensity steps (:func:`gamma`, :func:`contrast`, :func:`shift`, :func:`blur`,
:func:`noise`) change pixel values only, so boxes do not pass through them. Patch values are
the network's normalised intensities (about 0..1, dimensionless).

Each ``random_*`` function draws its parameters from the given ``numpy.random.Generator`` (the
coin first, then the parameter, and the coin is drawn even when its probability is 0) and
applies the matching deterministic step. :func:`augment` draws in a fixed order, so a seeded
generator gives the same patch every time.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import torch
from monai.apps.detection.transforms.box_ops import flip_boxes, rot90_boxes, zoom_boxes
from scipy import ndimage

from serving.pipeline.boxes import monai_to_xyxy, xyxy_to_monai
from training.config import AugmentConfig

__all__ = ["MIN_BOX_SIZE", "augment", "blur", "contrast", "flip", "gamma", "noise",
           "random_blur", "random_contrast", "random_flip", "random_gamma", "random_noise",
           "random_rot90", "random_shift", "random_zoom", "rot90", "shift", "zoom"]

Array: TypeAlias = npt.NDArray[Any]

#: After a zoom, boxes whose height or width (pixels) is not above this are dropped.
MIN_BOX_SIZE = 2


def _square(patch: Array) -> int:
    """Side ``P`` of a square ``(P, P)`` patch; ``ValueError`` naming the shape otherwise."""
    if patch.ndim != 2 or patch.shape[0] != patch.shape[1]:
        raise ValueError(f"expected a square (P, P) patch, got shape {patch.shape}")
    return int(patch.shape[0])


# --------------------------------------------------------------------------------------------
# Spatial steps (boxes follow the pixels)
# --------------------------------------------------------------------------------------------


def flip(patch: Array, boxes: Array, axis: int) -> tuple[Array, Array]:
    """Mirror the patch along ``axis`` (0: rows, upside down; 1: columns, left-right).

    Args:
        patch: ``(H, W)`` image.
        boxes: ``(M, 4)`` float MONAI 2D boxes ``[r1, c1, r2, c2]``, patch pixels.
        axis: 0 or 1.

    Returns:
        The flipped patch (a view of ``patch``) and new ``(M, 4)`` boxes, same order and dtype.
        Flipping twice along one axis gives back the input.
    """
    out = flip_boxes(torch.as_tensor(boxes), spatial_size=patch.shape, flip_axes=axis)
    return np.flip(patch, axis=axis), out.numpy()


def rot90(patch: Array, boxes: Array, k: int) -> tuple[Array, Array]:
    """Rotate the patch by ``k`` quarter turns in the (row, column) plane, as
    ``np.rot90(patch, k, axes=(0, 1))`` (positive ``k``: counter-clockwise on screen).

    Args:
        patch: ``(H, W)`` image.
        boxes: ``(M, 4)`` float MONAI 2D boxes ``[r1, c1, r2, c2]``, patch pixels.
        k: number of quarter turns.

    Returns:
        The rotated patch ``(H, W)`` or ``(W, H)`` (a view of ``patch``) and new ``(M, 4)``
        boxes, same order and dtype.
    """
    out = rot90_boxes(torch.as_tensor(boxes), spatial_size=patch.shape, k=k, axes=(0, 1))
    return np.rot90(patch, k=k, axes=(0, 1)), out.numpy()


def zoom(patch: Array, boxes: Array, factor: float) -> tuple[Array, Array, Array]:
    """Scale the patch by ``factor`` (bilinear) and keep its size ``(P, P)``.

    A zoom-in (``factor > 1``) keeps the centre ``P x P`` of the enlarged image; a zoom-out
    puts the reduced image in the top-left corner and pads with 0. Boxes are scaled, shifted
    with the crop, clipped to ``[0, P]`` and dropped when their height or width is not above
    :data:`MIN_BOX_SIZE` pixels.

    Args:
        patch: ``(P, P)`` image.
        boxes: ``(M, 4)`` float MONAI 2D boxes ``[r1, c1, r2, c2]``, patch pixels.
        factor: scale factor (dimensionless, > 0).

    Returns:
        The ``(P, P)`` patch (same dtype), the kept boxes ``(M', 4)`` (same order and dtype)
        and ``keep``, an ``(M,)`` bool mask of the input boxes that were kept (for their
        labels).
    """
    n = _square(patch)
    zoomed = ndimage.zoom(np.ascontiguousarray(patch), factor, order=1)
    mb = zoom_boxes(torch.as_tensor(boxes), zoom=(factor, factor))
    out = np.zeros_like(patch)
    m = min(n, zoomed.shape[0])
    off = (zoomed.shape[0] - n) // 2 if factor > 1 else 0
    if factor > 1:
        out[:] = zoomed[off: off + n, off: off + n]
        mb = mb - off
    else:
        out[:m, :m] = zoomed[:m, :m]
    mb = mb.clamp(0, n)
    keep = ((mb[:, 2] - mb[:, 0]) > MIN_BOX_SIZE) & ((mb[:, 3] - mb[:, 1]) > MIN_BOX_SIZE)
    return out, mb[keep].numpy(), keep.numpy()


def random_flip(patch: Array, boxes: Array, rng: np.random.Generator, p: float, axis: int
                ) -> tuple[Array, Array]:
    """:func:`flip` along ``axis`` with probability ``p`` (one draw: the coin).

    Shapes and box order as :func:`flip`; unchanged inputs are returned as they are."""
    if rng.random() < p:
        return flip(patch, boxes, axis)
    return patch, boxes


def random_rot90(patch: Array, boxes: Array, rng: np.random.Generator, p: float
                 ) -> tuple[Array, Array]:
    """:func:`rot90` by 1, 2 or 3 quarter turns (uniform) with probability ``p``.

    Draws the coin, then ``k`` when the coin says rotate. Shapes and box order as
    :func:`rot90`."""
    if rng.random() < p:
        return rot90(patch, boxes, int(rng.integers(1, 4)))
    return patch, boxes


def random_zoom(patch: Array, boxes: Array, rng: np.random.Generator, p: float,
                zoom_range: tuple[float, float]) -> tuple[Array, Array, Array]:
    """:func:`zoom` by a factor uniform in ``zoom_range`` with probability ``p``.

    Draws the coin, then the factor when the coin says zoom. Shapes and box order as
    :func:`zoom`; without a zoom, the inputs come back with an all-true ``keep``."""
    if rng.random() < p:
        return zoom(patch, boxes, float(rng.uniform(*zoom_range)))
    return patch, boxes, np.ones(len(boxes), bool)


# --------------------------------------------------------------------------------------------
# Intensity steps (boxes unchanged)
# --------------------------------------------------------------------------------------------


def gamma(patch: Array, exponent: float) -> Array:
    """Gamma on magnitudes, sign kept: ``sign(x) * |x| ** exponent``. ``(H, W)`` -> ``(H, W)``."""
    out: Array = np.sign(patch) * np.abs(patch) ** exponent
    return out


def contrast(patch: Array, factor: float) -> Array:
    """Multiply every pixel by ``factor``. ``(H, W)`` -> ``(H, W)``."""
    out: Array = patch * factor
    return out


def shift(patch: Array, offset: float) -> Array:
    """Add ``offset`` (normalised intensity units) to every pixel. ``(H, W)`` -> ``(H, W)``."""
    out: Array = patch + offset
    return out


def blur(patch: Array, sigma: float) -> Array:
    """Gaussian blur with standard deviation ``sigma`` pixels. ``(H, W)`` -> ``(H, W)``."""
    out: Array = ndimage.gaussian_filter(patch, sigma)
    return out


def noise(patch: Array, std: float, rng: np.random.Generator) -> Array:
    """Add Gaussian noise of standard deviation ``std`` (intensity units), drawn from ``rng``
    (one normal value per pixel). ``(H, W)`` -> ``(H, W)`` float32."""
    return (patch + rng.normal(0.0, std, patch.shape)).astype(np.float32)


def random_gamma(patch: Array, rng: np.random.Generator, gamma_range: tuple[float, float]
                 ) -> Array:
    """:func:`gamma` with an exponent uniform in ``gamma_range`` (one draw)."""
    return gamma(patch, float(rng.uniform(*gamma_range)))


def random_contrast(patch: Array, rng: np.random.Generator,
                    contrast_range: tuple[float, float]) -> Array:
    """:func:`contrast` with a factor uniform in ``contrast_range`` (one draw)."""
    return contrast(patch, float(rng.uniform(*contrast_range)))


def random_shift(patch: Array, rng: np.random.Generator, shift_range: float) -> Array:
    """:func:`shift` by an offset uniform in ``[-shift_range, shift_range]`` (one draw)."""
    return shift(patch, float(rng.uniform(-shift_range, shift_range)))


def random_blur(patch: Array, rng: np.random.Generator, p: float) -> Array:
    """:func:`blur` with probability ``p``, sigma uniform in ``[0.4, 1.2]`` pixels.

    Draws the coin, then sigma when the coin says blur."""
    if rng.random() < p:
        return blur(patch, float(rng.uniform(0.4, 1.2)))
    return patch


def random_noise(patch: Array, rng: np.random.Generator, max_std: float) -> Array:
    """:func:`noise` with a standard deviation uniform in ``[0, max_std)`` (one draw for the
    level, then the per-pixel noise). Returns float32."""
    return noise(patch, max_std * rng.random(), rng)


# --------------------------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------------------------


def augment(patch: Array, boxes: Array, cfg: AugmentConfig, rng: np.random.Generator,
            labels: Array | None = None) -> tuple[Array, Array, Array]:
    """Spatial then intensity augmentation of one training patch.

    Order (and order of the random draws): flip rows, flip columns, rot90, zoom, gamma,
    contrast, shift, blur, noise.

    Args:
        patch: ``(P, P)`` float image (normalised intensities).
        boxes: ``(M, 4)`` project boxes ``[x1, y1, x2, y2]`` (x = column), patch pixels.
        cfg: probabilities and ranges of the steps.
        rng: the generator every draw comes from.
        labels: ``(M,)`` class indices following their boxes (default: all 0).

    Returns:
        The ``(P, P)`` float32 patch, its ``(M', 4)`` float32 ``[x1, y1, x2, y2]`` boxes
        (patch pixels) and their ``(M',)`` labels (``M' < M`` when a zoom pushed boxes out).
    """
    labels = np.zeros(len(boxes), np.int64) if labels is None else np.asarray(labels)
    mb = xyxy_to_monai(boxes, np.float32)
    for axis in (0, 1):
        patch, mb = random_flip(patch, mb, rng, cfg.flip_p, axis)
    patch, mb = random_rot90(patch, mb, rng, cfg.rot90_p)
    patch, mb, keep = random_zoom(patch, mb, rng, cfg.zoom_p, cfg.zoom_range)
    labels = labels[keep]
    out_boxes = monai_to_xyxy(mb, np.float32)
    patch = np.ascontiguousarray(patch, dtype=np.float32)
    patch = random_gamma(patch, rng, cfg.gamma_range)
    patch = random_contrast(patch, rng, cfg.contrast_range)
    patch = random_shift(patch, rng, cfg.shift_range)
    patch = random_blur(patch, rng, cfg.blur_p)
    patch = random_noise(patch, rng, cfg.noise_std)
    return patch, out_boxes, labels
