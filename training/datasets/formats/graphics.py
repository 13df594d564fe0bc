"""Bounding boxes of DICOM 2D graphics (SR SCOORD and GSPS graphic objects).

Coordinates are (column, row) pairs in image pixels with ``0.0\\0.0`` at the top-left corner of
the top-left pixel (PS3.3 C.18.6.1.2 and C.10.5.1.2), the ``dataset.json`` box convention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from training.datasets.annotations import BoxXYXY


def _pairs(data: Sequence[float], graphic_type: str, count: int | None = None
           ) -> list[tuple[float, float]]:
    values = [float(v) for v in data]
    if len(values) % 2 or not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{graphic_type} has {len(values)} values; expected finite "
                         f"(column, row) pairs")
    pairs = list(zip(values[0::2], values[1::2], strict=True))
    if count is not None and len(pairs) != count:
        raise ValueError(f"{graphic_type} has {len(pairs)} points; expected {count}")
    return pairs


def graphic_box(graphic_type: str, data: Sequence[float]) -> BoxXYXY:
    """``(x1, y1, x2, y2)`` bounding a graphic.

    POLYLINE, POLYGON, MULTIPOINT and INTERPOLATED: the bounds of the points; CIRCLE (centre,
    then a point on the circle): centre +- radius; ELLIPSE (the major axis' two end points, then
    the minor axis'): the exact bounds of the possibly rotated ellipse.

    Raises:
        ValueError: a POINT (no extent), an unknown graphic type, malformed data, or a graphic
            of zero width or height.
    """
    kind = graphic_type.upper()
    if kind == "CIRCLE":
        (cx, cy), (px, py) = _pairs(data, kind, 2)
        r = math.hypot(px - cx, py - cy)
        box = (cx - r, cy - r, cx + r, cy + r)
    elif kind == "ELLIPSE":
        (ax1, ay1), (ax2, ay2), (bx1, by1), (bx2, by2) = _pairs(data, kind, 4)
        cx, cy = (ax1 + ax2) / 2, (ay1 + ay2) / 2
        a, b = ((ax2 - ax1) / 2, (ay2 - ay1) / 2), ((bx2 - bx1) / 2, (by2 - by1) / 2)
        hx, hy = math.hypot(a[0], b[0]), math.hypot(a[1], b[1])
        box = (cx - hx, cy - hy, cx + hx, cy + hy)
    elif kind in ("POLYLINE", "POLYGON", "MULTIPOINT", "INTERPOLATED"):
        pts = _pairs(data, kind)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        box = (min(xs), min(ys), max(xs), max(ys))
    elif kind == "POINT":
        raise ValueError("a POINT has no extent; expected a region (rectangle, polygon, "
                         "circle or ellipse)")
    else:
        raise ValueError(f"unknown graphic type {graphic_type!r}")
    if not (box[2] > box[0] and box[3] > box[1]):
        raise ValueError(f"{kind} bounds {list(box)} have no area")
    return box
