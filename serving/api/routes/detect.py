"""``POST /v1/detect`` (JSON or DICOM results) and ``POST /v1/render`` (PNG for the viewer).

Both take 2D images and tomosynthesis volumes (Breast Tomosynthesis Image, multi-frame
grayscale Secondary Capture): a volume's findings carry their frames; ``/v1/render`` draws one
frame of a volume (``frame``, 1-based) and keeps the volume, so that ``GET
/v1/render/{render_id}`` draws its other frames without a new upload
(:mod:`serving.api.render_cache`).
"""

from __future__ import annotations

import dataclasses
import time
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Path, Query, Request
from starlette.responses import Response

from serving.api.admission import client_of
from serving.api.analysis import (
    Analysis,
    analyse,
    build_results,
    read_parts,
    refused,
    run_detection,
)
from serving.api.auth import keyed_router
from serving.api.deadlines import CLOCK_KEY
from serving.api.deps import ModelDep, StateDep
from serving.api.errors import ApiError
from serving.api.logs import request_id_var
from serving.api.render import Rendered, check_frame, frame_count, render_item
from serving.api.render_cache import stored_size
from serving.api.responses import multipart_related, wants_dicom
from serving.api.schemas import DetectResponse, error_responses
from serving.api.state import AppState
from serving.api.store import to_bytes
from serving.api.triage import Triaged, limits_of
from serving.api.uploads import disconnected, run_upload
from serving.outputs.common import ResultKind
from serving.pipeline.dicom_in import Volume
from serving.pipeline.findings import ImageOut
from serving.pipeline.model import DetectorModel

DICOM_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One galactogram instance or tomosynthesis volume "
                       "(application/dicom), several (multipart/related; "
                       "type=\"application/dicom\"), or file uploads (multipart/form-data).",
        "content": {
            "application/dicom": {"schema": {"type": "string", "format": "binary"}},
            "multipart/related": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {"file": {"type": "array",
                                        "items": {"type": "string", "format": "binary"}}}}},
        },
    }
}
router = keyed_router({
    400: "not DICOM, truncated, malformed body, unknown operating point, invalid UID for a "
         "DICOM output",
    403: "cross-site request from a browser",
    408: "request body too slow",
    413: "body or image too large, or too many parts",
    415: "unsupported Content-Type or transfer syntax",
    422: "DICOM the detector cannot analyse (SOP class, color, multi-frame other than a "
         "tomosynthesis volume, raw DBT projections, no spacing), or a frame the object does "
         "not have (invalid_frame)",
    503: "model not ready, or all inference slots and the queue are full",
}, prefix="/v1", tags=["detection"])
#: Error statuses of the router's operations (every body is ErrorOut).
ERRORS: dict[int | str, dict[str, Any]] = router.responses


class Output(StrEnum):
    """What ``/v1/detect`` returns."""

    json = "json"
    sr = "sr"
    tid1500 = "tid1500"
    gsps = "gsps"


def _operating_point(state: AppState, model: DetectorModel, name: str | None) -> str:
    key = name or state.settings.operating_point or model.default_operating_point
    if key not in model.operating_points:
        raise ApiError(400, "unknown_operating_point",
                       f"operating_point must be one of {sorted(model.operating_points)}, "
                       f"found {key!r}")
    return key


def _all_rejected(analysis: Analysis) -> ApiError:
    first = analysis.rejected[0]
    same = all(r.status == first.status for r in analysis.rejected)
    extra = {"rejected": [r.model_dump() for r in analysis.rejected]}
    if len(analysis.rejected) == 1 or same:
        return ApiError(first.status, first.detail, first.message, extra=extra)
    return ApiError(400, "no_valid_instance",
                    f"none of the {len(analysis.rejected)} parts could be analysed; see "
                    "'rejected'", extra=extra)


def _record(state: AppState, analysis: Analysis, seconds: float | None) -> None:
    """Metrics of one request; ``seconds`` in the inference slot (None: answered from
    triage)."""
    m = state.metrics
    if seconds is not None:
        m.inference.observe(seconds)
    m.images.labels("analysed").inc(len(analysis.images))
    m.images.labels("rejected").inc(len(analysis.rejected))
    if analysis.response is not None:
        m.findings.inc(sum(len(i.findings) for s in analysis.response.studies
                           for i in s.images))


@router.post("/detect", response_model=DetectResponse, openapi_extra=DICOM_BODY,
             responses={200: {"content": {"application/dicom": {}, "multipart/related": {}},
                              "description": "JSON, or the DICOM result object(s) with "
                                             "output=sr|tid1500|gsps"}},
             summary="Detect filling defects in galactogram instances")
async def detect_route(
    request: Request,
    state: StateDep,
    model: ModelDep,
    operating_point: Annotated[str | None, Query(
        description="model operating point name (default: the configured one)")] = None,
    output: Annotated[Output | None, Query(
        description="json (default) or a DICOM result: sr (Mammography CAD SR), tid1500, "
                    "gsps; Accept: application/dicom means sr")] = None,
) -> Response:
    """Findings per instance (boxes in px and mm, score, location), fused CC/ML(O) findings
    per breast, model and operating point, timings and the request id."""
    t0 = time.perf_counter()
    op = _operating_point(state, model, operating_point)
    kind = output or (Output.sr if wants_dicom(request.headers.get("accept")) else Output.json)
    rid = request_id_var.get()

    def work(triaged: Triaged) -> tuple[Analysis, list[bytes], float | None]:
        started = time.perf_counter()
        settings = state.settings
        analysis = analyse(triaged, model, op, limits_of(settings), rid,
                           settings.tomo_for(model))
        blobs = []
        if kind is not Output.json and analysis.response is not None:
            blobs = [to_bytes(ds) for ds in build_results(analysis, [ResultKind(kind.value)])]
        return analysis, blobs, started

    def nothing_to_run(triaged: Triaged) -> tuple[Analysis, list[bytes], float | None]:
        return refused(triaged), [], None

    queued = time.perf_counter()
    analysis, blobs, started = await run_upload(
        request, state, work, nothing_to_run, uids="none" if kind is Output.json else "outputs")
    _record(state, analysis, None if started is None else time.perf_counter() - started)
    if analysis.response is None or started is None:
        raise _all_rejected(analysis)
    headers = {"X-Galacto-Rejected": str(len(analysis.rejected))}
    if kind is not Output.json:
        if len(blobs) == 1:
            return Response(blobs[0], media_type="application/dicom", headers=headers)
        resp = multipart_related(blobs)
        resp.headers.update(headers)
        return resp
    timings = {"queue": round((started - queued) * 1e3, 1), **analysis.timings_ms,
               "total": round((time.perf_counter() - t0) * 1e3, 1)}
    body = DetectResponse(**analysis.response.model_dump(), rejected=analysis.rejected,
                          timings_ms=timings)
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)


#: Query ``max_size`` of both render routes.
MaxSize = Annotated[int, Query(ge=64, le=4096, description="longest side of the PNG (px)")]


@router.post("/render", openapi_extra=DICOM_BODY, response_class=Response,
             responses={200: {"content": {"image/png": {}},
                              "description": "the image (or a frame of a volume) windowed "
                                             "for display; headers X-Galacto-Scale = stored "
                                             "pixels per PNG pixel, and for a volume "
                                             "X-Galacto-Frame (the frame drawn, 1-based), "
                                             "X-Galacto-Frames (its number of frames) and, "
                                             "unless GALACTO_RENDER_CACHE_MB=0 or the volume "
                                             "is larger, X-Galacto-Render-Id: a random id "
                                             "under which the server keeps the volume (at "
                                             "most 15 min unused, least recently used "
                                             "evicted first; bound to the API key when "
                                             "authentication is on) so that "
                                             "GET /v1/render/{render_id} draws its other "
                                             "frames without a new upload"}},
             summary="Render one instance, or one frame of a volume, as a PNG")
async def render_route(
    request: Request, state: StateDep, model: ModelDep,
    max_size: MaxSize = 1024,
    frame: Annotated[int | None, Query(
        description="the frame of a tomosynthesis volume to draw, 1-based (a 2D image has "
                    "frame 1 only); default: with the overlay, the best frame of the top "
                    "finding, else the central frame")] = None,
    overlay: Annotated[bool | None, Query(
        description="draw the findings (runs detection); default: yes for a volume, no for "
                    "a 2D image (the viewer draws its own boxes and asks overlay=false)")] = None,
    operating_point: Annotated[str | None, Query(
        description="operating point of the findings drawn (default: the configured "
                    "one)")] = None,
) -> Response:
    """The first instance of the body as an 8-bit PNG (bright = contrast), at most
    ``max_size`` pixels on its longest side; a tomosynthesis volume as one frame, the volume
    kept for ``GET /v1/render/{render_id}`` (``X-Galacto-Render-Id``)."""
    check_frame(frame)  # below 1: refused before the body is read
    op = _operating_point(state, model, operating_point)
    settings = state.settings
    rid = request_id_var.get()
    owner = _render_owner(request, state)

    def nothing_to_run(triaged: Triaged) -> Rendered:
        raise _all_rejected(refused(triaged))

    def work(triaged: Triaged) -> Rendered:
        analysis = read_parts(triaged, model, limits_of(settings))
        if not analysis.images:
            raise _all_rejected(analysis)
        item = analysis.images[0]
        result: ImageOut | None = None
        draw = overlay if overlay is not None else isinstance(item, Volume)
        if draw:
            check_frame(frame, frame_count(item))  # before detection runs
            run_detection(analysis, model, op, rid, settings.tomo_for(model))
            if analysis.response is None:
                raise _all_rejected(analysis)
            result = analysis.response.studies[0].images[0]
        rendered = render_item(item, max_size=max_size, frame=frame, result=result)
        if not isinstance(item, Volume):
            return rendered
        kept = triaged.accepted[0].dataset if triaged.accepted else None
        render_id = state.render_cache.keep(item, owner, stored_size(item, kept))
        return dataclasses.replace(rendered, render_id=render_id)

    rendered = await run_upload(request, state, work, nothing_to_run, first=1)
    return Response(rendered.png, media_type="image/png", headers=rendered.headers())


def _render_owner(request: Request, state: AppState) -> str | None:
    """Whom a kept volume is bound to: the client's API key (a digest) when authentication
    is on; None (the id alone grants access) when it is off."""
    return client_of(request, True) if state.settings.auth else None


@router.get("/render/{render_id}", response_class=Response,
            responses={200: {"content": {"image/png": {}},
                             "description": "the frame, as POST /v1/render draws it without "
                                            "findings (same PNG for the same frame and "
                                            "max_size); headers X-Galacto-Scale, "
                                            "X-Galacto-Frame, X-Galacto-Frames"},
                       **error_responses({404: "render_expired: no volume is kept under "
                                               "this id for this API key (expired after 15 "
                                               "min unused, evicted, or never issued); send "
                                               "the file to POST /v1/render again"})},
            summary="Render one frame of a volume kept by POST /v1/render")
async def render_kept_route(
    request: Request, state: StateDep,
    render_id: Annotated[str, Path(
        description="the X-Galacto-Render-Id of a POST /v1/render of the volume")],
    max_size: MaxSize = 1024,
    frame: Annotated[int | None, Query(
        description="the frame to draw, 1-based; default: the central frame")] = None,
    overlay: Annotated[bool, Query(
        description="false only: a kept volume is drawn without findings (the viewer "
                    "draws its own boxes); true is refused with 422 "
                    "invalid_request")] = False,
) -> Response:
    """Frame ``frame`` of a volume kept by ``POST /v1/render`` as an 8-bit PNG, at most
    ``max_size`` pixels on its longest side, drawn in an inference slot (admitted as an
    upload is, without a body).

    Raises:
        ApiError: 404 ``render_expired`` (unknown, expired or evicted id, or another key's);
            422 ``invalid_frame`` (a frame the volume does not have), ``invalid_request``
            (``overlay=true``); 503 ``busy`` (no place or slot); 499 when the client left
            before its turn; the intake's status and code when the frame cannot be decoded.
    """
    check_frame(frame)
    if overlay:
        raise ApiError(422, "invalid_request", "overlay=true needs the file: send it to POST "
                       "/v1/render; a kept volume is drawn without findings")
    volume = state.render_cache.get(render_id, _render_owner(request, state))
    check_frame(frame, frame_count(volume))  # before waiting for a slot
    client = client_of(request, state.settings.auth)
    async with state.limiter.admission(client, request.scope.get(CLOCK_KEY)) as admitted:
        admitted.place.reading = False  # no body: its place is never given to another
        rendered = await admitted.run(
            lambda: render_item(volume, max_size=max_size, frame=frame, result=None),
            gone=lambda: disconnected(request))
    return Response(rendered.png, media_type="image/png", headers=rendered.headers())
