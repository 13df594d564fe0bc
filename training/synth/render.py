"""Project a 3D phantom into one mammographic view and form the X-ray image.

Canonical image plane (before the stored orientation is applied): the chest wall runs along
column 0, the nipple points towards increasing columns, row 0 is the top. Plane coordinates are
in mm: ``x`` from the chest-wall edge towards the nipple, ``y`` downwards; pixel ``(row, col)``
covers ``[col, col + 1) x [row, row + 1)`` in pixel units, so a point at ``(x, y)`` mm is at
pixel coordinates ``(x / spacing, y / spacing)``.

View geometry: the compression plate flattens the breast along the compression axis ``w`` and
the image shows the depth axis ``d`` and an in-plane axis ``v = cos(a) * l + sin(a) * u``
(``a`` = C-arm angle: 0 for CC, so ``v`` is lateral and lateral is at the top; 90 for ML, so
``v`` is superior; 40-60 for MLO, so superolateral (the axilla) is at the top). In-plane
coordinates are stretched by ``expand`` (the compressed breast spreads).

Image formation (per pixel): attenuation ``A = t * (mu_fat + (mu_gland - mu_fat) * g) +
skin + pectoral + mu_contrast * c`` with ``t`` the compressed tissue thickness (mm), ``g`` the
fibroglandular fraction, ``c`` the iodinated contrast path length (mm); primary fluence
``N * exp(-(A - A_ref))`` photons, plus scatter (a wide blur of the primary times the
scatter-to-primary ratio), plus Poisson-Gaussian detector noise; the stored value of a
For Presentation image is a vendor-like monotone map of ``log(I0 / I)`` to 12 or 14 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from training.synth.alt import clumped_texture
from training.synth.anatomy import BreastShape, Phantom, Sphere, bubble_spheres
from training.synth.types import ViewName
from training.synth.variety import NippleSpec, OutlineSpec, ProcessingSpec

LOWRES = 4  # factor between the full-resolution grid and the smooth-field grid


@dataclass(frozen=True)
class ViewGeometry:
    """Where the compressed breast lands on the detector (mm, canonical plane).

    Attributes:
        view: CC, ML or MLO.
        angle_deg: C-arm angle (0 CC, 90 ML, 40-60 MLO).
        expand: in-plane stretch of the compressed breast (>= 1).
        thickness_mm: compressed breast thickness.
        nipple_xy_mm: nipple tip in the canonical plane (x from the chest wall, y down).
        nipple_len_mm: how far the nipple protrudes beyond the breast contour.
        nipple: nipple and areola shape (``None``: a protruding nipple of
            ``nipple_len_mm``, no areola).
        outline: outward distortions of the contour (``None``: none).
    """

    view: ViewName
    angle_deg: float
    expand: float
    thickness_mm: float
    nipple_xy_mm: tuple[float, float]
    nipple_len_mm: float
    nipple: NippleSpec | None = None
    outline: OutlineSpec | None = None

    def v_axis(self) -> np.ndarray:
        """The image's upward axis in the breast frame ``(d, u, l)``."""
        a = np.deg2rad(self.angle_deg)
        return np.array([0.0, np.sin(a), np.cos(a)])

    def to_plane(self, p: np.ndarray) -> np.ndarray:
        """Breast-frame points ``(..., 3)`` mm -> canonical plane ``(..., 2)`` mm ``(x, y)``."""
        x = self.nipple_xy_mm[0] - self.expand * p[..., 0]
        y = self.nipple_xy_mm[1] - self.expand * (p @ self.v_axis())
        return np.stack([x, y], axis=-1)


@dataclass
class ViewRender:
    """Output of :func:`render_view`, canonical orientation.

    Attributes:
        pixels: ``(rows, cols)`` uint16, MONOCHROME2 sense, chest wall at column 0.
        lesion_boxes: ``{lesion_id: [x1, y1, x2, y2]}`` canonical pixel boxes.
        mimic_boxes: ``[(kind, [x1, y1, x2, y2])]`` canonical pixel boxes.
        nipple_xy_px: nipple tip ``(x, y)`` in canonical pixels.
        breast_mask_fraction: share of the image covered by the breast.
        geometry: the view geometry that was drawn.
        breast_mask_low: the breast mask on the 4x coarser grid (``LOWRES``).
    """

    pixels: np.ndarray
    lesion_boxes: dict[int, list[float]]
    mimic_boxes: list[tuple[str, list[float]]]
    nipple_xy_px: tuple[float, float]
    breast_mask_fraction: float
    geometry: ViewGeometry
    breast_mask_low: np.ndarray | None = None


# --------------------------------------------------------------------------- helpers


def power_law_noise(shape: tuple[int, int], beta: float, rng: np.random.Generator
                    ) -> np.ndarray:
    """Zero-mean, unit-variance 2D noise with power spectrum ``~ 1 / f^beta``.

    Args:
        shape: ``(rows, cols)``.
        beta: spectral exponent (mammographic texture: about 2.5-3.5).
    """
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2.0)
    amp[0, 0] = 0.0
    spec = (rng.normal(size=amp.shape) + 1j * rng.normal(size=amp.shape)) * amp
    out = np.fft.irfft2(spec, s=shape).astype(np.float32)
    out -= out.mean()
    out /= max(float(out.std()), 1e-9)
    return out


#: Linear-interpolation weights of (previous, current, next) coarse samples for the four
#: fine samples inside one coarse pixel (pixel-centre aligned, factor 4).
_UPW = np.array([[0.375, 0.625, 0.0], [0.125, 0.875, 0.0], [0.0, 0.875, 0.125],
                 [0.0, 0.625, 0.375]], np.float32)


def _upsample_rows(a: np.ndarray) -> np.ndarray:
    """``(n, m)`` -> ``(4n, m)`` bilinear along axis 0, edges clamped."""
    p = np.concatenate([a[:1], a, a[-1:]], axis=0)
    prev, cur, nxt = p[:-2], p[1:-1], p[2:]
    out = np.empty((a.shape[0], 4, a.shape[1]), np.float32)
    for m in range(4):
        w0, w1, w2 = (float(w) for w in _UPW[m])
        if w0:
            np.add(prev * w0, cur * w1, out=out[:, m])
        else:
            np.add(cur * w1, nxt * w2, out=out[:, m])
    return out.reshape(-1, a.shape[1])


def upsample(low: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a ``LOWRES``-times coarser grid to ``shape`` (float32, C order).

    Pixel-centre aligned (like ``scipy.ndimage.zoom(..., grid_mode=True)``), edges clamped.
    Columns are interpolated on the small grid (transposed), rows last, so no full-size
    array is ever transposed.
    """
    assert LOWRES == 4, "the interpolation weights are for a factor of 4"
    low_t = np.ascontiguousarray(low.astype(np.float32, copy=False).T)
    wide = np.ascontiguousarray(_upsample_rows(low_t)[: shape[1]].T)  # (n, cols)
    return _upsample_rows(wide)[: shape[0]]


def upsample_window(low: np.ndarray, shape: tuple[int, int], rows: slice, cols: slice
                    ) -> np.ndarray:
    """``upsample(low, shape)[rows, cols]`` computed from the needed part of ``low`` only."""
    f = LOWRES
    r0 = max(rows.start // f - 1, 0)
    r1 = min(-(-rows.stop // f) + 1, low.shape[0])
    c0 = max(cols.start // f - 1, 0)
    c1 = min(-(-cols.stop // f) + 1, low.shape[1])
    part = low[r0:r1, c0:c1]
    up = _upsample_rows(np.ascontiguousarray(_upsample_rows(np.ascontiguousarray(
        part.astype(np.float32, copy=False).T)).T))
    # interpolation near the cut is exact except within one coarse pixel of a clamped edge:
    # the margin of one coarse pixel keeps the requested window away from it.
    full_r0, full_c0 = r0 * f, c0 * f
    return up[rows.start - full_r0: rows.stop - full_r0, cols.start - full_c0:
              cols.stop - full_c0]


def _bbox(cx: float, cy: float, r: float, shape: tuple[int, int]
          ) -> tuple[int, int, int, int] | None:
    """Integer pixel window ``(r0, r1, c0, c1)`` around a disc, clipped; None if outside."""
    r0 = max(int(np.floor(cy - r - 1)), 0)
    r1 = min(int(np.ceil(cy + r + 1)), shape[0])
    c0 = max(int(np.floor(cx - r - 1)), 0)
    c1 = min(int(np.ceil(cx + r + 1)), shape[1])
    if r0 >= r1 or c0 >= c1:
        return None
    return r0, r1, c0, c1


def draw_capsules(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, ra: np.ndarray,
                  rb: np.ndarray, scale: float = 1.0, min_r: float = 0.7) -> None:
    """Max-composite the projected path length through tapered tubes into ``canvas``.

    Args:
        canvas: ``(rows, cols)`` float32, path length in *pixels*, modified in place.
        a, b: ``(N, 2)`` segment end points ``(x, y)`` in pixels.
        ra, rb: ``(N,)`` tube radii at ``a`` and ``b`` in pixels.
        scale: multiplies the path length (relative attenuation of the tube's content).
        min_r: tubes thinner than this (pixels) are widened with the same cross-section
            area, so sub-pixel ducts keep their integrated contrast instead of aliasing away.
    """
    for k in range(len(a)):
        ax, ay = float(a[k, 0]), float(a[k, 1])
        bx, by = float(b[k, 0]), float(b[k, 1])
        rmax = max(float(ra[k]), float(rb[k]), min_r)
        win = _bbox(min(ax, bx) / 2 + max(ax, bx) / 2, min(ay, by) / 2 + max(ay, by) / 2,
                    rmax + abs(ax - bx) / 2 + abs(ay - by) / 2, canvas.shape)
        if win is None:
            continue
        r0, r1, c0, c1 = win
        ys = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
        xs = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5
        dx, dy = bx - ax, by - ay
        den = dx * dx + dy * dy
        if den < 1e-9:
            t = np.zeros((r1 - r0, c1 - c0), np.float32)
        else:
            t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / den, 0.0, 1.0)
        px = ax + t * dx - xs
        py = ay + t * dy - ys
        d2 = px * px + py * py
        r = float(ra[k]) + t * (float(rb[k]) - float(ra[k]))
        r_eff = np.maximum(r, min_r)
        val = 2.0 * np.sqrt(np.maximum(r_eff * r_eff - d2, 0.0)) * (r / r_eff) ** 2 * scale
        np.maximum(canvas[r0:r1, c0:c1], val, out=canvas[r0:r1, c0:c1])


def sphere_thickness(canvas_shape: tuple[int, int], cx: float, cy: float, r: float
                     ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Path length (pixels) through a sphere of radius ``r`` px centred at ``(cx, cy)`` px."""
    win = _bbox(cx, cy, r, canvas_shape)
    if win is None:
        return None
    r0, r1, c0, c1 = win
    ys = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - cy
    xs = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5 - cx
    return win, 2.0 * np.sqrt(np.maximum(r * r - xs * xs - ys * ys, 0.0))


def spheres_px(spheres: list[Sphere], geo: ViewGeometry, spacing: float
                ) -> list[tuple[float, float, float]]:
    """Project spheres to ``(cx, cy, r)`` in canonical pixels (radius not stretched): the
    in-focus discs of a projection (here) and of a tomosynthesis plane
    (:mod:`training.synth.dbt`)."""
    out = []
    for s in spheres:
        xy = geo.to_plane(s.center) / spacing
        out.append((float(xy[0]), float(xy[1]), s.radius / spacing))
    return out


def union_box(circles: list[tuple[float, float, float]], shape: tuple[int, int]
               ) -> list[float]:
    """Bounding box ``[x1, y1, x2, y2]`` (pixels, x2/y2 exclusive) of discs ``(cx, cy, r)``,
    clipped to ``shape``; the truth box of the 2D and of the tomosynthesis renderer."""
    x1 = min(c[0] - c[2] for c in circles)
    y1 = min(c[1] - c[2] for c in circles)
    x2 = max(c[0] + c[2] for c in circles)
    y2 = max(c[1] + c[2] for c in circles)
    return [float(max(np.floor(x1), 0)), float(max(np.floor(y1), 0)),
            float(min(np.ceil(x2), shape[1])), float(min(np.ceil(y2), shape[0]))]


# --------------------------------------------------------------------------- tissue


@dataclass(frozen=True)
class TissueParams:
    """Per-view tissue and exposure draws (units in the field names)."""

    mu_fat: float
    mu_gland: float
    density: float  # 0 fatty .. 1 extremely dense
    texture_beta: float
    skin_mm: float
    pectoral: tuple[float, float, float] | None  # (x at top mm, y at chest wall mm, bow)
    counts: float  # photons per pixel behind the median breast
    electronic_sigma: float
    spr: float  # scatter-to-primary ratio
    scatter_sigma_mm: float
    texture: str = "power_law"  # or "clumped" (alt style)


def breast_fields(breast: BreastShape, geo: ViewGeometry, shape: tuple[int, int],
                  spacing: float, tp: TissueParams, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Smooth fields on the low-resolution grid.

    The contour is the view's section of the breast (a superellipse of exponent
    ``breast.exponent``; 2 is an ellipse), distorted outwards only by ``geo.outline`` (so the
    duct tree stays inside), with the nipple of ``geo.nipple``: protruding beyond the contour,
    flat, or inverted (a notch whose bottom is the nipple tip); the areolar skin is thicker.

    Returns:
        ``(A_low, mask_low)``: tissue attenuation (dimensionless line integral) and the
        breast mask, both ``(ceil(rows/LOWRES), ceil(cols/LOWRES))``.
    """
    lh, lw = -(-shape[0] // LOWRES), -(-shape[1] // LOWRES)
    ls = spacing * LOWRES
    Y = (np.arange(lh, dtype=np.float32)[:, None] + 0.5) * ls
    X = (np.arange(lw, dtype=np.float32)[None, :] + 0.5) * ls
    xn, yn = geo.nipple_xy_mm
    d = (xn - X) / geo.expand  # depth behind the nipple tip, uncompressed mm
    v = (yn - Y) / geo.expand
    a = np.deg2rad(geo.angle_deg)
    rv = float(np.hypot(np.cos(a) * breast.radius_lat_mm, np.sin(a) * breast.radius_sup_mm))
    theta = np.arctan2(v, np.maximum(breast.depth_mm - d, 1e-3))
    outline = geo.outline or OutlineSpec((0.0, 0.0, 0.0), 0.0)
    b2, b3, b5 = outline.bumps
    wobble = 1.0 + b2 * 0.5 * (1.0 + np.sin(2 * theta + rng.uniform(0, 6.3))) \
        + b3 * 0.5 * (1.0 + np.sin(3 * theta + rng.uniform(0, 6.3))) \
        + b5 * 0.5 * (1.0 + np.sin(5 * theta + rng.uniform(0, 6.3)))
    rv_map = rv * wobble * np.where(v < 0, 1.0 + outline.droop, 1.0)
    if geo.view == "MLO":  # the axillary tail reaches the top edge near the chest wall
        rv_up = max(rv, 1.15 * yn / geo.expand)
        rv_map = np.where(v > 0, rv_up * wobble, rv_map)
    nip = geo.nipple
    if nip is None:
        dn, half_w, dimple = geo.nipple_len_mm, 4.0 + 0.5 * geo.nipple_len_mm, 0.0
    else:
        dn, half_w, dimple = nip.length_mm, nip.half_width_mm, nip.dimple_mm
    apex = dn - dimple  # where the breast contour (without the nipple) crosses the axis
    depth_e = breast.depth_mm - apex
    w = np.abs(breast.depth_mm - d)
    p = breast.exponent
    if p == 2.0:
        q = (v / rv_map) ** 2 + (w / depth_e) ** 2
        grad = 2.0 * np.sqrt((v / rv_map**2) ** 2 + (w / depth_e**2) ** 2) + 1e-6
    else:
        av = np.abs(v)
        q = (av / rv_map) ** p + (w / depth_e) ** p
        grad = p * np.sqrt((av ** (p - 1) / rv_map**p) ** 2
                           + (w ** (p - 1) / depth_e**p) ** 2) + 1e-6
    dist = (1.0 - q) / grad  # first-order distance to the contour (mm), smooth
    if dn >= 1.0:  # a nipple in profile beyond the contour
        qn = ((d - dn) / dn) ** 2 + (v / half_w) ** 2
        gn = 2.0 * np.sqrt(((d - dn) / dn**2) ** 2 + (v / half_w**2) ** 2) + 1e-6
        dist_n = (1.0 - qn) / gn
        dist = np.maximum(np.where(d >= dn, dist, -1.0), dist_n)
    elif dimple > 0.0:  # inverted: a notch from the contour down to the nipple tip
        qd = ((d + dimple) / dimple) ** 2 + (v / half_w) ** 2
        dist = np.where(qd < 1.0, np.minimum(dist, (qd - 1.0) * dimple), dist)
    dist = dist.astype(np.float32)
    mask = dist > 0
    half = geo.thickness_mm / 2.0
    dc_ = np.clip(dist / half, 0.0, 1.0)
    t = np.sqrt(np.clip(1.0 - (1.0 - dc_) ** 2, 0.0, 1.0))
    t = (t * geo.thickness_mm).astype(np.float32)
    dist = np.maximum(dist, 0.0)

    if tp.texture == "clumped":
        tex, fine = clumped_texture((lh, lw), rng)
    else:
        tex = power_law_noise((lh, lw), tp.texture_beta, rng)
        fine = power_law_noise((lh, lw), 1.6, rng)
    dc = 0.4 * breast.depth_mm
    env = np.exp(-(((d - dc) / (0.45 * breast.depth_mm)) ** 2) - (v / (0.6 * rv)) ** 2)
    bias = -1.2 + 2.4 * tp.density
    g = 1.0 / (1.0 + np.exp(-((bias + 1.8 * env - 0.9) + 1.1 * tex + 0.35 * fine) / 0.35))
    g = g * (0.35 + 0.65 * tp.density + 0.0 * env)
    A = t * (tp.mu_fat + (tp.mu_gland - tp.mu_fat) * g)
    skin = max(tp.skin_mm, 0.3)
    if nip is not None and nip.areola_skin_factor > 1.0 and nip.areola_radius_mm > 0.0:
        areola = np.exp(-((np.hypot(d - apex, v) / nip.areola_radius_mm) ** 4))
        skin = skin * (1.0 + (nip.areola_skin_factor - 1.0) * areola)
    A += 0.25 * np.exp(-dist / skin) * mask  # skin line
    if tp.pectoral is not None:
        xp, yp, bow = tp.pectoral
        edge = yp * np.clip(1.0 - X / xp, 0.0, 1.0) ** bow
        pec = (edge > Y) & mask
        soft = np.clip((edge - Y) / 3.0, 0.0, 1.0) * pec
        A += soft * t * (tp.mu_gland * 1.15 - tp.mu_fat)
    return A.astype(np.float32), mask


# --------------------------------------------------------------------------- contrast


def contrast_layer(phantom: Phantom, geo: ViewGeometry, shape: tuple[int, int],
                   spacing: float, rng: np.random.Generator
                   ) -> tuple[np.ndarray, dict[int, list[float]], list[tuple[str, list[float]]]]:
    """Path length of contrast (mm) at full resolution, and the lesion and mimic boxes.

    Air bubbles without fixed spheres are placed anew in this view; an air bubble with
    spheres (the air pocket at the cannula tip) stays where the phantom puts it. The cannula
    and tissue structures are drawn afterwards (:mod:`training.synth.cannula`,
    :mod:`training.synth.texture`).

    Returns:
        ``(c, lesion_boxes, mimic_boxes)`` with ``c`` ``(rows, cols)`` float32 mm of
        contrast-equivalent material, boxes in canonical pixels.
    """
    c = np.zeros(shape, np.float32)
    ducts = phantom.ducts
    for br in ducts.branches:
        n = br.fill_until
        if n < 2:
            continue
        xy = geo.to_plane(br.points[:n]) / spacing
        r = br.radii[:n] / spacing
        draw_capsules(c, xy[:-1], xy[1:], r[:-1], r[1:])
    for s in ducts.terminal_units:
        _max_sphere(c, spheres_px([s], geo, spacing)[0], 0.7)
    mimic_boxes: list[tuple[str, list[float]]] = []
    voids: list[tuple[float, float, float]] = []
    for m in phantom.mimics:
        if m.kind == "air_bubble":
            spheres = m.spheres or bubble_spheres(ducts, m, rng)
            circles = spheres_px(spheres, geo, spacing)
            for circ in circles:
                _max_sphere(c, (circ[0], circ[1], circ[2] + 0.25 / spacing), 1.0)
                voids.append(circ)
                mimic_boxes.append(("air_bubble", union_box([circ], shape)))
        else:
            circles = spheres_px(m.spheres, geo, spacing)
            strength = 0.45 if m.kind == "extravasation" else 1.0
            for circ in circles:
                _max_sphere(c, circ, strength)
            mimic_boxes.append((m.kind, union_box(circles, shape)))
    lesion_boxes: dict[int, list[float]] = {}
    for les in phantom.lesions:
        _max_sphere(c, spheres_px([les.distension], geo, spacing)[0], 1.0)
    for les in phantom.lesions:
        circles = spheres_px(les.spheres, geo, spacing)
        voids.extend(circles)
        lesion_boxes[les.lesion_id] = union_box(circles, shape)
    for circ in voids:
        res = sphere_thickness(shape, *circ)
        if res is not None:
            (r0, r1, c0, c1), th = res
            np.maximum(c[r0:r1, c0:c1] - th, 0.0, out=c[r0:r1, c0:c1])
    c *= spacing  # pixels of path -> mm
    return c, lesion_boxes, mimic_boxes


def _max_sphere(c: np.ndarray, circ: tuple[float, float, float], strength: float) -> None:
    res = sphere_thickness(c.shape, *circ)
    if res is not None:
        (r0, r1, c0, c1), th = res
        np.maximum(c[r0:r1, c0:c1], th * strength, out=c[r0:r1, c0:c1])


# --------------------------------------------------------------------------- exposure


def _contrast_window(c: np.ndarray) -> tuple[slice, slice]:
    """The smallest row/column window holding every non-zero contrast pixel."""
    rows = np.flatnonzero(c.any(axis=1))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    cols = np.flatnonzero(c[rows[0]: rows[-1] + 1].any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def log_attenuation(A_low: np.ndarray, mask_low: np.ndarray, a_ref: float,
                    contrast_mm: np.ndarray, mu_contrast: float, tp: TissueParams,
                    counts: float, spacing: float, rng: np.random.Generator,
                    noise_corr: float) -> np.ndarray:
    """One noisy projection as log attenuation ``log(counts) - log(I)`` relative to the
    breast median ``a_ref`` (float32 ``(rows, cols)``, ``rows x cols`` of ``contrast_mm``).

    The physics of :func:`expose` (primary, scatter on a 16x coarser grid, Poisson-Gaussian
    noise, correlated between neighbouring pixels when ``noise_corr > 0``) with ``counts``
    photons per pixel behind the median breast; also each projection of a tomosynthesis
    sweep (:mod:`training.synth.dbt`).
    """
    shape = contrast_mm.shape
    prim_low = np.exp(-(A_low - a_ref)).astype(np.float32)
    coarse = prim_low * mask_low
    sig = tp.scatter_sigma_mm / (spacing * LOWRES * 4)
    lh, lw = coarse.shape
    padded = np.pad(coarse, ((0, -lh % 4), (0, -lw % 4)))
    small = padded.reshape(padded.shape[0] // 4, 4, padded.shape[1] // 4, 4).mean((1, 3))
    scat_low = upsample(tp.spr * ndimage.gaussian_filter(small, sig, mode="constant"),
                        (lh, lw))
    flu = upsample(prim_low + scat_low, shape)
    rs, cs = _contrast_window(contrast_mm)
    if rs.stop > rs.start:
        prim = upsample_window(prim_low, shape, rs, cs)
        flu[rs, cs] -= prim * (1.0 - np.exp(-mu_contrast * contrast_mm[rs, cs]))
    flu *= np.float32(counts)
    noise = rng.standard_normal(shape, dtype=np.float32)
    if noise_corr > 0.0:
        kc = np.float32(noise_corr)
        noise[:, 1:] += kc * noise[:, :-1]
        noise[1:, :] += kc * noise[:-1, :]
        noise *= np.float32(1.0 / (1.0 + kc * kc))
    noise *= np.sqrt(flu + np.float32(tp.electronic_sigma**2))
    flu += noise
    np.maximum(flu, 0.5, out=flu)
    P = np.log(flu)
    np.subtract(np.float32(np.log(counts)), P, out=P)
    return P


def expose(A_low: np.ndarray, mask_low: np.ndarray, contrast_mm: np.ndarray,
           mu_contrast: float, tp: TissueParams, spacing: float, bits_stored: int,
           rng: np.random.Generator, proc: ProcessingSpec) -> np.ndarray:
    """Form the For Presentation image from attenuation; returns uint16 ``(rows, cols)``.

    Primary: ``exp(-(A_tissue - A_ref)) * exp(-mu_c * c)`` (relative to the breast median
    ``A_ref``); scatter: the masked primary blurred by ``scatter_sigma_mm`` times the SPR,
    computed on a 4x coarser grid still; counts ``N`` per pixel behind the median breast;
    noise: Gaussian with variance ``fluence + sigma_e^2`` (Poisson-Gaussian), correlated
    between neighbouring pixels when ``proc.noise_corr > 0``; then the processing ``proc``.
    """
    a_ref = float(np.median(A_low[mask_low])) if mask_low.any() else 0.0
    P = log_attenuation(A_low, mask_low, a_ref, contrast_mm, mu_contrast, tp, tp.counts,
                        spacing, rng, proc.noise_corr)
    return presentation_lut(P, bits_stored, proc, mask_low)


def _lut_curve(x: np.ndarray, proc: ProcessingSpec) -> np.ndarray:
    """The presentation curve on ``x`` in [0, 1] -> [0, 1], monotone (not hist_eq)."""
    if proc.lut == "sigmoid":
        s, c0 = proc.lut_param, proc.sigmoid_center
        f = 1.0 / (1.0 + np.exp(-s * (x - c0)))
        f0, f1 = 1.0 / (1.0 + np.exp(s * c0)), 1.0 / (1.0 + np.exp(-s * (1.0 - c0)))
        return (f - f0) / (f1 - f0)
    if proc.lut == "log":
        return np.log1p(proc.lut_param * x) / np.log1p(proc.lut_param)
    if proc.lut == "gamma":
        return x ** proc.lut_param
    return x


def presentation_lut(P: np.ndarray, bits: int, proc: ProcessingSpec,
                     mask_low: np.ndarray | None = None,
                     window: tuple[float, float] | None = None) -> np.ndarray:
    """Vendor-like For Presentation mapping of log attenuation ``P`` to stored values.

    Steps (``proc``): peripheral equalisation (the thin breast edge, where the local mean of
    ``P`` inside ``mask_low`` falls below the inner breast's level, is lifted by
    ``periph_eq`` times the shortfall), unsharp masking, then a window that keeps air dark and
    the densest contrast just under saturation, mapped through the LUT curve (a table).
    ``window`` = ``(lo, hi)`` in units of ``P`` replaces the window drawn from ``P``'s 1st
    and 99.97th percentiles (plus 5 % headroom). ``P`` is modified in place.
    """
    if proc.periph_eq > 0.0 and mask_low is not None and mask_low.any():
        f = 4  # on a grid 4x coarser than the low-resolution one (16x the full one)
        small = P[::LOWRES * f, ::LOWRES * f]
        m = mask_low[::f, ::f][: small.shape[0], : small.shape[1]].astype(np.float32)
        small = small[: m.shape[0], : m.shape[1]]
        sig = max(small.shape) / 40.0
        num = ndimage.gaussian_filter(small * m, sig)
        den = ndimage.gaussian_filter(m, sig)
        local = num / np.maximum(den, 1e-3)
        ref = float(np.percentile(local[m > 0], 60.0)) if (m > 0).any() else 0.0
        boost = proc.periph_eq * np.clip(ref - local, 0.0, None) * np.clip(den * 2.0, 0, 1)
        boost = upsample(ndimage.gaussian_filter(boost, 0.7).astype(np.float32),
                         mask_low.shape)[: mask_low.shape[0], : mask_low.shape[1]]
        boost *= mask_low  # only the breast is lifted, not the air around it
        P += upsample(boost, P.shape)
    if proc.usm_gain > 0.0:
        small = P[::LOWRES, ::LOWRES]
        blur = upsample(ndimage.gaussian_filter(small, proc.usm_sigma_px), P.shape)
        k = np.float32(proc.usm_gain)
        blur -= P
        blur *= k
        P -= blur  # P + k * (P - lowpass(P))
    sample = P[::7, ::7]
    if window is None:
        lo = float(np.percentile(sample, 1.0))
        hi = float(np.percentile(sample, 99.97))
        hi = hi + 0.05 * (hi - lo)
    else:
        lo, hi = window
    maxv = float(2**bits - 1)
    lo_out = proc.lo_out * maxv
    levels = 2**bits
    x = np.linspace(0.0, 1.0, levels)
    curve = _lut_curve(x, proc)
    if proc.lut == "hist_eq":  # equalise the breast's histogram (not the air), blend linear
        idx = np.clip((sample.ravel() - lo) * ((levels - 1) / max(hi - lo, 1e-6)), 0,
                      levels - 1).astype(np.int64)
        idx = idx[idx > levels // 10]
        if idx.size:
            hist = np.bincount(idx, minlength=levels).astype(np.float64)
            cdf = np.cumsum(hist) / hist.sum()
            eq = 0.1 + 0.9 * cdf
            eq[: levels // 10] = x[: levels // 10]  # air and skin: linear up to 0.1
            curve = proc.lut_param * eq + (1.0 - proc.lut_param) * x
    table = np.clip(curve, 0.0, 1.0) * (maxv * 0.97 - lo_out) + lo_out
    table = np.rint(table).astype(np.uint16)
    P -= np.float32(lo)
    P *= np.float32((levels - 1) / max(hi - lo, 1e-6))
    np.clip(P, 0, levels - 1, out=P)
    return table[P.astype(np.uint16)]
