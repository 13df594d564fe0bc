"""``galacto detect``: detect and locate filling defects in DICOM files or folders.

Files are read with the intake, grouped into studies by StudyInstanceUID, run through
:func:`serving.pipeline.detect.detect`, and reported as a table (findings with their locations
and the evidence their score was rescored with, and the two-view BI-RADS phrases), probable
mimics in a table of their own (never among the findings), optionally as JSON (the HTTP API's
schema) and as PNG overlays.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from serving.cli.options import Subparsers, add_command, add_model_option
from serving.errors import CommandError

if TYPE_CHECKING:
    from rich.console import Console

    from serving.pipeline.findings import DetectionResponse, FindingOut, StudyOut


#: Console width when the output is not a terminal.
PIPE_WIDTH = 200


def register(sub: Subparsers) -> None:
    """Add ``galacto detect``."""
    p = add_command(sub, "detect", func=run, help="detect filling defects in DICOM files",
                    description="Detect and locate filling defects in galactogram DICOM files "
                                "(folders are searched recursively; a file is DICOM by its "
                                "DICM marker or a .dcm suffix; a DICOMDIR is followed).")
    p.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_DIR")
    add_model_option(p)
    p.add_argument("--operating-point", default=None,
                   help="operating point name from the model card or the calibration "
                        "(default: theirs)")
    p.add_argument("--calibration", type=Path, default=None, metavar="FILE",
                   help="site calibration file from `galacto calibrate`: its thresholds "
                        "replace the card's operating points (default: $GALACTO_CALIBRATION, "
                        "if set)")
    p.add_argument("--json", type=Path, default=None, help="write the result as JSON here")
    p.add_argument("--overlay", type=Path, default=None, help="write PNG overlays here")


def _files(paths: list[Path]) -> list[Path]:
    """The DICOM files given or found (by content; DICOMDIRs followed), each once."""
    from serving.dicom_files import NoDicomFilesError, find_dicom_files

    try:
        return find_dicom_files(paths)
    except (FileNotFoundError, NoDicomFilesError) as exc:
        raise CommandError(str(exc)) from None


def calibration_file(given: Path | None) -> Path | None:
    """``--calibration``, else ``$GALACTO_CALIBRATION`` when set and not empty, else None."""
    import os

    env = os.environ.get("GALACTO_CALIBRATION", "").strip()
    return given if given is not None else (Path(env) if env else None)


def _evidence(f: FindingOut) -> str:
    """The finding's evidence text, led by the network's own score when rescoring changed it."""
    parts = []
    if f.detector_score is not None and abs(f.detector_score - f.score) >= 0.005:
        parts.append(f"network {f.detector_score:.2f}")
    if f.evidence:
        parts.append(f.evidence)
    return "; ".join(parts) or "-"


def print_study(console: Console, study: StudyOut, result: DetectionResponse) -> None:
    """One study: its findings table, two-view phrases and, when there are any, the probable
    mimics in a table of their own."""
    from rich.table import Table

    op, model = result.operating_point, result.model
    table = Table(title=f"study {study.study_instance_uid}  ({model.name} {model.version}, "
                        f"{op.name}: score >= {op.score_threshold:.3f}, {op.source})")
    for col in ("image", "view", "finding", "score", "box (px)", "size (mm)", "location",
                "evidence"):
        table.add_column(col)
    for img in study.images:
        name = Path(img.source).name if img.source else str(img.index)
        if not img.findings:
            table.add_row(name, f"{img.laterality} {img.view}", "-", "", "", "",
                          "no finding", "")
        for f in img.findings:
            table.add_row(name, f"{img.laterality} {img.view}", f.id, f"{f.score:.2f}",
                          " ".join(f"{v:.0f}" for v in f.box_px),
                          f"{f.size_mm[0]:.1f} x {f.size_mm[1]:.1f}",
                          f.location.text if f.location else "-", _evidence(f))
    console.print(table)
    for fused in study.fused:
        ids = ", ".join(fused.finding_ids)
        console.print(f"  [bold]{fused.phrase}[/bold]  (findings {ids}, "
                      f"score {fused.score:.2f})")
    if any(img.mimics for img in study.images):
        mimics = Table(title="probable mimics \N{EM DASH} not lesions", title_style="magenta",
                       border_style="magenta")
        for col in ("image", "view", "mimic", "score", "box (px)", "size (mm)"):
            mimics.add_column(col)
        for img in study.images:
            name = Path(img.source).name if img.source else str(img.index)
            for m in img.mimics:
                x1, y1, x2, y2 = m.box_mm
                mimics.add_row(name, f"{img.laterality} {img.view}", m.text, f"{m.score:.2f}",
                               " ".join(f"{v:.0f}" for v in m.box_px),
                               f"{x2 - x1:.1f} x {y2 - y1:.1f}")
        console.print(mimics)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every file was analysed, 1 when some were rejected by the intake."""
    import sys

    from rich.console import Console

    from serving.outputs.overlay import write_overlay
    from serving.pipeline.calibration import calibrated_model
    from serving.pipeline.detect import detect
    from serving.pipeline.dicom_in import Image, read_image
    from serving.pipeline.errors import IntakeError
    from serving.pipeline.model import ModelError, default_model_dir, load_model

    # a pipe or a file gets wide rows, not rows wrapped at 80 columns
    console = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
    files = _files(args.paths)
    try:
        model = calibrated_model(load_model(args.model or default_model_dir()),
                                 calibration_file(args.calibration))
        model.operating_point(args.operating_point)
    except ModelError as exc:
        raise CommandError(str(exc)) from None
    images: list[Image] = []
    sources: list[str | None] = []
    rejected = 0
    for path in files:
        try:
            images.append(read_image(path, reduce_to_spacing_mm=model.preprocess.spacing_mm))
            sources.append(str(path))
        except IntakeError as exc:
            rejected += 1
            console.print(f"[red]rejected[/red] {path}: {exc.code}: {exc}")
    if not images:
        raise CommandError("no file could be read as a galactogram image")
    result = detect(images, model, args.operating_point, sources=sources)
    for study in result.studies:
        print_study(console, study, result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(result.model_dump_json(indent=1) + "\n")
        console.print(f"wrote {args.json}")
    if args.overlay:
        flat = [img for s in result.studies for img in s.images]
        for img_out in flat:
            write_overlay(images[img_out.index], img_out, args.overlay)
        console.print(f"wrote {len(flat)} overlay(s) to {args.overlay}")
    return 1 if rejected else 0
