"""One finding in one view: distance from the nipple, depth third, and the half of the clock
face that this view can tell (CC: outer/inner; ML: upper/lower; MLO: upper/lower *flagged
oblique*); see :func:`locate_in_view` and :func:`describe_view`.

Boxes and points are in stored pixels and image mm (see
:mod:`serving.pipeline.locate.landmarks`); the up axis and its signs in the breast frame are
those of :mod:`serving.pipeline.locate.breast_frame`. Image distances are divided by the
compression spread to estimate distances in the uncompressed breast;
``image_distance_mm`` keeps the raw value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from serving.pipeline.dicom_in import Image
from serving.pipeline.locate.birads import (
    ORIENTATION_UNKNOWN,
    Depth,
    depth_third,
    distance_text,
    side_text,
    whole_cm,
)
from serving.pipeline.locate.breast_frame import (
    CC_VIEWS,
    COMPRESSION_SPREAD,
    LATERAL_VIEWS,
    OBLIQUE_VIEWS,
    oblique_angle,
    up_signs,
)
from serving.pipeline.locate.landmarks import Landmarks, Point

__all__ = ["Half", "ViewLocation", "describe_view", "locate_in_view"]

#: The half of the clock face one view tells: CC outer/inner, ML/MLO upper/lower.
Half: TypeAlias = Literal["outer", "inner", "upper", "lower"]


@dataclass(frozen=True)
class ViewLocation:
    """Where one finding lies in one view.

    Attributes:
        view: the image's view (``"CC"``, ``"ML"``, ``"MLO"``, ...; ``"?"`` when unknown).
        laterality: ``"L"``, ``"R"`` or ``"U"`` (unknown).
        box: the finding ``[x1, y1, x2, y2]``, stored px.
        center_xy: the box centre, stored px.
        score: the detector's score (1.0 for a given box).
        size_mm: the box's larger side, image mm.
        image_distance_mm: box centre to nipple, image mm (as measured on the image).
        distance_mm: ``image_distance_mm / spread``, the estimate in the uncompressed breast.
        distance_cm: ``distance_mm`` in whole cm (rounded half up).
        axial_mm: posterior distance of the centre behind the nipple along the nipple axis
            (perpendicular to the image's chest-wall edge), image mm; the same in both views
            up to the compression spread, so it is what :func:`match_views` compares.
        offset_mm: signed distance of the centre from the nipple axis along the image's up
            axis (decreasing rows), image mm; positive = above the nipple in the image.
        depth_fraction: projection of the centre on the PNL (nipple -> chest wall) divided by
            the PNL length (0 at the nipple, 1 at the chest wall / pectoral edge).
        depth: ``depth_fraction`` in thirds.
        up_superior: sign (-1, 0, +1) of the superior component of the image's up axis in the
            breast frame (0: none, e.g. CC).
        up_lateral: sign (-1, 0, +1) of its lateral component (0: none, e.g. ML, or unknown
            laterality).
        oblique: True for MLO-like views: up/down then mixes superior with lateral, so
            :attr:`half` is less reliable.
        half: the half of the clock face this view tells: CC ``"outer"``/``"inner"``, ML/MLO
            ``"upper"``/``"lower"``; ``None`` when the view cannot tell (unknown laterality
            in CC, unknown view).
        orientation_assumed: True when PatientOrientation did not say which way the rows run
            and the standard hanging was assumed.
        angle_deg: the C-arm angle of an oblique view from PositionerPrimaryAngle (its
            magnitude, degrees), or ``None`` when the view is not oblique or the attribute
            is absent or outside (0, 90): :func:`match_views` then assumes ``mlo_angle_deg``.
        coronal_mm: ``(u, l)``, the centre's superior and lateral position in the
            uncompressed breast frame (mm, origin at the nipple) when one view gives it on
            its own: a tomosynthesis view, whose plane height is the third dimension
            (:func:`serving.pipeline.tomo.locate_in_volume`); ``None`` for a 2D view or when
            the orientation was assumed. :func:`match_views` pairs two views that both have
            it only when their positions agree.
    """

    view: str
    laterality: str
    box: tuple[float, float, float, float]
    center_xy: Point
    score: float
    size_mm: float
    image_distance_mm: float
    distance_mm: float
    distance_cm: int
    axial_mm: float
    offset_mm: float
    depth_fraction: float
    depth: Depth
    up_superior: int
    up_lateral: int
    oblique: bool
    half: Half | None
    orientation_assumed: bool
    angle_deg: float | None = None
    coronal_mm: tuple[float, float] | None = None


def locate_in_view(
    box: Sequence[float],
    image: Image,
    landmarks: Landmarks,
    *,
    score: float = 1.0,
    spread: float = COMPRESSION_SPREAD,
) -> ViewLocation:
    """Locate one finding (a box in stored px) in one view.

    Args:
        box: ``[x1, y1, x2, y2]`` stored px (x2/y2 exclusive).
        image: the image the box was found on (for spacing, view, laterality, orientation).
        landmarks: :func:`find_landmarks` of ``image``.
        score: the detector's score, carried for :func:`match_views`.
        spread: compression spread assumed when converting image mm to breast mm (> 0).

    Raises:
        ValueError: ``box`` does not have 4 finite values, or ``spread <= 0``.
    """
    b = tuple(float(v) for v in box)
    if len(b) != 4 or not all(math.isfinite(v) for v in b):
        raise ValueError(f"box must be 4 finite numbers [x1, y1, x2, y2], got {list(box)!r}")
    if not spread > 0:
        raise ValueError(f"spread must be > 0, got {spread!r}")
    x1, y1, x2, y2 = b
    sy, sx = landmarks.spacing_mm
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    nx, ny = landmarks.nipple_xy
    dx_mm, dy_mm = (cx - nx) * sx, (cy - ny) * sy
    image_distance = math.hypot(dx_mm, dy_mm)
    posterior = 1.0 if landmarks.mirrored else -1.0  # stored x direction towards the chest wall
    axial = posterior * dx_mm
    offset = -dy_mm
    ux, uy = landmarks.pnl_direction
    along = dx_mm * ux + dy_mm * uy
    fraction = along / landmarks.pnl_length_mm if landmarks.pnl_length_mm > 0 else 0.0
    view = (image.view or "?").upper()
    up_sup, up_lat, assumed = up_signs(view, image.laterality, image.patient_orientation)
    distance = image_distance / spread
    return ViewLocation(
        view=view,
        laterality=image.laterality,
        box=(x1, y1, x2, y2),
        center_xy=(cx, cy),
        score=float(score),
        size_mm=max((x2 - x1) * sx, (y2 - y1) * sy),
        image_distance_mm=image_distance,
        distance_mm=distance,
        distance_cm=whole_cm(distance),
        axial_mm=axial,
        offset_mm=offset,
        depth_fraction=fraction,
        depth=depth_third(fraction),
        up_superior=up_sup,
        up_lateral=up_lat,
        oblique=view in OBLIQUE_VIEWS,
        half=_half(view, offset, up_sup, up_lat),
        orientation_assumed=assumed,
        angle_deg=oblique_angle(view, image.positioner_primary_angle),
    )


def _half(view: str, offset: float, up_sup: int, up_lat: int) -> Half | None:
    """The clock-face half a single view tells (see :attr:`ViewLocation.half`)."""
    if view in CC_VIEWS:
        if up_lat == 0:
            return None
        return "outer" if offset * up_lat > 0 else "inner"
    if view in LATERAL_VIEWS or view in OBLIQUE_VIEWS:
        if up_sup == 0:
            return None
        return "upper" if offset * up_sup > 0 else "lower"
    return None


def describe_view(loc: ViewLocation) -> str:
    """Phrase for a finding as one view locates it, e.g. ``"Left breast, outer half (from the
    CC view), middle depth, 3 cm from nipple"``; MLO halves say ``"(from the MLO view,
    oblique)"``. It names the view the location comes from, not that the finding is seen
    there only. When the orientation was assumed the half is not stated, and the phrase says
    why."""
    side = side_text(loc.laterality)
    source = f"from the {loc.view} view" if loc.view != "?" else "from a view of unknown type"
    if loc.half is not None and not loc.orientation_assumed:
        parts = [side, f"{loc.half} half ({source}{', oblique' if loc.oblique else ''})"]
    else:
        parts = [f"{side} ({source})"]
    parts += [f"{loc.depth} depth", distance_text(loc.distance_cm)]
    text = ", ".join(parts)
    if loc.orientation_assumed and loc.half is not None:
        text += f"; half not stated: {ORIENTATION_UNKNOWN}"
    return text
