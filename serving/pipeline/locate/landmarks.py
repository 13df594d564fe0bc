"""Landmarks of one image (ACR BI-RADS, DOMAIN.md): the nipple, the chest-wall edge, the pectoral
edge (ML/MLO) and the posterior nipple line (PNL); see :func:`find_landmarks`.

Coordinate conventions
----------------------
- **Stored pixels**: the DICOM image as stored (``Image.pixels``), points ``(x, y)``, x =
  column, y = row, origin at the top-left corner of the top-left pixel (pixel ``(r, c)``
  covers ``[c, c + 1) x [r, r + 1)``); boxes ``[x1, y1, x2, y2]``, x2/y2 exclusive. Every
  point that :class:`Landmarks` holds is in stored pixels (plus mm where stated).
- **Canonical pixels**: stored pixels mirrored left-right when
  :func:`~serving.pipeline.preprocess.needs_mirroring` says so (``x -> cols - x``), so that the
  chest wall is at column 0 and the nipple points to increasing columns. Used inside only.
- **Image mm**: stored pixels times ``Image.spacing_mm`` (row spacing for y, column spacing for
  x), measured on the compressed breast.

Assumption (stated, not measured on patients): the nipple is the most anterior point of the
breast contour (canonical orientation: the right-most breast pixel). A retracted or
not-in-profile nipple is not detected as such.

numpy only (plus the breast segmentation of :mod:`serving.pipeline.breast_mask` and the
orientation test of :mod:`serving.pipeline.preprocess`); never torch, monai, scipy or ``training``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from serving.pipeline.arrays import BoolArray, FloatArray

# The reduction and segmentation of preprocessing are reused on purpose, so that the breast
# mask found here is the one the network input was cropped to.
from serving.pipeline.breast_mask import BREAST_LEVEL, reduced_breast_mask
from serving.pipeline.dicom_in import Image
from serving.pipeline.locate.breast_frame import LATERAL_VIEWS, OBLIQUE_VIEWS, up_signs
from serving.pipeline.morphology import dilate, erode, largest_component
from serving.pipeline.preprocess import needs_mirroring

__all__ = [
    "FINE_OPENING_MM",
    "FINE_SMOOTH_MM",
    "FINE_WINDOW_MM",
    "PECTORAL_EDGE_MM",
    "PECTORAL_INLIER_MM",
    "PECTORAL_MAX_TOP_GAP_MM",
    "PECTORAL_MIN_CONTRAST",
    "PECTORAL_MIN_DENSITY",
    "PECTORAL_MIN_PLATEAU",
    "PECTORAL_MIN_ROWS",
    "LandmarkError",
    "Landmarks",
    "PnlEnd",
    "Point",
    "find_landmarks",
]

Point: TypeAlias = tuple[float, float]
PnlEnd: TypeAlias = Literal["chest_wall", "pectoral", "image_edge"]

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


class LandmarkError(ValueError):
    """The landmarks of an image cannot be found (no spacing, or no breast in the image)."""


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
       :func:`~serving.pipeline.breast_mask.segment_breast` (threshold, opening of radius 2 mm,
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
    reduced = reduced_breast_mask(canonical, (sy, sx))
    small, mask = reduced.small, reduced.mask
    fy, fx = reduced.factor
    if mask.all() or not mask.any():
        raise LandmarkError(
            f"no breast found in the image ({rows}x{cols}, spacing {sy:g}x{sx:g} mm): "
            "the air/tissue threshold gives no breast-like component"
        )
    threshold = _tissue_threshold(small, mask)
    coarse_r, coarse_c = _extreme_run(mask)
    # The reduced grid's last block may be partial (a width or height that is not a whole
    # number of blocks): a block edge there can lie past the image, so clip to it.
    coarse_xy = (min((coarse_c + 1.0) * fx, float(cols)), min(coarse_r * fy, rows - 1.0))
    nipple = _refine_nipple(canonical, mask, (fy, fx), (sy, sx), coarse_xy, threshold)
    chest_x = float(np.flatnonzero(mask.any(axis=0))[0] * fx)
    pectoral: tuple[Point, Point] | None = None
    view = (image.view or "").upper()
    if view in OBLIQUE_VIEWS or view in LATERAL_VIEWS:
        up_sup, _, _ = up_signs(view, image.laterality, image.patient_orientation)
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
