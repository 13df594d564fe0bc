"""The ``galacto`` commands of the ``training`` package, one module per command on the
contract of :mod:`serving.cli` (``register(sub)`` adds the subcommand and sets its handler,
``run(args) -> int`` runs it): :mod:`training.cli.export`, :mod:`training.cli.tomo_points`,
:mod:`training.cli.evaluate`, :mod:`training.cli.dataset` (and ``synth`` in
:mod:`training.synth.cli`). They reach ``galacto`` through the ``galacto.commands`` entry
points of ``pyproject.toml``.

This module is ``galacto train`` itself: the command the package began with, whose helpers
(:func:`_fold_overrides`, :func:`_check_validation`) are named as ``training.cli.<name>`` by
the tests. Heavy imports (torch, monai) happen inside ``run``, so registering these
subcommands costs nothing for the others.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from serving.errors import CommandError

if TYPE_CHECKING:
    from serving.cli.options import Subparsers


def register(sub: Subparsers) -> None:
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
    p.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    """Run ``galacto train``: resolve the config (fresh or from the run being resumed), check
    the data, and train."""
    from training.config import load_config
    from training.datasets import load_index
    from training.train import check_freeze
    from training.train import run as train

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
        best = train(cfg, run_dir, resume=args.resume is not None)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        _report_checkpoint(best, run_dir)
    return 0
