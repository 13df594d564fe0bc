"""Geometry of a simulated digital breast tomosynthesis (DBT) view.

Frames of reference (all lengths in mm):

* the breast frame ``(d, u, l)`` of :mod:`training.synth.anatomy` (uncompressed);
* the canonical image plane ``(x, y)`` of :mod:`training.synth.render` (``x`` from the chest
  wall towards the nipple, ``y`` downwards), where :meth:`ViewGeometry.to_plane` puts a point;
* the height ``z`` above the breast support (the detector cover): ``0 <= z <= T`` with ``T``
  the compressed thickness (``ViewGeometry.thickness_mm``).

Compression is along the beam: along the axis ``w = cos(a) * u - sin(a) * l`` (``a`` the
C-arm angle of :class:`~training.synth.render.ViewGeometry`): superior for CC (the detector
is under the breast, the beam runs superior to inferior), medial for ML (detector lateral),
superomedial for MLO. :func:`height_above_support` maps every breast-frame point to ``z`` by
compressing each line parallel to ``w`` through the breast uniformly onto the compressed
tissue thickness at that place (full thickness ``T`` inside, thinning over the ``T / 2``
next to the contour like :func:`~training.synth.render.breast_fields`' thickness profile).
The nipple, on the breast's axis, lies at mid-height ``T / 2``. The breast is treated as the
ellipsoid of its radii (a superellipsoid of the ``alt`` style is approximated by it).

Projection: **parallel beam with shear**. The tube sweeps parallel to the chest wall (as on
clinical systems), i.e. along the canonical ``y`` axis (image rows); projection ``i`` at
angle ``theta_i`` puts a point at ``(x, y, z)`` on the detector at ``(x, y + z *
tan(theta_i))``. Cone-beam magnification (under 10 % at 60 mm over a 650 mm source
distance) and the ``1 / cos(theta)`` stretch of a sphere's shadow are neglected; the tissue
path length grows as ``1 / cos(theta)`` (applied by :mod:`training.synth.dbt`).

Frames: frame ``k`` (1-based, as DICOM numbers them) is the plane at height
``z_k = (k - 0.5) * slice_mm`` for ``k = 1 .. ceil(T / slice_mm)``, so frame 1 is nearest the
breast support and heights increase with the frame number.

Acquisition table: projections and arcs as commonly reported for clinical systems
(Sechopoulos, "A review of breast tomosynthesis. Part I", Med Phys 2013;40:014301): Hologic
15 projections over 15 degrees, GE 9 over 25, Siemens 25 over 50, Fujifilm (HR mode) 15 over
40. Bits stored per vendor are working assumptions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from training.synth.anatomy import BreastShape
from training.synth.render import ViewGeometry
from training.synth.types import DbtAcquisition

DBT_ACQUISITIONS: dict[str, DbtAcquisition] = {
    "hologic": DbtAcquisition("hologic", "HOLOGIC, Inc.", "Selenia Dimensions", 15.0, 15, 10),
    "ge": DbtAcquisition("ge", "GE MEDICAL SYSTEMS", "Senographe Pristina", 25.0, 9, 12),
    "siemens": DbtAcquisition("siemens", "Siemens Healthineers", "MAMMOMAT Revelation", 50.0,
                              25, 12),
    "fujifilm": DbtAcquisition("fujifilm", "FUJIFILM Corporation", "FDR MS-3500", 40.0, 15,
                               12),
}
"""Vendor-like sweeps, keyed by name (see the module docstring for the source)."""

#: Compressed points are kept this fraction of the local half thickness from the surfaces.
_INNER = 0.92


MIN_PROJECTIONS = 3
"""Fewest projections of a sweep: with one or two, every reconstructed plane is the same
image, or two copies of it, and a frame range carries no depth."""

MIN_ARC_DEG = 5.0
"""Narrowest sweep (degrees): below it the planes hardly differ (the depth resolution of a
tomosynthesis sweep falls roughly as 1 / tan(arc / 2)); clinical sweeps span 11-50 degrees."""


def check_sweep(arc_deg: float | None, projections: int | None) -> None:
    """Refuse a sweep that cannot resolve depth: ``projections`` below
    :data:`MIN_PROJECTIONS` or ``arc_deg`` outside ``[MIN_ARC_DEG, 90)`` (``None``: not set).

    Raises:
        ValueError: naming the value and the bound.
    """
    if projections is not None and projections < MIN_PROJECTIONS:
        raise ValueError(f"projections must be >= {MIN_PROJECTIONS} (fewer give planes with "
                         f"no depth), got {projections}")
    if arc_deg is not None and not MIN_ARC_DEG <= arc_deg < 90.0:
        raise ValueError(f"arc_deg must be within [{MIN_ARC_DEG:g}, 90) degrees (a narrower "
                         f"sweep gives planes with no depth), got {arc_deg:g}")


def choose_acquisition(manufacturer: str, rng: np.random.Generator, *,
                       arc_deg: float | None = None, projections: int | None = None
                       ) -> DbtAcquisition:
    """Draw the sweep of one case: one of the table entries of ``manufacturer`` (the 2D
    profile's), or any entry when none matches; ``arc_deg`` / ``projections`` override the
    drawn values (the name then gets a ``custom`` suffix).

    Raises:
        ValueError: the sweep breaks :func:`check_sweep`.
    """
    same = [a for a in DBT_ACQUISITIONS.values()
            if a.manufacturer.split()[0].lower() == manufacturer.split()[0].lower()]
    pool = same or list(DBT_ACQUISITIONS.values())
    acq = pool[int(rng.integers(len(pool)))]
    if arc_deg is None and projections is None:
        return acq
    arc = acq.arc_deg if arc_deg is None else float(arc_deg)
    n = acq.projections if projections is None else int(projections)
    check_sweep(arc, n)
    return DbtAcquisition(f"{acq.name}-custom", acq.manufacturer, acq.model_name, arc, n,
                          acq.bits_stored)


def compression_axis(angle_deg: float) -> np.ndarray:
    """Unit vector ``w`` ``(d, u, l)`` pointing from the breast support towards the
    compression paddle, for C-arm angle ``angle_deg`` (0 CC: superior; 90 ML: medial)."""
    a = np.deg2rad(angle_deg)
    return np.array([0.0, np.cos(a), -np.sin(a)])


def local_thickness(breast: BreastShape, geo: ViewGeometry, p: np.ndarray) -> np.ndarray:
    """Compressed tissue thickness (mm) at the image position of breast-frame points
    ``p`` ``(..., 3)``: ``T`` inside, ``T * sqrt(1 - (1 - dist / (T/2))^2)`` within ``T / 2``
    of the contour, ``dist`` the first-order distance to the view's elliptical section
    (the thickness profile of :func:`~training.synth.render.breast_fields`, without the
    outline's bumps and the nipple)."""
    a = np.deg2rad(geo.angle_deg)
    rv = float(np.hypot(np.cos(a) * breast.radius_lat_mm, np.sin(a) * breast.radius_sup_mm))
    v = p @ geo.v_axis()
    w = np.abs(breast.depth_mm - p[..., 0])
    depth = breast.depth_mm
    q = (v / rv) ** 2 + (w / depth) ** 2
    grad = 2.0 * np.sqrt((v / rv**2) ** 2 + (w / depth**2) ** 2) + 1e-6
    dist = (1.0 - q) / grad
    half = geo.thickness_mm / 2.0
    dc = np.clip(dist / half, 0.0, 1.0)
    return geo.thickness_mm * np.sqrt(np.clip(1.0 - (1.0 - dc) ** 2, 0.0, 1.0))


def height_above_support(p: np.ndarray, breast: BreastShape, geo: ViewGeometry) -> np.ndarray:
    """Height ``z`` (mm) above the breast support of breast-frame points ``p`` ``(..., 3)``.

    The chord of the breast ellipsoid through ``p`` along the compression axis ``w`` is
    mapped linearly onto ``[T/2 - t/2, T/2 + t/2]`` shrunk by 8 % (``t``: the local
    compressed thickness); points outside the breast are clamped to the chord's ends.
    Returns an array of shape ``p.shape[:-1]``.
    """
    p = np.asarray(p, dtype=np.float64)
    w = compression_axis(geo.angle_deg)
    rs, rl, depth = breast.radius_sup_mm, breast.radius_lat_mm, breast.depth_mm
    u, lat = p[..., 1], p[..., 2]
    qa = (w[1] / rs) ** 2 + (w[2] / rl) ** 2
    qb = 2.0 * (u * w[1] / rs**2 + lat * w[2] / rl**2)
    qc = (u / rs) ** 2 + (lat / rl) ** 2 + ((depth - p[..., 0]) / depth) ** 2 - 1.0
    disc = qb * qb - 4.0 * qa * qc
    half_chord = np.sqrt(np.maximum(disc, 0.0)) / (2.0 * qa)
    mid = -qb / (2.0 * qa)  # chord midpoint, as a multiple of w from p
    s = np.where(half_chord > 1e-6, -mid / np.maximum(half_chord, 1e-6), 0.0)
    s = np.clip(s, -1.0, 1.0)
    t = local_thickness(breast, geo, p)
    return geo.thickness_mm / 2.0 + s * _INNER * t / 2.0


@dataclass(frozen=True)
class ProjectionGeometry(ViewGeometry):
    """A :class:`ViewGeometry` whose :meth:`to_plane` gives the detector position of one
    DBT projection: the canonical position sheared along ``y`` by ``z * tan_theta``.

    Attributes:
        tan_theta: tangent of the projection angle (0: the central projection).
        breast: the phantom's breast, for :func:`height_above_support`.
    """

    tan_theta: float = 0.0
    breast: BreastShape | None = None

    def to_plane(self, p: np.ndarray) -> np.ndarray:
        """Breast-frame points ``(..., 3)`` mm -> detector plane ``(..., 2)`` mm ``(x, y)``."""
        xy = super().to_plane(p)
        if self.breast is None or self.tan_theta == 0.0:
            return xy
        z = height_above_support(p, self.breast, self)
        return np.stack([xy[..., 0], xy[..., 1] + z * self.tan_theta], axis=-1)


def projection_geometry(geo: ViewGeometry, breast: BreastShape, angle_deg: float
                        ) -> ProjectionGeometry:
    """The geometry of the projection at ``angle_deg`` of the DBT view ``geo``."""
    base = {f.name: getattr(geo, f.name) for f in fields(ViewGeometry)}
    return ProjectionGeometry(**base, tan_theta=math.tan(math.radians(angle_deg)),
                              breast=breast)


def frame_count(thickness_mm: float, slice_mm: float) -> int:
    """Number of frames covering ``[0, thickness_mm]`` every ``slice_mm`` (at least 1)."""
    return max(1, math.ceil(thickness_mm / slice_mm - 1e-9))


def frame_heights(n_frames: int, slice_mm: float) -> np.ndarray:
    """``(n_frames,)`` heights (mm) of frames 1..n: ``(k - 0.5) * slice_mm``."""
    return (np.arange(n_frames, dtype=np.float64) + 0.5) * slice_mm


def frame_of_height(z_mm: float, n_frames: int, slice_mm: float) -> int:
    """The 1-based frame whose plane is nearest height ``z_mm``, clipped to ``1..n``."""
    return int(min(max(math.floor(z_mm / slice_mm) + 1, 1), n_frames))


def frame_range(z_lo: float, z_hi: float, n_frames: int, slice_mm: float) -> list[int]:
    """``[first, last]`` 1-based frames whose planes cut the height interval
    ``[z_lo, z_hi]`` (mm), inclusive; the nearest frame when no plane does."""
    first = math.ceil(z_lo / slice_mm + 0.5 - 1e-9)
    last = math.floor(z_hi / slice_mm + 0.5 + 1e-9)
    if first > last:
        k = frame_of_height((z_lo + z_hi) / 2.0, n_frames, slice_mm)
        return [k, k]
    return [int(min(max(first, 1), n_frames)), int(min(max(last, 1), n_frames))]
