"""Site calibration (``galacto calibrate``, ``serving.pipeline.calibration``): thresholds
chosen on generated normal studies, applied by ``galacto detect``, the HTTP service and the
gateway, named in responses and result objects; refusals (too few images, another model's
file, an output inside the model folder)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient

from serving.api.main import create_app
from serving.cli import main
from serving.gateway.service import Gateway
from serving.gateway.settings import GatewaySettings
from serving.outputs.cad_sr import build_cad_sr
from serving.outputs.common import ResultInput
from serving.outputs.tid1500 import build_tid1500
from serving.pipeline.calibration import (
    CalibrationError,
    calibrated_model,
    check_file_for_folder,
    default_point,
    min_images,
    point_names,
    read_calibration,
    threshold_for_rate,
)
from serving.pipeline.detect import detect
from serving.pipeline.dicom_in import read_image
from serving.pipeline.model import DetectorModel, OperatingPoint
from serving.settings import Settings

#: 3 normal cases of the tiny test profile: 6 images. Targets 2 and 4 FP/image need 6 and 3
#: images under the size rule; the card's 0.5 and 0.125 need 23 and 89.
CASES = 3
TARGETS = ("2", "4")


@pytest.fixture(scope="module")
def normals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of generated normal studies (no lesion: every finding is a false positive)."""
    out = tmp_path_factory.mktemp("normals") / "site"
    r = subprocess.run([sys.executable, "-m", "serving.cli", "synth", "--out", str(out),
                        "--cases", str(CASES), "--seed", "5", "--profile", "test",
                        "--normal-share", "1", "--compressed-share", "0", "--workers", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(list(out.rglob("*.dcm"))) == 2 * CASES
    return out


@pytest.fixture(scope="module")
def calibration_file(normals: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``galacto calibrate`` on ``normals`` at 2 and 4 FP/image."""
    out = tmp_path_factory.mktemp("calibration") / "site-calibration.json"
    argv = ["calibrate", "--normals", str(normals), "--out", str(out)]
    for t in TARGETS:
        argv += ["--target-fp", t]
    assert main(argv) == 0
    return out


def _findings(response_json: dict[str, object]) -> int:
    studies = response_json["studies"]
    assert isinstance(studies, list)
    return sum(len(img["findings"]) for s in studies for img in s["images"])


# --------------------------------------------------------------------------------------------
# Choosing thresholds
# --------------------------------------------------------------------------------------------


def test_size_rule_gives_the_documented_numbers() -> None:
    assert [min_images(r) for r in (0.125, 0.5, 2.0, 4.0)] == [89, 23, 6, 3]


def test_threshold_is_the_lowest_within_the_target() -> None:
    scores = [0.9, 0.8, 0.8, 0.7, 0.3]
    # 4 images at 0.5/image: 2 findings allowed; 0.8 twice does not fit, so > 0.8
    assert threshold_for_rate(scores, 4, 0.5, floor=0.05) == (0.8001, 1)
    assert threshold_for_rate(scores, 4, 0.75, floor=0.05) == (0.7001, 3)
    assert threshold_for_rate(scores, 4, 1.0, floor=0.05) == (0.3001, 4)
    # every candidate fits: the pipeline's own floor
    assert threshold_for_rate(scores, 4, 2.0, floor=0.05) == (0.05, 5)
    assert threshold_for_rate([], 4, 0.5, floor=0.05) == (0.05, 0)


def test_names_keep_the_cards_for_its_budgets() -> None:
    card = {"strict": OperatingPoint("strict", 0.9, 0.125, None, None),
            "balanced": OperatingPoint("balanced", 0.8, 0.5, None, None)}
    assert point_names(card, None) == {"strict": 0.125, "balanced": 0.5}
    assert point_names(card, [1.5, 0.5, 1.5]) == {"balanced": 0.5, "site_1.5": 1.5}
    assert default_point({"site_0.75": 0.75, "site_3": 3.0}, card["balanced"]) == "site_0.75"
    with pytest.raises(CalibrationError, match="> 0"):
        point_names(card, [0.0])


# --------------------------------------------------------------------------------------------
# galacto calibrate
# --------------------------------------------------------------------------------------------


def test_calibrate_writes_thresholds_within_target(calibration_file: Path,
                                                   bundled_model: DetectorModel) -> None:
    data = json.loads(calibration_file.read_text())
    assert data["schema_version"] == 1 and data["kind"] == "galacto-site-calibration"
    assert data["model"] == {"name": bundled_model.name, "version": bundled_model.version,
                             "onnx_sha256": bundled_model.card["onnx"]["sha256"]}
    assert data["images"] == 2 * CASES and data["studies"] == CASES
    assert data["inputs"]["target_fp"] == [2.0, 4.0] and data["inputs"]["refused"] == 0
    points = data["operating_points"]
    # 2 FP/image is the card's high_sensitivity budget: the name is kept
    assert set(points) == {"high_sensitivity", "site_4"}
    assert data["default_operating_point"] == "high_sensitivity"
    for p in points.values():
        assert 0.0 <= p["score_threshold"] <= 1.0
        assert p["fp_per_image"] <= p["target_fp_per_image"]
        assert p["false_positives"] == round(p["fp_per_image"] * p["images"])
    assert points["site_4"]["score_threshold"] <= points["high_sensitivity"]["score_threshold"]
    assert points["high_sensitivity"]["card_score_threshold"] == \
        bundled_model.operating_points["high_sensitivity"].score_threshold


def test_too_small_set_is_refused_naming_the_images_needed(
        normals: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--normals", str(normals), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{2 * CASES} normal image(s) are too few" in err
    assert "balanced (0.5 FP/image) needs at least 23 images" in err
    assert "high_specificity (0.125 FP/image) needs at least 89 images" in err
    assert "high_sensitivity" not in err  # 2 FP/image: 6 images are enough
    assert not out.exists()


def test_out_inside_the_model_folder_is_refused(normals: Path, bundled_model: DetectorModel,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = bundled_model.path / "site-calibration.json"
    assert main(["calibrate", "--normals", str(normals), "--target-fp", "4",
                 "--model", str(bundled_model.path), "--out", str(out)]) == 2
    assert "inside the model folder" in capsys.readouterr().err
    assert not out.exists()


def test_no_readable_image_is_refused(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.dcm").write_bytes(b"not a DICOM file")
    assert main(["calibrate", "--normals", str(tmp_path), "--target-fp", "4",
                 "--out", str(tmp_path / "cal.json")]) == 2
    err = capsys.readouterr()
    assert "refused" in err.out and "no readable normal image" in err.err


# --------------------------------------------------------------------------------------------
# Using the file
# --------------------------------------------------------------------------------------------


def test_detect_applies_the_calibration(normals: Path, calibration_file: Path,
                                        tmp_path: Path) -> None:
    cal = read_calibration(calibration_file)
    for point in ("high_sensitivity", "site_4"):
        out = tmp_path / f"{point}.json"
        assert main(["detect", str(normals), "--calibration", str(calibration_file),
                     "--operating-point", point, "--json", str(out)]) == 0
        data = json.loads(out.read_text())
        op = data["operating_point"]
        assert op["score_threshold"] == cal.points[point].score_threshold
        assert op["source"] == (f"site calibration {calibration_file.name}, "
                                f"{cal.created.date().isoformat()}")
        assert _findings(data) / (2 * CASES) <= cal.points[point].target_fp_per_image


def test_without_calibration_the_card_is_the_source(bundled_model: DetectorModel,
                                                    normals: Path) -> None:
    image = read_image(next(normals.rglob("*.dcm")))
    op = detect([image], bundled_model).operating_point
    assert op.source == "model card"
    assert op.score_threshold == bundled_model.operating_points["balanced"].score_threshold


@pytest.fixture(scope="module")
def calibrated_client(calibration_file: Path, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[TestClient]:
    app = create_app(Settings(results_dir=tmp_path_factory.mktemp("results"),
                              calibration=calibration_file))
    with TestClient(app, base_url="http://localhost") as client:
        app.state.galacto.wait_loaded(60)
        assert app.state.galacto.ready, app.state.galacto.load_error
        yield client


def test_serve_lists_and_applies_the_calibrated_points(calibrated_client: TestClient,
                                                       calibration_file: Path,
                                                       normals: Path) -> None:
    cal = read_calibration(calibration_file)
    info = calibrated_client.get("/v1/models").json()[0]
    assert info["default_operating_point"] == "high_sensitivity"
    ops = {o["name"]: o for o in info["operating_points"]}
    assert set(ops) == {"high_sensitivity", "site_4"}
    for name, o in ops.items():
        assert o["score_threshold"] == cal.points[name].score_threshold
        assert o["max_fp_per_image"] == cal.points[name].target_fp_per_image
        assert o["fp_per_image"] == cal.points[name].fp_per_image
        assert o["source"] == cal.source
    files = [("file", (f.name, f.read_bytes(), "application/dicom"))
             for f in sorted(normals.rglob("*.dcm"))[:2]]
    r = calibrated_client.post("/v1/detect", files=files)
    assert r.status_code == 200, r.text
    assert r.json()["operating_point"]["source"] == cal.source
    assert r.json()["operating_point"]["name"] == "high_sensitivity"


def test_result_objects_name_the_threshold_source(calibration_file: Path, normals: Path,
                                                  bundled_model: DetectorModel) -> None:
    model = calibrated_model(bundled_model, calibration_file)
    files = sorted(normals.rglob("*.dcm"))[:2]
    response = detect([read_image(f) for f in files], model, "site_4")
    result = ResultInput(sources=[pydicom.dcmread(f, stop_before_pixels=True) for f in files],
                         study=response.studies[0], model=response.model,
                         operating_point=response.operating_point)
    source = read_calibration(calibration_file).source
    for ds in (build_cad_sr(result), build_tid1500(result)):
        texts = [str(e.value) for e in ds.iterall() if e.VR in ("UT", "LT", "ST", "LO")]
        assert any(source in t for t in texts), texts


def test_gateway_reads_the_shared_variable(calibration_file: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GALACTO_CALIBRATION", str(calibration_file))
    assert GatewaySettings().calibration == calibration_file
    assert Settings().calibration == calibration_file
    monkeypatch.setenv("GALACTO_GATEWAY_CALIBRATION", "/elsewhere.json")
    assert GatewaySettings().calibration == Path("/elsewhere.json")


def test_gateway_applies_the_calibration(calibration_file: Path, tmp_path: Path) -> None:
    settings = GatewaySettings(spool_dir=tmp_path / "spool", calibration=calibration_file)
    model = Gateway(settings, listen=False).model()
    assert model.operating_points_source == read_calibration(calibration_file).source
    assert set(model.operating_points) == {"high_sensitivity", "site_4"}


def test_calibration_of_another_model_is_refused(calibration_file: Path, tmp_path: Path,
                                                 bundled_model: DetectorModel, normals: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(calibration_file.read_text())
    data["model"].update(name="galacto-other", version="9.9.9", onnx_sha256="ab" * 32)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    with pytest.raises(CalibrationError) as exc:
        calibrated_model(bundled_model, other)
    message = str(exc.value)
    assert "galacto-other 9.9.9" in message
    assert f"{bundled_model.name} {bundled_model.version}" in message
    with pytest.raises(CalibrationError, match=r"galacto-other 9\.9\.9"):  # serve's start check
        check_file_for_folder(other, bundled_model.path)
    assert main(["detect", str(normals), "--calibration", str(other)]) == 2
    assert "galacto-other 9.9.9" in capsys.readouterr().err


def test_malformed_file_is_refused(tmp_path: Path, bundled_model: DetectorModel) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "galacto-site-calibration", "schema_version": 1}))
    with pytest.raises(CalibrationError, match="operating_points"):
        calibrated_model(bundled_model, bad)
    with pytest.raises(CalibrationError, match="cannot be read"):
        calibrated_model(bundled_model, tmp_path / "missing.json")
