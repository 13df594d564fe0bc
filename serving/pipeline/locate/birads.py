"""The BI-RADS location rules (ACR BI-RADS, DOMAIN.md): clock face, quadrant, depth third,
distance in whole cm, and the location phrase that states them.

Every function here works on the breast frame of :mod:`serving.pipeline.locate.breast_frame`
(mm, origin at the nipple; ``lateral`` points to the axilla of *this* breast) or on values
derived from it; none reads an image.

numpy only (here: ``math`` only); never torch, monai, scipy or ``training``.
"""

from __future__ import annotations

import math
from typing import Final, Literal, TypeAlias

__all__ = [
    "CENTRAL_MM",
    "CLOCKLESS_REGIONS",
    "ORIENTATION_UNKNOWN",
    "RETROAREOLAR_MM",
    "Depth",
    "Quadrant",
    "clock_hour",
    "depth_third",
    "distance_text",
    "location_phrase",
    "quadrant",
    "side_text",
    "stated_clock_hour",
    "whole_cm",
]

Depth: TypeAlias = Literal["anterior", "middle", "posterior"]
Quadrant: TypeAlias = Literal["UOQ", "UIQ", "LOQ", "LIQ", "retroareolar", "central"]

#: Retroareolar: within this distance behind the nipple (and within CENTRAL_MM of the axis), mm.
RETROAREOLAR_MM: Final = 20.0
#: Central: within this distance of the nipple axis, mm (no quadrant, clock face not stated).
CENTRAL_MM: Final = 10.0

#: Why a location part that rests on the image orientation is not stated.
ORIENTATION_UNKNOWN: Final = "PatientOrientation does not give the image orientation"


def clock_hour(superior_mm: float, lateral_mm: float, laterality: str) -> int:
    """Clock face hour (1-12) as if facing the patient: 12 superior; 3 o'clock is lateral on
    the LEFT breast and medial on the RIGHT breast.

    Args:
        superior_mm: offset from the nipple axis towards the head, mm.
        lateral_mm: offset towards the axilla of this breast, mm.
        laterality: ``"L"`` or ``"R"``.

    Raises:
        ValueError: laterality is neither ``"L"`` nor ``"R"``.
    """
    if laterality not in ("L", "R"):
        raise ValueError(f"clock face needs laterality L or R, got {laterality!r}")
    psi = math.degrees(math.atan2(lateral_mm, superior_mm)) % 360.0  # 0 superior, 90 lateral
    hour = math.floor(psi / 30.0 + 0.5) % 12  # the left breast's clock; halves round up
    if laterality == "R":
        hour = (12 - hour) % 12  # mirrored, so a right breast rounds exactly as its mirror
    return 12 if hour == 0 else hour


def quadrant(
    depth_mm: float,
    superior_mm: float,
    lateral_mm: float,
    *,
    retroareolar_mm: float = RETROAREOLAR_MM,
    central_mm: float = CENTRAL_MM,
) -> Quadrant:
    """BI-RADS region of a breast-frame point (mm, origin at the nipple): ``retroareolar``
    within ``retroareolar_mm`` behind the nipple and ``central_mm`` of the nipple axis,
    ``central`` within ``central_mm`` of the axis deeper, else upper/lower x outer/inner
    quadrant (``UOQ``, ``UIQ``, ``LOQ``, ``LIQ``; outer = lateral). Independent of laterality,
    since ``lateral_mm`` already points to this breast's axilla."""
    radial = math.hypot(superior_mm, lateral_mm)
    if radial <= central_mm:
        return "retroareolar" if depth_mm <= retroareolar_mm else "central"
    upper = superior_mm >= 0
    outer = lateral_mm >= 0
    if upper:
        return "UOQ" if outer else "UIQ"
    return "LOQ" if outer else "LIQ"


#: Regions BI-RADS names instead of a clock face.
CLOCKLESS_REGIONS: Final = ("retroareolar", "central")


def stated_clock_hour(clock: int | None, region: str | None) -> int | None:
    """The clock face a location states: none for a lesion BI-RADS places ``retroareolar``
    or ``central`` (within :data:`CENTRAL_MM` of the nipple axis, where the direction from
    the axis is a few millimetres of measurement and not a position; BI-RADS Atlas, 5th ed.,
    mammography, location of lesion), else ``clock``."""
    return None if region in CLOCKLESS_REGIONS else clock


def depth_third(fraction: float) -> Depth:
    """Anterior / middle / posterior third of the nipple-to-chest-wall depth (fraction of the
    posterior nipple line: < 1/3, < 2/3, else)."""
    if fraction < 1.0 / 3.0:
        return "anterior"
    return "middle" if fraction < 2.0 / 3.0 else "posterior"


def whole_cm(mm: float) -> int:
    """``mm`` in whole cm, rounded half up."""
    return math.floor(mm / 10.0 + 0.5)


_SIDE_NAMES: Final = {"L": "Left breast", "R": "Right breast"}


def side_text(laterality: str) -> str:
    """The breast a phrase names: ``"Left breast"``, ``"Right breast"``, or ``"Breast of
    unknown laterality"``."""
    return _SIDE_NAMES.get(laterality, "Breast of unknown laterality")


def distance_text(cm: int) -> str:
    """Distance from the nipple in whole cm, as the phrases state it."""
    return "less than 1 cm from nipple" if cm < 1 else f"{cm} cm from nipple"


def location_phrase(
    laterality: str, clock: int | None, region: Quadrant | None, depth: Depth, distance_cm: int
) -> str:
    """The BI-RADS location phrase: laterality, clock face (or ``retroareolar`` / ``central``,
    where BI-RADS states no clock face; or the quadrant when no clock face is known), depth,
    distance from the nipple in whole cm. E.g. ``"Right breast, 10 o'clock, middle depth,
    3 cm from nipple"``."""
    parts = [side_text(laterality)]
    if region in ("retroareolar", "central"):
        parts.append(region)
    elif clock is not None:
        parts.append(f"{clock} o'clock")
    elif region is not None:
        parts.append(region)
    parts.append(f"{depth} depth")
    parts.append(distance_text(distance_cm))
    return ", ".join(parts)
