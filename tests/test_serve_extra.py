"""The serve image without Docker: the Dockerfile's own install command for the ``serve``
stage, run in a fresh virtual environment from a copy of the build context, must give a
``galacto`` without torch or MONAI that serves a generated DICOM over real HTTP.

The venv-serve RUN line is executed as written, with its two absolute paths (``/wheels``,
``/opt/venv``) moved into a temporary folder; pip downloads from the package index (its cache
is reused). The server then runs as the image runs it: ``ENTRYPOINT`` + ``CMD`` from the
working directory the image has (``models/`` beside it), configured by the image's
``GALACTO_*`` environment only. Without network access to the index the test is skipped,
except under ``CI=true``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import httpx
import pytest
from conftest import free_port, stop, wait_until_up
from test_container import (
    IN_CI,
    REPO,
    SERVE,
    TRAIN_ONLY_PACKAGES,
    build_context_sources,
    dockerignore_rules,
    is_ignored,
    parse_dockerfile,
)

pytestmark = pytest.mark.slow

#: pip output that means "no network to the package index", not a broken build.
NETWORK_ERRORS = re.compile(r"Failed to establish a new connection|Temporary failure in name "
                            r"resolution|Name or service not known|Network is unreachable|"
                            r"Could not fetch URL|ConnectTimeoutError|ProxyError|"
                            r"No route to host|connection refused", re.IGNORECASE)


def _copy_context(sources: list[str], dest: Path) -> None:
    """Copy ``sources`` from the repository to ``dest`` as ``docker build`` sends them
    (.dockerignore applied)."""
    rules = dockerignore_rules()
    for src in sources:
        path = REPO / src
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for f in files:
            rel = f.relative_to(REPO).as_posix()
            if not is_ignored(rel, rules):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest / rel)


#: The API key the started image is given (the image refuses to start without one).
KEY = "k-serve-extra-7b3e91c04d2a58f6"


def _install(tmp: Path) -> Path:
    """Run the venv-serve stage's RUN commands; return the virtual environment."""
    df = parse_dockerfile()
    stage = df.stage("venv-serve")
    builder = df.stage(stage.base)
    src = tmp / "src"
    src.mkdir()
    _copy_context(build_context_sources(df, builder), src)
    assert str(builder.workdir()) == "/src"
    venv = tmp / "venv"
    # the interpreter running the tests provides `python` and `pip`, as the base image does
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("GALACTO_")}
    env["PATH"] = path
    for run in stage.run_commands():
        command = run.replace("/opt/venv", str(venv)).replace("/wheels", str(tmp / "wheels"))
        assert "/opt/" not in command and " /wheels" not in command, command
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=src, env=env,
                           capture_output=True, text=True, timeout=540)
        if r.returncode != 0:
            out = r.stdout[-4000:] + r.stderr[-4000:]
            if NETWORK_ERRORS.search(out) and not IN_CI:
                pytest.skip(f"no network to the package index: {out[-400:]}")
            pytest.fail(f"the serve stage's install failed:\n$ {command}\n{out}")
    return venv


def _start(venv: Path, tmp: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    """Start the image's ENTRYPOINT + CMD from a working directory laid out like the image's."""
    df = parse_dockerfile()
    serve = df.stage(SERVE)
    workdir = tmp / "workdir"
    for copy in serve.all("COPY"):
        if "from" in copy.flags:
            continue
        source, dest = copy.value.split()
        target = PurePosixPath(serve.workdir()) / dest
        assert target.is_relative_to(serve.workdir()), target
        shutil.copytree(REPO / source, workdir / target.relative_to(serve.workdir()))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("GALACTO_")}
    for s in reversed(df.parents(serve)):
        for key, value in s.env().items():
            if key.startswith("GALACTO_"):
                env[key] = value
    # the image's paths and listen address, moved to this machine; the image has auth on, so
    # it starts only with a key, as the README's example runs it
    env.update(GALACTO_API_KEYS=KEY, GALACTO_HOST="127.0.0.1", GALACTO_PORT=str(port),
               GALACTO_RESULTS_DIR=str(tmp / "results"),
               GALACTO_GATEWAY_SPOOL_DIR=str(tmp / "spool"))
    entry, cmd = serve.last("ENTRYPOINT"), serve.last("CMD")
    assert entry is not None and cmd is not None
    argv = (entry.exec_form() or []) + (cmd.exec_form() or [])
    argv[0] = str(venv / "bin" / argv[0])
    log = tmp / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    return proc, log


def test_serve_extra_in_a_fresh_venv(tmp_path: Path, galactogram_files: list[Path]) -> None:
    t0 = time.monotonic()
    venv = _install(tmp_path)
    t_install = time.monotonic() - t0
    python = str(venv / "bin" / "python")

    # no torch, no MONAI (nor the other training packages); galacto from the venv, not the repo
    for module in ("torch", "monai"):
        r = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=60)
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, module
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    names = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert "galacto" in names and not names & set(TRAIN_ONLY_PACKAGES), names
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    where = subprocess.run([python, "-c", "import serving; print(serving.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert str(venv) in where.stdout, where.stdout + where.stderr

    port = free_port()
    proc, log = _start(venv, tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, f"{url}/readyz", log, 90)
        # the viewer's files are in the wheel (package data)
        page = httpx.get(f"{url}/", timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        for asset in ("viewer.js", "viewer.css"):
            assert httpx.get(f"{url}/static/{asset}", timeout=10).status_code == 200, asset
        files = [("file", (f.name, f.read_bytes(), "application/dicom"))
                 for f in galactogram_files]
        assert httpx.post(f"{url}/v1/detect", files=files[:1], timeout=60).status_code == 401
        response = httpx.post(f"{url}/v1/detect", files=files, timeout=120,
                              params={"operating_point": "high_sensitivity"},
                              headers={"Authorization": f"Bearer {KEY}"})
        assert response.status_code == 200, response.text
        body = response.json()
        images = [img for study in body["studies"] for img in study["images"]]
        assert len(images) == len(galactogram_files)
        assert all(img["findings"] for img in images), body
        assert body["model"]["name"] == "galacto-small"
    finally:
        stop(proc, 15)
    print(f"serve extra: install {t_install:.0f} s, total {time.monotonic() - t0:.0f} s")
