"""The peer suite: the DICOM test files shipped inside the pydicom package (every transfer
syntax, many odd encodings, DICOMDIRs). Each is accepted or refused with a typed code, never
anything else, and ``galacto info`` over all of them prints no third-party traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom.data
import pytest

from serving.dicom_files import find_dicom_files
from serving.pipeline.dicom_in import read_image
from serving.pipeline.errors import IntakeError

ROOT = Path(__file__).resolve().parents[1]
SUITE = Path(pydicom.data.get_testdata_file("CT_small.dcm") or "").parent
FILES = find_dicom_files([SUITE]) if SUITE.is_dir() else []


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_each_file_is_accepted_or_refused_with_a_code(path: Path) -> None:
    try:
        image = read_image(path)
    except IntakeError as exc:
        assert exc.code and exc.code != "intake_error", exc
        return
    assert image.pixels.shape[0] > 0 and image.spacing_mm is not None


def test_galacto_info_on_the_suite_prints_no_traceback() -> None:
    assert len(FILES) > 50
    done = subprocess.run([sys.executable, "-m", "serving.cli", "info", "--json", str(SUITE)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    reports = json.loads(done.stdout)
    assert len(reports) == len(FILES)
    assert "Traceback" not in done.stderr and "ERROR" not in done.stderr, done.stderr[-2000:]
    codes = {(r.get("error") or {}).get("code", "accepted") for r in reports}
    assert "accepted" in codes and "intake_error" not in codes
