"""Training and inference speed of a config's network (a benchmark, not a test).

Times forward+backward+optimizer steps on random patches (batch and patch size from the
config) and full-image inference in PyTorch eager and ONNX Runtime, then prints a table.

    python benchmarks/train_speed.py --config configs/galacto-small.yaml [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from training.config import load_config
from training.export import export_onnx
from training.loss import DetectionLoss, targets_from_numpy
from training.model import build_anchor_generator, build_network, count_parameters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=Path("configs/galacto-small.yaml"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--infer-shape", type=int, nargs=2, default=(1024, 800))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    cfg = load_config(args.config)
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    net = build_network(cfg.model).to(dev)
    gen = build_anchor_generator(cfg.model)
    loss_fn = DetectionLoss(cfg.matcher, len(cfg.model.base_anchor_shapes))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    b, p = cfg.optim.batch_size, cfg.optim.patch_size
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(0.3, 0.5, (b, 1, p, p)).astype(np.float32)).to(dev)
    boxes = [np.array([[p / 3, p / 3, p / 3 + 20, p / 3 + 24]], np.float32) for _ in range(b)]
    tb, tl = targets_from_numpy(boxes, [np.zeros(1) for _ in range(b)], dev)
    use_amp = cfg.optim.amp and dev.type == "cuda"
    times = []
    for i in range(args.steps + 3):
        t0 = time.perf_counter()
        with torch.autocast(dev.type, enabled=use_amp):
            head = net(x)
        head = {k: [t.float() for t in v] for k, v in head.items()}
        loss = loss_fn(head, gen(x, head["classification"]), tb, tl)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    net.eval()
    h, w = args.infer_shape
    xi = torch.zeros(1, 1, h, w, device=dev)
    with torch.no_grad():
        eager = []
        for i in range(8):
            t0 = time.perf_counter()
            net(xi)
            if i >= 2:
                eager.append(time.perf_counter() - t0)
    ort_ms = float("nan")
    if dev.type == "cpu":
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.onnx"
            export_onnx(net.cpu(), len(cfg.model.returned_layers), path)
            so = ort.SessionOptions()
            so.intra_op_num_threads = os.cpu_count() or 1
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            xn = np.zeros((1, 1, h, w), np.float32)
            runs = []
            for i in range(8):
                t0 = time.perf_counter()
                sess.run(None, {"image": xn})
                if i >= 2:
                    runs.append(time.perf_counter() - t0)
            ort_ms = statistics.median(runs) * 1e3
    table = Table(title=f"{cfg.name} on {dev.type} ({os.cpu_count()} CPU threads)")
    for col in ("parameters", "batch x patch", "train step (median)", "train images/s",
                f"eager {h}x{w}", f"ONNX Runtime {h}x{w}"):
        table.add_column(col, justify="right")
    table.add_row(f"{count_parameters(net) / 1e6:.2f} M", f"{b} x {p}^2", f"{step * 1e3:.0f} ms",
                  f"{b / step:.1f}", f"{statistics.median(eager) * 1e3:.0f} ms",
                  f"{ort_ms:.0f} ms")
    Console().print(table)


if __name__ == "__main__":
    main()
