"""One synthetic galactogram case: a phantom, its two views, and the ground truth.

A case is one injected duct system of one breast, imaged in CC and in ML or MLO. Both views
project the same 3D phantom, so every filling defect appears in both (air bubbles do not: they
are placed independently in each view).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.uid import generate_uid

from training.synth.alt import grow_duct_tree_alt, sample_breast_alt
from training.synth.anatomy import (
    LesionParams,
    Mimic,
    Phantom,
    TreeParams,
    clock_hour,
    depth_third,
    grow_duct_tree,
    place_lesions,
    place_mimics,
    quadrant,
    sample_breast,
)
from training.synth.cannula import air_pocket, draw_cannula
from training.synth.render import (
    TissueParams,
    ViewGeometry,
    ViewRender,
    breast_fields,
    contrast_layer,
    expose,
)
from training.synth.texture import add_structures
from training.synth.types import CaseHeader, Laterality, RenderedView, VendorProfile, ViewName
from training.synth.variety import (
    CaseLook,
    Style,
    look_rng,
    sample_case_look,
    sample_processing,
    sample_structures,
)

#: UID root for synthetic objects (pydicom's; entropy makes UIDs deterministic per case).
UID_PREFIX = "1.2.826.0.1.3680043.8.498."


@dataclass(frozen=True)
class CaseParams:
    """Case-level draws: share of normal exams, how views/orientations are chosen, and the
    image family (``style``: ``standard`` for training, ``alt`` for an unseen-style set).
    With ``vary_tree`` the duct-tree ranges are drawn per case around ``tree``."""

    normal_p: float = 0.35
    mlo_p: float = 0.6  # otherwise ML
    alt_orientation_p: float = 0.25  # nipple pointing the non-standard way
    vflip_p: float = 0.08  # rows running the other way
    cannula_p: float = 0.8
    style: Style = "standard"
    vary_tree: bool = True
    tree: TreeParams = field(default_factory=TreeParams)
    lesions: LesionParams = field(default_factory=LesionParams)


@dataclass
class CaseResult:
    """A generated case: its views (canonical renders turned into stored orientation) and
    the dataset.json items describing them."""

    header: CaseHeader
    views: list[RenderedView]
    items: list[dict[str, Any]]
    ground_truth: dict[str, Any]


def synth_uid(seed: int, index: int, *parts: object) -> str:
    """A deterministic UID under :data:`UID_PREFIX` for ``(seed, index, *parts)``."""
    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=[str(seed), str(index),
                                                              *map(str, parts)]))


def make_header(seed: int, index: int, rng: np.random.Generator) -> CaseHeader:
    """Synthetic patient/study attributes (deterministic for ``seed``/``index``)."""
    age = int(rng.integers(28, 78))
    year = 2020 + int(rng.integers(0, 6))
    month, day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    hh, mm = int(rng.integers(7, 18)), int(rng.integers(0, 60))
    agent = str(rng.choice(["Iohexol 300 mgI/mL", "Iopamidol 300 mgI/mL",
                            "Iodixanol 320 mgI/mL", "Iopromide 300 mgI/mL"]))
    return CaseHeader(
        patient_id=f"SYN{seed % 10000:04d}{index:06d}",
        patient_name=f"SYNTHETIC^CASE{index:06d}",
        patient_birth_date=f"{year - age}{month:02d}{day:02d}",
        patient_age=f"{age:03d}Y",
        study_instance_uid=synth_uid(seed, index, "study"),
        study_id=f"{index % 100000:05d}",
        accession_number=f"GX{seed % 1000:03d}{index:07d}",
        study_date=f"{year}{month:02d}{day:02d}",
        study_time=f"{hh:02d}{mm:02d}00",
        contrast_agent=agent,
        contrast_volume_ml=float(np.round(rng.uniform(0.5, 2.0), 1)),
    )


def sample_tissue(rng: np.random.Generator, view: ViewName, geo: ViewGeometry,
                  texture: str = "power_law") -> TissueParams:
    """Tissue and exposure draws of one view (pectoral muscle in MLO, half the MLs)."""
    pect = None
    if view == "MLO" or (view == "ML" and rng.random() < 0.5):
        pect = (float(rng.uniform(25, 60)), float(rng.uniform(0.6, 1.1) * geo.nipple_xy_mm[1]),
                float(rng.uniform(0.8, 1.3)))
    return TissueParams(
        mu_fat=float(rng.uniform(0.042, 0.05)),
        mu_gland=float(rng.uniform(0.07, 0.085)),
        density=float(rng.beta(2.0, 2.2)),
        texture_beta=float(rng.uniform(2.6, 3.4)),
        skin_mm=float(rng.uniform(0.8, 2.0)),
        pectoral=pect,
        counts=float(np.exp(rng.uniform(np.log(500), np.log(4000)))),
        electronic_sigma=float(rng.uniform(2.0, 12.0)),
        spr=float(rng.uniform(0.08, 0.4)),
        scatter_sigma_mm=float(rng.uniform(12.0, 30.0)),
        texture=texture,
    )


def view_geometry(view: ViewName, rng: np.random.Generator, profile: VendorProfile,
                  depth_mm: float, look: CaseLook) -> ViewGeometry:
    """Where the compressed breast lands on the detector of ``profile`` in ``view``: C-arm
    angle, in-plane stretch, compressed thickness (35-70 mm) and the nipple position."""
    spacing = profile.patient_spacing_mm
    h, w = profile.rows * spacing, profile.cols * spacing
    angle = {"CC": 0.0, "ML": 90.0}.get(view, float(rng.uniform(40.0, 60.0)))
    expand = float(rng.uniform(1.05, 1.2))
    yn_frac = rng.uniform(0.42, 0.58) if view == "CC" else rng.uniform(0.5, 0.66)
    xn = min(depth_mm * expand, w - 12.0)
    return ViewGeometry(view=view, angle_deg=angle, expand=expand,
                        thickness_mm=float(rng.uniform(35.0, 70.0)),
                        nipple_xy_mm=(float(xn), float(yn_frac * h)),
                        nipple_len_mm=look.nipple.length_mm, nipple=look.nipple,
                        outline=look.outline)


def patient_orientation(laterality: Laterality, view: ViewName, hflip: bool, vflip: bool
                        ) -> tuple[str, str]:
    """PatientOrientation of a stored image.

    Canonical render: increasing column points anterior (to the nipple); increasing row
    points away from the image's upward axis ``v``: medial in CC, foot in ML, foot+medial in
    MLO. ``hflip`` mirrors columns (nipple pointing left), ``vflip`` mirrors rows.
    """
    row_dir = "P" if hflip else "A"
    medial, lateral = ("R", "L") if laterality == "L" else ("L", "R")
    if view == "CC":
        col_dir = lateral if vflip else medial
    elif view == "ML":
        col_dir = "H" if vflip else "F"
    else:
        col_dir = ("H" + lateral) if vflip else ("F" + medial)
    return row_dir, col_dir


def flip_box(box: list[float], shape: tuple[int, int], hflip: bool, vflip: bool
             ) -> list[float]:
    """A canonical ``[x1, y1, x2, y2]`` pixel box mirrored like the stored image
    (``shape`` = ``(rows, cols)``; ``hflip`` mirrors columns, ``vflip`` rows)."""
    x1, y1, x2, y2 = box
    if hflip:
        x1, x2 = shape[1] - x2, shape[1] - x1
    if vflip:
        y1, y2 = shape[0] - y2, shape[0] - y1
    return [x1, y1, x2, y2]


@dataclass
class CaseDraws:
    """Everything drawn for a case before any view is rendered (shared by the 2D views and
    the tomosynthesis views of :mod:`training.synth.dbt`).

    Attributes:
        look: case-level appearance (nipple, cannula, outline, tree ranges).
        header: synthetic patient and study attributes.
        laterality: ``"L"`` or ``"R"``.
        views: the two views, ``("CC", "ML")`` or ``("CC", "MLO")``.
        phantom: the 3D phantom (breast frame, mm); its mimics include the air pocket at
            the cannula tip when there is one.
        hflip / vflip: how the canonical render is mirrored into the stored image.
        cannula: whether a cannula is drawn.
        ground_truth: the case's 3D truth (the ``ground_truth`` of :class:`CaseResult`).
    """

    look: CaseLook
    header: CaseHeader
    laterality: Laterality
    views: tuple[ViewName, ViewName]
    phantom: Phantom
    hflip: bool
    vflip: bool
    cannula: bool
    ground_truth: dict[str, Any]


def draw_case(seed: int, index: int, profile: VendorProfile,
              params: CaseParams | None = None) -> CaseDraws:
    """Draw case ``index`` of a run seeded with ``seed``: header, breast, duct tree, lesions,
    mimics, orientation and ground truth (clock face, quadrant, depth third and distance
    from the nipple per lesion). Deterministic; rendering draws from other generators."""
    P = params or CaseParams()
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 0x6A1]))
    look = sample_case_look(P.style, look_rng(seed, index), P.tree, P.vary_tree)
    header = make_header(seed, index, rng)
    laterality: Laterality = "L" if rng.random() < 0.5 else "R"
    second: ViewName = "MLO" if rng.random() < P.mlo_p else "ML"
    width_mm = profile.cols * profile.patient_spacing_mm
    height_mm = profile.rows * profile.patient_spacing_mm
    sample = sample_breast_alt if P.style == "alt" else sample_breast
    breast = sample(rng, max_depth_mm=0.82 * width_mm / 1.2,
                    max_radius_mm=0.4 * height_mm / 1.2)
    if P.style == "alt":
        ducts = grow_duct_tree_alt(breast, rng, look.tree.max_branches)
    else:
        ducts = grow_duct_tree(breast, rng, look.tree)
    n_les = 0
    if rng.random() >= P.normal_p:
        n_les = 1 if rng.random() >= P.lesions.multiple_p else int(rng.integers(2, 5))
    lesions = place_lesions(ducts, n_les, rng, P.lesions)
    mimics = place_mimics(ducts, rng)
    phantom = Phantom(breast=breast, ducts=ducts, lesions=lesions, mimics=mimics,
                      contrast_mu_per_mm=float(np.exp(rng.uniform(np.log(0.18), np.log(1.1)))))
    alt = bool(rng.random() < P.alt_orientation_p)
    hflip = (laterality == "R") != alt  # standard hanging: right breast nipple points left
    vflip = bool(rng.random() < P.vflip_p)
    cannula = bool(rng.random() < P.cannula_p)
    pocket = air_pocket(ducts.branches[0], look.cannula) if cannula else None
    if pocket is not None:  # air at the cannula tip: a bubble that stays where it is
        mimics.append(Mimic("air_bubble", [pocket], 2.0 * pocket.radius))
    gt_lesions = [{
        "id": les.lesion_id, "kind": les.kind, "size_mm": round(les.size_mm, 2),
        "cutoff": les.cutoff,
        "clock_hour": clock_hour(les.center, laterality),
        "quadrant": quadrant(les.center, laterality),
        "depth": depth_third(les.center, breast),
        "distance_from_nipple_mm": round(float(np.linalg.norm(les.center)), 2),
        "position_mm": [round(float(x), 2) for x in les.center],
    } for les in lesions]
    gt = {"style": P.style, "laterality": laterality, "lesions": gt_lesions,
          "breast_depth_mm": round(breast.depth_mm, 1),
          "territory_clock_hour": clock_hour(
              np.array([0.0, np.cos(np.deg2rad(ducts.territory_psi_deg)),
                        np.sin(np.deg2rad(ducts.territory_psi_deg))]), laterality),
          "branches": len(ducts.branches), "ectasia": ducts.ectasia,
          "irregular_walls": ducts.irregular_walls,
          "mimics": sorted({m.kind for m in mimics})}
    return CaseDraws(look=look, header=header, laterality=laterality, views=("CC", second),
                     phantom=phantom, hflip=hflip, vflip=vflip, cannula=cannula,
                     ground_truth=gt)


def generate_case(seed: int, index: int, profile: VendorProfile,
                  params: CaseParams | None = None) -> CaseResult:
    """Generate case ``index`` of a run seeded with ``seed`` (deterministic).

    Returns the two rendered views in stored orientation and their dataset items (boxes,
    labels, lesion ids and kinds, mimics, nipple position, orientation) plus the 3D ground
    truth (clock face, quadrant, depth third and distance from the nipple per lesion).
    """
    P = params or CaseParams()
    draws = draw_case(seed, index, profile, P)
    header, look, laterality = draws.header, draws.look, draws.laterality
    phantom, hflip, vflip, cannula = draws.phantom, draws.hflip, draws.vflip, draws.cannula
    lesions = phantom.lesions
    views: list[RenderedView] = []
    items: list[dict[str, Any]] = []
    for vi, view in enumerate(draws.views):
        vrng = np.random.default_rng(np.random.SeedSequence([seed, index, 0x71E, vi]))
        rendered = render(phantom, view, profile, vrng, cannula, look,
                          look_rng(seed, index, vi))
        shape = rendered.pixels.shape
        pix = rendered.pixels
        if hflip:
            pix = pix[:, ::-1]
        if vflip:
            pix = pix[::-1, :]
        series_uid = synth_uid(seed, index, "series", vi)
        rv = RenderedView(
            pixels=np.ascontiguousarray(pix), bits_stored=profile.bits_stored,
            laterality=laterality, view=view,
            patient_orientation=patient_orientation(laterality, view, hflip, vflip),
            series_instance_uid=series_uid, sop_instance_uid=synth_uid(seed, index, "sop", vi),
            series_number=vi + 1, instance_number=1,
            kvp=float(np.round(vrng.uniform(26, 32))), exposure_mas=float(
                np.round(vrng.uniform(40, 200), 1)),
            body_part_thickness_mm=float(np.round(rendered.geometry.thickness_mm)),
            compression_force_n=float(np.round(vrng.uniform(60, 150))),
            positioner_primary_angle_deg=float(np.round(rendered.geometry.angle_deg)),
            acquisition_time=header.study_time,
        )
        views.append(rv)
        nx, ny = rendered.nipple_xy_px
        if hflip:
            nx = shape[1] - nx
        if vflip:
            ny = shape[0] - ny
        boxes = [flip_box(b, shape, hflip, vflip) for b in rendered.lesion_boxes.values()]
        items.append({
            "boxes": [[round(v, 1) for v in b] for b in boxes],
            "labels": ["filling_defect"] * len(boxes),
            "lesion_ids": list(rendered.lesion_boxes.keys()),
            "lesion_kind": [lesions[i].kind for i in rendered.lesion_boxes],
            "lesion_size_mm": [round(lesions[i].size_mm, 2) for i in rendered.lesion_boxes],
            "mimics": [{"kind": k, "box": [round(v, 1) for v in flip_box(b, shape, hflip,
                                                                          vflip)]}
                       for k, b in rendered.mimic_boxes],
            "laterality": laterality, "view": view,
            "patient_orientation": "\\".join(rv.patient_orientation),
            "nipple_xy": [round(nx, 1), round(ny, 1)],
            "chest_wall_side": "right" if hflip else "left",
            "study_instance_uid": header.study_instance_uid,
            "sop_instance_uid": rv.sop_instance_uid,
            "style": P.style,
        })
    return CaseResult(header=header, views=views, items=items,
                      ground_truth=draws.ground_truth)


def render(phantom: Phantom, view: ViewName, profile: VendorProfile, rng: np.random.Generator,
           cannula: bool, look: CaseLook, lrng: np.random.Generator) -> ViewRender:
    """Render one view of ``phantom`` for ``profile`` in canonical orientation.

    ``rng`` draws the view's geometry, tissue and noise; ``lrng`` its appearance (tissue
    structures, cannula path, processing) for the case's ``look``.
    """
    spacing = profile.patient_spacing_mm
    shape = (profile.rows, profile.cols)
    geo = view_geometry(view, rng, profile, phantom.breast.depth_mm, look)
    proc = sample_processing(look.style, lrng)
    tp = sample_tissue(rng, view, geo, proc.texture)
    A_low, mask_low = breast_fields(phantom.breast, geo, shape, spacing, tp, rng)
    c, lboxes, mboxes = contrast_layer(phantom, geo, shape, spacing, rng)
    if cannula:
        draw_cannula(c, geo, spacing, look.cannula, lrng)
    add_structures(c, phantom.breast, geo, spacing, phantom.contrast_mu_per_mm,
                   sample_structures(look.style, lrng), lrng)
    pixels = expose(A_low, mask_low, c, phantom.contrast_mu_per_mm, tp, spacing,
                    profile.bits_stored, rng, proc)
    nx, ny = geo.nipple_xy_mm
    return ViewRender(pixels=pixels, lesion_boxes=lboxes, mimic_boxes=mboxes,
                     nipple_xy_px=(nx / spacing, ny / spacing),
                     breast_mask_fraction=float(mask_low.mean()), geometry=geo,
                     breast_mask_low=mask_low)
