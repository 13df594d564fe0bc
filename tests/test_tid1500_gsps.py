"""TID 1500 SR and GSPS results: valid DICOM (dciodvfy, dsrdump), boxes that read back as the
JSON boxes, the source study and patient, determinism, and a study without findings; one
deterministic tracking UID per lesion (read with highdicom's TID 1500 reader), laterality and
view in the image library; GSPS labels outside the boxes and apart (read with an independent
renderer, drawn on DCMTK's rendering of the presentation state), grayscale display values,
probable mimics as mimics, location parts that rest on an assumed orientation left out."""

from __future__ import annotations

import copy
import datetime as dt
import shutil
import subprocess
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from conftest import with_mimic, without_findings, without_orientation
from gsps_render import Drawing, fitted_font, read_drawings, render
from pydicom.dataset import Dataset

from serving.outputs.common import (
    MANUFACTURER,
    PATIENT_STUDY_KEYWORDS,
    SERIES_NUMBER,
    ResultInput,
    ResultKind,
)
from serving.outputs.gsps import (
    FINDINGS_LAYER,
    MIMICS_LAYER,
    NIPPLE_LAYER,
    build_gsps,
    read_gsps_boxes,
    voi_lut,
)
from serving.outputs.tid1500 import box_polyline, build_tid1500, read_tid1500_boxes
from serving.outputs.wording import StudyWords, finding_label

WHEN = dt.datetime(2024, 5, 6, 7, 8, 9)
#: Value representations that may differ between two builds of the same input.
VOLATILE_VRS = {"UI", "DA", "TM", "DT"}


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


ROOT = Path(__file__).resolve().parents[1]
needs_dcmp2pgm = pytest.mark.skipif(shutil.which("dcmp2pgm") is None,
                                    reason="DCMTK dcmp2pgm not installed")


@pytest.fixture(scope="module")
def variant(measured: ResultInput) -> ResultInput:
    """The study without PatientOrientation and with a probable air bubble on its CC."""
    return with_mimic(without_orientation(measured))[0]


@pytest.fixture(scope="module")
def written(measured: ResultInput, variant: ResultInput,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """The SR and GSPS of ``measured``, of the same study without findings and of
    :func:`variant`, on disk."""
    out = tmp_path_factory.mktemp("tid1500_gsps")
    files: dict[str, list[Path]] = {}
    for name, result in (("findings", measured), ("empty", without_findings(measured)),
                         ("variant", variant)):
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


@pytest.mark.parametrize("name", ["findings", "variant"])
def test_sr_boxes_read_back_as_json(study_result: ResultInput, name: str,
                                    written: dict[str, list[Path]]) -> None:
    sr = pydicom.dcmread(written[f"{name}_sr"][0])
    _assert_same_boxes(read_tid1500_boxes(sr), _json_boxes(study_result))


@pytest.mark.parametrize("name", ["findings", "variant"])
def test_gsps_boxes_read_back_as_json(study_result: ResultInput, name: str,
                                      written: dict[str, list[Path]]) -> None:
    got: dict[str, list[list[float]]] = {}
    for path in written[f"{name}_gsps"]:
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
    second = copy.deepcopy(study_result.sources[1])  # Dataset(...) would share its elements
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


def test_label_says_which_lesion_its_score_and_where(measured: ResultInput) -> None:
    words = StudyWords(measured)
    fused = measured.study.fused[0]  # a two-view finding (the study must have one)
    finding = next(f for img in measured.study.images for f in img.findings
                   if f.id == fused.finding_ids[0])
    lesion = words.lesion_of(finding.id)
    lines = finding_label(lesion, finding)
    assert lines[0] == f"Filling defect {lesion.number}, score {finding.score:.2f}"
    assert lines[1].startswith("Left breast, " if fused.laterality == "L" else "Right breast, ")
    cm = fused.distance_from_nipple_cm
    assert lines[2] == f"{fused.depth} depth, " + (
        "less than 1 cm from nipple" if cm < 1 else f"{cm} cm from nipple")


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


# --------------------------------------------------------------------------------------------
# TID 1500 as highdicom's reader sees it
# --------------------------------------------------------------------------------------------


def _groups(path: Path) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    report = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path)).content
    return list(report.get_planar_roi_measurement_groups())


def _region_uid(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations) -> str:
    return str(group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


def test_one_tracking_uid_per_lesion(measured: ResultInput,
                                     written: dict[str, list[Path]]) -> None:
    groups = _groups(written["findings_sr"][0])
    assert len(groups) == sum(len(img.findings) for img in measured.study.images)
    by_uid: dict[str, list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]] = {}
    for g in groups:
        by_uid.setdefault(str(g.tracking_uid), []).append(g)
    n_fused = len(measured.study.fused)
    assert len(by_uid) == len(groups) - n_fused  # each fused pair shares one UID
    pairs = [gs for gs in by_uid.values() if len(gs) == 2]
    assert len(pairs) == n_fused
    for a, b in pairs:  # the two views of one lesion, one identifier
        assert _region_uid(a) != _region_uid(b)
        assert a.tracking_identifier == b.tracking_identifier
        assert a.tracking_identifier.endswith("(CC and MLO)")
    assert all(len(gs) == 1 for uid, gs in by_uid.items() if gs not in pairs)


def test_tracking_uids_are_the_same_on_every_build(measured: ResultInput,
                                                   tmp_path: Path) -> None:
    first = _save(build_tid1500(measured, when=WHEN), tmp_path / "a.dcm")
    later = _save(build_tid1500(measured, when=WHEN + dt.timedelta(hours=1)), tmp_path / "b.dcm")
    assert pydicom.dcmread(first).SOPInstanceUID != pydicom.dcmread(later).SOPInstanceUID
    assert [str(g.tracking_uid) for g in _groups(first)] == [
        str(g.tracking_uid) for g in _groups(later)]


def _dsrdump(path: Path) -> str:
    r = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="DCMTK dsrdump not installed")
def test_image_library_has_laterality_view_and_the_language(
        measured: ResultInput, written: dict[str, list[Path]]) -> None:
    text = _dsrdump(written["findings_sr"][0])
    library = text[text.index('"Image Library")'):text.index('"Imaging Measurements")')]
    views = {"CC": '(399162004,SCT,"cranio-caudal")', "MLO": '(399368009,SCT,"medio-lateral '
             'oblique")', "ML": '(399260004,SCT,"medial-lateral")'}
    for image in measured.study.images:
        assert image.view is not None
        assert f'<has acq context CODE:(,,"Image View")={views[image.view]}>' in library
    side = {"L": '(7771000,SCT,"Left")', "R": '(24028007,SCT,"Right")'}
    assert library.count('"Image Laterality")=' + side[measured.study.images[0].laterality]) == (
        len(measured.study.images))
    assert '"Language of Content Item and Descendants")=(en-US,RFC5646' in text


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="DCMTK dsrdump not installed")
def test_report_says_what_the_score_is(measured: ResultInput,
                                       written: dict[str, list[Path]]) -> None:
    ds = pydicom.dcmread(written["findings_sr"][0])
    texts = [str(e.value) for e in ds.iterall() if e.keyword == "TextValue"]
    assert any("lesion scores from 0 to 1" in t and "not probabilities of cancer" in t
               for t in texts)
    perf = measured.performance
    assert perf is not None and perf.sensitivity is not None
    assert any(f"{perf.sensitivity * 100:.1f} % of lesions" in t for t in texts)


def _evaluations(path: Path) -> dict[str, list[str]]:
    """Tracking identifier -> names of its qualitative evaluations (highdicom's reader)."""
    out: dict[str, list[str]] = {}
    for g in _groups(path):
        out.setdefault(str(g.tracking_identifier), []).extend(
            str(e.name.meaning) for e in g.get_qualitative_evaluations())
    return out


def test_sr_leaves_out_orientation_dependent_location(written: dict[str, list[Path]]) -> None:
    variant = _evaluations(written["variant_sr"][0])
    assert variant and all("Clockface or region" not in names and "Quadrant location" not in names
                           for names in variant.values())
    assert all("Depth" in names for names in variant.values())
    full = _evaluations(written["findings_sr"][0])
    assert any("Clockface or region" in names for ident, names in full.items()
               if ident.endswith("(CC and MLO)"))


# --------------------------------------------------------------------------------------------
# GSPS as a viewer draws it
# --------------------------------------------------------------------------------------------


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _drawings(paths: list[Path]) -> dict[str, Drawing]:
    out: dict[str, Drawing] = {}
    for path in paths:
        out.update(read_drawings(pydicom.dcmread(path)))
    return out


@pytest.mark.parametrize("name", ["findings", "variant"])
def test_gsps_labels_lie_outside_the_boxes_and_apart(
        measured: ResultInput, name: str, written: dict[str, list[Path]]) -> None:
    sizes = {str(s.SOPInstanceUID): (int(s.Rows), int(s.Columns)) for s in measured.sources}
    drawings = _drawings(written[f"{name}_gsps"])
    assert set(drawings) == set(sizes)
    for uid, drawing in drawings.items():
        rows, cols = sizes[uid]
        marked = drawing.marked_boxes()
        texts = [t for t in drawing.texts if t.box is not None]
        assert len(texts) == len(drawing.texts)  # every text has a bounding box
        for t in texts:
            assert t.box is not None
            x1, y1, x2, y2 = t.box
            assert 0 <= x1 < x2 <= cols and 0 <= y1 < y2 <= rows, t
            for layer, box in marked:
                assert _overlap(t.box, box) == 0.0, (t.text, layer, box)
            _, fit = fitted_font(t.text, t.box)
            assert fit == 1.0, f"{t.text!r} does not fit its box at 80 % of the line height"
        for i, a in enumerate(texts):
            for b in texts[i + 1:]:
                assert a.box is not None and b.box is not None
                assert _overlap(a.box, b.box) == 0.0, (a.text, b.text)
        anchored = [t for t in texts if t.anchor is not None]
        assert len(anchored) == len(marked)  # one anchored first line per mark
        for t in anchored:
            assert t.anchor_visible and t.anchor is not None
            assert any(b[0] <= t.anchor[0] <= b[2] and b[1] <= t.anchor[1] <= b[3]
                       for _, b in marked), t


def test_gsps_label_wording(measured: ResultInput, written: dict[str, list[Path]]) -> None:
    drawings = _drawings(written["findings_gsps"])
    findings = [t.text for d in drawings.values() for t in d.texts if t.layer == FINDINGS_LAYER]
    n = sum(len(img.findings) for img in measured.study.images)
    assert sum(t.startswith("Filling defect ") for t in findings) == n
    assert any("o'clock" in t or "retroareolar" in t or "central" in t for t in findings)
    assert all(("breast" in t or "depth" in t or "score" in t) for t in findings)
    nipple = [t.text for d in drawings.values() for t in d.texts if t.layer == NIPPLE_LAYER]
    assert nipple and set(nipple) == {"Nipple"}


def test_gsps_shows_mimics_as_mimics_and_assumed_orientation(
        variant: ResultInput, written: dict[str, list[Path]]) -> None:
    drawings = _drawings(written["variant_gsps"])
    mimic = variant.study.images[0].mimics[0]
    cc = drawings[str(variant.study.images[0].sop_instance_uid)]
    boxes = {layer: [b for lay, b in cc.marked_boxes() if lay == layer]
             for layer in (FINDINGS_LAYER, MIMICS_LAYER)}
    assert boxes[MIMICS_LAYER] == [pytest.approx(tuple(mimic.box_px), abs=1e-2)]
    assert all(b != pytest.approx(tuple(mimic.box_px), abs=1e-2) for b in boxes[FINDINGS_LAYER])
    texts = {lay: [t.text for t in cc.texts if t.layer == lay] for lay in (FINDINGS_LAYER,
                                                                        MIMICS_LAYER)}
    assert texts[MIMICS_LAYER] == ["Probable air bubble", "not a lesion, score 0.71"]
    findings = [t.text for d in drawings.values() for t in d.texts if t.layer == FINDINGS_LAYER]
    notes = [t for t in findings if t.endswith(": orientation unknown")]
    assert notes
    assert not any("o'clock" in t or " half" in t for t in findings if t not in notes)


@needs_dcmp2pgm
def test_dcmtk_reads_grayscale_values_and_bounding_boxes(
        galactogram_files: list[Path], written: dict[str, list[Path]]) -> None:
    """DCMTK's presentation state reader (dcmp2pgm -v) finds a grayscale display value for
    every layer and a bounding box for every text."""
    (ps,) = written["variant_gsps"]
    r = subprocess.run(["dcmp2pgm", "-v", "-p", str(ps), str(galactogram_files[0]),
                        str(ps.with_suffix(".pgm"))], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    log = r.stdout + r.stderr
    assert log.count("Recomm. display value: gray") == 3  # FINDINGS, MIMICS, NIPPLE
    assert "Recomm. display value: none" not in log
    assert "bounding box: none" not in log


@needs_dcmp2pgm
def test_gsps_rendered_on_its_images(galactogram_files: list[Path], measured: ResultInput,
                                     written: dict[str, list[Path]]) -> None:
    """Draw each image through its GSPS (DCMTK renders the presentation, the independent
    renderer burns the annotations in); GALACTO_WRITE_SCREENSHOT=1 writes docs/gsps.png."""
    import os

    from PIL import Image

    (ps,) = written["findings_gsps"]
    pictures = [render(f, ps, height=1000) for f in galactogram_files]
    for pic in pictures:
        assert pic.height == 1000 and pic.getbbox() is not None
    if os.environ.get("GALACTO_WRITE_SCREENSHOT") == "1":
        sheet = Image.new("RGB", (sum(p.width for p in pictures) + 10, 1000))
        x = 0
        for pic in pictures:
            sheet.paste(pic, (x, 0))
            x += pic.width + 10
        sheet.save(ROOT / "docs" / "gsps.png")


@pytest.mark.parametrize("boxes", [
    [(1300, 1000, 1330, 1030), (1200, 1150, 1260, 1190), (900, 900, 940, 930),
     (1000, 1300, 1050, 1340), (700, 1100, 760, 1160), (1500, 1050, 1520, 1070)],
    [(800 + i * 120, 1000 + j * 120, 830 + i * 120, 1030 + j * 120)
     for i in range(3) for j in range(3)],
    [(0, 0, 40, 40), (1874, 2254, 1914, 2294)],  # at the corners of the image
], ids=["scattered", "clustered", "corners"])
def test_crowded_labels_stay_clear(boxes: list[tuple[float, float, float, float]]) -> None:
    from serving.outputs.gsps_labels import place_labels

    rows, cols = 2294, 1914
    lines = ["Filling defect 10, score 0.88", "Left breast, outer half (CC only)",
             "middle depth, 5 cm from nipple"]
    placed = place_labels(boxes, [lines] * len(boxes), rows, cols)
    for k, label in enumerate(placed):
        x1, y1, x2, y2 = label.box
        assert 0 <= x1 < x2 <= cols and 0 <= y1 < y2 <= rows
        assert all(_overlap(label.box, b) == 0.0 for b in boxes)
        assert all(_overlap(label.box, other.box) == 0.0 for other in placed[k + 1:])
        bx1, _, bx2, _ = boxes[k]
        assert label.justification == ("RIGHT" if x2 <= bx1 else "LEFT" if x1 >= bx2
                                       else "CENTER")
