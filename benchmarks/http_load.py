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
    python benchmarks/http_load.py --hostile --duration 60          # hostile mix (below)

``--hostile``: one valid client alone for ``--duration`` seconds, then the same client beside
16 hostile ones for ``--duration`` seconds (4 each: 2 MB deflate bombs inflating to 2 GiB, 20 MB
element floods, bodies sent at 1 byte/s, multipart bodies of 200,000 empty parts; built by
``benchmarks/hostile.py``), with ``/healthz`` probed every 0.2 s; then ``--half-open``
half-sent requests (1,100) while ``/healthz`` is probed. Prints the valid requests' p50/p95
alone and under attack, ``/healthz`` latency, how long each hostile kind took to be refused,
the server's peak RSS (``VmHWM``) and its growth over the attack, and the server's
"out of system resource" log lines. Each client connects from its own loopback address, as
distinct machines would (all of 127.0.0.0/8 is the loopback interface on Linux): the valid
client from 127.0.0.2, the hostile ones from 127.0.0.3 to 127.0.0.18, so that the server's
per-client admission tells them apart; the probes come from 127.0.0.1.
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
    """``galacto serve`` with default settings, logging to ``tmp/server.log``."""
    env = {k: v for k, v in os.environ.items() if k != "GALACTO_API_KEYS"}
    with open(tmp / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "serving.cli", "serve", "--port",
                                 str(port), "--results-dir", str(tmp / "results")],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
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


def _http(url: str, timeout_s: float, source: str | None = None) -> httpx.AsyncClient:
    """An HTTP client of ``url`` connecting from the local address ``source`` when given."""
    transport = httpx.AsyncHTTPTransport(local_address=source) if source else None
    return httpx.AsyncClient(base_url=url, timeout=timeout_s, transport=transport)


async def _client(url: str, bodies: list[bytes], stop: float, out: list[tuple[int, float]],
                  offset: int, source: str | None = None) -> None:
    async with _http(url, 300, source) as client:
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
            if status == 503:  # busy: wait as a client honouring Retry-After would, briefly
                await asyncio.sleep(0.2)


async def _sample_rss(pid: int | None, stop: float, samples: list[float]) -> None:
    """RSS (MB) of ``pid`` every 0.5 s until ``stop``."""
    while pid is not None and time.monotonic() < stop:
        samples.append(_rss_mb(pid))
        await asyncio.sleep(0.5)


async def _drive(url: str, bodies: list[bytes], concurrency: int, seconds: float,
                 pid: int | None = None, samples: list[float] | None = None,
                 source: str | None = None) -> list[tuple[int, float]]:
    out: list[tuple[int, float]] = []
    stop = time.monotonic() + seconds
    await asyncio.gather(*(_client(url, bodies, stop, out, k, source)
                           for k in range(concurrency)),
                         _sample_rss(pid, stop, samples if samples is not None else []))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="an already running server (default: start one)")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of measurement")
    ap.add_argument("--warmup", type=float, default=20.0,
                    help="seconds of the same load before measuring (memory baseline)")
    ap.add_argument("--hostile", action="store_true",
                    help="the hostile mix: 1 valid client beside 16 hostile ones")
    ap.add_argument("--half-open", type=int, default=1100,
                    help="half-sent requests held open in the hostile mode's last phase")
    args = ap.parse_args()
    console = Console(width=160)
    if args.hostile:
        _hostile_main(args, console)
        return
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


# ---------------------------------------------------------------------------------------------
# --hostile: one valid client beside 16 hostile ones, then half-open connections
# ---------------------------------------------------------------------------------------------

HOSTILE_KINDS = ("deflate_bomb", "element_flood", "slow_body", "many_parts")
HOSTILE_PER_KIND = 4
#: Loopback source address of the valid client; hostile client ``k`` (0-based) uses
#: ``127.0.0.{3 + k}``.
VALID_SOURCE = "127.0.0.2"
#: Bytes a slow client declares; it sends one per second.
SLOW_DECLARED = 96 * 1024 * 1024


def _hostile_bodies() -> dict[str, tuple[bytes, str]]:
    """Body and Content-Type of each hostile kind sent whole (benchmarks/hostile.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import hostile

    related = 'multipart/related; type="application/dicom"; boundary=hostile'
    return {"deflate_bomb": (hostile.deflate_bomb(), "application/dicom"),
            "element_flood": (hostile.element_flood(20), "application/dicom"),
            "many_parts": (hostile.many_parts_body(200_000), related)}


def _peak_rss_mb(pid: int) -> float:
    """``VmHWM`` of ``pid``: the most resident memory it ever had (MB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _hostile_source(k: int) -> str:
    return f"127.0.0.{3 + k}"


async def _hostile_client(url: str, kind: str, body: bytes, ctype: str, stop: float,
                          out: list[tuple[str, int, float]], source: str) -> None:
    """Send ``body`` again and again until ``stop``; record (kind, status, seconds)."""
    async with _http(url, 120, source) as client:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/detect", content=body,
                                      headers={"Content-Type": ctype})
                status = r.status_code
            except httpx.HTTPError:
                status = -1
            out.append((kind, status, time.perf_counter() - t0))
            if status == 503:
                await asyncio.sleep(0.2)


async def _slow_client(port: int, stop: float, out: list[tuple[str, int, float]],
                       source: str) -> None:
    """Declare :data:`SLOW_DECLARED` bytes and send one per second until answered or closed;
    record how long the server let it hold the connection."""
    head = (f"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/dicom"
            f"\r\nContent-Length: {SLOW_DECLARED}\r\n\r\n").encode()
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        status = -1
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                           local_addr=(source, 0))
            writer.write(head)
            while time.monotonic() < stop + 30:
                writer.write(b"\0")
                await writer.drain()
                try:
                    line = await asyncio.wait_for(reader.readline(), 1.0)
                except TimeoutError:
                    continue
                if line.startswith(b"HTTP/"):
                    status = int(line.split()[1])
                break
            writer.close()
        except OSError:
            pass
        out.append(("slow_body", status, time.perf_counter() - t0))


async def _probe_healthz(url: str, stop: float, out: list[float]) -> None:
    """``/healthz`` every 0.2 s until ``stop``: latency (s), inf when it failed."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                ok = (await client.get("/healthz")).status_code == 200
            except httpx.HTTPError:
                ok = False
            out.append(time.perf_counter() - t0 if ok else float("inf"))
            await asyncio.sleep(0.2)


async def _attack(url: str, port: int, bodies: list[bytes], seconds: float, pid: int
                  ) -> tuple[list[tuple[int, float]], list[tuple[str, int, float]],
                             list[float], list[float]]:
    """The valid client, the 16 hostile clients, the /healthz probe and RSS sampling."""
    stop = time.monotonic() + seconds
    valid: list[tuple[int, float]] = []
    hostile: list[tuple[str, int, float]] = []
    health: list[float] = []
    rss: list[float] = []
    whole = _hostile_bodies()
    tasks = [_client(url, bodies, stop, valid, 0, VALID_SOURCE),
             _probe_healthz(url, stop, health), _sample_rss(pid, stop, rss)]
    for k in range(len(HOSTILE_KINDS) * HOSTILE_PER_KIND):
        kind, source = HOSTILE_KINDS[k // HOSTILE_PER_KIND], _hostile_source(k)
        if kind == "slow_body":
            tasks.append(_slow_client(port, stop, hostile, source))
        else:
            tasks.append(_hostile_client(url, kind, *whole[kind], stop, hostile, source))
    await asyncio.gather(*tasks)
    return valid, hostile, health, rss


async def _one_each(url: str, pid: int) -> list[tuple[str, int, float, float]]:
    """Each hostile body sent once, alone: (kind, status, seconds, growth of the server's
    peak RSS in MB)."""
    out = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for kind, (body, ctype) in _hostile_bodies().items():
            peak = _peak_rss_mb(pid)
            t0 = time.perf_counter()
            try:
                status = (await client.post("/v1/detect", content=body,
                                            headers={"Content-Type": ctype})).status_code
            except httpx.HTTPError:
                status = -1
            out.append((kind, status, time.perf_counter() - t0, _peak_rss_mb(pid) - peak))
    return out


async def _half_open(url: str, port: int, count: int, seconds: float) -> tuple[int, list[float]]:
    """Hold ``count`` half-sent requests while probing /healthz for ``seconds``; returns how
    many connections were opened and the probe latencies."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 512)), hard))
    writers = []
    for _ in range(count):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            break
        writer.write(b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        writers.append(writer)
    health: list[float] = []
    await _probe_healthz(url, time.monotonic() + seconds, health)
    for writer in writers:
        writer.close()
    return len(writers), health


def _ms(values: list[float], q: float) -> str:
    finite = [v for v in values if np.isfinite(v)]
    return f"{np.percentile(finite, q) * 1e3:.0f}" if finite else "-"


def _hostile_main(args: argparse.Namespace, console: Console) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bodies = [f.read_bytes() for f in _make_files(tmp)]
        port = _free_port()
        proc = _start_server(tmp, port)
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(_drive(url, bodies, 1, args.warmup, source=VALID_SOURCE))
            alone = asyncio.run(_drive(url, bodies, 1, args.duration, source=VALID_SOURCE))
            single = asyncio.run(_one_each(url, proc.pid))
            base_rss, base_peak = _rss_mb(proc.pid), _peak_rss_mb(proc.pid)
            valid, hostile, health, rss = asyncio.run(
                _attack(url, port, bodies, args.duration, proc.pid))
            peak = _peak_rss_mb(proc.pid)
            opened, held_health = asyncio.run(_half_open(url, port, args.half_open, 15.0))
            flood_lines = (tmp / "server.log").read_text(errors="replace").count(
                "out of system resource")
        finally:
            proc.terminate()
            proc.wait(15)
    for kind, status, seconds, growth in single:
        console.print(f"{kind} alone: {status} in {seconds:.2f} s, server peak RSS "
                      f"{growth:+.0f} MB")
    _print_hostile(console, args, alone, valid, hostile, health, rss,
                   (base_rss, base_peak, peak), (opened, held_health, flood_lines))


def _print_hostile(console: Console, args: argparse.Namespace, alone: list[tuple[int, float]],
                   valid: list[tuple[int, float]], hostile: list[tuple[str, int, float]],
                   health: list[float], rss: list[float], memory: tuple[float, float, float],
                   half_open: tuple[int, list[float], int]) -> None:
    table = Table(title=f"hostile mix, {args.duration:.0f} s per phase: valid POST /v1/detect")
    for col in ("phase", "requests", "200", "503", "other", "p50 ms", "p95 ms",
                "/healthz p95 ms", "/healthz max ms", "/healthz failed"):
        table.add_column(col, justify="right")
    for name, rows, probes in (("alone", alone, []), ("under attack", valid, health)):
        ok = [t for s, t in rows if s == 200]
        table.add_row(name, str(len(rows)), str(len(ok)), str(sum(s == 503 for s, _ in rows)),
                      str(sum(s not in (200, 503) for s, _ in rows)), _ms(ok, 50), _ms(ok, 95),
                      _ms(probes, 95), _ms(probes, 100),
                      str(sum(not np.isfinite(p) for p in probes)) if probes else "-")
    console.print(table)
    kinds = Table(title="hostile requests: answer and seconds until answered or closed")
    for col in ("kind", "requests", "answers", "p50 s", "p95 s", "max s"):
        kinds.add_column(col, justify="right")
    for kind in HOSTILE_KINDS:
        rows = [(s, t) for k, s, t in hostile if k == kind]
        answers = ", ".join(f"{s}: {n}" for s, n in sorted(
            {s: sum(1 for x, _ in rows if x == s) for s, _ in rows}.items()))
        times = [t for _, t in rows] or [float("nan")]
        kinds.add_row(kind, str(len(rows)), answers, f"{np.percentile(times, 50):.2f}",
                      f"{np.percentile(times, 95):.2f}", f"{max(times):.2f}")
    console.print(kinds)
    base_rss, base_peak, peak = memory
    opened, held, flood = half_open
    console.print(f"server RSS before the attack {base_rss:.0f} MB (peak so far {base_peak:.0f}"
                  f" MB); peak during it {peak:.0f} MB (growth {peak - base_peak:+.0f} MB over "
                  f"the earlier peak, {peak - base_rss:+.0f} MB over the RSS before); sampled "
                  f"max {max(rss, default=float('nan')):.0f} MB")
    console.print(f"{opened} half-open requests held: /healthz p95 {_ms(held, 95)} ms, max "
                  f"{_ms(held, 100)} ms, {sum(not np.isfinite(h) for h in held)} of "
                  f"{len(held)} probes failed; 'out of system resource' log lines: {flood}")


if __name__ == "__main__":
    main()
