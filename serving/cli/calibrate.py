"""``galacto calibrate``: re-choose a model's operating points on a site's own normal studies.

Every DICOM file under ``--normals`` is read through the serving intake (refused files are
listed with their reason and skipped), grouped by study, and run through the full pipeline
(:func:`serving.pipeline.detect.detect` with ``score_threshold=0.0``: every candidate with its
final score). The images are lesion-free, so every finding is a false positive. For each
target FP/image rate the lowest threshold meeting it is kept
(:mod:`serving.pipeline.calibration`) and written to a site-calibration JSON file that
``galacto serve`` / the gateway (``GALACTO_CALIBRATION``) and ``galacto detect
--calibration`` apply.
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from serving.cli.options import Subparsers, add_command, add_model_option
from serving.errors import CommandError

if TYPE_CHECKING:
    from rich.console import Console

    from serving.pipeline.calibration import SiteCalibration
    from serving.pipeline.model import DetectorModel

DEFAULT_OUT = Path("site-calibration.json")
#: Offset of the "DICM" prefix of a DICOM Part 10 file (after the 128-byte preamble).


def register(sub: Subparsers) -> None:
    """Add ``galacto calibrate``."""
    p = add_command(
        sub, "calibrate", func=run, help="re-choose operating points on a site's normal studies",
        description="Run the model on a folder of normal (lesion-free) studies of this site, "
                    "where every finding is a false positive, and choose for each target "
                    "false-positive rate the lowest score threshold that meets it. Writes a "
                    "site-calibration JSON for GALACTO_CALIBRATION or `galacto detect "
                    "--calibration`. Needs at least 1/(0.09*rate) images per target (Poisson "
                    "counting, relative standard error <= 30 %).")
    p.add_argument("--normals", type=Path, required=True, metavar="DIR",
                   help="folder of normal studies (DICOM files, searched recursively)")
    p.add_argument("--target-fp", type=float, action="append", default=None, metavar="RATE",
                   help="target false positives per image (repeatable); default: the model "
                        "card's operating points and their budgets. A target equal to a card "
                        "budget keeps that point's name, others are named site_<RATE>")
    add_model_option(p)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="FILE",
                   help=f"calibration file to write (default: ./{DEFAULT_OUT}; never inside "
                        "the model folder)")


@dataclass
class Intake:
    """What was read from the normals folder.

    Attributes:
        files: DICOM files found.
        studies: StudyInstanceUID -> files whose header the intake accepted.
        refused: ``(file, reason)`` of every file the intake refused.
    """

    files: list[Path]
    studies: OrderedDict[str | None, list[Path]] = field(default_factory=OrderedDict)
    refused: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        """Number of files whose header was accepted."""
        return sum(len(v) for v in self.studies.values())


def dicom_files(folder: Path) -> list[Path]:
    """Every DICOM file under ``folder`` (see :func:`serving.dicom_files.find_dicom_files`).

    Raises:
        CommandError: ``folder`` is not a folder, or holds no DICOM file.
    """
    from serving.dicom_files import NoDicomFilesError, find_dicom_files

    if not folder.is_dir():
        raise CommandError(f"{folder}: not a folder (--normals needs a folder of normal "
                           "studies)")
    try:
        return find_dicom_files([folder])
    except NoDicomFilesError as exc:
        raise CommandError(str(exc)) from None


def check_out(out: Path, model_dir: Path) -> None:
    """Refuse an output file inside the model folder (released models are never changed)
    or one that is a folder.

    Raises:
        CommandError: saying why.
    """
    if out.resolve().is_relative_to(model_dir.resolve()):
        raise CommandError(f"--out {out} is inside the model folder {model_dir}; a site "
                           "calibration is kept outside the released model (e.g. "
                           f"./{DEFAULT_OUT})")
    if out.is_dir():
        raise CommandError(f"--out {out} is a folder; expected a file name")


def read_headers(files: list[Path], console: Console) -> Intake:
    """Check every file's header with the intake and group the accepted ones by study."""
    from serving.pipeline.dicom_in import read_header
    from serving.pipeline.errors import IntakeError

    intake = Intake(files=files)
    for path in files:
        try:
            header = read_header(path)
        except IntakeError as exc:
            intake.refused.append((path, f"{exc.code}: {exc}"))
            console.print(f"[red]refused[/red] {path}: {exc.code}: {exc}")
            continue
        intake.studies.setdefault(header.study_instance_uid, []).append(path)
    return intake


def study_scores(paths: list[Path], model: DetectorModel, intake: Intake,
                 console: Console) -> tuple[list[float], int]:
    """Scores of every finding on one study's images, and the number of images analysed
    (files refused while decoding are added to ``intake.refused``)."""
    from serving.pipeline.detect import detect
    from serving.pipeline.dicom_in import Image, read_image
    from serving.pipeline.errors import IntakeError

    images: list[Image] = []
    for path in paths:
        try:
            images.append(read_image(path, reduce_to_spacing_mm=model.preprocess.spacing_mm))
        except IntakeError as exc:
            intake.refused.append((path, f"{exc.code}: {exc}"))
            console.print(f"[red]refused[/red] {path}: {exc.code}: {exc}")
    if not images:
        return [], 0
    result = detect(images, model, score_threshold=0.0)
    scores = [f.score for s in result.studies for img in s.images for f in img.findings]
    return scores, len(images)


def calibrate(args: argparse.Namespace, model: DetectorModel, console: Console
              ) -> SiteCalibration:
    """Run the model on the normals and choose the thresholds.

    Raises:
        CalibrationError: no readable image, or too few for a target rate.
        CommandError: no DICOM file under the folder.
    """
    from rich.progress import track

    from serving.pipeline.calibration import (
        SiteCalibration,
        calibrate_points,
        check_set_size,
        default_point,
        model_sha256,
        point_names,
    )

    targets = point_names(model.operating_points, args.target_fp)
    intake = read_headers(dicom_files(args.normals), console)
    if intake.accepted:
        check_set_size(intake.accepted, targets)  # before any inference
    scores: list[float] = []
    images = studies = 0
    for paths in track(list(intake.studies.values()), description="normals",
                       console=console, transient=True):
        s, n = study_scores(paths, model, intake, console)
        scores.extend(s)
        images += n
        studies += int(n > 0)
    points = calibrate_points(scores, images, targets, model.operating_points,
                              floor=model.decode.score_thresh)
    inputs = {"normals": str(args.normals), "target_fp": args.target_fp,
              "model": str(model.path), "files": len(intake.files),
              "refused": len(intake.refused)}
    return SiteCalibration(
        model_name=model.name, model_version=model.version, onnx_sha256=model_sha256(model),
        created=datetime.now(UTC).replace(microsecond=0), images=images, studies=studies,
        default_operating_point=default_point(
            targets, model.operating_point(model.default_operating_point)),
        points=points, inputs=inputs)


def print_table(calibration: SiteCalibration, console: Console) -> None:
    """The calibrated points: target, card and site thresholds, measured FP/image."""
    from rich.table import Table

    table = Table(title=f"site calibration of {calibration.model_name} "
                        f"{calibration.model_version}: {calibration.images} normal image(s), "
                        f"{calibration.studies} stud{'y' if calibration.studies == 1 else 'ies'}")
    for col in ("operating point", "target FP/image", "card threshold", "site threshold",
                "measured FP/image"):
        table.add_column(col)
    for p in calibration.points.values():
        card = "-" if p.card_score_threshold is None else f"{p.card_score_threshold:.4f}"
        default = " (default)" if p.name == calibration.default_operating_point else ""
        table.add_row(f"{p.name}{default}", f"{p.target_fp_per_image:g}", card,
                      f"{p.score_threshold:.4f}",
                      f"{p.fp_per_image:.3f} ({p.false_positives}/{p.images})")
    console.print(table)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when the calibration file was written; errors exit 2 (CommandError)."""
    from rich.console import Console

    from serving.pipeline.calibration import write_calibration
    from serving.pipeline.model import ModelError, default_model_dir, load_model

    console = Console()
    try:
        model = load_model(args.model or default_model_dir())
        check_out(args.out, model.path)
        calibration = calibrate(args, model, console)
    except ModelError as exc:  # CalibrationError included
        raise CommandError(str(exc)) from None
    try:
        calibration = write_calibration(calibration, args.out)
    except OSError as exc:
        raise CommandError(f"{args.out}: cannot write the calibration ({exc})") from None
    print_table(calibration, console)
    console.print(f"wrote {args.out}: use it with GALACTO_CALIBRATION={args.out} (galacto "
                  f"serve, gateway) or galacto detect --calibration {args.out}")
    return 0
