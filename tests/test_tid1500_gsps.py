"""TID 1500 SR and GSPS results: valid DICOM (dciodvfy, dsrdump), boxes that read back as the
JSON boxes, the source study and patient, determinism, and a study without findings."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
from conftest import without_findings
from pydicom.dataset import Dataset

from serving.outputs.common import (
    MANUFACTURER,
    PATIENT_STUDY_KEYWORDS,
    SERIES_NUMBER,
    ResultInput,
    ResultKind,
)
from serving.outputs.gsps import build_gsps, finding_label, read_gsps_boxes, voi_lut
from serving.outputs.tid1500 import box_polyline, build_tid1500, read_tid1500_boxes
from serving.pipeline.findings import FindingOut

WHEN = dt.datetime(2024, 5, 6, 7, 8, 9)
#: Value representations that may differ between two builds of the same input.
VOLATILE_VRS = {"UI", "DA", "TM", "DT"}


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def written(study_result: ResultInput, tmp_path_factory: pytest.TempPathFactory,
            ) -> dict[str, list[Path]]:
    """The SR and GSPS of ``study_result`` and of the same study without findings, on disk."""
    out = tmp_path_factory.mktemp("tid1500_gsps")
    files: dict[str, list[Path]] = {}
    for name, result in (("findings", study_result), ("empty", without_findings(study_result))):
        sr = _save(build_tid1500(result, when=WHEN), out / f"{name}_sr.dcm")
        ps = [_save(p, out / f"{name}_gsps_{i}.dcm")
              for i, p in enumerate(build_gsps(result, when=WHEN))]
        files[f"{name}_sr"] = [sr]
        files[f"{name}_gsps"] = ps
    return files


def _json_boxes(result: ResultInput) -> dict[str, list[list[float]]]:
    return {str(img.sop_instance_uid): [f.box_px for f in img.findings]
            for img in result.study.images if img.findings}


def _assert_same_boxes(got: dict[str, list[list[float]]],
                       want: dict[str, list[list[float]]]) -> None:
    assert got.keys() == want.keys()
    for uid, boxes in want.items():
        assert len(got[uid]) == len(boxes), uid
        for g, w in zip(got[uid], boxes, strict=True):
            assert g == pytest.approx(w, abs=1e-3), (uid, g, w)


# --------------------------------------------------------------------------------------------
# Validity
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools dciodvfy not installed")
def test_dciodvfy_reports_no_errors(written: dict[str, list[Path]]) -> None:
    for path in [p for paths in written.values() for p in paths]:
        r = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        lines = (r.stdout + r.stderr).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="DCMTK dsrdump not installed")
def test_dsrdump_reads_the_report(written: dict[str, list[Path]]) -> None:
    for key in ("findings_sr", "empty_sr"):
        r = subprocess.run(["dsrdump", str(written[key][0])], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert "Imaging Measurement Report" in r.stdout
    findings = subprocess.run(["dsrdump", str(written["findings_sr"][0])], capture_output=True,
                              text=True, timeout=60).stdout
    assert "Intraluminal filling defect" in findings and "Certainty of Finding" in findings


# --------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------


def test_sr_boxes_read_back_as_json(study_result: ResultInput,
                                    written: dict[str, list[Path]]) -> None:
    sr = pydicom.dcmread(written["findings_sr"][0])
    _assert_same_boxes(read_tid1500_boxes(sr), _json_boxes(study_result))


def test_gsps_boxes_read_back_as_json(study_result: ResultInput,
                                      written: dict[str, list[Path]]) -> None:
    got: dict[str, list[list[float]]] = {}
    for path in written["findings_gsps"]:
        for uid, boxes in read_gsps_boxes(pydicom.dcmread(path)).items():
            got.setdefault(uid, []).extend(boxes)
    _assert_same_boxes(got, _json_boxes(study_result))


def test_box_polyline_is_the_closed_rectangle_and_checks_bounds() -> None:
    pts = box_polyline([1.5, 2.0, 10.0, 20.25], rows=30, cols=40, what="box")
    assert pts.tolist() == [[1.5, 2.0], [10.0, 2.0], [10.0, 20.25], [1.5, 20.25], [1.5, 2.0]]
    with pytest.raises(ValueError, match=r"0 <= x1 < x2 <= 40.*got \[1\.5, 2\.0, 41\.0"):
        box_polyline([1.5, 2.0, 41.0, 20.0], rows=30, cols=40, what="box")


# --------------------------------------------------------------------------------------------
# Study, patient, series
# --------------------------------------------------------------------------------------------


def test_results_belong_to_the_source_study(study_result: ResultInput,
                                            written: dict[str, list[Path]]) -> None:
    source = study_result.sources[0]
    source_series = {str(s.SeriesInstanceUID) for s in study_result.sources}
    source_instances = {str(s.SOPInstanceUID) for s in study_result.sources}
    kinds = {"findings_sr": ResultKind.TID1500, "findings_gsps": ResultKind.GSPS}
    for key, kind in kinds.items():
        for path in written[key]:
            ds = pydicom.dcmread(path)
            assert ds.StudyInstanceUID == source.StudyInstanceUID
            for keyword in PATIENT_STUDY_KEYWORDS:
                if keyword in source:
                    assert ds[keyword].value == source[keyword].value, keyword
            assert str(ds.SeriesInstanceUID) not in source_series
            assert str(ds.SOPInstanceUID) not in source_instances
            assert ds.SeriesNumber == SERIES_NUMBER[kind]
            assert ds.Manufacturer == MANUFACTURER
            (equipment,) = ds.ContributingEquipmentSequence
            assert equipment.ManufacturerModelName == study_result.model.name
            assert equipment.ContributionDateTime == WHEN.strftime("%Y%m%d%H%M%S")


def test_gsps_window_follows_the_source(study_result: ResultInput,
                                        written: dict[str, list[Path]]) -> None:
    ps = pydicom.dcmread(written["findings_gsps"][0])
    by_uid = {str(s.SOPInstanceUID): s for s in study_result.sources}
    for item in ps.SoftcopyVOILUTSequence:
        src = by_uid[str(item.ReferencedImageSequence[0].ReferencedSOPInstanceUID)]
        center = src.WindowCenter
        center = center[0] if isinstance(center, pydicom.multival.MultiValue) else center
        assert float(item.WindowCenter) == pytest.approx(float(center))


def test_gsps_splits_images_of_different_size_or_polarity(study_result: ResultInput) -> None:
    second = Dataset(study_result.sources[1])  # shallow copy, the fixture stays untouched
    second.Rows, second.Columns = int(second.Rows) + 10, int(second.Columns) + 10
    second.PhotometricInterpretation = "MONOCHROME1"
    result = ResultInput(sources=[study_result.sources[0], second], study=study_result.study,
                         model=study_result.model, operating_point=study_result.operating_point)
    first_ps, second_ps = build_gsps(result, when=WHEN)
    assert first_ps.SeriesInstanceUID == second_ps.SeriesInstanceUID
    assert (first_ps.InstanceNumber, second_ps.InstanceNumber) == (1, 2)
    assert (first_ps.PresentationLUTShape, second_ps.PresentationLUTShape) == (
        "IDENTITY", "INVERSE")
    assert list(read_gsps_boxes(second_ps)) == [str(second.SOPInstanceUID)]
    assert second_ps.DisplayedAreaSelectionSequence[0].DisplayedAreaBottomRightHandCorner == [
        second.Columns, second.Rows]


def test_voi_lut_without_window_spans_the_stored_range() -> None:
    src = Dataset()
    src.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    src.SOPInstanceUID = "1.2.3.4"
    src.BitsStored = 12
    src.PixelRepresentation = 0
    voi = voi_lut(src)
    assert float(voi["WindowCenter"].value) == pytest.approx(2048.0)
    assert float(voi["WindowWidth"].value) == pytest.approx(4096.0)


def test_label_states_score_and_location(study_result: ResultInput) -> None:
    finding: FindingOut = study_result.study.images[0].findings[0]
    lesion = next(f for f in study_result.study.fused if finding.id in f.finding_ids)
    label = finding_label(finding, "L", lesion)
    assert label.startswith(f"{finding.score:.2f} {lesion.laterality} ")
    assert f"{lesion.distance_from_nipple_cm} cm {lesion.depth}" in label
    assert finding_label(finding.model_copy(update={"location": None}), "L", None) == (
        f"{finding.score:.2f}")


# --------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------


def _stable(ds: Dataset) -> list[tuple[str, Any]]:
    """``ds`` as nested (tag, value) pairs without UIDs, dates and times."""
    out: list[tuple[str, Any]] = []
    for elem in ds:
        if elem.VR in VOLATILE_VRS:
            continue
        if elem.VR == "SQ":
            out.append((str(elem.tag), [_stable(item) for item in elem.value]))
        else:
            out.append((str(elem.tag), repr(elem.value)))
    return out


def test_same_input_gives_the_same_objects_except_uids_and_dates(
        study_result: ResultInput) -> None:
    later = WHEN + dt.timedelta(days=1, seconds=7)
    assert _stable(build_tid1500(study_result, when=WHEN)) == _stable(
        build_tid1500(study_result, when=later))
    first, second = build_gsps(study_result, when=WHEN), build_gsps(study_result, when=later)
    assert [_stable(p) for p in first] == [_stable(p) for p in second]


# --------------------------------------------------------------------------------------------
# No findings
# --------------------------------------------------------------------------------------------


def test_a_study_without_findings_gives_valid_objects(study_result: ResultInput,
                                                      written: dict[str, list[Path]]) -> None:
    sr = pydicom.dcmread(written["empty_sr"][0])
    assert read_tid1500_boxes(sr) == {}
    assert sr.StudyInstanceUID == study_result.sources[0].StudyInstanceUID
    evidence = {str(ref.ReferencedSOPInstanceUID)
                for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence
                for ref in series.ReferencedSOPSequence}
    assert evidence == {str(s.SOPInstanceUID) for s in study_result.sources}
    assert written["empty_gsps"]
    for path in written["empty_gsps"]:
        assert read_gsps_boxes(pydicom.dcmread(path)) == {}
