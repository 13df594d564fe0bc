"""Security checks of the HTTP service and the gateway.

(a) Authentication on every route the app has (``app.routes``: the API, DICOMweb, the gateway's
    ``/v1/jobs``, the OpenAPI and docs pages): no key -> 401 ``missing_credentials``, a wrong
    or malformed one -> 401 ``invalid_credentials``, the right one -> not 401; only the probes
    (``/healthz``, ``/readyz``) and the static viewer files (``/``, ``/static/*``, which hold no
    data) are open, and dot segments cannot smuggle a path through ``/static/``.
(b) Upload limits against a real ``galacto serve`` (uvicorn) with ``GALACTO_MAX_UPLOAD_MB=1``:
    a 200 MB chunked body is refused with 413 after about the limit has been read (the
    generator feeding it is counted), a declared Content-Length above the limit is refused
    before any byte of the body is sent, and a request without a key is refused before its
    body is read.
(c) File names from UIDs: crafted Study/Series/SOP Instance UIDs (``../../etc/x``,
    ``1.2/../../x``, absolute paths, NUL bytes, a trailing newline, 65+ characters) through the
    gateway spool API, a real C-STORE to the gateway, the result store and STOW-RS: refused
    with a clear error, nothing written outside the spool / results folders.
(d) Patient data: instances full of identifiers (names, IDs, birth date, address, accession
    number, institution, referring physician, UIDs) through ``/v1/detect`` (accepted and refused
    variants), STOW-RS, a C-STORE to the in-process gateway and a real ``galacto serve``: none
    of them appears in the logs (every logger, JSON lines, DEBUG for the service's own loggers),
    in ``/metrics``, or in any error body. The DICOM results themselves (the 200 JSON of
    ``/v1/detect``, the STOW-RS response, ``/v1/jobs``) name the instances by UID, by design,
    but never carry names or IDs.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import select
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pydicom
import pytest
from conftest import LiveServer, galacto_serve, store_event
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from starlette.routing import Mount, Route

from serving.api.auth import is_open
from serving.api.errors import ApiError
from serving.api.logs import JsonFormatter, configure
from serving.api.main import create_app
from serving.api.store import ResultStore
from serving.dicom_status import CANNOT_UNDERSTAND
from serving.gateway import Gateway, JobState
from serving.gateway.scp import StoreSCP
from serving.gateway.spool import InvalidInstanceError, Spool, StoreOutcome
from serving.settings import Settings
from tests.dicomgen import make_dataset, to_bytes

KEY = "sec-7d1c9e4b2a8f6e03b5c1"
WRONG_KEY = "sec-0000000000000000000"
UPLOAD_LIMIT_MB = 1
UID_NAME = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*(\.dcm)?$")

#: Crafted UIDs that must never name a file.
CRAFTED_UIDS = ["../../etc/x", "1.2/../../x", "/etc/passwd", "/tmp/galacto-evil", "..", ".",
                "1.2.3\x00/../../x", "1.2.3/", "1.2.3\n", "1.2.3\\..\\x", "C:\\x",
                "1." + "1" * 64, "1.02.3", "1..2"]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def related(parts: list[bytes], boundary: str = "galacto-sec-boundary") -> tuple[bytes, str]:
    """A ``multipart/related; type="application/dicom"`` body and its Content-Type."""
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                    + p + b"\r\n" for p in parts) + f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def part10(ds: Dataset) -> bytes:
    """Part 10 bytes of ``ds``."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def files_under(root: Path) -> set[Path]:
    """Every file below ``root`` (recursively)."""
    return {p for p in root.rglob("*") if p.is_file()}


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (module-scoped fixtures cannot monkeypatch)."""
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("GALACTO_")]:
            patch.delenv(key)
        for key, value in values.items():
            patch.setenv(key, value)
        yield


def c_store(port: int, datasets: list[Dataset], calling: str = "SECSCU") -> list[int]:
    """C-STORE ``datasets`` to the gateway (AE ``GALACTO``) over one association; statuses."""
    from pynetdicom import AE

    from serving.pipeline.dicom_in import ACCEPTED_SOP_CLASSES

    ae = AE(calling)
    for sop_class in ACCEPTED_SOP_CLASSES:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="GALACTO")
    assert assoc.is_established, "association refused"
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``check`` until it is true; fail after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not true after {timeout_s:g} s"
        time.sleep(0.05)


# ---- captured logs -------------------------------------------------------------------------


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """The service's logging configuration (``configure``: JSON lines, third-party loggers at
    WARNING, Python warnings captured, quoted values of DICOM libraries redacted) at DEBUG for
    its own loggers, its handler writing to the returned buffer instead of stderr; the
    previous logging state is restored afterwards."""
    root = logging.getLogger()
    capture_warnings = logging.getLogger("py.warnings").handlers == []
    names = ["", "py.warnings", "openjpeg", "pydicom", "jpeg_ls", "PIL", "pylibjpeg",
             "libjpeg", "rle", "python_multipart", "highdicom", "pynetdicom", "uvicorn",
             "uvicorn.error", "uvicorn.access"]
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers),
                 logging.getLogger(n).propagate, logging.getLogger(n).disabled) for n in names}
    buffer = io.StringIO()
    configure(json_lines=True, level=logging.DEBUG)
    ours = [*root.handlers]
    for handler in ours:  # the service's own handler, with its formatter and filters
        assert isinstance(handler, logging.StreamHandler)
        assert isinstance(handler.formatter, JsonFormatter)
        handler.setStream(buffer)
    try:
        yield buffer
    finally:
        for n, (level, handlers, propagate, disabled) in saved.items():
            logger = logging.getLogger(n)
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled
            if n:
                logger.handlers[:] = handlers
        # pytest adds and removes its own capture handlers on the root around every test
        # phase: keep the current ones, drop ours, bring back what was there before
        current = [h for h in root.handlers if h not in ours]
        earlier = [h for h in saved[""][1] if not type(h).__module__.startswith("_pytest")]
        root.handlers[:] = earlier + current
        if capture_warnings:
            logging.captureWarnings(False)


# ---- patient identifiers --------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Distinctive patient identifiers, none of which may leak."""

    patient_name: str
    patient_id: str
    birth_date: str
    address: str
    other_ids: str
    accession: str
    institution: str
    referring: str
    study_uid: str
    sop_uids: tuple[str, ...]

    def apply(self, ds: Dataset, index: int) -> Dataset:
        """``ds`` carrying these identifiers (instance ``index`` of the study)."""
        ds.PatientName = self.patient_name
        ds.PatientID = self.patient_id
        ds.PatientBirthDate = self.birth_date
        ds.PatientAddress = self.address
        ds.OtherPatientIDs = self.other_ids
        ds.AccessionNumber = self.accession
        ds.InstitutionName = self.institution
        ds.ReferringPhysicianName = self.referring
        ds.StudyInstanceUID = self.study_uid
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = self.sop_uids[index]
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return ds

    def names_and_ids(self) -> list[str]:
        """Everything but the UIDs, with the parts of the person names."""
        values = [self.patient_name, self.patient_id, self.birth_date, self.address,
                  self.other_ids, self.accession, self.institution, self.referring]
        parts = [p for v in (self.patient_name, self.referring) for p in v.split("^")]
        return values + parts + [self.address.split(",")[0]]

    def uids(self) -> list[str]:
        return [self.study_uid, *self.sop_uids]


def new_identity(tag: str, instances: int = 2, *, malformed: bool = False) -> Identity:
    """Identifiers no other test data contains (``tag`` keeps variants apart). ``malformed``:
    a birth date and UIDs that are not valid for their VR (pydicom's validation warnings quote
    such values)."""

    def uid() -> str:
        return f"{generate_uid()[:50]}.0{len(tag)}" if malformed else generate_uid()

    return Identity(
        patient_name=f"Qzwyx{tag}^Vornathel", patient_id=f"PID{tag}8302471",
        birth_date="1947-03-12" if malformed else "19470312",
        address=f"17 Quillfeather{tag} Lane, Brnovica", other_ids=f"OPID{tag}5519034",
        accession=f"ACC{tag}7741029", institution=f"Xylophonia{tag} General Hospital",
        referring=f"Phlembly{tag}^Drusilla", study_uid=uid(),
        sop_uids=tuple(uid() for _ in range(instances)))


def assert_no_identifiers(text: str, identity: Identity, where: str, *,
                          uids_allowed: bool = False) -> None:
    """None of ``identity``'s values (UIDs too unless allowed) occur in ``text``."""
    values = identity.names_and_ids() + ([] if uids_allowed else identity.uids())
    found = [v for v in values if v and v in text]
    assert not found, f"{where} contains patient identifiers {found}"


def phi_study(files: list[Path], identity: Identity) -> list[Dataset]:
    """The galactogram study of ``files`` carrying ``identity``."""
    return [identity.apply(pydicom.dcmread(f), i) for i, f in enumerate(files)]


def refused_variants(identity: Identity) -> dict[str, bytes]:
    """Small instances carrying ``identity`` that the intake refuses, by ``detail`` code."""

    def small(**kwargs: Any) -> Dataset:
        return identity.apply(make_dataset(**kwargs), 0)

    truncated_header = part10(small())[:700]
    return {
        "missing_spacing": part10(small(pixel_spacing=None)),
        "color_image": part10(small(photometric="RGB", samples_per_pixel=3, bits_stored=8)),
        "truncated_pixel_data": part10(small(rows=256, cols=256))[:-5000],
        "unsupported_sop_class": part10(small(sop_class="1.2.840.10008.5.1.4.1.1.4")),
        "invalid_header": part10(small(bits_stored=12, high_bit=7)),
        "multi_frame": part10(small(number_of_frames=3)),
        "cut_in_header": truncated_header,
        "invalid_spacing": to_bytes(small(pixel_spacing=(0.0, 50.0))),
    }


# --------------------------------------------------------------------------------------------
# the in-process app: auth on, embedded gateway, captured logs
# --------------------------------------------------------------------------------------------


@dataclass
class Service:
    """The app under test, its client, gateway, folders and captured log lines."""

    app: FastAPI
    client: TestClient
    gateway: Gateway
    base: Path
    logs: io.StringIO

    @property
    def spool(self) -> Path:
        return self.base / "spool"

    @property
    def results(self) -> Path:
        return self.base / "results"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """``create_app`` with an API key and the gateway enabled (quiet period 0.5 s, no
    destination: results are kept in the spool), logs captured as JSON lines."""
    base = tmp_path_factory.mktemp("secure")
    gateway_env = {"GALACTO_GATEWAY_ENABLED": "true", "GALACTO_GATEWAY_PORT": "0",
                   "GALACTO_GATEWAY_SPOOL_DIR": str(base / "spool"),
                   "GALACTO_GATEWAY_QUIET_PERIOD_S": "0.5"}
    with env(gateway_env), captured_logs() as logs:
        app = create_app(Settings(api_keys=[KEY], results_dir=base / "results", log_json=True))
        # Host: localhost (the Host check allows loopback names, not 'testserver')
        with TestClient(app, base_url="http://localhost") as client:
            app.state.galacto.wait_loaded(120)
            assert app.state.galacto.ready
            gateway = app.state.gateway
            assert isinstance(gateway, Gateway) and gateway.running
            yield Service(app, client, gateway, base, logs)


# --------------------------------------------------------------------------------------------
# (a) authentication on every route
# --------------------------------------------------------------------------------------------

#: Sample values of path parameters (a new parameter name fails the test: add it here).
PATH_SAMPLES = {"study": "1.2.3", "series": "1.2.3.4", "instance": "1.2.3.4.5", "job_id": "1",
                "render_id": "r1"}
PROBES = {"/healthz", "/readyz"}
#: Open by design: the viewer page and its static files, and the Swagger UI files that /docs
#: loads (the enumeration probes each static mount with a "viewer.js" name), hold no data.
VIEWER = {"/", "/static/viewer.js", "/static/swagger-ui/viewer.js"}


def flat_routes(app: FastAPI) -> list[Any]:
    """Every route of ``app``, those of included routers too: recent FastAPI keeps an included
    router as one entry of ``app.routes`` and flattens it with ``iter_route_contexts``."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(flatten(app.routes)) if flatten is not None else list(app.routes)


def route_cases(app: FastAPI) -> list[tuple[str, str]]:
    """``(method, concrete path)`` for every method of every route of ``app``."""
    cases: list[tuple[str, str]] = []
    for route in flat_routes(app):
        original = getattr(route, "original_route", route)
        if isinstance(original, Mount):
            cases.append(("GET", f"{original.path}/viewer.js"))
            continue
        assert isinstance(original, Route), f"unexpected route {original!r}"
        path = re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: PATH_SAMPLES[m.group(1)], route.path)
        cases.extend((method, path) for method in sorted(route.methods or {"GET"}))
    return cases


def test_every_route_is_enumerated(service: Service) -> None:
    """The enumeration sees the API, DICOMweb, gateway, OpenAPI and viewer routes, and every
    path the OpenAPI schema documents."""
    paths = {path for _, path in route_cases(service.app)}
    for expected in ("/v1/detect", "/v1/render", "/v1/models", "/metrics", "/v1/jobs",
                     "/v1/jobs/1", "/v1/jobs/1/resend", "/dicomweb/studies",
                     "/dicomweb/studies/1.2.3", "/dicomweb/studies/1.2.3/metadata",
                     "/openapi.json", "/docs", "/"):
        assert expected in paths, expected
    schema = service.client.get("/openapi.json", headers=auth()).json()
    for documented in schema["paths"]:
        concrete = re.sub(r"\{(\w+)\}", lambda m: PATH_SAMPLES[m.group(1)], documented)
        assert concrete in paths, documented


def test_auth_on_every_non_probe_route(service: Service) -> None:
    """No key: 401 missing_credentials with a Bearer challenge; wrong or malformed: 401
    invalid_credentials; right: never 401. Probes and the viewer files are open."""
    client = service.client
    cases = route_cases(service.app)
    assert len(cases) > 15
    for method, path in cases:
        name = f"{method} {path}"
        if path in PROBES or path in VIEWER:
            assert is_open(path), name
            r = client.request(method, path)
            assert r.status_code != 401, name
            continue
        assert not is_open(path), name
        missing = client.request(method, path)
        assert missing.status_code == 401, name
        assert missing.headers["www-authenticate"] == "Bearer", name
        if method != "HEAD":  # a HEAD answer has no body
            assert missing.json()["detail"] == "missing_credentials", name
        for header in (f"Bearer {WRONG_KEY}", f"Bearer {KEY[:-1]}", f"Bearer {KEY}x",
                       f"Basic {KEY}", "Bearer", "Bearer    ", KEY, f"bearer{KEY}"):
            wrong = client.request(method, path, headers={"Authorization": header})
            assert wrong.status_code == 401, f"{name} with {header!r}"
            if method != "HEAD":
                assert wrong.json()["detail"] == "invalid_credentials", f"{name}: {header!r}"
        right = client.request(method, path, headers=auth())
        assert right.status_code != 401, f"{name}: {right.status_code} {right.text[:200]}"
        assert right.status_code < 500, f"{name}: {right.status_code} {right.text[:200]}"


def test_unknown_paths_need_a_key_too(service: Service) -> None:
    """What no route serves is refused before routing (no way to probe what exists)."""
    for path in ("/v2/detect", "/admin", "/v1/jobs/1/delete", "/dicomweb", "/healthz/x",
                 "//v1/models", "/HEALTHZ"):
        r = service.client.get(path)
        assert r.status_code == 401, path


# --------------------------------------------------------------------------------------------
# (c) UIDs never name files outside the spool / results folders
# --------------------------------------------------------------------------------------------


def test_spool_refuses_crafted_uids(tmp_path: Path) -> None:
    """``Spool.store`` and ``save_results`` check every UID before it names a file, and do
    not echo the value."""
    spool = Spool(tmp_path / "spool")
    try:
        for bad in CRAFTED_UIDS:
            for study, sop in ((bad, "1.2.3.4"), ("1.2.3", bad)):
                with pytest.raises(InvalidInstanceError) as info:
                    spool.store(b"DICM", study_uid=study, sop_uid=sop, sop_class_uid="1.2",
                                calling_ae="EVIL")
                assert bad not in str(info.value), repr(bad)
        padded = spool.store(b"DICM", study_uid="1.2.3\x00", sop_uid="1.2.3.4 ",
                             sop_class_uid="1.2", calling_ae=None)  # DICOM UI padding
        assert padded.outcome is StoreOutcome.STORED
        for bad in CRAFTED_UIDS:
            if bad.endswith("\n"):
                continue  # pydicom strips the newline of a UI value: "1.2.3" is a UID
            result = Dataset()
            result.SOPInstanceUID = bad
            result.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.50"
            with pytest.raises(InvalidInstanceError):
                spool.save_results(padded.job_id, [result], analysed=0, skipped=[],
                                   findings=0, timings_ms={})
    finally:
        spool.close()
    written = files_under(tmp_path)
    assert all(p.is_relative_to(tmp_path / "spool") for p in written), written
    assert [p.name for p in written if p.suffix == ".dcm"] == ["1.2.3.4.dcm"]
    assert (tmp_path / "spool" / "instances" / "1.2.3" / "1.2.3.4.dcm").is_file()


def test_result_store_refuses_crafted_uids(tmp_path: Path) -> None:
    """``ResultStore.put`` / ``find``: 400 ``invalid_uid`` for any non-UID, nothing written
    but the one valid instance stored first (so that ``find`` reaches the instance check)."""
    store = ResultStore(tmp_path / "results")
    valid = make_dataset(rows=8, cols=8)
    valid.StudyInstanceUID, valid.SeriesInstanceUID = "1.2.3", "1.2.3.4"
    stored = store.put(valid)
    for bad in CRAFTED_UIDS:
        if bad.endswith("\n"):  # pydicom strips it from a UI value: "1.2.3" is valid
            continue
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            ds = make_dataset(rows=8, cols=8)
            setattr(ds, keyword, bad)
            with pytest.raises(ApiError) as info:
                store.put(ds)
            assert info.value.status == 400 and info.value.detail == "invalid_uid"
            assert bad not in info.value.message
        with pytest.raises(ApiError):
            store.find(bad)
        with pytest.raises(ApiError):
            store.find("1.2.3", bad)
        with pytest.raises(ApiError):
            store.find("1.2.3", "1.2.3.4", bad)
    assert files_under(tmp_path) == {stored}
    assert stored.relative_to(tmp_path).parts[:3] == ("results", "1.2.3", "1.2.3.4")


def test_stow_with_crafted_uids_stores_nothing_outside(service: Service,
                                                       galactogram_files: list[Path]) -> None:
    """STOW-RS: an instance with a crafted StudyInstanceUID (it names the results folder) is
    refused at intake (FailedSOPSequence, 0xA900 ``invalid_uid``), as are crafted Series/SOP
    Instance UIDs (which would not name anything: the results get their own). Every name in
    the results folder is a UID."""
    before = files_under(service.base)
    for bad in ("../../etc/x", "1.2/../../x", "/tmp/galacto-evil", "1.2.3\x00/../x",
                "1." + "1" * 64):
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            ds = pydicom.dcmread(galactogram_files[0])
            setattr(ds, keyword, bad)
            if keyword == "SOPInstanceUID":
                ds.file_meta.MediaStorageSOPInstanceUID = UID(bad)
            body, ctype = related([part10(ds)])
            r = service.client.post("/dicomweb/studies", content=body,
                                    headers={"Content-Type": ctype, **auth()})
            assert r.status_code < 500, f"{keyword}={bad!r}: {r.status_code} {r.text[:300]}"
            if keyword == "StudyInstanceUID":
                assert r.status_code == 409, r.text[:300]  # nothing accepted (PS3.18)
                [failed] = r.json()["00081198"]["Value"]
                assert failed["00081197"]["Value"] == [0xA900]
                assert bad not in r.text
    added = files_under(service.base) - before
    assert all(p.is_relative_to(service.results) for p in added), added
    for path in added:
        parts = path.relative_to(service.results).parts
        assert all(UID_NAME.match(part) for part in parts), parts
    assert not Path("/tmp/galacto-evil").exists()


def _event(data: bytes, sop_class: str, sop_instance: str) -> Any:
    """A C-STORE event from the calling AE ``EVIL``."""
    return store_event(data, sop_class, sop_instance, "EVIL")


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_gateway_refuses_crafted_uids(service: Service, galactogram_files: list[Path]) -> None:
    """Over DICOM: a real C-STORE with a crafted StudyInstanceUID, and the store handler with
    crafted SOP Instance UIDs (pynetdicom will not put those in a C-STORE request): 0xC000
    (cannot understand), nothing written outside the spool."""
    gateway = service.gateway
    before = files_under(service.base)
    for bad in ("../../etc/x", "1.2/../../x", "/tmp/galacto-evil", "1.2.3\x00/../x",
                "1." + "1" * 64):
        ds = pydicom.dcmread(galactogram_files[0])
        ds.StudyInstanceUID = bad
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        assert c_store(gateway.port, [ds], calling="EVIL") == [CANNOT_UNDERSTAND], repr(bad)
        ds.StudyInstanceUID = generate_uid()
        ds.SOPInstanceUID = bad
        ds.file_meta.MediaStorageSOPInstanceUID = UID(bad)
        scp = StoreSCP(gateway.settings, gateway.spool, gateway.metrics)
        assert scp._on_store(_event(part10(ds), str(ds.SOPClassUID), bad)) == \
            CANNOT_UNDERSTAND, repr(bad)
    assert files_under(service.base) == before
    assert not Path("/tmp/galacto-evil").exists()


# --------------------------------------------------------------------------------------------
# (d) patient identifiers never reach logs, metrics or error messages
# --------------------------------------------------------------------------------------------


def _error_bodies(responses: list[httpx.Response]) -> str:
    return "\n".join(f"{r.status_code} {dict(r.headers)} {r.text}" for r in responses)


def test_identifiers_stay_out_of_logs_metrics_and_errors(
        service: Service, galactogram_files: list[Path]) -> None:
    """Accepted and refused instances full of identifiers through /v1/detect (JSON and SR),
    /v1/render, STOW-RS and a C-STORE to the gateway; then the captured log lines,
    /metrics, every error body and /v1/jobs are searched for each identifier."""
    client = service.client
    start = service.logs.tell()
    good = new_identity("G", malformed=True)
    study = [part10(ds) for ds in phi_study(galactogram_files, good)]
    body, ctype = related(study)
    ok = client.post("/v1/detect", content=body, headers={"Content-Type": ctype, **auth()})
    assert ok.status_code == 200, ok.text
    assert_no_identifiers(ok.text, good, "the /v1/detect result", uids_allowed=True)
    sr = client.post("/v1/detect?output=sr", content=study[0],
                     headers={"Content-Type": "application/dicom", **auth()})
    assert sr.status_code == 200 and sr.headers["content-type"] == "application/dicom"

    errors: list[httpx.Response] = []
    bad = new_identity("B", 1, malformed=True)
    for detail, data in refused_variants(bad).items():
        r = client.post("/v1/detect", content=data,
                        headers={"Content-Type": "application/dicom", **auth()})
        assert 400 <= r.status_code < 500, f"{detail}: {r.status_code} {r.text}"
        errors.append(r)
        rendered = client.post("/v1/render", content=data,
                               headers={"Content-Type": "application/dicom", **auth()})
        assert 400 <= rendered.status_code < 500
        errors.append(rendered)
    mixed_body, mixed_type = related([study[0], *refused_variants(mixed := new_identity("M", 1))
                                      .values()])
    mixed_r = client.post("/v1/detect", content=mixed_body,
                          headers={"Content-Type": mixed_type, **auth()})
    assert mixed_r.status_code == 200 and len(mixed_r.json()["rejected"]) == 8
    assert_no_identifiers(json.dumps(mixed_r.json()["rejected"]), mixed,
                          "the rejected parts of /v1/detect")

    stow_identity = new_identity("S")
    stow_parts = [part10(ds) for ds in phi_study(galactogram_files, stow_identity)]
    stow_body, stow_type = related([*stow_parts, *refused_variants(stow_identity).values()])
    stow = client.post("/dicomweb/studies", content=stow_body,
                       headers={"Content-Type": stow_type, **auth()})
    assert stow.status_code == 202, stow.text
    assert_no_identifiers(stow.text, stow_identity, "the STOW-RS response", uids_allowed=True)
    bad_stow_body, bad_stow_type = related(list(refused_variants(bad).values()))
    bad_stow = client.post("/dicomweb/studies", content=bad_stow_body,
                           headers={"Content-Type": bad_stow_type, **auth()})
    assert bad_stow.status_code in (400, 409), bad_stow.text
    # a STOW-RS response lists the refused instances by SOP Instance UID (PS3.18)
    assert_no_identifiers(bad_stow.text, bad, "the STOW-RS refusal", uids_allowed=True)

    gateway_identity = new_identity("W", 3)
    datasets = phi_study(galactogram_files, gateway_identity)
    refused = gateway_identity.apply(make_dataset(pixel_spacing=None), 2)  # skipped later
    assert c_store(service.gateway.port, [*datasets, refused]) == [0, 0, 0]
    job_id = service.gateway.spool.jobs(study_uid=gateway_identity.study_uid)[0].id
    job = service.gateway.wait(job_id, timeout_s=120)
    assert job.state is JobState.KEPT, job
    assert job.skipped, "the instance without spacing is skipped with a reason"
    jobs = client.get("/v1/jobs", headers=auth())
    assert jobs.status_code == 200
    assert_no_identifiers(jobs.text, gateway_identity, "/v1/jobs", uids_allowed=True)
    eventually(lambda: 'galacto_gateway_studies_processed_total{outcome="kept"}'
               in client.get("/metrics", headers=auth()).text)

    metrics = client.get("/metrics", headers=auth()).text
    logged = service.logs.getvalue()[start:]
    assert '"logger": "galacto' in logged, "the service logged nothing: capture is broken"
    for identity in (good, bad, mixed, stow_identity, gateway_identity):
        assert_no_identifiers(logged, identity, "the logs")
        assert_no_identifiers(metrics, identity, "/metrics")
        assert_no_identifiers(_error_bodies(errors), identity, "the error responses")
    for line in logged.splitlines():
        json.loads(line)  # JSON lines only


def test_malformed_dates_do_not_break_result_objects(service: Service) -> None:
    """A valid image whose patient birth date is malformed (common in the wild): every result
    kind and STOW-RS answer without a server error."""
    ds = make_dataset(rows=256, cols=192)
    ds.PatientBirthDate = "1947-03-12"
    data = part10(ds)
    for output in ("sr", "tid1500", "gsps"):
        r = service.client.post(f"/v1/detect?output={output}", content=data,
                                headers={"Content-Type": "application/dicom", **auth()})
        assert r.status_code < 500, (output, r.text)
    body, ctype = related([data])
    r = service.client.post("/dicomweb/studies", content=body,
                            headers={"Content-Type": ctype, **auth()})
    assert r.status_code < 500, r.text


# --------------------------------------------------------------------------------------------
# a real galacto serve: upload limits, path tricks, and its log file
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``galacto serve`` with an API key, ``GALACTO_MAX_UPLOAD_MB=1`` and JSON logs."""
    with galacto_serve(tmp_path_factory.mktemp("live-secure"),
                       {"GALACTO_API_KEYS": KEY, "GALACTO_MAX_UPLOAD_MB": str(UPLOAD_LIMIT_MB),
                        "GALACTO_LOG_JSON": "true"}) as server:
        yield server


@dataclass
class RawResponse:
    """What a raw HTTP exchange gave: status, headers, body, seconds, bytes of body sent."""

    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float
    sent: int

    def json(self) -> Any:
        return json.loads(self.body)


class CountingBody:
    """A lazy body of ``total`` bytes in ``chunk``-byte pieces that counts what was taken;
    ``prefix`` starts it (e.g. the opening of a multipart part), zeros follow."""

    def __init__(self, total: int, chunk: int = 64 * 1024, prefix: bytes = b"") -> None:
        self.total = total
        self.chunk = chunk
        self.prefix = prefix
        self.taken = 0

    def __iter__(self) -> Iterator[bytes]:
        if self.prefix:
            self.taken += len(self.prefix)
            yield self.prefix
        piece = b"\x00" * self.chunk
        while self.taken < self.total:
            self.taken += len(piece)
            yield piece


def raw_exchange(port: int, head: str, body: CountingBody | None = None,
                 timeout_s: float = 60.0) -> RawResponse:
    """Send ``head`` (request line and headers) and then ``body`` chunked, stopping as soon
    as the server answers, stops reading or closes; read the response."""
    t0 = time.perf_counter()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n")
        if body is not None:
            sock.settimeout(2.0)  # the server stopped reading: a full buffer blocks a send
            for piece in body:
                if select.select([sock], [], [], 0)[0]:
                    break  # the answer (or the close) is there
                try:
                    sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    break
                sent += len(piece)
            sock.settimeout(timeout_s)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without a response after {data!r}"
            data += chunk
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return RawResponse(status, headers, rest[:length], time.perf_counter() - t0, sent)


def _head(method: str, path: str, headers: dict[str, str]) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return "\r\n".join(lines) + "\r\n"


BIG = 200 * 1024 * 1024
LIMIT = UPLOAD_LIMIT_MB * 1024 * 1024
#: Bytes of body the client may push before it sees the 413: the limit plus what the
#: loopback socket buffers of both ends absorb (a few MB).
SLACK = 48 * 1024 * 1024

UPLOADS = [
    ("/v1/detect", "application/dicom"),
    ("/v1/detect", 'multipart/related; type="application/dicom"; boundary=xyz'),
    ("/v1/detect", "multipart/form-data; boundary=xyz"),
    ("/v1/render", "application/dicom"),
    ("/dicomweb/studies", 'multipart/related; type="application/dicom"; boundary=xyz'),
    ("/dicomweb/studies/1.2.3", 'multipart/related; type="application/dicom"; boundary=xyz'),
]


@pytest.mark.parametrize(("path", "ctype"), UPLOADS)
def test_chunked_upload_is_cut_off_at_the_limit(live: LiveServer, path: str,
                                                ctype: str) -> None:
    """A 200 MB chunked body: 413 ``upload_too_large`` once a little more than the limit
    arrived; the client's generator is far from consumed."""
    opening = b""
    if ctype.startswith("multipart/related"):
        opening = b"--xyz\r\nContent-Type: application/dicom\r\n\r\n"
    elif ctype.startswith("multipart/form-data"):
        opening = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.dcm"'
                   b"\r\nContent-Type: application/dicom\r\n\r\n")
    body = CountingBody(BIG, prefix=opening)
    head = _head("POST", path, {"Authorization": f"Bearer {KEY}", "Content-Type": ctype,
                                "Transfer-Encoding": "chunked"})
    r = raw_exchange(live.port, head, body)
    assert r.status == 413, (r.status, r.body[:300])
    assert r.json()["detail"] == "upload_too_large"
    assert body.taken < LIMIT + SLACK, f"{body.taken} bytes taken from the generator"
    assert body.taken < BIG // 4
    assert r.seconds < 30, f"413 after {r.seconds:.1f} s"


@pytest.mark.parametrize(("path", "ctype"), UPLOADS)
def test_declared_length_over_the_limit_is_refused_unread(live: LiveServer, path: str,
                                                          ctype: str) -> None:
    """Content-Length above the limit: 413 at once, without a byte of the body sent."""
    for declared in (LIMIT + 1, 10 * 1024**3):
        head = _head("POST", path, {"Authorization": f"Bearer {KEY}", "Content-Type": ctype,
                                    "Content-Length": str(declared)})
        r = raw_exchange(live.port, head, None, timeout_s=15)
        assert r.status == 413, (declared, r.status, r.body[:300])
        assert r.json()["detail"] == "upload_too_large"
        assert r.seconds < 10


def test_body_without_a_key_is_not_read(live: LiveServer) -> None:
    """No key: 401 before the body is read (chunked and declared)."""
    body = CountingBody(BIG)
    head = _head("POST", "/v1/detect", {"Content-Type": "application/dicom",
                                        "Transfer-Encoding": "chunked"})
    r = raw_exchange(live.port, head, body)
    assert r.status == 401 and r.json()["detail"] == "missing_credentials"
    assert body.taken < SLACK
    head = _head("POST", "/dicomweb/studies", {"Content-Type": "application/dicom",
                                               "Content-Length": str(10 * 1024**3)})
    r = raw_exchange(live.port, head, None, timeout_s=15)
    assert r.status == 401


def test_dot_segments_do_not_bypass_auth(live: LiveServer) -> None:
    """Raw paths that a client library would normalize: ``/static/..`` (open prefix) never
    reaches an API route; the others need a key."""
    open_tricks = ["/static/../v1/models", "/static/%2e%2e/v1/models",
                   "/static/..%2fv1/models", "/static//../metrics", "/static/../../etc/passwd"]
    for path in open_tricks:
        r = raw_exchange(live.port, _head("GET", path, {}), None, timeout_s=15)
        assert r.status in (400, 404), (path, r.status, r.body[:200])
        assert b"galacto-small" not in r.body and b"root:" not in r.body, path
    for path in ["//v1/models", "/healthz/../v1/models", "/v1/models/", "/./v1/models",
                 "/readyz/../metrics"]:
        r = raw_exchange(live.port, _head("GET", path, {}), None, timeout_s=15)
        assert r.status == 401, (path, r.status, r.body[:200])


def test_identifiers_stay_out_of_the_server_log(live: LiveServer) -> None:
    """The real server (uvicorn, JSON logs on stderr): a small accepted study (CC and MLO,
    under this server's 1 MiB limit) and every refused variant carrying identifiers, one by
    one and all in one request; its log file and /metrics name none of them."""
    identity = new_identity("L", malformed=True)
    study = [part10(identity.apply(make_dataset(rows=256, cols=192, view=view, seed=i), i))
             for i, view in enumerate(("CC", "MLO"))]
    body, ctype = related(study)
    refused = refused_variants(identity)
    with httpx.Client(base_url=live.url, timeout=120) as client:
        ok = client.post("/v1/detect", content=body,
                         headers={"Content-Type": ctype, **auth()})
        assert ok.status_code == 200, ok.text
        assert_no_identifiers(ok.text, identity, "the /v1/detect result", uids_allowed=True)
        bodies = []
        for data in refused.values():
            r = client.post("/v1/detect", content=data,
                            headers={"Content-Type": "application/dicom", **auth()})
            assert 400 <= r.status_code < 500, r.text
            bodies.append(r.text)
        all_refused, all_type = related(list(refused.values()))
        r = client.post("/v1/detect", content=all_refused,
                        headers={"Content-Type": all_type, **auth()})
        assert 400 <= r.status_code < 500, r.text
        bodies.append(r.text)
        metrics = client.get("/metrics", headers=auth()).text
    time.sleep(0.5)  # let the server flush its last log lines
    logged = live.log.read_text()
    assert '"logger": "galacto.api"' in logged
    for line in logged.splitlines():
        json.loads(line)  # JSON lines only: Python warnings are captured too
    assert_no_identifiers(logged, identity, "the server log")
    assert_no_identifiers(metrics, identity, "/metrics")
    assert_no_identifiers("\n".join(bodies), identity, "the error bodies")
