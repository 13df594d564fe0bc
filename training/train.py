"""``galacto train``: train the RetinaNet on preprocessed patches, validate on full images.

Plain functions in the torchvision-references style: :func:`train_one_epoch`,
:func:`validate`, :func:`run`. Checkpoints (``last.pt`` every epoch, ``best.pt`` on the best
finite validation mean sensitivity) carry the resolved config, git commit, dataset fingerprint
and package versions; ``--resume RUN_DIR`` restores model, optimizer, scheduler, AMP scaler and
epoch. ``optim.freeze`` keeps parts of the network fixed (fine-tuning, :func:`freeze`).
Multi-GPU / multi-node: start with ``torchrun`` (DDP; NCCL on GPU, gloo on CPU).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from serving.pipeline.postprocess import decode
from training.config import TrainConfig
from training.data import (
    CachedImage,
    PatchSampler,
    build_cache,
    dataset_fingerprint,
    load_cached,
    load_split,
    preprocess_config,
)
from training.export import load_checkpoint
from training.loss import DetectionLoss, targets_from_numpy
from training.metrics import froc, plot_froc
from training.model import build_anchor_generator, build_network, set_prior_bias
from training.modelcard import anchor_config, decode_config

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)

#: Names ``optim.freeze`` accepts besides plain parameter-name prefixes, and the prefixes they
#: stand for (the ResNet trunk's stem and stages, the FPN).
FREEZE_PARTS: dict[str, tuple[str, ...]] = {
    "backbone": ("feature_extractor.trunk.",),
    "stem": ("feature_extractor.trunk.conv1.", "feature_extractor.trunk.bn1."),
    **{f"stage{i}": (f"feature_extractor.trunk.layer{i}.",) for i in range(1, 5)},
    "fpn": ("feature_extractor.fpn.",),
}


@dataclass
class Dist:
    """Distributed context (``world == 1`` when not started by torchrun)."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """Initialise DDP from torchrun's environment (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=rank, world=world, local_rank=local, device=device)


def versions() -> dict[str, str]:
    """Versions of the packages that shape a model."""
    import monai
    import onnx
    import pydicom

    import serving

    return {"python": platform.python_version(), "torch": torch.__version__,
            "monai": monai.__version__, "numpy": np.__version__, "pydicom": pydicom.__version__,
            "onnx": onnx.__version__, "galacto": serving.__version__}


def git_commit() -> str:
    """The current git commit (``unknown`` outside a checkout), ``+dirty`` if modified."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True,
                               text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def lr_lambda(cfg: TrainConfig) -> Any:
    """Linear warm-up then cosine decay to 5 % over all steps."""
    total = cfg.optim.epochs * cfg.optim.steps_per_epoch
    warm = cfg.optim.warmup_steps

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(total - warm, 1)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return f


def load_images(cfg: TrainConfig, split: str, root: Path, d: Dist, limit: int | None = None
                ) -> list[CachedImage]:
    """Preprocess (rank 0, cached) and load a split of a dataset."""
    items = load_split(root, split, dbt_frames_per_volume=cfg.data.dbt_frames_per_volume,
                       seed=cfg.seed, dbt_slab=cfg.data.dbt_slab)
    if limit is not None:
        items = items[:limit]
    pcfg = preprocess_config(cfg.preprocess)
    cache = Path(cfg.data.cache)
    if d.main:
        bar = tqdm(total=len(items), desc=f"preprocess {split}", unit="img", leave=False)
        paths = build_cache(items, pcfg, cache, workers=min(2, os.cpu_count() or 1),
                            progress=lambda: bar.update(1))
        bar.close()
    if d.world > 1:
        dist.barrier()
    if not d.main:
        paths = build_cache(items, pcfg, cache, workers=1)
    return [load_cached(p, it) for p, it in zip(paths, items, strict=True)]


def _under(name: str, prefixes: Sequence[str]) -> bool:
    """Whether parameter or module ``name`` lies under one of ``prefixes``."""
    return any((name + ".").startswith(p) for p in prefixes)


def freeze_prefixes(names: Sequence[str]) -> tuple[str, ...]:
    """The parameter-name prefixes of ``optim.freeze`` entries (:data:`FREEZE_PARTS` names
    expanded, anything else taken as a prefix)."""
    return tuple(p for n in names for p in FREEZE_PARTS.get(n, (n,)))


def freeze(net: nn.Module, names: Sequence[str]) -> tuple[int, int]:
    """Stop the gradients of the parts ``names`` (``optim.freeze``) of ``net``.

    Returns:
        The number of frozen parameter values and of all of them.

    Raises:
        ValueError: an entry matches no parameter (the message lists the known names).
    """
    params = dict(net.named_parameters())
    unknown = [n for n in names if not any(_under(k, freeze_prefixes([n])) for k in params)]
    if unknown:
        raise ValueError(f"optim.freeze: {', '.join(map(repr, unknown))} match no parameter of "
                         f"this network; use {', '.join(FREEZE_PARTS)} or a parameter-name "
                         "prefix such as classification_head.conv")
    prefixes, frozen = freeze_prefixes(names), 0
    for key, param in params.items():
        if _under(key, prefixes):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen, sum(p.numel() for p in params.values())


def check_freeze(cfg: TrainConfig) -> None:
    """Raise ValueError now, before any data is read, if ``optim.freeze`` names a part the
    configured network lacks (a throwaway network; the random state is left as it was)."""
    if cfg.optim.freeze:
        with torch.random.fork_rng(devices=[]):
            freeze(build_network(cfg.model), cfg.optim.freeze)


def held_norm_prefixes(cfg: TrainConfig) -> tuple[str, ...]:
    """Where batch norms stay in eval mode: the frozen parts, and the whole trunk when the
    run starts from an exported model folder (its statistics are folded into the
    convolutions there, :mod:`training.onnx_weights`)."""
    held = freeze_prefixes(cfg.optim.freeze)
    if cfg.optim.init_from and Path(cfg.optim.init_from).is_dir():
        held += FREEZE_PARTS["backbone"]
    return held


def hold_norms(net: nn.Module, prefixes: Sequence[str]) -> None:
    """Put the batch-norm layers under ``prefixes`` in eval mode (after ``net.train()``), so
    that their running statistics stay those of the starting weights."""
    if not prefixes:
        return
    for name, module in net.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and _under(name, prefixes):
            module.eval()


def train_one_epoch(net: nn.Module, loss_fn: DetectionLoss, anchor_gen: Any,
                    sampler: PatchSampler, opt: torch.optim.Optimizer, sched: Any,
                    scaler: torch.amp.GradScaler, cfg: TrainConfig, epoch: int, d: Dist,
                    ema: AveragedModel | None = None) -> dict[str, float]:
    """One epoch of ``steps_per_epoch`` batches (updating ``ema`` after every step); returns
    mean losses and images/s."""
    net.train()
    hold_norms(_unwrap(net), held_norm_prefixes(cfg))
    sums = {"loss": 0.0, "cls": 0.0, "box": 0.0}
    use_amp = cfg.optim.amp and d.device.type == "cuda"
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.optim.steps_per_epoch), desc=f"epoch {epoch}", disable=not d.main,
               unit="step")
    for step in bar:
        images, boxes, labels = sampler.batch(epoch, step, cfg.optim.batch_size, d.rank)
        images = images.to(d.device, non_blocking=True)
        tb, tl = targets_from_numpy(boxes, labels, d.device)
        with torch.autocast(d.device.type, enabled=use_amp):
            head = net(images)
        anchors = anchor_gen(images, head["classification"])
        head = {k: [t.float() for t in v] for k, v in head.items()}
        losses = loss_fn(head, anchors, tb, tl)
        opt.zero_grad(set_to_none=True)
        scaler.scale(losses["loss"]).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        if ema is not None:
            ema.update_parameters(_unwrap(net))
        for k in sums:
            sums[k] += float(losses[k].detach())
        rate = (step + 1) * cfg.optim.batch_size * d.world / (time.perf_counter() - t0)
        bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}", img_s=f"{rate:.1f}")
    n = cfg.optim.steps_per_epoch
    return {**{k: v / n for k, v in sums.items()},
            "images_per_s": n * cfg.optim.batch_size * d.world / (time.perf_counter() - t0),
            "lr": float(sched.get_last_lr()[0])}


@torch.no_grad()
def predict_cached(net: nn.Module, images: list[CachedImage], cfg: TrainConfig,
                   device: torch.device) -> list[dict[str, np.ndarray]]:
    """Full-image lesion (class 0) predictions in stored-image pixels, decoded by serving's
    numpy code."""
    net.eval()
    acfg, dcfg = anchor_config(cfg.model), decode_config(cfg.decode)
    preds = []
    for img in images:
        x = torch.from_numpy(img.array)[None, None].to(device)
        head = net(x)
        cls = [t.float().cpu().numpy() for t in head["classification"]]
        reg = [t.float().cpu().numpy() for t in head["box_regression"]]
        boxes, scores, labels = decode(cls, reg, img.array.shape, acfg, dcfg,
                                       clip_shape=img.valid)
        lesion = labels == 0  # class 0 is the lesion; the others are mimic kinds
        pred: dict[str, np.ndarray] = {"boxes": img.transform.model_to_stored(boxes[lesion]),
                                       "scores": np.asarray(scores[lesion])}
        preds.append(pred)
    return preds


def validate(net: nn.Module, images: list[CachedImage], cfg: TrainConfig, device: torch.device
             ) -> tuple[dict[str, float], Any]:
    """FROC on the validation images: sensitivity at each FP rate and their mean (CPM)."""
    preds = predict_cached(net, images, cfg, device)
    result = froc([im.item for im in images], preds, FP_RATES)
    at = result.sensitivity_at_rates
    out = {f"sens@{r:g}": float(s) for r, s in zip(FP_RATES, at, strict=True)}
    out["cpm"] = float(result.cpm)
    return out, result


def _initial_network(path: Path) -> tuple[TrainConfig, nn.Module]:
    """Config and network of a checkpoint file or of an exported model folder."""
    if path.is_dir():
        from training.onnx_weights import network_from_model

        return network_from_model(path)
    cfg, net, _ = load_checkpoint(path)
    return cfg, net


def load_initial_weights(net: nn.Module, path: Path, cfg: TrainConfig) -> None:
    """Start ``net`` from the model weights of checkpoint ``path``, or of the exported model
    folder ``path`` (``models/<name>/<version>``, :mod:`training.onnx_weights`): fine-tuning.

    The checkpoint may have fewer classes than ``cfg.model`` when its ``class_names`` are the
    first ones of ours (e.g. ``[filling_defect]`` -> ``[filling_defect, air_bubble, ...]``):
    every weight is copied and the classification output layer keeps the old classes' rows,
    the new classes' rows starting from ``net``'s own (prior-bias) initialisation.

    Raises:
        ValueError: the checkpoint's architecture (``model`` section) differs from
            ``cfg.model`` otherwise; the message names the differing keys.
        CommandError: no checkpoint at ``path``.
    """
    theirs_cfg, theirs_net = _initial_network(path)
    theirs, ours = theirs_cfg.model.model_dump(mode="json"), cfg.model.model_dump(mode="json")
    differ = sorted(k for k in ours if theirs.get(k) != ours[k])
    old_names, new_names = theirs["class_names"], ours["class_names"]
    extends = (set(differ) <= {"num_classes", "class_names"}
               and new_names[: len(old_names)] == old_names)
    if differ and not extends:
        raise ValueError(f"optim.init_from: {path} has another architecture; model."
                         + ", model.".join(f"{k} is {theirs.get(k)!r} there, {ours[k]!r} here"
                                           for k in differ))
    state = theirs_net.state_dict()
    if extends and differ:
        state = _extend_classes(state, net.state_dict(), len(old_names), len(new_names),
                                len(cfg.model.base_anchor_shapes))
    net.load_state_dict(state)


def _extend_classes(theirs: dict[str, Tensor], ours: dict[str, Tensor], k_old: int,
                    k_new: int, anchors: int) -> dict[str, Tensor]:
    """``theirs`` with the classification output layer widened from ``A * k_old`` to
    ``A * k_new`` channels (channel ``a * K + k``, MONAI's layout), new rows from ``ours``."""
    out = dict(theirs)
    for key in ("classification_head.cls_logits.weight", "classification_head.cls_logits.bias"):
        new = ours[key].clone()
        for a in range(anchors):
            new[a * k_new: a * k_new + k_old] = theirs[key][a * k_old: (a + 1) * k_old]
        out[key] = new
    return out


def _unwrap(net: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (or ``net`` itself)."""
    return net.module if isinstance(net, DistributedDataParallel) else net


def make_ema(net: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``net``'s weights and buffers, or None when off."""
    if decay <= 0.0:
        return None
    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def save_checkpoint(path: Path, net: nn.Module, opt: torch.optim.Optimizer, sched: Any,
                    scaler: torch.amp.GradScaler, epoch: int, cfg: TrainConfig,
                    meta: dict[str, Any], ema: AveragedModel | None = None) -> None:
    """Write a checkpoint atomically. ``model`` holds the weights to use (the moving average
    when ``ema`` is on; then ``trained`` holds the optimizer's weights and ``ema`` the
    averager's state, for resuming)."""
    module = _unwrap(net)
    extra: dict[str, Any] = {}
    if ema is not None:
        extra = {"trained": module.state_dict(), "ema": ema.state_dict()}
    used = ema.module if ema is not None else module
    state = {"model": used.state_dict(), **extra, "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
             "config": cfg.model_dump(mode="json"), **meta}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _plot_losses(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ep = [r["epoch"] for r in rows]
    for k in ("loss", "cls", "box"):
        ax[0].plot(ep, [r[k] for r in rows], label=k)
    ax[0].set_xlabel("epoch")
    ax[0].set_title("training loss")
    ax[0].legend()
    ax[1].plot(ep, [r["cpm"] for r in rows], label="validation CPM")
    ax[1].plot(ep, [r["sens@0.5"] for r in rows], label="sensitivity @ 0.5 FP/image")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylim(0, 1)
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _load_data(cfg: TrainConfig, d: Dist) -> tuple[list[CachedImage], list[CachedImage]]:
    """The training images of every ``data.train`` folder and the validation images (capped
    at ``data.val_max_images`` per folder) of every ``data.val`` folder."""
    train = [im for root in cfg.data.train_dirs
             for im in load_images(cfg, "training", Path(root), d)]
    val = [im for root in cfg.data.val_dirs
           for im in load_images(cfg, "validation", Path(root), d, cfg.data.val_max_images)]
    return train, val


def _make_network(cfg: TrainConfig, resume: bool, d: Dist) -> nn.Module:
    """The network on its device: prior bias, ``optim.init_from`` weights (new runs) and
    ``optim.freeze`` applied."""
    net: nn.Module = build_network(cfg.model)
    set_prior_bias(net)  # type: ignore[arg-type]
    if cfg.optim.init_from and not resume:
        load_initial_weights(net, Path(cfg.optim.init_from), cfg)
    frozen, total = freeze(net, cfg.optim.freeze)
    if frozen and d.main:
        tqdm.write(f"frozen: {', '.join(cfg.optim.freeze)} ({frozen:,} of {total:,} "
                   "parameters; the others train)")
    return net.to(d.device)


def _fmt(value: float) -> str:
    """A validation figure for the epoch line (``n/a`` when not a number)."""
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def _epoch_line(epoch: int, stats: dict[str, float], val: dict[str, float],
                improved: bool) -> str:
    """The line printed after each epoch."""
    note = "  (best)" if improved else ""
    if not math.isfinite(val["cpm"]):
        note = "  (no lesion in the validation images: no CPM, best.pt not updated)"
    return (f"epoch {epoch}: loss {stats['loss']:.3f}  {stats['images_per_s']:.1f} img/s  "
            f"val CPM {_fmt(val['cpm'])}  sens@0.5 {_fmt(val['sens@0.5'])}{note}")


def run(cfg: TrainConfig, run_dir: Path, resume: bool) -> Path | None:
    """Train ``cfg`` into ``run_dir``.

    Returns:
        ``run_dir/best.pt`` on rank 0 when it exists (written at each epoch whose validation
        CPM is finite and the best so far); None otherwise, e.g. when no epoch had a finite
        CPM (then ``last.pt`` holds the last epoch's weights).
    """
    d = setup_distributed()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if d.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // d.world))
    run_dir.mkdir(parents=True, exist_ok=True)
    train_images, val_images = _load_data(cfg, d)
    sampler = PatchSampler(train_images, cfg.optim.patch_size,
                           cfg.optim.positive_patch_fraction, cfg.augment, cfg.seed,
                           mimic_fraction=cfg.optim.mimic_patch_fraction,
                           class_names=cfg.model.class_names)
    net = _make_network(cfg, resume, d)
    ema = make_ema(net, cfg.optim.ema_decay) if d.main else None  # rank 0 validates and saves
    anchor_gen = build_anchor_generator(cfg.model)
    loss_fn = DetectionLoss(cfg.matcher, len(cfg.model.base_anchor_shapes),
                            cfg.decode.box_coder_weights)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.optim.lr,
                            weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    amp = cfg.optim.amp and d.device.type == "cuda"
    scaler = torch.amp.GradScaler(d.device.type, enabled=amp)
    start, best_cpm, rows = 0, -1.0, []
    last = run_dir / "last.pt"
    if resume:
        state = torch.load(last, map_location=d.device, weights_only=False)
        net.load_state_dict(state.get("trained", state["model"]))
        if ema is not None and "ema" in state:  # else the first update copies the weights
            ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start, best_cpm, rows = state["epoch"] + 1, state["best_cpm"], state["history"]
    if d.world > 1:
        net = DistributedDataParallel(net, device_ids=[d.local_rank] if d.device.type == "cuda"
                                      else None)
    meta = {"git_commit": git_commit(), "versions": versions(),
            "dataset_fingerprint": dataset_fingerprint(
                [Path(v) for v in (*cfg.data.train_dirs, *cfg.data.val_dirs)])}
    writer = None
    if d.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"))
        (run_dir / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=1))
    best_result = None
    for epoch in range(start, cfg.optim.epochs):
        stats = train_one_epoch(net, loss_fn, anchor_gen, sampler, opt, sched, scaler, cfg,
                                epoch, d, ema)
        if d.main:
            module = ema.module if ema is not None else _unwrap(net)
            val, result = validate(module, val_images, cfg, d.device)
            row = {"epoch": epoch, **stats, **val}
            rows.append(row)
            assert writer is not None
            for k, v in row.items():
                if k != "epoch":
                    writer.add_scalar(k, v, epoch)
            _write_csv(run_dir / "metrics.csv", rows)
            improved = math.isfinite(val["cpm"]) and val["cpm"] > best_cpm
            if improved:
                best_cpm, best_result = val["cpm"], result
            meta_e = {**meta, "best_cpm": best_cpm, "history": rows, "validation": val,
                      "train_images": len(train_images), "val_images": len(val_images)}
            save_checkpoint(last, net, opt, sched, scaler, epoch, cfg, meta_e, ema)
            if improved:
                save_checkpoint(run_dir / "best.pt", net, opt, sched, scaler, epoch, cfg,
                                meta_e, ema)
            tqdm.write(_epoch_line(epoch, stats, val, improved))
        if d.world > 1:
            dist.barrier()
    if d.main:
        _plot_losses(rows, run_dir / "curves.png")
        if best_result is not None:
            plot_froc({"validation (best epoch)": best_result}, run_dir / "froc.png")
        assert writer is not None
        writer.close()
    if d.world > 1:
        dist.destroy_process_group()
    best = run_dir / "best.pt"
    return best if d.main and best.is_file() else None


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys = list(rows[0].keys())
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
