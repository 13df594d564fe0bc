"""``galacto info``: show what the DICOM intake makes of one or more files.

For each file the full intake runs (:func:`serving.pipeline.dicom_in.read_image`, pixels
decoded, so truncated or undecodable pixel data is reported), then either the accepted image's
facts are printed (size, bits, photometric, spacing and its source attribute, laterality, view,
orientation, transfer syntax, SOP class, UIDs, decoded pixel min/max, warnings) or the rejection
(``code`` and message). ``--json`` prints one JSON array with an object per file instead.

Exit status: 0 when every file is accepted, 1 when any is rejected, 2 for usage errors (a path
that does not exist or cannot be read).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from serving.cli.options import Subparsers, add_command, positive_int
from serving.errors import CommandError
from serving.pipeline.dicom_in import DEFAULT_MAX_PIXELS, Image, Volume, VolumeHeader, read_image
from serving.pipeline.errors import IntakeError

#: Console width used when stdout is not a terminal (keeps UIDs on one line in logs).
_PIPE_WIDTH = 160


@dataclass(frozen=True)
class FileReport:
    """The intake's verdict on one file: exactly one of ``image`` and ``error`` is set."""

    path: Path
    image: Image | None = None
    error: IntakeError | None = None
    #: for a tomosynthesis volume: its header; ``image`` is then its central frame
    volume: VolumeHeader | None = None
    frame_number: int | None = None

    @property
    def accepted(self) -> bool:
        """True when the intake accepted the file."""
        return self.image is not None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: ``path``, ``accepted`` and ``image`` (header fields plus
        ``pixel_min``/``pixel_max``) or ``error`` (``code``, ``message``, ``attribute``,
        ``value``, ``expected``)."""
        result: dict[str, Any] = {"path": str(self.path), "accepted": self.accepted}
        if self.image is not None:
            image = dataclasses.asdict(self.image.header)
            image["pixel_min"], image["pixel_max"] = _pixel_min_max(self.image)
            result["image"] = image
        if self.volume is not None:
            heights = self.volume.frame_heights_mm
            result["volume"] = {
                "source": self.volume.source,
                "number_of_frames": self.volume.number_of_frames,
                "frame_heights_mm": [min(heights), max(heights)],
                "slice_thickness_mm": self.volume.slice_thickness_mm,
                "frame_shown": self.frame_number,
            }
        if self.error is not None:
            result["error"] = self.error.to_dict()
        return result


def register(subparsers: Subparsers) -> None:
    """Add the ``info`` subcommand to ``galacto``."""
    parser = add_command(
        subparsers,
        "info",
        func=run,
        help="show what the DICOM intake makes of files",
        description="Run the DICOM intake on each file (pixels decoded) and show what it "
        "makes of it: size, bits, photometric, spacing and its source, laterality, view, "
        "orientation, transfer syntax, SOP class, UIDs, pixel min/max; or why it is rejected.",
        epilog="Exit status: 0 all files accepted, 1 any file rejected, 2 usage error.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE_OR_DIR",
                        help="DICOM file(s), folders (searched recursively by content) or a "
                             "DICOMDIR (followed)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--allow-missing-spacing",
        action="store_true",
        help="accept images without usable pixel spacing (spacing shown as none)",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"largest accepted Rows x Columns (default {DEFAULT_MAX_PIXELS})",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``galacto info``; returns the exit status (0 all accepted, 1 any rejected)."""
    paths = _expand(list(args.files))
    reports = [
        inspect_file(
            path, max_pixels=args.max_pixels, allow_missing_spacing=args.allow_missing_spacing
        )
        for path in paths
    ]
    if args.json:
        print(json.dumps([report.to_json() for report in reports], indent=2))
    else:
        console = Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH)
        for report in reports:
            console.print(_table(report))
    return 0 if all(report.accepted for report in reports) else 1


def _expand(paths: list[Path]) -> list[Path]:
    """The files to inspect: files as given, folders and DICOMDIRs expanded
    (:func:`serving.dicom_files.find_dicom_files`); :class:`CommandError` (exit 2) naming a
    path that does not exist or a folder without DICOM files."""
    from serving.dicom_files import NoDicomFilesError, find_dicom_files

    try:
        return find_dicom_files(paths)
    except (FileNotFoundError, NoDicomFilesError) as exc:
        raise CommandError(str(exc)) from None


def inspect_file(path: Path, *, max_pixels: int, allow_missing_spacing: bool) -> FileReport:
    """Run the intake on ``path``; an :class:`IntakeError` becomes the report's ``error``.

    Raises:
        CommandError: the file cannot be read (permissions, I/O error).
    """
    try:
        image = read_image(path, max_pixels=max_pixels, allow_missing_spacing=allow_missing_spacing)
    except IntakeError as exc:
        if exc.code in VOLUME_CODES:
            return _inspect_volume(path, exc)
        return FileReport(path=path, error=exc)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return FileReport(path=path, image=image)


#: the 2D refusals a tomosynthesis volume (or raw projections) gets from ``read_image``
VOLUME_CODES = frozenset({"unsupported_sop_class", "multi_frame"})


def _inspect_volume(path: Path, refusal: IntakeError) -> FileReport:
    """``path`` read as ``galacto detect`` reads it (:func:`serving.cli.detect.read_input`):
    a tomosynthesis volume is reported with its central frame decoded; raw projections get
    the volume reader's refusal; anything else keeps the 2D ``refusal``."""
    from serving.cli.detect import read_input

    try:
        item = read_input(path, None)
    except IntakeError as exc:
        return FileReport(path=path, error=exc if exc.code != refusal.code
                          or "reconstructed volume" in exc.message else refusal)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not isinstance(item, Volume):
        return FileReport(path=path, error=refusal)
    centre = item.header.number_of_frames // 2
    try:
        frame = item.frame(centre)
    except IntakeError as exc:
        return FileReport(path=path, error=exc)
    return FileReport(path=path, image=frame, volume=item.header, frame_number=centre + 1)


def _pixel_min_max(image: Image) -> tuple[float, float]:
    """Observed min and max of the decoded pixels."""
    return float(image.pixels.min()), float(image.pixels.max())


def _table(report: FileReport) -> Table:
    """A two-column (field, value) table for one file."""
    table = Table(title=str(report.path), title_justify="left", show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    if report.error is not None:
        table.add_row("status", Text("rejected", style="bold red"))
        table.add_row("code", Text(report.error.code))
        table.add_row("reason", Text(report.error.message))
        return table
    assert report.image is not None
    table.add_row("status", Text("accepted", style="bold green"))
    if report.volume is not None:
        heights = report.volume.frame_heights_mm
        thickness = report.volume.slice_thickness_mm
        table.add_row("volume", Text(
            f"{report.volume.source}: {report.volume.number_of_frames} frames, heights "
            f"{min(heights):.1f}-{max(heights):.1f} mm"
            + ("" if thickness is None else f", slice thickness {thickness:g} mm")
            + f"; the rows below describe frame {report.frame_number}"))
    for name, value in _image_rows(report.image):
        table.add_row(name, Text(value))
    return table


def _image_rows(image: Image) -> list[tuple[str, str]]:
    """``(field, value)`` lines describing an accepted image."""
    pixel_min, pixel_max = _pixel_min_max(image)
    sign = "signed" if image.pixel_representation else "unsigned"
    rows = [
        ("size", f"{image.rows} x {image.cols} (rows x cols)"),
        ("bits stored", f"{image.bits_stored} of {image.bits_allocated} allocated, {sign}"),
        ("photometric", image.photometric_interpretation),
        ("rescale", f"slope {image.rescale_slope:g}, intercept {image.rescale_intercept:g}"),
        ("spacing", _spacing_text(image)),
        ("spacing source", image.spacing_source),
        ("laterality", image.laterality),
        ("view", _view_text(image)),
        ("patient orientation", "\\".join(image.patient_orientation or ()) or "-"),
        ("transfer syntax", f"{image.transfer_syntax_uid} ({image.transfer_syntax_name})"),
        ("SOP class", f"{image.sop_class_uid or '-'} ({image.sop_class_name or 'unknown'})"),
        ("modality", image.modality or "-"),
        ("presentation intent", image.presentation_intent or "-"),
        ("study UID", image.study_instance_uid or "-"),
        ("series UID", image.series_instance_uid or "-"),
        ("SOP instance UID", image.sop_instance_uid or "-"),
        ("patient ID", image.patient_id or "-"),
        ("accession number", image.accession_number or "-"),
        ("manufacturer", image.manufacturer or "-"),
        ("pixel min / max", f"{pixel_min:g} / {pixel_max:g}"),
        ("value range", f"{image.value_range[0]:g} .. {image.value_range[1]:g}"),
    ]
    rows.extend(("warning", note) for note in image.warnings)
    return rows


def _spacing_text(image: Image) -> str:
    if image.spacing_mm is None:
        return "none"
    row, col = image.spacing_mm
    return f"{row:g} x {col:g} mm (row x col)"


def _view_text(image: Image) -> str:
    text = image.view or "unknown"
    if image.view_modifiers:
        text += f" ({', '.join(image.view_modifiers)})"
    return text
