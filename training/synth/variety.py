"""Per-case and per-view appearance draws of the simulator: nipple and areola, cannula,
duct-tree ranges, tissue structures and vendor processing.

Two image families (``style``) are generated:

* ``standard`` - the family used for training; every draw here spans a wide range so that
  a detector does not learn one nipple shape, one cannula or one processing chain;
* ``alt`` - a deliberately different family (another duct-tree growth rule, breast outline,
  cannula rendering, tissue texture and processing; see :mod:`training.synth.alt`), never
  used for training, only as a second validation set and an unseen-style test set.

Everything is drawn from a dedicated generator (seeded from the case seed), so the same seed
gives the same case whatever the worker count. Lengths are in mm; attenuations are
dimensionless line integrals (``mu * path``) unless stated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from training.synth.anatomy import TreeParams

Style = Literal["standard", "alt"]
STYLES: tuple[Style, ...] = ("standard", "alt")
NippleKind = Literal["protruding", "flat", "inverted"]
CannulaKind = Literal["metal", "catheter", "alt_line"]
LutKind = Literal["gamma", "sigmoid", "log", "hist_eq"]
TextureKind = Literal["power_law", "clumped"]
TubingPath = Literal["quadratic", "s_curve", "straight"]


@dataclass(frozen=True)
class NippleSpec:
    """Nipple and areola of one breast (same in every view).

    Attributes:
        kind: ``protruding`` (in profile beyond the contour), ``flat`` (level with the
            contour) or ``inverted`` (retracted: the contour has a notch at the tip).
        length_mm: protrusion beyond the breast contour (0 when flat or inverted).
        half_width_mm: half width of the nipple in profile.
        dimple_mm: depth of the notch of an inverted nipple (0 otherwise); the nipple tip
            (the duct orifice, ``nipple_xy``) is at the bottom of the notch.
        areola_radius_mm: radius of the areola around the nipple.
        areola_skin_factor: the skin is this many times thicker in the areola (>= 1).
    """

    kind: NippleKind
    length_mm: float
    half_width_mm: float
    dimple_mm: float
    areola_radius_mm: float
    areola_skin_factor: float


@dataclass(frozen=True)
class CannulaSpec:
    """The cannula in the nipple and its tubing (drawn as contrast-equivalent path length).

    Attributes:
        kind: ``metal`` (blunt 27-30 G needle, very dense, thin), ``catheter`` (plastic
            catheter filled with contrast, wider and fainter, tapered tip) or ``alt_line``
            (the ``alt`` style: a straight radiopaque line with a tip marker, no hub).
        insert_mm: depth of the tip behind the nipple tip along the duct.
        shaft_radius_mm / shaft_scale: radius and contrast-equivalent density of the shaft.
        hub_radius_mm / hub_scale: the hub (Luer connector) at the end of the shaft.
        tubing_radius_mm / tubing_scale: the contrast-filled extension tubing.
        tubing_path: ``quadratic`` (one bend), ``s_curve`` (cubic, two bends) or ``straight``.
        air_pocket_mm: radius of a small air pocket at the cannula tip (0: none). It is a
            void in the contrast and is labelled as an ``air_bubble`` mimic.
    """

    kind: CannulaKind
    insert_mm: float
    shaft_radius_mm: float
    shaft_scale: float
    hub_radius_mm: float
    hub_scale: float
    tubing_radius_mm: float
    tubing_scale: float
    tubing_path: TubingPath
    air_pocket_mm: float


@dataclass(frozen=True)
class OutlineSpec:
    """Outward-only distortions of the breast contour in the image plane (so the duct tree,
    grown inside the ellipsoid, always stays inside the drawn breast).

    ``bumps``: amplitudes of the 2nd, 3rd and 5th angular harmonics (fraction of the radius,
    each term ``>= 0``); ``droop``: extra radius of the lower (``v < 0``) half (fraction).
    """

    bumps: tuple[float, float, float]
    droop: float


@dataclass(frozen=True)
class CaseLook:
    """Case-level appearance draws (shared by both views)."""

    style: Style
    nipple: NippleSpec
    cannula: CannulaSpec
    outline: OutlineSpec
    tree: TreeParams


@dataclass(frozen=True)
class StructureSpec:
    """Fine tissue structures drawn at full resolution in one view.

    Attributes:
        ligaments: number of fibrous strands / Cooper's ligaments (thin curved bright lines).
        ligament_amp: peak extra attenuation of a ligament.
        vessels: number of blood vessels (long thin tubes, not contrast-filled).
        vessel_amp: peak extra attenuation of a vessel (well under a filled duct's).
        calcifications: number of benign calcifications (tiny bright dots).
        skin_fold: whether a skin fold (a bright curved band near the contour) is drawn.
    """

    ligaments: int
    ligament_amp: float
    vessels: int
    vessel_amp: float
    calcifications: int
    skin_fold: bool


@dataclass(frozen=True)
class ProcessingSpec:
    """Vendor-like For Presentation processing of one view.

    Attributes:
        usm_gain / usm_sigma_px: unsharp masking ``P + gain * (P - lowpass(P))``, the low
            pass a Gaussian of ``usm_sigma_px`` pixels of the 4x coarser grid (gain 0: none).
        periph_eq: peripheral (thickness) equalisation strength, 0..1 (0: none): the thin
            breast edge is lifted towards the level of the inner breast.
        lut: the presentation curve: ``gamma``, ``sigmoid``, ``log`` or ``hist_eq`` (a
            histogram equalisation of the breast blended with a linear ramp).
        lut_param: gamma exponent, sigmoid slope, log curvature or hist_eq blend weight.
        sigmoid_center: centre of the sigmoid (fraction of the window).
        lo_out: stored value of air as a fraction of the maximum.
        noise_corr: correlation of neighbouring noise samples (0: white detector noise).
        texture: fibroglandular texture family: ``power_law`` noise or ``clumped`` blobs.
    """

    usm_gain: float
    usm_sigma_px: float
    periph_eq: float
    lut: LutKind
    lut_param: float
    sigmoid_center: float
    lo_out: float
    noise_corr: float
    texture: TextureKind


def look_rng(seed: int, index: int, view_index: int | None = None) -> np.random.Generator:
    """The generator of the appearance draws of case ``index`` (or of one of its views)."""
    parts = [seed, index, 0xA99] + ([] if view_index is None else [view_index])
    return np.random.default_rng(np.random.SeedSequence(parts))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def sample_nipple(style: Style, rng: np.random.Generator) -> NippleSpec:
    """Standard: protruding 62 %, flat 23 %, inverted 15 %; alt: always flat, no areola."""
    if style == "alt":
        return NippleSpec("flat", 0.0, float(rng.uniform(3.0, 6.0)), 0.0, 0.0, 1.0)
    u = rng.random()
    kind: NippleKind = "protruding" if u < 0.62 else ("flat" if u < 0.85 else "inverted")
    length = float(rng.uniform(3.0, 9.5)) if kind == "protruding" else (
        0.0)
    dimple = float(rng.uniform(1.0, 3.5)) if kind == "inverted" else 0.0
    return NippleSpec(kind=kind, length_mm=length, half_width_mm=float(rng.uniform(2.5, 7.5)),
                      dimple_mm=dimple, areola_radius_mm=float(rng.uniform(10.0, 30.0)),
                      areola_skin_factor=float(rng.uniform(1.0, 3.0)))


def sample_cannula(style: Style, rng: np.random.Generator) -> CannulaSpec:
    """Standard: metal needle (60 %) or plastic catheter (40 %), tubing 0.25-0.9 mm radius on
    one of three path shapes, an air pocket at the tip in 12 % of cases; alt: ``alt_line``."""
    pocket = float(rng.uniform(0.45, 1.1)) if rng.random() < 0.12 else 0.0
    if style == "alt":
        return CannulaSpec("alt_line", float(rng.uniform(2.0, 5.0)), float(rng.uniform(
            0.3, 0.45)), float(rng.uniform(0.5, 0.8)), 0.0, 0.0, 0.0, 0.0, "straight", pocket)
    paths: tuple[TubingPath, ...] = ("quadratic", "s_curve", "straight")
    path = paths[int(rng.choice(3, p=[0.55, 0.35, 0.1]))]
    if rng.random() < 0.6:
        return CannulaSpec("metal", float(rng.uniform(2.0, 6.0)), float(rng.uniform(0.13, 0.22)),
                           float(rng.uniform(3.0, 6.0)), float(rng.uniform(0.6, 1.4)),
                           float(rng.uniform(0.8, 2.0)), float(rng.uniform(0.25, 0.9)),
                           float(rng.uniform(0.5, 1.1)), path, pocket)
    return CannulaSpec("catheter", float(rng.uniform(3.0, 10.0)), float(rng.uniform(0.3, 0.55)),
                       float(rng.uniform(0.7, 1.4)), float(rng.uniform(0.0, 1.0)),
                       float(rng.uniform(0.5, 1.2)), float(rng.uniform(0.3, 0.9)),
                       float(rng.uniform(0.5, 1.0)), path, pocket)


def sample_outline(style: Style, rng: np.random.Generator) -> OutlineSpec:
    """Standard: outward harmonic bumps up to 9/6/4 % and a lower-half droop up to 15 %."""
    if style == "alt":
        return OutlineSpec((0.0, 0.0, 0.0), 0.0)
    bumps = (float(rng.uniform(0.0, 0.09)), float(rng.uniform(0.0, 0.06)),
             float(rng.uniform(0.0, 0.04)))
    droop = float(rng.uniform(0.0, 0.15)) if rng.random() < 0.5 else 0.0
    return OutlineSpec(bumps, droop)


def sample_tree_params(rng: np.random.Generator, base: TreeParams | None = None
                       ) -> TreeParams:
    """Per-case duct-tree ranges around ``base``: generations 4-7, 60-400 branches, branching
    angles, length and radius ratios, territory width, tortuosity and trifurcation share all
    drawn, so sparse and dense, straight and tortuous, narrow and wide trees all occur."""
    b = base or TreeParams()
    lo_len = float(rng.uniform(0.12, 0.22))
    return replace(
        b,
        max_generations=int(rng.choice([4, 5, 6, 7], p=[0.1, 0.2, 0.3, 0.4])),
        max_branches=round(_log_uniform(rng, 60.0, 400.0)),
        main_length_frac=(lo_len, lo_len + float(rng.uniform(0.08, 0.2))),
        length_ratio=(float(rng.uniform(0.5, 0.68)), float(rng.uniform(0.75, 0.92))),
        child_radius_ratio=(float(rng.uniform(0.6, 0.75)), float(rng.uniform(0.88, 0.99))),
        branch_angle_deg=(float(rng.uniform(10.0, 25.0)), float(rng.uniform(40.0, 80.0))),
        territory_half_angle_deg=(float(rng.uniform(15.0, 35.0)),
                                  float(rng.uniform(40.0, 70.0))),
        tortuosity_deg=(float(rng.uniform(1.0, 6.0)), float(rng.uniform(8.0, 20.0))),
        trifurcation_p=float(rng.uniform(0.03, 0.35)),
    )


def sample_case_look(style: Style, rng: np.random.Generator,
                     tree: TreeParams | None = None, vary_tree: bool = True) -> CaseLook:
    """All case-level appearance draws of ``style``."""
    nipple = sample_nipple(style, rng)
    cannula = sample_cannula(style, rng)
    outline = sample_outline(style, rng)
    tp = sample_tree_params(rng, tree) if vary_tree else (tree or TreeParams())
    return CaseLook(style=style, nipple=nipple, cannula=cannula, outline=outline, tree=tp)


def sample_structures(style: Style, rng: np.random.Generator) -> StructureSpec:
    """Ligaments 0-50, vessels 0-4, calcifications (none in 55 % of views, else 1-12) and a
    skin fold in 12 % of views; the alt style draws fewer ligaments and no skin folds."""
    calcs = 0 if rng.random() < 0.55 else int(rng.integers(1, 13))
    if style == "alt":
        return StructureSpec(int(rng.integers(0, 12)), float(rng.uniform(0.01, 0.03)),
                             int(rng.integers(0, 3)), float(rng.uniform(0.03, 0.07)), calcs,
                             False)
    return StructureSpec(
        ligaments=int(rng.integers(0, 51)), ligament_amp=float(rng.uniform(0.01, 0.06)),
        vessels=int(rng.integers(0, 5)), vessel_amp=float(rng.uniform(0.03, 0.1)),
        calcifications=calcs, skin_fold=bool(rng.random() < 0.12))


def sample_processing(style: Style, rng: np.random.Generator) -> ProcessingSpec:
    """Standard: unsharp masking in 55 % (gain 0.15-1.0, sigma 5-16 coarse pixels), peripheral
    equalisation in 25 % (0.3-0.8), LUT gamma 45 % / sigmoid 20 % / log 15 % / hist_eq 20 %.
    Alt: strong peripheral equalisation, mild short-range unsharp masking, a steep sigmoid,
    correlated noise and clumped texture."""
    if style == "alt":
        return ProcessingSpec(
            usm_gain=float(rng.uniform(0.2, 0.5)), usm_sigma_px=float(rng.uniform(2.5, 4.0)),
            periph_eq=float(rng.uniform(0.8, 1.0)), lut="sigmoid",
            lut_param=float(rng.uniform(7.0, 11.0)), sigmoid_center=float(rng.uniform(
                0.45, 0.6)), lo_out=float(rng.uniform(0.0, 0.03)),
            noise_corr=float(rng.uniform(0.4, 0.7)), texture="clumped")
    usm = float(rng.uniform(0.15, 1.0)) if rng.random() < 0.55 else 0.0
    lut: LutKind = ("gamma", "sigmoid", "log", "hist_eq")[
        int(rng.choice(4, p=[0.45, 0.2, 0.15, 0.2]))]
    param = {"gamma": float(rng.uniform(0.7, 1.4)), "sigmoid": float(rng.uniform(3.0, 8.0)),
             "log": float(rng.uniform(2.0, 20.0)), "hist_eq": float(rng.uniform(0.2, 0.7))}[lut]
    return ProcessingSpec(
        usm_gain=usm, usm_sigma_px=float(rng.uniform(5.0, 16.0)),
        periph_eq=float(rng.uniform(0.3, 0.8)) if rng.random() < 0.25 else 0.0,
        lut=lut, lut_param=param, sigmoid_center=float(rng.uniform(0.4, 0.65)),
        lo_out=float(rng.uniform(0.0, 0.08)), noise_corr=0.0, texture="power_law")
