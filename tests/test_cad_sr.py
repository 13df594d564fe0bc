"""Mammography CAD SR (PS3.16 TID 4000): valid for dciodvfy and DCMTK, the same boxes and
scores as the JSON result, part of the source study, deterministic, and valid without
findings."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import without_findings
from pydicom.dataset import Dataset

from serving.outputs.cad_sr import MAMMOGRAPHY_CAD_SR_STORAGE, build_cad_sr, read_cad_sr
from serving.outputs.common import (
    MANUFACTURER,
    PATIENT_STUDY_KEYWORDS,
    SERIES_NUMBER,
    ResultInput,
    ResultKind,
)

WHEN = dt.datetime(2024, 5, 6, 7, 8, 9)
needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                    reason="dciodvfy (dicom3tools) not installed")
needs_dsrdump = pytest.mark.skipif(shutil.which("dsrdump") is None,
                                   reason="dsrdump (DCMTK) not installed")


def _write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _dciodvfy(path: Path) -> list[str]:
    """dciodvfy's messages (it writes them to stderr), printed for the test log."""
    r = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    print(r.stdout + r.stderr)
    return (r.stdout + r.stderr).splitlines()


def _dsrdump(path: Path) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60)
    print(r.stderr)
    return r


def _n_findings(result: ResultInput) -> int:
    return sum(len(img.findings) for img in result.study.images)


@pytest.fixture(scope="module")
def sr_file(study_result: ResultInput, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(build_cad_sr(study_result, when=WHEN),
                  tmp_path_factory.mktemp("cad_sr") / "cad_sr.dcm")


@pytest.fixture(scope="module")
def empty_sr_file(study_result: ResultInput, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(build_cad_sr(without_findings(study_result), when=WHEN),
                  tmp_path_factory.mktemp("cad_sr") / "cad_sr_empty.dcm")


@needs_dciodvfy
def test_dciodvfy_reports_no_errors(sr_file: Path) -> None:
    lines = _dciodvfy(sr_file)
    assert [line for line in lines if line.startswith("Error")] == []
    assert "MammographyCADSR" in lines


@needs_dsrdump
def test_dsrdump_reads_report_with_every_finding(sr_file: Path,
                                                 study_result: ResultInput) -> None:
    r = _dsrdump(sr_file)
    assert r.returncode == 0, r.stderr
    assert "Mammography CAD Report" in r.stdout
    assert "E:" not in r.stderr
    assert r.stdout.count('"Single Image Finding"') == _n_findings(study_result)
    assert r.stdout.count('"Composite Feature"') == len(study_result.study.fused)
    assert "All algorithms succeeded; with findings" in r.stdout


def test_read_back_gives_the_json_boxes_and_scores(sr_file: Path,
                                                   study_result: ResultInput) -> None:
    marks = read_cad_sr(pydicom.dcmread(sr_file))
    expected = {img.sop_instance_uid: img.findings for img in study_result.study.images
                if img.findings}
    assert set(marks) == set(expected)
    for uid, findings in expected.items():
        got = sorted(marks[uid])
        want = sorted(findings, key=lambda f: f.box_px)
        assert len(got) == len(want)
        for mark, finding in zip(got, want, strict=True):
            np.testing.assert_allclose(mark.box, finding.box_px, atol=1e-3)
            assert mark.certainty == pytest.approx(finding.score, abs=1e-6)


def test_belongs_to_source_study_in_a_new_series(sr_file: Path,
                                                 study_result: ResultInput) -> None:
    ds = pydicom.dcmread(sr_file)
    source = study_result.sources[0]
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in source:
            assert ds[keyword].value == source[keyword].value, keyword
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    source_series = {str(s.SeriesInstanceUID) for s in study_result.sources}
    source_instances = {str(s.SOPInstanceUID) for s in study_result.sources}
    assert ds.SeriesInstanceUID not in source_series
    assert ds.SOPInstanceUID not in source_instances
    assert ds.SOPClassUID == MAMMOGRAPHY_CAD_SR_STORAGE
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.Modality == "SR"
    assert ds.SeriesNumber == SERIES_NUMBER[ResultKind.CAD_SR]
    assert ds.InstanceNumber == 1
    assert (ds.CompletionFlag, ds.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    assert (ds.ContentDate, ds.ContentTime) == ("20240506", "070809")
    assert ds.Manufacturer == MANUFACTURER
    assert ds.ContributingEquipmentSequence[0].ManufacturerModelName == study_result.model.name
    template = ds.ContentTemplateSequence[0]
    assert (template.MappingResource, template.TemplateIdentifier) == ("DCMR", "4000")
    assert ds.ConceptNameCodeSequence[0].CodeValue == "111036"
    evidence = {str(ref.ReferencedSOPInstanceUID)
                for study in ds.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence
                for ref in series.ReferencedSOPSequence}
    assert evidence == source_instances


def _canonical_bytes(ds: Dataset) -> bytes:
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID"):
        setattr(ds, keyword, "1.2.3")
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_same_input_gives_same_object_but_uids(study_result: ResultInput) -> None:
    a, b = build_cad_sr(study_result, when=WHEN), build_cad_sr(study_result, when=WHEN)
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.SeriesInstanceUID != b.SeriesInstanceUID
    assert _canonical_bytes(a) == _canonical_bytes(b)


@needs_dciodvfy
def test_no_findings_is_still_valid(empty_sr_file: Path) -> None:
    lines = _dciodvfy(empty_sr_file)
    assert [line for line in lines if line.startswith("Error")] == []


def test_no_findings_says_so(empty_sr_file: Path, study_result: ResultInput) -> None:
    ds = pydicom.dcmread(empty_sr_file)
    assert read_cad_sr(ds) == {}
    summary = next(item for item in ds.ContentSequence
                   if item.ConceptNameCodeSequence[0].CodeValue == "111017")
    assert summary.ConceptCodeSequence[0].CodeValue == "111241"  # succeeded, without findings
    assert "ContentSequence" not in summary  # no Individual Impression/Recommendation
    library = next(item for item in ds.ContentSequence
                   if item.ConceptNameCodeSequence[0].CodeValue == "111028")
    assert len(library.ContentSequence) == len(study_result.sources)


@needs_dsrdump
def test_no_findings_dsrdump(empty_sr_file: Path) -> None:
    r = _dsrdump(empty_sr_file)
    assert r.returncode == 0, r.stderr
    assert "All algorithms succeeded; without findings" in r.stdout
    assert '"Single Image Finding"' not in r.stdout


def test_image_library_carries_laterality_and_view(sr_file: Path,
                                                   study_result: ResultInput) -> None:
    ds = pydicom.dcmread(sr_file)
    library = next(item for item in ds.ContentSequence
                   if item.ConceptNameCodeSequence[0].CodeValue == "111028")
    views = {"CC": "399162004", "MLO": "399368009", "ML": "399260004"}
    sides = {"L": "80248007", "R": "73056007"}
    for entry, img in zip(library.ContentSequence, study_result.study.images, strict=True):
        assert entry.ValueType == "IMAGE"
        assert entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == img.sop_instance_uid
        context = {c.ConceptNameCodeSequence[0].CodeValue: c for c in entry.ContentSequence}
        assert context["111027"].ConceptCodeSequence[0].CodeValue == sides[img.laterality]
        assert img.view is not None
        assert context["111031"].ConceptCodeSequence[0].CodeValue == views[img.view]


def test_read_rejects_other_objects(study_result: ResultInput) -> None:
    with pytest.raises(ValueError, match="expected a Mammography CAD SR"):
        read_cad_sr(study_result.sources[0])


def test_fused_finding_with_unknown_id_is_an_error(study_result: ResultInput) -> None:
    fused = [study_result.study.fused[0].model_copy(update={"finding_ids": ["0.0", "9.9"]})]
    study = study_result.study.model_copy(update={"fused": fused})
    bad = ResultInput(sources=study_result.sources, study=study, model=study_result.model,
                      operating_point=study_result.operating_point)
    with pytest.raises(ValueError, match=r"'9\.9'"):
        build_cad_sr(bad, when=WHEN)
