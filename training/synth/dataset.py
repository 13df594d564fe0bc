"""Generate a synthetic galactogram dataset: DICOM files plus ``dataset.json``.

Layout of ``OUT``::

    OUT/dataset.json
    OUT/cases/<case_id>/<laterality>_<view>.dcm       (two views per case)
    OUT/cases/<case_id>/<laterality>_<view>_tomo.dcm  (with ``dbt``: tomosynthesis views)

``dataset.json`` follows DESIGN.md: ``{"training": [...], "validation": [...], "test": [...]}``
where each item is one image with ``image`` (path relative to ``OUT``), ``boxes``
(``[x1, y1, x2, y2]`` stored-image pixels, x = column, x2/y2 exclusive) and ``labels``, plus
the fields below (``lesion_ids`` link a box to the case's 3D ``lesions``; ``mimics`` are NOT
lesions). A top-level ``meta`` object records how the set was made. The output is a pure
function of the arguments: the same seed gives the same bytes, whatever the worker count.

With ``SynthOptions.dbt`` every image is a Breast Tomosynthesis Image (multi-frame, see
:mod:`training.synth.dicom_out_dbt`) of the same phantom, and each item also has
``frames`` (the number of frames), per box ``frame_ranges`` (``[first, last]`` 1-based
frame numbers, inclusive), ``best_frames`` and ``heights_mm`` (centre height above the
breast support), each mimic dict ``frame_range``, ``best_frame`` and ``height_mm``, and
``dbt`` (sweep and reconstruction); boxes are in stored pixels of every frame. Frame ``k``
lies ``(k - 0.5) * slice_mm`` above the breast support; ``meta.options.dbt`` records the
DBT options.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.synth.case import CaseParams, generate_case
from training.synth.dbt import DbtParams, generate_dbt_case
from training.synth.dicom_out import SYNTH_TRANSFER_SYNTAXES, write_view
from training.synth.dicom_out_dbt import write_dbt_view
from training.synth.profiles import PROFILES, get_profile
from training.synth.variety import STYLES

SPLITS = ("training", "validation", "test")
GENERATOR_VERSION = "2"


@dataclass(frozen=True)
class SynthOptions:
    """What to generate.

    Attributes:
        cases: number of cases (two images each).
        seed: master seed; case ``i`` depends only on ``(seed, i)``.
        profiles: vendor profile names; each case draws one uniformly.
        split: fraction of cases per split name (fractions sum to 1).
        normal_share: share of cases with no filling defect.
        compressed_share: share of files written with a lossless compressed transfer syntax
            (spread evenly over JPEG 2000, JPEG-LS, RLE and deflate).
        monochrome1_share: share of files written as MONOCHROME1.
        first_index: index of the first case (to extend a set with new cases).
        style: image family: ``standard`` (the training family) or ``alt`` (a different
            generating procedure, for an unseen-style validation/test set); recorded as
            ``style`` in every item.
        dbt: write tomosynthesis volumes with these parameters instead of 2D views
            (``None``: 2D). The compressed-share and MONOCHROME1 options do not apply to
            tomosynthesis files (native, MONOCHROME2).
    """

    cases: int
    seed: int
    profiles: tuple[str, ...] = ("hologic",)
    split: dict[str, float] = field(default_factory=lambda: {"training": 1.0})
    normal_share: float = 0.35
    compressed_share: float = 0.2
    monochrome1_share: float = 0.3
    first_index: int = 0
    style: str = "standard"
    dbt: DbtParams | None = None

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"unknown style {self.style!r}; expected one of {STYLES}")
        if self.cases < 1:
            raise ValueError(f"cases must be >= 1, got {self.cases}")
        for p in self.profiles:
            get_profile(p)
        unknown = set(self.split) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split name(s) {sorted(unknown)}; expected {SPLITS}")
        total = sum(self.split.values())
        if any(v < 0 for v in self.split.values()) or abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {self.split}")
        for name in ("normal_share", "compressed_share", "monochrome1_share"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {v}")


def parse_split(text: str) -> dict[str, float]:
    """Parse ``--split``: a split name (``test``) or fractions
    (``training=0.8,validation=0.1,test=0.1``)."""
    text = text.strip()
    if text in SPLITS:
        return {text: 1.0}
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--split: expected a split name {SPLITS} or name=fraction "
                             f"pairs, got {text!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--split: fraction for {name!r} is not a number: {value!r}"
                             ) from None
    return out


def parse_profiles(text: str) -> tuple[str, ...]:
    """Parse ``--profile``: one name, a comma list, or ``mix`` (every full-size profile)."""
    if text == "mix":
        return tuple(p for p in PROFILES if p != "test")
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    for p in names:
        get_profile(p)
    return names


def _case_choices(opts: SynthOptions, index: int) -> dict[str, Any]:
    """Per-case draws that belong to the dataset level (not the image): profile, split,
    photometric interpretation and transfer syntax of each view."""
    rng = np.random.default_rng(np.random.SeedSequence([opts.seed, index, 0xD5]))
    profile = opts.profiles[int(rng.integers(len(opts.profiles)))]
    names = list(opts.split)
    split = names[int(rng.choice(len(names), p=np.array([opts.split[n] for n in names])))]
    compressed = [ts for ts in SYNTH_TRANSFER_SYNTAXES if ts != "1.2.840.10008.1.2.1"]
    views = []
    for _ in range(2):
        photometric = "MONOCHROME1" if rng.random() < opts.monochrome1_share else "MONOCHROME2"
        ts = "1.2.840.10008.1.2.1"
        if rng.random() < opts.compressed_share:
            ts = compressed[int(rng.integers(len(compressed)))]
        views.append((photometric, ts))
    return {"profile": profile, "split": split, "views": views}


def generate_one(opts: SynthOptions, out: Path, index: int) -> dict[str, Any]:
    """Generate and write case ``index``; return its split name and dataset items."""
    choice = _case_choices(opts, index)
    profile = get_profile(choice["profile"])
    params = CaseParams(normal_p=opts.normal_share,
                        style="alt" if opts.style == "alt" else "standard")
    result = generate_case(opts.seed, index, profile, params)
    case_id = f"case_{index:06d}"
    case_dir = out / "cases" / case_id
    case_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for view, item, (photometric, ts) in zip(result.views, result.items, choice["views"],
                                              strict=True):
        rel = f"cases/{case_id}/{view.laterality}_{view.view}.dcm"
        write_view(view, result.header, profile, out / rel, photometric=photometric,
                   transfer_syntax=ts)
        items.append({
            "image": rel, **item, "case_id": case_id, "profile": profile.name,
            "spacing_mm": profile.patient_spacing_mm, "photometric": photometric,
            "transfer_syntax": ts, "lesions": result.ground_truth["lesions"],
            "case": {k: v for k, v in result.ground_truth.items() if k != "lesions"},
        })
    return {"split": choice["split"], "items": items}


def generate_one_dbt(opts: SynthOptions, out: Path, index: int) -> dict[str, Any]:
    """Generate and write the tomosynthesis views of case ``index`` (same profile and split
    as the case's 2D views would get); return its split name and dataset items."""
    assert opts.dbt is not None
    choice = _case_choices(opts, index)
    profile = get_profile(choice["profile"])
    params = CaseParams(normal_p=opts.normal_share,
                        style="alt" if opts.style == "alt" else "standard")
    result = generate_dbt_case(opts.seed, index, profile, params, opts.dbt)
    case_id = f"case_{index:06d}"
    case_dir = out / "cases" / case_id
    case_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for view, item in zip(result.views, result.items, strict=True):
        rel = f"cases/{case_id}/{view.laterality}_{view.view}_tomo.dcm"
        write_dbt_view(view, result.header, profile, out / rel)
        items.append({
            "image": rel, **item, "case_id": case_id, "profile": profile.name,
            "spacing_mm": view.spacing_mm, "photometric": "MONOCHROME2",
            "transfer_syntax": "1.2.840.10008.1.2.1",
            "lesions": result.ground_truth["lesions"],
            "case": {k: v for k, v in result.ground_truth.items() if k != "lesions"},
        })
    return {"split": choice["split"], "items": items}


def _run(args: tuple[SynthOptions, Path, int]) -> dict[str, Any]:
    if args[0].dbt is not None:
        return generate_one_dbt(*args)
    return generate_one(*args)


def iter_cases(opts: SynthOptions, out: Path, workers: int) -> Iterator[dict[str, Any]]:
    """Generate every case (in index order), in ``workers`` processes when > 1."""
    jobs = [(opts, out, opts.first_index + i) for i in range(opts.cases)]
    if workers <= 1:
        yield from map(_run, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_run, jobs, chunksize=1)


def build_index(opts: SynthOptions, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``dataset.json`` content for generated ``results`` (deterministic)."""
    index: dict[str, Any] = {s: [] for s in SPLITS}
    for res in results:
        index[res["split"]].extend(res["items"])
    meta = asdict(opts)
    meta["profiles"] = list(opts.profiles)
    if meta["dbt"] is None:  # 2D sets keep their meta unchanged
        del meta["dbt"]
    index["meta"] = {"generator": "galacto synth", "generator_version": GENERATOR_VERSION,
                     "options": meta, "label_names": ["filling_defect"],
                     "box_convention": "[x1, y1, x2, y2] stored-image pixels, x = column, "
                                       "origin top-left corner, x2/y2 exclusive"}
    return index


def write_index(out: Path, index: dict[str, Any]) -> Path:
    """Write ``dataset.json`` atomically; return its path."""
    path = out / "dataset.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(index, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def summarize(index: dict[str, Any]) -> list[tuple[str, int, int, int, int]]:
    """Rows ``(split, images, images with lesions, lesion boxes, mimic boxes)``."""
    rows = []
    for s in SPLITS:
        items = index.get(s, [])
        rows.append((s, len(items), sum(1 for it in items if it["boxes"]),
                     sum(len(it["boxes"]) for it in items),
                     sum(len(it["mimics"]) for it in items)))
    return rows
