"""Which files on disk are DICOM: the inputs of ``galacto detect``, ``info`` and ``calibrate``.

Archives and CDs export studies as files without a ``.dcm`` suffix (``IMAGES/IM000001``) with a
DICOMDIR beside them (PS3.10 media). A file is taken as DICOM by its content: the Part 10
``DICM`` marker after the 128-byte preamble (or a ``.dcm`` suffix, so the intake can name what
is wrong with a broken one). A DICOMDIR, given or found, is followed to the files it
references (pydicom's :class:`~pydicom.fileset.FileSet`) and is not itself an input. Every
file is listed once, in path order.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Final

#: Bytes before the ``DICM`` marker of a Part 10 file.
PREAMBLE_BYTES: Final = 128
#: Media Storage Directory Storage: the SOP class of a DICOMDIR (PS3.4 Annex F).
MEDIA_STORAGE_DIRECTORY: Final = "1.2.840.10008.1.3.10"


class NoDicomFilesError(ValueError):
    """None of the given paths is or holds a DICOM file (the message names them)."""


def has_dicm_marker(path: Path) -> bool:
    """Whether ``path`` starts like a DICOM Part 10 file (preamble, then ``DICM``)."""
    try:
        with path.open("rb") as f:
            f.seek(PREAMBLE_BYTES)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom(path: Path) -> bool:
    """``*.dcm`` (any case), or a file with the Part 10 ``DICM`` marker."""
    return path.suffix.lower() == ".dcm" or has_dicm_marker(path)


def dicomdir_files(path: Path) -> list[Path] | None:
    """The existing files a DICOMDIR references, or None when ``path`` is not a DICOMDIR
    (or cannot be read as one)."""
    if path.name.upper() != "DICOMDIR" and not has_dicm_marker(path):
        return None
    from pydicom import dcmread
    from pydicom.fileset import FileSet

    try:
        ds = dcmread(path, stop_before_pixels=True)
        if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) != MEDIA_STORAGE_DIRECTORY:
            return None
        return [Path(instance.path) for instance in FileSet(ds)
                if Path(instance.path).is_file()]
    except Exception:
        return None


def find_dicom_files(paths: Iterable[Path]) -> list[Path]:
    """Every DICOM file given or under the given folders (recursively; hidden files skipped),
    DICOMDIRs replaced by the files they reference, each file once.

    Raises:
        FileNotFoundError: a path does not exist.
        NoDicomFilesError: no DICOM file at all.
    """
    given = list(paths)
    found: dict[Path, Path] = {}
    for path in given:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        candidates = sorted(p for p in path.rglob("*") if p.is_file()
                            and not p.name.startswith(".")) if path.is_dir() else [path]
        for candidate in candidates:
            referenced = dicomdir_files(candidate)
            for file in referenced if referenced is not None else [candidate]:
                if file.is_file() and (path == file or referenced is not None
                                       or is_dicom(file)):
                    found.setdefault(file.resolve(), file)
    if not found:
        raise NoDicomFilesError(
            f"no DICOM files under {', '.join(map(str, given))} (a DICOM file has the DICM "
            "marker after its 128-byte preamble, or a .dcm suffix)")
    return sorted(found.values())
