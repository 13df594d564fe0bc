"""Two views of one breast (CC + ML/MLO): pair the findings across the views and state the clock
face, quadrant, depth and distance of each pair, e.g. ``"Right breast, 10 o'clock, middle
depth, 3 cm from nipple"``; see :func:`match_views` and :func:`pair_cost`.

Positions are in the breast frame of :mod:`serving.pipeline.locate.breast_frame` (mm, origin
at the nipple), image mm divided by the compression spread. The MLO C-arm angle is each
view's own (:attr:`ViewLocation.angle_deg`) when known, else ``mlo_angle_deg`` (default
:data:`~serving.pipeline.locate.breast_frame.DEFAULT_MLO_ANGLE_DEG`).

numpy only (here: ``math`` only); never torch, monai, scipy or ``training``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from serving.pipeline.locate.birads import (
    ORIENTATION_UNKNOWN,
    Depth,
    Quadrant,
    clock_hour,
    depth_third,
    location_phrase,
    quadrant,
    whole_cm,
)
from serving.pipeline.locate.breast_frame import (
    CC_VIEWS,
    COMPRESSION_SPREAD,
    DEFAULT_MLO_ANGLE_DEG,
    LATERAL_VIEWS,
    OBLIQUE_VIEWS,
)
from serving.pipeline.locate.view_location import ViewLocation

__all__ = ["CORONAL_TOLERANCE_FRACTION", "CORONAL_TOLERANCE_MM", "Match", "match_views",
           "pair_cost"]

#: Two views that each locate a finding in 3D on their own (tomosynthesis:
#: :attr:`ViewLocation.coronal_mm`) are paired only when those positions lie within
#: ``max(CORONAL_TOLERANCE_MM, CORONAL_TOLERANCE_FRACTION * mean distance from the nipple)``
#: of each other. Measured on the DBT validation set (``galacto synth --dbt --seed 2103``,
#: model 0.6.0): the two views of one lesion lay at most 19.9 mm (0.37 of its distance) apart,
#: a single view at most 10.8 mm from the truth; unrelated candidate pairs a median 56 mm.
CORONAL_TOLERANCE_MM: Final = 20.0
CORONAL_TOLERANCE_FRACTION: Final = 0.4


@dataclass(frozen=True)
class Match:
    """One finding seen in CC and in ML/MLO, located in the (uncompressed) breast.

    Attributes:
        cc_index: index into the CC findings given to :func:`match_views`.
        other_index: index into the ML/MLO findings.
        cc: the CC location.
        other: the ML/MLO location.
        laterality: ``"L"``, ``"R"`` or ``"U"``.
        position_mm: ``(d, u, l)`` estimated in the breast frame (mm, origin at the nipple,
            depth posterior, superior, lateral), image mm divided by the spread; ``u`` or ``l``
            is ``nan`` when the views cannot tell it.
        clock_hour: 1-12, or ``None`` (unknown laterality or direction).
        quadrant: BI-RADS region, or ``None`` when the direction is unknown.
        depth_fraction: mean of the two views' PNL fractions.
        depth: its third.
        distance_mm: ``|position_mm|``, mm (from the views' image distances when a
            direction is unknown).
        distance_cm: whole cm.
        oblique: True when the other view is oblique (the clock face then depends on the
            assumed C-arm angle).
        cost: the matching cost (lower is better, see :func:`match_views`).
        phrase: the BI-RADS location phrase (:func:`location_phrase`).
        orientation_assumed: either view's orientation was assumed: the clock face and the
            quadrant (which rest on it) are ``None`` and the phrase says why, unless the
            lesion is retroareolar or central.
    """

    cc_index: int
    other_index: int
    cc: ViewLocation
    other: ViewLocation
    laterality: str
    position_mm: tuple[float, float, float]
    clock_hour: int | None
    quadrant: Quadrant | None
    depth_fraction: float
    depth: Depth
    distance_mm: float
    distance_cm: int
    oblique: bool
    cost: float
    phrase: str
    orientation_assumed: bool = False


def match_views(
    cc_findings: Sequence[ViewLocation],
    other_findings: Sequence[ViewLocation],
    *,
    mlo_angle_deg: float = DEFAULT_MLO_ANGLE_DEG,
    spread: float = COMPRESSION_SPREAD,
    tolerance_mm: float = 10.0,
    tolerance_fraction: float = 0.2,
    max_size_ratio: float = 3.0,
) -> list[Match]:
    """Pair CC findings with ML/MLO findings of the same breast and locate each pair.

    Matching (greedy, documented choice): a pair is admissible when the findings' depths
    behind the nipple along the nipple axis (:attr:`ViewLocation.axial_mm`, which unlike
    the in-plane distance does not depend on the out-of-plane offset that each view loses)
    agree within ``max(tolerance_mm, tolerance_fraction * mean depth)`` and their sizes within
    a ratio of ``max_size_ratio`` (sizes + 1 mm, so tiny boxes stay comparable). Its cost is
    ``depth difference / tolerance + 0.5 * log(size ratio) / log(max_size_ratio) +
    (1 - sqrt(score_cc * score_other))``; admissible pairs are taken in increasing cost, each
    finding at most once. Findings left over stay per-view (see :func:`describe_view`).
    When both findings carry a single-view 3D position (:attr:`ViewLocation.coronal_mm`,
    tomosynthesis), the pair is admissible only when those agree within
    ``max(CORONAL_TOLERANCE_MM, CORONAL_TOLERANCE_FRACTION * mean distance)``, and the cost
    adds ``gap / that tolerance``.

    Location of a pair: the offsets from the nipple axis in the two views are
    ``offset_cc = up_cc . (u, l)`` and ``offset_other = up_other . (u, l)`` (times the
    spread), with ``up`` the image's up axis in the breast frame: CC ``(0, +-1)``, ML
    ``(+-1, 0)``, MLO ``(+-sin a, +-cos a)`` with ``a`` the view's own C-arm angle
    (:attr:`ViewLocation.angle_deg`, else ``mlo_angle_deg``); solving the 2x2
    system gives ``(u, l)``, e.g. for a standard MLO ``u = (v_mlo - cos(a) * l_cc) / sin(a)``.
    So a medial lesion projects lower on MLO than on ML. Depth ``d`` is the mean of the two
    axial depths; depth third from the mean PNL fraction.

    Args:
        cc_findings: CC-view locations (:func:`locate_in_view`) of one breast.
        other_findings: ML/LM or MLO-like locations of the same breast.
        mlo_angle_deg: C-arm angle assumed for oblique views without a usable
            PositionerPrimaryAngle, degrees in (0, 90).
        spread: compression spread (image mm per breast mm), > 0.
        tolerance_mm, tolerance_fraction: depth agreement (see above).
        max_size_ratio: largest accepted size ratio, > 1.

    Raises:
        ValueError: a finding of the wrong view, mixed lateralities, or a bad parameter.
    """
    if not 0.0 < mlo_angle_deg < 90.0:
        raise ValueError(f"mlo_angle_deg must be in (0, 90), got {mlo_angle_deg!r}")
    if not spread > 0 or not tolerance_mm >= 0 or not tolerance_fraction >= 0:
        raise ValueError(f"spread must be > 0 and tolerances >= 0, got spread={spread!r}, "
                         f"tolerance_mm={tolerance_mm!r}, tolerance_fraction="
                         f"{tolerance_fraction!r}")
    if not max_size_ratio > 1:
        raise ValueError(f"max_size_ratio must be > 1, got {max_size_ratio!r}")
    for i, f in enumerate(cc_findings):
        if f.view not in CC_VIEWS:
            raise ValueError(f"cc_findings[{i}] is a {f.view!r} view, expected CC")
    for i, f in enumerate(other_findings):
        if f.view not in LATERAL_VIEWS and f.view not in OBLIQUE_VIEWS:
            raise ValueError(f"other_findings[{i}] is a {f.view!r} view, expected ML or MLO")
    sides = {f.laterality for f in (*cc_findings, *other_findings)}
    if len(sides) > 1:
        raise ValueError(f"findings of one breast expected, got lateralities {sorted(sides)}")
    pairs: list[tuple[float, int, int]] = []
    for i, a in enumerate(cc_findings):
        for j, b in enumerate(other_findings):
            cost = _pair_cost(a, b, tolerance_mm, tolerance_fraction, max_size_ratio)
            if cost is not None:
                pairs.append((cost, i, j))
    pairs.sort()
    used_cc: set[int] = set()
    used_other: set[int] = set()
    out: list[Match] = []
    for cost, i, j in pairs:
        if i in used_cc or j in used_other:
            continue
        used_cc.add(i)
        used_other.add(j)
        out.append(_fuse(i, j, cc_findings[i], other_findings[j], cost, mlo_angle_deg, spread))
    out.sort(key=lambda m: m.cc_index)
    return out


def pair_cost(
    a: ViewLocation,
    b: ViewLocation,
    *,
    tolerance_mm: float = 10.0,
    tolerance_fraction: float = 0.2,
    max_size_ratio: float = 3.0,
) -> float | None:
    """:func:`match_views`'s cost of pairing ``a`` (one view) with ``b`` (the complementary
    view of the same breast), with its defaults, or ``None`` when the pair is not admissible
    (depth behind the nipple along the nipple axis not within ``max(tolerance_mm,
    tolerance_fraction * mean depth)``, sizes not within ``max_size_ratio``, or single-view
    3D positions that disagree)."""
    return _pair_cost(a, b, tolerance_mm, tolerance_fraction, max_size_ratio)


def _pair_cost(
    a: ViewLocation, b: ViewLocation, tol_mm: float, tol_frac: float, max_ratio: float
) -> float | None:
    """Matching cost of a CC/other pair, or ``None`` when not admissible (see
    :func:`match_views`)."""
    tol = max(tol_mm, tol_frac * (abs(a.axial_mm) + abs(b.axial_mm)) / 2)
    diff = abs(a.axial_mm - b.axial_mm)
    if diff > tol:
        return None
    ratio = (max(a.size_mm, b.size_mm) + 1.0) / (min(a.size_mm, b.size_mm) + 1.0)
    if ratio > max_ratio:
        return None
    agreement = math.sqrt(max(a.score, 0.0) * max(b.score, 0.0))
    cost = diff / max(tol, 1e-9) + 0.5 * math.log(ratio) / math.log(max_ratio) + (1 - agreement)
    if a.coronal_mm is None or b.coronal_mm is None:
        return cost
    gap = math.dist(a.coronal_mm, b.coronal_mm)
    coronal_tol = max(CORONAL_TOLERANCE_MM,
                      CORONAL_TOLERANCE_FRACTION * (a.distance_mm + b.distance_mm) / 2)
    return None if gap > coronal_tol else cost + gap / coronal_tol


def _up_vector(loc: ViewLocation, mlo_angle_deg: float) -> tuple[float, float]:
    """The image's up axis ``(superior, lateral)`` in the breast frame (an oblique view at its
    own C-arm angle, else at ``mlo_angle_deg``)."""
    if loc.oblique:
        a = math.radians(loc.angle_deg if loc.angle_deg is not None else mlo_angle_deg)
        return (loc.up_superior * math.sin(a), loc.up_lateral * math.cos(a))
    return (float(loc.up_superior), float(loc.up_lateral))


def _fuse(
    i: int, j: int, cc: ViewLocation, other: ViewLocation, cost: float, mlo_angle_deg: float,
    spread: float,
) -> Match:
    """Locate a matched pair in the breast frame (see :func:`match_views`)."""
    c = _up_vector(cc, mlo_angle_deg)
    o = _up_vector(other, mlo_angle_deg)
    p, q = cc.offset_mm / spread, other.offset_mm / spread
    d = (cc.axial_mm + other.axial_mm) / 2 / spread
    det = c[0] * o[1] - c[1] * o[0]
    laterality = cc.laterality
    if abs(det) > 0.2:
        u = (p * o[1] - q * c[1]) / det
        lat = (c[0] * q - o[0] * p) / det
        distance = math.sqrt(d * d + u * u + lat * lat)
        region: Quadrant | None = quadrant(d, u, lat)
        clock = clock_hour(u, lat, laterality) if laterality in ("L", "R") else None
    else:
        u = lat = math.nan
        distance = (cc.distance_mm + other.distance_mm) / 2
        region, clock = None, None
    fraction = (cc.depth_fraction + other.depth_fraction) / 2
    depth = depth_third(fraction)
    cm = whole_cm(distance)
    assumed = cc.orientation_assumed or other.orientation_assumed
    phrase = location_phrase(laterality, clock, region, depth, cm)
    if assumed and region not in ("retroareolar", "central"):
        left_out = clock is not None or region is not None
        clock, region = None, None
        phrase = location_phrase(laterality, None, None, depth, cm) + (
            f"; clock face and quadrant not stated: {ORIENTATION_UNKNOWN}" if left_out else "")
    return Match(cc_index=i, other_index=j, cc=cc, other=other, laterality=laterality,
                 position_mm=(d, u, lat), clock_hour=clock, quadrant=region,
                 depth_fraction=fraction, depth=depth, distance_mm=distance, distance_cm=cm,
                 oblique=other.oblique, cost=cost, phrase=phrase, orientation_assumed=assumed)
