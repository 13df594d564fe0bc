"""End-to-end speed and memory of the detection pipeline (a benchmark, not a test).

For a Hologic-like 4096 x 3328 image stored uncompressed and as JPEG 2000 lossless, and a
GE-like 2294 x 1914 image, runs ``detect`` repeatedly in one process and prints p50/p95 per
stage (decode, preprocess, inference, postprocess, locate) and end to end, the peak resident
memory, and the same network in PyTorch eager vs ONNX Runtime side by side.

A second table decodes the Hologic image in every compressed syntax (JPEG Lossless SV1 with
DCMTK's ``dcmcjpeg`` when installed, JPEG-LS, JPEG 2000 and HTJ2K lossless): decode and end to
end p50/p95 with the decoders in use (imagecodecs first), then with pydicom's plugins alone,
and the ratio, in the same run.

    python benchmarks/pipeline_speed.py [--model models/galacto-small/0.4.0] [--repeats 10]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from rich.console import Console
from rich.table import Table

from serving.pipeline.detect import detect
from serving.pipeline.dicom_in import read_image
from serving.pipeline.model import default_model_dir, load_model
from serving.pipeline.preprocess import prepare

STAGES = ("decode", "preprocess", "inference", "postprocess", "locate")


def _make_inputs(tmp: Path) -> dict[str, Path]:
    """One generated case per profile; the Hologic CC also re-encoded as JPEG 2000."""
    files: dict[str, Path] = {}
    for profile in ("hologic", "ge"):
        out = tmp / profile
        subprocess.run([sys.executable, "-m", "serving.cli", "synth", "--out", str(out),
                        "--cases", "1", "--seed", "5", "--profile", profile,
                        "--compressed-share", "0", "--monochrome1-share", "0",
                        "--normal-share", "0"], check=True, capture_output=True)
        files[profile] = sorted(out.rglob("*_CC.dcm"))[0]
    ds = pydicom.dcmread(files["hologic"])
    ds.compress(pydicom.uid.JPEG2000Lossless)
    j2k = tmp / "hologic_j2k.dcm"
    ds.save_as(j2k)
    files["hologic (JPEG 2000)"] = j2k
    return files


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    model = load_model(args.model or default_model_dir())
    console = Console()
    with tempfile.TemporaryDirectory() as tmpdir:
        files = _make_inputs(Path(tmpdir))
        table = Table(title=f"{model.name} {model.version}: ms per image, p50 / p95 over "
                            f"{args.repeats} runs (after 2 warm-up runs)")
        table.add_column("input")
        for s in (*STAGES, "end to end"):
            table.add_column(s, justify="right")
        for name, path in {"hologic 4096x3328 (uncompressed)": files["hologic"],
                           "hologic 4096x3328 (JPEG 2000 lossless)":
                               files["hologic (JPEG 2000)"],
                           "ge 2294x1914 (uncompressed)": files["ge"]}.items():
            data = path.read_bytes()
            per: dict[str, list[float]] = {s: [] for s in (*STAGES, "end to end")}
            for i in range(args.repeats + 2):
                t0 = time.perf_counter()
                image = read_image(data, reduce_to_spacing_mm=model.preprocess.spacing_mm)
                t1 = time.perf_counter()
                result = detect([image], model)
                t2 = time.perf_counter()
                if i < 2:
                    continue
                timings = result.studies[0].images[0].timings_ms
                per["decode"].append((t1 - t0) * 1e3)
                for s in STAGES[1:]:
                    per[s].append(timings[s])
                per["end to end"].append((t2 - t0) * 1e3)
            table.add_row(name, *(f"{_pct(v, 50):.0f} / {_pct(v, 95):.0f}"
                                  for v in per.values()))
        console.print(table)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        console.print(f"peak resident memory of this process: {peak_mb:.0f} MB")
        _decoders(model, files["hologic"], Path(tmpdir), args.repeats, console)
        _eager_vs_ort(model, read_image(files["hologic"]), console)


def _encodings(source: Path, tmp: Path) -> dict[str, Path]:
    """``source`` (uncompressed) re-encoded in each compressed syntax."""
    import imagecodecs
    from pydicom.encaps import encapsulate

    out: dict[str, Path] = {}
    if shutil.which("dcmcjpeg"):
        path = tmp / "sv1.dcm"
        subprocess.run(["dcmcjpeg", str(source), str(path)], check=True, capture_output=True)
        out["JPEG Lossless SV1"] = path
    for name, syntax in (("JPEG-LS lossless", pydicom.uid.JPEGLSLossless),
                         ("JPEG 2000 lossless", pydicom.uid.JPEG2000Lossless)):
        ds = pydicom.dcmread(source)
        ds.compress(syntax)
        out[name] = tmp / f"{syntax}.dcm"
        ds.save_as(out[name])
    ds = pydicom.dcmread(source)
    ds.PixelData = encapsulate([imagecodecs.htj2k_encode(ds.pixel_array)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.HTJ2KLossless
    out["HTJ2K lossless"] = tmp / "htj2k.dcm"
    ds.save_as(out["HTJ2K lossless"])
    return out


def _time_decode(model: object, data: bytes, repeats: int) -> tuple[list[float], list[float]]:
    """Decode and end-to-end ms of ``repeats`` runs (after one warm-up)."""
    decode_ms, total_ms = [], []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        image = read_image(data, reduce_to_spacing_mm=model.preprocess.spacing_mm)  # type: ignore[attr-defined]
        t1 = time.perf_counter()
        detect([image], model)  # type: ignore[arg-type]
        t2 = time.perf_counter()
        if i:
            decode_ms.append((t1 - t0) * 1e3)
            total_ms.append((t2 - t0) * 1e3)
    return decode_ms, total_ms


def _decoders(model: object, source: Path, tmp: Path, repeats: int, console: Console) -> None:
    """The compressed-syntax table: imagecodecs first vs pydicom's plugins alone."""
    from serving.pipeline.intake import decode

    table = Table(title="Hologic 4096x3328 14-bit, compressed: ms, p50 / p95")
    for column in ("transfer syntax", "decode", "end to end", "decode, plugins only",
                   "end to end, plugins only", "decode speed-up"):
        table.add_column(column, justify="left" if column == "transfer syntax" else "right")
    fast = dict(decode.FAST_DECODERS)
    for name, path in _encodings(source, tmp).items():
        data = path.read_bytes()
        new = _time_decode(model, data, repeats)
        decode.FAST_DECODERS.clear()
        try:
            old = _time_decode(model, data, repeats)
        finally:
            decode.FAST_DECODERS.update(fast)
        cells = [f"{_pct(v, 50):.0f} / {_pct(v, 95):.0f}" for v in (*new, *old)]
        table.add_row(name, *cells, f"{_pct(old[0], 50) / _pct(new[0], 50):.1f}x")
    console.print(table)


def _eager_vs_ort(model: object, image: object, console: Console) -> None:
    """The model's architecture (from its card) in PyTorch eager and in ONNX Runtime, on the
    same prepared input. Weights are random (speed does not depend on them); the ONNX copy is
    exported from that very network."""
    try:
        import onnxruntime as ort
        import torch

        from training.config import TrainConfig
        from training.export import export_onnx
        from training.model import build_network
    except ImportError:
        console.print("PyTorch not installed: eager comparison skipped")
        return
    cfg = TrainConfig.model_validate(model.card["training"]["config"])  # type: ignore[attr-defined]
    net = build_network(cfg.model).eval()
    x = prepare(image, model.preprocess).array  # type: ignore[attr-defined, arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export_onnx(net, len(cfg.model.returned_layers), path)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = 2
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        torch.set_num_threads(2)
        xt = torch.from_numpy(x)[None, None]
        xn = x[None, None]
        eager, ort_ms = [], []
        for i in range(8):
            t0 = time.perf_counter()
            with torch.no_grad():
                net(xt)
            t1 = time.perf_counter()
            sess.run(None, {"image": xn})
            t2 = time.perf_counter()
            if i >= 2:
                eager.append((t1 - t0) * 1e3)
                ort_ms.append((t2 - t1) * 1e3)
    e, o = float(np.median(eager)), float(np.median(ort_ms))
    console.print(f"network on {x.shape[0]}x{x.shape[1]} (2 threads each): PyTorch eager "
                  f"{e:.0f} ms, ONNX Runtime {o:.0f} ms, ratio {e / o:.2f}x")


if __name__ == "__main__":
    main()
