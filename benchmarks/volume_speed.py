"""Speed and peak memory of one tomosynthesis (DBT) volume, end to end (a benchmark, not a test).

The target: a 50-frame CC at 0.1 mm, 2294 x 1914 pixels in-plane, on 2 cores, in under 5 s
and 1.5 GB. Without ``--volume`` the volume is generated: ``galacto synth --dbt`` with the GE
profile (2294 x 1914 at 0.1 mm), frames every 1 mm, seed 41, whose CC is 49.4 mm thick, so
50 frames (Breast Tomosynthesis Image Storage, uncompressed, 439 MB; its ML/MLO is deleted).

Each measurement runs in a fresh Python process, pinned to ``--cores`` CPUs before numpy or
ONNX Runtime is imported. It loads the model as ``galacto detect`` does (``load_model``
with ``--threads`` intra-op threads, the calibration of ``GALACTO_CALIBRATION`` if set), then
times the call ``galacto detect`` makes for a file, from the path on disk to the JSON text:
``read_input`` (header parse; the volume reader keeps the stored pixel data and decodes each
frame when the detector needs it) and ``detect_refusing_volumes`` (slabs, the detector on
each, 3D linking, landmarks and locations, thresholds, the response), then
``model_dump_json``. Model loading is not in the time (a server loads once; it is printed).
Peak memory is the child's VmHWM (``/proc/self/status``; high-water resident set of this
process image alone, model included); the resident set after loading is printed next to it.

Rows: one per (slab, stride) pair and ONNX Runtime thread count; seconds p50 / min / max
over ``--runs`` processes; the CPU time (user + system, all threads: on a machine shared
with other work closer to the quiet figure than the wall time); per-stage p50 ms, the
response's ``timings_ms``: ``read`` frame decoding, ``slab`` combining frames,
``preprocess``, ``inference`` and ``postprocess`` the detector's (decode, NMS), ``link``,
``locate`` (3D nested suppression, landmarks, locations); ``other``, end to end minus the
stages (header parse, evidence texts, frame ranges, two-view matching, response, JSON);
and, for a generated volume (or one a ``dataset.json`` of ``galacto synth`` lists), whether
its simulated lesions were found at the operating point (a finding whose box and frames
overlap the truth). Peak memory includes the stored pixel data, which the volume reader
holds while the frames are decoded one by one.

    python benchmarks/volume_speed.py [--volume FILE] [--runs 3] [--slab 3 5 --stride 3 5]
        [--threads 2] [--cores 2] [--model models/galacto-small/0.5.0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: The response's per-stage timings of a volume, in pipeline order.
STAGES = ("read", "slab", "preprocess", "inference", "postprocess", "link", "locate")
#: The goal for a 50-frame 0.1 mm CC on 2 cores.
GOAL_S = 5.0
GOAL_MB = 1536.0


def _proc_status_mb(key: str) -> float:
    """``VmHWM`` / ``VmRSS`` of this process from /proc/self/status, MB (-1 if absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return -1.0


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement (in its own process): load, then path -> JSON once."""
    cores = int(spec["cores"])
    available = sorted(os.sched_getaffinity(0))
    if 0 < cores < len(available):  # before numpy/ORT start their thread pools
        os.sched_setaffinity(0, available[:cores])
    from serving.cli.detect import calibration_file, read_input
    from serving.gateway.volumes import detect_refusing_volumes
    from serving.pipeline.calibration import calibrated_model
    from serving.pipeline.dicom_in import Volume
    from serving.pipeline.model import default_model_dir, load_model
    from serving.pipeline.tomo.volume import slab_bounds, slab_centres
    from serving.settings import tomo_override

    t = time.perf_counter()
    model = calibrated_model(load_model(spec["model"] or default_model_dir(),
                                        threads=spec["threads"]), calibration_file(None))
    load_s = time.perf_counter() - t
    tomo = tomo_override(model, spec["slab"], spec["stride"])
    settings = tomo or model.tomo_settings
    rss_loaded = _proc_status_mb("VmRSS")
    path = Path(spec["path"])

    cpu0 = os.times()
    t0 = time.perf_counter()
    item = read_input(path, model.preprocess.spacing_mm)
    detected = detect_refusing_volumes([item], model, None, sources=[str(path)], tomo=tomo,
                                       request_id=None)
    if detected.response is None:
        raise SystemExit(f"{path}: not analysed: {detected.failures}")
    text = detected.response.model_dump_json()
    seconds = time.perf_counter() - t0
    cpu1 = os.times()
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)

    if not isinstance(item, Volume):
        raise SystemExit(f"{path} is not a tomosynthesis volume")
    img = detected.response.studies[0].images[0]
    n = item.header.number_of_frames
    centres = slab_centres(n, settings.slab, settings.stride)
    read: set[int] = set()
    for c in centres:
        lo, hi = slab_bounds(c, settings.slab, n)
        read.update(range(lo, hi))
    return {
        "seconds": seconds, "cpu_s": cpu_s, "load_s": load_s, "json_bytes": len(text),
        "timings_ms": dict(img.timings_ms), "frames": n, "rows": img.rows, "cols": img.cols,
        "spacing_mm": list(img.spacing_mm), "view": img.view, "laterality": img.laterality,
        "slab": settings.slab, "stride": settings.stride, "slab_mode": settings.slab_mode,
        "runs": len(centres), "frames_read": len(read), "threads": spec["threads"],
        "cores": len(os.sched_getaffinity(0)),
        "findings": [{"box": f.box_px, "score": f.score,
                      "frames": [f.frame.first, f.frame.last] if f.frame else None}
                     for f in img.findings],
        "peak_rss_mb": _proc_status_mb("VmHWM"), "rss_loaded_mb": rss_loaded,
    }


def _generate(out: Path, seed: int) -> Path:
    """The seed's GE DBT case at 0.1 mm, frames every 1 mm; its CC (the other view deleted).
    A folder that already holds a generated case is reused."""
    if not (out / "dataset.json").is_file():
        subprocess.run([sys.executable, "-m", "serving.cli", "synth", "--dbt", "--out", str(out),
                        "--cases", "1", "--seed", str(seed), "--profile", "ge",
                        "--dbt-spacing-mm", "0.1", "--dbt-slice-mm", "1", "--workers", "1"],
                       check=True, capture_output=True)
    items = json.loads((out / "dataset.json").read_text())["training"]
    cc = next(i for i in items if i["view"] == "CC")
    for i in items:
        if i is not cc:
            (out / i["image"]).unlink(missing_ok=True)
    return out / cc["image"]


def _truth(path: Path) -> list[dict[str, Any]]:
    """The simulated lesions (``box``, 1-based ``frame_range``) of ``path`` when a
    ``dataset.json`` of ``galacto synth`` lists it (else empty)."""
    for folder in path.parents:
        meta = folder / "dataset.json"
        if meta.is_file():
            for items in json.loads(meta.read_text()).values():
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, dict) and (folder / item.get("image", "")) == path:
                        return [{"box": b, "frame_range": r} for b, r in
                                zip(item["boxes"], item["frame_ranges"], strict=True)]
            return []
    return []


def _found(truth: list[dict[str, Any]], findings: list[dict[str, Any]]) -> int:
    """Lesions of ``truth`` overlapped by a finding in-plane and in frames."""
    def hit(t: dict[str, Any], f: dict[str, Any]) -> bool:
        a, b = t["box"], f["box"]
        plane = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
        fr = f["frames"]
        return plane and fr is not None and fr[0] <= t["frame_range"][1] \
            and t["frame_range"][0] <= fr[1]
    return sum(any(hit(t, f) for f in findings) for t in truth)


def _measure(path: Path, args: argparse.Namespace, slab: int | None, stride: int | None,
             threads: int) -> list[dict[str, Any]]:
    """``args.runs`` measurements of ``path``, each in a fresh process (:func:`_child`)."""
    spec = {"path": str(path), "model": str(args.model) if args.model else None,
            "slab": slab, "stride": stride, "threads": threads, "cores": args.cores}
    out = []
    for _ in range(args.runs):
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                              capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"measurement failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def _row(path: Path, runs: list[dict[str, Any]], truth: list[dict[str, Any]]) -> list[str]:
    r0 = runs[0]
    secs = [r["seconds"] for r in runs]
    stage = {s: statistics.median(r["timings_ms"].get(s, 0.0) for r in runs) for s in STAGES}
    other = statistics.median(
        r["seconds"] * 1e3 - sum(r["timings_ms"].get(s, 0.0) for s in STAGES) for r in runs)
    per_run = (stage["preprocess"] + stage["inference"] + stage["postprocess"]) / r0["runs"]
    peak = max(r["peak_rss_mb"] for r in runs)
    mb = path.stat().st_size / 1e6
    sp = r0["spacing_mm"]
    volume = (f"{r0['laterality']} {r0['view']} {r0['frames']} x {r0['rows']} x {r0['cols']}, "
              f"{sp[0]:g} mm, {mb:.0f} MB")
    found = f"{_found(truth, r0['findings'])}/{len(truth)}" if truth else "-"
    return [volume, f"slab {r0['slab']} ({r0['slab_mode']}), stride {r0['stride']}",
            f"{r0['threads']} / {r0['cores']}", f"{r0['runs']} ({r0['frames_read']})",
            f"{statistics.median(secs):.2f} / {min(secs):.2f} / {max(secs):.2f}",
            f"{statistics.median(r['cpu_s'] for r in runs):.2f}",
            *(f"{stage[s]:.0f}" for s in STAGES), f"{other:.0f}", f"{per_run:.0f}",
            f"{peak:.0f}", f"{statistics.median(r['rss_loaded_mb'] for r in runs):.0f}",
            f"{len(r0['findings'])}", found,
            "yes" if statistics.median(secs) < GOAL_S and peak < GOAL_MB else "no"]


HEADER = ["volume", "settings", "ORT threads / cores", "detector runs (frames read)",
          "s p50 / min / max", "CPU s p50", *(f"{s} ms" for s in STAGES), "other ms",
          "ms per detector run", "peak RSS MB", "RSS after load MB", "findings",
          "lesions found", f"< {GOAL_S:g} s and {GOAL_MB / 1024:g} GB"]


def _markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(HEADER))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--volume", type=Path, default=None,
                    help="a DBT volume file (default: generate the 50-frame GE CC)")
    ap.add_argument("--model", type=Path, default=None, help="default: the bundled model")
    ap.add_argument("--runs", type=int, default=3, help="processes per row (default 3)")
    ap.add_argument("--slab", type=int, nargs="+", default=None, metavar="N",
                    help="frames per slab, one row each (default: the model card's)")
    ap.add_argument("--stride", type=int, nargs="+", default=None, metavar="N",
                    help="frames between slabs, paired with --slab (default: = --slab, or "
                         "the card's)")
    ap.add_argument("--threads", type=int, nargs="+", default=[2], metavar="N",
                    help="ONNX Runtime intra-op threads, one row each (default 2)")
    ap.add_argument("--cores", type=int, default=2,
                    help="CPUs each measurement is pinned to (default 2; 0: all)")
    ap.add_argument("--seed", type=int, default=41,
                    help="synth seed of the generated case (41: a 50-frame CC)")
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="generate the volume here and keep it, or reuse the one generated here "
                         "before (default: a temporary folder)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(_child(json.loads(args.child))))
        return
    slabs: list[int | None] = list(args.slab) if args.slab else [None]
    strides: list[int | None] = list(args.stride) if args.stride else list(slabs)
    if len(strides) != len(slabs):
        ap.error("give as many --stride values as --slab values")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.volume
        if path is None:
            folder = args.keep or Path(tmp) / "synth"
            t = time.perf_counter()
            path = _generate(folder, args.seed)
            print(f"generated {path} in {time.perf_counter() - t:.0f} s (seed {args.seed})")
        truth = _truth(path.resolve())
        rows, loads = [], []
        for slab, stride in zip(slabs, strides, strict=True):
            for threads in args.threads:
                runs = _measure(path.resolve(), args, slab, stride, threads)
                loads += [r["load_s"] for r in runs]
                rows.append(_row(path, runs, truth))
        print(f"\nend to end (path -> JSON, as `galacto detect`), {args.runs} fresh process(es) "
              f"per row; stage columns p50 ms; model load p50 "
              f"{statistics.median(loads):.2f} s (not included)\n")
        print(_markdown(rows))


if __name__ == "__main__":
    main()
