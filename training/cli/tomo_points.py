"""``galacto tomo-points``: fit tomosynthesis operating points into a model card
(:mod:`training.tomo_points`; the ``train`` extra), and the slab options it shares with
``galacto export --dbt-val``.

``galacto export`` registers this command too (:func:`register` adds it once), so it needs no
entry point of its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from serving.errors import CommandError

if TYPE_CHECKING:
    from serving.cli.options import Subparsers


def register(sub: Subparsers) -> None:
    """Add ``galacto tomo-points`` (once)."""
    if "tomo-points" in sub.choices:
        return
    p = sub.add_parser(
        "tomo-points", help="fit tomosynthesis operating points into a model card",
        description="Run the DBT volumes of a dataset through the serving pipeline, read the "
                    "FROC per volume and write a two-view rescoring and thresholds for "
                    "0.25, 1 and 2 false positives per volume into the tomosynthesis "
                    "section of MODEL/model.json (in "
                    "place; the rest of the card is kept).")
    p.add_argument("--model", type=Path, required=True, help="models/<name>/<version>")
    p.add_argument("--val", type=Path, required=True, nargs="+", metavar="DIR",
                   help="DBT dataset folder(s) (galacto synth --dbt), pooled")
    p.add_argument("--no-rescore", action="store_true",
                   help="do not fit the two-view rescoring of volume candidates; the points "
                        "apply to the detector's scores")
    p.add_argument("--network-from", type=Path, default=None, metavar="DIR",
                   help="an exported model folder of the same architecture whose network "
                        "volumes run from now on (copied in as tomosynthesis.onnx; 2D images "
                        "keep model.onnx); default: the network the card's volumes run now")
    p.add_argument("--split", default="validation", help="split (default: validation)")
    p.add_argument("--limit", type=int, default=None, help="only the first N volumes")
    add_slab_options(p, "--slab", "--stride", "--slab-mode", "--spacing-mm")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``galacto tomo-points``: check the settings, then fit and write
    (:func:`training.tomo_points.run`)."""
    check_slab(args.slab, args.stride, "--slab and --stride")
    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit {args.limit}: expected a number of volumes >= 1")
    check_network_source(args.network_from, "--network-from")
    from training.tomo_points import run as fit_points

    return int(fit_points(args))


def add_slab_options(p: argparse._ActionsContainer, slab: str, stride: str, mode: str,
                     spacing: str) -> None:
    """The slab settings of tomosynthesis points, under the option names given. Defaults
    None: the pipeline's (:class:`serving.pipeline.detect_volume.TomoSettings`, 3, 3, mean,
    the model's 2D spacing), named in the help text without importing the pipeline when the
    parser is built."""
    p.add_argument(slab, type=int, default=None, metavar="FRAMES",
                   help="frames per detector input (default: the pipeline's, 3)")
    p.add_argument(stride, type=int, default=None, metavar="FRAMES",
                   help="frames between detector inputs (default: the pipeline's, 3)")
    p.add_argument(mode, choices=("mean", "max"), default="mean",
                   help="how a slab's frames are combined (default: mean)")
    p.add_argument(spacing, type=float, default=None, metavar="MM",
                   help="pixel spacing volumes are resampled to before the detector, written "
                        "to the card's tomosynthesis section (default: the section's own when "
                        "the card has one, so a refit keeps it; else the volume network's, "
                        "the 2D one without a volume network)")


def check_network_source(folder: Path | None, option: str) -> None:
    """Refuse a network source folder without a model card (None: no source).

    Raises:
        CommandError: naming the option and the folder.
    """
    if folder is not None and not (folder / "model.json").is_file():
        raise CommandError(f"{option} {folder}: no model.json there (expected an exported "
                           "models/<name>/<version> folder)")


def check_slab(slab: int | None, stride: int | None, names: str) -> None:
    """Refuse a slab or stride below 1 (None: the pipeline's default).

    Raises:
        CommandError: naming the options (``names``) and the values.
    """
    if (slab is not None and slab < 1) or (stride is not None and stride < 1):
        raise CommandError(f"{names} must be >= 1, got {slab}, {stride}")
