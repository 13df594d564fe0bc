"""What routes depend on, as ``Annotated`` aliases, so that a route's signature states its
needs: ``state: StateDep`` for the app's :class:`~serving.api.state.AppState`, ``model:
ModelDep`` for the loaded model (503 ``not_ready`` while it loads or when it failed to load).

Authentication is a router-level dependency, :func:`serving.api.auth.require_key`.

FastAPI resolves dependencies before it validates the route's own query and path
parameters: a route taking ``ModelDep`` answers 503 ``not_ready`` while the model loads
whatever its parameters.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from serving.api.state import AppState, get_state
from serving.pipeline.model import DetectorModel


async def app_state(request: Request) -> AppState:
    """The :class:`AppState` of the app serving ``request`` (async: no worker thread)."""
    return get_state(request)


StateDep = Annotated[AppState, Depends(app_state)]


async def require_model(state: StateDep) -> DetectorModel:
    """The loaded model (:meth:`AppState.require_model`).

    Raises:
        ApiError: 503 ``not_ready`` (``Retry-After: 5``) while the model loads, or when it
            failed to load.
    """
    return state.require_model()


ModelDep = Annotated[DetectorModel, Depends(require_model)]
