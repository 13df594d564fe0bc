"""Stored result instances (STOW-RS results), retrievable by WADO-RS.

Layout: ``<root>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. Every UID used
in a path is checked against the DICOM UID syntax first (digits and dots, at most 64
characters), so a crafted UID cannot leave the folder. Files are written to a temporary name,
fsynced and renamed: a reader never sees half a file.
"""

from __future__ import annotations

import os
import re
from io import BytesIO
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset

from serving.api.errors import ApiError

UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def check_uid(value: str, what: str) -> str:
    """``value`` if it is a valid DICOM UID, else 400 ``invalid_uid``."""
    # fullmatch: with match, "$" also matches before a trailing newline ("1.2.3\n" passed)
    if len(value) > 64 or not UID_RE.fullmatch(value):
        raise ApiError(400, "invalid_uid",
                       f"{what} must be a DICOM UID (digits and dots, at most 64 characters)")
    return value


def to_bytes(ds: Dataset) -> bytes:
    """Part-10 bytes of ``ds`` (with its file meta)."""
    buf = BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


class ResultStore:
    """Result instances on disk, by study / series / instance UID."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, ds: Dataset) -> Path:
        """Store ``ds``; returns its path."""
        study = check_uid(str(ds.StudyInstanceUID), "StudyInstanceUID")
        series = check_uid(str(ds.SeriesInstanceUID), "SeriesInstanceUID")
        sop = check_uid(str(ds.SOPInstanceUID), "SOPInstanceUID")
        folder = self.root / study / series
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{sop}.dcm"
        tmp = folder / f".{sop}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(to_bytes(ds))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path

    def find(self, study: str, series: str | None = None, instance: str | None = None
             ) -> list[Path]:
        """Paths of the stored instances matching the UIDs (sorted); empty when none."""
        folder = self.root / check_uid(study, "StudyInstanceUID")
        if series is not None:
            folder = folder / check_uid(series, "SeriesInstanceUID")
        if not folder.is_dir():
            return []
        if instance is not None:
            path = folder / f"{check_uid(instance, 'SOPInstanceUID')}.dcm"
            return [path] if path.is_file() else []
        return sorted(folder.rglob("*.dcm"))
