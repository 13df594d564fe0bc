"""Where a finding is, stated as a radiologist would (ACR BI-RADS, DOMAIN.md).

Three steps:

1. :func:`find_landmarks` (one image): the nipple, the chest-wall edge, the pectoral edge
   (ML/MLO) and the posterior nipple line (PNL).
2. :func:`locate_in_view` (one finding, one image): distance from the nipple, depth third, and
   the half of the clock face this view can tell (CC: outer/inner; ML: upper/lower; MLO:
   upper/lower *flagged oblique*).
3. :func:`match_views` (one breast, CC + ML/MLO): pairs findings across the two views and
   states the clock face, quadrant, depth and distance, e.g. ``"Right breast, 10 o'clock,
   middle depth, 3 cm from nipple"``.

Coordinate conventions
----------------------
- **Stored pixels**: the DICOM image as stored (``Image.pixels``), points ``(x, y)``, x =
  column, y = row, origin at the top-left corner of the top-left pixel (pixel ``(r, c)``
  covers ``[c, c + 1) x [r, r + 1)``); boxes ``[x1, y1, x2, y2]``, x2/y2 exclusive. Every
  point and box that this module returns is in stored pixels (plus mm where stated).
- **Canonical pixels**: stored pixels mirrored left-right when
  :func:`~serving.pipeline.preprocess.needs_mirroring` says so (``x -> cols - x``), so that the
  chest wall is at column 0 and the nipple points to increasing columns. Used inside only.
- **Image mm**: stored pixels times ``Image.spacing_mm`` (row spacing for y, column spacing for
  x), measured on the compressed breast.
- **Breast frame** (the simulator's, ``training/synth/anatomy.py``), mm, origin at the nipple:
  ``d`` depth (posterior, towards the chest wall), ``u`` superior, ``l`` lateral (towards the
  axilla of *this* breast, so the frame is the same for a left and a right breast).
- **Image up axis**: the direction of decreasing row. Its direction in the breast frame
  comes from PatientOrientation's second value (the patient direction of increasing row) and
  the laterality: ``H``/``F`` head/foot; ``L``/``R`` is lateral for a breast of the same
  side, medial otherwise. CC: ``up = +-l``; ML/LM: ``up = +-u``; MLO (C-arm angle ``a``):
  ``up = +-sin(a) u +- cos(a) l`` (superolateral for a standard MLO).

Assumptions (stated, not measured on patients)
----------------------------------------------
- Compression spreads the breast in the image plane; image distances are divided by
  :data:`COMPRESSION_SPREAD` (1.1, the middle of the 5-20 % spread the simulator draws) to
  estimate distances in the uncompressed breast. ``image_distance_mm`` keeps the raw value.
- The MLO C-arm angle is the image's PositionerPrimaryAngle (0018,1510), its magnitude, when
  it lies strictly between 0 and 90 degrees; otherwise :func:`match_views`' ``mlo_angle_deg``
  (default 45°) is assumed and ``angle_assumed`` is set.
- The nipple is the most anterior point of the breast contour (canonical orientation: the
  right-most breast pixel). A retracted or not-in-profile nipple is not detected as such.
- Without a usable PatientOrientation column direction, the standard hanging is assumed (CC:
  lateral up; ML: superior up; MLO: superolateral up) and ``orientation_assumed`` is set.

numpy only (plus what :mod:`serving.pipeline.preprocess` uses); never torch, monai, scipy or
``training``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from serving.pipeline.dicom_in import Image
from serving.pipeline.preprocess import (
    BREAST_LEVEL,
    SEGMENTATION_SPACING_MM,
    needs_mirroring,
    segment_breast,
)

# The reduction, morphology and component helpers of preprocessing are reused on purpose, so
# that the breast mask found here is the one the network input was cropped to.
from serving.pipeline.preprocess import _block_mean as block_mean
from serving.pipeline.preprocess import _dilate as dilate
from serving.pipeline.preprocess import _erode as erode
from serving.pipeline.preprocess import _largest_component as largest_component

__all__ = [
    "COMPRESSION_SPREAD",
    "DEFAULT_MLO_ANGLE_DEG",
    "Depth",
    "Half",
    "LandmarkError",
    "Landmarks",
    "Match",
    "Quadrant",
    "ViewLocation",
    "clock_hour",
    "depth_third",
    "describe_view",
    "find_landmarks",
    "locate_in_view",
    "location_phrase",
    "match_views",
    "orientation_assumed",
    "quadrant",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
Point: TypeAlias = tuple[float, float]

Depth: TypeAlias = Literal["anterior", "middle", "posterior"]
#: The half of the clock face one view tells: CC outer/inner, ML/MLO upper/lower.
Half: TypeAlias = Literal["outer", "inner", "upper", "lower"]
Quadrant: TypeAlias = Literal["UOQ", "UIQ", "LOQ", "LIQ", "retroareolar", "central"]
PnlEnd: TypeAlias = Literal["chest_wall", "pectoral", "image_edge"]

#: In-plane spread of the compressed breast (image mm per uncompressed mm), an assumption.
COMPRESSION_SPREAD: Final = 1.1
#: C-arm angle assumed for MLO (and other oblique) views when it is not known, degrees.
DEFAULT_MLO_ANGLE_DEG: Final = 45.0
#: Retroareolar: within this distance behind the nipple (and within CENTRAL_MM of the axis), mm.
RETROAREOLAR_MM: Final = 20.0
#: Central: within this distance of the nipple axis, mm (no quadrant, clock face not stated).
CENTRAL_MM: Final = 10.0
#: Opening radius of the full-resolution nipple refinement (removes the cannula shaft), mm.
FINE_OPENING_MM: Final = 1.0
#: Half-size of the full-resolution window around the coarse nipple, mm.
FINE_WINDOW_MM: Final = 12.0
#: Box-mean smoothing of the full-resolution window before thresholding, mm.
FINE_SMOOTH_MM: Final = 0.3
#: Pectoral edge search: profile smoothing and edge half-width, mm.
PECTORAL_EDGE_MM: Final = 3.0
#: Pectoral edge points within this distance of the fitted line are inliers, mm.
PECTORAL_INLIER_MM: Final = 4.0
#: A pectoral line is accepted when it has at least this many inlier rows (1 mm rows),
PECTORAL_MIN_ROWS: Final = 20
#: ... inliers on at least this share of the rows it spans (a muscle edge is continuous),
PECTORAL_MIN_DENSITY: Final = 0.75
#: ... a median edge strength at least this many times the typical change in the breast,
PECTORAL_MIN_CONTRAST: Final = 8.0
#: ... starts within this distance (mm) of the breast's superior end at the chest wall,
PECTORAL_MAX_TOP_GAP_MM: Final = 20.0
#: ... and is the edge of a plateau (bright from the chest wall to the edge; see _plateau_ratio).
PECTORAL_MIN_PLATEAU: Final = 0.5

_OBLIQUE_VIEWS: Final = frozenset({"MLO", "LMO", "SIO", "ISO"})
_LATERAL_VIEWS: Final = frozenset({"ML", "LM"})
_CC_VIEWS: Final = frozenset({"CC", "XCCL", "XCCM", "FB"})


class LandmarkError(ValueError):
    """The landmarks of an image cannot be found (no spacing, or no breast in the image)."""


# --------------------------------------------------------------------------------------------
# Landmarks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Landmarks:
    """Landmarks of one image, in stored pixels (``(x, y)``, see the module docstring).

    Attributes:
        shape: ``(rows, cols)`` of the stored image.
        spacing_mm: ``(row spacing, column spacing)``, mm per pixel.
        mirrored: True when the chest wall is on the right of the stored image (canonical
            orientation mirrors it).
        nipple_xy: nipple tip (the most anterior point of the breast contour), stored px.
        chest_wall_x: x of the chest-wall edge (the posterior edge of the breast; the image
            edge when the breast touches it), stored px.
        pectoral: two points ``(superior end, inferior end)`` of the fitted pectoral edge line
            (ML/MLO), stored px, or ``None`` when none was found (always ``None`` for CC).
        pnl_end_xy: where the posterior nipple line ends, stored px.
        pnl_end: what it ends on: the pectoral edge, the chest-wall edge (CC, or ML/MLO
            without a pectoral edge, perpendicular to the image edge), or the image edge
            (ML/MLO when the line perpendicular to the pectoral edge leaves the breast first).
        pnl_length_mm: length of the posterior nipple line, image mm.
    """

    shape: tuple[int, int]
    spacing_mm: tuple[float, float]
    mirrored: bool
    nipple_xy: Point
    chest_wall_x: float
    pectoral: tuple[Point, Point] | None
    pnl_end_xy: Point
    pnl_end: PnlEnd
    pnl_length_mm: float

    @property
    def nipple_mm(self) -> Point:
        """Nipple tip in image mm from the stored image's top-left corner, ``(x, y)``."""
        return (self.nipple_xy[0] * self.spacing_mm[1], self.nipple_xy[1] * self.spacing_mm[0])

    @property
    def pnl_direction(self) -> Point:
        """Unit vector ``(x, y)`` along the posterior nipple line, nipple -> chest wall, in
        image-mm axes (x along columns, y along rows of the stored image)."""
        sy, sx = self.spacing_mm
        dx = (self.pnl_end_xy[0] - self.nipple_xy[0]) * sx
        dy = (self.pnl_end_xy[1] - self.nipple_xy[1]) * sy
        n = math.hypot(dx, dy)
        if n == 0.0:
            return (-1.0 if not self.mirrored else 1.0, 0.0)
        return (dx / n, dy / n)


def find_landmarks(image: Image) -> Landmarks:
    """Find the nipple, chest-wall edge, pectoral edge and posterior nipple line of an image.

    Steps (canonical orientation, chest wall at column 0):

    1. Reduce to about 1 mm (block mean) and segment the breast with
       :func:`~serving.pipeline.preprocess.segment_breast` (threshold, opening of radius 2 mm,
       which removes the cannula and tubing, largest component).
    2. Coarse nipple: the right-most column of the mask, at the middle of that column's
       longest run of breast pixels.
    3. Refine at full resolution in a window of :data:`FINE_WINDOW_MM` around it: smooth,
       threshold at the same air/tissue level, open by :data:`FINE_OPENING_MM` (the cannula
       shaft is under 0.5 mm wide), keep what overlaps the coarse mask; the nipple is the
       right-most column's longest run middle, with the column edge interpolated where the
       smoothed profile crosses the threshold.
    4. Chest-wall edge: the breast mask's left-most column (0 when it touches the edge).
    5. ML/MLO: the pectoral edge, a line fitted robustly to the strongest intensity drop
       (bright muscle -> breast) along each row near the chest wall; see
       :func:`_find_pectoral`.
    6. PNL: from the nipple perpendicular to the pectoral line when there is one (ending on it,
       or on the chest-wall edge if that comes first), else perpendicular to the chest-wall
       edge (horizontal in the image).

    Raises:
        LandmarkError: ``image.spacing_mm`` is ``None``, or no breast is found.
    """
    if image.spacing_mm is None:
        raise LandmarkError("Image.spacing_mm is None: landmarks need the pixel spacing")
    sy, sx = (float(v) for v in image.spacing_mm)
    pixels = image.pixels
    rows, cols = (int(v) for v in pixels.shape)
    mirrored = needs_mirroring(pixels, image.patient_orientation)
    canonical = pixels[:, ::-1] if mirrored else pixels
    fy, fx = _reduce_factor(sy), _reduce_factor(sx)
    small = block_mean(canonical, (fy, fx))
    small_spacing = (fy * sy + fx * sx) / 2
    mask = segment_breast(small, small_spacing)
    if mask.all() or not mask.any():
        raise LandmarkError(
            f"no breast found in the image ({rows}x{cols}, spacing {sy:g}x{sx:g} mm): "
            "the air/tissue threshold gives no breast-like component"
        )
    threshold = _tissue_threshold(small, mask)
    coarse_r, coarse_c = _extreme_run(mask)
    coarse_xy = ((coarse_c + 1.0) * fx, coarse_r * fy)
    nipple = _refine_nipple(canonical, mask, (fy, fx), (sy, sx), coarse_xy, threshold)
    chest_x = float(np.flatnonzero(mask.any(axis=0))[0] * fx)
    pectoral: tuple[Point, Point] | None = None
    view = (image.view or "").upper()
    if view in _OBLIQUE_VIEWS or view in _LATERAL_VIEWS:
        up_sup, _, _ = _up_signs(view, image.laterality, image.patient_orientation)
        flip = up_sup < 0  # the muscle is at the superior end: search with superior up
        found = _find_pectoral(small[::-1] if flip else small, mask[::-1] if flip else mask,
                               coarse_c)
        if found is not None:
            h = mask.shape[0]
            (r0, c0), (r1, c1) = found
            if flip:
                r0, r1 = h - 1 - r0, h - 1 - r1
            # rows: pixel centres; columns: the edge lies between pixels c - 1 and c
            pectoral = ((c0 * fx, (r0 + 0.5) * fy), (c1 * fx, (r1 + 0.5) * fy))
    end, kind = _pnl_end(nipple, chest_x, pectoral, (sy, sx), rows)
    length = math.hypot((nipple[0] - end[0]) * sx, (nipple[1] - end[1]) * sy)

    def stored(p: Point) -> Point:
        return (cols - p[0], p[1]) if mirrored else p

    return Landmarks(
        shape=(rows, cols),
        spacing_mm=(sy, sx),
        mirrored=mirrored,
        nipple_xy=stored(nipple),
        chest_wall_x=cols - chest_x if mirrored else chest_x,
        pectoral=None if pectoral is None else (stored(pectoral[0]), stored(pectoral[1])),
        pnl_end_xy=stored(end),
        pnl_end=kind,
        pnl_length_mm=length,
    )


def _reduce_factor(spacing_mm: float) -> int:
    """Integer reduction bringing ``spacing_mm`` closest to the segmentation spacing (1 mm)."""
    return max(1, round(SEGMENTATION_SPACING_MM / spacing_mm))


def _tissue_threshold(small: npt.NDArray[np.float32], mask: BoolArray) -> float:
    """Air/breast threshold: :data:`BREAST_LEVEL` of the way from the air level (median
    outside the dilated mask) to the tissue level (median inside the mask)."""
    outside = ~dilate(mask, 3)
    air = float(np.median(small[outside])) if outside.any() else float(small.min())
    tissue = float(np.median(small[mask]))
    return air + BREAST_LEVEL * (tissue - air)


def _longest_run_middle(column: BoolArray) -> float:
    """Middle (in pixel units, continuous) of the longest run of True in a 1D array."""
    padded = np.concatenate([[False], column, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    starts, ends = edges[0::2], edges[1::2]
    k = int(np.argmax(ends - starts))
    return (float(starts[k]) + float(ends[k])) / 2.0


def _extreme_run(mask: BoolArray) -> tuple[float, int]:
    """``(row middle, column)`` of the right-most column of ``mask`` (pixels of ``mask``)."""
    col = int(np.flatnonzero(mask.any(axis=0))[-1])
    return _longest_run_middle(mask[:, col]), col


def _box_smooth(a: FloatArray, k: int) -> FloatArray:
    """Mean over a ``(2k + 1)``-pixel square (edges: mean of what is inside)."""
    if k < 1:
        return a
    out = a
    for axis in (0, 1):
        csum = np.cumsum(np.pad(out, [(k + 1, k) if ax == axis else (0, 0) for ax in (0, 1)],
                                mode="edge"), axis=axis)
        n = out.shape[axis]
        hi = np.take(csum, np.arange(2 * k + 1, n + 2 * k + 1), axis=axis)
        lo = np.take(csum, np.arange(0, n), axis=axis)
        out = (hi - lo) / (2 * k + 1)
    return out


def _refine_nipple(
    canonical: npt.NDArray[np.float32],
    mask: BoolArray,
    factor: tuple[int, int],
    spacing: tuple[float, float],
    coarse_xy: Point,
    threshold: float,
) -> Point:
    """The nipple tip at full resolution near ``coarse_xy`` (canonical px); see
    :func:`find_landmarks`, step 3. Falls back to ``coarse_xy`` when nothing survives."""
    fy, fx = factor
    sy, sx = spacing
    rows, cols = canonical.shape
    half_r = math.ceil(FINE_WINDOW_MM / sy)
    r0 = max(0, int(coarse_xy[1]) - half_r)
    r1 = min(rows, int(coarse_xy[1]) + half_r)
    c0 = max(0, int(coarse_xy[0]) - math.ceil(FINE_WINDOW_MM / sx))
    c1 = min(cols, int(coarse_xy[0]) + math.ceil(4.0 / sx))
    if r1 - r0 < 3 or c1 - c0 < 3:
        return coarse_xy
    window = _box_smooth(np.asarray(canonical[r0:r1, c0:c1], dtype=np.float64),
                         max(0, round(FINE_SMOOTH_MM / ((sx + sy) / 2) / 2)))
    fine = window > threshold
    radius = max(1, round(FINE_OPENING_MM / ((sx + sy) / 2)))
    core = erode(fine, radius)
    # erode() treats outside the window as tissue; the window's border is not a real edge,
    # except where the image itself ends, so only the core that the coarse mask backs counts.
    rr = (np.arange(r0, r1) // fy).clip(0, mask.shape[0] - 1)
    cc = (np.arange(c0, c1) // fx).clip(0, mask.shape[1] - 1)
    near = dilate(mask, 2)[np.ix_(rr, cc)]
    core &= near
    if not core.any():
        return coarse_xy
    opened = dilate(largest_component(core), radius) & fine
    col = int(np.flatnonzero(opened.any(axis=0))[-1])
    row = _longest_run_middle(opened[:, col])
    # sub-pixel: where the smoothed profile along the nipple row crosses the threshold
    ri = min(int(row), window.shape[0] - 1)
    x = col + 1.0
    if col + 1 < window.shape[1]:
        a, b = float(window[ri, col]), float(window[ri, col + 1])
        if a > threshold >= b and a != b:
            x = col + 0.5 + (a - threshold) / (a - b)
    return (c0 + x, r0 + row)


def _find_pectoral(
    small: npt.NDArray[np.float32], mask: BoolArray, nipple_col: int
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The pectoral edge on the reduced canonical image (about 1 mm pixels), as two points
    ``((row, col) top, (row, col) bottom)`` of a fitted line, or ``None``.

    For every row, the strongest drop of the smoothed intensity going anteriorly (bright
    muscle -> fattier breast) within the posterior 85 % of the nipple depth and at least
    5 mm inside the breast contour. A line ``col = a + b * row`` is fitted to these points by
    a deterministic consensus search over point pairs (inliers within
    :data:`PECTORAL_INLIER_MM`) and refitted by least squares on its inliers. Accepted when:

    - it has at least :data:`PECTORAL_MIN_ROWS` inlier rows, on at least
      :data:`PECTORAL_MIN_DENSITY` of the rows it spans (a muscle edge is continuous);
    - its median edge strength is :data:`PECTORAL_MIN_CONTRAST` times the typical intensity
      change along the rows of the breast;
    - it starts within :data:`PECTORAL_MAX_TOP_GAP_MM` of the first row where the searched
      interior reaches it (the muscle starts at the breast's upper end);
    - it meets the chest-wall edge within the breast (the edge of the breast's thickness
      fall-off, or of dense tissue, runs parallel to the contour instead);
    - it bounds a plateau (:data:`PECTORAL_MIN_PLATEAU`; the edge of a bright duct does not);
    - it leans like a pectoral muscle: the edge moves towards the chest wall going down
      (``b < -0.05``).

    Row 0 must be the superior end (the caller flips the rows otherwise).
    """
    k = max(1, round(PECTORAL_EDGE_MM))
    smooth = _box_smooth(small.astype(np.float64), 1)
    inner = erode(mask, 5) & mask
    limit = max(int(0.85 * nipple_col), 2 * k + 2)
    pts_r: list[int] = []
    pts_c: list[int] = []
    strength: list[float] = []
    typical: list[float] = []
    reach = np.zeros(mask.shape[0])  # breast interior contiguous from the wall, per row
    for r in range(mask.shape[0]):
        row_mask = inner[r, :limit]
        if not row_mask[0]:
            continue
        n = int(np.argmin(row_mask)) if not row_mask.all() else limit
        reach[r] = n
        if n < 2 * k + 4:
            continue
        p = smooth[r, :n]
        csum = np.concatenate([[0.0], np.cumsum(p)])
        idx = np.arange(k, n - k)
        before = (csum[idx] - csum[idx - k]) / k
        after = (csum[idx + k] - csum[idx]) / k
        g = after - before
        j = int(np.argmin(g))
        typical.append(float(np.median(np.abs(g))))
        pts_r.append(r)
        pts_c.append(int(idx[j]))
        strength.append(-float(g[j]))
    if len(pts_r) < PECTORAL_MIN_ROWS:
        return None
    rs = np.asarray(pts_r, dtype=np.float64)
    cs = np.asarray(pts_c, dtype=np.float64)
    ws = np.asarray(strength)
    noise = float(np.median(typical)) + 1e-12
    strong = ws > 3.0 * noise
    if strong.sum() < PECTORAL_MIN_ROWS:
        return None
    rs, cs, ws = rs[strong], cs[strong], ws[strong]
    best = _consensus_line(rs, cs, ws)
    if best is None:
        return None
    a, b, inliers = best
    top, bottom = float(rs[inliers].min()), float(rs[inliers].max())
    # the first row where the line could have been seen (inside the searched interior)
    rows = np.arange(mask.shape[0])
    seen = np.flatnonzero(reach > a + b * rows + k)
    first = float(seen[0]) if seen.size else top
    # where the line meets the chest-wall edge; a muscle edge does so inside the breast
    wall_col = int(np.flatnonzero(mask.any(axis=0))[0])
    wall_rows = np.flatnonzero(mask[:, wall_col])
    meets = (wall_col - a) / b if b != 0 else math.inf
    if (
        not wall_rows[0] <= meets <= wall_rows[-1]
        or inliers.sum() < PECTORAL_MIN_ROWS
        or inliers.sum() < PECTORAL_MIN_DENSITY * (bottom - top + 1)
        or float(np.median(ws[inliers])) < PECTORAL_MIN_CONTRAST * noise
        or top - first > PECTORAL_MAX_TOP_GAP_MM
        or b >= -0.05
        or _plateau_ratio(smooth, rs[inliers], cs[inliers], ws[inliers], k)
        < PECTORAL_MIN_PLATEAU
    ):
        return None
    return (top, a + b * top), (bottom, a + b * bottom)


def _plateau_ratio(smooth: FloatArray, rs: FloatArray, cs: FloatArray, ws: FloatArray,
                   k: int) -> float:
    """How much of the edge step is a plateau: the median over rows of (median from the chest
    wall to the edge - median over ``3k`` px in front of it) / (the local step). About 1 for a
    muscle (bright from the wall to its edge), about 0 for the edge of a bright duct."""
    ratios = []
    for r, c, w in zip(rs.astype(int), cs.astype(int), ws, strict=True):
        behind = smooth[r, : max(1, c - k)]
        ahead = smooth[r, c + k: c + 4 * k]
        if ahead.size and w > 0:
            ratios.append((float(np.median(behind)) - float(np.median(ahead))) / float(w))
    return float(np.median(ratios)) if ratios else 0.0


def _consensus_line(
    rs: FloatArray, cs: FloatArray, ws: FloatArray
) -> tuple[float, float, BoolArray] | None:
    """Best line ``col = a + b * row`` through points ``(rs, cs)`` weighted by ``ws``: candidate
    lines through pairs of a regular subsample (at most 40 points, pairs at least 10 rows
    apart), scored by the summed weight of points within :data:`PECTORAL_INLIER_MM`; the best
    is refitted by weighted least squares on its inliers. ``None`` when no pair qualifies."""
    step = max(1, len(rs) // 40)
    sub = np.arange(0, len(rs), step)
    best_score, best_line = -1.0, (0.0, 0.0)
    for i in sub:
        for j in sub:
            if rs[j] - rs[i] < 10:
                continue
            b = (cs[j] - cs[i]) / (rs[j] - rs[i])
            a = cs[i] - b * rs[i]
            resid = np.abs(cs - (a + b * rs)) / math.sqrt(1 + b * b)
            score = float(ws[resid <= PECTORAL_INLIER_MM].sum())
            if score > best_score:
                best_score, best_line = score, (float(a), float(b))
    if best_score < 0:
        return None
    a, b = best_line
    inliers = np.abs(cs - (a + b * rs)) / math.sqrt(1 + b * b) <= PECTORAL_INLIER_MM
    if inliers.sum() >= 2:
        w = ws[inliers]
        b, a = (float(v) for v in np.polyfit(rs[inliers], cs[inliers], 1, w=np.sqrt(w)))
    return a, b, inliers


def _pnl_end(
    nipple: Point,
    chest_x: float,
    pectoral: tuple[Point, Point] | None,
    spacing: tuple[float, float],
    rows: int,
) -> tuple[Point, PnlEnd]:
    """End of the posterior nipple line (canonical px) and what it ends on.

    Without a pectoral line: horizontal to the chest-wall edge. With one: along the
    perpendicular from the nipple to the (extended) pectoral line, in mm so that anisotropic
    pixels keep the right angle; it ends on the pectoral line, or on the chest-wall edge /
    the top or bottom image edge when it crosses that first.
    """
    nx, ny = nipple
    if pectoral is None:
        return (chest_x, ny), "chest_wall"
    sy, sx = spacing
    (x0, y0), (x1, y1) = pectoral
    # in mm
    px, py = x0 * sx, y0 * sy
    tx, ty = (x1 - x0) * sx, (y1 - y0) * sy
    tn = math.hypot(tx, ty)
    if tn == 0:
        return (chest_x, ny), "chest_wall"
    tx, ty = tx / tn, ty / tn
    qx, qy = nx * sx, ny * sy
    s = (qx - px) * tx + (qy - py) * ty
    fx_, fy_ = px + s * tx, py + s * ty  # foot of the perpendicular
    dx, dy = fx_ - qx, fy_ - qy
    dist = math.hypot(dx, dy)
    if dist == 0 or dx >= 0:  # the line passes through or in front of the nipple: unusable
        return (chest_x, ny), "chest_wall"
    ux, uy = dx / dist, dy / dist
    # where the perpendicular would leave the breast / image first
    limits = [dist]
    limits.append((chest_x * sx - qx) / ux)
    if uy < 0:
        limits.append((0.0 - qy) / uy)
    elif uy > 0:
        limits.append((rows * sy - qy) / uy)
    t = min(v for v in limits if v > 0) if any(v > 0 for v in limits) else dist
    end = ((qx + t * ux) / sx, (qy + t * uy) / sy)
    return end, "pectoral" if t == dist else "image_edge"


# --------------------------------------------------------------------------------------------
# One finding in one view
# --------------------------------------------------------------------------------------------


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


def orientation_assumed(view: str | None, laterality: str,
                        orientation: tuple[str, str] | None) -> bool:
    """Whether a location on an image of ``view`` and ``laterality`` with PatientOrientation
    ``orientation`` rests on an assumed hanging (the orientation does not give the direction
    the view needs: CC the lateral one, ML/LM the superior one, MLO-like views both)."""
    return _up_signs((view or "?").upper(), laterality, orientation)[2]


def _oblique_angle(view: str, angle: float | None) -> float | None:
    """``|PositionerPrimaryAngle|`` of an oblique view when it is in (0, 90), else None."""
    if view not in _OBLIQUE_VIEWS or angle is None or not math.isfinite(angle):
        return None
    return abs(angle) if 0.0 < abs(angle) < 90.0 else None


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
    up_sup, up_lat, assumed = _up_signs(view, image.laterality, image.patient_orientation)
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
        distance_cm=_whole_cm(distance),
        axial_mm=axial,
        offset_mm=offset,
        depth_fraction=fraction,
        depth=depth_third(fraction),
        up_superior=up_sup,
        up_lateral=up_lat,
        oblique=view in _OBLIQUE_VIEWS,
        half=_half(view, offset, up_sup, up_lat),
        orientation_assumed=assumed,
        angle_deg=_oblique_angle(view, image.positioner_primary_angle),
    )


def _up_signs(
    view: str, laterality: str, orientation: tuple[str, str] | None
) -> tuple[int, int, bool]:
    """Signs ``(superior, lateral, assumed)`` of the image's up axis (decreasing row) in the
    breast frame, from PatientOrientation's column direction (the direction of increasing
    row) and the laterality. ``assumed`` when the standard hanging had to be assumed."""
    down_sup, down_lat = 0, 0
    letters = (orientation[1] if orientation is not None else "").upper()
    for ch in letters:
        if ch == "H":
            down_sup += 1
        elif ch == "F":
            down_sup -= 1
        elif ch in "LR" and laterality in ("L", "R"):
            down_lat += 1 if ch == laterality else -1
    up_sup, up_lat = -int(np.sign(down_sup)), -int(np.sign(down_lat))
    lat_known = laterality in ("L", "R")
    has_lr = any(ch in "LR" for ch in letters)
    assumed = False
    if view in _CC_VIEWS:
        if not has_lr:
            up_sup, up_lat, assumed = 0, (1 if lat_known else 0), True
    elif view in _LATERAL_VIEWS:
        if up_sup == 0:
            up_sup, up_lat, assumed = 1, 0, True
    elif view in _OBLIQUE_VIEWS:
        if up_sup == 0:
            up_sup, assumed = 1, True
        if up_lat == 0 and lat_known and not has_lr:
            # standard MLO: superolateral up; LMO-like views: superomedial up
            up_lat, assumed = (up_sup if view in ("MLO", "SIO") else -up_sup), True
    return up_sup, up_lat, assumed


def _half(view: str, offset: float, up_sup: int, up_lat: int) -> Half | None:
    """The clock-face half a single view tells (see :attr:`ViewLocation.half`)."""
    if view in _CC_VIEWS:
        if up_lat == 0:
            return None
        return "outer" if offset * up_lat > 0 else "inner"
    if view in _LATERAL_VIEWS or view in _OBLIQUE_VIEWS:
        if up_sup == 0:
            return None
        return "upper" if offset * up_sup > 0 else "lower"
    return None


# --------------------------------------------------------------------------------------------
# BI-RADS rules
# --------------------------------------------------------------------------------------------


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


def depth_third(fraction: float) -> Depth:
    """Anterior / middle / posterior third of the nipple-to-chest-wall depth (fraction of the
    posterior nipple line: < 1/3, < 2/3, else)."""
    if fraction < 1.0 / 3.0:
        return "anterior"
    return "middle" if fraction < 2.0 / 3.0 else "posterior"


def _whole_cm(mm: float) -> int:
    """``mm`` in whole cm, rounded half up."""
    return math.floor(mm / 10.0 + 0.5)


_SIDE_NAMES: Final = {"L": "Left breast", "R": "Right breast"}


def _distance_text(cm: int) -> str:
    return "less than 1 cm from nipple" if cm < 1 else f"{cm} cm from nipple"


def location_phrase(
    laterality: str, clock: int | None, region: Quadrant | None, depth: Depth, distance_cm: int
) -> str:
    """The BI-RADS location phrase: laterality, clock face (or ``retroareolar`` / ``central``,
    where BI-RADS states no clock face; or the quadrant when no clock face is known), depth,
    distance from the nipple in whole cm. E.g. ``"Right breast, 10 o'clock, middle depth,
    3 cm from nipple"``."""
    parts = [_SIDE_NAMES.get(laterality, "Breast of unknown laterality")]
    if region in ("retroareolar", "central"):
        parts.append(region)
    elif clock is not None:
        parts.append(f"{clock} o'clock")
    elif region is not None:
        parts.append(region)
    parts.append(f"{depth} depth")
    parts.append(_distance_text(distance_cm))
    return ", ".join(parts)


#: Why a location part that rests on the image orientation is not stated.
ORIENTATION_UNKNOWN: Final = "PatientOrientation does not give the image orientation"


def describe_view(loc: ViewLocation) -> str:
    """Phrase for a finding as one view locates it, e.g. ``"Left breast, outer half (from the
    CC view), middle depth, 3 cm from nipple"``; MLO halves say ``"(from the MLO view,
    oblique)"``. It names the view the location comes from, not that the finding is seen
    there only. When the orientation was assumed the half is not stated, and the phrase says
    why."""
    side = _SIDE_NAMES.get(loc.laterality, "Breast of unknown laterality")
    source = f"from the {loc.view} view" if loc.view != "?" else "from a view of unknown type"
    if loc.half is not None and not loc.orientation_assumed:
        parts = [side, f"{loc.half} half ({source}{', oblique' if loc.oblique else ''})"]
    else:
        parts = [f"{side} ({source})"]
    parts += [f"{loc.depth} depth", _distance_text(loc.distance_cm)]
    text = ", ".join(parts)
    if loc.orientation_assumed and loc.half is not None:
        text += f"; half not stated: {ORIENTATION_UNKNOWN}"
    return text


# --------------------------------------------------------------------------------------------
# Two views
# --------------------------------------------------------------------------------------------


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
        if f.view not in _CC_VIEWS:
            raise ValueError(f"cc_findings[{i}] is a {f.view!r} view, expected CC")
    for i, f in enumerate(other_findings):
        if f.view not in _LATERAL_VIEWS and f.view not in _OBLIQUE_VIEWS:
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
    tolerance_fraction * mean depth)``, or sizes not within ``max_size_ratio``)."""
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
    return diff / max(tol, 1e-9) + 0.5 * math.log(ratio) / math.log(max_ratio) + (1 - agreement)


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
    cm = _whole_cm(distance)
    assumed = cc.orientation_assumed or other.orientation_assumed
    phrase = location_phrase(laterality, clock, region, depth, cm)
    if assumed and region not in ("retroareolar", "central"):
        left_out = clock is not None or region is not None
        clock, region = None, None
        phrase = location_phrase(laterality, None, None, depth, cm) + (
            f"; clock face and quadrant not stated: {ORIENTATION_UNKNOWN}" if left_out else "")
    return Match(
        cc_index=i,
        other_index=j,
        cc=cc,
        other=other,
        laterality=laterality,
        position_mm=(d, u, lat),
        clock_hour=clock,
        quadrant=region,
        depth_fraction=fraction,
        depth=depth,
        distance_mm=distance,
        distance_cm=cm,
        oblique=other.oblique,
        cost=cost,
        phrase=phrase,
        orientation_assumed=assumed,
    )
