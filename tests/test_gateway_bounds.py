"""Resource bounds of the DICOM gateway against hostile or careless peers, over real sockets
and real pynetdicom associations (the gateway runs in process on a free localhost port).

- Connections (:mod:`serving.gateway.admission`): TCP connect+close floods, idle and half-sent
  A-ASSOCIATE-RQs, an A-ASSOCIATE-RQ declaring 400 MB, peers outside a host allow-list.
- Parsing (S1): a deflate bomb and an element flood sent by C-STORE are refused by the guarded
  reader, fast and with bounded memory; the worker parses spooled files under the same guards.
- The spool (S6): files of finished jobs are released (skipped at once, the others after the
  retention period or by ``galacto gateway purge``), so a stream of non-galactogram studies
  cannot lock a galactogram out; a released study sent again is analysed again.
- Fail-closed start: a listener on a non-loopback address needs an allow-list (or an explicit
  ``allow_any``).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dicomgen import make_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from test_gateway import Destination, echo, eventually, free_port, job_of, new_study, store

from benchmarks import hostile
from serving.dicom_status import CANNOT_UNDERSTAND, OUT_OF_RESOURCES
from serving.gateway import Gateway, GatewayError, GatewaySettings, JobState
from serving.gateway.retention import RetentionSweeper
from serving.gateway.spool import JobStateError, Spool, StoreOutcome
from serving.pipeline.model import DetectorModel
from tests.gateway_helpers import QUIET_S, clear_gateway_env, gateway_factory
from tests.memory import peak_rss, reset_peak_rss

MB = 1_000_000
#: Most the peak RSS may grow while one hostile instance is refused.
RSS_BOUND = 100 * MB
US_IMAGE = {"modality": "US"}


@pytest.fixture(autouse=True)
def _no_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_gateway_env(monkeypatch)


@pytest.fixture
def make_gateway(tmp_path: Path, bundled_model: DetectorModel
                 ) -> Iterator[Callable[..., Gateway]]:
    """Start gateways on a free port with tiny timings and no send retries; all stopped at
    the end."""
    with gateway_factory(tmp_path / "spool", bundled_model, send_retries=0) as make:
        yield make


def timed_echo(port: int) -> tuple[int | None, float]:
    """``(C-ECHO status or None when refused, seconds)``."""
    t0 = time.perf_counter()
    status = echo(port)
    return status, time.perf_counter() - t0


def closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """True when the peer closes ``sock`` (EOF or reset) within ``within_s`` seconds."""
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def refused(gw: Gateway, reason: str) -> float:
    """Connections the gateway refused before association, for this reason."""
    return float(gw.metrics.connections_refused.labels(reason)._value.get())


# --------------------------------------------------------------------------------------------
# S2: connections
# --------------------------------------------------------------------------------------------


def test_connect_close_flood_does_not_lock_out_the_pacs(
        make_gateway: Callable[..., Gateway], galactogram_files: list[Path]) -> None:
    """Ten TCP connect+close (no DICOM byte) left ten pynetdicom associations waiting for
    their A-ASSOCIATE-RQ until the ACSE timeout, and the allowed PACS got "local limit
    exceeded"; now they never become associations."""
    gw = make_gateway(allowed_callers="TESTSCU@127.0.0.1")
    for _ in range(10):
        socket.create_connection(("127.0.0.1", gw.port)).close()
    status, seconds = timed_echo(gw.port)
    assert status == 0 and seconds < 1.0, (status, seconds)
    assert store(gw.port, new_study(galactogram_files[:1])) == [0]
    eventually(lambda: refused(gw, "closed") == 10, timeout_s=5)


def test_idle_and_half_sent_requests_do_not_hold_slots(
        make_gateway: Callable[..., Gateway]) -> None:
    """Twenty idle connections and five half-sent A-ASSOCIATE-RQs (more than the ten slots)
    do not stop a valid association, and each is closed at the request deadline."""
    gw = make_gateway(association_request_timeout_s=1.0)
    idle = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(20)]
    half = []
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", gw.port))
        sock.sendall(struct.pack(">BBL", 0x01, 0, 1000) + b"\x00" * 100)
        half.append(sock)
    try:
        time.sleep(0.2)
        status, seconds = timed_echo(gw.port)
        assert status == 0 and seconds < 1.0, (status, seconds)
        assert all(closed_by_peer(s, within_s=3.0) for s in idle + half)
        eventually(lambda: refused(gw, "timeout") == 25, timeout_s=5)
    finally:
        for sock in idle + half:
            sock.close()


def test_huge_associate_request_is_dropped_unread(make_gateway: Callable[..., Gateway]) -> None:
    """A PDU header declaring a 400 MB A-ASSOCIATE-RQ: closed after the 6-byte header, no
    byte of the body buffered (pynetdicom read it whole: about 960 MB peak); the gateway
    keeps serving."""
    gw = make_gateway()
    before = reset_peak_rss()
    sent, chunk = 0, b"\x00" * (1024 * 1024)
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.settimeout(5)
        sock.sendall(struct.pack(">BBL", 0x01, 0, 400 * 1024 * 1024))
        try:
            while sent < 400 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except (ConnectionError, TimeoutError):
            pass
    seconds = time.perf_counter() - t0
    growth = peak_rss() - before
    assert sent < 64 * 1024 * 1024, f"{sent / MB:.0f} MB were accepted"
    assert growth < 50 * MB, f"peak RSS grew by {growth / MB:.0f} MB"
    assert seconds < 2.0
    assert refused(gw, "too_large") == 1
    assert echo(gw.port) == 0


def test_host_allow_list_closes_other_addresses_at_accept(
        make_gateway: Callable[..., Gateway]) -> None:
    """When every allow-list entry names a host, a connection from another address is
    closed at accept, before any byte is read (an AE title would be spoofable anyway)."""
    gw = make_gateway(allowed_callers="PACS@10.99.99.99, MODALITY@192.0.2.0/24")
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        assert closed_by_peer(sock, within_s=1.0)
    assert echo(gw.port, calling="PACS") is None
    assert refused(gw, "address") == 2
    gw.stop()
    local = make_gateway(allowed_callers="TESTSCU@127.0.0.0/8")  # the right host: admitted
    assert echo(local.port) == 0


# --------------------------------------------------------------------------------------------
# S7: fail-closed start
# --------------------------------------------------------------------------------------------


def test_non_loopback_listener_needs_an_allow_list(
        make_gateway: Callable[..., Gateway], caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(GatewayError, match=r"ALLOWED_CALLERS.*ALLOW_ANY=true"):
        make_gateway(host="0.0.0.0")
    gw = make_gateway(host="0.0.0.0", allow_any=True)
    assert echo(gw.port) == 0
    gw.stop()
    with caplog.at_level(logging.WARNING, logger="galacto.gateway"):
        make_gateway(host="0.0.0.0", allowed_callers="PACS, TESTSCU@127.0.0.1")
    [warning] = [r.getMessage() for r in caplog.records if "names no host" in r.getMessage()]
    assert "PACS@host is the secure form" in warning
    assert GatewaySettings(host="localhost").exposure_error() is None
    assert GatewaySettings(host="::").exposure_error() is not None


# --------------------------------------------------------------------------------------------
# S1: parsing hostile instances
# --------------------------------------------------------------------------------------------


@pytest.fixture
def chunked_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the test SCU send a file's bytes as they are (pynetdicom does not decode them)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def c_store_file(port: int, path: Path, syntax: str) -> tuple[int, float, int]:
    """``(status, seconds, peak RSS growth in bytes)`` of one C-STORE of the file at ``path``
    (an MG instance in transfer syntax ``syntax``)."""
    ae = AE("TESTSCU")
    ae.add_requested_context(hostile.MG_FOR_PRESENTATION, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="GALACTO")
    assert assoc.is_established
    try:
        before = reset_peak_rss()
        t0 = time.perf_counter()
        status = int(assoc.send_c_store(path).Status)
        return status, time.perf_counter() - t0, peak_rss() - before
    finally:
        assoc.release()


@pytest.mark.parametrize(("kind", "syntax", "max_s"), [
    ("deflate_bomb", DeflatedExplicitVRLittleEndian, 1.0),
    ("element_flood", ExplicitVRLittleEndian, 2.0),  # 20 MB on the wire, most of the time
])
def test_hostile_instance_is_refused_by_c_store_cheaply(
        make_gateway: Callable[..., Gateway], chunked_send: None, tmp_path: Path, kind: str,
        syntax: str, max_s: float, caplog: pytest.LogCaptureFixture) -> None:
    """A 2 MB deflated instance inflating to 2.1 GiB, and a 20 MB flood of empty elements,
    got ``pydicom.dcmread`` in the C-STORE handler (4.5 GB peak, 23 s): now 0xC000 from the
    guarded reader, within ``max_s`` seconds for the whole C-STORE, the RSS growing by less
    than 100 MB, nothing spooled, and a log line naming the intake's error code."""
    gw = make_gateway()
    path = tmp_path / f"{kind}.dcm"
    path.write_bytes(getattr(hostile, kind)())
    with caplog.at_level(logging.WARNING, logger="galacto.gateway"):
        status, seconds, growth = c_store_file(gw.port, path, syntax)
    assert status == CANNOT_UNDERSTAND
    assert seconds < max_s, f"{kind}: {seconds:.2f} s"
    assert growth < RSS_BOUND, f"{kind}: peak RSS grew by {growth / MB:.0f} MB"
    assert gw.jobs() == [] and gw.spool.used_bytes == 0
    code = {"deflate_bomb": "image_too_large", "element_flood": "invalid_header"}[kind]
    assert any(code in r.getMessage() for r in caplog.records)
    assert echo(gw.port) == 0


def test_instance_over_the_size_limit_is_refused_before_parsing(
        make_gateway: Callable[..., Gateway], chunked_send: None, tmp_path: Path) -> None:
    gw = make_gateway(max_instance_mb=1)
    path = tmp_path / "flood.dcm"
    path.write_bytes(hostile.element_flood(2))
    status, _, _ = c_store_file(gw.port, path, ExplicitVRLittleEndian)
    assert status == OUT_OF_RESOURCES
    assert gw.metrics.instances.labels("refused_quota")._value.get() == 1


def test_worker_parses_spooled_files_under_the_guards(
        tmp_path: Path, bundled_model: DetectorModel, galactogram_files: list[Path]) -> None:
    """A bomb already in the spool (written there by an older version, say) is skipped by
    the worker with the intake's code, cheaply, beside the study's real images."""
    gw = Gateway(GatewaySettings(spool_dir=tmp_path / "spool"), model=bundled_model)
    gw.open()  # no scheduler: this test runs the job itself
    try:
        study = generate_uid()
        for path in galactogram_files:
            ds = new_study([path])[0]
            gw.spool.store(path.read_bytes(), study_uid=study, sop_uid=str(ds.SOPInstanceUID),
                           sop_class_uid=str(ds.SOPClassUID), calling_ae="TESTSCU")
        stored = gw.spool.store(hostile.deflate_bomb(), study_uid=study,
                                sop_uid=hostile.HOSTILE_SOP_INSTANCE,
                                sop_class_uid=hostile.MG_FOR_PRESENTATION, calling_ae="TESTSCU")
        gw.spool.mark_waiting(stored.job_id)
        before = reset_peak_rss()
        job = gw.process_now(stored.job_id)
        growth = peak_rss() - before
    finally:
        gw.close()
    assert job.state is JobState.KEPT and job.instances_analysed == 2
    [skipped] = job.skipped
    assert skipped.reason.startswith("image_too_large:")
    assert job.timings_ms["read"] < 5000
    assert growth < 1000 * MB, f"peak RSS grew by {growth / MB:.0f} MB"  # with two real images


# --------------------------------------------------------------------------------------------
# S6: the spool does not fill for good
# --------------------------------------------------------------------------------------------


def big_us_study() -> list[Any]:
    """A one-instance study the triage skips (wrong modality), of about 4 MiB."""
    return [make_dataset(rows=2048, cols=1024, modality="US")]


def test_non_galactogram_studies_cannot_lock_out_a_galactogram(
        make_gateway: Callable[..., Gateway], galactogram_files: list[Path]) -> None:
    """PACS routing sends whole studies: non-galactogram studies fill the quota once (0xA700
    while they wait for their quiet period), are skipped, their files are released at once,
    and a galactogram study is accepted afterwards."""
    study_bytes = sum(p.stat().st_size for p in galactogram_files)
    # a quiet period long enough that the studies are still held when the next ones come,
    # however slow a shared machine is
    gw = make_gateway(spool_max_mb=study_bytes * 1.2 / 2**20, quiet_period_s=5.0)
    studies = [big_us_study() for _ in range(8)]
    statuses = []
    for study in studies:
        statuses += store(gw.port, study)
    assert OUT_OF_RESOURCES in statuses and statuses[0] == 0, statuses

    def all_skipped() -> bool:
        jobs = gw.jobs()
        return bool(jobs) and all(j.state is JobState.SKIPPED for j in jobs)

    eventually(all_skipped, timeout_s=30)
    assert gw.spool.used_bytes == 0
    assert not list((gw.settings.spool_dir / "instances").rglob("*.dcm"))
    images = new_study(galactogram_files)
    assert store(gw.port, images) == [0, 0]
    job = gw.wait(job_of(gw, str(images[0].StudyInstanceUID)), timeout_s=60)
    assert job.state is JobState.KEPT, job.skipped


def test_retention_releases_failed_and_kept_jobs(
        make_gateway: Callable[..., Gateway], galactogram_files: list[Path]) -> None:
    """A failed job (destination down) keeps its instance files and results for re-send
    until the retention period is over; then they are released, the job cannot be re-sent,
    and the same study sent again is a new job, analysed again."""
    down = Destination(port=free_port())
    gw = make_gateway(**down.settings())
    images = new_study(galactogram_files)
    study = str(images[0].StudyInstanceUID)
    assert store(gw.port, images) == [0, 0]
    failed = gw.wait(job_of(gw, study), timeout_s=60)
    assert failed.state is JobState.FAILED and failed.results_total == 1
    assert all(i.present for i in gw.spool.instances(failed.id))
    assert store(gw.port, images) == [0, 0]  # a duplicate while the job holds the files
    assert len(gw.spool.jobs(study_uid=study)) == 1
    held = gw.spool.used_bytes
    assert held > 0
    sweeper = RetentionSweeper(gw.spool, retain_s=3600, metrics=gw.metrics)
    assert sweeper.sweep() == []  # not old enough
    [released] = sweeper.sweep(now=time.time() + 3601)
    assert released.job_id == failed.id and released.size == held
    assert gw.spool.used_bytes == 0 and gw.spool.refresh_usage() == 0
    assert not list(gw.settings.spool_dir.glob("instances/*/*.dcm"))
    assert not list(gw.settings.spool_dir.glob("results/*/*.dcm"))
    assert gw.job(failed.id).released_at is not None
    with pytest.raises(JobStateError, match="released"):
        gw.spool.resend(failed.id)
    assert store(gw.port, images) == [0, 0]  # now a new job: analysed again
    again = gw.wait(job_of(gw, study), timeout_s=60)
    assert again.id != failed.id and again.instances_analysed == 2


def test_restarted_gateway_sweeps_at_once(tmp_path: Path, bundled_model: DetectorModel,
                                          galactogram_files: list[Path]) -> None:
    """``retain_hours`` is applied by the scheduler (first sweep at start): kept results are
    released; with ``keep_instances`` the instance files stay until then."""
    settings = GatewaySettings(port=0, spool_dir=tmp_path / "spool", quiet_period_s=QUIET_S,
                               keep_instances=True)
    images = new_study(galactogram_files)
    with Gateway(settings, model=bundled_model) as gw:
        assert store(gw.port, images) == [0, 0]
        job = gw.wait(job_of(gw, str(images[0].StudyInstanceUID)), timeout_s=60)
        assert job.state is JobState.KEPT and gw.spool.used_bytes > 0
        assert all(i.present for i in gw.spool.instances(job.id))
    with Gateway(settings.with_overrides(retain_hours=0), model=bundled_model) as gw:
        eventually(lambda: gw.job(job.id).released_at is not None, timeout_s=10)
        assert gw.spool.used_bytes == 0
        assert gw.metrics.jobs_released._value.get() == 1


def test_purge_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from serving.cli.gateway import main

    spool = Spool(tmp_path / "spool")
    jobs = {}
    for state in (JobState.SKIPPED, JobState.KEPT, JobState.FAILED):
        stored = spool.store(b"\0" * 1000, study_uid=generate_uid(), sop_uid=generate_uid(),
                             sop_class_uid="1.2.3", calling_ae="X")
        spool.mark_waiting(stored.job_id)
        spool.claim_job(stored.job_id)
        spool.finish(stored.job_id, state, now=time.time() - 7200)
        jobs[state] = stored.job_id
    spool.close()
    folder = str(tmp_path / "spool")
    assert main(["purge", "--spool-dir", folder, "--older-than", "3h"]) == 0
    assert "released 0 job(s)" in capsys.readouterr().out
    assert main(["purge", "--spool-dir", folder, "--older-than", "1h", "--state", "failed",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"job {jobs[JobState.FAILED]} failed" in out and "would release 1 job(s)" in out
    assert main(["purge", "--spool-dir", folder, "--older-than", "90m",
                 "--state", "failed,kept"]) == 0
    out = capsys.readouterr().out
    assert "released 2 job(s)" in out and "1 instance file(s)" in out  # the failed job's
    spool = Spool(tmp_path / "spool")
    assert spool.used_bytes == 0
    assert spool.job(jobs[JobState.SKIPPED]).released_at is None
    assert spool.job(jobs[JobState.KEPT]).released_at is not None
    spool.close()
    for bad, message in ((["--older-than", "3 weeks"], "unit s, m, h or d"),
                         (["--state", "running"], "cannot be purged"),
                         (["--state", "sent,nope"], "'nope' cannot be purged")):
        assert main(["purge", "--spool-dir", folder, *bad]) == 2
        assert message in capsys.readouterr().err


def test_finish_and_store_of_the_same_study_do_not_race(tmp_path: Path) -> None:
    """A job's study folder is removed under the spool lock, so a new instance of the same
    study never finds its folder gone between creating it and renaming its file there."""
    spool = Spool(tmp_path / "spool")
    study = generate_uid()
    errors: list[BaseException] = []
    for _ in range(150):
        first = spool.store(b"\0" * 10, study_uid=study, sop_uid=generate_uid(),
                            sop_class_uid="1.2.3", calling_ae="X")
        spool.mark_waiting(first.job_id)
        spool.claim_job(first.job_id)
        barrier = threading.Barrier(2)

        def finish(job_id: int = first.job_id, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            spool.finish(job_id, JobState.SENT)

        thread = threading.Thread(target=finish)
        thread.start()
        barrier.wait()
        try:
            stored = spool.store(b"\0" * 10, study_uid=study, sop_uid=generate_uid(),
                                 sop_class_uid="1.2.3", calling_ae="X")
            assert stored.outcome is StoreOutcome.STORED
        except OSError as exc:
            errors.append(exc)
        thread.join()
        for job in spool.jobs(state=JobState.RECEIVED):
            spool.mark_waiting(job.id)
            spool.claim_job(job.id)
            spool.finish(job.id, JobState.SENT)
    spool.close()
    assert not errors, errors[:3]


def test_spool_of_the_previous_schema_is_migrated(tmp_path: Path) -> None:
    """A spool written before retention existed (schema 1) opens, keeps its jobs and gains
    ``released_at``."""
    import sqlite3

    from serving.gateway.spool import DB_NAME, SCHEMA

    folder = tmp_path / "spool"
    folder.mkdir()
    db = sqlite3.connect(folder / DB_NAME)
    db.executescript(SCHEMA.replace(",\n    released_at REAL", ""))
    db.execute("INSERT INTO jobs (study_uid, state, created_at, last_instance_at, finished_at) "
               "VALUES ('1.2.3', 'kept', 1.0, 1.0, 2.0)")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    spool = Spool(folder)
    [job] = spool.jobs()
    assert job.state is JobState.KEPT and job.released_at is None
    assert spool.release(job.id) and spool.job(job.id).released_at is not None
    spool.close()
