"""``galacto export``: a training checkpoint -> ``models/<name>/<version>/`` (ONNX + card).

The network alone goes to ONNX (opset 17, dynamic batch/height/width), is checked with
``onnx.checker`` and compared with PyTorch on several inputs; anchors, decoding and NMS stay in
serving's numpy code. Operating points are chosen on validation data by running the exported
model through serving's pipeline.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from serving.errors import CommandError
from training.config import DecodeSection, TrainConfig
from training.model import FlatOutputs, build_network

OPSET = 17
PARITY_SHAPES = ((256, 256), (512, 384), (1024, 800))
PARITY_TOLERANCE = 1e-3


def load_checkpoint(path: Path) -> tuple[TrainConfig, torch.nn.Module, dict[str, Any]]:
    """Config, network (eval mode) and metadata from a checkpoint."""
    if not path.is_file():
        raise CommandError(f"checkpoint {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=False)
    cfg = TrainConfig.model_validate(state["config"])
    net = build_network(cfg.model)
    net.load_state_dict(state["model"])
    net.eval()
    meta = {k: v for k, v in state.items()
            if k not in ("model", "optimizer", "scheduler", "scaler")}
    return cfg, net, meta


def export_onnx(net: torch.nn.Module, num_levels: int, path: Path) -> None:
    """Write the network (flat outputs ``cls_<l>``, ``box_<l>``) to ONNX and check it."""
    import onnx

    wrapper = FlatOutputs(net).eval()  # type: ignore[arg-type]
    names = [f"cls_{i}" for i in range(num_levels)] + [f"box_{i}" for i in range(num_levels)]
    dyn = {"image": {0: "batch", 2: "height", 3: "width"}}
    dyn.update({n: {0: "batch", 2: f"h_{n[-1]}", 3: f"w_{n[-1]}"} for n in names})
    dummy = torch.zeros(1, 1, 256, 256)
    with torch.no_grad():
        torch.onnx.export(wrapper, (dummy,), str(path), input_names=["image"],
                          output_names=names, dynamic_axes=dyn, opset_version=OPSET,
                          dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))


def parity(net: torch.nn.Module, onnx_path: Path, seed: int = 0) -> dict[str, Any]:
    """Max absolute difference between PyTorch and ONNX Runtime outputs on random inputs of
    several sizes (the figure reported in the card and bounded in tests)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    wrapper = FlatOutputs(net).eval()  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    worst, per_shape = 0.0, {}
    for h, w in PARITY_SHAPES:
        x = rng.normal(0.3, 0.5, (1, 1, h, w)).astype(np.float32)
        with torch.no_grad():
            ref = [t.numpy() for t in wrapper(torch.from_numpy(x))]
        got = sess.run(None, {"image": x})
        diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got, strict=True))
        per_shape[f"{h}x{w}"] = diff
        worst = max(worst, diff)
    return {"max_abs_diff": worst, "per_input": per_shape, "tolerance": PARITY_TOLERANCE}


def run(args: argparse.Namespace) -> int:
    """Export, check parity, choose operating points, write the card."""
    from serving.pipeline.model import load_model, sha256_file
    from training.data import load_split
    from training.evaluate import FP_RATES, operating_points, style_spread
    from training.metrics import froc
    from training.modelcard import build_card
    from training.rescore_fit import (
        analyse_items,
        fit,
        mimic_threshold,
        predictions,
        training_rows,
    )

    cfg, net, meta = load_checkpoint(args.checkpoint)
    if args.test_time_flips is not None:
        flips = [f.strip() for f in args.test_time_flips.split(",") if f.strip()]
        try:
            decode = DecodeSection(**{**cfg.decode.model_dump(), "test_time_flips": flips})
        except ValidationError as exc:
            raise CommandError(f"--test-time-flips {args.test_time_flips!r}: expected a comma "
                               f"list of rows, cols, rows+cols ({exc.errors()[0]['msg']})"
                               ) from None
        cfg = cfg.model_copy(update={"decode": decode})
    folder = args.out / cfg.name / args.version
    if folder.exists() and not args.overwrite:
        raise CommandError(f"{folder} exists; pass --overwrite to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    levels = len(cfg.model.returned_layers)
    onnx_path = folder / "model.onnx"
    export_onnx(net, levels, onnx_path)
    par = parity(net, onnx_path)
    if par["max_abs_diff"] > PARITY_TOLERANCE:
        raise CommandError(f"ONNX differs from PyTorch by {par['max_abs_diff']:.2e} "
                           f"(> {PARITY_TOLERANCE})")
    training = json.loads(args.training_note.read_text()) if args.training_note else {}
    provisional = {"all": {"score_threshold": cfg.decode.score_thresh,
                           "max_fp_per_image": float("inf")}}

    def write(ops: dict[str, Any], default: str, metrics: dict[str, Any],
              rescoring: dict[str, Any] | None = None,
              mimic_score_thresh: float | None = None) -> None:
        card = build_card(cfg, version=args.version, onnx_file="model.onnx",
                          onnx_sha256=sha256_file(onnx_path), opset=OPSET, num_levels=levels,
                          checkpoint_meta=meta, operating_points=ops,
                          default_operating_point=default, parity=par, metrics=metrics,
                          training=training, rescoring=rescoring,
                          mimic_score_thresh=mimic_score_thresh)
        (folder / "model.json").write_text(json.dumps(card, indent=1) + "\n")

    write(provisional, "all", {})
    model = load_model(folder)
    roots = [args.val] if args.val else [Path(v) for v in cfg.data.val_dirs]
    items = [it for root in roots for it in load_split(root, args.val_split)[: args.max_val]]
    cands = analyse_items(model, items, rescore=False, final=False, desc="operating points")
    rescoring, rescoring_note = None, "off (--no-rescoring)"
    if not args.no_rescoring:
        try:
            x, y, w = training_rows(items, cands)
            rescoring = fit(x, y, w, fitted_on={"data": [str(r) for r in roots],
                                                "images": len(items)})
            rescoring_note = f"fitted on {len(y)} rows"
        except ValueError as exc:  # e.g. no candidates, or no true lesion among them
            rescoring_note = f"not fitted: {exc}"
            print(f"warning: rescoring {rescoring_note}; the card has none (final score = "
                  "the network's score)")
    preds = predictions(cands, model, rescoring)
    ops = operating_points(items, preds)
    mimic_thr, mimic_summary = mimic_threshold(items, preds)
    result = froc(items, preds, FP_RATES)
    metrics = {"validation": {
        "data": [str(r) for r in roots], "split": args.val_split, "images": len(items),
        "cpm": round(float(result.cpm), 4),
        "sensitivity_at_fp": {f"{r:g}": round(float(s), 4)
                              for r, s in zip(FP_RATES, result.sensitivity_at_rates,
                                              strict=True)},
        "by_style": style_spread(items, preds, ops),
        "rescoring": rescoring_note,
        "mimic_calls": {"score_threshold": mimic_thr, **mimic_summary},
        "mean_timings_ms": {k: round(float(np.mean([c.timings_ms.get(k, 0.0)
                                                    for c in cands])), 1)
                            for k in ("preprocess", "inference", "postprocess", "locate")}}}
    write(ops, "balanced", metrics,
          rescoring=None if rescoring is None else rescoring.to_dict(),
          mimic_score_thresh=mimic_thr)
    load_model(folder)  # the final card must validate
    print(f"exported {folder}: parity {par['max_abs_diff']:.2e}, "
          f"{onnx_path.stat().st_size / 1e6:.2f} MB, validation CPM {result.cpm:.3f}")
    for name, op in ops.items():
        print(f"  {name}: score >= {op['score_threshold']:.3f}  sensitivity "
              f"{op['sensitivity']}  FP/image {op['fp_per_image']}")
    return 0
