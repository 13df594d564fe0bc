"""Binary morphology and block reduction of 2D arrays: the helpers that the breast segmentation
(:func:`serving.pipeline.breast_mask.segment_breast`) and the landmark search
(:mod:`serving.pipeline.locate.landmarks`) share, so that the breast mask found by the landmark
search is the one the network input was cropped to.

- :func:`block_mean`: reduce an image by whole blocks (mean), with a shorter last block.
- :func:`erode`, :func:`dilate`: binary erosion and dilation by a square of side
  ``2 * radius + 1`` (separable running sums, O(pixels) whatever the radius).
- :func:`largest_component`: the largest 4-connected component of a mask.

Arrays are ``(rows, cols)``. numpy only; never torch, monai, scipy or ``training``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from serving.pipeline.arrays import BoolArray

__all__ = ["block_mean", "dilate", "erode", "largest_component"]


# --------------------------------------------------------------------------------------------
# Binary morphology
# --------------------------------------------------------------------------------------------


def _window_all(mask: BoolArray, radius: int, axis: int, pad_value: bool) -> BoolArray:
    """True where all ``2 * radius + 1`` pixels along ``axis`` are True (outside = pad_value)."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius, radius)
    padded = np.pad(mask, pad, constant_values=pad_value).astype(np.int32)
    csum = np.cumsum(padded, axis=axis)
    zero = np.zeros_like(np.take(csum, [0], axis=axis))
    csum = np.concatenate([zero, csum], axis=axis)
    n = mask.shape[axis]
    width = 2 * radius + 1
    sums = np.take(csum, np.arange(width, n + width), axis=axis) - np.take(
        csum, np.arange(n), axis=axis
    )
    return np.asarray(sums == width)


def erode(mask: BoolArray, radius: int) -> BoolArray:
    """Binary erosion by a square of side ``2 * radius + 1``; outside the image counts as True
    (a breast touching the edge is not eaten from the edge)."""
    return _window_all(_window_all(mask, radius, 0, True), radius, 1, True)


def dilate(mask: BoolArray, radius: int) -> BoolArray:
    """Binary dilation by a square of side ``2 * radius + 1``."""
    return ~_window_all(_window_all(~mask, radius, 0, True), radius, 1, True)


def largest_component(mask: BoolArray) -> BoolArray:
    """The largest 4-connected component of ``mask`` (empty mask in, empty mask out).

    Vectorized union-find: hook the larger root of every edge onto the smaller one, compress
    paths by pointer jumping, repeat until no edge joins two roots.
    """
    if not mask.any():
        return mask.copy()
    h, w = mask.shape
    index = np.arange(h * w).reshape(h, w)
    right = mask[:, :-1] & mask[:, 1:]
    down = mask[:-1, :] & mask[1:, :]
    src = np.concatenate([index[:, :-1][right], index[:-1, :][down]])
    dst = np.concatenate([index[:, 1:][right], index[1:, :][down]])
    parent = np.arange(h * w)
    while True:
        a, b = parent[src], parent[dst]
        joined = a != b
        if not joined.any():
            break
        lo, hi = np.minimum(a[joined], b[joined]), np.maximum(a[joined], b[joined])
        np.minimum.at(parent, hi, lo)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    labels = parent.reshape(h, w)
    counts = np.bincount(labels[mask], minlength=h * w)
    return np.asarray(mask & (labels == int(np.argmax(counts))))



# --------------------------------------------------------------------------------------------
# Block reduction
# --------------------------------------------------------------------------------------------


def block_mean(
    pixels: npt.NDArray[np.floating[Any]], factor: tuple[int, int]
) -> npt.NDArray[np.float32]:
    """Mean over ``factor = (fy, fx)`` blocks, shape ``(ceil(rows / fy), ceil(cols / fx))``; the
    last row/column of blocks averages what is left. Sums run in array order, so an image and
    its mirrored view give bit-identical results once mirrored back."""
    fy, fx = factor
    rows = _block_sum(np.asarray(pixels, dtype=np.float32), fy, axis=0)
    both = _block_sum(rows, fx, axis=1)
    count_r = np.minimum(fy, pixels.shape[0] - np.arange(0, pixels.shape[0], fy))
    count_c = np.minimum(fx, pixels.shape[1] - np.arange(0, pixels.shape[1], fx))
    return (both / np.outer(count_r, count_c).astype(np.float32)).astype(np.float32)


def _block_sum(x: npt.NDArray[np.float32], f: int, axis: int) -> npt.NDArray[np.float32]:
    """Sums of ``f`` consecutive entries along ``axis`` (0 or 1) of a 2D array; a shorter last
    block when ``f`` does not divide the length."""
    n = x.shape[axis]
    q, r = divmod(n, f)
    if axis == 0:
        main = x[: q * f].reshape(q, f, x.shape[1]).sum(axis=1)
        tail = x[q * f :].sum(axis=0, keepdims=True)
    else:
        main = x[:, : q * f].reshape(x.shape[0], q, f).sum(axis=2)
        tail = x[:, q * f :].sum(axis=1, keepdims=True)
    return np.concatenate([main, tail], axis=axis) if r else main
