"""The DICOM objects of an annotation source: one file, or every file under a folder, and
:func:`read_dicom_annotations`, the loop the DICOM readers (SR, GSPS) share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from training.datasets.annotations import Annotations, Skipped


def dicom_objects(src: Path) -> Iterator[tuple[str, Dataset] | Skipped]:
    """``(file name, dataset)`` for each readable DICOM file (pixel data not loaded), and a
    :class:`Skipped` for each file that is not DICOM; a folder is searched recursively.

    Raises:
        FileNotFoundError: ``src`` does not exist.
    """
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    files = sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else [src]
    for path in files:
        name = str(path.relative_to(src)) if src.is_dir() else path.name
        try:
            yield name, pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError) as exc:
            yield Skipped(name, f"not a DICOM file ({exc})")


def read_dicom_annotations(src: Path, read_one: Callable[[str, Dataset], Annotations]
                           ) -> Annotations:
    """The annotations of every DICOM object at ``src`` (see :func:`dicom_objects`):
    ``read_one(file name, dataset)`` for each, in file order, pooled; files that are not DICOM
    are listed as skipped where they fall.

    Raises:
        FileNotFoundError: ``src`` does not exist.
    """
    out = Annotations()
    for entry in dicom_objects(src):
        if isinstance(entry, Skipped):
            out.skipped.append(entry)
        else:
            out.extend(read_one(*entry))
    return out
