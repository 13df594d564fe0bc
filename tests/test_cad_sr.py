"""Mammography CAD SR (PS3.16 TID 4000): valid for dciodvfy and DCMTK, the same boxes and
scores as the JSON result, part of the source study, deterministic, and valid without
findings; read as DCMTK's dsr2html shows it to a reader: findings coded as lesions, what the
score means, required marks without a CAD operating point, the operating point table from the
model card, location parts that rest on an assumed orientation left out, mimics absent."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import io
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import with_mimic, without_findings, without_orientation
from pydicom.dataset import Dataset

from serving.outputs.cad_sr import MAMMOGRAPHY_CAD_SR_STORAGE, build_cad_sr, read_cad_sr
from serving.outputs.common import (
    MANUFACTURER,
    PATIENT_STUDY_KEYWORDS,
    SERIES_NUMBER,
    OperatingPointPerformance,
    ResultInput,
    ResultKind,
)

WHEN = dt.datetime(2024, 5, 6, 7, 8, 9)
needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                    reason="dciodvfy (dicom3tools) not installed")
needs_dsrdump = pytest.mark.skipif(shutil.which("dsrdump") is None,
                                   reason="dsrdump (DCMTK) not installed")
needs_dsr2html = pytest.mark.skipif(shutil.which("dsr2html") is None,
                                    reason="dsr2html (DCMTK) not installed")


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


def _dsr2html(path: Path) -> str:
    """The report as DCMTK's dsr2html renders it for a reader, as plain text (tags removed,
    entities decoded, whitespace collapsed)."""
    r = subprocess.run(["dsr2html", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    text = html.unescape(re.sub(r"<[^>]+>", " ", r.stdout))
    return re.sub(r"\s+", " ", text)


def _items(item: Dataset) -> Iterator[Dataset]:
    """Every content item under ``item``, depth first (plain pydicom)."""
    for child in item.get("ContentSequence") or []:
        yield child
        yield from _items(child)


def _name(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence") or []
    return str(names[0].CodeMeaning) if names else ""


@pytest.fixture(scope="module")
def sr_file(measured: ResultInput, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(build_cad_sr(measured, when=WHEN),
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


# --------------------------------------------------------------------------------------------
# As a reader sees it (DCMTK dsr2html)
# --------------------------------------------------------------------------------------------


@needs_dsr2html
def test_findings_read_as_lesions_in_dsr2html(sr_file: Path, measured: ResultInput) -> None:
    text = _dsr2html(sr_file)
    n_fused = len(measured.study.fused)
    singles = _n_findings(measured) - 2 * n_fused
    assert "Mammography breast density" not in text
    assert text.count("Single Image Finding: Mammographic breast mass (129788004, SCT)") == (
        _n_findings(measured))
    assert text.count("Composite Feature: Mammographic breast mass (129788004, SCT)") == n_fused
    # the galactographic meaning, coded once per lesion (TID 4002), not hidden in prose
    assert text.count("Differential Diagnosis/Impression: Intraluminal filling defect "
                      "(111425, DCM)") == n_fused + singles
    assert "(DCM 111425)" not in text
    # one two-view finding, as the reader sees it
    lesion = measured.study.fused[0]
    views = {f.id: img.view for img in measured.study.images for f in img.findings}
    seen = " and ".join(str(views[fid]) for fid in lesion.finding_ids)
    assert (f"Filling defect 1 (intraluminal, galactography), seen on {seen}: {lesion.phrase}. "
            in text), text


@needs_dsr2html
def test_report_text_says_what_the_score_is(sr_file: Path, measured: ResultInput) -> None:
    text = _dsr2html(sr_file)
    perf = measured.performance
    assert perf is not None and perf.sensitivity is not None and perf.fp_per_image is not None
    op = measured.operating_point
    assert f"marked because score >= {op.score_threshold:.2f} (operating point {op.name}" in text
    assert (f"on validation data {perf.sensitivity * 100:.1f} % of lesions were marked at "
            f"{perf.fp_per_image:.2f} false marks per image") in text
    assert "not probabilities of cancer" in text
    fused = measured.study.fused[0]
    assert f"Score {fused.score:.2f} (geometric mean of the two views'" in text


def test_required_marks_carry_no_operating_point(sr_file: Path) -> None:
    """PS3.4 O.2.2.1: a CAD Operating Point under a Rendering Intent only selects among
    Presentation Optional marks; every mark here is Presentation Required."""
    ds = pydicom.dcmread(sr_file)
    intents = [i for i in _items(ds) if _name(i) == "Rendering Intent"]
    assert intents
    for intent in intents:
        assert intent.ConceptCodeSequence[0].CodeValue == "111150"  # Presentation Required
        assert "ContentSequence" not in intent


def test_operating_point_table_comes_from_the_model_card(sr_file: Path,
                                                         measured: ResultInput) -> None:
    """TID 4023: one operating point (0) on the FROC axes, valued from the card."""
    ds = pydicom.dcmread(sr_file)
    (performed,) = [i for i in _items(ds) if _name(i) == "Detection Performed"]
    props = {_name(i): i for i in performed.ContentSequence}
    assert props["Maximum CAD Operating Point"].MeasuredValueSequence[0].NumericValue == 0
    (table,) = [i for i in _items(performed) if _name(i) == "CAD Operating Point Table"]
    rows = {_name(i): i for i in table.ContentSequence}
    assert rows["X-Concept"].ConceptCodeSequence[0].CodeValue == "111086"  # false markers/image
    assert rows["Y-Concept"].ConceptCodeSequence[0].CodeValue == "111089"  # lesion sensitivity
    points = [i for i in table.ContentSequence if _name(i) == "CAD Operating Point"]
    assert len(points) == 1  # Maximum CAD Operating Point + 1
    values = {_name(i): i for i in points[0].ContentSequence}
    perf = measured.performance
    assert perf is not None and perf.sensitivity is not None and perf.fp_per_image is not None
    fp = float(values["False Markers per Image"].MeasuredValueSequence[0].NumericValue)
    sens = float(values["Lesion Sensitivity"].MeasuredValueSequence[0].NumericValue)
    assert (fp, sens) == pytest.approx((perf.fp_per_image, perf.sensitivity * 100))
    assert measured.operating_point.name in values["CAD Operating Point Description"].TextValue


def test_image_library_has_pixel_spacing(sr_file: Path, measured: ResultInput) -> None:
    ds = pydicom.dcmread(sr_file)
    library = next(i for i in ds.ContentSequence if _name(i) == "Image Library")
    for entry, src in zip(library.ContentSequence, measured.sources, strict=True):
        context = {_name(c): c for c in entry.ContentSequence}
        row, col = (float(v) for v in src.ImagerPixelSpacing)
        horizontal = context["Horizontal Pixel Spacing"].MeasuredValueSequence[0]
        vertical = context["Vertical Pixel Spacing"].MeasuredValueSequence[0]
        assert (float(horizontal.NumericValue), float(vertical.NumericValue)) == (col, row)
        assert horizontal.MeasurementUnitsCodeSequence[0].CodeValue == "mm"


def test_language_is_the_one_both_reports_use(sr_file: Path) -> None:
    ds = pydicom.dcmread(sr_file)
    language = next(i for i in ds.ContentSequence
                    if _name(i) == "Language of Content Item and Descendants")
    assert language.ConceptCodeSequence[0].CodeValue == "en-US"


@needs_dsr2html
def test_assumed_orientation_is_said_and_its_location_parts_left_out(
        measured: ResultInput, tmp_path: Path) -> None:
    result = without_orientation(measured)
    path = _write(build_cad_sr(result, when=WHEN), tmp_path / "no_orientation.dcm")
    text = _dsr2html(path)
    assert "o'clock" not in text and " half" not in text.replace("half not stated", "")
    for quadrant in ("retroareolar", "central", "UOQ", "UIQ", "LOQ", "LIQ"):
        assert f", {quadrant}," not in text
    assert text.count("not stated: PatientOrientation does not give the image orientation") == (
        len(measured.study.fused)
        + sum(1 for img in measured.study.images for f in img.findings
              if f.location is not None and f.location.half is not None
              and not any(f.id in fu.finding_ids for fu in measured.study.fused)))
    assert _dsr2html(_write(build_cad_sr(measured, when=WHEN), tmp_path / "with.dcm")).count(
        "PatientOrientation") == 0


@needs_dsr2html
def test_mimics_are_not_written_as_lesions(measured: ResultInput, tmp_path: Path) -> None:
    result, mimic = with_mimic(measured)
    path = _write(build_cad_sr(result, when=WHEN), tmp_path / "mimic.dcm")
    marks = read_cad_sr(pydicom.dcmread(path))
    boxes = [m.box for ms in marks.values() for m in ms]
    assert len(boxes) == _n_findings(measured)
    assert all(b != pytest.approx(mimic.box_px, abs=1e-2) for b in boxes)
    text = _dsr2html(path).lower()  # evidence may name a mimic score; never a mimic mark
    assert "probable air bubble" not in text and "not a lesion" not in text
    assert not [line for line in _dciodvfy(path) if line.startswith("Error")]


def test_site_calibrated_point_states_its_measured_rate_only(measured: ResultInput) -> None:
    """A site calibration measures false marks on normal studies, not sensitivity: the table
    gives the one and not the other, and the text says so."""
    op = measured.operating_point.model_copy(update={"source": "site calibration x.json"})
    result = dataclasses.replace(measured, operating_point=op,
                                 performance=OperatingPointPerformance(None, 0.48))
    ds = build_cad_sr(result, when=WHEN)
    (point,) = [i for i in _items(ds) if _name(i) == "CAD Operating Point"]
    values = {_name(i): i for i in point.ContentSequence}
    assert "Lesion Sensitivity" not in values
    assert float(values["False Markers per Image"].MeasuredValueSequence[0].NumericValue) == 0.48
    texts = [str(e.value) for e in ds.iterall() if e.keyword == "TextValue"]
    assert any("0.48 false marks per image on the site's normal studies (site calibration "
               "x.json); sensitivity not measured there" in t for t in texts)
