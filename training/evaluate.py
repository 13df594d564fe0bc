"""``galacto evaluate``: the exported ONNX model, run through serving's pipeline, on a dataset.

What is measured is what is deployed: DICOM -> ``serving.pipeline.dicom_in`` -> preprocess ->
ONNX Runtime -> numpy decoding -> boxes in stored pixels, compared with ``dataset.json``
using :mod:`training.metrics` (hit rule: predicted box centre inside the true box, or IoU
>= 0.3; air bubbles and other mimics count as false positives).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from serving.errors import CommandError
from serving.pipeline.dicom_in import read_image
from serving.pipeline.model import DetectorModel, ModelError, load_model
from serving.pipeline.run import predict
from training.data import load_split
from training.metrics import evaluate, format_tables, froc, plot_froc

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)


def predict_items(model: DetectorModel, items: list[dict[str, Any]], desc: str = "evaluate"
                  ) -> tuple[list[dict[str, np.ndarray]], dict[str, float]]:
    """Predictions (all candidates) per item, and mean per-stage timings in ms."""
    preds, totals = [], {"decode": 0.0, "preprocess": 0.0, "inference": 0.0,
                         "postprocess": 0.0}
    for it in tqdm(items, desc=desc, unit="img"):
        t0 = time.perf_counter()
        image = read_image(Path(it["_root"]) / it["image"],
                           reduce_to_spacing_mm=model.preprocess.spacing_mm)
        totals["decode"] += (time.perf_counter() - t0) * 1e3
        det = predict(image, model)
        for k, v in det.timings_ms.items():
            totals[k] += v
        preds.append({"boxes": det.boxes, "scores": det.scores})
    n = max(len(items), 1)
    return preds, {k: v / n for k, v in totals.items()}


def operating_points(items: list[dict[str, Any]], preds: list[dict[str, np.ndarray]]
                     ) -> dict[str, dict[str, Any]]:
    """Named operating points read off the FROC curve of validation predictions:
    ``high_specificity`` (<= 0.125 FP/image), ``balanced`` (<= 0.5) and
    ``high_sensitivity`` (<= 2)."""
    result = froc(items, preds, FP_RATES)
    ops = {}
    for name, budget in (("high_specificity", 0.125), ("balanced", 0.5),
                         ("high_sensitivity", 2.0)):
        thr, sens, fppi = result.read(budget)
        thr = float(thr) if np.isfinite(thr) else 1.01  # nothing qualifies: report nothing
        ops[name] = {"score_threshold": round(thr, 6), "max_fp_per_image": budget,
                     "sensitivity": None if np.isnan(sens) else round(float(sens), 4),
                     "fp_per_image": round(float(fppi), 4)}
    return ops


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the tables, write the report and plot."""
    from rich.console import Console

    try:
        model = load_model(args.model)
        items = load_split(args.data, args.split)
        op = model.operating_point(args.operating_point)
    except (ModelError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    if args.limit:
        items = items[: args.limit]
    if not items:
        raise CommandError(f"{args.data}: split {args.split!r} is empty")
    preds, timings = predict_items(model, items)
    report = evaluate(items, preds, op.score_threshold, fp_rates=FP_RATES)
    report["model"] = {"name": model.name, "version": model.version,
                       "operating_point": op.name, "score_threshold": op.score_threshold}
    report["mean_timings_ms"] = timings
    console = Console()
    for table in format_tables(report):
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
