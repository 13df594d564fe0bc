"""``galacto evaluate``: the exported ONNX model, run through serving's pipeline, on a dataset.

What is measured is what is deployed: DICOM -> ``serving.pipeline.dicom_in`` -> preprocess ->
ONNX Runtime -> numpy decoding -> boxes in stored pixels, compared with ``dataset.json``
using :mod:`training.metrics` (hit rule: predicted box centre inside the true box, or IoU
>= 0.3; air bubbles and other mimics count as false positives) and
:mod:`training.mimic_metrics` (air bubbles flagged, FP/image by mimic kind and near the nipple,
nested findings, mimics the model recognised, every named operating point's FP/image against
the card's promise; all also per ``style``), written under the report's ``mimics`` key.
The FROC sensitivities and the CPM get 95 % percentile bootstrap intervals over patients
(:mod:`training.bootstrap`; ``report["froc"]["ci"]``). ``dataset.json`` is validated first.
Tomosynthesis datasets (items with ``frames``) are evaluated per volume by
:mod:`training.evaluate_dbt` (frame rule, clock face, time per volume).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from serving.errors import CommandError
from serving.pipeline.candidates import rescore_model
from serving.pipeline.model import DetectorModel, ModelError, load_model
from training.bootstrap import bootstrap_froc
from training.data import load_split
from training.datasets import patient_key
from training.evaluate_dbt import is_dbt_item, run_dbt
from training.metrics import evaluate, format_tables, froc, plot_froc
from training.mimic_metrics import format_mimic_table, mimic_report
from training.rescore_fit import analyse_items, predictions

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)


def predict_items(model: DetectorModel, items: list[dict[str, Any]], desc: str = "evaluate"
                  ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Predictions per item through serving's candidate analysis (both views of a case
    together, so the card's two-view rescoring applies), and mean per-stage timings in ms.
    Each prediction holds the lesion candidates (``boxes``, final ``scores``) and the mimic
    calls (``mimic_boxes``, ``mimic_scores``, ``mimic_labels``) and ``spacing_mm``."""
    cands = analyse_items(model, items, rescore=False, final=False, desc=desc)
    preds = predictions(cands, model, rescore_model(model))
    totals: dict[str, float] = {}
    for c in cands:
        for k, v in c.timings_ms.items():
            totals[k] = totals.get(k, 0.0) + v
    n = max(len(items), 1)
    return preds, {k: v / n for k, v in totals.items()}


def operating_points(items: list[dict[str, Any]], preds: list[dict[str, Any]]
                     ) -> dict[str, dict[str, Any]]:
    """Named operating points read off the FROC curves of validation predictions:
    ``high_specificity`` (<= 0.125 FP/image), ``balanced`` (<= 0.5) and
    ``high_sensitivity`` (<= 2).

    When the items come in several ``style`` families (e.g. the training style and an unseen
    one), each point's threshold is the strictest of the per-style thresholds, so that the
    FP budget holds on every style, not only on the pool; sensitivity and FP/image are then
    measured on the pool at that threshold.
    """
    styles = sorted({str(it.get("style", "standard")) for it in items})
    groups = [[i for i, it in enumerate(items) if str(it.get("style", "standard")) == st]
              for st in styles]
    curves = [froc([items[i] for i in g], [preds[i] for i in g], FP_RATES) for g in groups]
    ops = {}
    for name, budget in (("high_specificity", 0.125), ("balanced", 0.5),
                         ("high_sensitivity", 2.0)):
        thr = max(c.read(budget)[0] for c in curves)
        thr = float(thr) if np.isfinite(thr) else 1.01  # nothing qualifies: report nothing
        at = evaluate(items, preds, thr, fp_rates=())["at_threshold"]
        sens = at["overall"]["sensitivity"]
        ops[name] = {"score_threshold": round(thr, 6), "max_fp_per_image": budget,
                     "sensitivity": None if sens is None else round(float(sens), 4),
                     "fp_per_image": round(float(at["false_positives"]["per_image"]), 4)}
    return ops


def style_spread(items: list[dict[str, Any]], preds: list[dict[str, Any]],
                 ops: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per image ``style`` (items without one: ``standard``): images, CPM, and at each
    operating point of ``ops`` the FP/image and sensitivity measured on that style alone,
    so the spread of an operating point's FP rate across styles can be reported."""
    out: dict[str, dict[str, Any]] = {}
    for style in sorted({str(it.get("style", "standard")) for it in items}):
        idx = [i for i, it in enumerate(items) if str(it.get("style", "standard")) == style]
        sub_items, sub_preds = [items[i] for i in idx], [preds[i] for i in idx]
        res = froc(sub_items, sub_preds, FP_RATES)
        points = {}
        for name, op in ops.items():
            rep = evaluate(sub_items, sub_preds, float(op["score_threshold"]), fp_rates=())
            at = rep["at_threshold"]
            points[name] = {"fp_per_image": at["false_positives"]["per_image"],
                            "sensitivity": at["overall"]["sensitivity"]}
        out[style] = {"images": len(idx), "cpm": round(float(res.cpm), 4),
                      "operating_points": points}
    return out


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the tables, write the report and plot."""
    from rich.console import Console

    try:
        items = load_split(args.data, args.split)
        model = load_model(args.model)
        op = model.operating_point(args.operating_point)
    except (ModelError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    if args.bootstrap < 0:
        raise CommandError(f"--bootstrap {args.bootstrap}: expected 0 (none) or more resamples")
    if args.limit:
        items = items[: args.limit]
    if not items:
        raise CommandError(f"{args.data}: split {args.split!r} is empty")
    n_dbt = sum(1 for it in items if is_dbt_item(it))
    if n_dbt:
        if n_dbt != len(items):
            raise CommandError(f"{args.data}: split {args.split!r} mixes {n_dbt} tomosynthesis "
                               f"volumes with {len(items) - n_dbt} 2D images; evaluate them "
                               "as separate datasets")
        return run_dbt(args, items, model, op)
    preds, timings = predict_items(model, items)
    report = evaluate(items, preds, op.score_threshold, fp_rates=FP_RATES)
    if args.bootstrap:
        report["froc"]["ci"] = bootstrap_froc(items, preds, [patient_key(it) for it in items],
                                              FP_RATES, resamples=args.bootstrap,
                                              seed=args.bootstrap_seed)
    report["model"] = {"name": model.name, "version": model.version,
                       "operating_point": op.name, "score_threshold": op.score_threshold}
    report["mimics"] = mimic_report(items, preds, op.score_threshold, model.operating_points)
    report["mean_timings_ms"] = timings
    console = Console()
    for table in [*format_tables(report), format_mimic_table(report["mimics"])]:
        console.print(table)
    console.print(f"operating point {op.name} (score >= {op.score_threshold:.3f}); mean ms per "
                  "image: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    if args.plot:
        plot_froc({f"{model.name} {model.version} ({args.split})":
                   froc(items, preds, FP_RATES)}, args.plot)
    return 0
