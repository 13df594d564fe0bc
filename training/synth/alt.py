"""The ``alt`` image family: procedures that differ from the standard simulator's, for a
validation/test set in a style that training never sees.

What differs from ``standard`` (see :mod:`training.synth.variety` for the drawn values):

* duct tree: a strictly dichotomous, Murray-law tree of long, nearly straight segments whose
  branching plane turns by about 90 degrees at every generation (instead of the tortuous
  random walk with 2-3 children);
* breast: a superellipsoid (exponent 2.3-3: flatter anterior curve, squarer outline), no
  nipple protrusion, no areola;
* tissue: clumped fibroglandular texture (thresholded, smoothed white noise) instead of
  power-law noise;
* cannula: a straight radiopaque line with a tip marker, no hub, no curved tubing;
* processing: strong peripheral equalisation, a steep sigmoid LUT and correlated noise.

Same breast frame and conventions as :mod:`training.synth.anatomy` (mm, ``(d, u, l)``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from training.synth.anatomy import (
    Branch,
    BreastShape,
    DuctSystem,
    coronal_direction,
    terminal_units,
    unit_vector,
)


def sample_breast_alt(rng: np.random.Generator, max_depth_mm: float,
                      max_radius_mm: float = 1e9) -> BreastShape:
    """A superellipsoid breast: depth 60-135 mm, radii 55-95 mm, exponent 2.3-3."""
    depth = float(min(rng.uniform(60.0, 135.0), max_depth_mm))
    r_sup = float(min(rng.uniform(55.0, 95.0), max_radius_mm))
    r_lat = float(min(r_sup * rng.uniform(0.95, 1.15), max_radius_mm * 1.05))
    return BreastShape(depth_mm=depth, radius_sup_mm=r_sup, radius_lat_mm=r_lat,
                       exponent=float(rng.uniform(2.3, 3.0)))


def _straight(start: np.ndarray, direction: np.ndarray, length: float, r0: float, r1: float,
              breast: BreastShape, rng: np.random.Generator, step: float = 1.5
              ) -> tuple[np.ndarray, np.ndarray]:
    """A nearly straight segment (1 degree jitter per step), cut at the breast boundary."""
    n = max(int(np.ceil(length / step)), 2)
    pts = [start.copy()]
    d = direction.copy()
    for _ in range(n):
        d = unit_vector(d + np.deg2rad(1.0) * rng.normal(size=3))
        nxt = pts[-1] + d * (length / n)
        if not bool(breast.inside(nxt, margin=0.93)):
            break
        pts.append(nxt)
    pts_a = np.array(pts)
    radii = np.linspace(r0, r1, len(pts_a))
    return pts_a, radii


def grow_duct_tree_alt(breast: BreastShape, rng: np.random.Generator,
                       max_branches: int = 400) -> DuctSystem:
    """Grow a dichotomous Murray-law duct tree from the nipple.

    Main duct: a short nipple segment (radius 0.4-0.7 mm), a cylindrical sinus (radius
    1.0-1.8 mm, linear ramps) and a straight main duct (radius 0.8-1.5 mm, 25-45 % of the
    depth). Each branch ends in exactly two children with ``r1^3 + r2^3 = r^3`` (flow split
    0.3-0.7), symmetric half angles 20-40 degrees in a plane turned 70-110 degrees from the
    parent's, length 0.7-0.95 of the parent's; stops below 0.1 mm radius, at 5-7
    generations, ``max_branches`` branches or the breast boundary.
    """
    psi = float(rng.uniform(0.0, 360.0))
    tilt = np.deg2rad(rng.uniform(5.0, 30.0))
    axis = unit_vector(np.array([np.cos(tilt), 0.0, 0.0]) + np.sin(tilt) * coronal_direction(psi))
    max_gen = int(rng.integers(5, 8))
    ectasia = bool(rng.random() < 0.1)
    ect = float(rng.uniform(1.3, 2.0)) if ectasia else 1.0
    r_nip, r_sinus = float(rng.uniform(0.4, 0.7)), float(rng.uniform(1.0, 1.8)) * min(ect, 1.5)
    r_main = float(rng.uniform(0.8, 1.5)) * ect
    l_nip, l_sinus = float(rng.uniform(2.0, 5.0)), float(rng.uniform(6.0, 12.0))
    l_main = float(rng.uniform(0.25, 0.45)) * breast.depth_mm
    total = l_nip + l_sinus + l_main
    s = np.linspace(0.0, total, max(int(total / 1.0), 8))
    main_dir = unit_vector(np.array([1.0, 0.0, 0.0]) * 0.6 + axis * 0.4)
    pts = s[:, None] * main_dir[None, :]
    radii = np.interp(s, [0.0, l_nip, l_nip + 2.0, l_nip + l_sinus - 2.0, l_nip + l_sinus,
                          total], [r_nip, r_nip, r_sinus, r_sinus, r_main, r_main * 0.9])
    keep = np.asarray(breast.inside(pts, margin=0.93)) | (s < l_nip + l_sinus)
    n_keep = int(np.argmin(keep)) if not keep.all() else len(s)
    branches = [Branch(points=pts[: max(n_keep, 4)], radii=radii[: max(n_keep, 4)],
                       generation=0, parent=None)]
    plane = unit_vector(np.cross(main_dir, np.array([0.0, 1.0, 0.0]) + 0.1))
    planes = {0: plane}
    queue = [0]
    while queue and len(branches) < max_branches:
        bi = queue.pop(0)
        parent = branches[bi]
        if parent.generation >= max_gen:
            continue
        end_dir = unit_vector(parent.points[-1] - parent.points[-2])
        turn = np.deg2rad(rng.uniform(70.0, 110.0))
        p0 = planes[bi] - end_dir * float(planes[bi] @ end_dir)
        p0 = unit_vector(p0) if np.linalg.norm(p0) > 1e-6 \
            else unit_vector(np.cross(end_dir, [1.0, 0, 0]))
        side = unit_vector(np.cos(turn) * p0 + np.sin(turn) * np.cross(end_dir, p0))
        f = float(rng.uniform(0.3, 0.7))
        r_par = float(parent.radii[-1])
        half = np.deg2rad(rng.uniform(20.0, 40.0))
        for sign, frac in ((1.0, f), (-1.0, 1.0 - f)):
            if len(branches) >= max_branches:
                break
            r0 = r_par * frac ** (1.0 / 3.0)
            if r0 < 0.1:
                continue
            # the thinner child turns away more (flow-weighted angles)
            ang = half * (1.5 - frac) * 1.2
            d = unit_vector(np.cos(ang) * end_dir + sign * np.sin(ang) * side)
            if float(d @ axis) < 0.0:  # keep heading away from the nipple
                d = unit_vector(d + 0.6 * axis)
            length = parent.length_mm * float(rng.uniform(0.7, 0.95)) if parent.generation \
                else l_main * float(rng.uniform(0.45, 0.7))
            cpts, cr = _straight(parent.points[-1], d, length, r0, r0 * 0.92, breast, rng)
            if len(cpts) < 2:
                continue
            branch = Branch(points=cpts, radii=np.maximum(cr, 0.08),
                            generation=parent.generation + 1, parent=bi)
            parent.children.append(len(branches))
            planes[len(branches)] = side
            branches.append(branch)
            queue.append(len(branches) - 1)
    acinar = bool(rng.random() < 0.25)
    units = terminal_units(branches, rng) if acinar else []
    return DuctSystem(branches=branches, territory_psi_deg=psi, ectasia=ectasia,
                      irregular_walls=False, acinar_filling=acinar, terminal_units=units)


def clumped_texture(shape: tuple[int, int], rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Two zero-mean unit-variance fields for the fibroglandular fraction (alt style):
    clumps (smoothed white noise, thresholded softly, smoothed again) and a finer field.

    Args:
        shape: ``(rows, cols)`` of the coarse grid.
    """
    scale = max(shape) / 160.0  # clump size follows the field size
    base = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2.0 * scale)
    base /= max(float(base.std()), 1e-9)
    clumps = ndimage.gaussian_filter(np.tanh(1.2 * (base - 0.2)), 0.8 * scale)
    fine = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.7 * scale)
    out = []
    for f in (clumps, fine):
        f = f - f.mean()
        out.append((f / max(float(f.std()), 1e-9)).astype(np.float32))
    return out[0], out[1]
