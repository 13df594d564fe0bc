"""Fine tissue structures beyond the power-law texture, drawn at full resolution into a
view's contrast layer as contrast-equivalent path length (mm):

* fibrous strands / Cooper's ligaments: thin (0.1-0.35 mm radius) curved bright lines,
  8-45 mm long, roughly converging on the nipple;
* blood vessels: long (40-130 mm) thin (0.4-1.3 mm radius) gently curving tubes from the
  chest wall towards the nipple, not contrast-filled, so much fainter than a filled duct;
* benign calcifications: tiny bright dots (0.08-0.35 mm radius), scattered or in a loose
  group;
* a skin fold: a bright 0.8-2.5 mm band just inside the contour over part of its length.

Each structure's peak extra attenuation (dimensionless) is converted to contrast-equivalent
mm by dividing by the case's contrast attenuation coefficient, so it appears with the same
strength whatever the contrast concentration. Positions are drawn in the view's section of
the breast (``d`` behind the nipple, ``v`` along the image's upward axis, mm) and mapped to
the canonical plane like :meth:`~training.synth.render.ViewGeometry.to_plane`.
"""

from __future__ import annotations

import numpy as np

from training.synth.anatomy import BreastShape
from training.synth.render import ViewGeometry, draw_capsules, sphere_thickness
from training.synth.variety import StructureSpec


def _section_radius(breast: BreastShape, geo: ViewGeometry) -> float:
    a = np.deg2rad(geo.angle_deg)
    return float(np.hypot(np.cos(a) * breast.radius_lat_mm, np.sin(a) * breast.radius_sup_mm))


def _inside(breast: BreastShape, rv: float, d: np.ndarray, v: np.ndarray, margin: float
            ) -> np.ndarray:
    e = breast.exponent
    q = np.abs(v / rv) ** e + np.abs((breast.depth_mm - d) / breast.depth_mm) ** e
    return (q <= margin**e) & (d >= 0.0) & (d <= breast.depth_mm)


def _sample_inside(breast: BreastShape, rv: float, rng: np.random.Generator, margin: float,
                   d_range: tuple[float, float] = (0.05, 0.95)) -> np.ndarray:
    """One point ``(d, v)`` mm inside the view's section (rejection sampling)."""
    for _ in range(50):
        d = rng.uniform(*d_range) * breast.depth_mm
        v = rng.uniform(-1.0, 1.0) * rv
        if bool(_inside(breast, rv, np.array(d), np.array(v), margin)):
            return np.array([d, v])
    return np.array([0.5 * breast.depth_mm, 0.0])


def _to_px(geo: ViewGeometry, dv: np.ndarray, spacing: float) -> np.ndarray:
    x = geo.nipple_xy_mm[0] - geo.expand * dv[..., 0]
    y = geo.nipple_xy_mm[1] - geo.expand * dv[..., 1]
    return np.stack([x, y], axis=-1) / spacing


def _curve(p0: np.ndarray, p2: np.ndarray, bend: float, n: int) -> np.ndarray:
    """Quadratic Bezier from ``p0`` to ``p2`` with the control point pushed sideways by
    ``bend`` times the chord length; ``(n, 2)``."""
    mid = (p0 + p2) / 2.0
    chord = p2 - p0
    ctrl = mid + bend * np.array([-chord[1], chord[0]])
    s = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - s) ** 2 * p0 + 2 * (1 - s) * s * ctrl + s * s * p2


def _draw_line(c: np.ndarray, breast: BreastShape, rv: float, geo: ViewGeometry,
               dv: np.ndarray, r_mm: float, amp: float, mu_c: float, spacing: float,
               margin: float = 0.97) -> None:
    """Draw the polyline ``dv`` (section mm) as a tube of radius ``r_mm`` with peak extra
    attenuation ``amp``, keeping only the part inside the breast shrunk by ``margin``."""
    ok = _inside(breast, rv, dv[:, 0], dv[:, 1], margin)
    seg = ok[:-1] & ok[1:]
    if not seg.any():
        return
    px = _to_px(geo, dv, spacing)
    r = np.full(len(px), r_mm / spacing)
    scale = amp / (mu_c * 2.0 * r_mm)  # centre path 2 r (mm) x scale x mu_c = amp
    draw_capsules(c, px[:-1][seg], px[1:][seg], r[:-1][seg], r[1:][seg], scale=scale * spacing,
                  min_r=0.5)


def add_structures(c: np.ndarray, breast: BreastShape, geo: ViewGeometry, spacing: float,
                   mu_contrast: float, spec: StructureSpec, rng: np.random.Generator) -> None:
    """Max-composite the structures of ``spec`` into ``c`` (``(rows, cols)`` mm of contrast).

    Drawn after the duct tree and its voids, so a ligament may cross a duct or a lesion as
    it would in projection, but never fills a defect (its attenuation is far below the
    contrast's)."""
    rv = _section_radius(breast, geo)
    mu = max(mu_contrast, 1e-3)
    for _ in range(spec.ligaments):
        p0 = _sample_inside(breast, rv, rng, 0.92)
        length = float(rng.uniform(8.0, 45.0))
        to_nipple = -p0 / max(float(np.linalg.norm(p0)), 1e-6)
        ang = rng.uniform(-0.7, 0.7)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        p2 = p0 + rot @ to_nipple * length
        pts = _curve(p0, p2, float(rng.uniform(-0.25, 0.25)), 12)
        _draw_line(c, breast, rv, geo, pts, float(rng.uniform(0.1, 0.35)),
                   spec.ligament_amp * float(rng.uniform(0.5, 1.0)), mu, spacing)
    for _ in range(spec.vessels):
        p0 = _sample_inside(breast, rv, rng, 0.9, (0.75, 0.98))
        length = float(rng.uniform(40.0, 130.0))
        target = np.array([rng.uniform(0.0, 0.3) * breast.depth_mm,
                           rng.uniform(-0.7, 0.7) * rv])
        p2 = p0 + (target - p0) / max(float(np.linalg.norm(target - p0)), 1e-6) * length
        pts = _curve(p0, p2, float(rng.uniform(-0.2, 0.2)), 30)
        pts = pts + rng.normal(0.0, 0.6, pts.shape).cumsum(axis=0) * 0.3  # gentle wiggle
        r0 = float(rng.uniform(0.4, 1.3))
        _draw_line(c, breast, rv, geo, pts, r0, spec.vessel_amp, mu, spacing)
    if spec.calcifications:
        group = rng.random() < 0.4
        centre = _sample_inside(breast, rv, rng, 0.85)
        for _ in range(spec.calcifications):
            p = centre + rng.normal(0.0, 4.0, 2) if group else _sample_inside(breast, rv, rng,
                                                                                0.9)
            if not bool(_inside(breast, rv, np.array(p[0]), np.array(p[1]), 0.95)):
                continue
            cx, cy = (float(x) for x in _to_px(geo, p, spacing))
            r_mm = float(rng.uniform(0.08, 0.35))
            res = sphere_thickness(c.shape, cx, cy, max(r_mm / spacing, 0.6))
            if res is None:
                continue
            (r0_, r1_, c0_, c1_), th = res
            mu_ca = float(rng.uniform(1.5, 4.0))  # calcium at mammographic energies, 1/mm
            val = th * (spacing * mu_ca / mu) * min(1.0, (r_mm / spacing / 0.6) ** 2)
            np.maximum(c[r0_:r1_, c0_:c1_], val, out=c[r0_:r1_, c0_:c1_])
    if spec.skin_fold:
        t = np.linspace(rng.uniform(-1.4, -0.6), rng.uniform(0.6, 1.4), 40)
        t = t if rng.random() < 0.5 else t[: len(t) // 2]
        e = breast.exponent
        inset = float(rng.uniform(2.0, 8.0))
        cos_t, sin_t = np.cos(t), np.sin(t)
        w = (breast.depth_mm - inset) * np.sign(cos_t) * np.abs(cos_t) ** (2.0 / e)
        v = (rv - inset) * np.sign(sin_t) * np.abs(sin_t) ** (2.0 / e)
        pts = np.stack([breast.depth_mm - w, v], axis=-1)
        _draw_line(c, breast, rv, geo, pts, float(rng.uniform(0.8, 2.5)),
                   float(rng.uniform(0.05, 0.15)), mu, spacing, margin=1.0)
