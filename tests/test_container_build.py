"""The ``serve`` image, built and run for real: ``deploy/build-image.sh`` builds it from the
Dockerfile as it is (buildah on a local Debian base, no image registry), and the image is run
as its own user with its own environment, entrypoint and command:

- it refuses to start without ``GALACTO_API_KEYS`` (``GALACTO_AUTH=true`` in the image);
- with a key it answers ``/readyz`` (the start time is measured), the viewer page, and a
  generated galactogram study through ``POST /v1/detect``; its HEALTHCHECK command, run inside,
  passes (and fails against a port where nothing listens);
- it holds no torch (nor the other training packages), no compiler and no secrets;
- it runs with a read-only root file system, the declared VOLUMEs being the only writable
  paths (not even ``/tmp``), and its user owns nothing else;
- the DICOM gateway inside the same image (``GALACTO_GATEWAY_ENABLED=true``) accepts a study
  sent by DCMTK ``storescu`` from outside, and the job shows in ``/v1/jobs``.

``buildah run --isolation chroot --network host`` stands in for a container runtime (no Docker
engine or working ``podman run`` is needed); ``buildah run`` cannot make the root read-only, so
that run uses ``unshare`` and ``chroot`` on the image's mounted root, which is what chroot
isolation does, plus a read-only bind mount. Needs root, buildah, podman, debootstrap and
DCMTK: skipped with a message without them, except under ``CI=true``, where it fails. The
Debian base and buildah's image store are cached in ``.cache/images`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from conftest import free_port
from test_container import IN_CI, REPO, TRAIN_ONLY_PACKAGES

pytestmark = pytest.mark.slow

SCRIPT = REPO / "deploy" / "build-image.sh"
CACHE = REPO / ".cache" / "images"
TAG = "localhost/galacto-test:serve"
#: The API key the started image is given.
KEY = "k-container-build-5d0c7a39e1b24f86"
#: The calling AE title of the test's storescu, allowed from loopback only.
CALLER = "STORESCU"
#: Private key files that third-party wheels ship as public test fixtures (no secret).
KNOWN_TEST_KEYS = frozenset({
    "opt/venv/lib/python3.11/site-packages/pynetdicom/tests/cert_files/client.key",
    "opt/venv/lib/python3.11/site-packages/pynetdicom/tests/cert_files/server.key",
})
TOOLS = ("buildah", "podman", "debootstrap", "unshare", "chroot")


def _dcmtk_storescu() -> str | None:
    """DCMTK's storescu (not pynetdicom's Python script of the same name)."""
    for folder in ("/usr/bin", *os.environ.get("PATH", "").split(os.pathsep)):
        path = Path(folder) / "storescu"
        if path.is_file() and os.access(path, os.X_OK):
            with open(path, "rb") as fh:
                if fh.read(2) != b"#!":
                    return str(path)
    return None


def _missing() -> str | None:
    """Why this machine cannot build and run the image, or None."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if _dcmtk_storescu() is None:
        missing.append("storescu (dcmtk)")
    if missing:
        return (f"missing {', '.join(missing)} (apt-get install buildah podman debootstrap "
                "dcmtk)")
    if os.geteuid() != 0:
        return "building the Debian base (debootstrap) and the read-only run need root"
    return None


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    why = _missing()
    if why is not None:
        if IN_CI:
            pytest.fail(f"CI must build and run the container image, but: {why}")
        pytest.skip(f"container image not built: {why}")


def _report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n[container] {line}")


# ---------------------------------------------------------------------------------------------
# the image and a working container of it
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """The built image: buildah's store options, its config, its size, the build time."""

    store: list[str]
    config: dict[str, object]
    healthcheck: list[str]
    size_bytes: int
    build_s: float

    def buildah(self, *args: str, timeout: float = 120,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["buildah", *self.store, *args], capture_output=True, text=True,
                           timeout=timeout)
        if check:
            assert r.returncode == 0, f"buildah {shlex.join(args)}:\n{r.stdout}{r.stderr}"
        return r

    @property
    def user(self) -> str:
        return str(self.config["User"])

    @property
    def argv(self) -> list[str]:
        """ENTRYPOINT + CMD."""
        entry = self.config.get("Entrypoint") or []
        cmd = self.config.get("Cmd") or []
        assert isinstance(entry, list) and isinstance(cmd, list)
        return [str(x) for x in (*entry, *cmd)]

    @property
    def env(self) -> dict[str, str]:
        values = self.config.get("Env") or []
        assert isinstance(values, list)
        return dict(str(v).split("=", 1) for v in values)

    @property
    def volumes(self) -> list[str]:
        volumes = self.config.get("Volumes") or {}
        assert isinstance(volumes, dict)
        return sorted(volumes)


@pytest.fixture(scope="module")
def image() -> Image:
    """``deploy/build-image.sh --engine buildah`` (niced: the machine is shared)."""
    t0 = time.monotonic()
    r = subprocess.run(["nice", "-n", "10", "bash", str(SCRIPT), "--engine", "buildah",
                        "--target", "serve", "--tag", TAG],
                       capture_output=True, text=True, timeout=1500, cwd=REPO,
                       env={**os.environ, "GALACTO_IMAGE_CACHE": str(CACHE)})
    build_s = time.monotonic() - t0
    assert r.returncode == 0, f"build failed:\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}"
    driver = (CACHE / "store" / ".driver").read_text().strip()
    store = ["--root", str(CACHE / "store"), "--runroot", str(CACHE / "run"),
             "--storage-driver", driver]
    inspect = subprocess.run(["buildah", *store, "inspect", "--type", "image", TAG],
                             capture_output=True, text=True, timeout=60, check=True)
    info = json.loads(inspect.stdout)
    docker_config = info["Docker"]["config"]
    health = (docker_config.get("Healthcheck") or {}).get("Test") or []
    size = subprocess.run(["podman", *store, "image", "inspect", "--format", "{{.Size}}", TAG],
                          capture_output=True, text=True, timeout=60, check=True)
    return Image(store=store, config=info["OCIv1"]["config"], healthcheck=health,
                 size_bytes=int(size.stdout.strip()), build_s=build_s)


@dataclass(frozen=True)
class Container:
    """A working container of the image (``buildah from``) and its mounted root."""

    name: str
    root: Path


@pytest.fixture(scope="module")
def container(image: Image) -> Iterator[Container]:
    name = f"galacto-test-{uuid.uuid4().hex[:8]}"
    image.buildah("from", "--pull-never", "--name", name, TAG)
    try:
        root = Path(image.buildah("mount", name).stdout.strip())
        yield Container(name, root)
    finally:
        image.buildah("umount", name, check=False)
        image.buildah("rm", name, check=False)


def _run_argv(image: Image, container: Container, argv: list[str], env: dict[str, str],
              volumes: dict[Path, str] | None = None) -> list[str]:
    """``buildah run`` of ``argv`` as the image's user, with the image's environment (buildah
    applies it) plus ``env``, host networking and ``volumes`` bind-mounted."""
    args = ["buildah", *image.store, "run", "--isolation", "chroot", "--network", "host",
            "--user", image.user]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    for host, path in (volumes or {}).items():
        args += ["--volume", f"{host}:{path}"]
    return [*args, container.name, "--", *argv]


def _volumes(image: Image, tmp: Path) -> dict[Path, str]:
    """A fresh host folder for each declared VOLUME, owned by the image's user (as Docker
    fills a new volume from the image's folder)."""
    uid, gid = (int(x) for x in image.user.split(":"))
    out = {}
    for path in image.volumes:
        host = tmp / "volumes" / path.strip("/").replace("/", "-")
        host.mkdir(parents=True)
        os.chown(host, uid, gid)
        out[host] = path
    return out


@contextmanager
def _started(argv: list[str], log: Path, ready_url: str,
             timeout_s: float = 180) -> Iterator[float]:
    """Start ``argv`` in its own process group; yield the seconds until ``ready_url`` answered
    200; stop the whole group at the end."""
    with open(log, "wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        while True:
            assert proc.poll() is None, f"exited ({proc.returncode}):\n{log.read_text()}"
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() - t0 < timeout_s, \
                f"{ready_url} not up in {timeout_s:.0f} s:\n{log.read_text()[-4000:]}"
            time.sleep(0.1)
        yield time.monotonic() - t0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _detect(url: str, files: list[Path]) -> httpx.Response:
    parts = [("file", (f.name, f.read_bytes(), "application/dicom")) for f in files]
    return httpx.post(f"{url}/v1/detect", files=parts, timeout=180,
                      params={"operating_point": "high_sensitivity"},
                      headers={"Authorization": f"Bearer {KEY}"})


def _check_detect(response: httpx.Response, files: list[Path]) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    images = [img for study in body["studies"] for img in study["images"]]
    assert len(images) == len(files)
    assert all(img["findings"] for img in images), body
    assert body["model"]["name"] == "galacto-small"


# ---------------------------------------------------------------------------------------------
# what the image is
# ---------------------------------------------------------------------------------------------


def test_image_config(image: Image, capsys: pytest.CaptureFixture[str]) -> None:
    assert image.user == "10001:10001"
    assert image.argv == ["galacto", "serve"]
    env = image.env
    assert env["GALACTO_AUTH"] == "true" and env["GALACTO_HOST"] == "0.0.0.0"
    assert "GALACTO_API_KEYS" not in env
    assert image.volumes == ["/var/lib/galacto/results", "/var/lib/galacto/spool"]
    assert image.healthcheck[:1] == ["CMD"] and "/readyz" in " ".join(image.healthcheck)
    _report(capsys, f"serve image built in {image.build_s:.0f} s; "
                    f"size {image.size_bytes / 1e6:.0f} MB")


def test_image_holds_no_torch_no_compiler_no_secrets(image: Image,
                                                     container: Container) -> None:
    root = container.root
    # no training packages, seen from the image's own Python
    probe = ("import importlib.util, json, sys; "
             f"print(json.dumps([m for m in {list(TRAIN_ONLY_PACKAGES)!r} "
             "if importlib.util.find_spec(m)]))")
    r = subprocess.run(_run_argv(image, container, ["python", "-c", probe], {}),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []
    assert not list((root / "opt/venv/lib").glob("python3*/site-packages/torch"))

    # no compiler, no build tools (executables or Debian packages)
    compilers = re.compile(r"^(gcc|g\+\+|cc|c\+\+|clang|tcc|make|x86_64-linux-gnu-gcc)(-[\d.]+)?$")
    found = [str(p.relative_to(root)) for d in ("usr/bin", "usr/local/bin", "bin",
                                                 "opt/venv/bin")
             if (root / d).is_dir() for p in (root / d).iterdir() if compilers.match(p.name)]
    assert found == [], found
    status = (root / "var/lib/dpkg/status").read_text()
    installed = {m.group(1) for m in re.finditer(r"^Package: (\S+)\n(?:[^\n]+\n)*?Status: "
                                                 r"install ok installed", status, re.M)}
    assert not installed & {"build-essential", "gcc", "gcc-12", "g++", "g++-12", "make",
                            "cpp", "cpp-12", "libc6-dev", "clang"}, installed

    # no secrets: no VCS folders, key stores or credential files; certificate files hold
    # certificates only; no private key but the public test fixtures a wheel ships
    suspicious = re.compile(r"^(\.git|\.netrc|\.pypirc|\.env|\.dockercfg|id_rsa.*|id_ecdsa.*|"
                            r"id_ed25519.*|.*\.(key|p12|pfx|jks|keystore))$")
    bad, pem = [], []
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root).as_posix()
        if rel in ("proc", "sys", "dev"):
            dirs.clear()
            continue
        for name in [*dirs, *files]:
            path = name if rel == "." else f"{rel}/{name}"
            if suspicious.match(name) and path not in KNOWN_TEST_KEYS:
                bad.append(path)
            if name.endswith((".pem", ".crt")) and not os.path.islink(Path(folder) / name):
                pem.append(path)
    assert bad == [], bad
    for path in pem:
        text = (root / path).read_text(errors="replace")
        assert "PRIVATE KEY" not in text, path
        assert "CERTIFICATE" in text, path
    grep = subprocess.run(["grep", "-rIlZ", "-e", "PRIVATE KEY-----", "--exclude-dir=proc",
                           "--exclude-dir=sys", "--exclude-dir=dev", "."], cwd=root,
                          capture_output=True, timeout=300)
    keys = {p.decode().removeprefix("./") for p in grep.stdout.split(b"\0") if p}
    assert keys <= KNOWN_TEST_KEYS, keys - KNOWN_TEST_KEYS
    # nothing of the build stages: no sources, wheels, pip cache, tests of galacto
    for leftover in ("src", "wheels", "root/.cache/pip", "opt/galacto/tests",
                     "opt/galacto/serving"):
        assert not (root / leftover).exists(), leftover


def test_image_user_writes_only_its_volumes(image: Image, container: Container) -> None:
    """What the image's user owns or may write (static check of the image's files): the
    declared volumes, its home and the sticky temporary folders, nothing else (in
    particular not the virtual environment or the models)."""
    uid = int(image.user.split(":")[0])
    root = container.root
    allowed = [v.strip("/") for v in image.volumes] + ["home/galacto", "tmp", "var/tmp",
                                                       "run/lock", "dev"]
    # the volumes' parent folder itself (the Dockerfile's `chown -R /var/lib/galacto`), which
    # holds nothing else
    parents = {str(Path(v.strip("/")).parent) for v in image.volumes}
    assert parents == {"var/lib/galacto"}, parents
    assert sorted(p.name for p in (root / "var/lib/galacto").iterdir()) == ["results", "spool"]
    writable = []
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root).as_posix()
        if rel in ("proc", "sys"):
            dirs.clear()
            continue
        for name in [*dirs, *files]:
            path = Path(folder) / name
            st = path.lstat()
            if path.is_symlink():
                continue
            if st.st_uid == uid or st.st_mode & 0o002 or (st.st_gid == uid
                                                          and st.st_mode & 0o020):
                relpath = path.relative_to(root).as_posix()
                if relpath not in parents and not any(relpath == a or relpath.startswith(a + "/")
                                                      for a in allowed):
                    writable.append(relpath)
    assert writable == [], writable[:20]
    for volume in image.volumes:
        st = (root / volume.strip("/")).stat()
        assert f"{st.st_uid}:{st.st_gid}" == image.user, volume


# ---------------------------------------------------------------------------------------------
# running it
# ---------------------------------------------------------------------------------------------


def test_refuses_to_start_without_api_keys(image: Image, container: Container) -> None:
    port = free_port()
    r = subprocess.run(_run_argv(image, container, image.argv, {"GALACTO_PORT": str(port)}),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "GALACTO_API_KEYS" in r.stdout + r.stderr, r.stdout + r.stderr


def test_serves_readyz_viewer_and_detect(image: Image, container: Container, tmp_path: Path,
                                         galactogram_files: list[Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = _run_argv(image, container, image.argv,
                     {"GALACTO_API_KEYS": KEY, "GALACTO_PORT": str(port)},
                     _volumes(image, tmp_path))
    with _started(argv, tmp_path / "serve.log", f"{url}/readyz") as start_s:
        page = httpx.get(f"{url}/", timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        for asset in ("viewer.js", "viewer.css"):
            assert httpx.get(f"{url}/static/{asset}", timeout=10).status_code == 200, asset
        refused = httpx.post(f"{url}/v1/detect", timeout=60,
                             files=[("file", ("a.dcm", b"x", "application/dicom"))])
        assert refused.status_code == 401
        assert httpx.get(f"{url}/readyz", headers={"Host": "evil.example"},
                         timeout=10).status_code == 400
        t0 = time.monotonic()
        response = _detect(url, galactogram_files)
        detect_s = time.monotonic() - t0
        _check_detect(response, galactogram_files)

        # the image's HEALTHCHECK, run inside the container: passes now, fails where nothing
        # listens
        assert image.healthcheck[0] == "CMD"
        check = image.healthcheck[1:]
        ok = subprocess.run(_run_argv(image, container, check, {"GALACTO_PORT": str(port)}),
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        bad = subprocess.run(_run_argv(image, container, check,
                                       {"GALACTO_PORT": str(free_port())}),
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0
    _report(capsys, f"start to /readyz {start_s:.1f} s; POST /v1/detect of "
                    f"{len(galactogram_files)} images {detect_s * 1000:.0f} ms")


def test_read_only_root(image: Image, container: Container, tmp_path: Path,
                        galactogram_files: list[Path]) -> None:
    """The image's root mounted read-only, its volumes writable (Docker's ``--read-only``;
    the Kubernetes deployment's ``readOnlyRootFilesystem``, which adds an emptyDir ``/tmp``
    the service does not need): the user can write the volumes only, and the service
    answers a detection of two 8 MiB images."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    new_root = tmp_path / "root"
    new_root.mkdir()
    binds = "".join(f'mount --bind {shlex.quote(str(host))} "$R"{shlex.quote(path)}\n'
                    for host, path in _volumes(image, tmp_path).items())
    env = {**image.env, "GALACTO_API_KEYS": KEY, "GALACTO_PORT": str(port),
           "HOME": "/home/galacto"}
    as_user = ["chroot", f"--userspec={image.user}", '"$R"', "/usr/bin/env", "-i",
               *(shlex.quote(f"{k}={v}") for k, v in env.items())]
    workdir = shlex.quote(str(image.config.get("WorkingDir") or "/"))
    probe = ("for p in /opt/galacto/x /home/galacto/x /etc/x /var/lib/galacto/results/x "
             "/var/lib/galacto/spool/x /tmp/x; do "
             "if touch $p 2>/dev/null; then echo WRITABLE $p; else echo READONLY $p; fi; done")
    script = f"""set -eu
R={shlex.quote(str(new_root))}
mount --bind {shlex.quote(str(container.root))} "$R"
mount -o remount,bind,ro "$R"
{binds}mount -t proc proc "$R/proc"
mount -t tmpfs -o mode=755 tmpfs "$R/dev"
for d in null zero full random urandom; do touch "$R/dev/$d"; mount --bind /dev/$d "$R/dev/$d"; done
{" ".join(as_user)} /bin/sh -c {shlex.quote(probe)}
cd /
exec {" ".join(as_user)} /bin/sh -c {shlex.quote(f'cd {workdir} && exec "$@"')} sh \
    {" ".join(shlex.quote(a) for a in image.argv)}
"""
    log = tmp_path / "read-only.log"
    argv = ["unshare", "--mount", "--propagation", "private", "bash", "-c", script]
    with _started(argv, log, f"{url}/readyz"):
        _check_detect(_detect(url, galactogram_files), galactogram_files)
    lines = log.read_text().splitlines()
    states: dict[str, str] = {}
    for line in lines:
        if line.startswith(("WRITABLE ", "READONLY ")):
            state, path = line.split(maxsplit=1)
            states[path] = state
    assert states == {"/opt/galacto/x": "READONLY", "/home/galacto/x": "READONLY",
                      "/etc/x": "READONLY", "/var/lib/galacto/results/x": "WRITABLE",
                      "/var/lib/galacto/spool/x": "WRITABLE", "/tmp/x": "READONLY"}, lines


def test_gateway_in_the_image_takes_a_storescu_study(image: Image, container: Container,
                                                     tmp_path: Path,
                                                     galactogram_files: list[Path]) -> None:
    port, dicom_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"GALACTO_API_KEYS": KEY, "GALACTO_PORT": str(port),
           "GALACTO_GATEWAY_ENABLED": "true", "GALACTO_GATEWAY_PORT": str(dicom_port),
           "GALACTO_GATEWAY_ALLOWED_CALLERS": f"{CALLER}@127.0.0.1",
           "GALACTO_GATEWAY_QUIET_PERIOD_S": "1"}
    argv = _run_argv(image, container, image.argv, env, _volumes(image, tmp_path))
    auth = {"Authorization": f"Bearer {KEY}"}
    study_uid = str(pydicom.dcmread(galactogram_files[0], stop_before_pixels=True)
                    .StudyInstanceUID)
    storescu = _dcmtk_storescu()
    assert storescu is not None
    with _started(argv, tmp_path / "gateway.log", f"{url}/readyz"):
        r = subprocess.run([storescu, "-aet", CALLER, "-aec", "GALACTO", "127.0.0.1",
                            str(dicom_port), *map(str, galactogram_files)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        deadline = time.monotonic() + 120
        while True:
            listed = httpx.get(f"{url}/v1/jobs", headers=auth, timeout=10)
            assert listed.status_code == 200, listed.text
            jobs = [j for j in listed.json()["jobs"] if j["study_instance_uid"] == study_uid]
            if jobs and jobs[0]["state"] in ("kept", "sent", "failed", "skipped"):
                break
            assert time.monotonic() < deadline, listed.json()
            time.sleep(0.5)
        job = jobs[0]
        assert job["state"] == "kept", job
        assert job["instances_received"] == len(galactogram_files), job
        assert job["findings"] > 0, job
