"""``galacto dataset check | import | split | cv-summary``: bring your own annotated
galactograms.

Needs no torch: the tools read ``dataset.json``, DICOM headers (serving's intake),
annotation files and evaluate reports only. :func:`run`, the command's handler, dispatches to
the action's (:data:`ACTIONS`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from serving.errors import CommandError

if TYPE_CHECKING:
    from serving.cli.options import Subparsers

FORMATS = ("csv", "coco", "sr", "gsps")


def register(sub: Subparsers) -> None:
    """Add ``galacto dataset`` and its four actions."""
    p = sub.add_parser("dataset", help="check, import and split your own annotated data",
                       description="Tools for datasets brought by researchers: validate a "
                                   "dataset folder, import annotations (CSV, COCO, DICOM SR, "
                                   "GSPS), make patient-level cross-validation folds and "
                                   "summarise the folds' evaluate reports.")
    verbs = p.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    _register_check(verbs)
    _register_import(verbs)
    _register_split(verbs)
    _register_cv_summary(verbs)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``galacto dataset ACTION``: the action's handler (:data:`ACTIONS`)."""
    return ACTIONS[args.dataset_command](args)


def _action(verbs: Subparsers, name: str, help_text: str,
            description: str | None = None) -> argparse.ArgumentParser:
    """Add the action ``name`` (run by :data:`ACTIONS`); the caller adds its arguments."""
    return verbs.add_parser(name, help=help_text, description=description)


def _dir_argument(p: argparse.ArgumentParser) -> None:
    """The positional ``DIR``: a dataset folder holding ``dataset.json``."""
    p.add_argument("dir", type=Path, metavar="DIR", help="dataset folder (dataset.json)")


def _json_argument(p: argparse.ArgumentParser, what: str) -> None:
    """``--json PATH``: also write ``what`` (the command's result) as JSON."""
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help=f"also write the {what} as JSON")


def _register_check(verbs: Subparsers) -> None:
    p = _action(verbs, "check", "validate dataset.json and its images; exit 1 on errors")
    _dir_argument(p)
    _json_argument(p, "result")


def _register_import(verbs: Subparsers) -> None:
    p = _action(verbs, "import", "write a dataset.json from annotations",
                "Match annotations to the DICOM images under --images (by SOP Instance UID or "
                "path) and write OUT/dataset.json and OUT/import_report.json; images stay where "
                "they are.")
    p.add_argument("format", choices=FORMATS, help="annotation format")
    p.add_argument("src", type=Path, metavar="SRC",
                   help="the CSV or COCO file, or an SR/GSPS file or folder")
    g = p.add_argument_group("Input options")
    g.add_argument("--images", type=Path, required=True, metavar="DIR",
                   help="folder with the DICOM images (searched recursively)")
    g.add_argument("--map", action="append", default=[], metavar="NAME=CLASS",
                   help="label name -> filling_defect, a mimic kind (air_bubble, cyst, "
                        "extravasation, ...) or ignore (repeatable)")
    g = p.add_argument_group("Output options")
    g.add_argument("--out", type=Path, required=True, metavar="DIR", help="dataset folder")
    g.add_argument("--split", default="training", choices=("training", "validation", "test"),
                   help="split the images go to (default: training)")
    g.add_argument("--annotated-only", action="store_true",
                   help="leave out images without annotations (default: keep them as normal "
                        "images)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing OUT/dataset.json")


def _register_split(verbs: Subparsers) -> None:
    p = _action(verbs, "split", "patient-level cross-validation folds",
                "Deal the patients of DIR's training and validation splits into K folds and "
                "write DIR/folds/fold-<k>/ (galacto train --fold k).")
    _dir_argument(p)
    p.add_argument("--by", choices=("patient",), default="patient",
                   help="grouping unit (default: patient)")
    p.add_argument("--folds", type=int, default=5, metavar="K", help="number of folds "
                                                                    "(default: 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the deal (default: 0)")
    p.add_argument("--test-share", type=float, default=0.0, metavar="F",
                   help="first move this share of all patients to the test split (default: 0, "
                        "keep the test split as it is)")


def _register_cv_summary(verbs: Subparsers) -> None:
    p = _action(verbs, "cv-summary", "summarise the evaluate reports of the folds",
                "Read one galacto evaluate --out report per fold and print per fold the "
                "images, lesions, CPM and sensitivity at 1 FP/image with their 95 %% "
                "intervals, then the mean and standard deviation across folds.")
    p.add_argument("reports", type=Path, nargs="+", metavar="REPORT.json",
                   help="evaluate reports, one per fold, in fold order")
    _json_argument(p, "summary")


def run_check(args: argparse.Namespace) -> int:
    """Check the folder; print errors, warnings and the summary table; 1 on errors."""
    from rich.console import Console

    from training.datasets.check import check_dataset
    from training.datasets.check_report import check_json, summary_table

    console = Console()
    result = check_dataset(args.dir)
    if result.summary:
        console.print(summary_table(result))
    for w in result.warnings:
        console.print(f"warning: {w}", markup=False, highlight=False, soft_wrap=True)
    for e in result.errors:
        console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"{args.dir}: {len(result.errors)} error(s), {len(result.warnings)} "
                  f"warning(s)", markup=False, highlight=False)
    if args.json:
        args.json.write_text(json.dumps(check_json(result), indent=1) + "\n")
    return 1 if result.errors else 0


def run_import(args: argparse.Namespace) -> int:
    """Read the annotations, match them to the images, write the dataset and the report."""
    from training.datasets.formats import READERS
    from training.datasets.importer import build_items, index_images, write_import
    from training.datasets.label_map import parse_label_map

    if (args.out / "dataset.json").exists() and not args.overwrite:
        raise CommandError(f"{args.out}/dataset.json exists; use --overwrite to replace it")
    try:
        labels = parse_label_map(args.format, args.map)
        found = READERS[args.format](args.src)
        images = index_images(args.images)
    except (ValueError, OSError) as exc:
        raise CommandError(str(exc)) from None
    items, report = build_items(found, images, labels, args.out, args.annotated_only)
    meta = {"generator": "galacto dataset import", "format": args.format,
            "source": str(args.src), "label_map": dict(labels.entries),
            "box_convention": "[x1, y1, x2, y2] stored-image pixels, x = column, origin "
                              "top-left corner, x2/y2 exclusive"}
    path = write_import(args.out, items, report, args.split, meta)
    print(f"wrote {path}: {report.images} images ({report.normal_images} without lesions), "
          f"{report.lesions} lesion boxes, {report.mimics} mimic boxes in {args.split}")
    for s in report.skipped:
        print(f"not imported: {s.origin}: {s.reason}")
    if report.not_images:
        print(f"{len(report.not_images)} file(s) under {args.images} are not images the "
              f"intake accepts (listed in {args.out}/import_report.json)")
    return 0


def run_split(args: argparse.Namespace) -> int:
    """Make the folds and print one row per fold."""
    from rich.console import Console
    from rich.table import Table

    from training.datasets.split import fold_dir, split_dataset

    try:
        folds = split_dataset(args.dir, args.folds, args.seed, args.test_share)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    table = Table(title=f"{args.folds} folds by patient (seed {args.seed})")
    for col in ("fold", "patients", "images", "with lesion", "lesions", "mimics", "folder"):
        table.add_column(col, justify="left" if col == "folder" else "right")
    for f in folds:
        table.add_row(str(f.fold), str(f.patients), str(f.images), str(f.lesion_images),
                      str(f.lesions), str(f.mimics),
                      str(fold_dir(args.dir, f.fold).relative_to(args.dir)))
    Console().print(table)
    return 0


def run_cv_summary(args: argparse.Namespace) -> int:
    """Read every report (exit 2 naming the first that is not an evaluate report), print the
    table and optionally write the JSON."""
    from rich.console import Console

    from training.datasets.cv_summary import read_fold, summary_json, summary_table

    try:
        folds = [read_fold(path) for path in args.reports]
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    console = Console()
    console.print(summary_table(folds))
    for k, fold in enumerate(folds):
        console.print(f"fold {k}: {fold.report}", markup=False, highlight=False, soft_wrap=True)
    if args.json:
        args.json.write_text(json.dumps(summary_json(folds), indent=1) + "\n")
    return 0


#: The handler of each action of ``galacto dataset``.
ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "check": run_check, "import": run_import, "split": run_split, "cv-summary": run_cv_summary}
