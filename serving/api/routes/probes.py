"""The probes, ``GET /healthz`` (liveness) and ``GET /readyz`` (readiness): on a router
without :func:`serving.api.auth.require_key`, open to orchestrators, which have no key."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from serving.api.deps import StateDep
from serving.api.schemas import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    """Always ``alive`` while the process serves requests."""
    return Health(status="alive")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}},
            summary="Readiness: the model is loaded and warmed up")
async def readyz(state: StateDep) -> Response:
    """``ready`` with the model's name and version; 503 ``loading`` or ``failed``."""
    if state.ready and state.model is not None:
        body = Health(status="ready", model=f"{state.model.name} {state.model.version}")
        return JSONResponse(body.model_dump())
    status = "failed" if state.load_error else "loading"
    return JSONResponse(Health(status=status).model_dump(), status_code=503)
