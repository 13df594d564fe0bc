"""Resource bounds and safe defaults of the HTTP service, one test per fault class.

Server behaviour (connections, deadlines, admission before the body, part counts) is tested
over real sockets against uvicorn run with ``galacto serve``'s own configuration
(:func:`serving.api.server.uvicorn_config`), in a thread of this process or as a ``galacto
serve`` subprocess where the open-file limit matters; app logic (metric labels, Host and
cross-site checks, UID checks, STOW-RS storage, messages) through the TestClient. Limits are
set small (1 s deadlines, 50 parts) so that every test is quick.
"""

from __future__ import annotations

import asyncio
import random
import resource
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from conftest import free_port, stop, wait_until_up
from dicomgen import make_dataset, to_bytes
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.dataset import Dataset

from benchmarks import hostile
from serving.api import analysis as analysis_module
from serving.api.admission import BEHIND_SLACK_S, Ledger
from serving.api.deadlines import BodyClock
from serving.api.errors import ApiError, public_message
from serving.api.main import create_app
from serving.api.routes import detect as detect_module
from serving.api.routes.dicomweb import _study_url
from serving.api.server import connection_cap
from serving.api.store import ResultStore
from serving.api.turns import Turns
from serving.pipeline.errors import InvalidHeaderError, UnsupportedPhotometricError
from serving.settings import Settings, SettingsError
from tests.served_app import on_uvicorn

KEY = "k-bounds-5d0c1e9a7f3b2a64"
DICOM = {"Content-Type": "application/dicom"}
REPO = Path(__file__).resolve().parents[1]


def _related(parts: list[bytes], boundary: str = "bnd") -> tuple[bytes, str]:
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p
                    + b"\r\n" for p in parts) + f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def _small(seed: int = 0, **uids: Any) -> Dataset:
    """A small valid image (256 x 192), with UIDs replaced by ``uids``."""
    ds = make_dataset(rows=256, cols=192, seed=seed)
    for keyword, value in uids.items():
        setattr(ds, keyword, value)
    return ds


# --------------------------------------------------------------------------------------------
# real servers: uvicorn in a thread (galacto serve's configuration), raw sockets
# --------------------------------------------------------------------------------------------


@dataclass
class Running:
    """An app served by uvicorn in a thread of this process."""

    app: FastAPI
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def limiter(self) -> Any:
        return self.app.state.galacto.limiter


@contextmanager
def serving(settings: Settings) -> Iterator[Running]:
    """``create_app(settings)`` on uvicorn as ``galacto serve`` configures it; model loaded."""
    app = create_app(settings)
    with on_uvicorn(app, app, settings):
        yield Running(app, settings.port)


def connect(port: int, timeout_s: float = 10, source: str | None = None) -> socket.socket:
    """A connection to the server, from loopback address ``source`` (another client) when
    given (all of 127.0.0.0/8 is the loopback interface on Linux)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s,
                                    source_address=None if source is None else (source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def closed_after(sock: socket.socket, limit_s: float, trickle: bytes = b"",
                 every_s: float = 0.2) -> float | None:
    """Seconds until the server closed ``sock`` (reading, and sending ``trickle`` one byte
    every ``every_s`` seconds meanwhile), or None if still open after ``limit_s``. Bytes the
    server answered with are ignored."""
    t0 = time.monotonic()
    sock.settimeout(every_s)
    sent = 0
    while time.monotonic() - t0 < limit_s:
        try:
            if trickle:
                sock.sendall(trickle[sent % len(trickle):][:1])
                sent += 1
            if sock.recv(65536) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except OSError:  # reset or broken pipe: closed
            return time.monotonic() - t0
    return None


def read_response(sock: socket.socket, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body (Content-Length bytes) of the next response; raises on
    timeout."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without a response after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "closed inside the response body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in
                                                               headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


#: The in-process server's settings: 1 s header deadline and body grace, 64 KiB/s minimum
#: body rate, one inference slot and a queue of one (two per client, no client ever suspect:
#: the tests share one address), 50 parts at most.
BOUNDS = {"header_timeout_s": 1.0, "body_grace_s": 1.0, "body_timeout_s": 20.0,
          "min_body_rate_kib_s": 64.0, "keep_alive_s": 1, "max_concurrent_inferences": 1,
          "max_queue": 1, "max_admitted_per_client": 2, "suspect_hold_s": 0.0,
          "max_parts": 50, "max_connections": 40, "log_json": True}


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    settings = Settings(port=free_port(), results_dir=tmp_path_factory.mktemp("bounded"),
                        **BOUNDS)  # type: ignore[arg-type]
    with serving(settings) as running:
        yield running


@pytest.fixture
def held_slot(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """``/v1/detect``'s analysis blocks until ``release`` is set; ``calls`` counts runs."""
    state = SimpleNamespace(release=threading.Event(), calls=0)
    real = analysis_module.analyse

    def blocking(*args: Any, **kwargs: Any) -> Any:
        state.calls += 1
        assert state.release.wait(60), "the test never released the slot"
        return real(*args, **kwargs)

    monkeypatch.setattr(detect_module, "analyse", blocking)
    yield state
    state.release.set()


def eventually(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# --------------------------------------------------------------------------------------------
# S3: metric labels from a closed set
# --------------------------------------------------------------------------------------------


def test_method_labels_come_from_a_closed_set(tmp_path: Path) -> None:
    """200 requests with random methods, answered 401 (auth on) and 405 (auth off), leave
    ``/metrics`` with a handful of request series: no method token becomes a label."""
    rng = random.Random(3)
    for keys in ([KEY], []):
        app = create_app(Settings(api_keys=keys, results_dir=tmp_path / "r"))
        client = TestClient(app, base_url="http://localhost")  # no lifespan: no model load
        methods = ["".join(rng.choices(string.ascii_uppercase, k=8)) for _ in range(100)]
        statuses = {client.request(m, "/v1/detect").status_code for m in methods}
        assert statuses == ({401} if keys else {405})
        text = client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
        series = [line for line in text.splitlines()
                  if line.startswith(("galacto_http_requests_total{",
                                      "galacto_http_request_duration_seconds_count{"))]
        assert len(series) <= 6, series
        assert not any(m in text for m in methods)
        assert 'method="other"' in text
        assert len(text) < 20_000


# --------------------------------------------------------------------------------------------
# S4: connection limit, header and body deadlines, open-file limit
# --------------------------------------------------------------------------------------------


def test_idle_and_slow_header_connections_are_closed(bounded: Running) -> None:
    """No bytes, or a byte of header every 0.2 s: closed within the 1 s header deadline."""
    idle = connect(bounded.port)
    slow = connect(bounded.port)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    with idle, slow:
        t_idle = closed_after(idle, 6)
        t_slow = closed_after(slow, 6, trickle=b"X-Slow: abcdefghijklmnopqrstuvwxyz")
    assert t_idle is not None and t_idle < 3, t_idle
    assert t_slow is not None and t_slow < 3, t_slow


@pytest.mark.parametrize("chunked", [False, True], ids=["1-byte-per-0.2s", "endless-chunked"])
def test_slow_bodies_get_408_and_are_closed(bounded: Running, chunked: bool) -> None:
    """A body at 5 bytes/s (declared 1 MB, or chunked and never ending): 408 ``body_timeout``
    once the 1 s grace is over, and the connection is closed."""
    headers = {"Content-Type": "application/dicom",
               **({"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": "1000000"})}
    with connect(bounded.port) as sock:
        sock.sendall(request_head("POST", "/v1/detect", headers))
        t0 = time.monotonic()
        sock.settimeout(0.2)
        answer = b""
        while b"\r\n\r\n" not in answer and time.monotonic() - t0 < 8:
            with suppress(TimeoutError):
                sock.sendall(b"1\r\nD\r\n" if chunked else b"D")
                answer += sock.recv(65536)
        seconds = time.monotonic() - t0
        answer += _rest_of_answer(sock, answer)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"body_timeout" in answer, answer[:400]
        assert seconds < 4, seconds
        assert closed_after(sock, 3) is not None, "the connection stayed open after the 408"


def _rest_of_answer(sock: socket.socket, head: bytes, within_s: float = 2.0) -> bytes:
    """The bytes of the answer still to come after ``head`` (its body may arrive in a later
    segment than its headers): read until Content-Length is met, the peer closes, or
    ``within_s`` passes."""
    header, _, body = head.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in header.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), None)
    rest = b""
    deadline = time.monotonic() + within_s
    sock.settimeout(0.2)
    while (length is None or len(body) + len(rest) < length) and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        rest += chunk
    return rest


def test_connections_beyond_the_cap_are_closed_at_accept(bounded: Running) -> None:
    """With ``max_connections`` (40) open, further connections are closed at once instead of
    holding a file descriptor; the deadline frees the slots and the service answers again."""
    socks = [connect(bounded.port) for _ in range(60)]
    try:
        closed = sum(closed_after(s, 0.5) is not None for s in socks[-20:])
        assert closed == 20, f"{closed} of the 20 connections beyond the cap were closed"
    finally:
        for s in socks:
            s.close()
    time.sleep(1.5)
    assert httpx.get(f"{bounded.url}/healthz", timeout=5).status_code == 200


def test_connection_cap_fits_the_open_file_limit() -> None:
    assert connection_cap(2048, 1 << 20, 128) == 2048
    assert connection_cap(2048, 1024, 128) == 1024 - 128 - 256
    assert connection_cap(2048, 100, 128) == 8


@contextmanager
def serve_process(folder: Path, nofile: tuple[int, int], env: dict[str, str]
                  ) -> Iterator[tuple[int, Path]]:
    """``galacto serve`` started with this open-file limit (soft, hard); yields its port and
    log once ``/healthz`` answers."""
    import os

    port = free_port()
    log = folder / "server.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GALACTO_")}
    environment.update(env)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving.cli", "serve", "--port", str(port),
             "--results-dir", str(folder / "results")], stdout=out, stderr=subprocess.STDOUT,
            env=environment, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                                   nofile))
    try:
        wait_until_up(proc, f"http://127.0.0.1:{port}/healthz", log, 120)
        yield port, log
    finally:
        stop(proc)


def test_healthz_answers_beside_hundreds_of_half_open_requests(tmp_path: Path) -> None:
    """The review's case at a third of the scale: a soft open-file limit of 256 and 300
    half-sent requests. The server raises its soft limit to the hard one, /healthz keeps
    answering, no "out of system resource" is logged, and the header deadline (1 s) closes
    the half-open connections."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"hard open-file limit {hard}: too low to raise")
    with serve_process(tmp_path, (256, hard), {"GALACTO_HEADER_TIMEOUT_S": "1",
                                               "GALACTO_ORT_THREADS": "1"}) as (port, log):
        socks = []
        try:
            for _ in range(300):
                s = connect(port)
                s.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
                socks.append(s)
            times = []
            with httpx.Client(timeout=5) as client:
                for _ in range(10):
                    t0 = time.perf_counter()
                    assert client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
                    times.append(time.perf_counter() - t0)
            assert sorted(times)[-1] < 1.0, times
            assert all(closed_after(s, 4) is not None for s in socks[:20])
        finally:
            for s in socks:
                s.close()
        assert "out of system resource" not in log.read_text()


# --------------------------------------------------------------------------------------------
# S5: admission before the body; work of a client gone is dropped
# --------------------------------------------------------------------------------------------


def _post_in_background(port: int, body: bytes) -> threading.Thread:
    def post() -> None:
        with suppress(httpx.HTTPError):
            httpx.post(f"http://127.0.0.1:{port}/v1/detect", content=body, headers=DICOM,
                       timeout=60)
    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def test_busy_is_answered_before_the_body_is_read(bounded: Running,
                                                  held_slot: SimpleNamespace) -> None:
    """One slot running, the queue's one place taken by a request still uploading: a third
    upload gets 503 ``busy`` with Retry-After while not one byte of its 8 MB body was sent;
    its connection is kept only for the drain deadline (1 s) when no body follows."""
    first = _post_in_background(bounded.port, to_bytes(_small()))
    eventually(lambda: held_slot.calls == 1)
    uploading = connect(bounded.port)
    uploading.sendall(request_head("POST", "/v1/detect", {**DICOM, "Content-Length": "100000"}))
    uploading.sendall(b"\0" * 1000)
    eventually(lambda: bounded.limiter.admitted == 2)
    with connect(bounded.port) as third:
        third.sendall(request_head("POST", "/v1/detect", {**DICOM, "Content-Length": "8000000"}))
        status, headers, body = read_response(third, timeout_s=5)
        assert status == 503 and "retry-after" in headers and b'"busy"' in body
        t_closed = closed_after(third, 5)
        assert t_closed is not None and t_closed < 3, t_closed
    uploading.close()
    held_slot.release.set()
    first.join(60)


def test_work_of_a_client_gone_is_not_run(bounded: Running, held_slot: SimpleNamespace) -> None:
    """A request queued behind a running one whose client disconnects leaves the queue at
    once, and its analysis never runs (counted in ``galacto_requests_dropped_total``)."""
    first = _post_in_background(bounded.port, to_bytes(_small()))
    eventually(lambda: held_slot.calls == 1)
    dropped = bounded.limiter.dropped
    body = to_bytes(_small(seed=1))
    with connect(bounded.port) as gone:
        gone.sendall(request_head("POST", "/v1/detect", {**DICOM,
                                                         "Content-Length": str(len(body))}))
        gone.sendall(body)
        eventually(lambda: bounded.limiter.queued == 1)  # read whole, waiting for the slot
    eventually(lambda: bounded.limiter.admitted == 1)  # its place is freed, the slot still held
    assert bounded.limiter.dropped == dropped + 1
    held_slot.release.set()
    first.join(60)
    eventually(lambda: bounded.limiter.admitted == 0)
    assert held_slot.calls == 1
    assert bounded.limiter.dropped == dropped + 1
    metrics = httpx.get(f"{bounded.url}/metrics", timeout=10).text
    assert "galacto_requests_dropped_total 1.0" in metrics


def test_client_gone_mid_upload_is_not_an_internal_error(bounded: Running) -> None:
    """A client that closes halfway through its body is answered 499 in the log and the
    metrics, not 500, and frees its admission."""
    with connect(bounded.port) as sock:
        sock.sendall(request_head("POST", "/v1/detect", {**DICOM, "Content-Length": "5000"}))
        sock.sendall(b"\0" * 100)
        eventually(lambda: bounded.limiter.admitted == 1)
    eventually(lambda: bounded.limiter.admitted == 0)
    metrics = httpx.get(f"{bounded.url}/metrics", timeout=10).text
    assert 'endpoint="/v1/detect",method="POST",status="499"' in metrics
    assert 'status="500"' not in metrics


# --------------------------------------------------------------------------------------------
# Availability under a hostile mix: triage outside the slot, fair admission
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["deflate_bomb", "element_flood"])
def test_refused_part_does_not_wait_for_the_slot(bounded: Running, held_slot: SimpleNamespace,
                                                 kind: str) -> None:
    """With the inference slot held by a long valid request, a deflate bomb (or an element
    flood) is refused by triage and answered in under a second; it never reaches the slot."""
    body = hostile.deflate_bomb() if kind == "deflate_bomb" else hostile.element_flood(20)
    first = _post_in_background(bounded.port, to_bytes(_small()))
    eventually(lambda: held_slot.calls == 1)
    t0 = time.perf_counter()
    r = httpx.post(f"{bounded.url}/v1/detect", content=body, headers=DICOM, timeout=30)
    seconds = time.perf_counter() - t0
    expected = "image_too_large" if kind == "deflate_bomb" else "invalid_header"
    assert (r.status_code, r.json()["detail"]) == ((413 if kind == "deflate_bomb" else 400),
                                                   expected), r.text[:300]
    assert seconds < 1.0, seconds
    assert held_slot.calls == 1 and bounded.limiter.queued == 0
    held_slot.release.set()
    first.join(60)


def _slow_upload(port: int, source: str) -> socket.socket:
    """A request from ``source`` declaring 100 kB of body and sending 10 bytes of it."""
    sock = connect(port, source=source)
    sock.sendall(request_head("POST", "/v1/detect", {**DICOM, "Content-Length": "100000"}))
    sock.sendall(b"\0" * 10)
    return sock


def _post_from(port: int, source: str, body: bytes) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=60) as client:
        return client.post(f"http://127.0.0.1:{port}/v1/detect", content=body, headers=DICOM)


def test_slow_bodies_of_one_client_cannot_keep_another_out(tmp_path: Path) -> None:
    """Every place (1 slot + 1 queued) taken by two slow bodies (10 bytes of 100 kB) of one
    client: a third request of that client gets 503 ``busy`` at once (its share is 2); a
    request of another client takes the place of one slow body (503 ``busy``, connection
    closed) and is answered 200."""
    settings = Settings(port=free_port(), results_dir=tmp_path / "r",
                        **{**BOUNDS, "body_grace_s": 10.0})  # type: ignore[arg-type]
    with serving(settings) as running:
        slow = [_slow_upload(running.port, "127.0.0.2") for _ in range(2)]
        try:
            eventually(lambda: running.limiter.admitted == 2)
            third = _post_from(running.port, "127.0.0.2", to_bytes(_small()))
            assert (third.status_code, third.json()["detail"]) == (503, "busy")
            assert "GALACTO_MAX_ADMITTED_PER_CLIENT" in third.json()["message"]
            time.sleep(BEHIND_SLACK_S + 0.3)  # both slow bodies are behind the minimum rate
            other = _post_from(running.port, "127.0.0.3", to_bytes(_small(seed=1)))
            assert other.status_code == 200, other.text[:300]
            answers = [_answer(s) for s in slow]
            assert running.limiter.ledger.displaced == 1
        finally:
            for s in slow:
                s.close()
    assert sorted(answers, key=str) == [503, None], answers


def _answer(sock: socket.socket) -> int | None:
    """The status the server answered on ``sock`` (within 0.5 s), or None."""
    try:
        return read_response(sock, timeout_s=0.5)[0]
    except TimeoutError:
        return None


def _clock(waited_s: float, received: int) -> BodyClock:
    return BodyClock(grace_s=10, min_rate=1000, total_s=600, waited_s=waited_s,
                     received=received)


def test_fair_admission_policy() -> None:
    """The policy of serving.api.admission: a client's share; a place taken only from a body
    read behind the minimum rate, of a client holding at least as many as the newcomer will;
    the client holding most, then the read waiting longest, gives its place first."""
    def busy(reason: str) -> ApiError:
        return ApiError(503, "busy", reason)

    async def scenario() -> None:
        ledger = Ledger(capacity=3, per_client=2, retry_after_s=5)
        at_rate = ledger.admit("a", _clock(5.0, 6000), busy)  # 1000 B/s: keeps its place
        slow_b = ledger.admit("b", _clock(5.0, 10), busy)
        slow_c = ledger.admit("c", _clock(9.0, 10), busy)
        with pytest.raises(ApiError, match="every place"):
            ledger.admit("a", None, busy)  # a would hold 2: no client holds 2
        ledger.admit("d", None, busy)  # takes the longest-waiting slow read: c's
        assert slow_c.displaced and not slow_b.displaced and not at_rate.displaced
        assert ledger.held_by("d") == 1 and len(ledger.entries) == 3

        most = Ledger(capacity=3, per_client=2, retry_after_s=5)
        f1, f2 = (most.admit("f", _clock(3.0, 10), busy) for _ in range(2))
        g = most.admit("g", _clock(9.0, 10), busy)
        with pytest.raises(ApiError, match="GALACTO_MAX_ADMITTED_PER_CLIENT"):
            most.admit("f", None, busy)  # f holds its share
        most.admit("h", None, busy)
        assert (f1.displaced or f2.displaced) and not g.displaced

    asyncio.run(scenario())


def test_suspect_clients_share_half_the_places_and_wait_for_triage() -> None:
    """Clients refused as hostile recently hold half of the places together, a client in
    good standing takes a suspect's place even from a body at the minimum rate, and triage
    turns go to clients in good standing first."""
    def busy(reason: str) -> ApiError:
        return ApiError(503, "busy", reason)

    async def scenario() -> list[str]:
        ledger = Ledger(capacity=4, per_client=2, retry_after_s=5, suspect_hold_s=60)
        for client in ("s1", "s2", "s3"):
            ledger.suspects.mark(client)
        for client in ("s1", "s2"):
            ledger.admit(client, _clock(5.0, 6000), busy)  # suspects at the minimum rate
        with pytest.raises(ApiError, match="share 2 place"):
            ledger.admit("s3", None, busy)
        ledger.admit("good", None, busy)
        ledger.admit("good", None, busy)
        ledger.admit("new", None, busy)  # full: a suspect's read gives way, at rate or not
        assert ledger.displaced == 1 and ledger.held_by("new") == 1

        turns, order = Turns(1), []

        async def triage(name: str, suspect: bool) -> None:
            async with turns.turn(suspect):
                order.append(name)
                await asyncio.sleep(0.01)

        first = asyncio.create_task(triage("first", False))
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(triage("suspect", True)),
                   asyncio.create_task(triage("good", False))]
        await asyncio.gather(first, *waiting)
        return order

    assert asyncio.run(scenario()) == ["first", "good", "suspect"]


# --------------------------------------------------------------------------------------------
# S10: multipart part count, while streaming
# --------------------------------------------------------------------------------------------


def test_part_count_is_refused_while_the_body_streams(bounded: Running) -> None:
    """60 empty parts (the limit is 50) of a chunked body that never ends: 413
    ``too_many_parts`` without waiting for the rest."""
    part = b"--b\r\nContent-Type: application/dicom\r\n\r\n\r\n"
    with connect(bounded.port) as sock:
        sock.sendall(request_head("POST", "/dicomweb/studies", {
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
            "Transfer-Encoding": "chunked"}))
        payload = part * 60
        sock.sendall(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        status, _, rest = read_response(sock, timeout_s=5)
        assert status == 413 and b"too_many_parts" in rest


# --------------------------------------------------------------------------------------------
# S7: fail-closed defaults, Host check, cross-site posts
# --------------------------------------------------------------------------------------------


def test_non_loopback_host_without_keys_refuses_to_start() -> None:
    """``galacto serve --host 0.0.0.0`` without keys exits non-zero with a clear error;
    keys or an explicit ``GALACTO_AUTH=off`` / ``--no-auth`` start."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("GALACTO_")}
    r = subprocess.run([sys.executable, "-m", "serving.cli", "serve", "--host", "0.0.0.0",
                        "--port", str(free_port())], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0
    assert "GALACTO_API_KEYS" in r.stderr and "GALACTO_AUTH=off" in r.stderr, r.stderr[-2000:]
    with pytest.raises(SettingsError, match="no API key"):
        Settings(host="0.0.0.0").check_safe()
    with pytest.raises(SettingsError):
        Settings(host="galacto.example.org").check_safe()
    Settings(host="0.0.0.0", auth=False).check_safe()  # explicitly off
    Settings(host="0.0.0.0", api_keys=[KEY]).check_safe()
    Settings().check_safe()  # the README's first command: loopback, no keys
    Settings(host="::1").check_safe()


def test_host_header_must_be_allowed(tmp_path: Path) -> None:
    """DNS rebinding: a Host that is not an allowed name is refused (400) on every route,
    the probes included; loopback names and the configured ones pass."""
    client = TestClient(create_app(Settings(results_dir=tmp_path / "r")))
    for host in ("attacker.example", "attacker.example:8000", "localhost.attacker.example"):
        for path in ("/healthz", "/v1/models", "/dicomweb/studies/1.2.3/metadata"):
            assert client.get(path, headers={"Host": host}).status_code == 400, (host, path)
    for host in ("localhost", "127.0.0.1:8000", "[::1]:8000"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
    wide = TestClient(create_app(Settings(results_dir=tmp_path / "r",
                                          allowed_hosts="ai.example.org,*.svc")))
    assert wide.get("/healthz", headers={"Host": "ai.example.org"}).status_code == 200
    assert wide.get("/healthz", headers={"Host": "galacto.ns.svc:8000"}).status_code == 200
    # loopback names stay accepted: the image's HEALTHCHECK asks 127.0.0.1 (and a page
    # cannot name them by DNS rebinding)
    assert wide.get("/healthz", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert wide.get("/healthz", headers={"Host": "elsewhere.example"}).status_code == 400


@pytest.mark.parametrize("ctype", ["multipart/form-data; boundary=x",
                                   "application/x-www-form-urlencoded", "text/plain"])
def test_cross_site_posts_are_refused(tmp_path: Path, ctype: str) -> None:
    """A browser's form post from another site (Origin or Sec-Fetch-Site say so): 403
    ``cross_site_request``; same-origin posts and clients without those headers pass."""
    client = TestClient(create_app(Settings(results_dir=tmp_path / "r")),
                        base_url="http://localhost:8000")
    for extra in ({"Origin": "http://attacker.example"}, {"Origin": "null"},
                  {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                  {"Origin": "http://localhost:3000"}):
        r = client.post("/v1/detect", content=b"x", headers={"Content-Type": ctype, **extra})
        assert (r.status_code, r.json()["detail"]) == (403, "cross_site_request"), extra
    for extra in ({}, {"Origin": "http://localhost:8000", "Sec-Fetch-Site": "same-origin"}):
        r = client.post("/v1/detect", content=b"x", headers={"Content-Type": ctype, **extra})
        assert r.status_code != 403, (extra, r.text)


# --------------------------------------------------------------------------------------------
# S8, S9, S11: result UIDs at intake, STOW-RS stores all good or nothing, RetrieveURL
# --------------------------------------------------------------------------------------------


PUBLIC = "https://ai.example.org/galacto"


@pytest.fixture(scope="module")
def stow_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    results = tmp_path_factory.mktemp("stow") / "results"
    app = create_app(Settings(results_dir=results, public_base_url=PUBLIC))
    with TestClient(app, base_url="http://localhost") as client:
        app.state.galacto.wait_loaded(120)
        yield client, results


EMPTY_STUDY = {"StudyInstanceUID": ""}
TWO_STUDIES = {"StudyInstanceUID": ["1.2.3.4", "1.2.3.5"]}


@pytest.mark.parametrize(("uids", "output"), [(EMPTY_STUDY, "sr"), (TWO_STUDIES, "tid1500"),
                                              (EMPTY_STUDY, "gsps"), (TWO_STUDIES, "sr")])
def test_result_uids_are_checked_at_intake(stow_client: tuple[TestClient, Path],
                                           uids: dict[str, Any], output: str) -> None:
    """An empty or multi-valued Study Instance UID with a DICOM output: 400 ``invalid_uid``
    for that instance, not a 500; the JSON output does not need it."""
    client, _ = stow_client
    data = to_bytes(_small(**uids))
    r = client.post(f"/v1/detect?output={output}", content=data, headers=DICOM)
    assert (r.status_code, r.json()["detail"]) == (400, "invalid_uid"), r.text
    assert "StudyInstanceUID" in r.json()["message"]
    assert client.post("/v1/detect", content=data, headers=DICOM).status_code == 200


def _stow_items(body: dict[str, Any], tag: str) -> list[Dataset]:
    return list(Dataset.from_json({tag: body[tag]})[tag].value) if tag in body else []


def test_stow_stores_the_good_instances_once_and_lists_the_bad(
        stow_client: tuple[TestClient, Path]) -> None:
    """A good instance beside one with an empty and one with a multi-valued Study Instance
    UID: 202, the bad ones in FailedSOPSequence (0xA900), the good one's results stored once;
    RetrieveURL on GALACTO_PUBLIC_BASE_URL, not the Host header."""
    client, results = stow_client
    before = set(results.rglob("*.dcm"))
    good = _small(seed=4)
    bad = [_small(seed=5, **EMPTY_STUDY), _small(seed=6, **TWO_STUDIES)]
    body, ctype = _related([to_bytes(good), *(to_bytes(b) for b in bad)])
    r = client.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 202, r.text
    answer = r.json()
    failed = _stow_items(answer, "00081198")
    assert sorted(str(i.ReferencedSOPInstanceUID) for i in failed) == \
        sorted(str(b.SOPInstanceUID) for b in bad)
    assert {int(i.FailureReason) for i in failed} == {0xA900}
    [ok] = _stow_items(answer, "00081199")
    assert ok.ReferencedSOPInstanceUID == good.SOPInstanceUID
    stored = set(results.rglob("*.dcm")) - before
    assert len(stored) == 3  # sr, tid1500, gsps: once each
    assert {str(dcmread(p).StudyInstanceUID) for p in stored} == {str(good.StudyInstanceUID)}
    assert answer["00081190"]["Value"] == [f"{PUBLIC}/dicomweb/studies/{good.StudyInstanceUID}"]


def test_nothing_is_stored_when_storing_fails_midway(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    datasets = [_small(seed=i) for i in range(3)]
    datasets[2].StudyInstanceUID = "1.02"  # refused by the store
    with pytest.raises(Exception, match="UID"):
        store.put_all(datasets)
    assert not list(tmp_path.rglob("*.dcm"))


def test_retrieve_url_needs_a_checked_host() -> None:
    """Without a public base URL: the request's base URL when the Host was checked against an
    allow-list, no RetrieveURL when GALACTO_ALLOWED_HOSTS=* (Host unchecked)."""
    request = SimpleNamespace(base_url="http://localhost:8000/")
    for allowed, expected in (("", "http://localhost:8000/dicomweb/studies/1.2"),
                              ("*", None)):
        state = SimpleNamespace(settings=Settings(allowed_hosts=allowed))
        assert _study_url(request, state, "1.2") == expected  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Info: messages quote technical values only; WADO-RS off the event loop; retention
# --------------------------------------------------------------------------------------------


def test_messages_quote_only_technical_values() -> None:
    leaked = InvalidHeaderError("not a number", attribute="PatientWeight (0010,1030)",
                                value="Sentinel^Jane")
    assert "Sentinel" not in public_message(leaked)
    assert "PatientWeight (0010,1030)" in public_message(leaked)
    anywhere = InvalidHeaderError("cannot be parsed", value="Sentinel^Jane")
    assert "Sentinel" not in public_message(anywhere)
    technical = UnsupportedPhotometricError("unsupported",
                                            attribute="PhotometricInterpretation (0028,0004)",
                                            value="PALETTE COLOR", expected="MONOCHROME2")
    assert "'PALETTE COLOR'" in public_message(technical)
    long = UnsupportedPhotometricError("x", attribute="PhotometricInterpretation (0028,0004)",
                                       value="Y" * 200)
    assert len(public_message(long)) < 140


def test_wado_reads_files_off_the_event_loop(stow_client: tuple[TestClient, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    client, results = stow_client
    study = next(results.iterdir()).name
    on_loop: list[bool] = []
    store = client.app.state.galacto.store  # type: ignore[attr-defined]
    real = store.find

    def find(*args: Any) -> list[Path]:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return real(*args)

    monkeypatch.setattr(store, "find", find)
    assert client.get(f"/dicomweb/studies/{study}").status_code == 200
    assert client.get(f"/dicomweb/studies/{study}/metadata").status_code == 200
    assert on_loop == [False, False]


def test_results_older_than_the_retention_are_purged(tmp_path: Path) -> None:
    import os

    store = ResultStore(tmp_path)
    old, new = store.put(_small(seed=1)), store.put(_small(seed=2))
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    os.utime(old.parent, (time.time() - 3 * 86400,) * 2)
    assert store.purge(2 * 86400) == 1
    assert not old.exists() and new.exists()


def test_placeholder_keys_are_refused_whatever_their_length() -> None:
    """A key made of placeholder words is refused even when it is long enough."""
    from serving.settings import Settings, SettingsError

    for key in ("changeme-changeme-changeme", "my-secret-key-1234567", "your_api_key_here_0001"):
        with pytest.raises(SettingsError, match="placeholder"):
            Settings(api_keys=[key], auth=True).check_safe()
    Settings(api_keys=["Xq9_7bN2kP0vLm4sQw8e"], auth=True).check_safe()
