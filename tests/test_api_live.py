"""Round trips through a real ``galacto serve`` (uvicorn, real HTTP): detect, STOW-RS and
WADO-RS retrieval of the stored results, and the server's structured logs."""

from __future__ import annotations

import json
import time
from email.parser import BytesParser
from email.policy import HTTP
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest

CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"


def _related(parts: list[bytes], boundary: str = "live-boundary") -> tuple[bytes, str]:
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                    + p + b"\r\n" for p in parts) + f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def _parts(response: httpx.Response) -> list[pydicom.Dataset]:
    """The DICOM objects of a multipart/related response."""
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    msg = BytesParser(policy=HTTP).parsebytes(head + response.content)
    assert msg.is_multipart()
    out = []
    for part in msg.iter_parts():
        assert part.get_content_type() == "application/dicom"
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        out.append(pydicom.dcmread(BytesIO(payload)))
    return out


def test_detect_over_http(live_server: tuple[str, Path], galactogram_files: list[Path]) -> None:
    url, _ = live_server
    body, ctype = _related([f.read_bytes() for f in galactogram_files])
    with httpx.Client(base_url=url, timeout=60) as client:
        client.post("/v1/detect", content=body, headers={"Content-Type": ctype})  # warm
        t0 = time.perf_counter()
        r = client.post("/v1/detect", content=body, headers={"Content-Type": ctype})
        elapsed = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["model"]["name"] == "galacto-small"
    assert len(data["studies"][0]["images"]) == 2
    assert data["request_id"] == r.headers["x-request-id"]
    print(f"\n/v1/detect, 2 GE images over HTTP: {elapsed * 1e3:.0f} ms "
          f"(server: {data['timings_ms']})")


def test_stow_then_wado(live_server: tuple[str, Path], galactogram_files: list[Path]) -> None:
    url, _ = live_server
    study = str(pydicom.dcmread(galactogram_files[0], stop_before_pixels=True).StudyInstanceUID)
    body, ctype = _related([f.read_bytes() for f in galactogram_files] + [b"not dicom at all"])
    with httpx.Client(base_url=url, timeout=60) as client:
        r = client.post(f"/dicomweb/studies/{study}", content=body,
                        headers={"Content-Type": ctype, "Accept": "application/dicom+json"})
        assert r.status_code == 202, r.text  # two stored, one failed
        assert r.headers["content-type"].startswith("application/dicom+json")
        reply = pydicom.Dataset.from_json(r.json())
        assert len(reply.ReferencedSOPSequence) == 2
        assert [int(i.FailureReason) for i in reply.FailedSOPSequence] == [0xC000]
        assert reply.RetrieveURL == f"{url}/dicomweb/studies/{study}"

        results = _parts(client.get(reply.RetrieveURL,
                                    headers={"Accept": 'multipart/related; '
                                                       'type="application/dicom"'}))
        classes = sorted(str(ds.SOPClassUID) for ds in results)
        assert CAD_SR in classes and COMPREHENSIVE_3D_SR in classes and GSPS in classes
        sources = {str(i.ReferencedSOPInstanceUID) for i in reply.ReferencedSOPSequence}
        for ds in results:
            assert ds.StudyInstanceUID == study
            assert ds.SeriesInstanceUID not in {
                str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID)
                for f in galactogram_files}
            assert ds.SOPInstanceUID not in sources
        one = results[0]
        r = client.get(f"/dicomweb/studies/{study}/series/{one.SeriesInstanceUID}/instances/"
                       f"{one.SOPInstanceUID}")
        assert [d.SOPInstanceUID for d in _parts(r)] == [one.SOPInstanceUID]
        meta = client.get(f"/dicomweb/studies/{study}/metadata").json()
        assert len(meta) == len(results)
        assert client.get("/dicomweb/studies/1.2.3.4").status_code == 404
        r = client.get(f"/dicomweb/studies/{study}", headers={"Accept": "application/json"})
        assert (r.status_code, r.json()["detail"]) == (406, "not_acceptable")


@pytest.mark.parametrize(("parts", "study", "status", "reasons"), [
    ([b"junk", b"more junk"], None, 400, [0xC000, 0xC000]),
    (["file0"], "1.2.3.4.5", 409, [0xA900]),
])
def test_stow_nothing_stored(live_server: tuple[str, Path], galactogram_files: list[Path],
                             parts: list[bytes | str], study: str | None, status: int,
                             reasons: list[int]) -> None:
    url, _ = live_server
    data = [galactogram_files[0].read_bytes() if p == "file0" else p for p in parts]
    body, ctype = _related([d for d in data if isinstance(d, bytes)])
    path = f"/dicomweb/studies/{study}" if study else "/dicomweb/studies"
    r = httpx.post(url + path, content=body, headers={"Content-Type": ctype}, timeout=60)
    assert r.status_code == status, r.text
    reply = pydicom.Dataset.from_json(r.json())
    assert [int(i.FailureReason) for i in reply.FailedSOPSequence] == reasons
    assert "ReferencedSOPSequence" not in reply and "RetrieveURL" not in reply


def test_stow_needs_multipart_related(live_server: tuple[str, Path],
                                      galactogram_files: list[Path]) -> None:
    url, _ = live_server
    r = httpx.post(f"{url}/dicomweb/studies", content=galactogram_files[0].read_bytes(),
                   headers={"Content-Type": "application/dicom"}, timeout=60)
    assert (r.status_code, r.json()["detail"]) == (415, "unsupported_media_type")
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_server_logs_are_json_with_request_ids(live_server: tuple[str, Path],
                                               galactogram_files: list[Path]) -> None:
    url, log_path = live_server
    rid = "trace-me-123"
    httpx.get(f"{url}/v1/models", headers={"X-Request-ID": rid})
    ds = pydicom.dcmread(galactogram_files[0], stop_before_pixels=True)
    time.sleep(0.2)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert any(line.get("request_id") == rid and line.get("endpoint") == "/v1/models"
               for line in lines)
    text = log_path.read_text()
    for secret in (str(ds.PatientID), str(ds.PatientName), str(ds.StudyInstanceUID),
                   str(ds.SOPInstanceUID)):
        assert secret not in text
