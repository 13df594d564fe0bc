"""Box orders and the box arithmetic that serving and training share: the one place that
converts between box orders.

Orders (every box is 4 numbers, in pixels, origin at the top-left corner of the top-left
pixel, max exclusive, so a box's extent along an axis is ``max - min``):

- **project** (``xyxy``): ``[x1, y1, x2, y2]`` with x = **column**, y = row. Every box that
  leaves the network (``dataset.json``, results, metrics) is in this order.
- **MONAI 2D** (MONAI's ``StandardMode``, ``CornerCornerModeTypeA``): ``[d0_min, d1_min,
  d0_max, d1_max]`` for a tensor ``(.., d0, d1)``, i.e. MONAI's "x" is our **row**. Anchors,
  the box coder, MONAI's box ops and the training loss use this order.
- **centre-size** (``cxcywh`` for project boxes): a ``(N, 2)`` centre and a ``(N, 2)`` size,
  per axis in the same axis order as the corners they come from.

- :func:`xyxy_to_monai`, :func:`monai_to_xyxy`: the row/column swap (its own inverse).
- :func:`corners_to_centre_size`, :func:`centre_size_to_corners`: corners <-> centre and size.
- :func:`box_centres`: ``(N, 2)`` centres of ``(N, 4)`` boxes.
- :func:`box_areas`, :func:`box_intersections`: areas ``(N,)`` and pairwise intersection areas
  ``(N, M)``, negative extents counted as 0.

Each function takes ``(N, 4)`` boxes of one order and keeps the input's floating dtype unless
told otherwise (serving decodes in float32, as MONAI does; metrics run in float64).
numpy only; never torch, monai, scipy or ``training``.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["box_areas", "box_centres", "box_intersections", "centre_size_to_corners",
           "corners_to_centre_size", "monai_to_xyxy", "xyxy_to_monai"]

Array: TypeAlias = npt.NDArray[Any]

#: Column order that swaps the two spatial axes of a corner box (an involution).
SWAP_AXES: Final = (1, 0, 3, 2)


def _as_boxes(boxes: npt.ArrayLike, dtype: npt.DTypeLike | None = None) -> Array:
    """``boxes`` as an ``(N, 4)`` array (``dtype`` when given, else the input's)."""
    return np.asarray(boxes, dtype=dtype).reshape(-1, 4)


# --------------------------------------------------------------------------------------------
# Axis order
# --------------------------------------------------------------------------------------------


def xyxy_to_monai(boxes: npt.ArrayLike, dtype: npt.DTypeLike | None = None) -> Array:
    """Project boxes ``[x1, y1, x2, y2]`` (x = column) -> MONAI 2D ``[r1, c1, r2, c2]``.

    Args:
        boxes: ``(N, 4)`` (anything that reshapes to it, e.g. ``[]`` for no box).
        dtype: the result's dtype; ``None`` keeps the input's.

    Returns:
        A new C-contiguous ``(N, 4)`` array.
    """
    return np.ascontiguousarray(_as_boxes(boxes, dtype)[:, SWAP_AXES])


def monai_to_xyxy(boxes: npt.ArrayLike, dtype: npt.DTypeLike | None = None) -> Array:
    """MONAI 2D boxes ``[d0_min, d1_min, d0_max, d1_max]`` (d0 = row axis) -> project boxes
    ``[x1, y1, x2, y2]`` (x = column).

    Args:
        boxes: ``(N, 4)``.
        dtype: the result's dtype; ``None`` keeps the input's.

    Returns:
        A new C-contiguous ``(N, 4)`` array.
    """
    return np.ascontiguousarray(_as_boxes(boxes, dtype)[:, SWAP_AXES])


# --------------------------------------------------------------------------------------------
# Centre and size
# --------------------------------------------------------------------------------------------


def corners_to_centre_size(boxes: npt.ArrayLike) -> tuple[Array, Array]:
    """Corner boxes ``(N, 4)`` ``[min0, min1, max0, max1]`` -> ``(centre, size)``, each
    ``(N, 2)`` in the boxes' axis order: ``centre = (min + max) / 2``, ``size = max - min``
    (not clipped: an inverted box has a negative size)."""
    b = _as_boxes(boxes)
    return (b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]


def centre_size_to_corners(centre: npt.ArrayLike, size: npt.ArrayLike) -> Array:
    """``centre`` and ``size`` (each ``(N, 2)``, one axis order) -> corner boxes ``(N, 4)``
    ``[min0, min1, max0, max1]``: ``centre -/+ size / 2``. The inverse of
    :func:`corners_to_centre_size`."""
    c = np.asarray(centre).reshape(-1, 2)
    half = np.asarray(size).reshape(-1, 2) / 2
    out: Array = np.concatenate([c - half, c + half], axis=1)
    return out


def box_centres(boxes: npt.ArrayLike) -> Array:
    """Centres ``(N, 2)`` of corner boxes ``(N, 4)``, in the boxes' axis order (``[cx, cy]``
    for project boxes): ``(min + max) / 2``."""
    return corners_to_centre_size(boxes)[0]


# --------------------------------------------------------------------------------------------
# Areas
# --------------------------------------------------------------------------------------------


def box_areas(boxes: npt.ArrayLike) -> Array:
    """Areas ``(N,)`` of corner boxes ``(N, 4)``: ``(max0 - min0) * (max1 - min1)`` with each
    extent clipped at 0 (a degenerate or inverted box has area 0). Either axis order."""
    b = _as_boxes(boxes)
    out: Array = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    return out


def box_intersections(a: npt.ArrayLike, b: npt.ArrayLike) -> Array:
    """Intersection area of every box of ``a`` ``(N, 4)`` with every box of ``b`` ``(M, 4)``:
    ``(N, M)``, 0 where they do not overlap. Both in the same axis order (either)."""
    p = _as_boxes(a)
    q = _as_boxes(b)
    w = np.minimum(p[:, None, 2], q[None, :, 2]) - np.maximum(p[:, None, 0], q[None, :, 0])
    h = np.minimum(p[:, None, 3], q[None, :, 3]) - np.maximum(p[:, None, 1], q[None, :, 1])
    out: Array = np.clip(w, 0, None) * np.clip(h, 0, None)
    return out
