"""Tomosynthesis volumes through ``detect`` and ``galacto detect`` (serving.pipeline.
detect_volume, serving.cli.detect) with the bundled model.

The test volumes are Breast Tomosynthesis Image files (``tests.dbt_files.make_bto``) built from
a generated 2D galactogram (``galacto synth``): frame ``k`` is the image itself at the focus
frame and, away from it, blends into a blurred copy (weight ``exp(-(k - focus)^2 / 2)``), so
the lesion is sharp on the focus frame, fainter on its neighbours and gone further away. The
image is halved to 0.2 mm (the model's spacing) to keep the files small.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from conftest import synth_lesion_study

from serving.cli import build_parser, main
from serving.cli.detect import frame_text, read_input
from serving.pipeline.detect import detect
from serving.pipeline.detect_volume import (
    DBT_EVIDENCE,
    DEFAULT_SLAB,
    DEFAULT_STRIDE,
    TomoSettings,
    VolumeCandidates,
    analyse_volume,
    frame_out,
    suppress_nested_tracks,
)
from serving.pipeline.dicom_in import Image, Volume, read_image, read_volume
from serving.pipeline.errors import UnsupportedSopClassError
from serving.pipeline.findings import DetectionResponse, FindingOut, ImageOut, MimicOut
from serving.pipeline.model import DetectorModel, parse_tomo_section
from serving.pipeline.preprocess import prepare
from serving.pipeline.rescore import RescoreModel, intersection_over_smaller
from serving.pipeline.tomo import TomoCandidate, TrackPoint
from serving.pipeline.volume_rescore import (
    DBT_RESCORED_EVIDENCE,
    MAX_PNL_RATIO,
    paired_volumes,
    rescore_volumes,
)
from tests.dbt_files import BREAST_PROJECTION_PRESENTATION, make_bto
from tests.dicomgen import to_bytes

FRAMES = 9
FOCUS = {"CC": 4, "MLO": 5}  # 0-based focus frame of each view's lesion
DOWN = 2  # 0.1 mm synthetic images -> 0.2 mm volumes
MLO_ANGLE = 47.0


# ------------------------------------------------------------------------------ volumes


def box_blur(a: npt.NDArray[np.float64], r: int) -> npt.NDArray[np.float64]:
    """Three passes of a ``(2r + 1)``-wide moving mean along each axis, edges repeated (close
    to a Gaussian of sigma ``r``)."""
    out = np.asarray(a, np.float64)
    for _ in range(3):
        for axis in (0, 1):
            pad = [(0, 0), (0, 0)]
            pad[axis] = (r + 1, r)
            c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis)
            n = c.shape[axis]
            out = (np.take(c, np.arange(2 * r + 1, n), axis=axis)
                   - np.take(c, np.arange(0, n - 2 * r - 1), axis=axis)) / (2 * r + 1)
    return out


def mlo_orientation(angle_deg: float) -> tuple[float, ...]:
    """ImageOrientationPatient of a left MLO at ``angle_deg``: rows run anterior, columns
    toward the feet and the right (PatientOrientation ``A\\FR``, as the 2D synthetic MLO)."""
    b = math.radians(90.0 - angle_deg)
    return (0.0, -1.0, 0.0, -math.sin(b), 0.0, -math.cos(b))


def stacked_bto(source: Path, *, view: str, frames: int, focus: int,
                blur_mm: float = 4.0) -> pydicom.Dataset:
    """A Breast Tomosynthesis Image of ``frames`` 1 mm frames made from the 2D image
    ``source`` (same study, laterality, view), the lesion in focus at frame index ``focus``
    (see the module docstring)."""
    src = pydicom.dcmread(source)
    px = src.pixel_array.astype(np.float64)
    rows, cols = (px.shape[0] // DOWN) * DOWN, (px.shape[1] // DOWN) * DOWN
    px = px[:rows, :cols].reshape(rows // DOWN, DOWN, cols // DOWN, DOWN).mean(axis=(1, 3))
    spacing = float(src.ImagerPixelSpacing[0]) * DOWN
    far = box_blur(px, max(1, round(blur_mm / spacing)))
    k = np.arange(frames, dtype=np.float64)[:, None, None]
    weight = np.exp(-0.5 * (k - focus) ** 2)
    pixels = np.clip(np.round(weight * px + (1 - weight) * far), 0, 4095).astype(np.uint16)
    extra: dict[str, Any] = {"StudyInstanceUID": src.StudyInstanceUID}
    orientation = None
    if view == "MLO":
        extra["PositionerPrimaryAngle"] = MLO_ANGLE
        orientation = mlo_orientation(MLO_ANGLE)
    return make_bto(frames=frames, rows=pixels.shape[1], cols=pixels.shape[2],
                    laterality=str(src.ImageLaterality), view=view, pixel_spacing=(spacing,) * 2,
                    orientation=orientation, pixels=pixels, extra=extra)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One generated case: its 2D CC and MLO files, their lesion boxes (0.2 mm volume
    pixels) and the two BTO files built from them."""
    root = tmp_path_factory.mktemp("dbt")
    study = synth_lesion_study(root / "study", cases=1, seed=77)
    items = json.loads((study / "dataset.json").read_text())["training"]
    out: dict[str, Any] = {"dir": root}
    for item in items:
        view = item["view"]
        path = study / item["image"]
        bto = root / "volumes" / f"{item['laterality']}_{view}_bto.dcm"
        bto.parent.mkdir(exist_ok=True)
        bto.write_bytes(to_bytes(stacked_bto(path, view=view, frames=FRAMES,
                                             focus=FOCUS[view])))
        out[view] = {"image": path, "bto": bto,
                     "lesions": [[v / DOWN for v in b] for b, label
                                 in zip(item["boxes"], item["labels"], strict=True)
                                 if label == "filling_defect"]}
    return out


def validated(result: DetectionResponse) -> DetectionResponse:
    """``result`` through its JSON form and back (the schema every adapter returns)."""
    return DetectionResponse.model_validate_json(result.model_dump_json())


def at(findings: Sequence[FindingOut], box: Sequence[float]) -> list[FindingOut]:
    """The findings whose box covers at least half of ``box`` or lies half inside it."""
    if not findings:
        return []
    ios = intersection_over_smaller([f.box_px for f in findings], [box])[:, 0]
    return [f for f, v in zip(findings, ios, strict=True) if v >= 0.5]


def check_frames(img: ImageOut, heights: Sequence[float]) -> None:
    """Every finding and mimic of a volume: frame numbers within 1..N, best within
    first..last (the heights rise with the index), its height the best frame's."""
    n = img.number_of_frames
    assert n == len(heights)
    marks: list[FindingOut | MimicOut] = [*img.findings, *img.mimics]
    for mark in marks:
        fr = mark.frame
        assert fr is not None
        assert 1 <= fr.first <= fr.best <= fr.last <= n
        assert abs(fr.height_mm - heights[fr.best - 1]) <= 1.0 + 1e-6  # a slab's mean height


# ------------------------------------------------------------------------------ detect


def test_a_volume_through_detect(case: dict[str, Any], bundled_model: DetectorModel) -> None:
    """One CC volume at the balanced point: a valid response, findings with frames and
    heights, and the lesion, present in several frames, reported once, on its focus slab."""
    vol = read_volume(case["CC"]["bto"])
    result = validated(detect([vol], bundled_model, "balanced", sources=["cc.dcm"]))
    (study,) = result.studies
    (img,) = study.images
    assert img.number_of_frames == FRAMES and img.source == "cc.dcm"
    assert (img.rows, img.cols) == (vol.header.image.rows, vol.header.image.cols)
    assert img.spacing_mm == pytest.approx([0.2, 0.2]) and img.view == "CC"
    assert img.sop_instance_uid == vol.header.image.sop_instance_uid
    assert img.nipple_px is not None and img.pnl_length_mm
    assert study.fused == []
    check_frames(img, vol.header.frame_heights_mm)
    assert set(vol.header.image.warnings) <= set(img.warnings)
    assert any(w.startswith("tomosynthesis: the 2D detector ran on slabs of 3") for w in
               img.warnings)
    assert {"inference", "link", "locate"} <= set(img.timings_ms)
    threshold = result.operating_point.score_threshold
    rescored = bundled_model.tomo_rescoring is not None
    for f in img.findings:
        assert f.score >= threshold and (rescored or f.detector_score == f.score)
        assert f.evidence is not None
        if rescored:  # a lone CC volume: rescored as a single view
            assert f.evidence.startswith(DBT_RESCORED_EVIDENCE), f.evidence
            assert "no located volume of the other view of this breast in the study" in f.evidence
        else:
            assert f.evidence.startswith(DBT_EVIDENCE), f.evidence
        assert "balanced" in f.operating_points
        assert f.single_view_location is not None and f.location is not None
    (lesion,) = case["CC"]["lesions"]
    (found,) = at(img.findings, lesion)
    assert found.frame is not None
    assert found.frame.first <= FOCUS["CC"] + 1 <= found.frame.last
    assert abs(found.frame.best - (FOCUS["CC"] + 1)) <= 1
    assert found.single_view_location is not None
    assert "Left breast" in found.single_view_location.phrase


def test_per_slice_mode_links_the_lesion_across_frames(case: dict[str, Any],
                                                       bundled_model: DetectorModel) -> None:
    """Every frame alone: the lesion is detected in several frames and still reported once,
    with its box on its in-focus frame."""
    vol = read_volume(case["CC"]["bto"])
    result = validated(detect([vol], bundled_model, "high_specificity",
                              tomo=TomoSettings(slab=1, stride=1)))
    (img,) = result.studies[0].images
    check_frames(img, vol.header.frame_heights_mm)
    assert any("every frame (9 of 9 frames as centres)" in w for w in img.warnings)
    (found,) = at(img.findings, case["CC"]["lesions"][0])
    assert found.frame is not None and found.frame.first <= found.frame.best <= found.frame.last
    seen = re.search(r"detected in (\d+) of 9 frames", str(found.evidence))
    assert seen is not None and int(seen.group(1)) >= 2, found.evidence  # linked, one finding
    assert found.frame.best == FOCUS["CC"] + 1
    assert found.frame.height_mm == pytest.approx(float(FOCUS["CC"]))
    assert "of 9 frames" in str(found.evidence)


def test_a_cc_and_mlo_pair_of_volumes_is_fused_or_not(case: dict[str, Any],
                                                      bundled_model: DetectorModel) -> None:
    """CC + MLO volumes of one breast: one study; every fused finding pairs a CC finding with
    an MLO finding of these volumes."""
    vols = [read_volume(case[v]["bto"]) for v in ("CC", "MLO")]
    result = validated(detect(vols, bundled_model, "high_specificity"))
    (study,) = result.studies
    cc, mlo = study.images
    assert (cc.view, mlo.view) == ("CC", "MLO") and not mlo.orientation_assumed
    check_frames(mlo, vols[1].header.frame_heights_mm)
    cc_ids, mlo_ids = {f.id for f in cc.findings}, {f.id for f in mlo.findings}
    for fused in study.fused:
        assert fused.laterality == "L"
        assert fused.finding_ids[0] in cc_ids and fused.finding_ids[1] in mlo_ids
    assert len({f.finding_ids[0] for f in study.fused}) == len(study.fused)


#: A rescoring for the tests below (weights of the features' order, :data:`~serving.
#: pipeline.rescore.FEATURES`), so they do not depend on the bundled card's fit.
TEST_RESCORING = RescoreModel(weights=(1.2, 0.4, 0.1, 0.2, 0.6), bias=-3.9, fitted_on={})


@pytest.fixture(scope="module")
def pair(case: dict[str, Any], bundled_model: DetectorModel
         ) -> tuple[VolumeCandidates, VolumeCandidates]:
    """The CC and MLO volumes of the case, analysed (not rescored)."""
    cc, mlo = (analyse_volume(read_volume(case[v]["bto"]), bundled_model) for v in ("CC", "MLO"))
    return cc, mlo


def test_volume_rescoring_does_not_depend_on_the_order_of_the_volumes(
        pair: tuple[VolumeCandidates, VolumeCandidates]) -> None:
    a, b = rescore_volumes(list(pair), TEST_RESCORING)
    d, c = rescore_volumes([pair[1], pair[0]], TEST_RESCORING)
    assert a.scores == c.scores and b.scores == d.scores
    assert a.lesion_evidence == c.lesion_evidence and b.lesion_evidence == d.lesion_evidence
    assert a.rescored and b.rescored and not pair[0].rescored  # copies; the input is kept
    partnered = [e for e in a.lesion_evidence if e.partner > 0]
    assert partnered and all(e.other_view for e in a.lesion_evidence)
    # one-to-one: as many CC candidates have a partner as MLO candidates
    assert len(partnered) == sum(e.partner > 0 for e in b.lesion_evidence)
    with pytest.raises(ValueError, match="as analysed, not rescored"):
        rescore_volumes([a, b], TEST_RESCORING)


def test_a_repeated_view_keeps_its_partner_in_any_order(
        pair: tuple[VolumeCandidates, VolumeCandidates]) -> None:
    """Two identical CC volumes and one MLO: each CC copy gets the same partners (matched per
    pair of volumes), whatever the order; neither takes the lesion's partner from the other."""
    cc, mlo = pair
    a, twin, _ = rescore_volumes([cc, cc, mlo], TEST_RESCORING)
    _, b, twin_b = rescore_volumes([mlo, cc, cc], TEST_RESCORING)
    (alone, _) = rescore_volumes([cc, mlo], TEST_RESCORING)
    assert a.scores == twin.scores == b.scores == twin_b.scores == alone.scores


def test_a_volume_with_implausible_landmarks_gives_no_evidence(
        pair: tuple[VolumeCandidates, VolumeCandidates]) -> None:
    """An ML/MLO volume whose posterior nipple line is far from the CC's (a failed landmark
    search) is not paired: the CC is rescored as a single view, not as 'no partner'."""
    cc, mlo = pair
    assert cc.landmarks is not None and mlo.landmarks is not None
    odd = dc_replace(mlo, landmarks=dc_replace(
        mlo.landmarks, pnl_length_mm=cc.landmarks.pnl_length_mm * (MAX_PNL_RATIO + 0.5)))
    assert paired_volumes([cc, mlo]) == [(0, 1)] and paired_volumes([cc, odd]) == []
    (with_odd, _) = rescore_volumes([cc, odd], TEST_RESCORING)
    (lone,) = rescore_volumes([cc], TEST_RESCORING)
    assert with_odd.scores == lone.scores
    assert not any(e.other_view for e in with_odd.lesion_evidence)


def test_the_lesion_seen_in_both_volumes_gains_from_its_partner(
        case: dict[str, Any], pair: tuple[VolumeCandidates, VolumeCandidates]) -> None:
    """The case's lesion lies in the CC and the MLO volume: its CC candidate has a partner
    and scores higher with it than as a lone CC volume, whose candidates are rescored as
    single views (other_view = 0) and say so."""
    both, _ = rescore_volumes(list(pair), TEST_RESCORING)
    (lone,) = rescore_volumes([pair[0]], TEST_RESCORING)
    assert not any(e.other_view for e in lone.lesion_evidence)
    assert lone.scores == [float(v) for v in TEST_RESCORING.scores(lone.lesion_evidence)]
    assert all("no located volume of the other view of this breast in the study" in t
               for t in lone.evidence)
    (box,) = case["CC"]["lesions"]
    boxes = [c.box for c in both.lesions]
    ios = intersection_over_smaller(boxes, [box])[:, 0]
    k = int(np.argmax(np.where(ios >= 0.5, np.asarray(both.scores), -1.0)))
    assert ios[k] >= 0.5
    assert both.lesion_evidence[k].partner > 0.5
    assert both.scores[k] > lone.scores[k]
    assert f"partner scored {both.lesion_evidence[k].partner:.2f}" in both.evidence[k]
    assert both.evidence[k].startswith(DBT_RESCORED_EVIDENCE)


def test_without_a_rescoring_volume_scores_stay_the_detectors(
        pair: tuple[VolumeCandidates, VolumeCandidates]) -> None:
    a, _ = rescore_volumes(list(pair), None)
    assert a.scores == [c.score for c in a.lesions] and not a.rescored
    assert all(t.startswith(DBT_EVIDENCE) for t in a.evidence)
    assert any(e.partner > 0 for e in a.lesion_evidence)  # the evidence is there, for a fit


def test_a_card_tomosynthesis_rescoring_is_validated() -> None:
    section = {"slab": 3, "stride": 3, "operating_points": {"balanced": {
        "score_threshold": 0.5, "fp_per_volume": 1.0, "sensitivity": 0.8}}}
    assert parse_tomo_section(section).rescoring is None
    good = parse_tomo_section({**section, "rescoring": TEST_RESCORING.to_dict()})
    assert good.rescoring == TEST_RESCORING
    with pytest.raises(ValueError, match=r"^rescoring\.features must be"):
        parse_tomo_section({**section, "rescoring": {"features": ["score"], "weights": [1],
                                                     "bias": 0}})


def test_two_d_images_beside_volumes_are_reported_as_alone(
        case: dict[str, Any], bundled_model: DetectorModel) -> None:
    """2D images and volumes of one study in one request: the 2D images' results (and their
    two-view fusion) are those of the 2D images alone; volumes are fused only with volumes."""
    images: list[Image] = [read_image(case[v]["image"]) for v in ("CC", "MLO")]
    alone = detect(images, bundled_model, "high_sensitivity")
    vols = [read_volume(case[v]["bto"]) for v in ("CC", "MLO")]
    mixed = validated(detect([images[0], vols[0], images[1], vols[1]], bundled_model,
                             "high_sensitivity"))
    (study,) = mixed.studies
    (base,) = alone.studies
    flat = [study.images[0], study.images[2]]
    for a, b in zip(base.images, flat, strict=True):
        a_dump, b_dump = a.model_dump(exclude={"timings_ms", "index"}), \
            b.model_dump(exclude={"timings_ms", "index"})
        # ids carry the input index: 0, 2 in the mixed request against 0, 1 alone
        for d in (a_dump, b_dump):
            for f in d["findings"]:
                f["id"] = f["id"].split(".", 1)[1]
        assert a_dump == b_dump
        assert b.number_of_frames is None and all(f.frame is None for f in b.findings)
    index_of = {f.id: img.index for img in study.images for f in img.findings}
    for fused in study.fused:
        kinds = {study.images[index_of[i]].number_of_frames is None
                 for i in fused.finding_ids}
        assert len(kinds) == 1, fused  # never a 2D finding with a volume finding
    planar = [f for f in study.fused
              if study.images[index_of[f.finding_ids[0]]].number_of_frames is None]
    assert [(f.phrase, f.score) for f in planar] == [(f.phrase, f.score) for f in base.fused]


def test_a_small_random_volume_gives_a_valid_answer(bundled_model: DetectorModel) -> None:
    """Noise frames of 48 x 64 pixels (no breast to find): every candidate reported
    (threshold 0), frames in range, a location or the reason there is none."""
    ds = make_bto(frames=8, heights=[0.5 * k for k in range(8)])
    vol = read_volume(to_bytes(ds))
    result = validated(detect([vol], bundled_model, score_threshold=0.0,
                              tomo=TomoSettings(slab=2, stride=1, slab_mode="max")))
    (img,) = result.studies[0].images
    check_frames(img, vol.header.frame_heights_mm)
    assert result.operating_point.score_threshold == 0.0
    if img.nipple_px is None:
        assert any(w.startswith("no location: ") for w in img.warnings)
        assert all(f.single_view_location is None for f in img.findings)


# ------------------------------------------------------------------------------ helpers


def track(frames: Sequence[int], box: tuple[float, float, float, float], score: float,
          label: int = 0) -> TomoCandidate:
    """A candidate seen on ``frames`` (best: the middle one) with ``box`` everywhere."""
    points = tuple(TrackPoint(frame=f, box=box, score=score, height_mm=float(f))
                   for f in frames)
    best = frames[len(frames) // 2]
    return TomoCandidate(box=box, score=score, label=label, best_frame=best,
                         first_frame=frames[0], last_frame=frames[-1], height_mm=float(best),
                         track=points)


def test_nested_tracks_are_suppressed_only_at_the_same_height() -> None:
    heights = [float(k) for k in range(20)]
    big = track([3, 4, 5, 6], (10, 10, 30, 30), 0.9)
    inner = track([5, 6, 7], (12, 12, 20, 20), 0.6)  # inside big, overlapping frames
    above = track([12, 13], (12, 12, 20, 20), 0.7)  # same place, other planes
    bubble = track([4, 5], (12, 12, 20, 20), 0.8, label=1)  # other class
    kept = suppress_nested_tracks([inner, big, above, bubble], heights, 0.6)
    assert kept == [1, 3, 2]
    with pytest.raises(ValueError, match="ios_thresh"):
        suppress_nested_tracks([big], heights, 0.0)


def test_frame_out_counts_whole_slabs_in_stack_order() -> None:
    heights = [float(k) for k in range(10)]
    c = track([1, 4, 7], (0, 0, 5, 5), 0.5)
    assert frame_out(c, heights, 3).model_dump() == {"best": 5, "first": 1, "last": 9,
                                                     "height_mm": 4.0}
    assert frame_out(c, heights, 1).model_dump() == {"best": 5, "first": 2, "last": 8,
                                                     "height_mm": 4.0}
    # frames stored top-down (the heights fall with the index): still index order
    falling = heights[::-1]
    d = track([5, 6], (0, 0, 5, 5), 0.5)
    out = frame_out(d, falling, 3)
    assert (out.first, out.last) == (5, 8)


def test_tomo_settings() -> None:
    default = TomoSettings()
    assert (default.slab, default.stride, default.slab_mode) == (DEFAULT_SLAB, DEFAULT_STRIDE,
                                                                 "mean")
    assert default.describe() == "slabs of 3 frames (mean), every 3rd frame"
    assert TomoSettings(slab=1, stride=1).describe() == "every frame"
    assert TomoSettings(slab=1, stride=2).describe() == "every 2nd frame"
    for bad in ({"slab": 0}, {"stride": 0}, {"slab_mode": "median"}, {"slab": True}):
        with pytest.raises(ValueError):
            TomoSettings(**bad)


# ------------------------------------------------------------------------------ CLI


def test_cli_reads_a_volume_and_draws_its_finding_frames(case: dict[str, Any],
                                                         tmp_path: Path) -> None:
    bto = case["CC"]["bto"]
    r = subprocess.run([sys.executable, "-m", "serving.cli", "detect", str(bto), "--json",
                        str(tmp_path / "out.json"), "--overlay", str(tmp_path / "ov"),
                        "--operating-point", "high_specificity"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    result = DetectionResponse.model_validate_json((tmp_path / "out.json").read_text())
    (img,) = result.studies[0].images
    assert img.number_of_frames == FRAMES and img.source == str(bto)
    assert img.findings, "the lesion at least"
    first = img.findings[0].frame
    assert first is not None
    assert "L CC DBT" in r.stdout and f"frame {first.best}/{FRAMES}" in r.stdout
    pngs = sorted((tmp_path / "ov").glob("*.png"))
    marks: list[FindingOut | MimicOut] = [*img.findings, *img.mimics]
    best = sorted({m.frame.best for m in marks if m.frame})
    assert [p.name for p in pngs] == [f"000_L_CC_f{b:03d}.png" for b in best]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert f"wrote {len(pngs)} overlay(s)" in r.stdout


def test_cli_refuses_a_projection_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    path = tmp_path / "projection.dcm"
    path.write_bytes(to_bytes(make_bto(sop_class=BREAST_PROJECTION_PRESENTATION)))
    with pytest.raises(UnsupportedSopClassError, match="send the reconstructed volume"):
        read_input(path, 0.2)
    assert main(["detect", str(path)]) == 2
    captured = capsys.readouterr()
    assert "rejected" in captured.out and "unsupported_sop_class" in captured.out
    assert "send the reconstructed volume" in captured.out.replace("\n", " ")
    assert "no file could be read" in captured.err


def test_cli_reads_volumes_and_images_apart(case: dict[str, Any]) -> None:
    assert isinstance(read_input(case["CC"]["bto"], 0.2), Volume)
    assert isinstance(read_input(case["CC"]["image"], 0.2), Image)


def test_cli_help_names_the_pipeline_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["detect", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"default {DEFAULT_SLAB})" in text and f"(default {DEFAULT_STRIDE}:" in text
    parser = build_parser()
    args = parser.parse_args(["detect", "x.dcm", "--slab", "1", "--stride", "2"])
    assert (args.slab, args.stride) == (1, 2)
    with pytest.raises(SystemExit):
        parser.parse_args(["detect", "x.dcm", "--slab", "0"])


def test_frame_text() -> None:
    img = ImageOut(index=0, sop_instance_uid=None, series_instance_uid=None,
                   study_instance_uid=None, laterality="L", view="CC", rows=4, cols=4,
                   spacing_mm=[0.1, 0.1], spacing_source="PixelSpacing", number_of_frames=48,
                   findings=[], timings_ms={})
    assert frame_text(frame_out(track([22], (0, 0, 1, 1), 0.5), [0.0] * 48, 1), img) == \
        "frame 23/48"
    assert frame_text(None, img) == "-"


def test_a_findings_frame_range_is_its_half_maximum_run() -> None:
    """Blur keeps a defect detectable far from its plane at falling scores: the reported range
    is the run around the best detection scoring at least half the best, not the whole
    track."""
    from serving.pipeline.detect_volume import focus_span
    from serving.pipeline.tomo import TomoCandidate, TrackPoint

    scores = [0.2, 0.3, 0.6, 0.9, 0.5, 0.44, 0.5]
    track = tuple(TrackPoint(frame=i, box=(0.0, 0.0, 4.0, 4.0), score=v)
                  for i, v in enumerate(scores))
    c = TomoCandidate(box=(0.0, 0.0, 4.0, 4.0), score=0.9, label=0, best_frame=3,
                      first_frame=0, last_frame=6, height_mm=3.0, track=track)
    identity = list(range(len(scores)))
    assert focus_span(c, identity) == (2, 4)
    assert focus_span(c, identity, share=0.0) == (0, 6)
    assert focus_span(c, list(reversed(identity))) == (2, 4)  # stack order top-down
    # an in-focus frame outside the half-maximum run (the focus step moved it) is included
    assert focus_span(dc_replace(c, best_frame=6), identity) == (2, 6)


def test_volumes_run_one_pass_even_with_test_time_flips(case: dict[str, Any],
                                                       bundled_model: DetectorModel) -> None:
    """A card's test-time flips apply to 2D images: a volume's candidates are those of the
    single-pass model (a flip would double a volume's time), while a 2D image does change."""
    flipped = dc_replace(bundled_model,
                         decode=dc_replace(bundled_model.decode, test_time_flips=("cols",)))
    assert flipped.single_pass().decode.test_time_flips == ()
    if not bundled_model.decode.test_time_flips:
        assert bundled_model.single_pass() is bundled_model
    vol = read_volume(case["CC"]["bto"])
    settings = TomoSettings(slab=3, stride=3)
    plain = analyse_volume(vol, flipped.single_pass(), settings)
    with_flips = analyse_volume(vol, flipped, settings)
    assert [(c.box, c.score, c.best_frame) for c in with_flips.lesions] == \
        [(c.box, c.score, c.best_frame) for c in plain.lesions]
    image = read_image(case["CC"]["image"])
    assert not np.array_equal(flipped.run(prepare(image, flipped.preprocess).array)[0][0],
                              flipped.single_pass().run(
                                  prepare(image, flipped.preprocess).array)[0][0])


def test_volumes_may_run_at_their_own_input_spacing(bundled_model: DetectorModel) -> None:
    """A card's tomosynthesis section may name a coarser input spacing for volumes than the
    2D one: for_volumes applies it (one pass), TomoSettings carries it, and a bad value in
    the card is refused naming the key."""
    assert bundled_model.for_volumes(0.3).preprocess.spacing_mm == 0.3
    assert bundled_model.for_volumes(0.3).decode.test_time_flips == ()
    same = bundled_model.for_volumes(bundled_model.preprocess.spacing_mm)
    assert same.preprocess == bundled_model.preprocess
    section = dict(bundled_model.card["tomosynthesis"], spacing_mm=0.3)
    assert parse_tomo_section(section).spacing_mm == 0.3
    with_card = dc_replace(bundled_model, tomo=parse_tomo_section(section))
    assert with_card.tomo_settings.spacing_mm == 0.3
    assert with_card.for_volumes().preprocess.spacing_mm == 0.3
    assert with_card.for_volumes(0.25).preprocess.spacing_mm == 0.25  # the caller's wins
    for bad in (0, -1, "0.2", 5.0, True):
        with pytest.raises(ValueError, match="spacing_mm"):
            parse_tomo_section(dict(section, spacing_mm=bad))
    with pytest.raises(ValueError, match="spacing_mm"):
        TomoSettings(spacing_mm=0.0)
