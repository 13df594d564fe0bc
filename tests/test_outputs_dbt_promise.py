"""What the DICOM results say about the operating point of tomosynthesis (DBT) findings: the
card's tomosynthesis point (its threshold, false positives per volume and sensitivity), and
that volume scores are the detector's own, not rescored; 2D-only studies are unchanged."""

from __future__ import annotations

import dataclasses

import pytest
from pydicom.dataset import Dataset

from serving.outputs.cad_sr import build_cad_sr
from serving.outputs.common import OperatingPointPerformance, ResultInput, VolumePromise
from serving.outputs.results import result_inputs
from serving.outputs.tid1500 import build_tid1500
from serving.outputs.wording import VOLUME_RESCORED_MEANING
from serving.pipeline.detect_volume import TomoSettings
from serving.pipeline.findings import (
    DetectionResponse,
    FrameOut,
    ModelOut,
    OperatingPointOut,
    StudyOut,
)
from serving.pipeline.model import TomoOperatingPoint
from serving.pipeline.volume_points import VolumePoints
from tests.dicomgen import make_dataset
from tests.test_outputs_dbt import COLS, ROWS, STUDY_UID, WHEN, _bto, _finding, _image, _same_study

#: The 2D point's promise (what the bug quoted for volume findings).
PERF_2D = OperatingPointPerformance(sensitivity=0.801, fp_per_image=0.35)
TOMO_POINT = TomoOperatingPoint(name="balanced", score_threshold=0.612, fp_per_volume=0.94,
                                sensitivity=0.62)


def _points(point: TomoOperatingPoint | None, *, calibrated: bool = True) -> VolumePoints:
    return VolumePoints(name="balanced", score_threshold=0.13 if point is None else
                        point.score_threshold, source="volumes: ...", settings=TomoSettings(),
                        thresholds={}, warnings=(), calibrated=calibrated, point=point,
                        thresholds_2d=point is None)


def _texts(ds: Dataset) -> list[str]:
    """Every TextValue of an SR content tree, depth first."""
    out: list[str] = []
    for item in ds.get("ContentSequence", []):
        if "TextValue" in item:
            out.append(str(item.TextValue))
        out.extend(_texts(item))
    return out


def _study(with_volume: bool) -> ResultInput:
    """A left CC volume with a finding on frame 3 (when ``with_volume``) and a right 2D CC with
    a rescored finding."""
    mg = _same_study(make_dataset(rows=ROWS, cols=COLS, view="CC", laterality="R", seed=9,
                                  patient_orientation=("P", "L"), window=(2000, 4000)), 1)
    rescored = _finding(0, 0, [10.0, 10.0, 30.0, 30.0], 0.66, None).model_copy(
        update={"evidence": "other view: partner scored 0.70"})
    sources: list[Dataset] = [mg]
    images = [_image(0, mg, "CC", "R", [rescored], None)]
    if with_volume:
        cc = _bto("CC", 1)
        sources.append(cc)
        images.append(_image(1, cc, "CC", "L", [_finding(
            1, 0, [20.0, 30.0, 36.0, 44.0], 0.71,
            FrameOut(best=3, first=2, last=4, height_mm=2.0))], 8))
    response = DetectionResponse(
        model=ModelOut(name="galacto-small", version="0.4.0"),
        operating_point=OperatingPointOut(
            name="balanced", score_threshold=0.13,
            source="model card; volumes: model card tomosynthesis point balanced, "
                   "score >= 0.612"),
        studies=[StudyOut(study_instance_uid=STUDY_UID, images=images, fused=[])])
    return result_inputs(response, sources, PERF_2D,
                         VolumePromise.of(_points(TOMO_POINT)))[0]


def _impression(texts: list[str], lesion: str, breast: str) -> str:
    (text,) = [t for t in texts if t.startswith(f"{lesion} ") and breast in t]
    return text


def test_promise_of_a_card_tomosynthesis_point() -> None:
    promise = VolumePromise.of(_points(TOMO_POINT))
    assert promise == VolumePromise(0.612, 0.94, 0.62, "model card tomosynthesis point balanced")
    other = VolumePromise.of(_points(TOMO_POINT, calibrated=False))
    assert "other slab settings" in other.source


def test_promise_without_tomosynthesis_points_says_the_2d_threshold_was_applied() -> None:
    promise = VolumePromise.of(_points(None))
    assert (promise.score_threshold, promise.fp_per_volume, promise.sensitivity) == (
        0.13, None, None)
    assert promise.source == ("the 2D threshold of balanced applied to raw volume scores, not "
                              "fitted on tomosynthesis")


def test_cad_sr_states_the_tomosynthesis_point_for_a_volume_finding() -> None:
    result = _study(with_volume=True)
    texts = _texts(build_cad_sr(result, when=WHEN))
    volume = _impression(texts, "Filling defect", "Left breast")
    assert "score >= 0.61" in volume and "model card tomosynthesis point balanced" in volume
    assert "0.94 false positives per volume" in volume and "62.0 % of lesions" in volume
    assert "not rescored" in volume and "after rescoring" not in volume
    assert "0.13" not in volume and "0.35 false marks" not in volume
    flat = _impression(texts, "Filling defect", "Right breast")  # the 2D finding: as before
    assert "score >= 0.13" in flat and "0.35 false marks per image" in flat
    assert "after rescoring" in flat
    assert "operating point balanced on tomosynthesis volumes: findings with score >= 0.612" \
        in texts
    (description,) = [t for t in texts if t.startswith("balanced: every mark")]
    assert "Marks on tomosynthesis volumes have score >= 0.612" in description
    assert "0.94 false positives per volume" in description
    tid = _texts(build_tid1500(result, when=WHEN))
    assert "on DBT validation data 62.0 % of lesions were found at 0.94 false positives per " \
        "volume" in tid
    assert any("not rescored" in t for t in tid)
    assert "operating point balanced on tomosynthesis volumes: findings with score >= 0.612" \
        in tid


def test_card_without_tomosynthesis_points_says_the_2d_threshold_is_not_fitted() -> None:
    result = dataclasses.replace(_study(with_volume=True),
                                 volume_promise=VolumePromise.of(_points(None)))
    volume = _impression(_texts(build_cad_sr(result, when=WHEN)), "Filling defect",
                         "Left breast")
    assert "2D threshold of balanced applied to raw volume scores, not fitted on " \
        "tomosynthesis" in volume
    assert "false positives per volume not measured" in volume
    assert "after rescoring" not in volume


@pytest.mark.parametrize("build", [build_cad_sr, build_tid1500])
def test_a_2d_only_study_is_unchanged(build: object) -> None:
    result = _study(with_volume=False)
    without = dataclasses.replace(result, volume_promise=None)
    assert callable(build)
    assert _texts(build(result, when=WHEN)) == _texts(build(without, when=WHEN))


def test_rescored_volume_scores_are_described_as_rescored() -> None:
    """With the card's tomosynthesis rescoring (``VolumePoints.rescored``), both SRs say the
    volume scores were rescored with the other view, and never that they were not."""
    promise = VolumePromise.of(dataclasses.replace(_points(TOMO_POINT), rescored=True))
    assert promise.rescored
    result = dataclasses.replace(_study(with_volume=True), volume_promise=promise)
    texts = _texts(build_cad_sr(result, when=WHEN))
    volume = _impression(texts, "Filling defect", "Left breast")
    assert VOLUME_RESCORED_MEANING in volume and "not rescored" not in volume
    (description,) = [t for t in texts if t.startswith("balanced: every mark")]
    assert VOLUME_RESCORED_MEANING in description
    tid = _texts(build_tid1500(result, when=WHEN))
    assert VOLUME_RESCORED_MEANING in tid and not any("not rescored" in t for t in tid)
