"""``galacto evaluate`` on tomosynthesis (DBT) datasets: the 2D model run through each volume.

A dataset whose items carry ``frames`` (``galacto synth --dbt``, see
:mod:`training.synth.dataset`) is evaluated here; :func:`training.evaluate.run` dispatches.
What is measured is what serving does with a study's volumes (:mod:`training.predict_dbt`):
each volume through :func:`serving.pipeline.detect_volume.analyse_volume` (the 2D detector on
slabs, detections linked in depth into one candidate per lesion, refocused, located from the
single view: in-plane position plus the best frame's height), then the volumes of each study
rescored together with their other views when the card has a tomosynthesis rescoring
(:func:`serving.pipeline.volume_rescore.rescore_volumes`).

Measures (all per volume, one DBT view = one volume):

- **FROC** with the frame rule (:mod:`training.metrics.frames`: the 2D box rule and the
  candidate's best frame within the lesion's frame range +/- 2), sensitivity at 0.125 to 8
  false positives per volume and their mean, the CPM; with ``--bootstrap``, percentile
  intervals over patients (as :mod:`training.bootstrap` does for 2D).
- **At the operating point** (the card's tomosynthesis threshold, else its 2D one, applied
  to the candidates' final scores):
  sensitivity by size / kind / profile, FP per volume, FP on each mimic kind, and air bubbles
  flagged (a true bubble hit by any reported candidate, frame rule).
- **Clock face** (:func:`clock_face_report`): for every lesion hit (its highest-scoring hit),
  whether that candidate's single-view clock hour lies within +/- 1 h of the truth's clock
  hour (circular: 12 and 1 are 1 h apart); per view family (CC; ML/MLO), over all hits and
  over hits at the operating point. A candidate without a clock hour (no landmarks, view
  without a height axis) counts as wrong and is also counted apart.
- **Timing**: seconds per volume (read, detect, link, locate) and the detector's stage times.

Boxes are ``[x1, y1, x2, y2]`` stored pixels of a frame (x = column, x2/y2 exclusive); frame
numbers in reports and predictions are 1-based (DICOM), as in ``dataset.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rich.table import Table

from serving.errors import CommandError
from serving.pipeline.locate.birads import CLOCKLESS_REGIONS
from serving.pipeline.locate.breast_frame import CC_VIEWS
from serving.pipeline.model import DetectorModel, OperatingPoint
from training.bootstrap import DEFAULT_LEVEL, PatientCounts, froc_of_weights
from training.data_dbt import is_dbt_item
from training.datasets import patient_key
from training.metrics import (
    FRAME_HIT_RULE,
    FRAME_TOLERANCE,
    VOLUME_FP_RATES,
    best_hit_index,
    match_volumes,
    mimic_hit_scores,
    plot_froc,
)
from training.metrics.breakdown import DEFAULT_SIZE_BINS_MM, threshold_report
from training.metrics.frames import volume_hits
from training.metrics.froc import FrocResult, froc_of
from training.metrics.matching import Matched
from training.metrics.report import (
    decimal,
    false_positives_json,
    json_number,
    percent,
    threshold_json,
)
from training.predict_dbt import VolumeResult, predict_volumes

__all__ = [
    "CLOCKLESS_REGIONS",
    "CLOCK_TOLERANCE_H",
    "ML_VIEWS",
    "bootstrap_volumes",
    "clock_distance_h",
    "clock_face_report",
    "evaluate_volumes",
    "format_dbt_tables",
    "is_dbt_item",
    "run_dbt",
    "view_family",
]

CLOCK_TOLERANCE_H = 1
"""A single-view clock hour counts as right within this many hours of the truth (circular)."""

DETECTOR_STAGES = ("preprocess", "inference", "postprocess")
"""The stages of one detector run, summed for ``ms_per_detector_run``."""

ML_VIEWS = frozenset({"ML", "MLO", "LM", "LMO"})
"""Views counted in the ``ML/MLO`` family of the clock-face accuracy (CC_VIEWS: ``CC``)."""


def view_family(view: str | None) -> str:
    """``"CC"`` (CC, XCCL, XCCM, FB), ``"ML/MLO"`` (ML, MLO, LM, LMO) or ``"other"``."""
    v = (view or "").upper()
    if v in CC_VIEWS:
        return "CC"
    if v in ML_VIEWS:
        return "ML/MLO"
    return "other"


def clock_distance_h(a: int, b: int) -> int:
    """Circular distance in whole hours between two clock hours (1-12; 12 and 0 alike):
    ``clock_distance_h(12, 1) == 1``, ``clock_distance_h(3, 9) == 6``."""
    d = abs(int(a) - int(b)) % 12
    return min(d, 12 - d)



def _truth_locations(item: Mapping[str, Any]) -> list[tuple[int | None, str | None]]:
    """Per box of a DBT item the 3D truth's ``(clock_hour, quadrant)`` (``lesion_ids`` into
    ``lesions``), ``None`` where unknown."""
    by_id = {les.get("id"): les for les in (item.get("lesions") or [])}
    ids = item.get("lesion_ids") or [None] * len(item.get("boxes") or [])
    out: list[tuple[int | None, str | None]] = []
    for i in ids:
        les = by_id.get(i) or {}
        hour, region = les.get("clock_hour"), les.get("quadrant")
        out.append((None if hour is None else int(hour), None if region is None else str(region)))
    return out


def _share(n: int, ok: int) -> float | None:
    return ok / n if n else None


def clock_face_report(items: Sequence[Mapping[str, Any]],
                      predictions: Sequence[Mapping[str, Any]], threshold: float = -math.inf,
                      tolerance_h: int = CLOCK_TOLERANCE_H,
                      frame_tolerance: int = FRAME_TOLERANCE) -> dict[str, Any]:
    """Single-view location accuracy of the lesions hit, per view family.

    A lesion is *hit* when its highest-scoring frame-rule hit (:func:`~training.metrics.
    frames.volume_hits`, the rule :func:`~training.metrics.match_volumes` applies) has
    ``score >= threshold``; that candidate's ``clock_hours`` (and ``regions``) entry is
    compared with the truth's ``clock_hour`` (and ``quadrant``), via ``lesion_ids`` and
    ``lesions``. Lesions without a truth clock hour are left out. Families by the item's
    ``view`` (:func:`view_family`). Measures:

    - every hit lesion's clock hour: right when :func:`clock_distance_h` ``<= tolerance_h``
      (``lesions_hit``, ``within``, ``no_clock_hour``, ``accuracy``); a candidate without a
      clock hour counts as wrong;
    - as BI-RADS states a location (ACR BI-RADS Atlas, 5th ed.: the retroareolar and central
      regions are named without a clock face; :func:`serving.pipeline.locate.birads.
      location_phrase`): ``off_axis``, the lesions whose truth region has a clock face, right
      within ``tolerance_h``; ``central``, the lesions whose truth region is retroareolar or
      central (:data:`CLOCKLESS_REGIONS`), right when the candidate's ``regions`` entry is
      one of them too; ``stated``, both together.

    Returns:
        ``{"threshold", "tolerance_h", "CC": {...}, "ML/MLO": {...}, "all": {...}}`` (and
        ``"other"`` when present), each ``{"lesions_hit", "within", "no_clock_hour",
        "accuracy", "off_axis": {"lesions_hit", "right", "accuracy"}, "central": {...},
        "stated": {...}}`` (an ``accuracy`` is ``None`` without hits).
    """
    keys = ("hit", "within", "none", "off", "off_ok", "cen", "cen_ok")
    counts: dict[str, dict[str, int]] = {f: dict.fromkeys(keys, 0) for f in ("CC", "ML/MLO")}
    for index, (item, pred) in enumerate(zip(items, predictions, strict=True)):
        if not item.get("boxes"):
            continue
        scores, hit = volume_hits(item, pred, index, frame_tolerance)
        best = best_hit_index(scores, hit)
        hours = list(pred.get("clock_hours") or [None] * len(scores))
        regions = list(pred.get("regions") or [None] * len(scores))
        c = counts.setdefault(view_family(item.get("view")), dict.fromkeys(keys, 0))
        for j, (truth_hour, truth_region) in enumerate(_truth_locations(item)):
            k = int(best[j])
            if truth_hour is None or k < 0 or scores[k] < threshold:
                continue
            hour = hours[k]
            right = hour is not None and clock_distance_h(hour, truth_hour) <= tolerance_h
            c["hit"] += 1
            c["none"] += hour is None
            c["within"] += right
            if truth_region in CLOCKLESS_REGIONS:
                c["cen"] += 1
                c["cen_ok"] += regions[k] in CLOCKLESS_REGIONS
            else:
                c["off"] += 1
                c["off_ok"] += right
    counts["all"] = {k: sum(v[k] for v in counts.values()) for k in keys}
    out: dict[str, Any] = {"threshold": json_number(threshold), "tolerance_h": tolerance_h}
    for name, c in counts.items():
        out[name] = {"lesions_hit": c["hit"], "within": c["within"], "no_clock_hour": c["none"],
                     "accuracy": _share(c["hit"], c["within"]),
                     "off_axis": {"lesions_hit": c["off"], "right": c["off_ok"],
                                  "accuracy": _share(c["off"], c["off_ok"])},
                     "central": {"lesions_hit": c["cen"], "right": c["cen_ok"],
                                 "accuracy": _share(c["cen"], c["cen_ok"])},
                     "stated": {"lesions_hit": c["off"] + c["cen"],
                                "right": c["off_ok"] + c["cen_ok"],
                                "accuracy": _share(c["off"] + c["cen"],
                                                   c["off_ok"] + c["cen_ok"])}}
    return out


def bootstrap_volumes(m: Matched, patients: Sequence[str], fp_rates: Sequence[float],
                      resamples: int, seed: int = 0, level: float = DEFAULT_LEVEL
                      ) -> dict[str, Any]:
    """Percentile bootstrap intervals of the per-volume FROC sensitivities and the CPM,
    resampling patients (the method of :func:`training.bootstrap.bootstrap_froc`, on marks
    matched by the frame rule: ``m`` from :func:`~training.metrics.match_volumes`).

    Raises:
        ValueError: ``resamples < 1``, ``level`` outside (0, 1), or not one patient per volume.
    """
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"expected resamples >= 1 and 0 < level < 1, got {resamples}, {level}")
    if len(patients) != m.n_images:
        raise ValueError(f"{len(patients)} patient names for {m.n_images} volumes")
    names = sorted(set(patients))
    row = np.array([names.index(p) for p in patients], dtype=np.int64)
    found = m.lesion_score[np.isfinite(m.lesion_score)]
    thresholds = np.unique(np.concatenate([found, m.fp_score]))[::-1]
    detected = np.zeros((len(names), thresholds.size))
    positives = np.zeros((len(names), thresholds.size))
    for r in range(len(names)):
        own_l = np.sort(m.lesion_score[row[m.lesion_image] == r])
        own_f = np.sort(m.fp_score[row[m.fp_image] == r])
        detected[r] = own_l.size - np.searchsorted(own_l, thresholds, side="left")
        positives[r] = own_f.size - np.searchsorted(own_f, thresholds, side="left")
    counts = PatientCounts(
        detected, positives,
        np.bincount(row[m.lesion_image], minlength=len(names)).astype(np.float64),
        np.bincount(row, minlength=len(names)).astype(np.float64))
    rng = np.random.default_rng(seed)
    n = len(names)
    draws = rng.integers(0, n, size=(resamples, n))
    weights = np.stack([np.bincount(d, minlength=n) for d in draws]).astype(np.float64)
    sens = froc_of_weights(counts, weights, fp_rates)
    cpm = sens.mean(axis=1) if len(fp_rates) else np.full(resamples, math.nan)

    def interval(values: NDArray[np.float64]) -> list[float] | None:
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return None
        lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
        return [round(float(lo), 4), round(float(hi), 4)]

    return {"method": "percentile bootstrap, patients resampled with replacement",
            "level": level, "resamples": resamples, "seed": seed, "patients": n,
            "sensitivity": [interval(sens[:, j]) for j in range(len(fp_rates))],
            "cpm": interval(cpm)}


def _froc_json(fr: FrocResult) -> dict[str, Any]:
    return {
        "fp_rates": list(fr.fp_rates),
        "sensitivity": [json_number(v) for v in fr.sensitivity_at_rates],
        "thresholds": [json_number(v) for v in fr.thresholds_at_rates],
        "cpm": json_number(fr.cpm),
        "curve": {"thresholds": [float(v) for v in fr.thresholds],
                  "sensitivity": [json_number(float(v)) for v in fr.sensitivity],
                  "fp_per_volume": [float(v) for v in fr.fp_per_image]},
    }


def evaluate_volumes(items: Sequence[Mapping[str, Any]],
                     predictions: Sequence[Mapping[str, Any]], threshold: float,
                     fp_rates: Sequence[float] = VOLUME_FP_RATES,
                     frame_tolerance: int = FRAME_TOLERANCE) -> dict[str, Any]:
    """The DBT measures of this module as JSON (``json.dumps(..., allow_nan=False)``).

    Keys: ``hit_rule``, ``frame_tolerance``, ``volumes``, ``normal_volumes``, ``lesions``,
    ``predictions``; ``froc`` (per volume: ``fp_rates``, ``sensitivity``, ``thresholds``,
    ``cpm``, ``curve``); ``sensitivity_at_1_fp_per_volume``; ``at_threshold`` (as the 2D
    report: ``overall``, ``by_size``, ``by_kind``, ``by_profile``, ``false_positives``
    (per volume), ``fp_by_profile``, ``fp_on_mimics``, ``fp_on_mimic_kind``,
    ``mimics_flagged`` by false positives); ``mimics`` (``air_bubbles_flagged`` by any
    reported candidate, ``fp_per_volume_by_mimic_kind``); ``clock_face`` (``all_hits`` and
    ``at_threshold``, see :func:`clock_face_report`).
    """
    m = match_volumes(items, predictions, frame_tolerance)
    fr = froc_of(m, fp_rates)
    one = froc_of(m, (1.0,))
    at = threshold_report(m, threshold, DEFAULT_SIZE_BINS_MM)
    kinds, best = mimic_hit_scores(items, predictions, frame_tolerance)
    bubbles = [s for k, s in zip(kinds, best, strict=True) if k == "air_bubble"]
    flagged = sum(1 for s in bubbles if s >= threshold)
    fp_kind = {k: false_positives_json(v) for k, v in at.fp_on_mimic_kind.items()}
    for k in ("air_bubble", "cyst", "extravasation"):
        fp_kind.setdefault(k, {"count": 0, "images": m.n_images, "per_image": 0.0})
    return {
        "hit_rule": FRAME_HIT_RULE,
        "frame_tolerance": frame_tolerance,
        "volumes": m.n_images,
        "normal_volumes": sum(1 for t in items if not t.get("boxes")),
        "lesions": fr.n_lesions,
        "predictions": int(m.all_scores.size),
        "froc": _froc_json(fr),
        "sensitivity_at_1_fp_per_volume": json_number(one.sensitivity_at_rates[0]),
        "at_threshold": threshold_json(at, threshold),
        "mimics": {
            "air_bubbles_flagged": {"flagged": flagged, "bubbles": len(bubbles),
                                    "fraction": flagged / len(bubbles) if bubbles else None},
            "fp_per_volume_by_mimic_kind": fp_kind,
        },
        "clock_face": {
            "all_hits": clock_face_report(items, predictions, -math.inf,
                                          frame_tolerance=frame_tolerance),
            "at_threshold": clock_face_report(items, predictions, threshold,
                                              frame_tolerance=frame_tolerance),
        },
    }


# --------------------------------------------------------------------------- text

def _clock(c: Mapping[str, Any] | None) -> str:
    if not c or not c["lesions_hit"]:
        return "–"
    right = c["within"] if "within" in c else c["right"]
    return f"{right} / {c['lesions_hit']} ({percent(c['accuracy'])})"


def format_dbt_tables(report: Mapping[str, Any]) -> list[Table]:
    """Rich tables for the CLI from a DBT report: FROC per volume (with the bootstrap
    interval when present), the operating point, clock face and timing."""
    fr = report["froc"]
    ci = fr.get("ci")
    caption = f"CPM {decimal(fr['cpm'])}"
    if ci:
        lo_hi = ci["cpm"]
        caption += (f" ({100 * ci['level']:g} % CI "
                    f"{'–' if lo_hi is None else f'{lo_hi[0]:.3f} – {lo_hi[1]:.3f}'})")
    t_froc = Table(title=f"DBT FROC ({report['volumes']} volumes, {report['lesions']} lesions)",
                   caption=caption + f"; frame rule +/- {report['frame_tolerance']} frames")
    t_froc.add_column("FP / volume", justify="right")
    t_froc.add_column("sensitivity", justify="right")
    t_froc.add_column("threshold", justify="right")
    for rate, sens, thr in zip(fr["fp_rates"], fr["sensitivity"], fr["thresholds"], strict=True):
        t_froc.add_row(f"{rate:g}", percent(sens), decimal(thr))

    at = report["at_threshold"]
    scores = "rescored score" if report.get("dbt", {}).get("rescored") else "detector score"
    t_at = Table(title=f"At threshold {at['threshold']:.3g} ({scores})")
    t_at.add_column("measure")
    t_at.add_column("value", justify="right")
    ov, fp = at["overall"], at["false_positives"]
    t_at.add_row("sensitivity", f"{ov['detected']} / {ov['lesions']} "
                                f"({percent(ov['sensitivity'])})")
    t_at.add_row("FP / volume", f"{fp['count']} / {fp['images']} ({decimal(fp['per_image'])})")
    ab = report["mimics"]["air_bubbles_flagged"]
    t_at.add_row("air bubbles flagged", f"{ab['flagged']} / {ab['bubbles']}"
                                        f" ({percent(ab['fraction'])})")
    for kind, f in report["mimics"]["fp_per_volume_by_mimic_kind"].items():
        t_at.add_row(f"FP / volume on {kind}", decimal(f["per_image"]))

    t_clock = Table(title=f"Single-view location of hit lesions (clock face within +/- "
                          f"{CLOCK_TOLERANCE_H} h)")
    t_clock.add_column("lesions hit")
    for fam in ("CC", "ML/MLO", "all"):
        t_clock.add_column(fam, justify="right")
    for key, name in (("all_hits", "any score"), ("at_threshold", "at the threshold")):
        sec = report["clock_face"][key]
        t_clock.add_row(f"{name}: every lesion's clock hour",
                        *(_clock(sec.get(f)) for f in ("CC", "ML/MLO", "all")))
        for part, what in (("off_axis", "off-axis lesions' clock hour"),
                           ("central", "retroareolar/central lesions stated so"),
                           ("stated", "location as BI-RADS states it")):
            t_clock.add_row(f"{name}: {what}", *(_clock((sec.get(f) or {}).get(part))
                                                   for f in ("CC", "ML/MLO", "all")))

    tm = report["timing"]
    t_time = Table(title=f"Time per volume (slab {report['dbt']['slab']}, stride "
                         f"{report['dbt']['stride']})")
    t_time.add_column("measure")
    t_time.add_column("value", justify="right")
    s = tm["seconds_per_volume"]
    t_time.add_row("seconds per volume (mean / median / max)",
                   f"{s['mean']:.1f} / {s['median']:.1f} / {s['max']:.1f}")
    t_time.add_row("detector runs per volume (mean)", f"{tm['detector_runs_per_volume']:.1f}")
    t_time.add_row("ms per detector run (mean)", f"{tm['ms_per_detector_run']:.0f}")
    return [t_froc, t_at, t_clock, t_time]


# --------------------------------------------------------------------------- command

def _timing(results: Sequence[VolumeResult], items: Sequence[Mapping[str, Any]]
            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    secs = [r.seconds for r in results]
    runs = sum(r.detector_runs for r in results)
    stages: dict[str, float] = {}
    for r in results:
        for k, v in r.timings_ms.items():
            stages[k] = stages.get(k, 0.0) + v
    n = max(len(results), 1)
    summary = {
        "seconds_per_volume": {"mean": statistics.fmean(secs), "median": statistics.median(secs),
                               "min": min(secs), "max": max(secs)},
        "detector_runs_per_volume": runs / n,
        "ms_per_detector_run": (sum(stages.get(k, 0.0) for k in DETECTOR_STAGES) / runs)
        if runs else 0.0,
        "mean_stage_ms_per_volume": {k: v / n for k, v in stages.items()},
        "locate_seconds_per_volume": statistics.fmean(r.locate_seconds for r in results),
    }
    per_volume = [{"image": str(it["image"]), "view": it.get("view"), "frames": r.frames,
                   "detector_runs": r.detector_runs, "frames_read": r.frames_read,
                   "candidates": len(r.prediction["scores"]),
                   "seconds": round(r.seconds, 3), "locate_seconds": round(r.locate_seconds, 3),
                   "locate_error": r.locate_error}
                  for it, r in zip(items, results, strict=True)]
    return summary, per_volume


def run_dbt(args: argparse.Namespace, items: list[dict[str, Any]], model: DetectorModel,
            op: OperatingPoint) -> int:
    """Evaluate ``model`` on DBT ``items`` (``args``: ``--dbt-slab``, ``--dbt-stride``,
    ``--bootstrap``, ``--bootstrap-seed``, ``--out``, ``--plot``, ``--split``); print the
    tables, write the report and plot. Returns the exit status (0).

    Raises:
        CommandError: ``--dbt-slab`` or ``--dbt-stride`` below 1.
    """
    from rich.console import Console

    deployed = model.tomo_settings
    slab_arg, stride_arg = getattr(args, "dbt_slab", None), getattr(args, "dbt_stride", None)
    slab = deployed.slab if slab_arg is None else int(slab_arg)
    stride = deployed.stride if stride_arg is None else int(stride_arg)
    tomo_op = model.tomo_operating_point(op.name)
    threshold = op.score_threshold if tomo_op is None else tomo_op.score_threshold
    if slab < 1 or stride < 1:
        raise CommandError(f"--dbt-slab and --dbt-stride must be >= 1, got {slab}, {stride}")
    settings = replace(deployed, slab=slab, stride=stride)
    results = predict_volumes(model, items, settings=settings)
    preds = [r.prediction for r in results]
    report = evaluate_volumes(items, preds, threshold)
    if args.bootstrap:
        m = match_volumes(items, preds)
        report["froc"]["ci"] = bootstrap_volumes(m, [patient_key(it) for it in items],
                                                 VOLUME_FP_RATES, args.bootstrap,
                                                 args.bootstrap_seed)
    report["kind"] = "dbt"
    rescoring = model.tomo_rescoring
    report["dbt"] = {"slab": slab, "stride": stride, "slab_mode": settings.slab_mode,
                     "rescored": rescoring is not None,
                     "scores": "linked candidates' detector scores (the card has no "
                     "tomosynthesis rescoring)" if rescoring is None else
                     "linked candidates rescored with their other view (the card's "
                     "tomosynthesis rescoring; each study's volumes together)"}
    report["model"] = {"name": model.name, "version": model.version,
                       "operating_point": op.name, "score_threshold": threshold,
                       "threshold_source": "model card 2D point (the card has no "
                       "tomosynthesis points)" if tomo_op is None
                       else "model card tomosynthesis point"}
    report["timing"], report["per_volume"] = _timing(results, items)
    console = Console()
    for table in format_dbt_tables(report):
        console.print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    if args.plot:
        plot_froc({f"{model.name} {model.version} ({args.split}, DBT, FP per volume)":
                   froc_of(match_volumes(items, preds), VOLUME_FP_RATES)}, args.plot)
    return 0
