"""``galacto detect``: detect and locate filling defects in DICOM files or folders.

Files are read with the intake, grouped into studies by StudyInstanceUID, run through
:func:`serving.pipeline.detect.detect`, and reported as a table (findings with their locations
and the evidence their score was rescored with, and the two-view BI-RADS phrases), probable
mimics in a table of their own (never among the findings), optionally as JSON (the HTTP API's
schema) and as PNG overlays.

Tomosynthesis: a file whose header is a volume (:func:`serving.pipeline.dicom_in.is_volume`:
Breast Tomosynthesis Image, multi-frame grayscale Secondary Capture) is read with
:func:`~serving.pipeline.dicom_in.read_volume` (its frames are decoded during detection, one
at a time) and analysed in slabs (``--slab``, ``--stride``; defaults ``GALACTO_TOMO_SLAB``,
``GALACTO_TOMO_STRIDE``, else the model card's tomosynthesis settings). Raw DBT projections (Breast
Projection X-Ray Image) go to the volume reader too, which refuses them naming what to send.
The table gives a DBT finding's best frame ("frame 23/48") and its single-view location; an
overlay PNG is written per frame that holds a finding's (or a mimic's) box, named
``<index>_<laterality>_<view>_f<NNN>.png`` (the central frame when there is none).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from serving.cli.options import Subparsers, add_command, add_model_option, positive_int
from serving.errors import CommandError

if TYPE_CHECKING:
    from rich.console import Console

    from serving.pipeline.dicom_in import Image, Volume
    from serving.pipeline.findings import (
        DetectionResponse,
        FindingOut,
        FrameOut,
        ImageOut,
        MimicOut,
        StudyOut,
    )


#: Console width when the output is not a terminal.
PIPE_WIDTH = 200
#: What ``galacto detect --help`` says the command does (argparse re-wraps it).
DESCRIPTION = """Detect and locate filling defects in galactogram DICOM files and tomosynthesis
volumes (folders are searched recursively; a file is DICOM by its DICM marker or a .dcm suffix;
a DICOMDIR is followed)."""


def register(sub: Subparsers) -> None:
    """Add ``galacto detect``."""
    p = add_command(sub, "detect", func=run, help="detect filling defects in DICOM files",
                    description=DESCRIPTION)
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
    p.add_argument("--overlay", type=Path, default=None, help="write PNG overlays here (a "
                   "tomosynthesis volume: one per frame holding a finding)")
    # defaults None: GALACTO_TOMO_SLAB / GALACTO_TOMO_STRIDE, else the model card's
    # tomosynthesis settings, else the pipeline's (serving.pipeline.detect_volume.TomoSettings),
    # named in the help text without importing the pipeline when the parser is built
    tomo = p.add_argument_group("Tomosynthesis Options")
    tomo.add_argument("--slab", type=positive_int, default=None, metavar="N",
                      help="frames of a volume averaged into one detector input (1: every "
                           "frame alone; GALACTO_TOMO_SLAB, else the model card's, else "
                           "default 3)")
    tomo.add_argument("--stride", type=positive_int, default=None, metavar="N",
                      help="frames between detector inputs (default 3: slabs that tile the "
                           "volume, unless GALACTO_TOMO_STRIDE or the model card's "
                           "tomosynthesis settings say otherwise)")


def _files(paths: list[Path]) -> list[Path]:
    """The DICOM files given or found (by content; DICOMDIRs followed), each once."""
    from serving.dicom_files import NoDicomFilesError, find_dicom_files

    try:
        return find_dicom_files(paths)
    except (FileNotFoundError, NoDicomFilesError) as exc:
        raise CommandError(str(exc)) from None


def read_input(path: Path, reduce_to_spacing_mm: float | None) -> Image | Volume:
    """One file as a 2D :class:`~serving.pipeline.dicom_in.Image` or a tomosynthesis
    :class:`~serving.pipeline.dicom_in.Volume`, by its header (parsed under the intake's
    guards, without pixel data). A volume, or a raw DBT projection (which the volume reader
    refuses, saying to send the reconstructed volume), goes to ``read_volume``; anything
    else, including a header that cannot be parsed, to ``read_image`` (with
    ``reduce_to_spacing_mm``), which names what is wrong.

    Raises:
        serving.pipeline.errors.IntakeError: the file is refused.
        OSError: the file cannot be read.
    """
    from serving.pipeline.dicom_in import (
        DEFAULT_MAX_VOLUME_PIXELS,
        is_volume,
        read_image,
        read_volume,
    )
    from serving.pipeline.errors import IntakeError
    from serving.pipeline.intake.parse import read_dataset
    from serving.pipeline.intake.volume_header import BREAST_PROJECTION_SOP_CLASSES

    try:  # the volume bound: a deflated volume inflates beyond an image's
        header = read_dataset(path, max_pixels=DEFAULT_MAX_VOLUME_PIXELS)
    except IntakeError:
        header = None
    if header is not None:
        sop_class = str(header.get("SOPClassUID", "")) or str(
            getattr(header, "file_meta", {}).get("MediaStorageSOPClassUID", ""))
        if is_volume(header) or sop_class in BREAST_PROJECTION_SOP_CLASSES:
            return read_volume(path)
    return read_image(path, reduce_to_spacing_mm=reduce_to_spacing_mm)


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


def frame_text(frame: FrameOut | None, img: ImageOut) -> str:
    """``"frame 23/48"`` (the best frame of a tomosynthesis finding), ``"-"`` for 2D."""
    if frame is None:
        return "-"
    return f"frame {frame.best}/{img.number_of_frames or '?'}"


def _location(f: FindingOut) -> str:
    """The single-view location of a tomosynthesis finding, else the view's location."""
    if f.single_view_location is not None:
        return f.single_view_location.phrase
    return f.location.text if f.location else "-"


def _view(img: ImageOut) -> str:
    return f"{img.laterality} {img.view}" + (" DBT" if img.number_of_frames else "")


def print_study(console: Console, study: StudyOut, result: DetectionResponse) -> None:
    """One study: its findings table, two-view phrases and, when there are any, the probable
    mimics in a table of their own. A study with a tomosynthesis volume gets a ``frame``
    column (the best frame of each volume finding)."""
    from rich.table import Table

    op, model = result.operating_point, result.model
    dbt = any(img.number_of_frames for img in study.images)
    table = Table(title=f"study {study.study_instance_uid}  ({model.name} {model.version}, "
                        f"{op.name}: score >= {op.score_threshold:.3f}, {op.source})")
    for col in ("image", "view", "finding", *(("frame",) if dbt else ()), "score", "box (px)",
                "size (mm)", "location", "evidence"):
        table.add_column(col)
    for img in study.images:
        name = Path(img.source).name if img.source else str(img.index)
        if not img.findings:
            table.add_row(name, _view(img), "-", *(("",) if dbt else ()), "", "", "",
                          "no finding", "")
        for f in img.findings:
            table.add_row(name, _view(img), f.id, *((frame_text(f.frame, img),) if dbt else ()),
                          f"{f.score:.2f}", " ".join(f"{v:.0f}" for v in f.box_px),
                          f"{f.size_mm[0]:.1f} x {f.size_mm[1]:.1f}", _location(f),
                          _evidence(f))
    console.print(table)
    for fused in study.fused:
        ids = ", ".join(fused.finding_ids)
        console.print(f"  [bold]{fused.phrase}[/bold]  (findings {ids}, "
                      f"score {fused.score:.2f})")
    if any(img.mimics for img in study.images):
        mimics = Table(title="probable mimics \N{EM DASH} not lesions", title_style="magenta",
                       border_style="magenta")
        for col in ("image", "view", "mimic", *(("frame",) if dbt else ()), "score", "box (px)",
                    "size (mm)"):
            mimics.add_column(col)
        for img in study.images:
            name = Path(img.source).name if img.source else str(img.index)
            for m in img.mimics:
                x1, y1, x2, y2 = m.box_mm
                mimics.add_row(name, _view(img), m.text,
                               *((frame_text(m.frame, img),) if dbt else ()), f"{m.score:.2f}",
                               " ".join(f"{v:.0f}" for v in m.box_px),
                               f"{x2 - x1:.1f} x {y2 - y1:.1f}")
        console.print(mimics)


def print_warnings(console: Console, study: StudyOut) -> None:
    """Each image's warnings (what the intake assumed or repaired, e.g. pixel bits above
    HighBit cleared, and how a volume was run), one line each under the study's tables."""
    for img in study.images:
        name = Path(img.source).name if img.source else str(img.index)
        for warning in img.warnings:
            console.print(f"[yellow]warning[/yellow] {name}: {warning}", highlight=False)


def _frames_shown(img: ImageOut) -> list[int]:
    """The frame numbers (1-based) that hold a finding's or a mimic's box, increasing; the
    central frame when none does."""
    marks: list[FindingOut | MimicOut] = [*img.findings, *img.mimics]
    frames = sorted({m.frame.best for m in marks if m.frame is not None})
    return frames or [((img.number_of_frames or 1) + 1) // 2]


def write_volume_overlays(volume: Volume, img: ImageOut, folder: Path) -> list[Path]:
    """Write one PNG per frame of :func:`_frames_shown` with
    :func:`serving.outputs.overlay.write_frame_overlay`
    (``<folder>/<index>_<laterality>_<view>_f<NNN>.png``: the frame, its findings solid, the
    findings best seen on another frame but detected on it dashed, its mimics) and return
    their paths.

    Raises:
        serving.pipeline.errors.IntakeError: a frame cannot be decoded.
    """
    from serving.outputs.overlay import write_frame_overlay

    return [write_frame_overlay(volume.frame(number - 1), img, number, folder)
            for number in _frames_shown(img)]


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every file was analysed, 1 when some were rejected by the intake."""
    import sys

    from rich.console import Console

    from serving.gateway.volumes import detect_refusing_volumes
    from serving.outputs.overlay import write_overlay
    from serving.pipeline.calibration import calibrated_model
    from serving.pipeline.dicom_in import Image
    from serving.pipeline.errors import IntakeError
    from serving.pipeline.model import ModelError, default_model_dir, load_model
    from serving.settings import SettingsError, tomo_env, tomo_override

    # a pipe or a file gets wide rows, not rows wrapped at 80 columns
    console = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
    files = _files(args.paths)
    try:
        model = calibrated_model(load_model(args.model or default_model_dir()),
                                 calibration_file(args.calibration))
        model.operating_point(args.operating_point)
    except ModelError as exc:
        raise CommandError(str(exc)) from None
    inputs: list[Image | Volume] = []
    sources: list[str | None] = []
    rejected: list[dict[str, str]] = []
    for path in files:
        try:
            inputs.append(read_input(path, model.preprocess.spacing_mm))
            sources.append(str(path))
        except IntakeError as exc:
            rejected.append({"file": str(path), "detail": exc.code, "message": str(exc)})
            console.print(f"[red]rejected[/red] {path}: {exc.code}: {exc}")
    if not inputs:
        raise CommandError("no file could be read as a galactogram image or tomosynthesis "
                           "volume")
    try:
        env = tomo_env()
    except SettingsError as exc:
        raise CommandError(str(exc)) from None
    slab, stride = getattr(args, "slab", None), getattr(args, "stride", None)
    tomo = tomo_override(model, env.slab if slab is None else slab,
                         env.stride if stride is None else stride)
    # a volume's frames are decoded only now: one that cannot be refuses that file alone
    detected = detect_refusing_volumes(inputs, model, args.operating_point, sources=sources,
                                       tomo=tomo, request_id=None)
    for failure in detected.failures:
        message = f"frame {failure.frame} of the volume could not be decoded: {failure.error}"
        rejected.append({"file": str(sources[failure.index]), "detail": failure.error.code,
                         "message": message})
        console.print(f"[red]rejected[/red] {sources[failure.index]}: {failure.error.code}: "
                      f"{message}")
    if detected.response is None:
        raise CommandError("no file could be analysed: every volume had a frame that could "
                           "not be decoded")
    result = detected.response
    inputs = [inputs[i] for i in detected.kept]
    for study in result.studies:
        print_study(console, study, result)
        print_warnings(console, study)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = result.model_dump(mode="json")
        out["rejected"] = rejected  # the files refused, as /v1/detect lists refused parts
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        console.print(f"wrote {args.json}")
    if args.overlay:
        flat = [img for s in result.studies for img in s.images]
        count = 0
        for img_out in flat:
            item = inputs[img_out.index]
            if isinstance(item, Image):
                write_overlay(item, img_out, args.overlay)
                count += 1
            else:
                count += len(write_volume_overlays(item, img_out, args.overlay))
        console.print(f"wrote {count} overlay(s) to {args.overlay}")
    return 1 if rejected else 0
