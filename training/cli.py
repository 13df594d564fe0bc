"""``galacto train``, ``galacto export``, ``galacto tomo-points`` and ``galacto evaluate`` (the
``train`` extra).

Heavy imports (torch, monai) happen inside the command functions, so registering these
subcommands costs nothing for the others.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from serving.errors import CommandError


def _lazy(module: str) -> Callable[[argparse.Namespace], int]:
    """A command function that imports ``module`` (torch and all) only when run."""

    def call(args: argparse.Namespace) -> int:
        import importlib

        return int(importlib.import_module(module).run(args))

    return call


def register_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``galacto train``."""
    p = sub.add_parser("train", help="train a detector from a YAML config",
                       description="Train the RetinaNet filling-defect detector. Multi-GPU or "
                                   "multi-node: run under torchrun.")
    p.add_argument("--config", type=Path, help="configs/<name>.yaml (not needed with --resume)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last.pt")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.epochs=5 (repeatable)")
    p.add_argument("--run-dir", type=Path, help="where to write the run (default: "
                                                 "<output>/<name>-<timestamp>)")
    p.add_argument("--fold", type=int, default=None, metavar="K",
                   help="cross-validation fold K of data.train (made by galacto dataset split): "
                        "train on the other folds, validate on fold K")
    p.set_defaults(func=run_train)


def _fold_overrides(config: Path, overrides: list[str], fold: int) -> list[str]:
    """``--set`` entries that point data.train and data.val at fold ``fold`` of the config's
    (first) data.train folder (``DIR/folds/fold-<fold>``, written by ``galacto dataset
    split``); further data.train folders (e.g. synthetic data mixed in) stay in training."""
    from training.config import load_config
    from training.datasets.split import fold_dir

    train = load_config(config, overrides).data.train_dirs
    base = Path(train[0])
    target = fold_dir(base, fold)
    if not (target / "dataset.json").is_file():
        raise CommandError(f"--fold {fold}: {target} has no dataset.json; make the folds with "
                           f"galacto dataset split {base} --by patient --folds K")
    folders = f"data.train={target}" if len(train) == 1 else (
        "data.train=" + json.dumps([str(target), *train[1:]]))
    return [*overrides, folders, f"data.val={target}"]


def _check_validation(val_dirs: list[str], cap: int) -> None:
    """Refuse, before any work, validation data the validation CPM cannot be measured on.

    Raises:
        CommandError: the ``validation`` splits of ``val_dirs`` (first ``cap`` images of each,
            as training reads them) hold no image, or no lesion box.
    """
    from training.datasets import load_index

    counts = []
    for root in val_dirs:
        items = load_index(Path(root))[0].get("validation", [])[:cap]
        counts.append((root, len(items), sum(len(it.get("boxes", [])) for it in items)))
    if sum(n for _, n, _ in counts) and sum(k for _, _, k in counts):
        return
    found = "; ".join(f"{root}: {n} images, {k} lesions" for root, n, k in counts)
    raise CommandError(
        f"data.val: the 'validation' split has no lesion to find ({found}; at most "
        f"data.val_max_images={cap} images per folder are read). Checkpoints are chosen by "
        "the validation CPM (sensitivity at 0.125-4 false positives per image), which needs "
        "images with filling-defect boxes: point data.val at a folder whose 'validation' "
        "split has some, or validate on folds (galacto dataset split DIR --by patient "
        "--folds K, then galacto train --fold k); galacto dataset check DIR counts the "
        "lesions per split")


def _report_checkpoint(best: Path | None, run_dir: Path) -> None:
    """Say where the weights to export are; name only files that exist."""
    if best is not None:
        print(f"best checkpoint: {best}")
        return
    last = run_dir / "last.pt"
    where = f"the last epoch's weights are in {last}" if last.is_file() else (
        "no checkpoint was written")
    print(f"best checkpoint: none (no epoch had a finite validation CPM: no lesion to "
          f"measure it on); {where}")


def run_train(args: argparse.Namespace) -> int:
    """Resolve the config (fresh or from the run being resumed) and train."""
    from training.config import load_config
    from training.datasets import load_index
    from training.train import check_freeze, run

    try:
        if args.resume is not None:
            if args.fold is not None:
                raise CommandError("--fold applies to a new run; --resume continues the "
                                   "fold its run was started with")
            saved = args.resume / "config.json"
            if not (args.resume / "last.pt").is_file() or not saved.is_file():
                raise CommandError(f"--resume {args.resume}: no last.pt/config.json there")
            cfg = load_config(None, args.set, base=json.loads(saved.read_text()))
            run_dir = args.resume
        else:
            if args.config is None:
                raise CommandError("--config is required (or --resume RUN_DIR)")
            if not args.config.is_file():
                raise CommandError(f"--config {args.config}: no such file")
            overrides = (args.set if args.fold is None
                         else _fold_overrides(args.config, args.set, args.fold))
            cfg = load_config(args.config, overrides)
            fold = "" if args.fold is None else f"-fold{args.fold}"
            run_dir = args.run_dir or Path(cfg.output) / (
                f"{cfg.name}{fold}-{time.strftime('%Y%m%d-%H%M%S')}")
        for name in (*cfg.data.train_dirs, *cfg.data.val_dirs):
            load_index(Path(name))  # the dataset schema, before any work
        _check_validation(cfg.data.val_dirs, cfg.data.val_max_images)
        start = Path(cfg.optim.init_from or "")
        if cfg.optim.init_from and not (start.is_file() or (start / "model.json").is_file()):
            raise CommandError(f"optim.init_from {start}: no such checkpoint (RUN_DIR/best.pt) "
                               "or model folder (models/<name>/<version>)")
        check_freeze(cfg)
        best = run(cfg, run_dir, resume=args.resume is not None)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        _report_checkpoint(best, run_dir)
    return 0


def register_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``galacto export``."""
    p = sub.add_parser("export", help="export a checkpoint to models/<name>/<version>",
                       description="Export a training checkpoint to ONNX with a model card; "
                                   "operating points are chosen on validation data.")
    p.add_argument("--checkpoint", type=Path, required=True, help="RUN_DIR/best.pt")
    p.add_argument("--version", required=True, help="model version, e.g. 0.1.0")
    p.add_argument("--out", type=Path, default=Path("models"), help="models root")
    p.add_argument("--val", type=Path, default=None,
                   help="dataset for operating points and the rescoring fit (default: the "
                        "config's data.val folders, pooled)")
    p.add_argument("--val-split", default="validation")
    p.add_argument("--max-val", type=int, default=200,
                   help="cap on validation images per folder")
    p.add_argument("--no-rescoring", action="store_true",
                   help="do not fit the two-view/mimic rescoring (final score = network score)")
    p.add_argument("--training-note", type=Path, default=None,
                   help="JSON with how the model was trained (command, seeds, time, machine)")
    p.add_argument("--test-time-flips", default=None, metavar="LIST",
                   help="comma list of rows, cols, rows+cols: flipped passes serving averages "
                        "with the plain one ('' for none; default: the config's "
                        "decode.test_time_flips)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing models/<name>/<version> folder")
    p.add_argument("--allow-degenerate", action="store_true",
                   help="export even when an operating point is unreachable on the validation "
                        "data (score threshold >= 1: the model would report nothing there), "
                        "with a warning; without it such an export is refused")
    p.add_argument("--make-default", action="store_true",
                   help="make this model the default one (writes <out>/DEFAULT, read by "
                        "serve, detect and calibrate); without it the default does not change")
    g = p.add_argument_group(
        "tomosynthesis", "with --dbt-val, operating points for DBT volumes are fitted on that "
        "DBT dataset's validation split and written into the card's tomosynthesis section "
        "(as galacto tomo-points does)")
    g.add_argument("--dbt-val", type=Path, default=None, metavar="DIR",
                   help="DBT dataset (galacto synth --dbt) to fit tomosynthesis points on")
    _slab_options(g, "--dbt-slab", "--dbt-stride", "--dbt-slab-mode")
    p.set_defaults(func=run_export)
    # ``tomo-points`` rewrites a card's section as export writes it; registered here so
    # that it needs no entry point of its own (skipped when one registers it).
    register_tomo_points(sub)


def _slab_options(p: argparse._ActionsContainer, slab: str, stride: str, mode: str) -> None:
    """The slab settings of tomosynthesis points. Defaults None: the pipeline's
    (:class:`serving.pipeline.detect_volume.TomoSettings`, 3, 3, mean), named in the help
    text without importing the pipeline when the parser is built."""
    p.add_argument(slab, type=int, default=None, metavar="FRAMES",
                   help="frames per detector input (default: the pipeline's, 3)")
    p.add_argument(stride, type=int, default=None, metavar="FRAMES",
                   help="frames between detector inputs (default: the pipeline's, 3)")
    p.add_argument(mode, choices=("mean", "max"), default="mean",
                   help="how a slab's frames are combined (default: mean)")


def _check_slab(slab: int | None, stride: int | None, names: str) -> None:
    """Refuse a slab or stride below 1 (None: the pipeline's default)."""
    if (slab is not None and slab < 1) or (stride is not None and stride < 1):
        raise CommandError(f"{names} must be >= 1, got {slab}, {stride}")


def register_tomo_points(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``galacto tomo-points`` (once)."""
    if "tomo-points" in sub.choices:
        return
    p = sub.add_parser(
        "tomo-points", help="fit tomosynthesis operating points into a model card",
        description="Run the DBT volumes of a dataset through the serving pipeline, read the "
                    "FROC per volume and write thresholds for 0.25, 1 and 2 false positives "
                    "per volume into the tomosynthesis section of MODEL/model.json (in "
                    "place; the rest of the card is kept).")
    p.add_argument("--model", type=Path, required=True, help="models/<name>/<version>")
    p.add_argument("--val", type=Path, required=True,
                   help="DBT dataset folder (galacto synth --dbt)")
    p.add_argument("--split", default="validation", help="split (default: validation)")
    p.add_argument("--limit", type=int, default=None, help="only the first N volumes")
    _slab_options(p, "--slab", "--stride", "--slab-mode")
    p.set_defaults(func=run_tomo_points)


def run_tomo_points(args: argparse.Namespace) -> int:
    """Check the settings, then fit and write (:mod:`training.tomo_points`)."""
    _check_slab(args.slab, args.stride, "--slab and --stride")
    return _lazy("training.tomo_points")(args)


def _export_target(args: argparse.Namespace) -> Path | None:
    """``<out>/<name>/<version>``, the model's name read from the run's ``config.json``
    beside the checkpoint (no torch needed); None when there is none to read."""
    try:
        name = json.loads((args.checkpoint.parent / "config.json").read_text())["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Path(args.out) / str(name) / args.version


def run_export(args: argparse.Namespace) -> int:
    """Refuse what can be refused at once (a bad version, a missing checkpoint, a version
    that exists), then export (torch, tracing and operating points)."""
    if args.version in ("", ".", "..") or any(c in args.version for c in "/\\"):
        raise CommandError(f"--version {args.version!r}: expected a folder name such as 0.5.0")
    if not args.checkpoint.is_file():
        raise CommandError(f"checkpoint {args.checkpoint} not found")
    target = _export_target(args)
    if target is not None and target.exists() and not args.overwrite:
        raise CommandError(f"{target} exists; pass --overwrite to replace it or choose "
                           "another --version")
    if args.dbt_val is not None and not (args.dbt_val / "dataset.json").is_file():
        raise CommandError(f"--dbt-val {args.dbt_val}: no dataset.json there (make one with "
                           "galacto synth --dbt)")
    _check_slab(args.dbt_slab, args.dbt_stride, "--dbt-slab and --dbt-stride")
    return _lazy("training.export")(args)


def register_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``galacto evaluate``."""
    p = sub.add_parser("evaluate", help="evaluate an exported model on a dataset",
                       description="Evaluate models/<name>/<version> (ONNX, through the "
                                   "serving pipeline) on a galacto dataset folder.")
    p.add_argument("--model", type=Path, required=True, help="models/<name>/<version>")
    p.add_argument("--data", type=Path, required=True, help="dataset folder (dataset.json)")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--operating-point", default=None,
                   help="operating point for the per-threshold tables (default: the card's)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--out", type=Path, default=None, help="JSON report path")
    p.add_argument("--plot", type=Path, default=None, help="FROC plot PNG path")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples (patients) for the 95 %% confidence intervals of "
                        "the FROC sensitivities and the CPM; 0 for none (default: 1000)")
    p.add_argument("--bootstrap-seed", type=int, default=0,
                   help="seed of the resampling (default: 0)")
    p.add_argument("--dbt-slab", type=int, default=None, metavar="FRAMES",
                   help="tomosynthesis datasets: frames averaged per detector input "
                        "(default: the model card's, as serving runs volumes; 1: per slice)")
    p.add_argument("--dbt-stride", type=int, default=None, metavar="FRAMES",
                   help="tomosynthesis datasets: frames between detector inputs (default: "
                        "the model card's)")
    p.set_defaults(func=_lazy('training.evaluate'))
