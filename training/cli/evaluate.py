"""``galacto evaluate``: evaluate an exported model on a dataset folder
(:mod:`training.evaluate`; the ``train`` extra, imported only when the command runs)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serving.cli.options import Subparsers

#: What ``galacto evaluate --help`` says the command does.
DESCRIPTION = ("Evaluate models/<name>/<version> (ONNX, through the serving pipeline) on a "
               "galacto dataset folder.")


def register(sub: Subparsers) -> None:
    """Add ``galacto evaluate``."""
    p = sub.add_parser("evaluate", help="evaluate an exported model on a dataset",
                       description=DESCRIPTION)
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``galacto evaluate`` (:func:`training.evaluate.run`)."""
    from training.evaluate import run as evaluate

    return int(evaluate(args))
