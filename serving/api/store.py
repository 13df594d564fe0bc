"""Stored result instances (STOW-RS results), retrievable by WADO-RS.

Layout: ``<root>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. Every UID used
in a path is checked against the DICOM UID syntax first (digits and dots, at most 64
characters), so a crafted UID cannot leave the folder. Files are written to a temporary name,
fsynced and renamed: a reader never sees half a file. The results of one request are stored
all or none (:meth:`ResultStore.put_all`). Results older than a retention period are deleted
by :meth:`ResultStore.purge` (``GALACTO_RESULTS_RETENTION_DAYS``; 0 keeps them).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from pydicom.dataset import Dataset

from serving.api.errors import ApiError
from serving.storage import encode, ensure_dir, is_uid, write_durably


def check_uid(value: str, what: str) -> str:
    """``value`` if it is a valid DICOM UID (:func:`serving.storage.is_uid`), else 400
    ``invalid_uid``."""
    if not is_uid(value):
        raise ApiError(400, "invalid_uid",
                       f"{what} must be a DICOM UID (digits and dots, at most 64 characters)")
    return value


def to_bytes(ds: Dataset) -> bytes:
    """Part-10 bytes of ``ds`` (with its file meta)."""
    return encode(ds)


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
        ensure_dir(folder)
        path = folder / f"{sop}.dcm"
        write_durably(encode(ds), folder, path)
        return path

    def put_all(self, datasets: Sequence[Dataset]) -> list[Path]:
        """Store every dataset, or none: when one fails, those already written are removed
        and the error is raised (a client retrying the request stores each result once).

        Raises:
            ApiError: 400 ``invalid_uid``; OSError: the disk.
        """
        written: list[Path] = []
        try:
            for ds in datasets:
                written.append(self.put(ds))
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return written

    def purge(self, max_age_s: float) -> int:
        """Delete results last written more than ``max_age_s`` seconds ago, and folders that
        are empty and unchanged for as long; returns the number of files deleted."""
        cutoff = time.time() - max_age_s
        removed = 0
        for path in self.root.glob("*/*/*.dcm"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        for folder in sorted(self.root.glob("*/*"), reverse=True) + sorted(self.root.glob("*")):
            try:
                if folder.stat().st_mtime < cutoff and not any(folder.iterdir()):
                    folder.rmdir()
            except OSError:  # gone, or written to meanwhile
                continue
        return removed

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
