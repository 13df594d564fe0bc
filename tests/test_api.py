"""The HTTP service in process (FastAPI TestClient): endpoints, bad input, auth, limits,
metrics and logs. The round trips through a real uvicorn are in ``test_api_live.py``."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from dicomgen import make_dataset, to_bytes
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.api.errors import ApiError
from serving.api.limiter import InferenceLimiter
from serving.api.main import create_app
from serving.outputs.common import ResultInput
from serving.settings import Settings, SettingsError

KEY = "k-3f9a8c1e5b7d2f40a6c9"


@contextmanager
def _client(tmp_path: Path, **settings: object) -> Iterator[TestClient]:
    """A TestClient of an app with these settings, its model loaded."""
    app: FastAPI = create_app(Settings(results_dir=tmp_path / "results", log_json=True,
                                       **settings))  # type: ignore[arg-type]
    # Host: localhost (the Host check allows loopback names, not 'testserver')
    with TestClient(app, base_url="http://localhost") as client:
        app.state.galacto.wait_loaded(60)
        assert app.state.galacto.ready
        yield client


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with _client(tmp_path_factory.mktemp("api")) as c:
        yield c


def _related(parts: list[bytes], boundary: str = "galacto-test-boundary") -> tuple[bytes, str]:
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                    + p + b"\r\n" for p in parts) + f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def _bad(kind: str) -> bytes:
    """Small DICOM (or not) objects the intake refuses, by ``detail`` code."""
    if kind == "not_dicom":
        return b"this is a text file, not DICOM" * 10
    if kind == "color_image":
        return to_bytes(make_dataset(photometric="RGB", samples_per_pixel=3, bits_stored=8))
    if kind == "multi_frame":
        return to_bytes(make_dataset(number_of_frames=3))
    if kind == "missing_spacing":
        return to_bytes(make_dataset(pixel_spacing=None))
    if kind == "unsupported_sop_class":
        return to_bytes(make_dataset(sop_class="1.2.840.10008.5.1.4.1.1.4"))  # MR
    if kind == "truncated_pixel_data":
        return to_bytes(make_dataset(rows=256, cols=256))[:-5000]
    raise ValueError(kind)


def test_probes_and_models(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "alive"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model"].startswith("galacto-small")
    models = client.get("/v1/models").json()
    assert models[0]["name"] == "galacto-small"
    names = {op["name"] for op in models[0]["operating_points"]}
    assert {"balanced", "high_sensitivity"} <= names
    assert models[0]["default_operating_point"] in names
    assert "/v1/detect" in client.get("/openapi.json").json()["paths"]


def test_detect_matches_the_pipeline(client: TestClient, galactogram_files: list[Path],
                                     study_result: ResultInput) -> None:
    body, ctype = _related([f.read_bytes() for f in galactogram_files])
    r = client.post("/v1/detect?operating_point=high_sensitivity", content=body,
                    headers={"Content-Type": ctype, "X-Request-ID": "req-42"})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["request_id"] == "req-42" and r.headers["x-request-id"] == "req-42"
    assert data["operating_point"]["name"] == "high_sensitivity"
    study = data["studies"][0]
    expected = study_result.study
    for got, want in zip(study["images"], expected.images, strict=True):
        assert [f["box_px"] for f in got["findings"]] == [f.box_px for f in want.findings]
        assert [f["score"] for f in got["findings"]] == [f.score for f in want.findings]
    assert [f["phrase"] for f in study["fused"]] == [f.phrase for f in expected.fused]
    assert study["fused"]
    for f in study["fused"]:  # BI-RADS states no clock face within 10 mm of the nipple axis
        clockless = f["quadrant"] in ("retroareolar", "central")
        assert (f["clock_hour"] is None) == (clockless or f["orientation_assumed"]
                                             or f["laterality"] not in ("L", "R"))
        assert ("o'clock" in f["phrase"]) == (f["clock_hour"] is not None), f["phrase"]
    assert set(data["timings_ms"]) >= {"queue", "read", "detect", "total"}


def test_detect_form_upload_names_the_files(client: TestClient,
                                            galactogram_files: list[Path]) -> None:
    files = [("file", (f.name, f.read_bytes(), "application/dicom")) for f in galactogram_files]
    r = client.post("/v1/detect", files=files)
    assert r.status_code == 200, r.text
    assert [i["source"] for i in r.json()["studies"][0]["images"]] == \
        [f.name for f in galactogram_files]


@pytest.mark.parametrize(("kind", "status"), [
    ("not_dicom", 400), ("truncated_pixel_data", 400), ("color_image", 422),
    ("multi_frame", 422), ("missing_spacing", 422), ("unsupported_sop_class", 422)])
def test_bad_instance_is_refused_with_a_stable_detail(client: TestClient, kind: str,
                                                      status: int) -> None:
    r = client.post("/v1/detect", content=_bad(kind),
                    headers={"Content-Type": "application/dicom"})
    assert r.status_code == status, r.text
    assert r.json()["detail"] == kind
    assert r.json()["message"]
    assert client.get("/healthz").status_code == 200  # still serving


def test_one_bad_part_among_good_ones(client: TestClient, galactogram_files: list[Path]) -> None:
    body, ctype = _related([galactogram_files[0].read_bytes(), _bad("color_image")])
    r = client.post("/v1/detect", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text
    data = r.json()
    assert len(data["studies"][0]["images"]) == 1
    assert [(x["part"], x["detail"], x["status"]) for x in data["rejected"]] == \
        [(1, "color_image", 422)]
    assert r.headers["x-galacto-rejected"] == "1"


@pytest.mark.parametrize(("headers", "body", "status", "detail"), [
    ({"Content-Type": "text/plain"}, b"x", 415, "unsupported_media_type"),
    ({"Content-Type": "multipart/related; type=\"application/dicom\""}, b"x", 415,
     "unsupported_media_type"),
    ({"Content-Type": "application/dicom"}, b"", 400, "empty_body"),
    ({"Content-Type": "multipart/related; type=\"application/dicom\"; boundary=zz"},
     b"--zz--\r\n", 400, "no_parts"),
])
def test_bad_bodies(client: TestClient, headers: dict[str, str], body: bytes, status: int,
                    detail: str) -> None:
    r = client.post("/v1/detect", content=body, headers=headers)
    assert (r.status_code, r.json()["detail"]) == (status, detail), r.text


def test_unknown_operating_point_and_output(client: TestClient,
                                            galactogram_files: list[Path]) -> None:
    data = galactogram_files[0].read_bytes()
    r = client.post("/v1/detect?operating_point=nope", content=data,
                    headers={"Content-Type": "application/dicom"})
    assert (r.status_code, r.json()["detail"]) == (400, "unknown_operating_point")
    r = client.post("/v1/detect?output=pdf", content=data,
                    headers={"Content-Type": "application/dicom"})
    assert (r.status_code, r.json()["detail"]) == (422, "invalid_request")


def test_upload_limit_is_enforced_before_reading(tmp_path: Path,
                                                 galactogram_files: list[Path]) -> None:
    data = galactogram_files[0].read_bytes()
    with _client(tmp_path, max_upload_mb=len(data) / 2 / 1024 / 1024) as client:
        r = client.post("/v1/detect", content=data,
                        headers={"Content-Type": "application/dicom"})
        assert (r.status_code, r.json()["detail"]) == (413, "upload_too_large")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
            for i in range(0, len(data), 65536):
                yield data[i:i + 65536]
        r = client.post("/v1/detect", content=chunks(),
                        headers={"Content-Type": "application/dicom"})
        assert (r.status_code, r.json()["detail"]) == (413, "upload_too_large")
        assert client.get("/readyz").status_code == 200


def test_dicom_outputs(client: TestClient, galactogram_files: list[Path],
                       study_result: ResultInput) -> None:
    from serving.outputs.cad_sr import read_cad_sr

    body, ctype = _related([f.read_bytes() for f in galactogram_files])
    headers = {"Content-Type": ctype}
    r = client.post("/v1/detect?operating_point=high_sensitivity&output=sr", content=body,
                    headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
    sr = pydicom.dcmread(io.BytesIO(r.content))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.50"
    assert sr.StudyInstanceUID == study_result.sources[0].StudyInstanceUID
    parsed = read_cad_sr(sr)
    for img in study_result.study.images:
        got = sorted((list(m.box), m.certainty) for m in parsed[str(img.sop_instance_uid)])
        want = sorted((f.box_px, f.score) for f in img.findings)
        assert len(got) == len(want) > 0
        for (gb, gs), (wb, ws) in zip(got, want, strict=True):
            assert max(abs(a - b) for a, b in zip(gb, wb, strict=True)) < 1e-2
            assert abs(gs - ws) < 1e-6
    texts = [str(e.value) for e in sr.iterall() if e.keyword == "TextValue"]
    assert any("% of lesions were marked at" in t for t in texts)  # the card's promise
    r = client.post("/v1/detect", content=body,
                    headers={**headers, "Accept": "application/dicom"})
    assert pydicom.dcmread(io.BytesIO(r.content)).SOPClassUID == sr.SOPClassUID
    for output, sop_class in (("tid1500", "1.2.840.10008.5.1.4.1.1.88.34"),
                              ("gsps", "1.2.840.10008.5.1.4.1.1.11.1")):
        r = client.post(f"/v1/detect?output={output}", content=body, headers=headers)
        assert r.status_code == 200, r.text
        if r.headers["content-type"] == "application/dicom":
            assert pydicom.dcmread(io.BytesIO(r.content)).SOPClassUID == sop_class
        else:
            assert r.headers["content-type"].startswith("multipart/related")
            assert sop_class.encode() in r.content


def test_render_png(client: TestClient, galactogram_files: list[Path]) -> None:
    r = client.post("/v1/render?max_size=512", content=galactogram_files[0].read_bytes(),
                    headers={"Content-Type": "application/dicom"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    from PIL import Image

    png = Image.open(io.BytesIO(r.content))
    ds = pydicom.dcmread(galactogram_files[0], stop_before_pixels=True)
    scale = float(r.headers["x-galacto-scale"])
    assert max(png.size) <= 512
    assert abs(png.size[0] * scale - ds.Columns) <= scale


def test_auth(tmp_path: Path, galactogram_files: list[Path]) -> None:
    with _client(tmp_path, api_keys=[KEY]) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/").status_code == 200  # the viewer page holds no data
        for path in ("/v1/models", "/metrics", "/openapi.json"):
            r = client.get(path)
            assert (r.status_code, r.json()["detail"]) == (401, "missing_credentials"), path
            assert r.headers["www-authenticate"] == "Bearer"
            r = client.get(path, headers={"Authorization": "Bearer wrong-key-0123456789"})
            assert (r.status_code, r.json()["detail"]) == (401, "invalid_credentials")
            assert client.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code \
                == 200
        r = client.post("/v1/detect", content=galactogram_files[0].read_bytes(),
                        headers={"Content-Type": "application/dicom"})
        assert r.status_code == 401
        r = client.post("/dicomweb/studies", content=b"x",
                        headers={"Content-Type": "application/dicom", "Authorization": "Basic x"})
        assert (r.status_code, r.json()["detail"]) == (401, "invalid_credentials")


@pytest.mark.parametrize("keys", [[], ["changeme"], ["short-key"]])
def test_refuses_to_start_with_unsafe_keys(keys: list[str]) -> None:
    with pytest.raises(SettingsError):
        create_app(Settings(auth=True, api_keys=keys))


def test_warns_when_auth_is_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        create_app(Settings())
    assert any("authentication is OFF" in r.getMessage() for r in caplog.records)


def test_limiter_refuses_beyond_the_queue() -> None:
    async def scenario() -> list[object]:
        limiter = InferenceLimiter(concurrent=1, queue=1, retry_after_s=7)

        async def call() -> object:
            try:
                return await limiter.run(lambda: time.sleep(0.3) or "done")
            except ApiError as exc:
                return (exc.status, exc.detail, exc.headers.get("Retry-After"))
        first = asyncio.create_task(call())
        await asyncio.sleep(0.05)
        second = asyncio.create_task(call())  # queued
        await asyncio.sleep(0.05)
        third = await call()  # slot busy and queue full
        results = [await first, await second, third]
        limiter.shutdown()
        return results
    assert asyncio.run(scenario()) == ["done", "done", (503, "busy", "7")]


def test_metrics_count_requests(client: TestClient) -> None:
    client.post("/v1/detect", content=b"junk", headers={"Content-Type": "application/dicom"})
    text = client.get("/metrics").text
    assert 'galacto_http_requests_total{endpoint="/v1/detect",method="POST",status="400"}' in text
    assert 'galacto_model_info{name="galacto-small"' in text
    assert "galacto_inference_duration_seconds_bucket" in text
    assert 'galacto_images_total{outcome="rejected"}' in text


def test_no_patient_data_in_logs_metrics_or_errors(client: TestClient,
                                                   galactogram_files: list[Path],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    ds = pydicom.dcmread(galactogram_files[0])
    ds.PatientName = "Sentinel^Jane^Q"
    ds.PatientID = "PID-7731995"
    ds.PatientBirthDate = "19610203"
    ds.AccessionNumber = "ACC-5550123"
    good = io.BytesIO()
    ds.save_as(good)
    bad = make_dataset(photometric="RGB", samples_per_pixel=3, bits_stored=8)
    bad.PatientName, bad.PatientID = ds.PatientName, ds.PatientID
    secrets = ["Sentinel", "PID-7731995", "19610203", "ACC-5550123",
               str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)]
    body, ctype = _related([good.getvalue(), to_bytes(bad), b"junk"])
    with caplog.at_level(logging.DEBUG):
        r1 = client.post("/v1/detect", content=body, headers={"Content-Type": ctype})
        r2 = client.post("/v1/detect", content=to_bytes(bad),
                         headers={"Content-Type": "application/dicom"})
        r3 = client.post(f"/dicomweb/studies/{ds.StudyInstanceUID}", content=b"x",
                         headers={"Content-Type": "application/dicom"})
    assert r1.status_code == 200 and r2.status_code == 422 and r3.status_code == 415
    logged = "\n".join(r.getMessage() + " " + str(r.__dict__) for r in caplog.records
                       if not r.name.startswith("httpx"))  # the test's own client
    exposed = logged + client.get("/metrics").text + r2.text + r3.text + \
        str(r1.json()["rejected"])
    for secret in secrets:
        assert secret not in exposed, secret


def test_full_queue_answers_503_and_keeps_serving(tmp_path: Path,
                                                  galactogram_files: list[Path]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    body, ctype = _related([f.read_bytes() for f in galactogram_files])
    with _client(tmp_path, max_concurrent_inferences=1, max_queue=0, retry_after_s=3) as client:
        def post(_: int) -> tuple[int, str | None, str | None]:
            r = client.post("/v1/detect", content=body, headers={"Content-Type": ctype})
            return r.status_code, r.json().get("detail"), r.headers.get("retry-after")
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(post, range(4)))
        assert (200, None, None) in results
        assert (503, "busy", "3") in results
        assert {r[0] for r in results} <= {200, 503}
        assert post(0)[0] == 200  # served again once the slot is free
