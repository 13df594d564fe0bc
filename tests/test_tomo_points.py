"""Tomosynthesis operating points: the threshold choice on a FROC per volume
(``training.tomo_points``), the card's ``tomosynthesis`` section (``serving.pipeline.model``),
the threshold volumes get in ``detect`` (``serving.pipeline.volume_points``), and
``galacto tomo-points`` end to end on a tiny generated DBT set with a copy of the default
model (the committed ``models/`` folder is never written)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from serving.cli import main
from serving.pipeline.detect import detect
from serving.pipeline.detect_volume import TomoSettings, analyse_volume
from serving.pipeline.dicom_in import Volume, read_volume
from serving.pipeline.model import (
    ModelError,
    OperatingPoint,
    default_model_dir,
    load_model,
)
from serving.pipeline.rescore import FEATURES
from serving.pipeline.volume_points import NO_TOMO_POINTS_WARNING, volume_points
from tests.dbt_files import make_bto, tiny_dbt_set
from tests.dicomgen import to_bytes
from training.tomo_points import (
    TOMO_TARGETS,
    UNREACHABLE_THRESHOLD,
    choose_points,
    choose_threshold,
    froc_points,
    write_tomo_section,
)

NEG = -math.inf

# ------------------------------------------------------------------------------ choice

#: Five lesions (one never hit) and eight false positives over four volumes. Curve, from the
#: strictest threshold down (threshold: lesions found, false positives):
#: 0.95: 1, 0 | 0.92: 1, 1 | 0.90: 2, 1 | 0.85: 2, 2 | 0.80: 2, 3 | 0.75: 2, 4 | 0.70: 3, 4 |
#: 0.60: 3, 5 | 0.50: 3, 6 | 0.40: 4, 6 | 0.30: 4, 7 | 0.20: 4, 8
LESIONS = [0.95, 0.9, 0.7, 0.4, NEG]
FPS = [0.92, 0.85, 0.8, 0.75, 0.6, 0.5, 0.3, 0.2]
VOLUMES = 4


def test_froc_points_counts_lesions_and_false_positives_per_volume() -> None:
    thr, sens, fp = froc_points(LESIONS, FPS, VOLUMES)
    assert thr.tolist() == sorted({*LESIONS[:4], *FPS}, reverse=True)
    assert sens[[0, 2, 6, 9]].tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert fp[[0, 1, 5, 11]].tolist() == pytest.approx([0.0, 0.25, 1.0, 2.0])
    with pytest.raises(ValueError, match="no lesion"):
        froc_points([], FPS, VOLUMES)


@pytest.mark.parametrize(("target", "threshold", "note"), [
    (0.25, 0.9, None),
    (0.5, 0.9, None),     # 0.85 keeps 0.5 FP/volume too, but finds no more lesions
    (1.0, 0.7, None),
    (2.0, 0.4, None),     # not 0.2: the same four lesions with two false positives fewer
    (3.0, 0.4, "target 3 not reached: every candidate together gives 2.000"),
])
def test_the_strictest_threshold_reaching_the_best_sensitivity_within_the_target(
        target: float, threshold: float, note: str | None) -> None:
    choice = choose_threshold(*froc_points(LESIONS, FPS, VOLUMES), target)
    assert choice.reachable and choice.score_threshold == threshold
    assert choice.note == note or (note is not None and str(choice.note).startswith(note))


def test_unreachable_targets_are_stated() -> None:
    # the top-scoring candidate is a false positive on the only volume: 1 FP/volume at once
    top = choose_threshold(*froc_points([0.5], [0.9, 0.8], 1), 0.25)
    assert not top.reachable and top.score_threshold == UNREACHABLE_THRESHOLD
    assert "unreachable" in str(top.note) and "1.000 false positives" in str(top.note)
    # within 0.25 FP/volume (one false positive on four volumes) no lesion is found
    none = choose_threshold(*froc_points([0.3], [0.9, 0.8, 0.2], 4), 0.25)
    assert not none.reachable and "no lesion is found" in str(none.note)
    points = choose_points([0.3], [0.9, 0.8, 0.2], 4,
                           {"high_specificity": 0.25, "balanced": 1.0})
    assert points["high_specificity"]["score_threshold"] == UNREACHABLE_THRESHOLD
    assert points["high_specificity"]["fp_per_volume"] == 0.0
    assert points["high_specificity"]["reachable"] is False
    assert "note" in points["high_specificity"]
    assert points["balanced"]["reachable"] and points["balanced"]["sensitivity"] == 1.0
    assert points["balanced"]["note"] == ("target 1 not reached: every candidate together "
                                          "gives 0.750 false positives per volume")


def test_choose_points_measures_at_the_stored_threshold() -> None:
    points = choose_points(LESIONS, FPS, VOLUMES)
    assert list(points) == list(TOMO_TARGETS)
    hs, bal, sens = (points[n] for n in ("high_specificity", "balanced", "high_sensitivity"))
    assert hs["score_threshold"] == pytest.approx(0.9, abs=1e-6) and hs["score_threshold"] <= 0.9
    assert (hs["fp_per_volume"], hs["sensitivity"], hs["false_positives"]) == (0.25, 0.4, 1)
    assert (bal["fp_per_volume"], bal["sensitivity"], bal["lesions_found"]) == (1.0, 0.6, 3)
    assert (sens["fp_per_volume"], sens["sensitivity"]) == (1.5, 0.8)
    assert sens["target_fp_per_volume"] == 2.0 and sens["reachable"]


# ------------------------------------------------------------------------------ card


def section(thresholds: dict[str, float], *, slab: int = 3, stride: int = 3,
            mode: str = "mean") -> dict[str, Any]:
    """A hand-made ``tomosynthesis`` section."""
    return {"slab": slab, "stride": stride, "slab_mode": mode,
            "operating_points": {n: {"score_threshold": t, "fp_per_volume": 0.5,
                                     "sensitivity": 0.75, "target_fp_per_volume": 1.0}
                                 for n, t in thresholds.items()},
            "validation": {"data": "hand-made", "volumes": 4, "lesions": 4, "cpm": 0.5,
                           "sensitivity_at_1_fp_per_volume": 0.75}}


@pytest.fixture()
def model_copy(tmp_path: Path) -> Path:
    """A copy of the default model's folder, its card without a ``tomosynthesis`` section
    (the committed folder stays untouched)."""
    dst = tmp_path / "model"
    shutil.copytree(default_model_dir(), dst)
    card = json.loads((dst / "model.json").read_text())
    if card.pop("tomosynthesis", None) is not None:
        (dst / "model.json").write_text(json.dumps(card, indent=1) + "\n")
    return dst


def test_a_card_with_the_section_round_trips(model_copy: Path) -> None:
    before = json.loads((model_copy / "model.json").read_text())
    sec = section({"high_specificity": 0.9, "balanced": 0.8, "high_sensitivity": 0.7},
                  slab=1, stride=2, mode="max")
    write_tomo_section(model_copy, sec)
    after = json.loads((model_copy / "model.json").read_text())
    assert after["tomosynthesis"] == sec
    assert {k: v for k, v in after.items() if k != "tomosynthesis"} == before
    model = load_model(model_copy, threads=1)
    assert model.tomo is not None and model.tomo.validation["volumes"] == 4
    point = model.tomo_operating_point("balanced")
    assert point is not None and point.score_threshold == 0.8
    assert (point.fp_per_volume, point.sensitivity, point.target_fp_per_volume) == \
        (0.5, 0.75, 1.0)
    default = model.tomo_operating_point(None)
    assert default is not None and default.name == model.default_operating_point
    assert model.tomo_operating_point("site_0.75") is None
    assert model.tomo_settings == TomoSettings(slab=1, stride=2, slab_mode="max")


@pytest.mark.parametrize(("change", "message"), [
    ({"slab": 0}, "slab must be an int >= 1"),
    ({"slab_mode": "median"}, "slab_mode must be one of"),
    ({"operating_points": {}}, "operating_points must be a non-empty object"),
    ({"operating_points": {"balanced": {"fp_per_volume": 1.0}}},
     "operating point 'balanced' has no score_threshold"),
    ({"operating_points": {"balanced": {"score_threshold": "high"}}},
     "balanced.score_threshold must be a number"),
    ({"operating_points": {"balanced": {"score_threshold": 0.5, "sensitivity": 2}}},
     r"balanced.sensitivity must be in \[0, 1\]"),
])
def test_a_malformed_section_is_refused_by_key(model_copy: Path, change: dict[str, Any],
                                               message: str) -> None:
    card_path = model_copy / "model.json"
    card = json.loads(card_path.read_text())
    card["tomosynthesis"] = {**section({"balanced": 0.8}), **change}
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match=f"tomosynthesis: {message}"):
        load_model(model_copy, threads=1)
    good = json.loads(card_path.read_text())
    good.pop("tomosynthesis")
    card_path.write_text(json.dumps(good))
    with pytest.raises(ValueError, match=message):
        write_tomo_section(model_copy, {**section({"balanced": 0.8}), **change})
    assert "tomosynthesis" not in json.loads(card_path.read_text())  # nothing written


# ------------------------------------------------------------------------------ detect


@pytest.fixture(scope="module")
def noise_volume() -> Volume:
    """Eight noise frames of 48 x 64 pixels: no breast, a few candidates of low scores."""
    return read_volume(to_bytes(make_bto(frames=8, heights=[0.5 * k for k in range(8)])))


def test_a_card_without_the_section_loads_and_volumes_say_so(
        model_copy: Path, noise_volume: Volume) -> None:
    model = load_model(model_copy, threads=1)
    assert model.tomo is None and model.tomo_operating_point("balanced") is None
    assert model.tomo_settings == TomoSettings()
    result = detect([noise_volume], model, "balanced")
    (img,) = result.studies[0].images
    t2d = model.operating_point("balanced").score_threshold
    assert result.operating_point.score_threshold == t2d
    assert any(NO_TOMO_POINTS_WARNING in w for w in img.warnings), img.warnings
    assert "not fitted on tomosynthesis" in result.operating_point.source
    assert all(f.score >= t2d for f in img.findings)


def test_with_the_section_volumes_take_the_card_threshold(
        model_copy: Path, noise_volume: Volume) -> None:
    plain = load_model(model_copy, threads=1)
    scores = sorted(c.score for c in analyse_volume(noise_volume, plain).lesions)
    assert len(scores) >= 4, scores  # the noise gives candidates to threshold
    t = scores[len(scores) // 2]  # half of them pass
    write_tomo_section(model_copy, section({"high_specificity": 2 * t, "balanced": t,
                                            "high_sensitivity": t / 2}))
    model = load_model(model_copy, threads=1)
    result = detect([noise_volume], model, "balanced")
    (img,) = result.studies[0].images
    assert len(img.findings) == sum(1 for s in scores if s >= t)
    assert all(f.score >= round(t, 4) and "balanced" in f.operating_points
               and "high_specificity" not in f.operating_points for f in img.findings)
    assert not any(NO_TOMO_POINTS_WARNING in w for w in img.warnings)
    assert any(f"balanced of the model card's tomosynthesis points applied to volume scores: "
               f"score >= {t:.3f}" in w for w in img.warnings), img.warnings
    assert f"tomosynthesis point balanced, score >= {t:.3f}" in result.operating_point.source
    # the caller's threshold still overrides, and says that it was not measured
    every = detect([noise_volume], model, "balanced", score_threshold=0.0)
    (all_img,) = every.studies[0].images
    assert len(all_img.findings) == len(scores)
    assert any("the request's score threshold 0 was applied" in w for w in all_img.warnings)


def test_volumes_run_with_the_card_settings_unless_the_caller_sets_others(
        model_copy: Path, noise_volume: Volume) -> None:
    write_tomo_section(model_copy, section({"balanced": 0.5}, slab=1, stride=1))
    model = load_model(model_copy, threads=1)
    (img,) = detect([noise_volume], model, "balanced").studies[0].images
    assert any("every frame (8 of 8 frames as centres)" in w for w in img.warnings)
    assert not any("were not measured for these settings" in w for w in img.warnings)
    other = detect([noise_volume], model, "balanced", tomo=TomoSettings())
    (o_img,) = other.studies[0].images
    assert any("slabs of 3 frames (mean), every 3rd frame (3 of 8" in w for w in o_img.warnings)
    assert any("fitted on every frame, but these volumes ran on slabs of 3" in w
               and "were not measured for these settings" in w for w in o_img.warnings)


def test_a_point_the_section_lacks_falls_back_to_the_card_default(model_copy: Path) -> None:
    write_tomo_section(model_copy, section({"balanced": 0.6, "high_sensitivity": 0.4}))
    model = load_model(model_copy, threads=1)
    site = dataclasses.replace(
        model, operating_points={"site_0.75": OperatingPoint("site_0.75", 0.2, 0.75, None, 0.7)},
        default_operating_point="site_0.75", operating_points_source="site calibration x")
    vp = volume_points(site, None)
    assert vp.score_threshold == 0.6 and vp.calibrated
    assert "no tomosynthesis operating point 'site_0.75'" in vp.warnings[0]
    assert vp.source == "volumes: model card tomosynthesis point balanced, score >= 0.600"
    assert vp.passes(0.5) == ["high_sensitivity"]


# ------------------------------------------------------------------------------ command


def _galacto(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True,
                          text=True, timeout=600)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_galacto_tomo_points_end_to_end(tmp_path: Path, model_copy: Path) -> None:
    committed = default_model_dir() / "model.json"
    committed_sha = _sha(committed)
    data = tiny_dbt_set(tmp_path / "dbt-val")
    before = json.loads((model_copy / "model.json").read_text())
    r = _galacto("tomo-points", "--model", str(model_copy), "--val", str(data))
    assert r.returncode == 0, r.stderr
    assert "Tomosynthesis operating points" in r.stdout and "balanced" in r.stdout
    card = json.loads((model_copy / "model.json").read_text())
    sec = card.pop("tomosynthesis")
    assert card == before
    assert (sec["slab"], sec["stride"], sec["slab_mode"]) == (3, 3, "mean")
    assert list(sec["operating_points"]) == list(TOMO_TARGETS)
    for name, p in sec["operating_points"].items():
        assert p["target_fp_per_volume"] == TOMO_TARGETS[name]
        assert p["reachable"] == (p["score_threshold"] < UNREACHABLE_THRESHOLD)
        assert p["fp_per_volume"] <= TOMO_TARGETS[name] or not p["reachable"]
        assert p["reachable"] or "unreachable" in p["note"]
    val = sec["validation"]
    assert val["volumes"] == 2 and val["lesions"] >= 1 and val["data"] == str(data)
    assert {"cpm", "sensitivity_at_1_fp_per_volume", "detector_cpm"} <= set(val)
    assert sec["rescoring"]["features"] == list(FEATURES)
    assert sec["rescoring"]["fitted_on"]["volumes"] == 2
    assert "rescored score" in sec["scores"]
    model = load_model(model_copy, threads=1)
    assert model.tomo is not None and model.tomo_settings == TomoSettings()
    assert model.tomo_rescoring is not None
    assert volume_points(model, "balanced").rescored
    assert "rescoring: fitted on" in r.stdout and "fit it on more volumes" in r.stdout
    # several folders are pooled (each once); --no-rescore keeps the detector's scores
    r = _galacto("tomo-points", "--model", str(model_copy), "--val", str(data), str(data))
    assert r.returncode != 0 and "given more than once" in r.stderr
    shutil.copytree(data, tmp_path / "dbt-val-copy")  # the same volumes under another name
    r = _galacto("tomo-points", "--model", str(model_copy), "--val", str(data),
                 str(tmp_path / "dbt-val-copy"))
    assert r.returncode != 0 and "appear more than once across the folders" in r.stderr
    tiny_dbt_set(tmp_path / "dbt-val-2", seed=6)
    r = _galacto("tomo-points", "--model", str(model_copy), "--val", str(data),
                 str(tmp_path / "dbt-val-2"), "--no-rescore")
    assert r.returncode == 0, r.stderr
    sec = json.loads((model_copy / "model.json").read_text())["tomosynthesis"]
    assert "rescoring" not in sec and "not rescored" in sec["scores"]
    assert sec["validation"]["volumes"] == 4
    assert sec["validation"]["data"] == f"{data}, {tmp_path / 'dbt-val-2'}"
    assert load_model(model_copy, threads=1).tomo_rescoring is None
    assert _sha(committed) == committed_sha


def test_tomo_points_and_export_refuse_bad_input_at_once(
        tmp_path: Path, model_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tomo-points", "--model", str(tmp_path), "--val", str(tmp_path)]) != 0
    assert "no model.json there" in capsys.readouterr().err
    assert main(["tomo-points", "--model", str(model_copy), "--val", str(tmp_path)]) != 0
    assert "no dataset.json there" in capsys.readouterr().err
    assert main(["tomo-points", "--model", str(model_copy), "--val", str(tmp_path),
                 "--stride", "0"]) != 0
    assert "--slab and --stride must be >= 1" in capsys.readouterr().err
    assert main(["tomo-points", "--model", str(model_copy), "--val", str(tmp_path),
                 "--limit", "0"]) != 0
    assert "--limit 0: expected a number of volumes >= 1" in capsys.readouterr().err
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"")
    assert main(["export", "--checkpoint", str(checkpoint), "--version", "9.9.9",
                 "--out", str(tmp_path / "models"), "--dbt-val", str(tmp_path)]) != 0
    assert "--dbt-val" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()
