"""Digital breast tomosynthesis (DBT) views of a synthetic galactography case.

The same 3D phantom as the 2D views (:func:`training.synth.case.draw_case`) is compressed
along the beam, projected at every angle of a vendor-like sweep and reconstructed into
slices every ``slice_mm`` of the compressed thickness. Geometry, frames and the acquisition
table: :mod:`training.synth.dbt_geometry` (parallel beam with shear along the image rows).

Per projection ``theta`` (canonical orientation, see :mod:`training.synth.render`):

* contrast: :func:`~training.synth.render.contrast_layer` draws the duct tree, lesion voids
  and mimics with every breast-frame point placed at its sheared detector position
  (:class:`~training.synth.dbt_geometry.ProjectionGeometry`), so each structure moves with
  its own height; air bubbles are placed once per view (they do not move during a sweep);
  the cannula is drawn at the nipple's height (mid-thickness);
* tissue: the 2D line integral of :func:`~training.synth.render.breast_fields` is split
  into ``K`` layers at heights ``(k + 0.5) * T / K`` whose sum is the 2D field, each pixel's
  attenuation shared out by random smooth weights (so each clump of dense tissue has a
  height and the texture changes from slice to slice), shifted by
  ``z_k * tan(theta)`` and scaled by ``1 / cos(theta)`` (longer oblique path); fine tissue
  structures (:func:`~training.synth.texture.add_structures`) are drawn per layer likewise;
* exposure: primary, scatter and Poisson-Gaussian noise as in
  :func:`~training.synth.render.expose`, with the 2D view's photons per pixel times
  ``dose_factor / projections`` per projection; the result is the log attenuation ``P``.

Reconstruction: ramp-filtered shift-and-add. Each projection's ``P`` is filtered along the
sweep direction (rows) with ``H(f) = 1 + ramp_gain * (f / f_N) * hann(f)`` (``f_N`` the
Nyquist frequency; the DC term is kept so the slices keep the mammographic look), then slice
``k`` is the mean over projections of ``P_theta(y + z_k * tan(theta), x)`` (rows linearly
interpolated, the shift rounded to a quarter row). Structures at height ``z_k`` add up in
register (in focus); others smear along the rows (the sweep direction) over
``|z - z_k| * (tan(theta_max) - tan(theta_min))``. Slices are then equalised for the
thinning breast edge and cut to the tissue present at their height
(:func:`equalize_slices`), and mapped to stored values with one window for the whole volume
(:func:`volume_window`) through the view's presentation curve
(:func:`~training.synth.render.presentation_lut`, without peripheral equalisation or
unsharp masking).

Truth: boxes are the in-focus footprints (the central projection's, as in 2D) in stored
pixels of every frame, ``[x1, y1, x2, y2]``, x2/y2 exclusive; each box also gets the
1-based frame range its object spans, its best (central) frame and its centre height (mm
above the breast support).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from training.synth.anatomy import Mimic, Phantom, Sphere, bubble_spheres
from training.synth.cannula import draw_cannula
from training.synth.case import (
    CaseParams,
    draw_case,
    flip_box,
    patient_orientation,
    sample_tissue,
    synth_uid,
    view_geometry,
)
from training.synth.dbt_geometry import (
    check_sweep,
    choose_acquisition,
    frame_count,
    frame_heights,
    frame_of_height,
    frame_range,
    height_above_support,
    projection_geometry,
)
from training.synth.render import (
    LOWRES,
    ViewGeometry,
    breast_fields,
    contrast_layer,
    log_attenuation,
    power_law_noise,
    presentation_lut,
    spheres_px,
    union_box,
    upsample,
)
from training.synth.texture import add_structures
from training.synth.types import (
    CaseHeader,
    DbtAcquisition,
    DbtView,
    VendorProfile,
    ViewName,
)
from training.synth.variety import (
    CaseLook,
    StructureSpec,
    look_rng,
    sample_processing,
    sample_structures,
)


@dataclass(frozen=True)
class DbtParams:
    """How DBT volumes are simulated.

    Attributes:
        spacing_mm: in-plane pixel spacing of the reconstructed frames (mm); the field of
            view is the 2D profile's (``rows x cols`` at its patient spacing).
        slice_mm: spacing between frames (mm), also the nominal slice thickness.
        arc_deg / projections: override the drawn vendor sweep (``None``: drawn per case
            from :data:`~training.synth.dbt_geometry.DBT_ACQUISITIONS`).
        ramp_gain: gain of the ramp term of the reconstruction filter (0: plain
            shift-and-add).
        dose_factor: total dose of the sweep relative to the 2D view (working assumption).
        layers: number of tissue layers (``None``: one per 10 mm, 3 to 7).
    """

    spacing_mm: float = 0.2
    slice_mm: float = 1.0
    arc_deg: float | None = None
    projections: int | None = None
    ramp_gain: float = 1.5
    dose_factor: float = 1.2
    layers: int | None = None

    def __post_init__(self) -> None:
        if not 0.01 <= self.spacing_mm <= 5.0:
            raise ValueError(f"spacing_mm must be within [0.01, 5] mm, got {self.spacing_mm}")
        if not 0.1 <= self.slice_mm <= 20.0:
            raise ValueError(f"slice_mm must be within [0.1, 20] mm, got {self.slice_mm}")
        check_sweep(self.arc_deg, self.projections)
        if self.ramp_gain < 0.0 or self.dose_factor <= 0.0:
            raise ValueError("ramp_gain must be >= 0 and dose_factor > 0")


@dataclass
class DbtRender:
    """One reconstructed view in canonical orientation (chest wall at column 0).

    Attributes:
        frames: ``(n_frames, rows, cols)`` uint16, MONOCHROME2 sense, frame 0 lowest.
        heights_mm: ``(n_frames,)`` frame heights above the breast support (mm).
        lesion_truth: ``{lesion_id: truth}`` and ``mimic_truth``: ``[(kind, truth)]``, each
            truth ``{"box": [x1, y1, x2, y2] canonical px, "frame_range": [first, last],
            "best_frame": k, "height_mm": z}``.
        geometry: the view geometry (``thickness_mm`` is the compressed thickness).
        nipple_xy_px: nipple tip ``(x, y)`` in canonical pixels.
    """

    frames: np.ndarray
    heights_mm: np.ndarray
    lesion_truth: dict[int, dict[str, Any]]
    mimic_truth: list[tuple[str, dict[str, Any]]]
    geometry: ViewGeometry
    nipple_xy_px: tuple[float, float]


@dataclass
class DbtCaseResult:
    """A generated DBT case: its views (stored orientation) and dataset items."""

    header: CaseHeader
    views: list[DbtView]
    items: list[dict[str, Any]]
    ground_truth: dict[str, Any]


# --------------------------------------------------------------------------- array helpers


def add_rows_shifted(out: np.ndarray, a: np.ndarray, shift: float, weight: float = 1.0
                     ) -> None:
    """``out[y] += weight * a[y + shift]`` for every row ``y`` (axis 0), linear interpolation
    between rows, rows beyond the edges repeat the edge row. ``out`` and ``a`` have the same
    shape; ``shift`` is in rows (any real)."""
    n = a.shape[0]
    i = math.floor(shift)
    f = shift - i
    for k, wk in ((i, (1.0 - f) * weight), (i + 1, f * weight)):
        if wk == 0.0:
            continue
        y0 = min(max(-k, 0), n)
        y1 = max(min(n - k, n), y0)
        if y1 > y0:
            out[y0:y1] += np.float32(wk) * a[y0 + k: y1 + k]
        if y0 > 0:
            out[:y0] += np.float32(wk) * a[0]
        if y1 < n:
            out[y1:] += np.float32(wk) * a[n - 1]


#: Sub-row phases of the back-projection: shifts are rounded to 1/PHASES of a row.
PHASES = 4


def row_phases(a: np.ndarray, weight: float) -> list[np.ndarray]:
    """``weight * a`` sampled at row offsets ``q / PHASES`` (``q = 0 .. PHASES - 1``) by
    linear interpolation (the last row repeated): the look-up table of
    :func:`add_rows_phased`."""
    a = a * np.float32(weight)
    nxt = np.concatenate([a[1:], a[-1:]], axis=0)
    out = [a]
    for q in range(1, PHASES):
        f = np.float32(q / PHASES)
        out.append(a * (1 - f) + nxt * f)
    return out


def add_rows_phased(out: np.ndarray, phases: list[np.ndarray], shift: float) -> None:
    """``out[y] += a[y + shift]`` with ``shift`` rounded to ``1 / PHASES`` row, from the
    table of :func:`row_phases` (one in-place pass; rows beyond the edges repeat the edge
    row). Rounding moves a sample by at most ``1 / (2 * PHASES)`` row."""
    k4 = round(shift * PHASES)
    k, q = divmod(k4, PHASES)
    src = phases[q]
    n = src.shape[0]
    y0 = min(max(-k, 0), n)
    y1 = max(min(n - k, n), y0)
    if y1 > y0:
        np.add(out[y0:y1], src[y0 + k: y1 + k], out=out[y0:y1])
    if y0 > 0:
        out[:y0] += phases[0][0]
    if y1 < n:
        out[y1:] += phases[0][n - 1]


def ramp_filter_rows(P: np.ndarray, gain: float, pad: int = 32) -> np.ndarray:
    """Filter ``P`` ``(rows, cols)`` along the rows with ``1 + gain * (f / f_N) * hann(f)``
    (edge-padded by ``pad`` rows against wrap-around); returns float32 of the same shape."""
    if gain <= 0.0:
        return P
    padded = np.pad(P, ((pad, pad), (0, 0)), mode="edge")
    n = sfft.next_fast_len(padded.shape[0], real=True)
    f = np.fft.rfftfreq(n).astype(np.float32) / np.float32(0.5)  # 0 .. 1 (Nyquist)
    h = 1.0 + gain * f * 0.5 * (1.0 + np.cos(np.pi * f))
    spec = sfft.rfft(padded, n=n, axis=0)
    spec *= h.astype(np.float32)[:, None]
    out = sfft.irfft(spec, n=n, axis=0)[pad: pad + P.shape[0]]
    return np.ascontiguousarray(out, dtype=np.float32)


# --------------------------------------------------------------------------- layers


def tissue_layers(A_low: np.ndarray, k: int, beta: float, rng: np.random.Generator,
                  sharpness: float = 1.5) -> list[np.ndarray]:
    """Split the 2D tissue line integral ``A_low`` into ``k`` layers that sum to it.

    Layer ``j`` gets the share ``w_j = exp(s * n_j) / sum_i exp(s * n_i)`` of ``A_low``
    at every pixel (``n_j`` independent zero-mean unit-variance power-law fields of
    exponent ``beta``, ``s = sharpness``), so each clump of dense tissue lies mostly in one
    or two layers: in focus in the slices at that height, blurred in the others. Returns
    ``k`` float32 arrays shaped like ``A_low``.
    """
    if k <= 1:
        return [A_low.astype(np.float32)]
    logits = np.stack([power_law_noise(A_low.shape, beta, rng) for _ in range(k)])
    logits *= np.float32(sharpness)
    logits -= logits.max(axis=0)
    w = np.exp(logits)
    w /= w.sum(axis=0)
    return [(A_low * w[j]).astype(np.float32) for j in range(k)]


def split_structures(spec: StructureSpec, k: int, rng: np.random.Generator
                     ) -> list[StructureSpec]:
    """Spread the structures of ``spec`` over ``k`` layers: ligaments and vessels at random,
    all calcifications in one layer (a group stays a group), the skin fold in the middle."""
    lig = rng.multinomial(spec.ligaments, np.full(k, 1.0 / k))
    ves = rng.multinomial(spec.vessels, np.full(k, 1.0 / k))
    calc_layer = int(rng.integers(k))
    return [replace(spec, ligaments=int(lig[j]), vessels=int(ves[j]),
                    calcifications=spec.calcifications if j == calc_layer else 0,
                    skin_fold=spec.skin_fold and j == k // 2) for j in range(k)]


def fixed_bubbles(phantom: Phantom, rng: np.random.Generator) -> Phantom:
    """A copy of ``phantom`` whose air bubbles have positions (drawn with ``rng`` in the
    order :func:`~training.synth.render.contrast_layer` draws them), so every projection of
    a sweep shows them in the same place."""
    mimics = [Mimic(m.kind, m.spheres or bubble_spheres(phantom.ducts, m, rng), m.size_mm,
                    m.count) if m.kind == "air_bubble" else m for m in phantom.mimics]
    return replace(phantom, mimics=mimics)


# --------------------------------------------------------------------------- exposure


def equalize_slices(vol: np.ndarray, heights: np.ndarray, mask_low: np.ndarray,
                    A_low: np.ndarray, geo: ViewGeometry, spacing: float,
                    path_factor: float) -> None:
    """Turn shift-and-add slices (line integrals) into slice-like images, in place.

    A reconstructed slice shows the tissue *at its height*, not the thickness it sits in:
    the attenuation missing where the compressed breast thins towards its contour
    (``(T - t) * mu``, ``t`` the local thickness, ``mu`` the breast's median attenuation
    per mm, ``path_factor`` the mean ``1 / cos(theta)``) is added back inside the breast
    (``mask_low``), and inside the breast but above or below the tissue at that place
    (``|z - T/2| > t / 2``) the slice is lowered by the difference between the tissue's
    local level and the air level (both measured on the middle slice), so
    top and bottom slices show the smaller section of the breast at their height (the
    out-of-plane smear stays, as in a real reconstruction). Outside the breast (cannula,
    tubing, smear) the slice is kept. ``t`` follows the thickness profile
    of :func:`~training.synth.render.breast_fields` with the distance to the drawn contour.

    Args:
        vol: ``(n_frames, rows, cols)`` float32 slices (log attenuation).
        heights: ``(n_frames,)`` slice heights (mm above the breast support).
        mask_low / A_low: breast mask and 2D tissue line integral on the coarse grid.
    """
    T = geo.thickness_mm
    ls = spacing * LOWRES
    inside_px = ndimage.distance_transform_edt(mask_low)
    dist = inside_px * (ls / geo.expand)
    dc = np.clip(dist / (T / 2.0), 0.0, 1.0)
    t_low = (T * np.sqrt(np.clip(1.0 - (1.0 - dc) ** 2, 0.0, 1.0))).astype(np.float32)
    inner = mask_low & (t_low > 0.9 * T)
    if not inner.any():
        inner = mask_low & (t_low > 0.5 * t_low.max())
    if not inner.any():
        return
    mu = float(np.median(A_low[inner] / t_low[inner]))
    shape = vol.shape[1:]
    # a smooth inside weight at full resolution: the coarse signed distance to the contour
    # (+1 / -1 on the pixels either side), interpolated, ramps over about two pixels
    signed = (inside_px - ndimage.distance_transform_edt(~mask_low)).astype(np.float32)
    weight = np.clip(upsample(signed, shape) + 0.5, 0.0, 1.0)
    vol += (upsample((T - t_low) * np.float32(mu * path_factor), shape) * weight)[None]
    # levels on the middle slice (coarse grid): air outside the breast, and the tissue's
    # local level (a masked 8 mm Gaussian mean) inside it
    mid = np.zeros(mask_low.shape, np.float32)
    sub = vol[len(vol) // 2, ::LOWRES, ::LOWRES]
    mid[: sub.shape[0], : sub.shape[1]] = sub
    air = float(np.median(mid[~mask_low])) if (~mask_low).any() else float(mid.min())
    wgt = mask_low.astype(np.float32)
    sig = 8.0 / ls
    local = ndimage.gaussian_filter(mid * wgt, sig) / np.maximum(
        ndimage.gaussian_filter(wgt, sig), 1e-3)
    step = np.maximum(local - np.float32(air), 0.0)
    for j, z in enumerate(heights):
        missing = np.clip(0.5 - (t_low / 2.0 - abs(float(z) - T / 2.0)) / ls, 0.0, 1.0)
        missing *= step
        if (missing * wgt).any():  # no tissue at this height: down to the air level
            low = upsample(missing, shape)
            low *= weight  # only inside the breast
            vol[j] -= low


def volume_window(vol: np.ndarray) -> tuple[float, float]:
    """Display window ``(lo, hi)`` of a volume of log attenuation ``(n, rows, cols)``: the
    1st percentile of a subsample (air stays dark) and the 99.97th percentile of the
    maximum over the frames plus 5 % (the densest in-focus contrast, which occupies only a
    few frames, stays just under saturation)."""
    sample = vol[:, ::7, ::7]
    lo = float(np.percentile(sample, 1.0))
    hi = float(np.percentile(sample.max(axis=0), 99.97))
    return lo, hi + 0.05 * (hi - lo)


# --------------------------------------------------------------------------- truth


def _truth(spheres: list[Sphere], geo: ViewGeometry, spacing: float, shape: tuple[int, int],
           n_frames: int, slice_mm: float, breast_heights: np.ndarray) -> dict[str, Any]:
    """Box (canonical px, clipped, x2/y2 exclusive), frame range, best frame and centre
    height of an object made of ``spheres`` whose centre heights are ``breast_heights``."""
    box = union_box(spheres_px(spheres, geo, spacing), shape)
    radii = np.array([s.radius for s in spheres])
    z_lo = float(np.min(breast_heights - radii))
    z_hi = float(np.max(breast_heights + radii))
    z_c = float(np.mean(breast_heights))
    return {"box": box, "frame_range": frame_range(z_lo, z_hi, n_frames, slice_mm),
            "best_frame": frame_of_height(z_c, n_frames, slice_mm), "height_mm": z_c}


def volume_truth(phantom: Phantom, geo: ViewGeometry, spacing: float, shape: tuple[int, int],
                 n_frames: int, slice_mm: float
                 ) -> tuple[dict[int, dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    """Truth of every lesion and mimic of ``phantom`` (bubbles already placed) in a volume
    of ``n_frames`` frames of ``shape`` pixels: one entry per lesion, one per air bubble,
    one per other mimic (its union), as :func:`~training.synth.render.contrast_layer`
    boxes them."""

    def heights(spheres: list[Sphere]) -> np.ndarray:
        centres = np.array([s.center for s in spheres], dtype=np.float64)
        return height_above_support(centres, phantom.breast, geo)

    lesions = {les.lesion_id: _truth(les.spheres, geo, spacing, shape, n_frames, slice_mm,
                                     heights(les.spheres)) for les in phantom.lesions}
    mimics: list[tuple[str, dict[str, Any]]] = []
    for m in phantom.mimics:
        if not m.spheres:
            continue
        if m.kind == "air_bubble":
            for s in m.spheres:
                mimics.append((m.kind, _truth([s], geo, spacing, shape, n_frames, slice_mm,
                                              heights([s]))))
        else:
            mimics.append((m.kind, _truth(m.spheres, geo, spacing, shape, n_frames, slice_mm,
                                          heights(m.spheres))))
    return lesions, mimics


# --------------------------------------------------------------------------- rendering


def render_dbt(phantom: Phantom, view: ViewName, profile: VendorProfile,
               rng: np.random.Generator, cannula: bool, look: CaseLook,
               lrng: np.random.Generator, acq: DbtAcquisition, params: DbtParams
               ) -> DbtRender:
    """Simulate the sweep of ``acq`` over ``phantom`` in ``view`` and reconstruct it.

    The field of view is the 2D ``profile``'s (``rows x cols`` pixels of its patient
    spacing) sampled every ``params.spacing_mm``; frames every ``params.slice_mm`` cover the
    compressed thickness drawn for the view. ``rng`` and ``lrng`` are the view's generators
    of :func:`training.synth.case.render`, consumed in the same order up to the bubbles, so
    the geometry (C-arm angle, thickness, nipple), tissue draws and bubble positions equal
    those of the case's 2D view. Returns the volume in canonical orientation.
    """
    spacing = params.spacing_mm
    ps = profile.patient_spacing_mm
    shape = (max(round(profile.rows * ps / spacing), LOWRES),
             max(round(profile.cols * ps / spacing), LOWRES))
    geo = view_geometry(view, rng, profile, phantom.breast.depth_mm, look)
    proc = sample_processing(look.style, lrng)
    tp = sample_tissue(rng, view, geo, proc.texture)
    A_low, mask_low = breast_fields(phantom.breast, geo, shape, spacing, tp, rng)
    ph = fixed_bubbles(phantom, rng)
    T = geo.thickness_mm
    n_frames = frame_count(T, params.slice_mm)
    z_frames = frame_heights(n_frames, params.slice_mm)
    k = params.layers or int(np.clip(round(T / 10.0), 3, 7))
    z_layers = (np.arange(k) + 0.5) * T / k
    layers = tissue_layers(A_low, k, tp.texture_beta, rng)
    a_ref = float(np.median(A_low[mask_low])) if mask_low.any() else 0.0
    cannula_rng = copy.deepcopy(lrng)
    if cannula:  # advance ``lrng`` as the 2D view does; each projection redraws the same
        draw_cannula(np.zeros((1, 1), np.float32), geo, spacing, look.cannula, lrng)
    spec = sample_structures(look.style, lrng)
    structures: list[np.ndarray | None] = []
    for sub in split_structures(spec, k, lrng):
        canvas = np.zeros(shape, np.float32)
        add_structures(canvas, phantom.breast, geo, spacing, phantom.contrast_mu_per_mm, sub,
                       lrng)
        structures.append(canvas if canvas.any() else None)

    angles = acq.angles_deg()
    counts = tp.counts * params.dose_factor / len(angles)
    vol = np.zeros((n_frames, *shape), np.float32)
    w = 1.0 / len(angles)
    for theta in angles:
        tan = math.tan(math.radians(theta))
        pgeo = projection_geometry(geo, phantom.breast, theta)
        c, _, _ = contrast_layer(ph, pgeo, shape, spacing, rng)
        if cannula:
            xn, yn = geo.nipple_xy_mm
            draw_cannula(c, replace(geo, nipple_xy_mm=(xn, yn + T / 2.0 * tan)), spacing,
                         look.cannula, copy.deepcopy(cannula_rng))
        s_theta = np.zeros(shape, np.float32)
        a_theta = np.zeros_like(A_low)
        for z, layer, sheet in zip(z_layers, layers, structures, strict=True):
            add_rows_shifted(a_theta, layer, z * tan / (spacing * LOWRES))
            if sheet is not None:
                add_rows_shifted(s_theta, sheet, z * tan / spacing)
        np.maximum(c, s_theta, out=c)
        a_theta /= np.float32(math.cos(math.radians(theta)))
        m_theta = ndimage.shift(mask_low.astype(np.uint8), (T / 2.0 * tan / (spacing * LOWRES),
                                                            0.0), order=0, mode="nearest") > 0
        P = log_attenuation(a_theta, m_theta, a_ref, c, phantom.contrast_mu_per_mm, tp, counts,
                            spacing, rng, proc.noise_corr)
        table = row_phases(ramp_filter_rows(P, params.ramp_gain), w)
        for j, z in enumerate(z_frames):
            add_rows_phased(vol[j], table, z * tan / spacing)
    equalize_slices(vol, z_frames, mask_low, A_low, geo, spacing,
                    float(np.mean([1.0 / math.cos(math.radians(a)) for a in angles])))
    flat = vol.reshape(n_frames * shape[0], shape[1])
    stored = presentation_lut(flat, acq.bits_stored, replace(proc, periph_eq=0.0, usm_gain=0.0),
                              window=volume_window(vol))
    lesions, mimics = volume_truth(ph, geo, spacing, shape, n_frames, params.slice_mm)
    nx, ny = geo.nipple_xy_mm
    return DbtRender(frames=stored.reshape(n_frames, *shape), heights_mm=z_frames,
                     lesion_truth=lesions, mimic_truth=mimics, geometry=geo,
                     nipple_xy_px=(nx / spacing, ny / spacing))


# --------------------------------------------------------------------------- the case


def _stored_truth(t: dict[str, Any], shape: tuple[int, int], hflip: bool, vflip: bool
                  ) -> dict[str, Any]:
    return {"box": [round(v, 1) for v in flip_box(t["box"], shape, hflip, vflip)],
            "frame_range": t["frame_range"], "best_frame": t["best_frame"],
            "height_mm": round(t["height_mm"], 1)}


def generate_dbt_case(seed: int, index: int, profile: VendorProfile,
                      params: CaseParams | None = None, dbt: DbtParams | None = None
                      ) -> DbtCaseResult:
    """Generate the DBT views (CC and ML/MLO) of case ``index`` of a run seeded with
    ``seed``: the same phantom, header and ground truth as
    :func:`training.synth.case.generate_case` gives for these arguments, reconstructed
    volumes in stored orientation, and their dataset items (deterministic).
    """
    P = params or CaseParams()
    D = dbt or DbtParams()
    draws = draw_case(seed, index, profile, P)
    arng = np.random.default_rng(np.random.SeedSequence([seed, index, 0xDB7]))
    acq = choose_acquisition(profile.manufacturer, arng, arc_deg=D.arc_deg,
                             projections=D.projections)
    lesions = draws.phantom.lesions
    views: list[DbtView] = []
    items: list[dict[str, Any]] = []
    for vi, view in enumerate(draws.views):
        vrng = np.random.default_rng(np.random.SeedSequence([seed, index, 0x71E, vi]))
        r = render_dbt(draws.phantom, view, profile, vrng, draws.cannula, draws.look,
                       look_rng(seed, index, vi), acq, D)
        frames = r.frames
        shape = (int(frames.shape[1]), int(frames.shape[2]))
        if draws.hflip:
            frames = frames[:, :, ::-1]
        if draws.vflip:
            frames = frames[:, ::-1, :]
        orient = patient_orientation(draws.laterality, view, draws.hflip, draws.vflip)
        dv = DbtView(
            frames=np.ascontiguousarray(frames), heights_mm=r.heights_mm,
            spacing_mm=D.spacing_mm, slice_mm=D.slice_mm, bits_stored=acq.bits_stored,
            acquisition=acq, laterality=draws.laterality, view=view,
            patient_orientation=orient,
            series_instance_uid=synth_uid(seed, index, "dbt-series", vi),
            sop_instance_uid=synth_uid(seed, index, "dbt-sop", vi),
            frame_of_reference_uid=synth_uid(seed, index, "dbt-frame-of-reference", vi),
            series_number=11 + vi, instance_number=1,
            kvp=float(np.round(vrng.uniform(26, 34))),
            exposure_mas=float(np.round(vrng.uniform(40, 120), 1)),
            body_part_thickness_mm=float(np.round(r.geometry.thickness_mm, 1)),
            compression_force_n=float(np.round(vrng.uniform(60, 150))),
            positioner_primary_angle_deg=float(np.round(r.geometry.angle_deg)),
            acquisition_time=draws.header.study_time)
        views.append(dv)
        nx, ny = r.nipple_xy_px
        if draws.hflip:
            nx = shape[1] - nx
        if draws.vflip:
            ny = shape[0] - ny
        les = [_stored_truth(t, shape, draws.hflip, draws.vflip)
               for t in r.lesion_truth.values()]
        items.append({
            "boxes": [t["box"] for t in les],
            "labels": ["filling_defect"] * len(les),
            "lesion_ids": list(r.lesion_truth.keys()),
            "lesion_kind": [lesions[i].kind for i in r.lesion_truth],
            "lesion_size_mm": [round(lesions[i].size_mm, 2) for i in r.lesion_truth],
            "frames": int(frames.shape[0]),
            "frame_ranges": [t["frame_range"] for t in les],
            "best_frames": [t["best_frame"] for t in les],
            "heights_mm": [t["height_mm"] for t in les],
            "mimics": [{"kind": kind, **_stored_truth(t, shape, draws.hflip, draws.vflip)}
                       for kind, t in r.mimic_truth],
            "laterality": draws.laterality, "view": view,
            "patient_orientation": "\\".join(orient),
            "nipple_xy": [round(nx, 1), round(ny, 1)],
            "chest_wall_side": "right" if draws.hflip else "left",
            "study_instance_uid": draws.header.study_instance_uid,
            "sop_instance_uid": dv.sop_instance_uid,
            "style": P.style,
            "dbt": {"acquisition": acq.name, "arc_deg": acq.arc_deg,
                    "projections": acq.projections, "slice_mm": D.slice_mm,
                    "thickness_mm": dv.body_part_thickness_mm,
                    "sweep_axis": "y",
                    "reconstruction": "ramp-filtered shift-and-add",
                    "ramp_gain": D.ramp_gain},
        })
    return DbtCaseResult(header=draws.header, views=views, items=items,
                         ground_truth=draws.ground_truth)
