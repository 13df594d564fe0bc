"""The cannula in the nipple and its contrast-filled tubing, drawn into a view's contrast
layer as contrast-equivalent path length (mm).

Canonical image plane as in :mod:`training.synth.render`: ``x`` mm from the chest-wall edge
towards the nipple, ``y`` mm downwards; the nipple tip is at ``geo.nipple_xy_mm`` and the
cannula leaves the breast towards increasing ``x``.
"""

from __future__ import annotations

import numpy as np

from training.synth.anatomy import Branch, Sphere
from training.synth.render import ViewGeometry, draw_capsules
from training.synth.variety import CannulaSpec


def _tube(c: np.ndarray, pts_mm: np.ndarray, r0_mm: float, r1_mm: float, scale: float,
          spacing: float) -> None:
    """Max-composite a tube along the polyline ``pts_mm`` ``(K, 2)`` into ``c`` (mm)."""
    r = np.linspace(r0_mm, r1_mm, len(pts_mm)) / spacing
    p = pts_mm / spacing
    draw_capsules(c, p[:-1], p[1:], r[:-1], r[1:], scale=scale * spacing)


def draw_cannula(c: np.ndarray, geo: ViewGeometry, spacing: float, spec: CannulaSpec,
                 rng: np.random.Generator) -> None:
    """Draw the cannula of ``spec`` into ``c`` (``(rows, cols)`` float32, mm of contrast).

    ``metal``: a thin dense shaft from the tip (``insert_mm`` behind the nipple tip) out of
    the nipple, a hub, then tubing; ``catheter``: a wider, fainter plastic shaft with a
    tapered tip, a smaller hub, tubing; ``alt_line``: a straight line to the image border
    with a dense 1.5-3 mm tip marker. Tubing follows a quadratic, S-shaped or straight path
    to a point outside the field (drawn anew in each view: the tubing moves).
    """
    xn, yn = geo.nipple_xy_mm
    tip = np.array([xn - spec.insert_mm, yn])
    ang = np.deg2rad(rng.uniform(-35, 35))
    u = np.array([np.cos(ang), np.sin(ang)])
    if spec.kind == "alt_line":
        ang = np.deg2rad(rng.uniform(-15, 15))
        u = np.array([np.cos(ang), np.sin(ang)])
        far = tip + u * (c.shape[1] * spacing + 50.0)
        line = np.linspace(0.0, 1.0, 80)[:, None] * (far - tip - u * 2.0) + tip + u * 2.0
        _tube(c, line, spec.shaft_radius_mm, spec.shaft_radius_mm, spec.shaft_scale, spacing)
        _tube(c, np.stack([tip, tip + u * float(rng.uniform(1.5, 3.0))]),
              spec.shaft_radius_mm * 0.8, spec.shaft_radius_mm * 0.8, 3.0, spacing)
        return
    length = spec.insert_mm + float(rng.uniform(6.0, 14.0))
    p1 = tip + length * u
    if spec.kind == "metal":
        _tube(c, np.stack([tip, p1]), spec.shaft_radius_mm, spec.shaft_radius_mm,
              spec.shaft_scale, spacing)
    else:  # plastic catheter: tapered tip, contrast inside
        taper = tip + u * 1.5
        _tube(c, np.stack([tip, taper]), spec.shaft_radius_mm * 0.55, spec.shaft_radius_mm,
              spec.shaft_scale, spacing)
        _tube(c, np.stack([taper, p1]), spec.shaft_radius_mm, spec.shaft_radius_mm,
              spec.shaft_scale, spacing)
    start = p1
    if spec.hub_radius_mm > 0.3:
        hub = p1 + float(rng.uniform(3.0, 7.0)) * u
        _tube(c, np.stack([p1, hub]), spec.hub_radius_mm, spec.hub_radius_mm * 0.9,
              spec.hub_scale, spacing)
        start = hub
    side = float(rng.choice([-1.0, 1.0]))
    end = start + np.array([rng.uniform(40, 120), side * rng.uniform(40, 200)])
    s = np.linspace(0.0, 1.0, 100)[:, None]
    if spec.tubing_path == "straight":
        pts = (1 - s) * start + s * (start + u * 300.0)
    elif spec.tubing_path == "s_curve":
        c1 = start + u * rng.uniform(10, 30) + np.array([0.0, -side * rng.uniform(10, 40)])
        c2 = start + np.array([rng.uniform(20, 60), side * rng.uniform(20, 80)])
        pts = ((1 - s) ** 3 * start + 3 * (1 - s) ** 2 * s * c1 + 3 * (1 - s) * s * s * c2
               + s**3 * end)
    else:
        ctrl = start + np.array([rng.uniform(10, 40), rng.uniform(-30, 30)])
        pts = (1 - s) ** 2 * start + 2 * (1 - s) * s * ctrl + s * s * end
    _tube(c, pts, spec.tubing_radius_mm, spec.tubing_radius_mm, spec.tubing_scale, spacing)


def air_pocket(main: Branch, spec: CannulaSpec) -> Sphere | None:
    """The air pocket at the cannula tip (breast frame, mm): a sphere of radius
    ``spec.air_pocket_mm`` on the main duct just beyond the tip, or ``None``."""
    if spec.air_pocket_mm <= 0.0:
        return None
    seg = np.linalg.norm(np.diff(main.points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    i = int(np.searchsorted(arc, spec.insert_mm + spec.air_pocket_mm * 0.8))
    if i >= len(main.points):
        return None
    return Sphere(main.points[i].copy(), spec.air_pocket_mm)
