"""The evaluation report: every measure in one JSON-serializable mapping, and the CLI's tables.

- :func:`evaluate`: FROC, COCO AP and the breakdown at one threshold as JSON
  (``json.dumps(..., allow_nan=False)``).
- :func:`format_tables`: rich tables from such a report.
- :func:`json_number`, :func:`sensitivity_json`, :func:`false_positives_json`,
  :func:`percent`, :func:`decimal`: the JSON and text forms of single values, shared with
  :mod:`training.mimic_metrics`; :func:`threshold_json`: the ``at_threshold`` section, shared
  with :mod:`training.evaluate_dbt`. Undefined values (nan, inf) are ``None`` in JSON and ``–``
  in text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.table import Table

from training.metrics.ap import DEFAULT_AP_IOUS, average_precision
from training.metrics.breakdown import DEFAULT_SIZE_BINS_MM, ThresholdReport, threshold_report
from training.metrics.counts import FalsePositives, Sensitivity
from training.metrics.froc import DEFAULT_FP_RATES, froc_of
from training.metrics.matching import HIT_RULE, Prediction, Truth, match

__all__ = [
    "decimal",
    "evaluate",
    "false_positives_json",
    "format_tables",
    "json_number",
    "percent",
    "sensitivity_json",
    "threshold_json",
]


# --------------------------------------------------------------------------- JSON

def json_number(v: float) -> float | None:
    """JSON-safe float: nan and inf become None."""
    return float(v) if math.isfinite(v) else None


def sensitivity_json(s: Sensitivity) -> dict[str, Any]:
    """``{detected, lesions, sensitivity}`` of a :class:`Sensitivity`."""
    return {"detected": s.detected, "lesions": s.lesions, "sensitivity": json_number(s.value)}


def false_positives_json(f: FalsePositives) -> dict[str, Any]:
    """``{count, images, per_image}`` of a :class:`FalsePositives`."""
    return {"count": f.count, "images": f.images, "per_image": json_number(f.per_image)}


def threshold_json(at: ThresholdReport, threshold: float) -> dict[str, Any]:
    """The ``at_threshold`` section of a report: ``threshold``; ``overall``, ``by_size``,
    ``by_kind``, ``by_profile`` as ``{detected, lesions, sensitivity}``; ``false_positives``,
    ``fp_by_profile``, ``fp_on_mimics``, ``fp_on_mimic_kind`` as ``{count, images,
    per_image}``; ``mimics_flagged`` as ``{flagged, mimics, fraction}``. Shared by
    :func:`evaluate` and :mod:`training.evaluate_dbt`."""
    return {
        "threshold": float(threshold),
        "overall": sensitivity_json(at.overall),
        "by_size": {k: sensitivity_json(v) for k, v in at.by_size.items()},
        "by_kind": {k: sensitivity_json(v) for k, v in at.by_kind.items()},
        "by_profile": {k: sensitivity_json(v) for k, v in at.by_profile.items()},
        "false_positives": false_positives_json(at.false_positives),
        "fp_by_profile": {k: false_positives_json(v) for k, v in at.fp_by_profile.items()},
        "fp_on_mimics": false_positives_json(at.fp_on_mimics),
        "fp_on_mimic_kind": {k: false_positives_json(v)
                             for k, v in at.fp_on_mimic_kind.items()},
        "mimics_flagged": {k: {"flagged": v.detected, "mimics": v.lesions,
                               "fraction": json_number(v.value)}
                           for k, v in at.mimics_flagged.items()},
    }


def evaluate(truths: Sequence[Truth], predictions: Sequence[Prediction], threshold: float,
             fp_rates: Sequence[float] = DEFAULT_FP_RATES,
             size_bins_mm: Sequence[float] = DEFAULT_SIZE_BINS_MM,
             ap_ious: Sequence[float] = DEFAULT_AP_IOUS) -> dict[str, Any]:
    """Every measure of :mod:`training.metrics` in one JSON-serializable report
    (``json.dumps(..., allow_nan=False)``).

    Keys: ``hit_rule``; ``images``, ``normal_images``, ``lesions``, ``predictions``;
    ``froc`` (``fp_rates``, ``sensitivity``, ``thresholds`` at each rate, ``cpm`` and the full
    ``curve``: ``thresholds``, ``sensitivity``, ``fp_per_image``); ``ap`` (``{"0.1": ...}``);
    ``at_threshold`` (``threshold``, ``overall``, ``by_size``, ``by_kind``, ``by_profile`` as
    ``{detected, lesions, sensitivity}``; ``false_positives``, ``fp_by_profile``,
    ``fp_on_mimics``, ``fp_on_mimic_kind`` as ``{count, images, per_image}``;
    ``mimics_flagged`` as ``{flagged, mimics, fraction}``). Undefined values (sensitivity
    without lesions, an infinite threshold) are ``None``.
    """
    m = match(truths, predictions)
    fr = froc_of(m, fp_rates)
    at = threshold_report(m, threshold, size_bins_mm)
    ap = average_precision(truths, predictions, ap_ious)
    return {
        "hit_rule": HIT_RULE,
        "images": m.n_images,
        "normal_images": sum(1 for t in truths if not t.get("boxes")),
        "lesions": fr.n_lesions,
        "predictions": int(m.all_scores.size),
        "froc": {
            "fp_rates": list(fr.fp_rates),
            "sensitivity": [json_number(v) for v in fr.sensitivity_at_rates],
            "thresholds": [json_number(v) for v in fr.thresholds_at_rates],
            "cpm": json_number(fr.cpm),
            "curve": {
                "thresholds": [float(v) for v in fr.thresholds],
                "sensitivity": [json_number(float(v)) for v in fr.sensitivity],
                "fp_per_image": [float(v) for v in fr.fp_per_image],
            },
        },
        "ap": {f"{t:g}": json_number(v) for t, v in ap.items()},
        "at_threshold": threshold_json(at, threshold),
    }


# --------------------------------------------------------------------------- text

def percent(v: float | None) -> str:
    """A fraction as a percentage with one decimal (``"42.0 %"``); ``–`` for None."""
    return "–" if v is None else f"{100 * v:.1f} %"


def decimal(v: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``–`` for None."""
    return "–" if v is None else f"{v:.{digits}f}"


def _ci(interval: Sequence[float] | None, fmt: Callable[[float | None], str]) -> str:
    return "–" if interval is None else f"{fmt(interval[0])} – {fmt(interval[1])}"


def _group_table(title: str, counts: str, rate: str) -> Table:
    """An empty table with the columns group, name (left), ``counts`` and ``rate`` (right)."""
    table = Table(title=title)
    table.add_column("group")
    table.add_column("", justify="left")
    table.add_column(counts, justify="right")
    table.add_column(rate, justify="right")
    return table


def format_tables(report: Mapping[str, Any]) -> list[Table]:
    """Rich tables for the CLI from an :func:`evaluate` report.

    In order: FROC (sensitivity and threshold at each FP/image rate, CPM, and their bootstrap
    confidence intervals when the report's ``froc`` has a ``ci``), COCO AP, sensitivity
    at the report's threshold by size / kind / profile, and false positives per image (overall,
    per profile, on mimics, per mimic kind, mimics flagged).
    """
    fr = report["froc"]
    ci = fr.get("ci")
    caption = f"CPM {decimal(fr['cpm'])}"
    if ci:
        caption += (f" ({100 * ci['level']:g} % CI {_ci(ci['cpm'], decimal)}; {ci['resamples']} "
                    f"bootstrap resamples of {ci['patients']} patients)")
    t_froc = Table(title=f"FROC ({report['images']} images, {report['lesions']} lesions)",
                   caption=caption)
    t_froc.add_column("FP / image", justify="right")
    t_froc.add_column("sensitivity", justify="right")
    if ci:
        t_froc.add_column(f"{100 * ci['level']:g} % CI", justify="right")
    t_froc.add_column("threshold", justify="right")
    for k, (rate, sens, thr) in enumerate(zip(fr["fp_rates"], fr["sensitivity"],
                                              fr["thresholds"], strict=True)):
        interval = [_ci(ci["sensitivity"][k], percent)] if ci else []
        t_froc.add_row(f"{rate:g}", percent(sens), *interval, decimal(thr))

    t_ap = Table(title="COCO AP (101-point)")
    t_ap.add_column("IoU", justify="right")
    t_ap.add_column("AP", justify="right")
    for iou, ap in report["ap"].items():
        t_ap.add_row(iou, decimal(ap))

    at = report["at_threshold"]
    t_sens = _group_table(f"Sensitivity at threshold {at['threshold']:.3g}",
                          "detected / lesions", "sensitivity")
    ov = at["overall"]
    t_sens.add_row("all", "", f"{ov['detected']} / {ov['lesions']}", percent(ov["sensitivity"]))
    for section, key in (("size (mm)", "by_size"), ("kind", "by_kind"), ("profile", "by_profile")):
        t_sens.add_section()
        for name, s in at[key].items():
            t_sens.add_row(section, name, f"{s['detected']} / {s['lesions']}",
                           percent(s["sensitivity"]))

    t_fp = _group_table(f"False positives at threshold {at['threshold']:.3g}",
                        "FPs / images", "FP / image")
    fp = at["false_positives"]
    t_fp.add_row("all", "", f"{fp['count']} / {fp['images']}", decimal(fp["per_image"]))
    t_fp.add_section()
    for name, f in at["fp_by_profile"].items():
        t_fp.add_row("profile", name, f"{f['count']} / {f['images']}", decimal(f["per_image"]))
    t_fp.add_section()
    om = at["fp_on_mimics"]
    t_fp.add_row("on mimics", "any", f"{om['count']} / {om['images']}", decimal(om["per_image"]))
    for name, f in at["fp_on_mimic_kind"].items():
        flagged = at["mimics_flagged"].get(name)
        note = f" ({flagged['flagged']} of {flagged['mimics']} flagged)" if flagged else ""
        t_fp.add_row("on mimics", name + note, f"{f['count']} / {f['images']}",
                     decimal(f["per_image"]))
    return [t_froc, t_ap, t_sens, t_fp]

