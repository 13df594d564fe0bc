"""The 3D phantom of one synthetic galactogram case: breast, one contrast-filled duct system,
intraductal lesions and mimics.

Breast frame (uncompressed, millimetres), origin at the nipple tip:

* ``d`` - depth, posterior (from the nipple towards the chest wall), ``0 <= d <= depth_mm``;
* ``u`` - superior (towards the head);
* ``l`` - lateral (towards the axilla of *this* breast, so the frame is the same for left and
  right breasts; laterality only matters when a clock face is stated).

Points are arrays ``(..., 3)`` ordered ``(d, u, l)``. A direction in the coronal plane is given
by the angle ``psi`` (degrees) measured from superior towards lateral: ``psi = 0`` superior,
``psi = 90`` lateral, ``psi = 180`` inferior, ``psi = 270`` medial.

Anatomical ranges follow DOMAIN.md (VICTRE duct trees; papilloma sizes and positions); numbers
marked *assumption* are working assumptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

LesionKind = Literal["round", "lobulated", "irregular"]
MimicKind = Literal["air_bubble", "extravasation", "cyst"]


@dataclass(frozen=True)
class BreastShape:
    """Uncompressed breast: a half ellipsoid (or superellipsoid) with its apex at the nipple.

    A point ``(d, u, l)`` is inside when ``|u/radius_sup|^e + |l/radius_lat|^e +
    |(depth - d)/depth|^e <= 1`` and ``0 <= d <= depth`` (all in mm), ``e = exponent``
    (2: ellipsoid; larger: flatter anterior curve, squarer outline).
    """

    depth_mm: float
    radius_sup_mm: float
    radius_lat_mm: float
    exponent: float = 2.0

    def inside(self, p: np.ndarray, margin: float = 1.0) -> np.ndarray:
        """Whether points ``(..., 3)`` lie inside the breast shrunk by ``margin`` (0-1 scale)."""
        d, u, lat = p[..., 0], p[..., 1], p[..., 2]
        e = self.exponent
        if e == 2.0:
            q = (u / self.radius_sup_mm) ** 2 + (lat / self.radius_lat_mm) ** 2
            q = q + ((self.depth_mm - d) / self.depth_mm) ** 2
            return (q <= margin**2) & (d >= 0) & (d <= self.depth_mm)
        q = np.abs(u / self.radius_sup_mm) ** e + np.abs(lat / self.radius_lat_mm) ** e
        q = q + np.abs((self.depth_mm - d) / self.depth_mm) ** e
        return (q <= margin**e) & (d >= 0) & (d <= self.depth_mm)


@dataclass
class Branch:
    """One duct branch: a polyline of 3D points with a radius at each point.

    Attributes:
        points: ``(K, 3)`` points in the breast frame (mm), from the parent junction outwards.
        radii: ``(K,)`` lumen radius (mm) at each point (filled, i.e. distended by contrast).
        generation: 0 for the main duct, parent + 1 for children.
        parent: index of the parent branch or ``None``.
        fill_until: contrast fills points ``[0, fill_until)``; the rest is not opacified
            (a duct cut off by an obstructing lesion).
    """

    points: np.ndarray
    radii: np.ndarray
    generation: int
    parent: int | None
    children: list[int] = field(default_factory=list)
    fill_until: int = -1

    def __post_init__(self) -> None:
        if self.fill_until < 0:
            self.fill_until = len(self.points)

    @property
    def length_mm(self) -> float:
        """Polyline length (mm)."""
        return float(np.linalg.norm(np.diff(self.points, axis=0), axis=1).sum())


@dataclass
class Sphere:
    """A sphere in the breast frame: ``center`` ``(3,)`` mm and ``radius`` mm."""

    center: np.ndarray
    radius: float


@dataclass
class Lesion:
    """An intraductal filling defect (papilloma-like or malignant), the ground truth.

    Attributes:
        lesion_id: index within the case.
        kind: outline family: ``round``, ``lobulated`` or ``irregular``.
        size_mm: largest diameter of the lesion (mm).
        spheres: the lesion body as a union of spheres (no contrast inside).
        distension: sphere of contrast around the lesion (the duct distended by it); its
            radius exceeds the lesion's by the contrast rim (0 when the lesion obstructs).
        branch / point_index: where on the duct tree the lesion sits.
        cutoff: the lesion obstructs the duct: no contrast distal to it.
        center: ``(3,)`` lesion centre (mm, breast frame).
    """

    lesion_id: int
    kind: LesionKind
    size_mm: float
    spheres: list[Sphere]
    distension: Sphere
    branch: int
    point_index: int
    cutoff: bool
    center: np.ndarray


@dataclass
class Mimic:
    """Something that is not a lesion but may look like one.

    ``air_bubble``: a round void (placed independently in each view, since bubbles move);
    ``extravasation``: contrast outside the ducts, a cloud of small spheres (contrast);
    ``cyst``: a round or oval contrast-filled sac attached to a duct.
    For bubbles, ``spheres`` is empty in the phantom and sampled per view by the renderer,
    except for an air pocket at the cannula tip, whose sphere is fixed in the phantom.
    """

    kind: MimicKind
    spheres: list[Sphere]
    size_mm: float
    count: int = 1


@dataclass
class DuctSystem:
    """One injected duct system: the tree, where it points, and what it contains."""

    branches: list[Branch]
    territory_psi_deg: float
    ectasia: bool
    irregular_walls: bool
    acinar_filling: bool
    terminal_units: list[Sphere]


@dataclass
class Phantom:
    """Everything 3D about a case (same object projected into every view)."""

    breast: BreastShape
    ducts: DuctSystem
    lesions: list[Lesion]
    mimics: list[Mimic]
    contrast_mu_per_mm: float


# --------------------------------------------------------------------------- duct tree


@dataclass(frozen=True)
class TreeParams:
    """Ranges for growing a duct tree (mm unless stated). Defaults follow DOMAIN.md."""

    max_generations: int = 7
    max_branches: int = 400
    min_radius_mm: float = 0.1
    main_length_frac: tuple[float, float] = (0.18, 0.35)  # of the breast depth
    length_ratio: tuple[float, float] = (0.6, 0.85)  # VICTRE: ~0.5; longer reaches deeper
    child_radius_ratio: tuple[float, float] = (0.65, 0.99)
    branch_angle_deg: tuple[float, float] = (18.0, 60.0)
    main_radius_mm: tuple[float, float] = (0.8, 1.6)  # 1.6-3.2 mm diameter when filled
    sinus_radius_mm: tuple[float, float] = (1.0, 2.0)  # lactiferous sinus, 2-4 mm diameter
    territory_half_angle_deg: tuple[float, float] = (25.0, 55.0)
    tortuosity_deg: tuple[float, float] = (4.0, 14.0)  # random-walk step angle
    step_mm: float = 1.2
    trifurcation_p: float = 0.15
    ectasia_p: float = 0.15
    ectasia_factor: tuple[float, float] = (1.4, 2.3)
    irregular_walls_p: float = 0.12
    acinar_filling_p: float = 0.35


def unit_vector(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _perpendicular(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random unit vector perpendicular to unit vector ``v``."""
    while True:
        w = rng.normal(size=3)
        w = w - v * float(w @ v)
        n = float(np.linalg.norm(w))
        if n > 1e-6:
            return w / n


def _rotate_towards(v: np.ndarray, axis_perp: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotate unit ``v`` by ``angle_rad`` in the plane spanned by ``v`` and ``axis_perp``."""
    return unit_vector(np.cos(angle_rad) * v + np.sin(angle_rad) * axis_perp)


def coronal_direction(psi_deg: float) -> np.ndarray:
    """Unit vector in the coronal plane at angle ``psi`` (0 superior, 90 lateral): ``(0,u,l)``."""
    psi = np.deg2rad(psi_deg)
    return np.array([0.0, np.cos(psi), np.sin(psi)])


def grow_duct_tree(breast: BreastShape, rng: np.random.Generator,
                   params: TreeParams | None = None) -> DuctSystem:
    """Grow one duct system from the nipple into a territory of the breast.

    The main duct starts at the nipple (nipple segment, lactiferous sinus, then the main
    duct), heads posteriorly towards a random territory angle, and branches dichotomously
    (sometimes trichotomously) with child radius ``0.65-0.99`` of the parent end radius,
    shorter children, random branching angles and a tortuous random walk, until the radius
    falls under 0.1 mm, 7 generations, 400 branches, or the breast boundary.
    """
    P = params or TreeParams()
    psi = float(rng.uniform(0.0, 360.0))
    half_angle = np.deg2rad(rng.uniform(*P.territory_half_angle_deg))
    tilt = np.deg2rad(rng.uniform(8.0, 35.0))
    axis = unit_vector(np.array([np.cos(tilt), 0.0, 0.0]) + np.sin(tilt) * coronal_direction(psi))
    tort = np.deg2rad(rng.uniform(*P.tortuosity_deg))
    ectasia = bool(rng.random() < P.ectasia_p)
    ect_factor = float(rng.uniform(*P.ectasia_factor)) if ectasia else 1.0
    irregular = bool(rng.random() < P.irregular_walls_p)

    branches: list[Branch] = []
    main = _main_duct(breast, axis, rng, P, ect_factor, tort)
    branches.append(main)
    queue = [0]
    while queue and len(branches) < P.max_branches:
        bi = queue.pop(0)
        parent = branches[bi]
        if parent.generation >= P.max_generations:
            continue
        n_children = 3 if rng.random() < P.trifurcation_p else 2
        end_dir = unit_vector(parent.points[-1] - parent.points[-2])
        base_perp = _perpendicular(end_dir, rng)
        for k in range(n_children):
            if len(branches) >= P.max_branches:
                break
            r0 = float(parent.radii[-1] * rng.uniform(*P.child_radius_ratio))
            if parent.generation + 1 <= 2 and ectasia:
                r0 = max(r0, float(parent.radii[-1]) * 0.85)
            if r0 < P.min_radius_mm:
                continue
            angle = np.deg2rad(rng.uniform(*P.branch_angle_deg))
            if k == 0:
                angle *= 0.5  # the continuing branch bends less
            spin = 2 * np.pi * k / n_children + rng.normal(0.0, 0.4)
            perp = unit_vector(np.cos(spin) * base_perp
                               + np.sin(spin) * np.cross(end_dir, base_perp))
            direction = _rotate_towards(end_dir, perp, float(angle))
            base = parent.length_mm if parent.generation else parent.length_mm * 0.6
            length = base * float(rng.uniform(*P.length_ratio))
            child = _walk_branch(parent.points[-1], direction, length, r0, breast, axis,
                                 half_angle, rng, P, tort, parent.generation + 1, bi, irregular)
            if child is None:
                continue
            parent.children.append(len(branches))
            branches.append(child)
            queue.append(len(branches) - 1)

    acinar = bool(rng.random() < P.acinar_filling_p)
    units = terminal_units(branches, rng) if acinar else []
    return DuctSystem(branches=branches, territory_psi_deg=psi, ectasia=ectasia,
                      irregular_walls=irregular, acinar_filling=acinar, terminal_units=units)


def _main_duct(breast: BreastShape, axis: np.ndarray, rng: np.random.Generator,
               P: TreeParams, ect: float, tort: float) -> Branch:
    """Nipple segment (r ~0.4-0.7 mm, 3-6 mm long), lactiferous sinus, then the main duct."""
    r_nipple = float(rng.uniform(0.35, 0.7))
    r_sinus = float(rng.uniform(*P.sinus_radius_mm)) * min(ect, 1.6)
    r_main = float(rng.uniform(*P.main_radius_mm)) * ect
    l_nipple = float(rng.uniform(3.0, 6.0))
    l_sinus = float(rng.uniform(5.0, 10.0))
    l_main = float(rng.uniform(*P.main_length_frac)) * breast.depth_mm
    total = l_nipple + l_sinus + l_main
    n = max(int(total / 0.8), 8)
    s = np.linspace(0.0, total, n)
    direction = unit_vector(np.array([1.0, 0.0, 0.0]) * 0.7 + axis * 0.3)
    pts = [np.zeros(3)]
    for i in range(1, n):
        if s[i] > l_nipple:
            direction = unit_vector(direction + 0.08 * axis + np.deg2rad(6.0) * 0.5 *
                              _perpendicular(direction, rng) * rng.normal())
        pts.append(pts[-1] + direction * (s[i] - s[i - 1]))
    radii = np.empty(n)
    for i, si in enumerate(s):
        if si < l_nipple:
            radii[i] = r_nipple
        elif si < l_nipple + l_sinus:
            x = (si - l_nipple) / l_sinus  # smooth bulge of the sinus
            radii[i] = r_nipple + (r_sinus - r_nipple) * np.sin(np.pi * min(1.0, x * 1.3)) ** 0.7
            radii[i] = max(radii[i], r_main if x > 0.6 else radii[i])
        else:
            x = (si - l_nipple - l_sinus) / l_main
            radii[i] = r_main * (1.0 - 0.15 * x)
    return Branch(points=np.array(pts), radii=radii, generation=0, parent=None)


def _walk_branch(start: np.ndarray, direction: np.ndarray, length: float, r0: float,
                 breast: BreastShape, axis: np.ndarray, half_angle: float,
                 rng: np.random.Generator, P: TreeParams, tort: float, generation: int,
                 parent: int, irregular: bool) -> Branch | None:
    """A tortuous branch from ``start``: steps of ~1.2 mm, pulled back into the territory
    cone (half angle ``half_angle`` around ``axis``) and stopped at the breast boundary."""
    step = min(P.step_mm, max(length / 3.0, 0.4))
    n = max(int(np.ceil(length / step)), 2)
    pts = [start.copy()]
    d = direction.copy()
    for _ in range(n):
        d = unit_vector(d + np.tan(tort) * rng.normal() * _perpendicular(d, rng))
        nxt = pts[-1] + d * step
        rel = unit_vector(nxt)
        if float(rel @ axis) < np.cos(half_angle):  # leaving the territory: steer back
            d = unit_vector(d + 0.35 * (axis - rel))
            nxt = pts[-1] + d * step
        tries = 0
        while not bool(breast.inside(nxt, margin=0.93)) and tries < 4:
            inward = unit_vector(np.array([min(pts[-1][0], breast.depth_mm * 0.8), 0.0, 0.0])
                           - pts[-1])
            d = unit_vector(d + 0.6 * inward)
            nxt = pts[-1] + d * step
            tries += 1
        if tries == 4:
            break
        pts.append(nxt)
    if len(pts) < 2:
        return None
    pts_a = np.array(pts)
    taper = np.linspace(1.0, float(rng.uniform(0.8, 0.92)), len(pts_a))
    radii = r0 * taper
    if irregular and generation >= 2:
        radii = radii * np.clip(1.0 + rng.normal(0.0, 0.22, len(radii)), 0.55, 1.6)
    radii = np.maximum(radii, P.min_radius_mm * 0.8)
    return Branch(points=pts_a, radii=radii, generation=generation, parent=parent)


def terminal_units(branches: list[Branch], rng: np.random.Generator) -> list[Sphere]:
    """Terminal ductal lobular units at branch ends (acinar filling): 1-2 x 0.5-1 mm blobs."""
    units: list[Sphere] = []
    for b in branches:
        if b.children or b.fill_until < len(b.points):
            continue
        if rng.random() < 0.5:
            continue
        tip = b.points[-1]
        d = unit_vector(b.points[-1] - b.points[-2])
        for _ in range(int(rng.integers(2, 5))):
            c = tip + d * rng.uniform(0.2, 1.0) + rng.normal(0.0, 0.35, 3)
            units.append(Sphere(center=c, radius=float(rng.uniform(0.25, 0.5))))
    return units


def descendants(branches: list[Branch], index: int) -> list[int]:
    """All branch indices below ``index`` (not including it)."""
    out: list[int] = []
    stack = list(branches[index].children)
    while stack:
        i = stack.pop()
        out.append(i)
        stack.extend(branches[i].children)
    return out


def distance_along_tree(branches: list[Branch], index: int, point_index: int) -> float:
    """Path length (mm) from the nipple to point ``point_index`` of branch ``index``."""
    total = 0.0
    b = branches[index]
    seg = np.linalg.norm(np.diff(b.points[: point_index + 1], axis=0), axis=1)
    total += float(seg.sum())
    while b.parent is not None:
        b = branches[b.parent]
        total += b.length_mm
    return total


# --------------------------------------------------------------------------- lesions


@dataclass(frozen=True)
class LesionParams:
    """Ranges for intraductal filling defects (DOMAIN.md: papillomas 2-3 mm typical, under
    1 cm usually, central within 1 cm of the nipple more often than peripheral)."""

    size_mm: tuple[float, float] = (1.5, 15.0)
    central_p: float = 0.6
    multiple_p: float = 0.22
    kind_p: tuple[float, float, float] = (0.45, 0.35, 0.20)  # round, lobulated, irregular
    cutoff_p: float = 0.15
    rim_mm: tuple[float, float] = (0.15, 0.7)


def _sample_size(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Lesion diameter (mm): log-uniform between ``lo`` and ``hi``, weighted to small ones."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _candidate_points(branches: list[Branch], central: bool, size: float
                      ) -> list[tuple[int, int]]:
    """Positions ``(branch, point)`` where a lesion of ``size`` mm may sit."""
    cands: list[tuple[int, int]] = []
    for bi, b in enumerate(branches):
        if b.fill_until < len(b.points):
            continue
        for pi in range(len(b.points)):
            dist = float(np.linalg.norm(b.points[pi]))
            r = float(b.radii[pi])
            if central:
                ok = 6.0 <= dist <= 22.0 and b.generation <= 1
            else:
                ok = dist > 18.0 and r >= 0.15 and (size <= 6.0 or b.generation <= 2)
            if ok and r * 2.0 >= min(size * 0.25, 2.0):
                cands.append((bi, pi))
    return cands


def place_lesions(ducts: DuctSystem, n: int, rng: np.random.Generator,
                  params: LesionParams | None = None) -> list[Lesion]:
    """Place ``n`` filling defects on the duct tree (cut-off lesions stop distal filling)."""
    P = params or LesionParams()
    lesions: list[Lesion] = []
    central_case = bool(rng.random() < P.central_p)
    for i in range(n):
        central = central_case if i == 0 else bool(rng.random() < 0.3)
        hi = P.size_mm[1] if central or rng.random() < 0.3 else min(P.size_mm[1], 6.0)
        size = _sample_size(rng, P.size_mm[0], hi)
        cands = _candidate_points(ducts.branches, central, size)
        if not cands:
            cands = _candidate_points(ducts.branches, not central, size)
        if not cands:
            break
        far = [c for c in cands if all(
            np.linalg.norm(ducts.branches[c[0]].points[c[1]] - les.center)
            > (size + les.size_mm) * 0.75 + 2.0 for les in lesions)]
        if not far:
            continue
        bi, pi = far[int(rng.integers(len(far)))]
        kind_i = int(rng.choice(3, p=np.array(P.kind_p)))
        kind: LesionKind = ("round", "lobulated", "irregular")[kind_i]
        lesions.append(_make_lesion(len(lesions), kind, size, ducts, bi, pi, rng, P,
                                    earlier=lesions))
    return lesions


def _downstream(ducts: DuctSystem, bi: int, pi: int, lesions: list[Lesion]) -> bool:
    """Whether any of ``lesions`` lies distal to point ``pi`` of branch ``bi`` (where a
    cut-off there would leave it in an unfilled duct)."""
    below = set(descendants(ducts.branches, bi))
    return any(les.branch in below or (les.branch == bi and les.point_index > pi)
               for les in lesions)


_LOBES: dict[str, tuple[float, tuple[int, int], tuple[float, float], tuple[float, float]]] = {
    "lobulated": (0.72, (3, 6), (0.45, 0.6), (0.42, 0.6)),
    "irregular": (0.6, (6, 12), (0.5, 0.8), (0.2, 0.45)),
}
"""Lesion bodies built of a core and lobes, by kind: the core radius as a share of the
lesion's radius, the ``[low, high)`` lobe count, and the ``[low, high)`` ranges (shares of
the core radius) of a lobe's centre offset and of its radius."""


def _make_lesion(i: int, kind: LesionKind, size: float, ducts: DuctSystem, bi: int, pi: int,
                 rng: np.random.Generator, P: LesionParams, earlier: list[Lesion] | None = None
                 ) -> Lesion:
    """Build the lesion body (spheres), its contrast rim, and apply a cut-off if drawn.

    A cut-off is not applied where it would stop the filling of a duct holding one of the
    ``earlier`` lesions: an unopacified duct shows no filling defect (the earlier lesion
    would be drawn as a contrast ring with no duct around it)."""
    b = ducts.branches[bi]
    center = b.points[pi].copy()
    radius = size / 2.0
    spheres: list[Sphere] = []
    if kind == "round":
        spheres.append(Sphere(center, radius))
    else:
        core_frac, lobes, offset, lobe_radius = _LOBES[kind]
        core = radius * core_frac
        spheres.append(Sphere(center, core))
        for _ in range(int(rng.integers(*lobes))):
            v = unit_vector(rng.normal(size=3))
            spheres.append(Sphere(center + v * core * rng.uniform(*offset),
                                  core * float(rng.uniform(*lobe_radius))))
    extent = max(float(np.linalg.norm(s.center - center)) + s.radius for s in spheres)
    k = radius / extent  # scale the body so that its largest diameter is exactly ``size``
    spheres = [Sphere(center + (s.center - center) * k, s.radius * k) for s in spheres]
    extent = radius
    cutoff = bool(rng.random() < P.cutoff_p)
    if cutoff and earlier and _downstream(ducts, bi, pi, earlier):
        cutoff = False
    rim = 0.0 if cutoff else float(rng.uniform(*P.rim_mm))
    distension = Sphere(center, max(float(b.radii[pi]), extent + rim))
    if cutoff:
        b.fill_until = pi + 1
        for j in descendants(ducts.branches, bi):
            ducts.branches[j].fill_until = 0
    return Lesion(lesion_id=i, kind=kind, size_mm=float(2 * extent), spheres=spheres,
                  distension=distension, branch=bi, point_index=pi, cutoff=cutoff,
                  center=center)


# --------------------------------------------------------------------------- mimics


def place_mimics(ducts: DuctSystem, rng: np.random.Generator, *, bubble_p: float = 0.3,
                 extravasation_p: float = 0.08, cyst_p: float = 0.1) -> list[Mimic]:
    """Draw the case's mimics: air bubbles (placed per view later), extravasation, cysts."""
    mimics: list[Mimic] = []
    if rng.random() < bubble_p:
        count = int(rng.choice([1, 2, 3, 4, 5], p=[0.3, 0.25, 0.2, 0.15, 0.1]))
        mimics.append(Mimic("air_bubble", [], float(rng.uniform(1.2, 4.0)), count))
    if rng.random() < extravasation_p:
        mimics.append(_extravasation(ducts, rng))
    if rng.random() < cyst_p:
        cyst = _cyst(ducts, rng)
        if cyst is not None:
            mimics.append(cyst)
    return mimics


def _extravasation(ducts: DuctSystem, rng: np.random.Generator) -> Mimic:
    """Contrast leaked around the main duct near the nipple: a cloud of 0.5-2.5 mm spheres."""
    main = ducts.branches[0]
    pi = int(rng.integers(len(main.points) // 4, len(main.points)))
    c0 = main.points[pi]
    extent = float(rng.uniform(4.0, 14.0))
    spheres = [Sphere(c0 + rng.normal(0.0, extent / 2.5, 3), float(rng.uniform(0.5, 2.5)))
               for _ in range(int(rng.integers(12, 40)))]
    return Mimic("extravasation", spheres, 2 * extent)


def _cyst(ducts: DuctSystem, rng: np.random.Generator) -> Mimic | None:
    """A contrast-filled cyst, 3-15 mm, at the end of a filled peripheral branch."""
    ends = [b for b in ducts.branches if not b.children and b.generation >= 2
            and b.fill_until == len(b.points)]
    if not ends:
        return None
    b = ends[int(rng.integers(len(ends)))]
    r = float(rng.uniform(1.5, 7.5))
    d = unit_vector(b.points[-1] - b.points[-2])
    return Mimic("cyst", [Sphere(b.points[-1] + d * r * 0.9, r)], 2 * r)


def bubble_spheres(ducts: DuctSystem, mimic: Mimic, rng: np.random.Generator) -> list[Sphere]:
    """Positions of a view's air bubbles: in the central ducts (generation <= 1), at least
    3 mm behind the nipple tip (inside the breast, not at the orifice); called once per
    view because bubbles move."""
    slots = [(b, i) for b in ducts.branches if b.generation <= 1
             for i in range(len(b.points))
             if i < b.fill_until and float(np.linalg.norm(b.points[i])) >= 3.0]
    if not slots:
        slots = [(b, i) for b in ducts.branches[:1] for i in range(len(b.points))]
    out: list[Sphere] = []
    for _ in range(mimic.count):
        b, i = slots[int(rng.integers(len(slots)))]
        r = float(np.clip(mimic.size_mm / 2 * rng.uniform(0.7, 1.2), 0.5, 2.2))
        out.append(Sphere(b.points[i].copy(), r))
    return out


# --------------------------------------------------------------------------- the case


def clock_hour(point: np.ndarray, laterality: str) -> int:
    """Clock face hour (1-12) of a breast-frame point as if facing the patient.

    12 is superior; 3 o'clock is lateral on the LEFT breast and medial on the RIGHT breast.
    """
    u, lat = float(point[1]), float(point[2])
    psi = np.degrees(np.arctan2(lat, u)) % 360.0  # 0 superior, 90 lateral
    theta = psi if laterality == "L" else (360.0 - psi) % 360.0
    hour = int(np.round(theta / 30.0)) % 12
    return 12 if hour == 0 else hour


def quadrant(point: np.ndarray, laterality: str, *, retroareolar_mm: float = 20.0,
             central_mm: float = 10.0) -> str:
    """BI-RADS region of a point: ``retroareolar`` within ``retroareolar_mm`` of the nipple,
    ``central`` within ``central_mm`` of the nipple axis, else UOQ/UIQ/LOQ/LIQ."""
    d, u, lat = float(point[0]), float(point[1]), float(point[2])
    radial = float(np.hypot(u, lat))
    if d <= retroareolar_mm and radial <= central_mm:
        return "retroareolar"
    if radial <= central_mm:
        return "central"
    upper = u >= 0
    outer = lat >= 0
    return ("U" if upper else "L") + ("O" if outer else "I") + "Q"


def depth_third(point: np.ndarray, breast: BreastShape) -> str:
    """Anterior/middle/posterior third of the nipple-to-chest-wall depth."""
    f = float(point[0]) / breast.depth_mm
    return "anterior" if f < 1 / 3 else ("middle" if f < 2 / 3 else "posterior")


def sample_breast(rng: np.random.Generator, max_depth_mm: float, max_radius_mm: float = 1e9
                  ) -> BreastShape:
    """A breast that fits the detector: depth 45-150 mm and radii 45-100 mm (assumption),
    lateral/superior radius ratio 0.8-1.3, capped at ``max_depth_mm`` and ``max_radius_mm``."""
    depth = float(min(rng.uniform(45.0, 150.0), max_depth_mm))
    r_sup = float(min(rng.uniform(45.0, 100.0), max_radius_mm))
    r_lat = float(min(r_sup * rng.uniform(0.8, 1.3), max_radius_mm * 1.05))
    return BreastShape(depth_mm=depth, radius_sup_mm=r_sup, radius_lat_mm=r_lat)
