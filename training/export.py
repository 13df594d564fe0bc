"""``galacto export``: a training checkpoint -> ``models/<name>/<version>/`` (ONNX + card).

The network alone goes to ONNX (opset 17, dynamic batch/height/width), is checked with
``onnx.checker`` and compared with PyTorch on several inputs; anchors, decoding and NMS stay in
serving's numpy code. Operating points are chosen on validation data by running the exported
model through serving's pipeline.

The model is written into a staging folder and moved to ``<out>/<name>/<version>`` only when
it is complete and its operating points are reachable; the default model (``<out>/DEFAULT``)
changes only with ``--make-default``. With ``--dbt-val DIR``, operating points for
tomosynthesis volumes are fitted on that DBT dataset (:mod:`training.tomo_points`) and written
into the card's ``tomosynthesis`` section before the model is published.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ValidationError

from serving.errors import CommandError
from serving.pipeline.model import (
    DEFAULT_MARKER,
    DEFAULT_MODEL_NAME,
    ModelError,
    read_default_marker,
)
from training.config import DecodeSection, PreprocessSection, TrainConfig
from training.model import FlatOutputs, build_network

OPSET = 17
PARITY_SHAPES = ((256, 256), (512, 384), (1024, 800))
PARITY_TOLERANCE = 1e-3
#: Scores are probabilities: an operating point at or above this threshold reports nothing.
UNREACHABLE_THRESHOLD = 1.0


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
    with torch.no_grad(), warnings.catch_warnings():
        # MONAI's heads check their outputs for nan/inf in Python; the trace keeps the check
        # as a constant, which is what export wants: the warning says nothing to act on.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
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


def _with_setting(cfg: TrainConfig, section: Literal["decode", "preprocess"], key: str,
                  value: Any, problem: Callable[[str], str]) -> TrainConfig:
    """``cfg`` with ``cfg.<section>.<key> = value``, validated as the config file is.

    Raises:
        CommandError: ``problem(<pydantic's message>)``.
    """
    kind = DecodeSection if section == "decode" else PreprocessSection
    try:
        updated = kind(**{**getattr(cfg, section).model_dump(), key: value})
    except ValidationError as exc:
        raise CommandError(problem(str(exc.errors()[0]["msg"]))) from None
    return cfg.model_copy(update={section: updated})


def _with_flips(cfg: TrainConfig, flags: str | None) -> TrainConfig:
    """``cfg`` with ``--test-time-flips`` applied (None: the config's own)."""
    if flags is None:
        return cfg
    flips = [f.strip() for f in flags.split(",") if f.strip()]
    return _with_setting(cfg, "decode", "test_time_flips", flips, lambda msg: (
        f"--test-time-flips {flags!r}: expected a comma list of rows, cols, rows+cols ({msg})"))


def _with_input_spacing(cfg: TrainConfig, spacing_mm: float | None) -> TrainConfig:
    """``cfg`` with ``--input-spacing-mm`` applied (None: the spacing it was trained at).

    The network is fully convolutional, so the pixel spacing serving resamples images to is
    a test-time choice, like the flips: a finer spacing than the training one spreads a small
    lesion over more pixels, and costs network time with the square of the ratio. The
    operating points and the rescoring are fitted at that spacing and the card's
    ``preprocess`` states it; ``training.config`` keeps the spacing of training.

    Raises:
        CommandError: the spacing is outside the config's bounds.
    """
    if spacing_mm is None:
        return cfg
    return _with_setting(cfg, "preprocess", "spacing_mm", spacing_mm,
                         lambda msg: f"--input-spacing-mm {spacing_mm:g}: {msg}")


def unreachable_points(ops: dict[str, dict[str, Any]]) -> list[str]:
    """Operating points whose score threshold no detection can reach (no threshold kept
    their false-positive budget on the validation data)."""
    return [name for name, op in ops.items()
            if float(op["score_threshold"]) >= UNREACHABLE_THRESHOLD]


def check_operating_points(ops: dict[str, dict[str, Any]], allow: bool, data: str) -> None:
    """Refuse (or, with ``allow``, warn about) unreachable operating points.

    Raises:
        CommandError: some operating point is unreachable and ``allow`` is false.
    """
    bad = unreachable_points(ops)
    if not bad:
        return
    what = (f"operating point(s) {', '.join(bad)} unreachable: no score threshold keeps their "
            f"false-positive budget on the validation data ({data}), so their threshold would "
            f"be score >= {max(float(ops[n]['score_threshold']) for n in bad):.3f} and the "
            "model would report nothing there")
    if not allow:
        raise CommandError(f"{what}. Nothing was exported: train longer, or check that the "
                           "validation data have lesions the model finds; pass "
                           "--allow-degenerate to export it anyway")
    print(f"warning: {what} (exported anyway: --allow-degenerate)", file=sys.stderr)


def _write_card(folder: Path, cfg: TrainConfig, args: argparse.Namespace,
                meta: dict[str, Any], par: dict[str, Any], ops: dict[str, Any], default: str,
                metrics: dict[str, Any], rescoring: dict[str, Any] | None = None,
                mimic_score_thresh: float | None = None, *,
                trained: TrainConfig | None = None) -> None:
    """Write ``folder/model.json`` for the ONNX file already there (``trained``: the config
    the weights were trained with, when serving's ``cfg`` differs, e.g. its input spacing)."""
    from serving.pipeline.model import sha256_file
    from training.modelcard import build_card

    training = json.loads(args.training_note.read_text()) if args.training_note else {}
    card = build_card(cfg, version=args.version, onnx_file="model.onnx",
                      onnx_sha256=sha256_file(folder / "model.onnx"), opset=OPSET,
                      num_levels=len(cfg.model.returned_layers), checkpoint_meta=meta,
                      operating_points=ops, default_operating_point=default, parity=par,
                      metrics=metrics, training=training, rescoring=rescoring,
                      mimic_score_thresh=mimic_score_thresh, trained_config=trained)
    (folder / "model.json").write_text(json.dumps(card, indent=1) + "\n")


def _onnx_with_parity(folder: Path, cfg: TrainConfig, net: torch.nn.Module) -> dict[str, Any]:
    """Write ``folder/model.onnx`` and return its parity with PyTorch (refused past the
    tolerance)."""
    onnx_path = folder / "model.onnx"
    export_onnx(net, len(cfg.model.returned_layers), onnx_path)
    par = parity(net, onnx_path)
    if par["max_abs_diff"] > PARITY_TOLERANCE:
        raise CommandError(f"ONNX differs from PyTorch by {par['max_abs_diff']:.2e} "
                           f"(> {PARITY_TOLERANCE})")
    return par


def planar_validation_items(roots: list[Path], split: str, max_val: int | None
                  ) -> tuple[list[dict[str, Any]], list[Path]]:
    """The 2D validation items of ``roots`` (at most ``max_val`` per folder) and the folders
    that gave any. Tomosynthesis volumes in a validation folder (a config that validates on
    DBT frames too) are left out, with a note: the 2D operating points and the rescoring are
    fitted on 2D images; volumes get theirs from ``--dbt-val``.

    Raises:
        CommandError: no 2D validation image in any folder.
    """
    from training.data import load_split
    from training.data_dbt import is_dbt_item

    items: list[dict[str, Any]] = []
    used: list[Path] = []
    for root in roots:
        split_items = load_split(root, split)
        planar = [it for it in split_items if not is_dbt_item(it)][:max_val]
        if len(planar) < len(split_items):
            print(f"note: {root}: {len(split_items) - len(planar)} tomosynthesis volume(s) "
                  "left out of the 2D operating points (volumes get theirs from --dbt-val)")
        if planar:
            items += planar
            used.append(root)
    if not items:
        raise CommandError(f"no 2D {split} image in {', '.join(map(str, roots))}")
    return items, used


def _calibrate(folder: Path, cfg: TrainConfig, args: argparse.Namespace, meta: dict[str, Any],
               par: dict[str, Any], trained: TrainConfig | None = None
               ) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Run the exported model on validation data: operating points, rescoring fit and
    metrics, written into the final card. Returns the operating points, the validation
    metrics and the CPM."""
    from serving.pipeline.model import load_model
    from training.evaluate import FP_RATES, operating_points, style_spread
    from training.metrics import froc
    from training.rescore_fit import (
        analyse_items,
        fit,
        mimic_threshold,
        predictions,
        training_rows,
    )

    provisional = {"all": {"score_threshold": cfg.decode.score_thresh,
                           "max_fp_per_image": float("inf")}}
    _write_card(folder, cfg, args, meta, par, provisional, "all", {}, trained=trained)
    model = load_model(folder)
    roots = [args.val] if args.val else [Path(v) for v in cfg.data.val_dirs]
    items, roots = planar_validation_items(roots, args.val_split, args.max_val)
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
    _write_card(folder, cfg, args, meta, par, ops, "balanced", metrics,
                rescoring=None if rescoring is None else rescoring.to_dict(),
                mimic_score_thresh=mimic_thr, trained=trained)
    load_model(folder)  # the final card must validate
    return ops, metrics, float(result.cpm)


def _publish(staging: Path, folder: Path) -> None:
    """Move the finished ``staging`` folder to ``folder`` (replacing an existing one)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if folder.exists():
        old = staging.with_name(staging.name + ".old")
        folder.rename(old)
    staging.rename(folder)
    if old is not None:
        shutil.rmtree(old)


def write_default_marker(root: Path, name: str, version: str) -> None:
    """Make ``root/<name>/<version>`` the default model (``root/DEFAULT``, atomically)."""
    tmp = root / f"{DEFAULT_MARKER}.tmp"
    tmp.write_text(f"{name}/{version}\n")
    tmp.replace(root / DEFAULT_MARKER)


def announce_default(root: Path, name: str, version: str, make_default: bool) -> None:
    """Write the default marker when asked, and say what the default model is now.

    Raises:
        CommandError: the existing marker is malformed (and is not being replaced).
    """
    marker, new = root / DEFAULT_MARKER, f"{name}/{version}"
    try:
        before = read_default_marker(root)
    except ModelError as exc:
        if not make_default:
            raise CommandError(f"exported {root / name / version}, but {exc}") from None
        before = "unreadable"
    if make_default:
        write_default_marker(root, name, version)
        print(f"default model: {before or 'none named'} -> {new} ({marker}); galacto serve, "
              "detect and calibrate use it unless GALACTO_MODEL or --model names another")
    elif before is not None:
        print(f"default model unchanged: {before} ({marker}); use this one with --model "
              f"{root / name / version}, or export with --make-default to make it the default")
    else:
        print(f"default model: {marker} does not exist, so this export names none; pass "
              "--make-default to make this model the default (serve, detect and calibrate "
              "read ./models/DEFAULT, else the one beside the package, else take the highest "
              f"version of models/{DEFAULT_MODEL_NAME})")


def _summary(folder: Path, par: dict[str, Any], cpm: float, ops: dict[str, Any]) -> None:
    """Print what was exported."""
    size = (folder / "model.onnx").stat().st_size / 1e6
    print(f"exported {folder}: parity {par['max_abs_diff']:.2e}, {size:.2f} MB, validation "
          f"CPM {cpm:.3f}")
    for name, op in ops.items():
        print(f"  {name}: score >= {op['score_threshold']:.3f}  sensitivity "
              f"{op['sensitivity']}  FP/image {op['fp_per_image']}")


def _tomo_points(staging: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """With ``--dbt-val``: fit the tomosynthesis points of the staged model and write them
    into its card (:mod:`training.tomo_points`); returns the section, None without it.

    Raises:
        CommandError: the DBT data cannot be used (no volumes, no lesion).
    """
    if getattr(args, "dbt_val", None) is None:
        return None
    from serving.pipeline.detect_volume import DEFAULT_SLAB, DEFAULT_STRIDE
    from training.tomo_points import fit_tomo_points, write_tomo_section

    try:
        section = fit_tomo_points(staging, args.dbt_val,
                                  slab=getattr(args, "dbt_slab", None) or DEFAULT_SLAB,
                                  stride=getattr(args, "dbt_stride", None) or DEFAULT_STRIDE,
                                  slab_mode=getattr(args, "dbt_slab_mode", "mean"),
                                  spacing_mm=getattr(args, "dbt_spacing_mm", None),
                                  network_from=getattr(args, "dbt_network", None))
        write_tomo_section(staging, section,
                           network_from=getattr(args, "dbt_network", None))
    except (ModelError, ValueError) as exc:
        raise CommandError(f"--dbt-val {' '.join(str(d) for d in args.dbt_val)}: {exc}"
                           ) from None
    return section


def _check_dbt_network(args: argparse.Namespace) -> None:
    """With ``--dbt-network``: refuse a source that cannot be one before anything is exported
    (:func:`training.tomo_network.load_source`; its architecture is compared with the
    exported model's once that exists).

    Raises:
        CommandError: naming ``--dbt-network`` and why.
    """
    source = getattr(args, "dbt_network", None)
    if source is None:
        return
    from training.tomo_network import load_source

    try:
        load_source(source)
    except ValueError as exc:
        raise CommandError(f"--dbt-network {source}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Export, check parity, choose operating points, write the card (with tomosynthesis
    points when ``--dbt-val`` is given), publish, and change the default model only with
    ``--make-default``."""
    _check_dbt_network(args)
    cfg, net, meta = load_checkpoint(args.checkpoint)
    cfg = _with_flips(cfg, args.test_time_flips)
    trained = cfg
    cfg = _with_input_spacing(cfg, getattr(args, "input_spacing_mm", None))
    root = Path(args.out)
    folder = root / cfg.name / args.version
    if folder.exists() and not args.overwrite:
        raise CommandError(f"{folder} exists; pass --overwrite to replace it")
    staging = root / f".export-{cfg.name}-{args.version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)  # left by a killed export of the same id
    staging.mkdir(parents=True)
    try:
        par = _onnx_with_parity(staging, cfg, net)
        ops, metrics, cpm = _calibrate(staging, cfg, args, meta, par, trained)
        val = metrics["validation"]
        check_operating_points(ops, args.allow_degenerate,
                               f"{val['images']} images of {', '.join(val['data'])}")
        tomo = _tomo_points(staging, args)
        _publish(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _summary(folder, par, cpm, ops)
    if tomo is not None:
        from rich.console import Console

        from training.tomo_points import format_points_table, point_notes

        Console().print(format_points_table(tomo))
        for note in point_notes(tomo):
            print(f"note: tomosynthesis {note}")
    announce_default(root, cfg.name, args.version, args.make_default)
    return 0
