"""``galacto info``: exit statuses, table and JSON output (through ``serving.cli.main`` and one
real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.uid import JPEG2000Lossless

from serving.cli import main
from tests.dicomgen import make_dataset, to_bytes, write

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def accepted(tmp_path: Path) -> Path:
    ds = make_dataset(
        pixel_spacing=None,
        imager_pixel_spacing=(0.1, 0.1),
        magnification=1.25,
        laterality="R",
        view="MLO",
        patient_orientation=("P", "FL"),
    )
    path = tmp_path / "accepted.dcm"
    path.write_bytes(to_bytes(ds, JPEG2000Lossless))
    return path


@pytest.fixture
def truncated(tmp_path: Path) -> Path:
    ds = make_dataset()
    ds.PixelData = ds.PixelData[:100]
    return write(ds, tmp_path / "truncated.dcm")


def test_accepted_file_table(accepted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(accepted)]) == 0
    out = capsys.readouterr().out
    assert "accepted" in out
    assert "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor" in out
    assert "0.08 x 0.08 mm" in out
    assert "laterality" in out and " R " in out
    assert "MLO" in out
    assert "P\\FL" in out
    assert "1.2.840.10008.1.2.4.90" in out and "JPEG 2000" in out
    assert "MG For Presentation" in out
    assert "64 x 48" in out


def test_rejected_file_table(
    accepted: Path, truncated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", str(accepted), str(truncated)]) == 1
    out = capsys.readouterr().out
    assert "accepted" in out and "rejected" in out
    assert "truncated_pixel_data" in out
    assert "PixelData (7FE0,0010)" in out
    assert "100 bytes" in out


def test_not_dicom_is_a_rejection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n")
    assert main(["info", str(path)]) == 1
    assert "not_dicom" in capsys.readouterr().out


def test_json_output(accepted: Path, truncated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json", str(accepted), str(truncated)]) == 1
    reports = json.loads(capsys.readouterr().out)
    assert [r["accepted"] for r in reports] == [True, False]
    image = reports[0]["image"]
    assert image["spacing_source"] == "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
    assert image["spacing_mm"] == pytest.approx([0.08, 0.08])
    assert (image["laterality"], image["view"]) == ("R", "MLO")
    assert image["patient_orientation"] == ["P", "FL"]
    assert (image["pixel_min"], image["pixel_max"]) == (0.0, 4095.0)
    assert reports[1]["error"]["code"] == "truncated_pixel_data"
    assert reports[1]["error"]["attribute"] == "PixelData (7FE0,0010)"
    assert reports[1]["path"] == str(truncated)


def test_allow_missing_spacing_and_max_pixels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(make_dataset(pixel_spacing=None), tmp_path / "nospacing.dcm")
    assert main(["info", str(path)]) == 1
    assert "missing_spacing" in capsys.readouterr().out
    assert main(["info", "--allow-missing-spacing", str(path)]) == 0
    assert "none" in capsys.readouterr().out
    assert main(["info", "--allow-missing-spacing", "--max-pixels", "100", str(path)]) == 1
    assert "image_too_large" in capsys.readouterr().out


def test_missing_path_is_a_usage_error(
    tmp_path: Path, accepted: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.dcm"
    assert main(["info", str(accepted), str(missing)]) == 2
    captured = capsys.readouterr()
    assert f"{missing}: no such file or folder" in captured.err
    assert captured.out == ""


def test_folder_without_dicom_is_a_usage_error(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("not DICOM")
    assert main(["info", str(tmp_path)]) == 2
    assert "no DICOM files" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["info"], ["info", "--max-pixels", "0", "x.dcm"]])
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_real_subprocess(accepted: Path, truncated: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "serving.cli", "info"]
    done = subprocess.run(
        [*command, str(accepted)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "ImagerPixelSpacing" in done.stdout and "MLO" in done.stdout
    done = subprocess.run(
        [*command, "--json", str(truncated)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)[0]["error"]["code"] == "truncated_pixel_data"
    done = subprocess.run(
        [*command, str(tmp_path / "absent.dcm")], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 2
    assert "no such file or folder" in done.stderr


def test_a_tomosynthesis_volume_is_described_and_projections_are_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``galacto info`` reads a volume as ``detect`` does (its frames, heights and central
    frame), and raw projections get the volume reader's refusal."""
    from tests.dbt_files import BREAST_PROJECTION_PRESENTATION, make_bto

    volume, projection = tmp_path / "v.dcm", tmp_path / "p.dcm"
    volume.write_bytes(to_bytes(make_bto(frames=6, rows=64, cols=48)))
    projection.write_bytes(to_bytes(make_bto(sop_class=BREAST_PROJECTION_PRESENTATION)))
    assert main(["info", "--json", str(volume)]) == 0
    [report] = json.loads(capsys.readouterr().out)
    assert report["accepted"] and report["image"]["rows"] == 64
    assert report["volume"]["number_of_frames"] == 6 and report["volume"]["frame_shown"] == 4
    assert main(["info", str(volume), str(projection)]) == 1
    text = capsys.readouterr().out.replace("\n", " ")
    assert "6 frames" in text and "send the reconstructed volume" in " ".join(text.split())
