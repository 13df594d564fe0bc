"""``galacto synth``: generate a synthetic galactogram dataset (and a preview contact sheet)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.synth.dataset import SynthOptions

from serving.errors import CommandError

# The heavy modules (numpy/scipy rendering, the DICOM writer) are imported inside ``run`` so
# that registering this subcommand costs nothing when another subcommand is used.


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``synth`` subcommand to the ``galacto`` parser."""
    p = sub.add_parser(
        "synth", help="generate synthetic galactograms (DICOM + dataset.json)",
        description="Generate synthetic galactogram cases (CC and ML/MLO views of one "
                    "3D duct system each) as DICOM MG files with a dataset.json.")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--cases", type=int, default=20, help="number of cases (2 images each)")
    p.add_argument("--seed", type=int, default=0, help="master seed (same seed, same bytes)")
    p.add_argument("--profile", default="hologic",
                   help="vendor profile: hologic, hologic_small, ge, test, a comma list, "
                        "or 'mix' (all full-size profiles)")
    p.add_argument("--split", default="training",
                   help="a split name (training/validation/test) or fractions, e.g. "
                        "'training=0.8,validation=0.1,test=0.1'")
    p.add_argument("--normal-share", type=float, default=0.35,
                   help="share of cases without a filling defect")
    p.add_argument("--compressed-share", type=float, default=0.2,
                   help="share of files with a lossless compressed transfer syntax")
    p.add_argument("--monochrome1-share", type=float, default=0.3,
                   help="share of files written as MONOCHROME1")
    p.add_argument("--style", default="standard", choices=("standard", "alt"),
                   help="image family: 'standard' (training) or 'alt' (another duct-tree "
                        "growth, outline, cannula and processing; unseen-style test sets)")
    p.add_argument("--first-index", type=int, default=0,
                   help="index of the first case (to extend an existing set)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: all cores)")
    p.add_argument("--preview", action="store_true",
                   help="also write OUT/preview.png, a contact sheet of the first images")
    p.add_argument("--preview-only", action="store_true",
                   help="only (re)draw OUT/preview.png from an existing dataset")
    p.add_argument("--overwrite", action="store_true",
                   help="allow writing into a folder that already has a dataset.json")
    dbt = p.add_argument_group(
        "tomosynthesis", "with --dbt, each case's CC and ML/MLO views are written as Breast "
        "Tomosynthesis Image volumes (multi-frame, native, MONOCHROME2) of the same phantom")
    dbt.add_argument("--dbt", action="store_true",
                     help="write DBT volumes instead of 2D views")
    dbt.add_argument("--dbt-spacing-mm", type=float, default=0.2,
                     help="in-plane pixel spacing of the DBT frames (mm)")
    dbt.add_argument("--dbt-slice-mm", type=float, default=1.0,
                     help="spacing between DBT frames (mm); frames = thickness / this")
    dbt.add_argument("--arc-deg", type=float, default=None,
                     help="sweep arc (degrees) for every case (default: a vendor-like sweep "
                          "drawn per case)")
    dbt.add_argument("--projections", type=int, default=None,
                     help="projections per sweep for every case (default: drawn per case)")
    p.set_defaults(func=run)


def _options(args: argparse.Namespace) -> SynthOptions:
    from training.synth.dataset import SynthOptions, parse_profiles, parse_split
    from training.synth.dbt import DbtParams

    try:
        dbt = None
        if args.dbt:
            dbt = DbtParams(spacing_mm=args.dbt_spacing_mm, slice_mm=args.dbt_slice_mm,
                            arc_deg=args.arc_deg, projections=args.projections)
        elif args.arc_deg is not None or args.projections is not None:
            raise ValueError("--arc-deg and --projections need --dbt")
        return SynthOptions(
            cases=args.cases, seed=args.seed, profiles=parse_profiles(args.profile),
            split=parse_split(args.split), normal_share=args.normal_share,
            compressed_share=args.compressed_share, monochrome1_share=args.monochrome1_share,
            first_index=args.first_index, style=args.style, dbt=dbt)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """Generate the dataset; print a summary table; optionally draw the preview."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Table

    from training.synth.dataset import build_index, iter_cases, summarize, write_index
    from training.synth.preview import contact_sheet

    console = Console(stderr=True)
    out: Path = args.out
    if args.preview_only:
        if not (out / "dataset.json").is_file():
            raise CommandError(f"--preview-only: no dataset.json in {out}")
        meta = json.loads((out / "dataset.json").read_text()).get("meta", {})
        if meta.get("options", {}).get("dbt") is not None:
            raise CommandError("--preview-only draws 2D datasets only; this one is DBT")
        console.print(f"preview: {contact_sheet(out, out / 'preview.png')}")
        return 0
    opts = _options(args)
    if opts.dbt is not None and args.preview:
        raise CommandError("--preview draws 2D datasets only; leave it out with --dbt")
    if (out / "dataset.json").exists() and not args.overwrite:
        raise CommandError(f"{out / 'dataset.json'} exists; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    columns = (TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TextColumn("cases"),
               TimeElapsedColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[rate]}"))
    with Progress(*columns, console=console, disable=not console.is_terminal and
                  os.environ.get("GALACTO_PROGRESS") != "1") as progress:
        task = progress.add_task("synth", total=opts.cases, rate="")
        for res in iter_cases(opts, out, max(1, args.workers)):
            results.append(res)
            dt = time.perf_counter() - t0
            progress.update(task, advance=1, rate=f"{2 * len(results) / dt:.2f} img/s")
    index = build_index(opts, results)
    path = write_index(out, index)
    elapsed = time.perf_counter() - t0
    table = Table(title=f"galacto synth: {opts.cases} cases, seed {opts.seed}, "
                        f"{'+'.join(opts.profiles)}")
    for col in ("split", "images", "with lesion", "lesion boxes", "mimic boxes"):
        table.add_column(col, justify="right" if col != "split" else "left")
    for row in summarize(index):
        table.add_row(*(str(v) for v in row))
    Console().print(table)
    timing: dict[str, Any] = {"seconds": round(elapsed, 2), "workers": args.workers,
                              "cases": opts.cases}
    if opts.dbt is not None:
        per_volume = elapsed * max(1, args.workers) / (2 * opts.cases)
        console.print(f"wrote {path} in {elapsed:.1f} s ({per_volume:.1f} s per DBT volume "
                      f"and worker, {args.workers} workers)")
        timing["seconds_per_volume_per_worker"] = round(per_volume, 2)
    else:
        console.print(f"wrote {path} in {elapsed:.1f} s ({2 * opts.cases / elapsed:.2f} "
                      f"images/s, {args.workers} workers)")
    if args.preview:
        console.print(f"preview: {contact_sheet(out, out / 'preview.png')}")
    (out / "synth_timing.json").write_text(json.dumps(timing) + "\n")
    return 0
