"""Two-view / mimic rescoring and nested-box suppression: the rules on hand-made inputs, and
the whole pipeline on a generated study (order of the views, mirrored images, one view)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import synth_lesion_study

from serving.pipeline.candidates import analyse_study
from serving.pipeline.detect import detect
from serving.pipeline.dicom_in import Image, read_image
from serving.pipeline.model import DetectorModel, default_model_dir, load_model
from serving.pipeline.postprocess import suppress_nested
from serving.pipeline.rescore import (
    FEATURES,
    CandidateEvidence,
    RescoreModel,
    feature_matrix,
    intersection_over_smaller,
)


def test_nested_boxes_are_one_finding() -> None:
    """A 3 mm box inside an 11 mm box (IoU 0.07) is suppressed whichever scores higher;
    boxes of another class, and boxes overlapping less than the threshold, are kept."""
    big = [100, 100, 210, 210]
    small = [140, 140, 170, 170]
    apart = [300, 300, 330, 330]
    half_in = [195, 100, 255, 160]  # a quarter of it inside the big box
    boxes = np.array([big, small, apart, half_in], np.float32)
    labels = np.zeros(4, np.int64)
    assert suppress_nested(boxes, np.array([0.9, 0.8, 0.7, 0.6]), labels, 0.6).tolist() == \
        [0, 2, 3]
    assert suppress_nested(boxes, np.array([0.8, 0.9, 0.7, 0.6]), labels, 0.6).tolist() == \
        [1, 2, 3]
    assert suppress_nested(boxes, np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 1, 0, 0]),
                           0.6).tolist() == [0, 1, 2, 3]
    ios = intersection_over_smaller(boxes[:1], boxes)
    np.testing.assert_allclose(ios[0], [1.0, 1.0, 0.0, 15 * 60 / 3600])


def test_rescore_features_and_model_round_trip() -> None:
    """Features are 0 for the partner terms of a single-view candidate; the card section
    round-trips; a malformed one is refused naming the expected features."""
    single = CandidateEvidence(score=0.9, bubble_here=0.0)
    paired = CandidateEvidence(score=0.9, other_view=True, partner=0.8)
    x = feature_matrix([single, paired])
    assert x.shape == (2, len(FEATURES))
    assert x[0, 3] == 0 and x[0, 4] == 0 and x[1, 3] == 1 and x[1, 4] > 1
    m = RescoreModel(weights=(1.0, -1.0, -0.5, -1.0, 0.5), bias=0.2, fitted_on={"rows": 3})
    again = RescoreModel.from_dict(json.loads(json.dumps(m.to_dict())))
    np.testing.assert_allclose(again.scores([single, paired]), m.scores([single, paired]),
                               atol=1e-6)
    assert m.scores([paired])[0] > m.scores([CandidateEvidence(0.9, other_view=True)])[0]
    with pytest.raises(ValueError, match="logit_score"):
        RescoreModel.from_dict({"features": ["score"], "weights": [1], "bias": 0})


@pytest.mark.parametrize(("change", "key"), [
    ({"features": 5}, "rescoring.features"),
    ({"weights": "12345"}, "rescoring.weights"),
    ({"weights": [1.0, "0.5", 0.0, 0.0, 0.0]}, "rescoring.weights"),
    ({"weights": [1.0, True, 0.0, 0.0, 0.0]}, "rescoring.weights"),
    ({"weights": [1.0, 0.5, 0.0]}, "finite weights"),
    ({"weights": [1.0, float("nan"), 0.0, 0.0, 0.0]}, "finite weights"),
    ({"bias": "0"}, "rescoring.bias"),
    ({"bias": None}, "rescoring.bias"),
    ({"overlap_ios": "x"}, "rescoring.overlap_ios"),
    ({"overlap_ios": 0.3}, "rescoring.overlap_ios"),
    ({"fitted_on": 5}, "rescoring.fitted_on"),
    ({"fitted_on": "abc"}, "rescoring.fitted_on"),
])
def test_a_malformed_rescoring_section_is_refused_naming_the_key(
        change: dict[str, object], key: str) -> None:
    """JSON strings, booleans, lists of the wrong length, an overlap rule this code does not
    apply, and a non-object ``fitted_on`` are refused with ValueError, never a TypeError."""
    good = RescoreModel(weights=(1.0, 0.5, 0.0, 0.2, 0.4), bias=-3.0, fitted_on={}).to_dict()
    with pytest.raises(ValueError, match=key):
        RescoreModel.from_dict({**good, **change})
    with pytest.raises(ValueError, match="rescoring must be an object"):
        RescoreModel.from_dict([good])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_lesion_study(tmp_path_factory.mktemp("rescore") / "study", cases=1, seed=78)


@pytest.fixture(scope="module")
def rescoring_model(tmp_path_factory: pytest.TempPathFactory) -> DetectorModel:
    """The bundled model with a rescoring section whose partner weight is large, so the
    other view visibly changes scores (the shipped weights come from a fit)."""
    src = default_model_dir()
    dst = tmp_path_factory.mktemp("model") / src.name
    shutil.copytree(src, dst)
    card = json.loads((dst / "model.json").read_text())
    card["rescoring"] = RescoreModel(weights=(1.0, -0.5, -0.5, -2.0, 0.5), bias=0.0,
                                     fitted_on={"test": True}).to_dict()
    (dst / "model.json").write_text(json.dumps(card))
    return load_model(dst)


def _images(study: Path) -> list[Image]:
    return [read_image(p) for p in sorted(study.glob("cases/*/*.dcm"))]


def _mirrored(path: Path, out: Path) -> Image:
    ds = pydicom.dcmread(path)
    px = ds.pixel_array[:, ::-1].copy()
    row, col = ds.PatientOrientation
    ds.PatientOrientation = [{"A": "P", "P": "A"}[row], col]
    ds.PixelData = px.tobytes()
    ds.save_as(out)
    return read_image(out)


def test_two_view_rescoring_is_symmetric(study: Path, rescoring_model: DetectorModel,
                                         tmp_path: Path) -> None:
    """The same study in the other view order, and with every image mirrored, gives the
    same rescored scores; the other view changes them (partner evidence is used)."""
    paths = sorted(study.glob("cases/*/*.dcm"))
    assert len(paths) == 2
    images = [read_image(p) for p in paths]
    a = analyse_study(images, rescoring_model)
    b = analyse_study(images[::-1], rescoring_model)[::-1]
    mirrored = [_mirrored(p, tmp_path / p.name) for p in paths]
    c = analyse_study(mirrored, rescoring_model)
    for x, y, z in zip(a, b, c, strict=True):
        assert len(x.scores) > 0
        np.testing.assert_array_equal(x.scores, y.scores)
        np.testing.assert_array_equal(x.boxes, y.boxes)
        assert len(z.scores) == len(x.scores)
        np.testing.assert_array_equal(np.sort(z.scores), np.sort(x.scores))
        assert all(e.other_view for e in x.evidence)
    alone = analyse_study(images[:1], rescoring_model)[0]
    assert not any(e.other_view for e in alone.evidence)
    # alone, the view's scores differ from the pair's (in number, or in value)
    assert alone.scores.shape != a[0].scores.shape or \
        not np.allclose(np.sort(alone.scores), np.sort(a[0].scores))


def test_single_view_request_works(study: Path, rescoring_model: DetectorModel) -> None:
    """One view alone is answered: findings say 'single view', no fused finding."""
    image = _images(study)[0]
    resp = detect([image], rescoring_model, "high_sensitivity")
    out = resp.studies[0]
    assert out.fused == []
    assert out.images[0].findings, "the generated lesion case should give a finding"
    for f in out.images[0].findings:
        assert f.evidence is not None and f.evidence.startswith("other view") is False
        assert "single view" in f.evidence
        assert f.detector_score is not None


def test_findings_have_no_nested_boxes(study: Path) -> None:
    """At the most sensitive operating point no reported box lies mostly inside another."""
    model = load_model(default_model_dir())
    resp = detect(_images(study), model, "high_sensitivity")
    for img in resp.studies[0].images:
        boxes = np.array([f.box_px for f in img.findings]).reshape(-1, 4)
        ios = intersection_over_smaller(boxes, boxes)
        np.fill_diagonal(ios, 0)
        assert (ios < model.decode.nested_ios_thresh).all(), ios


def test_fit_learns_that_a_partner_means_a_lesion_and_a_bubble_does_not() -> None:
    """On rows where true lesions have a partner in the other view and false candidates sit on
    an air bubble, the fitted weights are positive for the partner and negative for the
    bubble; the single-view rows keep the detector score as the main term."""
    from training.rescore_fit import fit

    rng = np.random.default_rng(0)
    evidence, labels = [], []
    for _ in range(400):
        lesion = bool(rng.random() < 0.3)
        score = float(rng.uniform(0.2, 0.95))
        evidence.append(CandidateEvidence(
            score=score, bubble_here=0.0 if lesion else float(rng.uniform(0.3, 0.99)),
            other_view=True, partner=float(rng.uniform(0.5, 0.99)) if lesion else 0.0))
        labels.append(float(lesion))
    x = feature_matrix(evidence)
    m = fit(x, np.asarray(labels), np.ones(len(labels)))
    w = dict(zip(FEATURES, m.weights, strict=True))
    assert w["logit_partner"] > 0 and w["logit_bubble_here"] < 0
    with pytest.raises(ValueError, match="both"):
        fit(x, np.zeros(len(labels)), np.ones(len(labels)))


def test_mimic_threshold_is_the_lowest_score_with_the_wanted_precision() -> None:
    """Calls at 0.9 (right), 0.8 (wrong), 0.7 (right), 0.6 (right), 0.5 (wrong), 0.4 (wrong):
    precision of the calls >= t is 1, 1/2, 2/3, 3/4, 3/5, 1/2; for 0.7 the lowest qualifying
    t is 0.6."""
    from training.rescore_fit import mimic_threshold

    bubble = {"kind": "air_bubble", "box": [0, 0, 10, 10]}
    items = [{"mimics": [bubble]}] * 6
    right, wrong = [0, 0, 10, 10], [50, 50, 60, 60]
    preds = [{"mimic_boxes": np.array([b]), "mimic_scores": [s], "mimic_labels": ["air_bubble"]}
             for b, s in ((right, 0.9), (wrong, 0.8), (right, 0.7), (right, 0.6), (wrong, 0.5),
                          (wrong, 0.4))]
    thr, summary = mimic_threshold(items, preds, precision=0.7)
    assert thr == 0.6 and summary["calls"] == 4 and summary["right"] == 3
    assert mimic_threshold(items[:1], preds[1:2], precision=0.7)[0] == 1.0


def test_partners_are_one_to_one(study: Path, rescoring_model: DetectorModel) -> None:
    """Each candidate has at most one partner and partners pair up: as many CC candidates
    have a partner as ML/MLO candidates do, and every partner score is the detector score of
    a candidate of the other view (a lesion cannot also be a bubble's partner)."""
    images = _images(study)
    a = analyse_study(images, rescoring_model, final=False)
    cc = [c for c in a if (c.image.view or "").upper() == "CC"]
    other = [c for c in a if (c.image.view or "").upper() != "CC"]
    with_cc = [e.partner for c in cc for e in c.evidence if e.partner > 0]
    with_other = [e.partner for c in other for e in c.evidence if e.partner > 0]
    assert with_cc and len(with_cc) == len(with_other)
    other_scores = {round(float(s), 6) for c in other for s in c.detector_scores}
    assert all(round(p, 6) in other_scores for p in with_cc)
