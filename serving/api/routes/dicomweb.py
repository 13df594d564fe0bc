"""DICOMweb: STOW-RS (PS3.18 10.5) that runs detection and stores the results, and WADO-RS
retrieval of those results.

STOW-RS answers with a DICOM JSON body (``application/dicom+json``):

- ``ReferencedSOPSequence`` (0008,1199): the received instances that were accepted and
  analysed. The received images are not kept (the service stores only its results), so these
  items carry no RetrieveURL.
- ``FailedSOPSequence`` (0008,1198): refused instances with ``FailureReason`` (0008,1197):
  ``0xC000`` cannot understand (not DICOM, unreadable, truncated), ``0xC122`` transfer syntax
  not supported, ``0x0122`` SOP class not supported, ``0xA900`` Study Instance UID differs
  from the one in the URL, or a UID the results need is empty, multi-valued or malformed
  (``invalid_uid``), ``0x0111`` the same instance twice in the request, ``0x0110``
  processing failure (a valid object the detector cannot analyse: color, multi-frame other
  than a tomosynthesis volume, no spacing, too large, ...). A tomosynthesis volume whose
  frame cannot be decoded during detection is refused alone, as ``0xC000``, like any
  undecodable instance.
- ``RetrieveURL`` (0008,1190): the study URL where the results are retrieved (WADO-RS), built
  on ``GALACTO_PUBLIC_BASE_URL``; without it on the request's Host, which the Host check has
  allowed (no RetrieveURL when ``GALACTO_ALLOWED_HOSTS=*``: the Host is then unchecked).

Every instance is checked (intake and UIDs) before anything is stored, and the results of one
request are stored all or none: a refused instance never makes the others fail, and a
request either stores each accepted instance's results once or stores nothing.

Status: 200 all accepted; 202 some refused; 400 none accepted and every refusal was
"cannot understand"; 409 none accepted for another reason; 415 not
``multipart/related; type="application/dicom"``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import Path, Request
from pydicom import dcmread
from pydicom.dataset import Dataset
from starlette.responses import JSONResponse, Response

from serving.api.analysis import Analysis, build_results, read_parts, refused, run_detection
from serving.api.auth import keyed_router
from serving.api.body import RELATED
from serving.api.deps import ModelDep, StateDep
from serving.api.errors import ApiError
from serving.api.logs import request_id_var
from serving.api.responses import multipart_related
from serving.api.schemas import ErrorOut, RejectedOut
from serving.api.state import AppState
from serving.api.store import check_uid
from serving.api.triage import Triaged, limits_of
from serving.api.uploads import run_upload
from serving.dicom_status import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    DUPLICATE_SOP_INSTANCE,
    PROCESSING_FAILURE,
    SOP_CLASS_NOT_SUPPORTED,
    TRANSFER_SYNTAX_NOT_SUPPORTED,
)
from serving.pipeline.model import DetectorModel

router = keyed_router({
    400: "invalid UID, or no instance could be read",
    403: "cross-site request from a browser",
    404: "no stored result matches",
    406: "Accept not satisfiable",
    408: "request body too slow",
    409: "no instance accepted",
    413: "body or image too large, or too many parts",
    415: "not multipart/related; type=\"application/dicom\"",
    422: "invalid request parameters",
    503: "model not ready or busy",
}, prefix="/dicomweb", tags=["dicomweb"])
#: Error statuses of the router's operations (every body is ErrorOut; STOW-RS overrides 400
#: and 409, whose bodies can be DICOM JSON: :data:`STOW_RESPONSES`).
ERRORS = router.responses

FAILURE_REASON: dict[str, int] = {
    "not_dicom": CANNOT_UNDERSTAND, "invalid_header": CANNOT_UNDERSTAND,
    "decode_error": CANNOT_UNDERSTAND, "truncated_pixel_data": CANNOT_UNDERSTAND,
    "unsupported_transfer_syntax": TRANSFER_SYNTAX_NOT_SUPPORTED,
    "unsupported_sop_class": SOP_CLASS_NOT_SUPPORTED,
    "study_mismatch": DOES_NOT_MATCH_SOP_CLASS,
    "invalid_uid": DOES_NOT_MATCH_SOP_CLASS,  # PS3.18: a Type 1 UID empty or malformed
    "duplicate_instance": DUPLICATE_SOP_INSTANCE,  # sent twice in one request
}
STOW_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/related": {"schema": {"type": "string", "format": "binary"}}}}}
#: What the operations answer besides the router's ErrorOut errors (:data:`ERRORS`): STOW-RS
#: bodies are DICOM JSON for 200/202/409 and for a 400 where nothing could be read, WADO-RS
#: answers multipart/related instances or DICOM JSON metadata (tests/test_schemathesis.py).
def _dicom_json() -> dict[str, Any]:
    """A fresh ``content`` entry (FastAPI adds the model's media type into it in place)."""
    return {"application/dicom+json": {"schema": {"type": "object"}}}


STOW_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "all instances accepted (DICOM JSON)", "content": _dicom_json()},
    202: {"description": "some instances refused (DICOM JSON)", "content": _dicom_json()},
    400: {"description": "invalid UID (ErrorOut), or no instance could be read (DICOM JSON)",
          "model": ErrorOut, "content": _dicom_json()},
    409: {"description": "no instance accepted (DICOM JSON)", "content": _dicom_json()},
}
RETRIEVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the stored result instances", "content": {
        "multipart/related": {"schema": {"type": "string", "format": "binary"}}}}}
METADATA_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "DICOM JSON of every stored result of the study", "content": {
        "application/dicom+json": {"schema": {"type": "array", "items": {"type": "object"}}}}}}
# The UID syntax itself (as serving.api.store.check_uid), so that the schema promises no more
# than the service accepts: "1..2" or "01" matched the old [0-9.] pattern and got a 400
UID_PATH = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"
Uid = Annotated[str, Path(pattern=UID_PATH, max_length=64, description="a DICOM UID")]


def _ref_item(sop_class: str | None, sop_instance: str | None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class or ""
    item.ReferencedSOPInstanceUID = sop_instance or ""
    return item


def _stow_body(analysis: Analysis, failures: list[tuple[Dataset | None, int]],
               study_url: str | None) -> dict[str, Any]:
    ds = Dataset()
    if study_url:
        ds.RetrieveURL = study_url
    if analysis.headers:
        ds.ReferencedSOPSequence = [_ref_item(str(h.get("SOPClassUID", "")),
                                              str(h.get("SOPInstanceUID", "")))
                                    for h in analysis.headers]
    if failures:
        items = []
        for header, reason in failures:
            item = _ref_item(str(header.get("SOPClassUID", "")) if header else None,
                             str(header.get("SOPInstanceUID", "")) if header else None)
            item.FailureReason = reason
            items.append(item)
        ds.FailedSOPSequence = items
    body: dict[str, Any] = ds.to_json_dict()
    return body


def _split_study(analysis: Analysis, study: str | None) -> None:
    """Move accepted images of another study than ``study`` to the rejected list."""
    if study is None:
        return
    keep = [i for i, h in enumerate(analysis.headers) if str(h.get("StudyInstanceUID")) == study]
    for i in range(len(analysis.headers)):
        if i not in keep:
            analysis.rejected.append(RejectedOut(
                part=analysis.parts[i].index, name=analysis.parts[i].name,
                detail="study_mismatch", status=409,
                message="StudyInstanceUID of the instance differs from the study in the URL"))
            analysis.rejected_headers.append(analysis.headers[i])
    analysis.images = [analysis.images[i] for i in keep]
    analysis.headers = [analysis.headers[i] for i in keep]
    analysis.parts = [analysis.parts[i] for i in keep]


@router.post("/studies", openapi_extra=STOW_BODY, responses=STOW_RESPONSES,
             summary="STOW-RS: store instances")
async def stow(request: Request, state: StateDep, model: ModelDep) -> Response:
    """Run detection on the received instances and store the configured results
    (``GALACTO_STOW_RESULTS``); answer per PS3.18 with a DICOM JSON body."""
    return await _stow(request, state, model, None)


@router.post("/studies/{study}", openapi_extra=STOW_BODY, responses=STOW_RESPONSES,
             summary="STOW-RS: store instances of one study")
async def stow_study(request: Request, state: StateDep, model: ModelDep,
                     study: Uid) -> Response:
    """As ``POST /dicomweb/studies``; instances of another study are refused (0xA900)."""
    return await _stow(request, state, model, study)


def _study_url(request: Request, state: AppState, study: str) -> str | None:
    """The WADO-RS URL of ``study``: on ``GALACTO_PUBLIC_BASE_URL``, else on the request's
    base URL when its Host was checked against an allow-list; else None."""
    base = state.settings.public_base_url
    if base is None:
        if "*" in state.settings.trusted_hosts:
            return None
        base = str(request.base_url)
    return f"{base.rstrip('/')}/dicomweb/studies/{study}"


async def _stow(request: Request, state: AppState, model: DetectorModel,
                study: str | None) -> Response:
    if study is not None:
        check_uid(study, "the study in the URL")
    rid = request_id_var.get()
    kinds = list(state.settings.stow_results)

    def work(triaged: Triaged) -> tuple[Analysis, list[str]]:
        started = time.perf_counter()
        settings = state.settings
        analysis = read_parts(triaged, model, limits_of(settings))
        _split_study(analysis, study)
        stored: list[str] = []
        if analysis.images:
            run_detection(analysis, model, settings.operating_point, rid,
                          settings.tomo_for(model))
        if analysis.response is not None:
            results = build_results(analysis, kinds)  # all built before any is stored
            state.store.put_all(results)
            stored = [str(ds.StudyInstanceUID) for ds in results]
        state.metrics.inference.observe(time.perf_counter() - started)
        return analysis, stored

    def nothing_to_run(triaged: Triaged) -> tuple[Analysis, list[str]]:
        return refused(triaged), []

    analysis, stored = await run_upload(request, state, work, nothing_to_run,
                                        allowed=(RELATED,), uids="store")
    m = state.metrics
    m.images.labels("analysed").inc(len(analysis.images))
    m.images.labels("rejected").inc(len(analysis.rejected))
    failures = [(h, FAILURE_REASON.get(r.detail, PROCESSING_FAILURE))
                for r, h in zip(analysis.rejected, analysis.rejected_headers, strict=True)]
    study_url = _study_url(request, state, stored[0]) if stored else None
    if analysis.images and not failures:
        status = 200
    elif analysis.images:
        status = 202
    else:
        status = 400 if all(r == CANNOT_UNDERSTAND for _, r in failures) else 409
    return JSONResponse(_stow_body(analysis, failures, study_url), status_code=status,
                        media_type="application/dicom+json")


def _check_accept(request: Request) -> None:
    accept = request.headers.get("accept", "*/*").lower()
    if not any(a in accept for a in ("*/*", "multipart/related", "application/dicom",
                                     "multipart/*")):
        raise ApiError(406, "not_acceptable",
                       f"results are returned as multipart/related; type=\"application/dicom\","
                       f" the Accept header asks for {accept!r}")


def _read_all(paths: list[FilePath]) -> list[bytes]:
    return [p.read_bytes() for p in paths]


async def _retrieve(request: Request, state: AppState, study: str, series: str | None,
                    instance: str | None) -> Response:
    """The stored results, read in a worker thread (file reads never block the event loop).
    """
    _check_accept(request)
    store = state.store
    paths = await asyncio.to_thread(store.find, study, series, instance)
    if not paths:
        raise ApiError(404, "not_found", "no stored result matches these UIDs")
    return multipart_related(await asyncio.to_thread(_read_all, paths))


@router.get("/studies/{study}", summary="WADO-RS: retrieve the results of a study",
            response_class=Response, responses=RETRIEVE_RESPONSES)
async def retrieve_study(request: Request, state: StateDep, study: Uid) -> Response:
    """Every stored result of the study, as ``multipart/related; type="application/dicom"``.
    """
    return await _retrieve(request, state, study, None, None)


@router.get("/studies/{study}/series/{series}", response_class=Response,
            responses=RETRIEVE_RESPONSES, summary="WADO-RS: retrieve a result series")
async def retrieve_series(request: Request, state: StateDep, study: Uid,
                          series: Uid) -> Response:
    """The stored results of one series, as ``multipart/related; type="application/dicom"``.
    """
    return await _retrieve(request, state, study, series, None)


@router.get("/studies/{study}/series/{series}/instances/{instance}", response_class=Response,
            responses=RETRIEVE_RESPONSES, summary="WADO-RS: retrieve one result instance")
async def retrieve_instance(request: Request, state: StateDep, study: Uid,
                            series: Uid,
                            instance: Uid) -> Response:
    """One stored result instance, as ``multipart/related; type="application/dicom"``."""
    return await _retrieve(request, state, study, series, instance)


@router.get("/studies/{study}/metadata", responses=METADATA_RESPONSES,
            summary="WADO-RS: metadata of a study's results")
async def study_metadata(state: StateDep, study: Uid) -> Response:
    """DICOM JSON of every stored result of the study."""
    paths = await asyncio.to_thread(state.store.find, study)
    if not paths:
        raise ApiError(404, "not_found", "no stored result matches this study")
    items = await asyncio.to_thread(_metadata, paths)
    return JSONResponse(items, media_type="application/dicom+json")


def _metadata(paths: list[FilePath]) -> list[dict[str, Any]]:
    """DICOM JSON of the stored results (the service's own files, written by the store)."""
    return [dcmread(p).to_json_dict() for p in paths]

