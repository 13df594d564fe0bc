"""Bring your own data: the dataset.json schema and ``galacto dataset check``, every import
format round-tripping a generated study, patient-level folds, and bootstrap intervals."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from serving.cli import main
from serving.outputs.cad_sr import build_cad_sr
from serving.outputs.common import ResultInput
from serving.outputs.gsps import build_gsps
from serving.outputs.tid1500 import build_tid1500
from serving.pipeline.findings import (
    FindingOut,
    ImageOut,
    ModelOut,
    OperatingPointOut,
    StudyOut,
)
from training.bootstrap import bootstrap_froc, froc_of_weights, patient_counts
from training.datasets import DatasetError, load_index, patient_key, validate_index
from training.datasets.formats.graphics import graphic_box
from training.datasets.split import fold_dir
from training.metrics import froc

Boxes = dict[str, list[list[float]]]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four tiny generated cases (8 images, every case with lesions), half of them test."""
    out = tmp_path_factory.mktemp("byod") / "synth"
    assert main(["synth", "--out", str(out), "--cases", "4", "--seed", "11", "--profile", "test",
                 "--normal-share", "0", "--split", "training=0.5,test=0.5",
                 "--workers", "1"]) == 0
    return out


def _items(root: Path) -> list[dict[str, Any]]:
    raw, _ = load_index(root)
    return [it for s in ("training", "validation", "test") for it in raw[s]]


def _truth(root: Path, mimics: bool = False) -> Boxes:
    """SOP Instance UID -> sorted lesion boxes (and mimic boxes when asked)."""
    out: Boxes = {}
    for it in _items(root):
        boxes = list(it["boxes"]) + ([m["box"] for m in it["mimics"]] if mimics else [])
        out[it["sop_instance_uid"]] = sorted(boxes)
    return out


def _imported(out: Path, mimics: bool = False) -> Boxes:
    return _truth(out, mimics)


# --------------------------------------------------------------------------- schema, check


def test_schema_names_every_bad_item_and_what_was_expected(synth: Path) -> None:
    raw = json.loads((synth / "dataset.json").read_text())
    raw["test"][0]["mimics"] = [[1, 2, 3, 4]]
    raw["test"][1]["boxes"] = [[5, 5, 3, 9]]
    raw["train"] = []
    with pytest.raises(DatasetError) as err:
        validate_index(raw)
    problems = err.value.problems
    image = raw["test"][0]["image"]
    assert f'test[0] ({image}).mimics[0]: expected an object {{"kind"' in problems[0]
    assert any("test[1]" in p and "boxes[0]" in p and "x1 < x2" in p for p in problems)
    assert any(p.startswith("train: unknown top-level key") for p in problems)
    assert len(problems) == 3


def test_evaluate_and_train_refuse_a_bad_dataset_without_traceback(
        synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    raw = json.loads((synth / "dataset.json").read_text())
    raw["test"][0]["mimics"] = [raw["test"][0]["boxes"][0]]  # a plain box, not an object
    (bad / "dataset.json").write_text(json.dumps(raw))
    rc = main(["evaluate", "--model", "models/galacto-small/0.4.0", "--data", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "mimics[0]: expected an object" in err and "Traceback" not in err
    rc = main(["train", "--config", "configs/galacto-small.yaml", "--set",
               f"data.train={bad}", "--set", f"data.val={bad}", "--run-dir",
               str(tmp_path / "run")])
    assert rc == 2 and "mimics[0]: expected an object" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_check_counts_each_split_and_exits_1_on_a_box_outside_the_image(
        synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "check.json"
    assert main(["dataset", "check", str(synth), "--json", str(report)]) == 0
    got = json.loads(report.read_text())
    raw, index = load_index(synth)
    for split in ("training", "test"):
        items = raw[split]
        s = got["splits"][split]
        assert s["images"] == len(items)
        assert s["patients"] == len({it["case_id"] for it in items})
        assert s["studies"] == len({it["study_instance_uid"] for it in items})
        assert s["lesions"] == sum(len(it["boxes"]) for it in items)
        assert sum(s["mimics_by_kind"].values()) == sum(len(it["mimics"]) for it in items)
        assert sum(s["views"].values()) == len(items) == sum(s["vendors"].values())
    assert got["errors"] == []
    assert "dataset check" in capsys.readouterr().out

    bad = tmp_path / "bad"
    bad.mkdir()
    for split in ("training", "test"):
        for it in raw[split]:
            it["image"] = str(synth / it["image"])  # absolute paths work too
    raw["test"][0]["boxes"][0] = [1, 1, 10_000, 20]
    raw["test"][1]["image"] = "missing.dcm"
    (bad / "dataset.json").write_text(json.dumps(raw))
    assert main(["dataset", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "boxes[0]: [1, 1, 10000, 20] extends outside the image" in out
    assert "test[1] (missing.dcm).image:" in out
    assert index.test  # the original folder is untouched


# --------------------------------------------------------------------------- import round trips


def _import(fmt: str, src: Path, images: Path, out: Path, *extra: str) -> None:
    assert main(["dataset", "import", fmt, str(src), "--images", str(images), "--out",
                 str(out), *extra]) == 0
    assert main(["dataset", "check", str(out)]) == 0


def test_csv_round_trip_by_path_and_by_uid(synth: Path, tmp_path: Path) -> None:
    src = tmp_path / "boxes.csv"
    with src.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "x1", "y1", "x2", "y2", "label"])
        for n, it in enumerate(_items(synth)):
            ref = it["image"] if n % 2 else it["sop_instance_uid"]
            for b in it["boxes"]:
                w.writerow([ref, *b, "lesion"])
            for m in it["mimics"]:
                w.writerow([ref, *m["box"], m["kind"]])
        w.writerow(["nowhere.dcm", 1, 1, 5, 5, "lesion"])
    out = tmp_path / "csv"
    _import("csv", src, synth, out, "--map", "lesion=filling_defect")
    assert _imported(out, mimics=True) == _truth(synth, mimics=True)
    report = json.loads((out / "import_report.json").read_text())
    assert len(report["skipped"]) == 1
    assert report["skipped"][0]["origin"].startswith("boxes.csv row ")
    assert "nowhere.dcm" in report["skipped"][0]["reason"]
    imported = _items(out)
    assert all((out / it["image"]).resolve().is_file() for it in imported)
    assert all(it["patient_id"] for it in imported)


def test_coco_round_trip_with_category_map(synth: Path, tmp_path: Path) -> None:
    items = _items(synth)
    cats = {"defect": 1, "bubble": 2, "cyst": 3, "extravasation": 4}
    anns: list[dict[str, Any]] = []
    for n, it in enumerate(items):
        marks = [("defect", b) for b in it["boxes"]]
        marks += [("bubble" if m["kind"] == "air_bubble" else m["kind"], m["box"])
                  for m in it["mimics"]]
        for name, (x1, y1, x2, y2) in marks:
            anns.append({"id": len(anns) + 1, "image_id": n, "category_id": cats[name],
                         "bbox": [x1, y1, x2 - x1, y2 - y1]})
    coco = {"images": [{"id": n, "file_name": it["image"]} for n, it in enumerate(items)],
            "categories": [{"id": v, "name": k} for k, v in cats.items()], "annotations": anns}
    src = tmp_path / "coco.json"
    src.write_text(json.dumps(coco))
    out = tmp_path / "coco"
    _import("coco", src, synth, out, "--map", "defect=filling_defect",
            "--map", "bubble=air_bubble")
    assert _imported(out, mimics=True) == _truth(synth, mimics=True)
    kinds = {m["kind"] for it in _items(out) for m in it["mimics"]}
    assert kinds <= {"air_bubble", "cyst", "extravasation"}


def _result(root: Path, study_items: list[dict[str, Any]]) -> ResultInput:
    """A detection result whose findings are the true boxes of one study."""
    sources = [pydicom.dcmread(root / it["image"], stop_before_pixels=True)
               for it in study_items]
    images = []
    for i, (it, ds) in enumerate(zip(study_items, sources, strict=True)):
        sp = float(ds.PixelSpacing[0])
        findings = [FindingOut(
            id=f"{i}.{j}", label="filling_defect", score=0.9, operating_points=["balanced"],
            box_px=b, box_mm=[v * sp for v in b],
            center_px=[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2],
            center_mm=[(b[0] + b[2]) / 2 * sp, (b[1] + b[3]) / 2 * sp],
            size_mm=[(b[2] - b[0]) * sp, (b[3] - b[1]) * sp]) for j, b in enumerate(it["boxes"])]
        images.append(ImageOut(
            index=i, sop_instance_uid=str(ds.SOPInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            study_instance_uid=str(ds.StudyInstanceUID), laterality=it["laterality"],
            view=it["view"], rows=int(ds.Rows), cols=int(ds.Columns), spacing_mm=[sp, sp],
            spacing_source="PixelSpacing", findings=findings, timings_ms={}))
    study = StudyOut(study_instance_uid=str(sources[0].StudyInstanceUID), images=images,
                     fused=[])
    return ResultInput(sources=sources, study=study,
                       model=ModelOut(name="galacto-small", version="0.4.0"),
                       operating_point=OperatingPointOut(name="balanced", score_threshold=0.5))


def _results(root: Path) -> list[ResultInput]:
    studies: dict[str, list[dict[str, Any]]] = {}
    for it in _items(root):
        studies.setdefault(it["study_instance_uid"], []).append(it)
    return [_result(root, items) for items in studies.values()]


@pytest.mark.parametrize("kind", ["tid1500", "cad"])
def test_sr_round_trip_from_our_own_reports(synth: Path, tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "sr"
    folder.mkdir()
    build = build_tid1500 if kind == "tid1500" else build_cad_sr
    for n, result in enumerate(_results(synth)):
        build(result).save_as(folder / f"{n}.dcm", enforce_file_format=True)
    (folder / "notes.txt").write_text("not DICOM")
    out = tmp_path / "out"
    _import("sr", folder, synth, out)
    assert _imported(out) == _truth(synth)
    report = json.loads((out / "import_report.json").read_text())
    assert [s["origin"] for s in report["skipped"]] == ["notes.txt"]


def test_gsps_round_trip_from_our_own_presentation_states(synth: Path, tmp_path: Path) -> None:
    folder = tmp_path / "gsps"
    folder.mkdir()
    for n, result in enumerate(_results(synth)):
        for k, ps in enumerate(build_gsps(result)):
            ps.save_as(folder / f"{n}_{k}.dcm", enforce_file_format=True)
    out = tmp_path / "out"
    _import("gsps", folder, synth, out)
    assert _imported(out) == _truth(synth)


def test_graphics_bounds() -> None:
    assert graphic_box("CIRCLE", [10, 10, 13, 14]) == (5, 5, 15, 15)
    # an ellipse rotated by 90 degrees: major axis vertical
    assert graphic_box("ELLIPSE", [10, 0, 10, 20, 7, 10, 13, 10]) == (7, 0, 13, 20)
    assert graphic_box("POLYLINE", [1, 2, 5, 2, 5, 9, 1, 9, 1, 2]) == (1, 2, 5, 9)
    with pytest.raises(ValueError, match="no extent"):
        graphic_box("POINT", [1, 2])


def test_unmapped_labels_are_listed_not_guessed(synth: Path, tmp_path: Path) -> None:
    src = tmp_path / "b.csv"
    it = _items(synth)[0]
    src.write_text("image,x1,y1,x2,y2,label\n"
                   f"{it['image']},1,1,5,5,mystery\n")
    out = tmp_path / "out"
    _import("csv", src, synth, out)
    report = json.loads((out / "import_report.json").read_text())
    assert "label 'mystery' is not mapped" in report["skipped"][0]["reason"]
    assert report["lesions"] == 0 and report["images"] == len(_items(synth))


# --------------------------------------------------------------------------- folds


def test_split_keeps_each_patient_on_one_side(synth: Path, tmp_path: Path) -> None:
    root = tmp_path / "split"
    _import("csv", _truth_csv(synth, tmp_path), synth, root)
    assert main(["dataset", "split", str(root), "--by", "patient", "--folds", "2",
                 "--seed", "3"]) == 0
    raw, index = load_index(root)
    assert index.folds is not None and index.folds.k == 2
    seen: dict[str, int] = {}
    for it in raw["training"]:
        assert seen.setdefault(patient_key(it), it["fold"]) == it["fold"]
    for k in range(2):
        fraw, _ = load_index(fold_dir(root, k))
        train = {patient_key(it) for it in fraw["training"]}
        val = {patient_key(it) for it in fraw["validation"]}
        assert val and train and not train & val
        assert all((fold_dir(root, k) / it["image"]).resolve().is_file()
                   for it in fraw["training"] + fraw["validation"])
    first = (root / "dataset.json").read_text()
    assert main(["dataset", "split", str(root), "--folds", "2", "--seed", "3"]) == 0
    assert (root / "dataset.json").read_text() == first


def _truth_csv(synth: Path, tmp_path: Path) -> Path:
    src = tmp_path / "truth.csv"
    rows = ["image,x1,y1,x2,y2,label"]
    rows += [",".join(map(str, [it["image"], *b, "filling_defect"]))
             for it in _items(synth) for b in it["boxes"]]
    src.write_text("\n".join(rows) + "\n")
    return src


# --------------------------------------------------------------------------- bootstrap


def _tiny_set(patients: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                list[str]]:
    """``patients`` patients of two images, one lesion each, noisy predictions."""
    rng = np.random.default_rng(seed)
    truths, preds, names = [], [], []
    for p in range(patients):
        for v in range(2):
            truths.append({"image": f"p{p}_{v}", "boxes": [[10, 10, 20, 20]]})
            hit = rng.random() < 0.7
            boxes = ([[11, 11, 19, 19]] if hit else []) + [[50, 50, 60, 60]] * 2
            scores = ([float(rng.uniform(0.3, 1))] if hit else []) + list(rng.uniform(0, 0.8, 2))
            preds.append({"boxes": np.array(boxes, float).reshape(-1, 4),
                          "scores": np.array(scores)})
            names.append(f"p{p}")
    return truths, preds, names


def test_bootstrap_intervals_hold_the_estimate_and_shrink_with_patients() -> None:
    rates = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
    widths = []
    for n in (10, 80):
        truths, preds, names = _tiny_set(n, seed=n)
        point = froc(truths, preds, rates)
        ci = bootstrap_froc(truths, preds, names, rates, resamples=400, seed=0)
        assert ci["patients"] == n
        for (lo, hi), s in zip(ci["sensitivity"], point.sensitivity_at_rates, strict=True):
            assert lo <= s + 1e-9 and s - 1e-9 <= hi
        assert ci["cpm"][0] <= point.cpm <= ci["cpm"][1]
        widths.append(ci["cpm"][1] - ci["cpm"][0])
        again = bootstrap_froc(truths, preds, names, rates, resamples=400, seed=0)
        assert again == ci
    assert widths[1] < widths[0] * 0.6


def test_unit_weights_reproduce_the_froc() -> None:
    rates = (0.125, 0.5, 2.0)
    truths, preds, names = _tiny_set(12, seed=4)
    counts = patient_counts(truths, preds, names)
    got = froc_of_weights(counts, np.ones((1, 12)), rates)[0]
    assert np.allclose(got, froc(truths, preds, rates).sensitivity_at_rates)


def test_train_fold_needs_the_folds_and_uses_them(synth: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from training.cli import _fold_overrides

    config = Path("configs/galacto-small.yaml")
    rc = main(["train", "--config", str(config), "--set", f"data.train={synth}", "--fold", "0",
               "--run-dir", str(tmp_path / "run")])
    assert rc == 2 and "make the folds with galacto dataset split" in capsys.readouterr().err
    root = tmp_path / "cv"
    _import("csv", _truth_csv(synth, tmp_path), synth, root)
    assert main(["dataset", "split", str(root), "--folds", "2"]) == 0
    got = _fold_overrides(config, [f"data.train={root}"], 1)
    assert got[-2:] == [f"data.train={fold_dir(root, 1)}", f"data.val={fold_dir(root, 1)}"]
