"""The breast mask of an image on a reduced (about 1 mm) copy: the one segmentation that both
preprocessing (:func:`serving.pipeline.preprocess.prepare`, which crops the network input to
it) and the landmark search (:func:`serving.pipeline.locate.landmarks.find_landmarks`) use,
so that the landmarks are found on the breast the network input was cropped to.

- :func:`reduce_factor`: the integer block size that brings a pixel spacing to about
  :data:`SEGMENTATION_SPACING_MM`.
- :func:`segment_breast`: the breast mask of an already reduced image.
- :func:`reduced_breast_mask`: both steps on a full-resolution image (:class:`ReducedMask`).

Arrays are ``(rows, cols)``; the image must already be in canonical orientation when the
caller needs the mask in it (nothing here mirrors). numpy only; never torch, monai, scipy or
``training``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from serving.pipeline.arrays import BoolArray
from serving.pipeline.morphology import block_mean, dilate, erode, largest_component

__all__ = [
    "BREAST_LEVEL",
    "MIN_BREAST_FRACTION",
    "OPENING_RADIUS_MM",
    "SEGMENTATION_SPACING_MM",
    "ReducedMask",
    "reduce_factor",
    "reduced_breast_mask",
    "segment_breast",
]

#: Pixel size of the reduced copy used for segmentation, mm (approximate).
SEGMENTATION_SPACING_MM: Final = 1.0
#: Radius of the opening that removes thin structures attached to the breast (cannula, tubing).
OPENING_RADIUS_MM: Final = 2.0
#: Air/breast threshold, as a fraction of the way from the air level to the tissue level.
BREAST_LEVEL: Final = 0.15
#: Components smaller than this share of the reduced image are not taken as a breast.
MIN_BREAST_FRACTION: Final = 0.01


@dataclass(frozen=True, eq=False)
class ReducedMask:
    """An image reduced by whole blocks to about 1 mm, and its breast mask.

    Attributes:
        small: float32 ``(h, w)``, the block means (:func:`~serving.pipeline.morphology.block_mean`;
            the last block along an axis may be shorter).
        mask: bool ``(h, w)`` from :func:`segment_breast` (all True when no breast is found).
        factor: ``(fy, fx)``, full-resolution pixels per reduced pixel along rows and columns.
        spacing_mm: the reduced pixel size, mm: the mean of ``fy * row spacing`` and
            ``fx * column spacing``.
    """

    small: npt.NDArray[np.float32]
    mask: BoolArray
    factor: tuple[int, int]
    spacing_mm: float


def reduce_factor(spacing_mm: float) -> int:
    """The integer reduction (>= 1) that brings ``spacing_mm`` (mm per pixel, > 0) closest to
    :data:`SEGMENTATION_SPACING_MM`."""
    return max(1, round(SEGMENTATION_SPACING_MM / spacing_mm))


def reduced_breast_mask(
    pixels: npt.NDArray[np.floating[Any]], spacing_mm: tuple[float, float]
) -> ReducedMask:
    """Reduce ``pixels`` to about 1 mm (block mean) and segment the breast on the result.

    Args:
        pixels: ``(rows, cols)`` intake pixels (larger = more attenuation), in the orientation
            the mask is wanted in.
        spacing_mm: ``(row spacing, column spacing)``, mm per pixel, both > 0.
    """
    row_mm, col_mm = spacing_mm
    factor = (reduce_factor(row_mm), reduce_factor(col_mm))
    small = block_mean(pixels, factor)
    small_spacing = (factor[0] * row_mm + factor[1] * col_mm) / 2
    return ReducedMask(small=small, mask=segment_breast(small, small_spacing), factor=factor,
                       spacing_mm=small_spacing)


def segment_breast(small: npt.NDArray[np.float32], spacing_mm: float) -> BoolArray:
    """Breast mask of a reduced image (about 1 mm pixels).

    A threshold low between air and tissue (:func:`_breast_threshold`: Otsu's classes on a
    histogram between the 0.5th and 99.5th percentiles, so that a few very bright
    contrast-filled ducts or markers cannot pull it), an opening of radius
    :data:`OPENING_RADIUS_MM` to cut thin attachments (cannula, tubing, wires), the largest
    4-connected component of what survives, then grown back inside the thresholded mask by the
    same radius. Intensity scale and offset do not matter (12/14/16 bits, MONOCHROME1 or 2 after
    the intake), only that the breast is brighter than the air around it.

    Args:
        small: ``(h, w)`` reduced image.
        spacing_mm: its pixel size, mm.

    Returns:
        bool ``(h, w)``; all True when no breast-like component is found (flat image, or a
        component under :data:`MIN_BREAST_FRACTION` of the image).
    """
    everything = np.ones(small.shape, dtype=bool)
    threshold = _breast_threshold(small)
    if threshold is None:
        return everything
    mask = small > threshold
    radius = max(1, round(OPENING_RADIUS_MM / spacing_mm))
    core = erode(mask, radius)
    if not core.any():
        core = mask
    component = largest_component(core)
    if component.sum() < MIN_BREAST_FRACTION * small.size:
        return everything
    return dilate(component, radius) & mask


def _breast_threshold(small: npt.NDArray[np.float32]) -> float | None:
    """Threshold between air and breast: :data:`BREAST_LEVEL` of the way from the air level
    (median of Otsu's dark class) to the tissue level (median of its bright class).

    Otsu alone lands inside the breast's thickness fall-off when bright structures (pectoral
    muscle, dense tissue) widen the bright class; the low fraction keeps the periphery and the
    nipple while staying well clear of the flat air background. ``None`` when flat.
    """
    otsu = _otsu_threshold(small)
    if otsu is None:
        return None
    dark = small[small <= otsu]
    bright = small[small > otsu]
    if dark.size == 0 or bright.size == 0:
        return otsu
    air = float(np.median(dark))
    tissue = float(np.median(bright))
    return air + BREAST_LEVEL * (tissue - air)


def _otsu_threshold(values: npt.NDArray[np.float32], bins: int = 256) -> float | None:
    """Otsu's threshold of ``values`` clipped to their 0.5-99.5th percentiles; None when flat."""
    lo, hi = np.percentile(values, [0.5, 99.5])
    if not hi > lo:
        return None
    hist, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist, dtype=np.float64)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(hist * centers)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])
