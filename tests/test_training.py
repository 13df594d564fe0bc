"""Training, resume, export and evaluation end to end on tiny synthetic data (CPU)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from serving.pipeline.model import ModelError, load_model
from training.config import AugmentConfig, MatcherConfig, ModelConfig, load_config
from training.data import CachedImage, PatchSampler
from training.loss import DetectionLoss, targets_from_numpy
from training.model import build_anchor_generator, build_network, set_prior_bias

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "galacto-small.yaml"
TINY = ["--set", "optim.steps_per_epoch=2", "--set", "optim.batch_size=2",
        "--set", "optim.patch_size=128", "--set", "preprocess.spacing_mm=0.4",
        "--set", "optim.warmup_steps=1", "--set", "data.val_max_images=4"]


def _galacto(*args: str, cwd: Path, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny training and validation sets (test profile: 256 x 192 px at 0.4 mm)."""
    root = tmp_path_factory.mktemp("train")
    for out, seed, split, cases in (("tr", "1", "training", "6"), ("va", "2", "validation", "3")):
        r = _galacto("synth", "--out", out, "--cases", cases, "--seed", seed, "--profile", "test",
                     "--split", split, "--normal-share", "0.2", cwd=root)
        assert r.returncode == 0, r.stderr
    return root


def _train_args(run: str, epochs: int) -> list[str]:
    return ["train", "--config", str(CONFIG), "--set", "data.train=tr", "--set", "data.val=va",
            "--set", "data.cache=cache", "--set", f"optim.epochs={epochs}", *TINY,
            "--run-dir", run]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_config_overrides_and_errors(tmp_path: Path) -> None:
    cfg = load_config(CONFIG, ["optim.lr=0.01", "model.layers=[2,2,2,2]"])
    assert cfg.optim.lr == 0.01 and cfg.model.layers == [2, 2, 2, 2]
    assert cfg.model.feature_map_scales == [1, 2, 4]
    with pytest.raises(ValueError, match=r"optim\.lrr"):
        load_config(CONFIG, ["optim.lrr=1"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(CONFIG, ["optim.lr"])
    with pytest.raises(ValueError, match="4 values"):
        load_config(CONFIG, ["model.widths=[8,16]"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(bad)


def _marked_image(size: int = 1024) -> CachedImage:
    """A flat breast with one lesion (value 0.9) and one mimic (value 0.7), 12 px squares, far
    apart; the rest of the image is 0.3."""
    array = np.full((size, size), 0.3, np.float32)
    array[100:112, 100:112] = 0.9
    array[900:912, 900:912] = 0.7
    return CachedImage(array=array, valid=(size, size),
                       boxes=np.array([[100, 100, 112, 112]], np.float32),
                       mimics=np.array([[900, 900, 912, 912]], np.float32),
                       transform=None, item={})  # type: ignore[arg-type]


def test_patch_sampler_centres_hard_negatives_on_mimics() -> None:
    """With augmentation off a patch is a plain crop: mimic_fraction=1 puts the mimic in every
    patch (and the lesion in none, as no box); mimic_fraction=0 rarely shows it; the shares
    of lesion and mimic patches follow the fractions."""
    plain = AugmentConfig(flip_p=0, rot90_p=0, zoom_p=0, gamma_range=(1, 1),
                          contrast_range=(1, 1), shift_range=0, noise_std=0, blur_p=0)
    rng = np.random.default_rng(0)
    img = _marked_image()
    only_mimics = PatchSampler([img], 128, 0.0, plain, seed=0, mimic_fraction=1.0)
    for _ in range(50):
        patch, boxes, _ = only_mimics.sample(rng)
        assert np.isclose(patch, 0.7).sum() >= 72 and len(boxes) == 0
    mixed = PatchSampler([img], 128, 0.25, plain, seed=0, mimic_fraction=0.5)
    kinds = []
    for _ in range(400):
        patch, boxes, _ = mixed.sample(rng)
        kinds.append("lesion" if len(boxes) else
                     "mimic" if np.isclose(patch, 0.7).any() else "other")
    share = {k: kinds.count(k) / len(kinds) for k in ("lesion", "mimic", "other")}
    assert 0.18 < share["lesion"] < 0.34 and 0.42 < share["mimic"] < 0.6, share
    with pytest.raises(ValueError, match="at most 1"):
        PatchSampler([img], 128, 0.6, plain, seed=0, mimic_fraction=0.5)
    with pytest.raises(ValueError, match="mimic_patch_fraction"):
        load_config(CONFIG, ["optim.positive_patch_fraction=0.7",
                             "optim.mimic_patch_fraction=0.5"])


def test_patch_sampler_labels_mimics_with_their_own_class() -> None:
    """With mimic classes named, a patch centred on an air bubble carries its box with the
    air_bubble class index, a lesion patch carries class 0, and mimic kinds the model does
    not name (here cyst) stay background."""
    plain = AugmentConfig(flip_p=0, rot90_p=0, zoom_p=0, gamma_range=(1, 1),
                          contrast_range=(1, 1), shift_range=0, noise_std=0, blur_p=0)
    rng = np.random.default_rng(1)
    img = _marked_image()
    img.item = {"mimics": [{"kind": "air_bubble", "box": [0, 0, 1, 1]}]}
    names = ("filling_defect", "cyst", "air_bubble")
    only_mimics = PatchSampler([img], 128, 0.0, plain, seed=0, mimic_fraction=1.0,
                               class_names=names)
    for _ in range(20):
        _, boxes, labels = only_mimics.sample(rng)
        assert labels.tolist() == [2]
        np.testing.assert_allclose(boxes[0, 2:] - boxes[0, :2], [12, 12])
    only_lesions = PatchSampler([img], 128, 1.0, plain, seed=0, class_names=names)
    assert only_lesions.sample(rng)[2].tolist() == [0]
    img.item = {"mimics": [{"kind": "extravasation", "box": [0, 0, 1, 1]}]}
    unnamed = PatchSampler([img], 128, 0.0, plain, seed=0, mimic_fraction=1.0,
                           class_names=names)
    assert unnamed.sample(rng)[2].tolist() == []
    with pytest.raises(ValueError, match="start with 'filling_defect'"):
        load_config(CONFIG, ["model.num_classes=2", "model.class_names=[air_bubble,cyst]"])


def test_widening_the_classes_keeps_the_lesion_output() -> None:
    """Fine-tuning a one-class network into one with mimic classes copies every weight; the
    lesion logits of the widened network equal the old network's exactly, and the new
    classes start at the prior."""
    from training.train import _extend_classes

    torch.manual_seed(0)
    old_cfg = ModelConfig()
    new_cfg = ModelConfig(num_classes=3, class_names=["filling_defect", "air_bubble", "cyst"])
    old, new = build_network(old_cfg), build_network(new_cfg)
    set_prior_bias(new)
    a = len(old_cfg.base_anchor_shapes)
    new.load_state_dict(_extend_classes(old.state_dict(), new.state_dict(), 1, 3, a))
    old.eval()
    new.eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        lo, ln = old(x)["classification"][0], new(x)["classification"][0]
    b, _, h, w = lo.shape
    ln = ln.view(b, a, 3, h, w)
    torch.testing.assert_close(ln[:, :, 0], lo.view(b, a, h, w))
    assert torch.all(new.classification_head.cls_logits.bias.view(a, 3)[:, 1:] < -4)


def test_loss_handles_images_without_lesions_and_learns() -> None:
    """A batch mixing lesion and lesion-free patches trains; an all-negative batch gives a
    finite classification loss and zero box loss; a few steps reduce the loss."""
    torch.manual_seed(0)
    cfg = ModelConfig()
    net = build_network(cfg)
    set_prior_bias(net)
    anchors_gen = build_anchor_generator(cfg)
    loss_fn = DetectionLoss(MatcherConfig(), len(cfg.base_anchor_shapes))
    x = torch.randn(3, 1, 128, 128)
    boxes = [np.array([[40, 40, 60, 62]], np.float32), np.zeros((0, 4), np.float32),
             np.array([[10, 80, 30, 96]], np.float32)]
    tb, tl = targets_from_numpy(boxes, [np.zeros(len(b)) for b in boxes], torch.device("cpu"))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    first = last = None
    for _ in range(8):
        head = net(x)
        losses = loss_fn(head, anchors_gen(x, head["classification"]), tb, tl)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        first = first if first is not None else float(losses["loss"])
        last = float(losses["loss"])
    assert last is not None and first is not None and last < first
    empty = [torch.zeros((0, 4))] * 3
    labels = [torch.zeros(0, dtype=torch.int64)] * 3
    head = net(x)
    neg = loss_fn(head, anchors_gen(x, head["classification"]), empty, labels)
    assert torch.isfinite(neg["cls"]) and float(neg["box"]) == 0.0
    neg["loss"].backward()


def test_train_resume_export_evaluate(workdir: Path) -> None:
    r = _galacto(*_train_args("run", 1), cwd=workdir)
    assert r.returncode == 0, r.stderr[-3000:]
    run = workdir / "run"
    for name in ("best.pt", "last.pt", "metrics.csv", "config.json", "curves.png", "froc.png"):
        assert (run / name).is_file(), name
    assert (run / "tb").is_dir()
    state = torch.load(run / "last.pt", weights_only=False)
    assert state["dataset_fingerprint"] and state["versions"]["torch"] and state["git_commit"]
    assert state["config"]["optim"]["epochs"] == 1

    r = _galacto("train", "--resume", "run", "--set", "optim.epochs=2", cwd=workdir)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _rows(run / "metrics.csv")
    assert [row["epoch"] for row in rows] == ["0", "1"], "resume continues at the next epoch"

    # a model trained for two tiny epochs finds nothing: its operating points are unreachable
    r = _galacto("export", "--checkpoint", "run/best.pt", "--version", "0.0.1", "--out",
                 "models", "--allow-degenerate", cwd=workdir)
    assert r.returncode == 0, r.stderr[-3000:]
    folder = workdir / "models" / "galacto-small" / "0.0.1"
    card = json.loads((folder / "model.json").read_text())
    assert card["export_parity"]["max_abs_diff"] < 1e-3
    assert set(card["operating_points"]) == {"high_specificity", "balanced", "high_sensitivity"}
    assert "NOT FOR CLINICAL DIAGNOSIS" in card["intended_use"]
    model = load_model(folder)
    assert model.default_operating_point == "balanced"
    assert model.decode.test_time_flips == ()

    r = _galacto("export", "--checkpoint", "run/best.pt", "--version", "0.0.2", "--out",
                 "models", "--test-time-flips", "rows,cols", "--input-spacing-mm", "0.35",
                 "--allow-degenerate", cwd=workdir)
    assert r.returncode == 0, r.stderr[-3000:]
    flipped = load_model(workdir / "models" / "galacto-small" / "0.0.2")
    assert flipped.decode.test_time_flips == ("rows", "cols")
    # served at another spacing than trained: preprocess says what serving does, the
    # training section keeps both
    trained_at = card["preprocess"]["spacing_mm"]
    assert flipped.preprocess.spacing_mm == 0.35 != trained_at
    assert flipped.card["training"]["input_spacing_mm"] == {"trained": trained_at,
                                                             "served": 0.35}
    assert flipped.card["training"]["config"]["preprocess"]["spacing_mm"] == trained_at
    assert "input_spacing_mm" not in card["training"]
    r = _galacto("export", "--checkpoint", "run/best.pt", "--version", "0.0.3", "--out",
                 "models", "--input-spacing-mm", "5", cwd=workdir)
    assert r.returncode != 0 and "--input-spacing-mm 5:" in r.stderr, r.stderr[-2000:]
    r = _galacto("export", "--checkpoint", "run/best.pt", "--version", "0.0.3", "--out",
                 "models", "--test-time-flips", "diagonal", cwd=workdir)
    assert r.returncode != 0 and "--test-time-flips 'diagonal'" in r.stderr, r.stderr[-2000:]
    assert not (workdir / "models" / "galacto-small" / "0.0.3").exists()

    r = _galacto("evaluate", "--model", str(folder), "--data", "va", "--split", "validation",
                 "--out", "report.json", "--plot", "froc.png", cwd=workdir)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((workdir / "report.json").read_text())
    assert report["images"] == 6 and "froc" in report and "ap" in report
    assert (workdir / "froc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    broken = workdir / "models" / "broken"
    shutil.copytree(folder, broken)
    card["outputs"]["classification"] = ["cls_0"]
    (broken / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="do not match the graph outputs"):
        load_model(broken)
    (broken / "model.onnx").write_bytes(b"junk")
    with pytest.raises(ModelError, match="sha256"):
        load_model(broken)
    (broken / "model.json").unlink()
    with pytest.raises(ModelError, match="model card missing"):
        load_model(broken)


def test_cpu_runs_repeat_exactly(workdir: Path) -> None:
    a = _galacto(*_train_args("rep_a", 1), cwd=workdir)
    b = _galacto(*_train_args("rep_b", 1), cwd=workdir)
    assert a.returncode == 0 and b.returncode == 0, a.stderr[-2000:] + b.stderr[-2000:]
    ra, rb = _rows(workdir / "rep_a" / "metrics.csv"), _rows(workdir / "rep_b" / "metrics.csv")
    assert ra[0]["loss"] == rb[0]["loss"] and ra[0]["cpm"] == rb[0]["cpm"]


def test_fine_tune_starts_from_a_checkpoint(workdir: Path) -> None:
    """optim.init_from starts a new run from another run's weights (with a vanishing learning
    rate its parameters stay put), mimic patches included; another architecture is refused
    by name."""
    r = _galacto(*_train_args("base", 1), cwd=workdir)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _galacto(*_train_args("ft", 1), "--set", "optim.init_from=base/best.pt",
                 "--set", "optim.mimic_patch_fraction=0.3", "--set", "optim.lr=1e-12",
                 "--set", "optim.weight_decay=0", cwd=workdir)
    assert r.returncode == 0, r.stderr[-3000:]
    base = torch.load(workdir / "base" / "best.pt", weights_only=False)
    ft = torch.load(workdir / "ft" / "last.pt", weights_only=False)
    assert ft["config"]["optim"]["init_from"] == "base/best.pt"
    for name, tensor in base["model"].items():
        if "running_" in name or "num_batches" in name:
            continue  # batch-norm statistics follow the batches even at lr 0
        assert torch.allclose(tensor.float(), ft["model"][name].float(), atol=1e-6), name
    r = _galacto(*_train_args("ft2", 1), "--set", "optim.init_from=base/best.pt",
                 "--set", "model.fpn_channels=16", cwd=workdir)
    assert r.returncode == 2 and "model.fpn_channels is 48 there, 16 here" in r.stderr, \
        r.stderr[-2000:]
    r = _galacto(*_train_args("ft3", 1), "--set", "optim.init_from=nothing.pt", cwd=workdir)
    assert r.returncode == 2 and "nothing.pt" in r.stderr, r.stderr[-2000:]


def test_weight_average_is_saved_validated_and_resumed(workdir: Path) -> None:
    """With optim.ema_decay the checkpoint's ``model`` is the moving average (what export
    and validation use), ``trained`` the optimizer's weights; a resumed run continues both."""
    r = _galacto(*_train_args("ema", 1), "--set", "optim.ema_decay=0.5", cwd=workdir)
    assert r.returncode == 0, r.stderr[-3000:]
    first = torch.load(workdir / "ema" / "last.pt", weights_only=False)
    assert int(first["ema"]["n_averaged"]) == 2, "one update per step"
    differs = [k for k, v in first["model"].items()
               if v.is_floating_point() and not torch.equal(v, first["trained"][k])]
    assert differs, "the average of two steps differs from the last step's weights"
    r = _galacto("train", "--resume", "ema", "--set", "optim.epochs=2", cwd=workdir)
    assert r.returncode == 0, r.stderr[-3000:]
    second = torch.load(workdir / "ema" / "last.pt", weights_only=False)
    assert int(second["ema"]["n_averaged"]) == 4 and second["epoch"] == 1
    r = _galacto("export", "--checkpoint", "ema/last.pt", "--version", "0.0.9", "--out",
                 "models-ema", "--allow-degenerate", cwd=workdir)
    assert r.returncode == 0, r.stderr[-3000:]


def test_train_cli_errors(workdir: Path) -> None:
    r = _galacto("train", "--config", "nope.yaml", cwd=workdir)
    assert r.returncode == 2 and "nope.yaml" in r.stderr
    r = _galacto("train", "--config", str(CONFIG), "--set", "data.train=missing", cwd=workdir)
    assert r.returncode == 2 and "missing" in r.stderr and "dataset.json" in r.stderr
    r = _galacto("train", "--resume", "norun", cwd=workdir)
    assert r.returncode == 2 and "norun" in r.stderr


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name(
    "torchrun").exists(), reason="torchrun not installed")
def test_ddp_two_cpu_processes_with_gloo(workdir: Path) -> None:
    """Two processes (gloo) train a couple of steps; rank 0 writes the run."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "serving.cli",
           *_train_args("ddp", 1)]
    r = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-4000:]
    assert len(_rows(workdir / "ddp" / "metrics.csv")) == 1
    assert (workdir / "ddp" / "best.pt").is_file()
