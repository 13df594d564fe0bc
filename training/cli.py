"""``galacto train``, ``galacto export`` and ``galacto evaluate`` (the ``train`` extra).

Heavy imports (torch, monai) happen inside the command functions, so registering these
subcommands costs nothing for the others.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from serving.errors import CommandError


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
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Resolve the config (fresh or from the run being resumed) and train."""
    import json

    from training.config import load_config
    from training.train import run

    try:
        if args.resume is not None:
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
            cfg = load_config(args.config, args.set)
            run_dir = args.run_dir or Path(cfg.output) / (
                f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        for name in (cfg.data.train, cfg.data.val):
            if not (Path(name) / "dataset.json").is_file():
                raise CommandError(f"dataset folder {name} has no dataset.json "
                                   f"(make one with galacto synth)")
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    best = run(cfg, run_dir, resume=args.resume is not None)
    print(f"best checkpoint: {best}")
    return 0
