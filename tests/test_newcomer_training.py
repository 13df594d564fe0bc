"""A newcomer's first hour with training and export (tiny synthetic data, CPU).

Validation data without lesions are refused before training and no missing checkpoint is ever
named; export refuses an existing version at once (no torch), refuses unreachable operating
points, prints no tracer warnings and changes the default model (``models/DEFAULT``) only with
``--make-default``; fine-tuning freezes parts of the network by name, mixes training folders
and starts from a checkpoint or from the bundled model folder; the checkout ignores what the
commands write.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from serving.cli import main
from serving.pipeline.model import ModelError, default_model_dir

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "galacto-small.yaml"
BUNDLED = REPO / "models" / "galacto-small" / "0.9.0"
TRUNK = "feature_extractor.trunk."
TINY = ["--set", "optim.steps_per_epoch=2", "--set", "optim.batch_size=2",
        "--set", "optim.patch_size=128", "--set", "preprocess.spacing_mm=0.4",
        "--set", "optim.warmup_steps=1", "--set", "data.val_max_images=4",
        "--set", "optim.epochs=1"]


def _synth(out: Path, cases: int, seed: int, split: str, normal: float) -> None:
    rc = main(["synth", "--out", str(out), "--cases", str(cases), "--seed", str(seed),
               "--profile", "test", "--split", split, "--normal-share", str(normal),
               "--workers", "1"])
    assert rc == 0


def _train(root: Path, run: str, *extra: str, val: str = "va") -> list[str]:
    return ["train", "--config", str(CONFIG), "--set", f"data.train={root / 'tr'}",
            "--set", f"data.val={root / val}", "--set", f"data.cache={root / 'cache'}",
            *TINY, *extra, "--run-dir", str(root / run)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Training (tr), validation (va), lesion-free validation (vn) and a second, "real"
    training set of another style; a one-epoch base run, and ``dead/best.pt``: its
    checkpoint with every classification logit at -30, a model that finds nothing."""
    root = tmp_path_factory.mktemp("newcomer")
    _synth(root / "tr", 4, 1, "training", 0.25)
    _synth(root / "va", 2, 2, "validation", 0.0)
    _synth(root / "vn", 2, 3, "validation", 1.0)
    rc = main(["synth", "--out", str(root / "real"), "--cases", "2", "--seed", "5",
               "--profile", "test", "--split", "training", "--style", "alt", "--workers", "1"])
    assert rc == 0
    assert main(_train(root, "base")) == 0
    state = torch.load(root / "base" / "best.pt", weights_only=False)
    state["model"]["classification_head.cls_logits.bias"].fill_(-30.0)
    (root / "dead").mkdir()
    torch.save(state, root / "dead" / "best.pt")
    shutil.copy(root / "base" / "config.json", root / "dead" / "config.json")
    return root


def _galacto(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "GALACTO_MODEL"})


def _models_root(where: Path) -> Path:
    """A models root holding a copy of the bundled model, named the default."""
    root = where / "models"
    shutil.copytree(BUNDLED, root / "galacto-small" / "0.4.0")
    (root / "DEFAULT").write_text("galacto-small/0.4.0\n")
    return root


def _export(tiny: Path, root: Path, version: str, *extra: str
            ) -> subprocess.CompletedProcess[str]:
    return _galacto("export", "--checkpoint", str(tiny / "dead" / "best.pt"), "--version",
                    version, "--out", str(root), "--max-val", "2", "--no-rescoring", *extra,
                    cwd=root.parent)


# --- validation without lesions ------------------------------------------------------------


def test_train_refuses_validation_data_without_lesions_up_front(
        tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(_train(tiny, "no-lesion", val="vn"))
    err = capsys.readouterr().err
    assert rc == 2
    assert "has no lesion to find" in err and f"{tiny / 'vn'}: 4 images, 0 lesions" in err
    assert not (tiny / "no-lesion").exists(), "refused before any work"


def test_a_run_without_a_finite_cpm_names_only_files_that_exist(
        tiny: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Past the check (here switched off), an epoch without a CPM writes last.pt, no best.pt,
    and the command says so instead of naming best.pt."""
    monkeypatch.setattr("training.cli._check_validation", lambda *_: None)
    assert main(_train(tiny, "nan-run", val="vn")) == 0
    out = capsys.readouterr().out
    run = tiny / "nan-run"
    assert "val CPM n/a" in out and str(run / "best.pt") not in out
    assert "best checkpoint: none" in out and str(run / "last.pt") in out
    assert (run / "last.pt").is_file() and not (run / "best.pt").exists()


# --- export --------------------------------------------------------------------------------


def test_export_refuses_an_existing_version_without_loading_torch(tiny: Path) -> None:
    root = tiny / "models-existing"
    (root / "galacto-small" / "0.0.1").mkdir(parents=True)
    script = ("import sys; from serving.cli import main; "
              f"rc = main(['export', '--checkpoint', {str(tiny / 'base' / 'best.pt')!r}, "
              f"'--version', '0.0.1', '--out', {str(root)!r}]); "
              "print(rc, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.split() == ["2", "False"], r.stdout + r.stderr
    assert "galacto-small/0.0.1 exists; pass --overwrite" in r.stderr


def test_export_refuses_unreachable_operating_points_and_keeps_the_default(
        tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that finds nothing has every operating point at score >= 1:
    refused with nothing left behind; with --allow-degenerate it is exported with a warning,
    without tracer warnings, and the default model stays the one DEFAULT names."""
    root = _models_root(tiny / "export-a")
    r = _export(tiny, root, "0.5.0")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "unreachable" in r.stderr and "--allow-degenerate" in r.stderr
    assert not (root / "galacto-small" / "0.5.0").exists()
    assert sorted(p.name for p in root.iterdir()) == ["DEFAULT", "galacto-small"]
    r = _export(tiny, root, "0.5.0", "--allow-degenerate")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warning: operating point(s)" in r.stderr and "TracerWarning" not in r.stderr
    assert "default model unchanged: galacto-small/0.4.0" in r.stdout
    assert (root / "DEFAULT").read_text() == "galacto-small/0.4.0\n"
    monkeypatch.chdir(root.parent)
    monkeypatch.delenv("GALACTO_MODEL", raising=False)
    assert default_model_dir() == root / "galacto-small" / "0.4.0", "not the highest version"


def test_export_make_default_says_and_writes_the_change(
        tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _models_root(tiny / "export-b")
    r = _export(tiny, root, "0.6.0", "--allow-degenerate", "--make-default")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "default model: galacto-small/0.4.0 -> galacto-small/0.6.0" in r.stdout
    assert (root / "DEFAULT").read_text() == "galacto-small/0.6.0\n"
    monkeypatch.chdir(root.parent)
    monkeypatch.delenv("GALACTO_MODEL", raising=False)
    assert default_model_dir() == root / "galacto-small" / "0.6.0"


def _model_folder(root: Path, version: str) -> Path:
    folder = root / "galacto-small" / version
    folder.mkdir(parents=True)
    (folder / "model.json").write_text("{}")
    return folder


def test_the_default_model_is_the_one_models_default_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled default is 0.9.0 by its marker; a marker beats a higher version;
    GALACTO_MODEL beats the marker; a bad marker is an error; without any marker the highest
    version is served, as before."""
    monkeypatch.delenv("GALACTO_MODEL", raising=False)
    assert (REPO / "models" / "DEFAULT").read_text().strip() == "galacto-small/0.9.0"
    monkeypatch.chdir(REPO)
    assert default_model_dir() == BUNDLED
    root = tmp_path / "models"
    low = _model_folder(root, "0.1.0")
    _model_folder(root, "9.0.0")
    (root / "DEFAULT").write_text("galacto-small/0.1.0\n")
    monkeypatch.chdir(tmp_path)
    assert default_model_dir() == low
    monkeypatch.setenv("GALACTO_MODEL", "/somewhere/else")
    assert default_model_dir() == Path("/somewhere/else")
    monkeypatch.delenv("GALACTO_MODEL")
    for bad, message in (("../../etc", "expected one line"), ("galacto-small/2.0.0",
                                                              "has no model.json")):
        (root / "DEFAULT").write_text(bad)
        with pytest.raises(ModelError, match=message):
            default_model_dir()
    (root / "DEFAULT").unlink()
    monkeypatch.setattr("serving.pipeline.model._model_roots", lambda: (root,))
    assert default_model_dir() == root / "galacto-small" / "9.0.0"


# --- fine-tuning ---------------------------------------------------------------------------


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def test_fine_tune_freezes_the_backbone_and_mixes_two_training_folders(
        tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """From a checkpoint, backbone frozen, synthetic and "real" folders pooled: every trunk
    weight and batch-norm statistic is unchanged, the FPN and both heads have moved."""
    rc = main(_train(tiny, "ft", "--set", f"optim.init_from={tiny / 'base' / 'best.pt'}",
                     "--set", "optim.freeze=[backbone]", "--set",
                     f"data.train=[{tiny / 'tr'}, {tiny / 'real'}]"))
    assert rc == 0
    assert "frozen: backbone (" in capsys.readouterr().out
    base = torch.load(tiny / "base" / "best.pt", weights_only=False)["model"]
    state = torch.load(tiny / "ft" / "last.pt", weights_only=False)
    changed = _changed(base, state["model"])
    assert not {k for k in changed if k.startswith(TRUNK)}, "the frozen trunk moved"
    params = [k for k, v in base.items() if not k.startswith(TRUNK) and v.is_floating_point()]
    assert len(changed) >= 0.8 * len(params), (len(changed), len(params))
    for part in ("feature_extractor.fpn.", "classification_head.", "regression_head."):
        assert any(k.startswith(part) for k in changed), part
    n_images = sum(len(json.loads((tiny / d / "dataset.json").read_text())["training"])
                   for d in ("tr", "real"))
    assert state["train_images"] == n_images
    assert state["config"]["optim"]["freeze"] == ["backbone"]


def test_fine_tune_starts_from_the_bundled_model_folder(tiny: Path) -> None:
    """optim.init_from takes models/galacto-small/0.6.0 (weights read back from its ONNX
    graph, checked against ONNX Runtime): stem and first stages frozen stay as imported, the
    third stage's convolutions train, the trunk's batch-norm statistics stay fixed."""
    from training.onnx_weights import network_from_model

    _, imported = network_from_model(BUNDLED)
    rc = main(_train(tiny, "ft-bundled", "--set", f"optim.init_from={BUNDLED}",
                     "--set", "optim.freeze=[stem, stage1, stage2]"))
    assert rc == 0
    after = torch.load(tiny / "ft-bundled" / "last.pt", weights_only=False)["model"]
    changed = _changed(imported.state_dict(), after)
    frozen = (f"{TRUNK}conv1.", f"{TRUNK}bn1.", f"{TRUNK}layer1.", f"{TRUNK}layer2.")
    assert not {k for k in changed if k.startswith(frozen)}
    assert not {k for k in changed if k.startswith(TRUNK) and "running_" in k}
    assert f"{TRUNK}layer3.0.conv1.weight" in changed


def test_freeze_names_and_folds_are_checked_before_any_work(
        tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown optim.freeze entry is refused before preprocessing; --fold replaces the
    first training folder by the fold and keeps the others (synthetic data mixed in)."""
    from training.cli import _fold_overrides
    from training.config import load_config
    from training.datasets.split import fold_dir

    rc = main(_train(tiny, "bad-freeze", "--set", "optim.freeze=[stage9]"))
    assert rc == 2 and "'stage9' match no parameter" in capsys.readouterr().err
    assert not (tiny / "bad-freeze").exists()
    cv = tiny / "cv"
    fold_dir(cv, 1).mkdir(parents=True)
    (fold_dir(cv, 1) / "dataset.json").write_text("{}")
    got = _fold_overrides(CONFIG, [f"data.train=[{cv}, {tiny / 'tr'}]"], 1)
    cfg = load_config(CONFIG, got)
    assert cfg.data.train_dirs == [str(fold_dir(cv, 1)), str(tiny / "tr")]
    assert cfg.data.val_dirs == [str(fold_dir(cv, 1))]


# --- the checkout ----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs git and a checkout")
def test_outputs_written_in_the_checkout_are_ignored_and_models_are_not() -> None:
    outputs = ["galacto-results/1.2.3/x.dcm", "galacto-spool/jobs.db", "site-calibration.json",
               "report.json", "froc.png", "results/study.json", "overlays/a.png", "demo/x",
               "runs/x/best.pt", "data/x/dataset.json", "models/.export-galacto-small-1-x/m"]
    kept = ["models/DEFAULT", "models/galacto-small/0.6.0/model.json", "docs/froc_test.png",
            "configs/galacto-small.yaml"]
    r = subprocess.run(["git", "check-ignore", "--no-index", *outputs, *kept], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == outputs
