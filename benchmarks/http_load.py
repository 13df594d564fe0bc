"""Latency, throughput and memory of ``galacto serve`` over real HTTP (a benchmark, not a test).

Starts ``galacto serve`` on a free port (or uses ``--url``), then drives ``POST /v1/detect``
with ``--concurrency`` clients for ``--duration`` seconds (after ``--warmup`` seconds of the
same load), each request one generated galactogram (Hologic-like 4096 x 3328 and GE-like
2294 x 1914 images, uncompressed, in turn). Prints a table: requests, successes, intended
503s (``busy``), other errors, throughput, p50/p95/p99 latency, and the server's resident
memory sampled from ``/proc`` every 0.5 s during the measurement (when this script started
the server): the median of the first and of the last quarter of the samples, the growth
between them, and the maximum.

    python benchmarks/http_load.py                       # one client, 30 s: single-request latency
    python benchmarks/http_load.py --concurrency 8 --duration 180   # load and soak
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_files(tmp: Path) -> list[Path]:
    files: list[Path] = []
    for profile in ("hologic", "ge"):
        out = tmp / profile
        subprocess.run([sys.executable, "-m", "serving.cli", "synth", "--out", str(out),
                        "--cases", "1", "--seed", "5", "--profile", profile, "--normal-share",
                        "0", "--compressed-share", "0", "--monochrome1-share", "0"],
                       check=True, capture_output=True)
        files.extend(sorted(out.rglob("*.dcm")))
    return files


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _start_server(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "GALACTO_API_KEYS"}
    proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--port", str(port),
                             "--results-dir", str(tmp / "results")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not become ready in 60 s")


async def _client(url: str, bodies: list[bytes], stop: float, out: list[tuple[int, float]],
                  offset: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        i = offset
        while time.monotonic() < stop:
            body = bodies[i % len(bodies)]
            i += 1
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/detect", content=body,
                                      headers={"Content-Type": "application/dicom"})
                status = r.status_code
            except httpx.HTTPError:
                status = -1
            out.append((status, time.perf_counter() - t0))


async def _sample_rss(pid: int | None, stop: float, samples: list[float]) -> None:
    """RSS (MB) of ``pid`` every 0.5 s until ``stop``."""
    while pid is not None and time.monotonic() < stop:
        samples.append(_rss_mb(pid))
        await asyncio.sleep(0.5)


async def _drive(url: str, bodies: list[bytes], concurrency: int, seconds: float,
                 pid: int | None = None, samples: list[float] | None = None
                 ) -> list[tuple[int, float]]:
    out: list[tuple[int, float]] = []
    stop = time.monotonic() + seconds
    await asyncio.gather(*(_client(url, bodies, stop, out, k) for k in range(concurrency)),
                         _sample_rss(pid, stop, samples if samples is not None else []))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="an already running server (default: start one)")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of measurement")
    ap.add_argument("--warmup", type=float, default=20.0,
                    help="seconds of the same load before measuring (memory baseline)")
    args = ap.parse_args()
    console = Console(width=160)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = _make_files(tmp)
        bodies = [f.read_bytes() for f in files]
        proc = None
        url = args.url
        if url is None:
            port = _free_port()
            proc = _start_server(tmp, port)
            url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(_drive(url, bodies, args.concurrency, args.warmup))
            samples: list[float] = []
            t0 = time.perf_counter()
            results = asyncio.run(_drive(url, bodies, args.concurrency, args.duration,
                                         proc.pid if proc else None, samples))
            wall = time.perf_counter() - t0
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(15)
    ok = [t for s, t in results if s == 200]
    busy = sum(1 for s, _ in results if s == 503)
    errors = sum(1 for s, _ in results if s not in (200, 503))
    lat = np.array(ok) * 1e3 if ok else np.array([np.nan])
    table = Table(title=f"POST /v1/detect, {args.concurrency} client(s), {args.duration:.0f} s, "
                        f"{len(files)} images (Hologic 4096x3328 and GE 2294x1914, uncompressed)")
    for col in ("requests", "200", "503 busy", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms",
                "RSS first quarter MB", "RSS last quarter MB", "RSS growth", "RSS max MB"):
        table.add_column(col, justify="right")
    quarter = max(len(samples) // 4, 1)
    rss0 = float(np.median(samples[:quarter])) if samples else float("nan")
    rss1 = float(np.median(samples[-quarter:])) if samples else float("nan")
    growth = (rss1 - rss0) / rss0 * 100 if samples else float("nan")
    table.add_row(str(len(results)), str(len(ok)), str(busy), str(errors),
                  f"{len(ok) / wall:.2f}", *(f"{np.percentile(lat, q):.0f}" for q in (50, 95, 99)),
                  f"{rss0:.0f}", f"{rss1:.0f}", f"{growth:+.1f} %",
                  f"{max(samples) if samples else float('nan'):.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
