"""Probes, model information and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from serving.api.schemas import Health, ModelInfo, OperatingPointInfo
from serving.api.state import get_state

router = APIRouter(tags=["operations"])

#: Card keys summarised by ``GET /v1/models``.
CARD_SUMMARY = ("intended_use", "metrics", "versions")


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="alive")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}},
            summary="Readiness: the model is loaded and warmed up")
async def readyz(request: Request) -> Response:
    state = get_state(request)
    if state.ready and state.model is not None:
        body = Health(status="ready", model=f"{state.model.name} {state.model.version}")
        return JSONResponse(body.model_dump())
    status = "failed" if state.load_error else "loading"
    return JSONResponse(Health(status=status).model_dump(), status_code=503)


@router.get("/v1/models", response_model=list[ModelInfo], summary="The loaded model")
async def models(request: Request) -> list[ModelInfo]:
    state = get_state(request)
    model = state.require_model()
    card: dict[str, Any] = model.card
    ops = [OperatingPointInfo(name=o.name, score_threshold=o.score_threshold,
                              max_fp_per_image=o.max_fp_per_image, sensitivity=o.sensitivity,
                              fp_per_image=o.fp_per_image,
                              source=model.operating_points_source)
           for o in model.operating_points.values()]
    return [ModelInfo(name=model.name, version=model.version,
                      default_operating_point=state.settings.operating_point
                      or model.default_operating_point,
                      operating_points=ops, spacing_mm=model.preprocess.spacing_mm,
                      classes=model.classes,
                      sha256=card.get("onnx", {}).get("sha256"),
                      card={k: card[k] for k in CARD_SUMMARY if k in card})]


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    state = get_state(request)
    state.metrics.running.set(state.limiter.running)
    state.metrics.queued.set(state.limiter.waiting)
    # rendered in a worker thread: a scrape never holds up the probes on the event loop
    text = await asyncio.to_thread(generate_latest, state.metrics.registry)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
