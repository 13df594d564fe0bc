"""All result objects of one study, read together with the source images the way an archive
checks a study: dicom3tools' dcentvfy finds no attribute of the Patient or Study information
entity that differs between, or is missing from, any of them."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from serving.outputs.cad_sr import build_cad_sr
from serving.outputs.common import PATIENT_STUDY_KEYWORDS, ResultInput
from serving.outputs.gsps import build_gsps
from serving.outputs.tid1500 import build_tid1500

WHEN = dt.datetime(2024, 5, 6, 7, 8, 9)

#: dcentvfy assigns each attribute the information entity of the module that lists it. Its
#: module tables list Accession Number (0008,0050) in the Request Attributes macro of the
#: series-level modules of the MG and GSPS IODs (as an item of Request Attributes Sequence),
#: which the SR IODs do not have, so it reports Study versus Series for an SR and a GSPS (or
#: an MG image) even when the top-level values are identical (checked below); it does not
#: compare the values then. Nothing else is tolerated.
IOD_TABLE_ARTIFACT = "Different information entities for attribute - Element=<AccessionNumber>"


@pytest.mark.skipif(shutil.which("dcentvfy") is None, reason="dicom3tools dcentvfy not installed")
def test_dcentvfy_finds_the_same_study_in_sources_and_all_results(
        galactogram_files: list[Path], measured: ResultInput, tmp_path: Path) -> None:
    results = [build_cad_sr(measured, when=WHEN), build_tid1500(measured, when=WHEN),
               *build_gsps(measured, when=WHEN)]
    paths = []
    for k, ds in enumerate(results):
        path = tmp_path / f"result_{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    files = [*galactogram_files, *paths]
    r = subprocess.run(["dcentvfy", *map(str, files)], capture_output=True, text=True,
                       timeout=120)
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    print("\n".join(lines))
    assert [line for line in lines if IOD_TABLE_ARTIFACT not in line] == []
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    for keyword in PATIENT_STUDY_KEYWORDS:  # the same values everywhere, artifact or not
        values = {repr(ds[keyword].value) if keyword in ds else None for ds in datasets}
        assert len(values) == 1, (keyword, values)
