"""Untrusted bytes are parsed once, through one guarded reader, whatever the entry point.

The classes of hostile input (``benchmarks/hostile.py``): a 2 MB deflated instance that
inflates to 2.1 GiB, a 20 MB flood of empty elements, 96 MB of zeros, a body of thousands of
empty parts. Each must be refused

- by the guarded reader itself (:func:`serving.pipeline.intake.parse.read_dataset`,
  :func:`serving.pipeline.dicom_in.read_instance`),
- through the HTTP body reader and routes (``/v1/detect``, STOW-RS), in-process,

in under a second of parsing, with the process's peak RSS growing by less than 100 MB, and
parsed once: a part the intake refused is not parsed again to name it. A hypothesis target
drives the HTTP entry point with mixes of these classes and valid instances. The gateway's
C-STORE handler has the same checks in ``tests/test_gateway_bounds.py``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom.filereader
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from benchmarks import hostile
from serving.api.main import create_app
from serving.pipeline.dicom_in import read_instance
from serving.pipeline.errors import (
    ImageTooLargeError,
    IntakeError,
    InvalidHeaderError,
    NotDicomError,
)
from serving.pipeline.intake.parse import read_dataset
from serving.settings import Settings
from tests.memory import peak_rss, reset_peak_rss

MB = 1_000_000
#: Most the peak RSS may grow while one hostile input is refused.
RSS_BOUND = 100 * MB
#: Most seconds the refusal of one hostile input may take (generous for a shared 2-core CI).
TIME_BOUND_S = 1.0

#: class -> (builder, the error the intake raises)
CLASSES: dict[str, tuple[Callable[[], bytes], type[IntakeError]]] = {
    "deflate_bomb": (hostile.deflate_bomb, ImageTooLargeError),
    "element_flood": (hostile.element_flood, InvalidHeaderError),
    "zeros": (hostile.zeros, NotDicomError),
}


def measured(call: Callable[[], Any]) -> tuple[Any, float, int]:
    """``(result or IntakeError raised, seconds, peak RSS growth in bytes)`` of ``call``."""
    before = reset_peak_rss()
    t0 = time.perf_counter()
    try:
        result = call()
    except IntakeError as exc:
        result = exc
    return result, time.perf_counter() - t0, peak_rss() - before


@pytest.mark.parametrize("kind", sorted(CLASSES))
@pytest.mark.parametrize("reader", ["read_dataset", "read_instance"])
def test_guarded_reader_refuses_each_class_cheaply(kind: str, reader: str) -> None:
    build, error = CLASSES[kind]
    data = build()
    read = read_dataset if reader == "read_dataset" else read_instance
    result, seconds, growth = measured(lambda: read(data))
    assert isinstance(result, error), result
    assert seconds < TIME_BOUND_S, f"{reader} took {seconds:.2f} s on {kind}"
    assert growth < RSS_BOUND, f"{reader} grew the peak RSS by {growth / MB:.0f} MB on {kind}"


def test_read_dataset_keeps_the_header_and_drops_the_pixels(galactogram_files: list[Path]
                                                            ) -> None:
    path = galactogram_files[0]
    header = read_dataset(path.read_bytes())
    assert "PixelData" not in header
    assert header.SOPInstanceUID and header.StudyInstanceUID
    assert header.file_meta.TransferSyntaxUID


def test_refused_instance_carries_its_header() -> None:
    """An instance refused after it was parsed names itself without a second parse."""
    from tests.dicomgen import make_dataset, to_bytes

    data = to_bytes(make_dataset(photometric="RGB", samples_per_pixel=3, bits_stored=8))
    with pytest.raises(IntakeError) as caught:
        read_instance(data)
    assert caught.value.code == "color_image"
    assert caught.value.dataset is not None
    assert caught.value.dataset.SOPInstanceUID
    assert "PixelData" not in caught.value.dataset
    with pytest.raises(NotDicomError) as unparsed:
        read_instance(hostile.zeros(1))
    assert unparsed.value.dataset is None


# ---- through HTTP, in-process ----------------------------------------------------------------


#: The app's pixel limit: a 4096 x 4096 image (larger than any mammography detector's), so a
#: deflated instance may inflate to 2 x 16.8 M + 8 MiB bytes (the guarded reader's rule).
MAX_PIXELS = 4096 * 4096


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app: FastAPI = create_app(Settings(results_dir=tmp_path_factory.mktemp("results"),
                                       max_pixels=MAX_PIXELS))
    with TestClient(app, base_url="http://localhost") as c:
        app.state.galacto.wait_loaded(60)
        assert app.state.galacto.ready
        yield c


@pytest.fixture
def parse_count(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times pydicom parsed a data set (a pass-through counter on
    ``pydicom.filereader.read_partial``, which every ``dcmread`` calls)."""
    calls = [0]
    original = pydicom.filereader.read_partial

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(pydicom.filereader, "read_partial", counting)
    return calls


def related(parts: list[bytes], boundary: str = "untrusted") -> tuple[bytes, dict[str, str]]:
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                    + p + b"\r\n" for p in parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type":
                  f'multipart/related; type="application/dicom"; boundary={boundary}'}


@pytest.mark.parametrize("kind", sorted(CLASSES))
@pytest.mark.parametrize("path", ["/v1/detect", "/dicomweb/studies"])
def test_http_refuses_each_class_parsing_it_once(client: TestClient, parse_count: list[int],
                                                 kind: str, path: str) -> None:
    build, error = CLASSES[kind]
    body, headers = related([build()])
    response, seconds, growth = measured(lambda: client.post(path, content=body,
                                                             headers=headers))
    assert 400 <= response.status_code < 500, response.text[:300]
    if path == "/v1/detect":
        assert response.json()["detail"] == error.code, response.text[:300]
    else:  # STOW-RS names a failed instance in FailedSOPSequence (0008,1198)
        assert response.json()["00081198"]["Value"], response.text[:300]
    assert parse_count[0] <= 1, f"the part was parsed {parse_count[0]} times"
    assert seconds < TIME_BOUND_S + len(body) / 50e6, f"{path} took {seconds:.2f} s on {kind}"
    assert growth < RSS_BOUND + 3 * len(body), (
        f"{path} grew the peak RSS by {growth / MB:.0f} MB on {kind} "
        f"({len(body) / MB:.0f} MB body)")


def test_refused_part_beside_a_valid_one_is_parsed_once(client: TestClient,
                                                        parse_count: list[int],
                                                        galactogram_files: list[Path]) -> None:
    valid = galactogram_files[0].read_bytes()
    body, headers = related([hostile.element_flood(2), valid])
    response = client.post("/v1/detect", content=body, headers=headers)
    assert response.status_code == 200, response.text[:300]
    rejected = response.json()["rejected"]
    assert [r["detail"] for r in rejected] == ["invalid_header"]
    assert parse_count[0] == 2  # one parse per part, none to name the refused one


# ---- the fuzz target -------------------------------------------------------------------------

PART_KINDS = st.sampled_from(["deflate_bomb", "element_flood", "zeros", "valid", "empty"])


def _part(kind: str, size: int, valid: bytes) -> bytes:
    if kind == "deflate_bomb":
        return hostile.deflate_bomb(2 + size % 33)
    if kind == "element_flood":
        return hostile.element_flood(1 + size % 20)
    if kind == "zeros":
        return hostile.zeros(1 + size % 24)
    return valid if kind == "valid" else b""


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
@given(kinds=st.lists(st.tuples(PART_KINDS, st.integers(0, 1000)), min_size=1, max_size=4),
       empty_parts=st.integers(0, 2000))
def test_fuzz_http_body_with_hostile_mixes(client: TestClient, galactogram_files: list[Path],
                                           kinds: list[tuple[str, int]],
                                           empty_parts: int) -> None:
    """Any mix of hostile parts, valid parts and a run of empty parts: a 200 with each hostile
    part in ``rejected`` when a valid part is there, else one 4xx with a stable ``detail``;
    parsing (beyond the upload) stays under the time bound per part and the peak RSS growth
    under the bound plus a few copies of the body."""
    valid = galactogram_files[0].read_bytes()
    parts = [_part(kind, size, valid) for kind, size in kinds] + [b""] * empty_parts
    body, headers = related(parts)
    response, seconds, growth = measured(lambda: client.post("/v1/detect", content=body,
                                                             headers=headers))
    assert response.status_code != 500, response.text[:300]
    assert response.status_code < 500 or response.json()["detail"] == "busy"
    if response.status_code == 200:
        assert any(kind == "valid" for kind, _ in kinds)
    else:
        assert response.json()["detail"], response.text[:300]
    budget = TIME_BOUND_S * (1 + len(kinds)) + len(body) / 50e6 + empty_parts * 1e-3
    assert seconds < budget + 10 * sum(kind == "valid" for kind, _ in kinds), seconds
    assert growth < RSS_BOUND + 4 * len(body) + 200 * MB * sum(k == "valid" for k, _ in kinds)


# ---- many parts, each under its own limits ---------------------------------------------------


@pytest.fixture(scope="module")
def default_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app with the default pixel limit (a deflated part may inflate to 142 MB)."""
    app: FastAPI = create_app(Settings(results_dir=tmp_path_factory.mktemp("results-default")))
    with TestClient(app, base_url="http://localhost") as c:
        app.state.galacto.wait_loaded(60)
        yield c


def test_many_small_deflate_bombs_share_one_budget(default_client: TestClient) -> None:
    """30 parts that each inflate to 128 MiB (under the per-part limit): the request's parts
    may hold GALACTO_MAX_UPLOAD_MB together, so after 4 the rest are refused unparsed, and
    no refused part's blob is kept to name it (before: 13 GB for 100 such parts)."""
    body, headers = related([hostile.deflate_bomb(2)] * 30)
    response, seconds, growth = measured(lambda: default_client.post(
        "/v1/detect", content=body, headers=headers))
    assert response.status_code in (400, 413), response.text[:300]
    assert len(response.json()["rejected"]) == 30
    assert seconds < 20, seconds
    assert growth < 800 * MB, f"peak RSS grew by {growth / MB:.0f} MB"


def test_element_floods_split_across_parts_share_one_budget(default_client: TestClient
                                                             ) -> None:
    """60 parts of 19,000 empty elements each (under the per-object budget): the request's
    parts may hold 100,000 elements together, so triage refuses the rest unparsed and is free
    again in seconds (before: 30 s for 50 such parts, other clients waiting)."""
    body, headers = related([hostile.element_flood(count=19_000)] * 60)
    response, seconds, _ = measured(lambda: default_client.post(
        "/v1/detect", content=body, headers=headers))
    assert response.status_code == 400, response.text[:300]
    details = [r["detail"] for r in response.json()["rejected"]]
    assert len(details) == 60 and set(details) <= {"invalid_header", "no_pixel_data"}
    assert details.count("invalid_header") >= 50  # the budget ran out after a few parts
    assert seconds < 15, seconds  # before the shared budget: 30 s for 50 parts


class _CountingReader(io.BytesIO):
    """A file object that counts the bytes read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def test_the_kept_header_does_not_read_the_pixel_data_back() -> None:
    """``read_dataset`` leaves the pixel data deferred and unread: keeping the header must not
    read the deferred values back from the source (a 2 MB image costs a few kB of reads)."""
    from tests.dicomgen import make_dataset, to_bytes

    data = to_bytes(make_dataset(rows=1024, cols=1024))
    source = _CountingReader(data)
    header = read_dataset(source)
    assert "PixelData" not in header
    assert header.Rows == 1024
    assert len(data) > 2_000_000
    assert source.bytes_read < 100_000, source.bytes_read
