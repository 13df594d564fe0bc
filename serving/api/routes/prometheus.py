"""``GET /metrics``: the app's Prometheus metrics (text exposition format), behind the key."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from serving.api.auth import keyed_router
from serving.api.deps import StateDep

# no prefix: /metrics is where Prometheus scrapes by default
router = keyed_router(tags=["operations"])
#: Error statuses of the router's operation (every body is ErrorOut).
ERRORS = router.responses


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(state: StateDep) -> Response:
    """Request, inference, image and finding counters, the limiter's running and queued
    requests, the model's name and version, and the embedded gateway's metrics."""
    state.metrics.running.set(state.limiter.running)
    state.metrics.queued.set(state.limiter.waiting)
    # rendered in a worker thread: a scrape never holds up the probes on the event loop
    text = await asyncio.to_thread(generate_latest, state.metrics.registry)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
