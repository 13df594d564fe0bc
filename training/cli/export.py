"""``galacto export``: export a training checkpoint to ``models/<name>/<version>``
(:mod:`training.export`; the ``train`` extra, imported only once the cheap checks pass, so a
refused export loads no torch)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from serving.errors import CommandError
from training.cli.tomo_points import add_slab_options, check_network_source, check_slab
from training.cli.tomo_points import register as register_tomo_points

if TYPE_CHECKING:
    from serving.cli.options import Subparsers


def register(sub: Subparsers) -> None:
    """Add ``galacto export`` (and ``galacto tomo-points``, :mod:`training.cli.tomo_points`)."""
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
    p.add_argument("--input-spacing-mm", type=float, default=None, metavar="MM",
                   help="pixel spacing serving resamples images to before the network "
                        "(default: the spacing the checkpoint was trained at); the operating "
                        "points are fitted at it")
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
        "tomosynthesis", "with --dbt-val, a two-view rescoring and operating points for DBT "
        "volumes are fitted on those DBT datasets' validation split and written into the "
        "card's tomosynthesis section "
        "(as galacto tomo-points does)")
    g.add_argument("--dbt-val", type=Path, default=None, metavar="DIR", nargs="+",
                   help="DBT dataset folder(s) (galacto synth --dbt), pooled, to fit the "
                        "tomosynthesis rescoring and points on")
    add_slab_options(g, "--dbt-slab", "--dbt-stride", "--dbt-slab-mode", "--dbt-spacing-mm")
    g.add_argument("--dbt-network", type=Path, default=None, metavar="DIR",
                   help="with --dbt-val: an exported model folder of the same architecture "
                        "whose network volumes run (copied in as tomosynthesis.onnx; 2D "
                        "images run the exported checkpoint)")
    p.set_defaults(func=run)
    # ``tomo-points`` rewrites a card's section as export writes it; registered here so
    # that it needs no entry point of its own (skipped when one registers it).
    register_tomo_points(sub)


def _export_target(args: argparse.Namespace) -> Path | None:
    """``<out>/<name>/<version>``, the model's name read from the run's ``config.json``
    beside the checkpoint (no torch needed); None when there is none to read."""
    try:
        name = json.loads((args.checkpoint.parent / "config.json").read_text())["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Path(args.out) / str(name) / args.version


def run(args: argparse.Namespace) -> int:
    """Run ``galacto export``: refuse what can be refused at once (a bad version, a missing
    checkpoint, a version that exists), then export (:func:`training.export.run`: torch,
    tracing and operating points)."""
    if args.version in ("", ".", "..") or any(c in args.version for c in "/\\"):
        raise CommandError(f"--version {args.version!r}: expected a folder name such as 0.5.0")
    if not args.checkpoint.is_file():
        raise CommandError(f"checkpoint {args.checkpoint} not found")
    target = _export_target(args)
    if target is not None and target.exists() and not args.overwrite:
        raise CommandError(f"{target} exists; pass --overwrite to replace it or choose "
                           "another --version")
    for folder in args.dbt_val or ():
        if not (folder / "dataset.json").is_file():
            raise CommandError(f"--dbt-val {folder}: no dataset.json there (make one with "
                               "galacto synth --dbt)")
    check_slab(args.dbt_slab, args.dbt_stride, "--dbt-slab and --dbt-stride")
    if args.dbt_network is not None and not args.dbt_val:
        raise CommandError("--dbt-network needs --dbt-val: the volume network's points are "
                           "fitted on DBT validation volumes")
    check_network_source(args.dbt_network, "--dbt-network")
    from training.export import run as export

    return int(export(args))
