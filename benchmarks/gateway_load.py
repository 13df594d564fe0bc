"""Load test of the DICOM gateway (a benchmark, not a test).

Starts ``galacto gateway run`` as a separate process (spool in a temporary folder, results sent
to a Storage SCP in this process), sends N studies of M images each over several concurrent
associations (threads), waits until every study is processed, and prints: instances received
per second, studies processed, instances or results lost (must be 0), duplicates at the
destination, the gateway process's peak resident memory (VmHWM) and the times.

    python benchmarks/gateway_load.py [--studies 20] [--images 4] [--associations 4]
                                      [--workers 1] [--profile ge]
    python benchmarks/gateway_load.py --hostile

Images are synthetic galactograms (``galacto synth``, needs the ``train`` extra); each study
gets new Study/Series/SOP Instance UIDs, so the same few generated files make every study.

``--hostile`` measures the resource bounds instead (:mod:`benchmarks.hostile`): for a deflate
bomb and an element flood sent by C-STORE, the status, the C-STORE time and how much the
gateway process's peak RSS grew; for floods of TCP connect+close, idle and half-sent
connections and a 400 MB A-ASSOCIATE-RQ header, the time of a valid C-ECHO right after (or
while they are open) and what the gateway buffered.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from rich.console import Console
from rich.table import Table

from serving.gateway.spool import TERMINAL, JobState, Spool

REPO = Path(__file__).resolve().parents[1]
MG = "1.2.840.10008.5.1.4.1.1.1.2"
CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Destination:
    """A Storage SCP counting the CAD SRs it receives per study."""

    def __init__(self) -> None:
        self.per_study: Counter[str] = Counter()
        self.lock = threading.Lock()
        ae = AE("DEST")
        ae.add_supported_context(CAD_SR, [ExplicitVRLittleEndian])
        server: Any = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
            (evt.EVT_C_STORE, self._on_store)])
        self.server = server
        self.port = int(server.server_address[1])

    def _on_store(self, event: evt.Event) -> int:
        with self.lock:
            self.per_study[str(event.dataset.StudyInstanceUID)] += 1
        return 0x0000


def make_base_images(folder: Path, images_per_study: int, profile: str) -> list[Path]:
    """Generated galactograms: ``images_per_study`` files (2 per case)."""
    cases = max(1, (images_per_study + 1) // 2)
    subprocess.run([sys.executable, "-m", "serving.cli", "synth", "--out", str(folder),
                    "--cases", str(cases), "--seed", "11", "--profile", profile,
                    "--normal-share", "0", "--compressed-share", "0",
                    "--monochrome1-share", "0"], check=True, capture_output=True)
    return sorted(folder.rglob("*.dcm"))[:images_per_study]


def study_datasets(base: list[Path]) -> list[Dataset]:
    """The base images as one new study (new UIDs)."""
    study = generate_uid()
    out: list[Dataset] = []
    for path in base:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


def send_studies(port: int, studies: list[int], base: list[Path],
                 uids: dict[int, str]) -> list[int]:
    """One association sending the given studies one after the other; returns statuses."""
    ae = AE("LOADSCU")
    ae.add_requested_context(MG, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="GALACTO")
    if not assoc.is_established:
        raise RuntimeError("association refused by the gateway")
    statuses = []
    try:
        for s in studies:
            datasets = study_datasets(base)
            uids[s] = str(datasets[0].StudyInstanceUID)
            for ds in datasets:
                status = assoc.send_c_store(ds)
                statuses.append(int(getattr(status, "Status", -1)))
    finally:
        assoc.release()
    return statuses


def wait_echo(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Until the gateway answers C-ECHO."""
    ae = AE("LOADSCU")
    ae.add_requested_context(Verification)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the gateway process exited")
        assoc = ae.associate("127.0.0.1", port, ae_title="GALACTO")
        if assoc.is_established:
            assoc.release()
            return
        time.sleep(0.2)
    raise RuntimeError(f"the gateway did not answer C-ECHO in {timeout_s:g} s")


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set size) of a live process, MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------------------------
# --hostile: resource bounds
# --------------------------------------------------------------------------------------------


def reset_peak(pid: int) -> float:
    """Reset the process's peak RSS to its current RSS (Linux ``clear_refs``); returns the
    current RSS, MiB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed_echo(port: int) -> tuple[str, float]:
    """``(C-ECHO outcome, seconds)`` of one association from LOADSCU."""
    ae = AE("LOADSCU")
    ae.add_requested_context(Verification)
    t0 = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title="GALACTO")
    if not assoc.is_established:
        return "refused", time.perf_counter() - t0
    status = int(getattr(assoc.send_c_echo(), "Status", -1))
    assoc.release()
    return f"0x{status:04X}", time.perf_counter() - t0


def hostile_store(port: int, pid: int, path: Path, syntax: str) -> list[str]:
    """C-STORE the file at ``path`` as it is; ``[status, seconds, peak RSS growth]``."""
    import hostile
    from pynetdicom import _config

    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE("LOADSCU")
    ae.add_requested_context(hostile.MG_FOR_PRESENTATION, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="GALACTO")
    base = reset_peak(pid)
    t0 = time.perf_counter()
    status = int(getattr(assoc.send_c_store(path), "Status", -1))
    seconds = time.perf_counter() - t0
    growth = peak_rss_mb(pid) - base
    assoc.release()
    return [f"0x{status:04X}", f"{seconds:.2f} s", f"{growth:.0f} MiB"]


def huge_request(port: int, pid: int, declared: int = 400 * 2**20) -> list[str]:
    """A PDU header declaring a ``declared``-byte A-ASSOCIATE-RQ, then zeros until the
    gateway closes; ``[bytes accepted, seconds to close, peak RSS growth]``."""
    base = reset_peak(pid)
    sent, chunk = 0, bytes(2**20)
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(10)
        sock.sendall(struct.pack(">BBL", 0x01, 0, declared))
        try:
            while sent < declared:
                sock.sendall(chunk)
                sent += len(chunk)
        except (ConnectionError, TimeoutError):
            pass
    seconds = time.perf_counter() - t0
    return [f"closed after {sent / 2**20:.0f} MiB of {declared / 2**20:.0f}",
            f"{seconds:.2f} s", f"{peak_rss_mb(pid) - base:.0f} MiB"]


def flood_then_echo(port: int, kind: str, count: int) -> list[str]:
    """``count`` connect+close, or ``count`` idle / half-sent connections kept open, then a
    C-ECHO; ``[C-ECHO outcome, its time]``."""
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        if kind == "half":
            sock.sendall(struct.pack(">BBL", 0x01, 0, 1000) + bytes(100))
        if kind == "close":
            sock.close()
        else:
            held.append(sock)
    try:
        outcome, seconds = timed_echo(port)
    finally:
        for sock in held:
            sock.close()
    return [outcome, f"{seconds * 1000:.0f} ms"]


def hostile_main(args: argparse.Namespace) -> None:
    """Start a gateway process and measure what each hostile input costs it."""
    import hostile  # benchmarks/hostile.py, beside this script (as http_load.py does)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GALACTO_")}
        log = open(tmp / "gateway.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving.cli.gateway", "run", "--port", str(port),
             "--spool-dir", str(tmp / "spool"), "--plain-logs"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        rows: list[tuple[str, list[str]]] = []
        try:
            wait_echo(port, proc)
            for kind, syntax in (("deflate_bomb", DeflatedExplicitVRLittleEndian),
                                 ("element_flood", ExplicitVRLittleEndian)):
                data = getattr(hostile, kind)()
                path = tmp / f"{kind}.dcm"
                path.write_bytes(data)
                name = f"C-STORE {kind} ({len(data) / 2**20:.1f} MiB)"
                rows.append((name, hostile_store(port, proc.pid, path, syntax)))
            rows.append(("A-ASSOCIATE-RQ declaring 400 MiB", huge_request(port, proc.pid)))
            for kind, count in (("close", 10), ("idle", 20), ("half", 5)):
                label = {"close": f"C-ECHO after {count} TCP connect+close",
                         "idle": f"C-ECHO while {count} idle connections are open",
                         "half": f"C-ECHO while {count} half-sent A-ASSOCIATE-RQs are open"}
                rows.append((label[kind], flood_then_echo(port, kind, count)))
            outcome, seconds = timed_echo(port)
            rows.append(("C-ECHO afterwards", [outcome, f"{seconds * 1000:.0f} ms"]))
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
    table = Table(title=f"gateway against hostile peers (gateway process, peak RSS at the end "
                        f"{rss:.0f} MiB)")
    for column in ("input", "outcome", "time", "peak RSS growth"):
        table.add_column(column)
    for name, values in rows:
        table.add_row(name, *values, *[""] * (3 - len(values)))
    Console(width=120).print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hostile", action="store_true",
                    help="measure the resource bounds against hostile peers instead")
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--images", type=int, default=4, help="images per study")
    ap.add_argument("--associations", type=int, default=4, help="concurrent associations")
    ap.add_argument("--workers", type=int, default=1, help="gateway workers")
    ap.add_argument("--quiet-period", type=float, default=2.0)
    ap.add_argument("--profile", default="ge", help="synth vendor profile")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds to wait, at most")
    args = ap.parse_args()
    if args.hostile:
        hostile_main(args)
        return
    console = Console()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base = make_base_images(tmp / "base", args.images, args.profile)
        dest = Destination()
        port, spool_dir = free_port(), tmp / "spool"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GALACTO_")}
        env["GALACTO_GATEWAY_WORKERS"] = str(args.workers)
        log = open(tmp / "gateway.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving.cli.gateway", "run", "--port", str(port),
             "--spool-dir", str(spool_dir), "--destination", f"DEST@127.0.0.1:{dest.port}",
             "--quiet-period", str(args.quiet_period), "--plain-logs"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            wait_echo(port, proc)
            uids: dict[int, str] = {}
            groups = [list(range(a, args.studies, args.associations))
                      for a in range(args.associations)]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.associations) as pool:
                statuses = [s for f in [pool.submit(send_studies, port, g, base, uids)
                                        for g in groups] for s in f.result()]
            t_recv = time.perf_counter() - t0
            spool = Spool(spool_dir)
            deadline = time.monotonic() + args.timeout
            while True:
                jobs = spool.jobs(limit=10 * args.studies)
                if len(jobs) >= args.studies and all(j.state in TERMINAL for j in jobs):
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            t_all = time.perf_counter() - t0
            rss = peak_rss_mb(proc.pid)
            spool.close()
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
            dest.server.shutdown()
        expected = args.studies * args.images
        received = sum(j.instances_received for j in jobs)
        sent_jobs = [j for j in jobs if j.state is JobState.SENT]
        srs = sum(dest.per_study[u] for u in uids.values())
        missing_sr = sum(1 for u in uids.values() if dest.per_study[u] == 0)
        lost = (expected - received) + missing_sr
        duplicates = sum(max(0, dest.per_study[u] - 1) for u in uids.values())
        ok = sum(1 for s in statuses if s == 0)
        table = Table(title=f"gateway load: {args.studies} studies x {args.images} images "
                            f"({args.profile}, {base[0].stat().st_size / 2**20:.1f} MiB each), "
                            f"{args.associations} concurrent associations, "
                            f"{args.workers} worker(s)")
        table.add_column("measure")
        table.add_column("value", justify="right")
        for name, value in (
                ("C-STORE success", f"{ok}/{expected}"),
                ("instances/s received (while processing)", f"{expected / t_recv:.1f}"),
                ("MiB/s received", f"{expected * base[0].stat().st_size / 2**20 / t_recv:.0f}"),
                ("receive time", f"{t_recv:.1f} s"),
                ("studies processed and sent", f"{len(sent_jobs)}/{args.studies}"),
                ("SRs at the destination", str(srs)),
                ("lost (instances + studies without SR)", str(lost)),
                ("duplicate SRs", str(duplicates)),
                ("gateway peak RSS (VmHWM)", f"{rss:.0f} MiB"),
                ("total time (first C-STORE to last study sent)", f"{t_all:.1f} s"),
                ("studies/min end to end", f"{len(sent_jobs) / t_all * 60:.1f}")):
            table.add_row(name, value)
        console.print(table)
        if lost or len(sent_jobs) != args.studies:
            console.print("[red]not every study was processed and sent[/red]")
            sys.exit(1)


if __name__ == "__main__":
    main()
