"""``galacto serve`` refuses to start, at once and with a clear message, when it could never
serve: its port is taken, or the operating point does not exist (before: the first logged
"serving on ..." and died; the second stayed up with /readyz at 503 for ever)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _serve(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "serving.cli", "serve", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - t0


def test_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done, seconds = _serve("--port", str(port), "--results-dir", str(tmp_path))
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "serving on" not in done.stdout + done.stderr
    assert seconds < 30


def test_unknown_operating_point_is_refused_at_start(tmp_path: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    done, _ = _serve("--port", str(port), "--operating-point", "foo", "--results-dir",
                     str(tmp_path))
    assert done.returncode == 2
    assert "--operating-point 'foo': the model has balanced" in done.stderr


def test_exposed_embedded_gateway_is_refused_cleanly(tmp_path: Path) -> None:
    """``serve --gateway`` on a non-loopback gateway address without an allow-list: exit 2 and
    a message, like ``galacto gateway run`` (before: a traceback and SIGABRT)."""
    import os

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {**os.environ, "GALACTO_GATEWAY_HOST": "0.0.0.0"}
    done = subprocess.run([sys.executable, "-m", "serving.cli", "serve", "--gateway", "--port",
                           str(port), "--results-dir", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-500:]
    assert "GALACTO_GATEWAY_ALLOWED_CALLERS" in done.stderr
    assert "Traceback" not in done.stderr
