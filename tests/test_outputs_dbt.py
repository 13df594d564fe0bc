"""Result objects of tomosynthesis (DBT) volumes: every mark references the frame it is drawn
on (Referenced Frame Number = ``FindingOut.frame.best``) in the Mammography CAD SR, the TID
1500 SR and the GSPS, and reads back so; the GSPS of a volume is its own, with the volume's
window and Modality LUT; the report text names the frame, the frames the finding is detected
in and its height, and locates a finding seen on one DBT view with that view's phrase; the
frame overlay draws the findings of that frame solid and those best seen on another frame
dashed; dciodvfy finds no error in any object. 2D results are checked unchanged by the
existing tests (test_cad_sr, test_tid1500_gsps, test_results_study)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import subprocess
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian

from serving.outputs.cad_sr import build_cad_sr, read_cad_sr, read_cad_sr_frames
from serving.outputs.common import ResultInput, ResultKind, pixel_spacing_mm
from serving.outputs.gsps import (
    EXTENT_LAYER,
    FINDINGS_LAYER,
    MIMICS_LAYER,
    NIPPLE_LAYER,
    build_gsps,
    read_gsps_boxes,
    read_gsps_frames,
    voi_luts,
)
from serving.outputs.overlay import (
    LESION_COLOR,
    PAD,
    finding_lines,
    render_frame_overlay,
    render_overlay,
    write_frame_overlay,
)
from serving.outputs.results import build_results, result_inputs
from serving.outputs.tid1500 import (
    build_tid1500,
    lesion_uid,
    read_tid1500_boxes,
    read_tid1500_frames,
)
from serving.outputs.wording import StudyWords, finding_label, impression
from serving.pipeline.dicom_in import read_image
from serving.pipeline.findings import (
    DetectionResponse,
    FindingOut,
    FrameOut,
    FusedFindingOut,
    ImageOut,
    MimicOut,
    ModelOut,
    OperatingPointOut,
    SingleViewLocationOut,
    StudyOut,
)
from tests.dbt_files import make_bto, make_sc_volume
from tests.dicomgen import make_dataset, to_bytes

WHEN = dt.datetime(2024, 5, 6, 7, 8, 9)
STUDY_UID = "1.2.826.0.1.3680043.8.498.4711"
ROWS, COLS, FRAMES = 120, 96, 8
needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                    reason="dciodvfy (dicom3tools) not installed")
needs_dsrdump = pytest.mark.skipif(shutil.which("dsrdump") is None,
                                   reason="dsrdump (DCMTK) not installed")
needs_dcentvfy = pytest.mark.skipif(shutil.which("dcentvfy") is None,
                                    reason="dcentvfy (dicom3tools) not installed")
needs_dcmp2pgm = pytest.mark.skipif(shutil.which("dcmp2pgm") is None,
                                    reason="dcmp2pgm (DCMTK) not installed")
#: dcentvfy's module-table artefact about Accession Number (see tests/test_results_study.py).
IOD_TABLE_ARTIFACT = "Different information entities for attribute - Element=<AccessionNumber>"


# --------------------------------------------------------------------------------------------
# Sources and a hand-made detection response
# --------------------------------------------------------------------------------------------


def _same_study(ds: Dataset, series: int) -> Dataset:
    """``ds`` in the test study, with the Type 2 patient/study attributes filled."""
    ds.StudyInstanceUID = STUDY_UID
    ds.PatientName = "Test^Tomo"
    ds.PatientID = "GALACTO-DBT"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyDate, ds.StudyTime = "20240506", "070809"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "ACC0001", ""
    ds.SeriesNumber, ds.InstanceNumber = series, 1
    return ds


def _voi(center: float, width: float) -> Dataset:
    item = Dataset()
    item.WindowCenter, item.WindowWidth = center, width
    item.WindowCenterWidthExplanation = "NORMAL"
    return item


def _bto(view: str, seed: int) -> Dataset:
    """A left-breast volume of :data:`FRAMES` frames, 1 mm apart, with an identity Pixel Value
    Transformation; the CC shares one window, the MLO has a window per half of the frames."""
    ds = _same_study(make_bto(frames=FRAMES, rows=ROWS, cols=COLS, laterality="L", view=view,
                              rescale=(1.0, 0.0), seed=seed), series=2 if view == "CC" else 3)
    if view == "CC":
        ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence = DicomSequence(
            [_voi(2000.0, 4000.0)])
    else:
        for k, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
            group.FrameVOILUTSequence = DicomSequence(
                [_voi(1800.0, 3600.0) if k < FRAMES // 2 else _voi(2200.0, 4200.0)])
    return ds


def _finding(image: int, k: int, box: list[float], score: float, frame: FrameOut | None,
             where: SingleViewLocationOut | None = None) -> FindingOut:
    x1, y1, x2, y2 = box
    return FindingOut(
        id=f"{image}.{k}", label="filling_defect", score=score, operating_points=["balanced"],
        box_px=box, box_mm=[v * 0.1 for v in box], center_px=[(x1 + x2) / 2, (y1 + y2) / 2],
        center_mm=[(x1 + x2) / 20, (y1 + y2) / 20], size_mm=[(x2 - x1) / 10, (y2 - y1) / 10],
        frame=frame, single_view_location=where)


#: The single-view location of the second CC finding, as the tomosynthesis locator states it.
ALONE_WHERE = SingleViewLocationOut(
    clock_hour=2, quadrant="UOQ", depth="middle", distance_from_nipple_mm=34.0,
    distance_from_nipple_cm=3, assumptions=["nipple at mid-height"],
    phrase="Left breast, 2 o'clock, middle depth, 3 cm from nipple")


def _image(index: int, ds: Dataset, view: str, laterality: str,
           findings: list[FindingOut], frames: int | None, **extra: Any) -> ImageOut:
    return ImageOut(index=index, sop_instance_uid=str(ds.SOPInstanceUID),
                    series_instance_uid=str(ds.SeriesInstanceUID),
                    study_instance_uid=STUDY_UID, laterality=laterality, view=view,
                    rows=int(ds.Rows), cols=int(ds.Columns), spacing_mm=[0.1, 0.1],
                    spacing_source="PixelSpacing", number_of_frames=frames, findings=findings,
                    timings_ms={}, **extra)


@pytest.fixture(scope="module")
def sources() -> list[Dataset]:
    """BTO CC and MLO of the left breast and a 2D MG CC of the right breast, one study."""
    mg = _same_study(make_dataset(rows=ROWS, cols=COLS, view="CC", laterality="R", seed=9,
                                  patient_orientation=("P", "L"), window=(2000, 4000)), 1)
    return [_bto("CC", 1), _bto("MLO", 2), mg]


@pytest.fixture(scope="module")
def response(sources: list[Dataset]) -> DetectionResponse:
    """CC finding 0.0 (frames 4-6, best 5) fused with MLO finding 1.0 (frame 3 only), CC
    finding 0.1 seen on the CC volume only (best frame 2, with its single-view location), a
    mimic on CC frame 7, and a 2D finding on the MG image."""
    cc, mlo, mg = sources
    images = [
        _image(0, cc, "CC", "L", [
            _finding(0, 0, [20.0, 30.0, 36.0, 44.0], 0.91, FrameOut(best=5, first=4, last=6,
                                                                    height_mm=4.0)),
            _finding(0, 1, [60.0, 80.0, 72.0, 94.0], 0.74, FrameOut(best=2, first=1, last=3,
                                                                    height_mm=1.0),
                     ALONE_WHERE)], FRAMES, nipple_px=[90.0, 60.0],
            mimics=[MimicOut(label="air_bubble", text="probable air bubble", score=0.7,
                             box_px=[50.0, 10.0, 58.0, 18.0], box_mm=[5.0, 1.0, 5.8, 1.8],
                             frame=FrameOut(best=7, first=7, last=8, height_mm=6.0))]),
        _image(1, mlo, "MLO", "L", [
            _finding(1, 0, [24.0, 40.0, 40.0, 52.0], 0.83, FrameOut(best=3, first=3, last=3,
                                                                    height_mm=2.0))], FRAMES),
        _image(2, mg, "CC", "R", [_finding(2, 0, [10.0, 10.0, 30.0, 30.0], 0.66, None)], None),
    ]
    fused = [FusedFindingOut(laterality="L", finding_ids=["0.0", "1.0"], score=0.87,
                             clock_hour=1, quadrant="UOQ", depth="anterior",
                             distance_from_nipple_mm=18.0, distance_from_nipple_cm=2,
                             oblique=True,
                             phrase="Left breast, 1 o'clock, anterior depth, 2 cm from nipple")]
    return DetectionResponse(
        model=ModelOut(name="galacto-small", version="0.4.0"),
        operating_point=OperatingPointOut(name="balanced", score_threshold=0.5),
        studies=[StudyOut(study_instance_uid=STUDY_UID, images=images, fused=fused)])


@pytest.fixture(scope="module")
def result(response: DetectionResponse, sources: list[Dataset]) -> ResultInput:
    return result_inputs(response, sources)[0]


@pytest.fixture(scope="module")
def written(response: DetectionResponse, sources: list[Dataset],
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Sources and every result object on disk: ``src0..2``, ``sr``, ``tid1500``,
    ``gsps0..`` (build_results order: CAD SR, TID 1500, GSPS)."""
    out = tmp_path_factory.mktemp("dbt")
    paths: dict[str, Path] = {}
    for k, ds in enumerate(sources):
        paths[f"src{k}"] = out / f"src{k}.dcm"
        ds.save_as(paths[f"src{k}"], enforce_file_format=True)
    objects = build_results(response, sources,
                            [ResultKind.CAD_SR, ResultKind.TID1500, ResultKind.GSPS])
    names = ["sr", "tid1500", *(f"gsps{k}" for k in range(len(objects) - 2))]
    for name, ds in zip(names, objects, strict=True):
        paths[name] = out / f"{name}.dcm"
        ds.save_as(paths[name], enforce_file_format=True)
    return paths


def _read(path: Path) -> Dataset:
    return pydicom.dcmread(path)


def _dciodvfy_errors(path: Path) -> list[str]:
    r = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    print(r.stdout + r.stderr)
    return [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error")]


def _items(item: Dataset) -> list[Dataset]:
    out = []
    for child in item.get("ContentSequence") or []:
        out.append(child)
        out.extend(_items(child))
    return out


def _frames_of(ref: Dataset) -> list[int]:
    value = ref.get("ReferencedFrameNumber")
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, pydicom.multival.MultiValue)
                             else [value])]


# --------------------------------------------------------------------------------------------
# Validators
# --------------------------------------------------------------------------------------------


@needs_dciodvfy
@pytest.mark.parametrize("name", ["sr", "tid1500", "gsps0", "gsps1", "gsps2"])
def test_dciodvfy_reports_no_errors(written: dict[str, Path], name: str) -> None:
    assert _dciodvfy_errors(written[name]) == []


@needs_dsrdump
@pytest.mark.parametrize("name", ["sr", "tid1500"])
def test_dsrdump_reads_the_frame_references(written: dict[str, Path], name: str) -> None:
    r = subprocess.run(["dsrdump", str(written[name])], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "BT image" in r.stdout  # DCMTK's name for the Breast Tomosynthesis Image class
    assert "(BT image,,5)" in r.stdout and "(BT image,,3)" in r.stdout  # (class,,frame)


@needs_dcentvfy
def test_dcentvfy_finds_one_study_in_volumes_image_and_results(
        written: dict[str, Path]) -> None:
    names = ["src0", "src1", "src2", "sr", "tid1500", "gsps0", "gsps1", "gsps2"]
    r = subprocess.run(["dcentvfy", *(str(written[n]) for n in names)], capture_output=True,
                       text=True, timeout=120)
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    print("\n".join(lines))
    assert [line for line in lines if IOD_TABLE_ARTIFACT not in line] == []


def _objects_per_layer(dump: str) -> dict[str, int]:
    """``{layer: graphic objects}`` from dcmp2pgm's dump of a presentation state."""
    counts: dict[str, int] = {}
    layer = ""
    for line in dump.splitlines():
        if "Graphic Layer #" in line:
            layer = line.split("[", 1)[1].split("]", 1)[0]
        elif "Number of graphic objects:" in line and layer:
            counts[layer] = int(line.rsplit(":", 1)[1])
    return counts


@needs_dcmp2pgm
def test_dcmtk_applies_the_frame_references(written: dict[str, Path]) -> None:
    """DCMTK's presentation state reader (dcmp2pgm -v lists the objects that apply to frame
    1 of the volume): the nipple (every frame) and the extent of finding 0.1 (frames 1 and
    3) apply, the findings (frames 2 and 5) and the mimic (frame 7) do not."""
    r = subprocess.run(["dcmp2pgm", "-v", "-p", str(written["gsps0"]), str(written["src0"]),
                        str(written["src0"].with_suffix(".pgm"))],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert _objects_per_layer(r.stdout + r.stderr) == {
        FINDINGS_LAYER: 0, MIMICS_LAYER: 0, NIPPLE_LAYER: 1, EXTENT_LAYER: 1}


# --------------------------------------------------------------------------------------------
# Mammography CAD SR
# --------------------------------------------------------------------------------------------


def test_cad_sr_marks_reference_their_best_frame(written: dict[str, Path],
                                                 sources: list[Dataset]) -> None:
    sr = _read(written["sr"])
    cc, mlo, mg = (str(s.SOPInstanceUID) for s in sources)
    assert read_cad_sr_frames(sr) == {cc: [[5], [2]], mlo: [[3]], mg: [[]]}
    boxes = {uid: [m.box for m in marks] for uid, marks in read_cad_sr(sr).items()}
    assert boxes == {cc: [[20.0, 30.0, 36.0, 44.0], [60.0, 80.0, 72.0, 94.0]],
                     mlo: [[24.0, 40.0, 40.0, 52.0]], mg: [[10.0, 10.0, 30.0, 30.0]]}


def test_cad_sr_image_library_has_the_volumes_and_one_entry_per_marked_frame(
        written: dict[str, Path], sources: list[Dataset]) -> None:
    sr = _read(written["sr"])
    library = sr.ContentSequence[1]
    assert library.ConceptNameCodeSequence[0].CodeMeaning == "Image Library"
    refs = [(str(e.ReferencedSOPSequence[0].ReferencedSOPInstanceUID),
             _frames_of(e.ReferencedSOPSequence[0])) for e in library.ContentSequence]
    cc, mlo, mg = (str(s.SOPInstanceUID) for s in sources)
    # the analysed images first (whole volumes: every frame), then the marked frames
    assert refs == [(cc, []), (mlo, []), (mg, []), (cc, [2]), (cc, [5]), (mlo, [3])]
    for entry in library.ContentSequence:  # every entry has its image's descriptors
        names = [c.ConceptNameCodeSequence[0].CodeMeaning for c in entry.ContentSequence]
        assert {"Image Laterality", "Image View", "Horizontal Pixel Spacing"} <= set(names)
    # Detection Performed references the whole images only
    detections = [i for i in _items(sr) if i.get("ValueType") == "CODE"
                  and i.ConceptNameCodeSequence[0].CodeMeaning == "Detection Performed"]
    paths = [list(c.ReferencedContentItemIdentifier) for c in detections[0].ContentSequence
             if "ReferencedContentItemIdentifier" in c]
    assert paths == [[1, 2, 1], [1, 2, 2], [1, 2, 3]]


def test_cad_sr_text_names_frames_height_and_the_single_view_location(
        written: dict[str, Path]) -> None:
    sr = _read(written["sr"])
    texts = [str(i.TextValue) for i in _items(sr) if i.get("ValueType") == "TEXT"
             and i.ConceptNameCodeSequence[0].CodeMeaning == "Impression Description"]
    fused, alone, flat = texts
    assert ("Tomosynthesis: CC best seen on frame 5 of 8 (height 4 mm), detected in frames "
            "4-6; MLO best seen on frame 3 of 8 (height 2 mm), detected in frame 3.") in fused
    assert "Left breast, 1 o'clock, anterior depth, 2 cm from nipple" in fused
    assert ("seen on CC only: Left breast, 2 o'clock, middle depth, 3 cm from nipple. "
            "Tomosynthesis: best seen on frame 2 of 8 (height 1 mm), detected in frames "
            "1-3.") in alone
    assert "Tomosynthesis" not in flat and "frame" not in flat


# --------------------------------------------------------------------------------------------
# TID 1500
# --------------------------------------------------------------------------------------------


def test_tid1500_regions_reference_their_best_frame(written: dict[str, Path],
                                                    sources: list[Dataset]) -> None:
    sr = _read(written["tid1500"])
    cc, mlo, mg = (str(s.SOPInstanceUID) for s in sources)
    assert read_tid1500_frames(sr) == {cc: [[5], [2]], mlo: [[3]], mg: [[]]}
    assert read_tid1500_boxes(sr) == {
        cc: [[20.0, 30.0, 36.0, 44.0], [60.0, 80.0, 72.0, 94.0]],
        mlo: [[24.0, 40.0, 40.0, 52.0]], mg: [[10.0, 10.0, 30.0, 30.0]]}
    report = hd.sr.Comprehensive3DSR.from_dataset(sr).content  # highdicom's own reader
    groups = report.get_planar_roi_measurement_groups(referenced_sop_instance_uid=mlo)
    assert len(groups) == 1
    roi = groups[0].roi
    assert roi is not None
    assert hd.sr.ImageContentItem.from_dataset(roi.ContentSequence[0]
                                               ).referenced_frame_numbers == [3]


def test_tid1500_image_library_describes_the_volumes(written: dict[str, Path],
                                                    sources: list[Dataset]) -> None:
    """A volume's spacing is in its Pixel Measures functional group, not ImagerPixelSpacing:
    its TID 1601 entry still comes, with the plane spacing, orientation, laterality and view,
    and the sources themselves are not changed."""
    sr = _read(written["tid1500"])
    library = next(i for i in sr.ContentSequence
                   if i.ConceptNameCodeSequence[0].CodeMeaning == "Image Library")
    entries = [e for g in library.ContentSequence for e in g.ContentSequence
               if e.get("ValueType") == "IMAGE"]
    uids = [str(e.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for e in entries]
    # the 2D source has no ImagerPixelSpacing: highdicom cannot describe it (as before)
    assert uids == [str(s.SOPInstanceUID) for s in sources[:2]]
    for entry, source in zip(entries, sources[:2], strict=True):
        named = {c.ConceptNameCodeSequence[0].CodeMeaning: c for c in entry.ContentSequence}
        assert {"Image Laterality", "Image View", "Patient Orientation Row"} <= set(named)
        assert float(named["Horizontal Pixel Spacing"].MeasuredValueSequence[0]
                     .NumericValue) == pytest.approx(float(pixel_spacing_mm(source)[1]))
        letters = [str(named[f"Patient Orientation {k}"].TextValue) for k in ("Row", "Column")]
        # the fixtures' planes: CC rows along -y, columns along -x; MLO columns along -z
        assert letters == (["A", "R"] if source is sources[0] else ["A", "F"])
    assert all("ImagerPixelSpacing" not in s and "PatientOrientation" not in s
               for s in sources[:2])


def test_tid1500_location_of_a_single_dbt_view_is_that_views_own(
        written: dict[str, Path]) -> None:
    report = hd.sr.Comprehensive3DSR.from_dataset(_read(written["tid1500"])).content
    group = next(g for g in report.get_planar_roi_measurement_groups()
                 if g.tracking_identifier == "Filling defect 2 (CC only)")
    values = {e.name.meaning: e.value.meaning for e in group.get_qualitative_evaluations()}
    assert values["Quadrant location"] == "Upper outer quadrant of breast"
    assert values["Depth"] == "Middle"
    distance = [m for m in group.get_measurements() if m.name.meaning == "Distance from nipple"]
    assert distance[0].value == pytest.approx(34.0)


def test_tid1500_tracking_uid_depends_on_the_frame(result: ResultInput) -> None:
    words = StudyWords(result)
    lesion = words.lesion_of("0.1")
    finding = lesion.members[0][1]
    moved = finding.model_copy(update={"frame": FrameOut(best=3, first=1, last=3,
                                                         height_mm=2.0)})
    other = dataclasses.replace(lesion, members=[(0, moved)])
    assert lesion_uid(result, lesion) != lesion_uid(result, other)


# --------------------------------------------------------------------------------------------
# GSPS
# --------------------------------------------------------------------------------------------


def _by_layer(ps: Dataset) -> dict[str, list[list[int]]]:
    out: dict[str, list[list[int]]] = {}
    for ann in ps.GraphicAnnotationSequence:
        (ref,) = ann.ReferencedImageSequence
        out.setdefault(str(ann.GraphicLayer), []).append(_frames_of(ref))
    return out


def test_one_gsps_per_volume_and_one_for_the_2d_image(written: dict[str, Path],
                                                      sources: list[Dataset]) -> None:
    referenced = []
    for name in ("gsps0", "gsps1", "gsps2"):
        ps = _read(written[name])
        (series,) = ps.ReferencedSeriesSequence
        referenced.append([str(r.ReferencedSOPInstanceUID)
                           for r in series.ReferencedImageSequence])
    assert referenced == [[str(s.SOPInstanceUID)] for s in sources]


def test_gsps_annotations_reference_the_frame_they_are_drawn_on(
        written: dict[str, Path], sources: list[Dataset]) -> None:
    cc = _read(written["gsps0"])
    assert _by_layer(cc) == {
        FINDINGS_LAYER: [[2], [5]],          # one annotation per marked frame
        MIMICS_LAYER: [[7]],
        NIPPLE_LAYER: [[]],                  # every frame
        EXTENT_LAYER: [[1, 3], [4, 6]],      # the other frames each finding is detected in
    }
    uid = str(sources[0].SOPInstanceUID)
    assert read_gsps_frames(cc) == {uid: [[2], [5]]}
    assert read_gsps_boxes(cc) == {uid: [[60.0, 80.0, 72.0, 94.0], [20.0, 30.0, 36.0, 44.0]]}
    texts = [str(t.UnformattedTextValue) for ann in cc.GraphicAnnotationSequence
             if ann.GraphicLayer == FINDINGS_LAYER for t in ann.TextObjectSequence]
    assert "frame 5 of 8 (height 4 mm)" in texts and "frame 2 of 8 (height 1 mm)" in texts
    assert _by_layer(_read(written["gsps1"])) == {FINDINGS_LAYER: [[3]]}  # no extent: 1 frame
    assert _by_layer(_read(written["gsps2"])) == {FINDINGS_LAYER: [[]]}   # 2D: no frame


def test_gsps_display_of_a_volume(written: dict[str, Path]) -> None:
    cc, mlo, mg = (_read(written[f"gsps{k}"]) for k in range(3))
    (shared,) = cc.SoftcopyVOILUTSequence  # the shared Frame VOI LUT, for every frame
    assert (float(shared.WindowCenter), float(shared.WindowWidth)) == (2000.0, 4000.0)
    assert all("ReferencedFrameNumber" not in r for r in shared.ReferencedImageSequence)
    windows = {(float(i.WindowCenter), float(i.WindowWidth)):
               _frames_of(i.ReferencedImageSequence[0]) for i in mlo.SoftcopyVOILUTSequence}
    assert windows == {(1800.0, 3600.0): [1, 2, 3, 4], (2200.0, 4200.0): [5, 6, 7, 8]}
    for ps in (cc, mlo):  # the volume's Pixel Value Transformation
        assert (float(ps.RescaleSlope), float(ps.RescaleIntercept), ps.RescaleType) == (
            1.0, 0.0, "US")
        (area,) = ps.DisplayedAreaSelectionSequence
        assert list(area.DisplayedAreaBottomRightHandCorner) == [COLS, ROWS]
    assert "RescaleSlope" not in mg  # a 2D MG image: as before


def test_frames_without_a_window_get_the_full_range() -> None:
    mlo = _bto("MLO", 2)
    for group in mlo.PerFrameFunctionalGroupsSequence[-2:]:
        del group.FrameVOILUTSequence
    items = {(float(i.WindowCenter), float(i.WindowWidth)):
             _frames_of(i.ReferencedImageSequence[0]) for i in voi_luts(mlo)}
    assert items == {(1800.0, 3600.0): [1, 2, 3, 4], (2200.0, 4200.0): [5, 6],
                     (2048.0, 4096.0): [7, 8]}  # 12 bits stored, identity rescale


def test_gsps_of_a_secondary_capture_volume(tmp_path: Path) -> None:
    """A multi-frame Secondary Capture has no functional groups: identity Modality LUT,
    full-range window, frame references as for a BTO; valid for dciodvfy."""
    sc = _same_study(make_sc_volume(frames=6, rows=ROWS, cols=COLS), 5)
    finding = _finding(0, 0, [10.0, 12.0, 20.0, 22.0], 0.8,
                       FrameOut(best=4, first=4, last=5, height_mm=3.0))
    image = _image(0, sc, "CC", "L", [finding], 6)
    res = ResultInput(sources=[sc], study=StudyOut(study_instance_uid=STUDY_UID,
                                                   images=[image], fused=[]),
                      model=ModelOut(name="galacto-small", version="0.4.0"),
                      operating_point=OperatingPointOut(name="balanced", score_threshold=0.5))
    (ps,) = build_gsps(res, when=WHEN)
    assert (float(ps.RescaleSlope), float(ps.RescaleIntercept)) == (1.0, 0.0)
    (voi,) = ps.SoftcopyVOILUTSequence
    assert voi.WindowCenterWidthExplanation == "FULL RANGE"
    assert read_gsps_frames(ps) == {str(sc.SOPInstanceUID): [[4]]}
    sr = build_cad_sr(res, when=WHEN)
    assert read_cad_sr_frames(sr) == {str(sc.SOPInstanceUID): [[4]]}
    tid = build_tid1500(res, when=WHEN)
    assert read_tid1500_frames(tid) == {str(sc.SOPInstanceUID): [[4]]}
    if shutil.which("dciodvfy") is not None:
        for k, ds in enumerate((ps, sr, tid)):
            path = tmp_path / f"sc_{k}.dcm"
            ds.save_as(path, enforce_file_format=True)
            assert _dciodvfy_errors(path) == []


# --------------------------------------------------------------------------------------------
# Wording
# --------------------------------------------------------------------------------------------


def test_gsps_label_of_a_dbt_finding(result: ResultInput) -> None:
    words = StudyWords(result)
    finding = result.study.images[0].findings[1]
    assert finding_label(words.lesion_of("0.1"), finding, FRAMES) == [
        "Filling defect 2, score 0.74", "Left breast, 2 o'clock (CC only)",
        "middle depth, 3 cm from nipple", "frame 2 of 8 (height 1 mm)"]


def test_single_view_without_clock_face_says_so(result: ResultInput) -> None:
    where = ALONE_WHERE.model_copy(update={
        "clock_hour": None, "quadrant": None,
        "phrase": "Left breast, middle depth, 3 cm from nipple; clock face and quadrant not "
                  "stated: the view does not tell the height direction (LMO)"})
    image = result.study.images[0]
    findings = [image.findings[0], image.findings[1].model_copy(
        update={"single_view_location": where})]
    images = [image.model_copy(update={"findings": findings}), *result.study.images[1:]]
    changed = dataclasses.replace(result, study=result.study.model_copy(
        update={"images": images}))
    lesion = StudyWords(changed).lesion_of("0.1")
    assert f"seen on CC only: {where.phrase}. Tomosynthesis" in impression(lesion, changed)
    assert finding_label(lesion, findings[1], FRAMES)[1:] == [
        "Left breast (CC only)", "middle depth, 3 cm from nipple",
        "no clock face or quadrant: not given by this view", "frame 2 of 8 (height 1 mm)"]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_a_frame_outside_the_volume_is_refused(result: ResultInput) -> None:
    image = result.study.images[1]
    bad = image.findings[0].model_copy(update={"frame": FrameOut(best=9, first=9, last=9,
                                                                 height_mm=8.0)})
    images = [result.study.images[0], image.model_copy(update={"findings": [bad]}),
              result.study.images[2]]
    changed = dataclasses.replace(result, study=result.study.model_copy(
        update={"images": images}))
    for build in (build_cad_sr, build_tid1500, build_gsps):
        with pytest.raises(ValueError, match=r"finding 1\.0: expected 1 <= first <= best <= "
                                             r"last <= 8"):
            build(changed, when=WHEN)


def test_a_frame_on_a_2d_image_is_refused(result: ResultInput) -> None:
    image = result.study.images[2]
    bad = image.findings[0].model_copy(update={"frame": FrameOut(best=1, first=1, last=1,
                                                                 height_mm=0.0)})
    images = [*result.study.images[:2], image.model_copy(update={"findings": [bad]})]
    changed = dataclasses.replace(result, study=result.study.model_copy(
        update={"images": images}))
    for build in (build_cad_sr, build_tid1500, build_gsps):
        with pytest.raises(ValueError, match="not a multi-frame volume"):
            build(changed, when=WHEN)


# --------------------------------------------------------------------------------------------
# Overlay
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frame_image() -> Any:
    """One decoded frame-sized 2D image (the overlay takes the frame's Image)."""
    return read_image(to_bytes(make_dataset(rows=ROWS, cols=COLS, seed=3),
                               ExplicitVRLittleEndian))


def _red_share(picture: Any, box: list[float]) -> float:
    """Share of the pixels on the left edge of ``box``'s outline that are the lesion red."""
    arr = np.asarray(picture)
    x = int(box[0] - PAD)
    column = arr[int(box[1]):int(box[3]), x]
    return float(np.mean(np.all(column == LESION_COLOR, axis=1)))


def test_frame_overlay_draws_best_frame_solid_and_range_dashed(
        frame_image: Any, result: ResultInput, tmp_path: Path) -> None:
    image = result.study.images[0]
    box = image.findings[0].box_px  # best frame 5, detected in 4-6
    assert _red_share(render_frame_overlay(frame_image, image, 5), box) == 1.0
    dashed = _red_share(render_frame_overlay(frame_image, image, 4), box)
    assert 0.3 < dashed < 0.9
    assert _red_share(render_frame_overlay(frame_image, image, 8), box) == 0.0
    assert _red_share(render_overlay(frame_image, image), box) == 1.0  # whole-image view
    path = write_frame_overlay(frame_image, image, 5, tmp_path)
    assert path.name == "000_L_CC_f005.png" and path.stat().st_size > 0
    with pytest.raises(ValueError, match="frame 9 is not a frame of the volume"):
        render_frame_overlay(frame_image, image, 9)


def test_overlay_label_of_a_volume_finding_gives_its_single_view_clock_face(
        result: ResultInput) -> None:
    """A finding located from its own volume is labelled with that view's clock face, not
    with the half of the view a 2D label names."""
    alone = result.study.images[0].findings[1]
    lines = finding_lines(alone)
    assert lines[1] == ALONE_WHERE.phrase and "o'clock" in lines[1]
    assert lines[-1].startswith("detected in")
    assert not any(" half" in line for line in lines)
