"""What the dataset tools need to know about one image, read through serving's DICOM intake
(``serving.pipeline.dicom_in.read_header``: the same checks as inference, no pixel decoding)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serving.pipeline.dicom_in import read_header
from serving.pipeline.errors import IntakeError


@dataclass(frozen=True)
class ImageFacts:
    """Header facts of one accepted image.

    Attributes:
        path: the file.
        rows: Rows, image height in pixels.
        cols: Columns, image width in pixels.
        spacing_mm: ``(row, column)`` pixel spacing in mm, ``None`` when the file has none.
        sop_instance_uid: SOPInstanceUID.
        study_instance_uid: StudyInstanceUID.
        patient_id: PatientID (empty when absent).
        manufacturer: Manufacturer (empty when absent).
        laterality: ``L``, ``R`` or ``U``.
        view: ``CC``, ``MLO``, ``ML``, ... or ``None`` when unknown.
    """

    path: Path
    rows: int
    cols: int
    spacing_mm: tuple[float, float] | None
    sop_instance_uid: str
    study_instance_uid: str
    patient_id: str
    manufacturer: str
    laterality: str
    view: str | None


class NotAnImageError(Exception):
    """A file the intake refuses (not a DICOM image it accepts, or unreadable): ``reason``
    says why in one line."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def read_facts(path: Path) -> ImageFacts:
    """Read ``path``'s header through the intake.

    Raises:
        NotAnImageError: the file is missing or unreadable, or the intake refuses it (the reason
            names the attribute at fault, as the intake does).
    """
    try:
        h = read_header(path, allow_missing_spacing=True)
    except IntakeError as exc:
        raise NotAnImageError(path, str(exc)) from None
    except OSError as exc:
        raise NotAnImageError(path, exc.strerror or str(exc)) from None
    spacing = None if h.spacing_mm is None else (float(h.spacing_mm[0]), float(h.spacing_mm[1]))
    return ImageFacts(path=path, rows=h.rows, cols=h.cols, spacing_mm=spacing,
                      sop_instance_uid=str(h.sop_instance_uid or ""),
                      study_instance_uid=str(h.study_instance_uid or ""),
                      patient_id=str(h.patient_id or ""),
                      manufacturer=str(h.manufacturer or ""),
                      laterality=str(h.laterality), view=h.view)
