"""Cross-validation end to end at tiny scale: a generated set exported as CSV boxes and imported
again, split into two patient-level folds, one short fine-tune per fold from the bundled model,
each exported and evaluated, and ``galacto dataset cv-summary`` over the two reports; and the
summary's refusal of files that are not evaluate reports."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from serving.cli import main
from training.datasets import load_index
from training.datasets.split import fold_dir

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "galacto-small.yaml"
BUNDLED = REPO / "models" / "galacto-small" / "0.9.0"
TINY = ["--set", "optim.steps_per_epoch=2", "--set", "optim.batch_size=2",
        "--set", "optim.patch_size=128", "--set", "preprocess.spacing_mm=0.4",
        "--set", "optim.warmup_steps=1", "--set", "data.val_max_images=4",
        "--set", "optim.epochs=1", "--set", f"optim.init_from={BUNDLED}",
        "--set", "optim.freeze=[backbone]"]


def _imported_set(root: Path) -> Path:
    """Four generated cases (every one with lesions), their boxes written as a CSV and
    imported with ``galacto dataset import csv``; returns the imported dataset folder."""
    synth = root / "synth"
    assert main(["synth", "--out", str(synth), "--cases", "4", "--seed", "21", "--profile",
                 "test", "--normal-share", "0", "--split", "training", "--workers", "1"]) == 0
    raw, _ = load_index(synth)
    rows = ["image,x1,y1,x2,y2,label"]
    rows += [",".join(map(str, [it["image"], *box, "lesion"]))
             for it in raw["training"] for box in it["boxes"]]
    boxes = root / "boxes.csv"
    boxes.write_text("\n".join(rows) + "\n")
    out = root / "imported"
    assert main(["dataset", "import", "csv", str(boxes), "--images", str(synth), "--map",
                 "lesion=filling_defect", "--out", str(out)]) == 0
    return out


def _fold(data: Path, root: Path, k: int) -> Path:
    """Fine-tune on fold ``k``, export it under ``root/models`` and evaluate it on the fold's
    validation patients; returns the evaluate report."""
    run = root / f"run-{k}"
    assert main(["train", "--config", str(CONFIG), "--set", f"data.train={data}", "--set",
                 f"data.cache={root / 'cache'}", *TINY, "--fold", str(k),
                 "--run-dir", str(run)]) == 0
    checkpoint = run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"
    models = root / "models"
    assert main(["export", "--checkpoint", str(checkpoint), "--version", f"0.0.{k}", "--out",
                 str(models), "--max-val", "2", "--no-rescoring", "--allow-degenerate"]) == 0
    report = root / f"eval-fold{k}.json"
    assert main(["evaluate", "--model", str(models / "galacto-small" / f"0.0.{k}"), "--data",
                 str(fold_dir(data, k)), "--split", "validation", "--bootstrap", "200",
                 "--out", str(report)]) == 0
    return report


def test_two_fold_loop_on_an_imported_set_and_its_summary(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _imported_set(tmp_path)
    assert json.loads((data / "dataset.json").read_text())["meta"]["format"] == "csv"
    assert main(["dataset", "split", str(data), "--by", "patient", "--folds", "2"]) == 0
    reports = [_fold(data, tmp_path, k) for k in (0, 1)]
    assert not (REPO / "models" / "galacto-small" / "0.0.0").exists()
    capsys.readouterr()
    summary = tmp_path / "cv.json"
    rc = main(["dataset", "cv-summary", *map(str, reports), "--json", str(summary)])
    out = capsys.readouterr().out
    assert rc == 0
    got = json.loads(summary.read_text())
    raws: list[dict[str, Any]] = [json.loads(r.read_text()) for r in reports]
    for fold, raw in zip(got["folds"], raws, strict=True):
        froc = raw["froc"]
        j = froc["fp_rates"].index(1.0)
        assert (fold["images"], fold["lesions"]) == (raw["images"], raw["lesions"])
        assert fold["cpm"] == froc["cpm"] and fold["cpm_ci"] == froc["ci"]["cpm"]
        assert fold["sensitivity"] == froc["sensitivity"][j]
        assert fold["sensitivity_ci"] == froc["ci"]["sensitivity"][j]
        assert f"{froc['cpm']:.3f} [{froc['ci']['cpm'][0]:.3f}" in out
    across = got["across_folds"]
    cpms = [raw["froc"]["cpm"] for raw in raws]
    assert across["images"] == sum(raw["images"] for raw in raws)
    assert across["cpm"]["mean"] == pytest.approx(statistics.fmean(cpms))
    assert across["cpm"]["sd"] == pytest.approx(statistics.stdev(cpms))
    assert f"{statistics.fmean(cpms):.3f} ± {statistics.stdev(cpms):.3f}" in out


def test_cv_summary_refuses_what_is_not_an_evaluate_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    note = tmp_path / "note.json"
    note.write_text(json.dumps({"images": 3, "froc": {"cpm": 0.5}}))
    text = tmp_path / "notes.txt"
    text.write_text("CPM 0.7\n")
    for path, message in ((note, "not a report of galacto evaluate --out"),
                          (text, "cannot read a JSON report"),
                          (tmp_path / "missing.json", "cannot read a JSON report")):
        assert main(["dataset", "cv-summary", str(path), "--json",
                     str(tmp_path / "cv.json")]) == 2
        err = capsys.readouterr().err
        assert f"{path}: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "cv.json").exists()
