"""Finding DICOM inputs on disk (field case Q4): files without ``.dcm`` recognised by content,
a DICOMDIR followed to the files it references, every file once; through ``galacto detect``
and ``galacto info`` as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.fileset import FileSet

from serving.dicom_files import NoDicomFilesError, find_dicom_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def media(tmp_path: Path, galactogram_files: list[Path]) -> Path:
    """The generated study written as PS3.10 media: a DICOMDIR and files without suffix."""
    fs = FileSet()
    for path in galactogram_files:
        fs.add(pydicom.dcmread(path))
    out = tmp_path / "cd"
    fs.write(out)
    (out / "README.TXT").write_text("exported study")
    return out


def test_files_without_suffix_are_found_by_content(media: Path,
                                                   galactogram_files: list[Path]) -> None:
    files = find_dicom_files([media])
    assert len(files) == len(galactogram_files)
    assert all(p.suffix == "" and p.name != "DICOMDIR" for p in files)


def test_dicomdir_is_followed_and_files_are_listed_once(media: Path,
                                                        galactogram_files: list[Path]) -> None:
    via_dicomdir = find_dicom_files([media / "DICOMDIR"])
    assert len(via_dicomdir) == len(galactogram_files)
    both = find_dicom_files([media / "DICOMDIR", media, *via_dicomdir])
    assert sorted(both) == sorted(via_dicomdir)


def test_nothing_dicom_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(NoDicomFilesError, match="no DICOM files"):
        find_dicom_files([tmp_path])
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find_dicom_files([tmp_path / "absent"])


def test_galacto_info_and_detect_on_media(media: Path, galactogram_files: list[Path]) -> None:
    cli = [sys.executable, "-m", "serving.cli"]
    info = subprocess.run([*cli, "info", "--json", str(media / "DICOMDIR")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert info.returncode == 0, info.stderr
    assert len(json.loads(info.stdout)) == len(galactogram_files)
    out = media.parent / "result.json"
    detect = subprocess.run([*cli, "detect", str(media), "--json", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert detect.returncode == 0, detect.stderr
    result = json.loads(out.read_text())
    assert sum(len(s["images"]) for s in result["studies"]) == len(galactogram_files)
    shutil.rmtree(media)
