"""Bearer-key authentication for every endpoint but the probes and the static viewer files.

Each router of a keyed resource declares :func:`require_key` as a router-level dependency
(``APIRouter(dependencies=[Depends(require_key)])``, made by :func:`keyed_router`), so every
one of its routes checks the key itself and the OpenAPI schema documents its 401;
``tests/test_api_structure.py`` fails when a route other than the open ones lacks it. The
probes (:mod:`serving.api.routes.probes`) are on a router without it.

What no key-checking route serves is refused before routing (:func:`routed_to_key_check`,
used by :func:`serving.api.middleware.admit`): unknown paths, a method a path does not have,
a path that would be redirected to its other-slash form. So nothing tells a client without a
key which paths exist.

The viewer page itself holds no data (it asks for the key and sends it with each call), so
``/`` and ``/static/*`` are open; ``/healthz`` and ``/readyz`` are open for orchestrators.
Keys are compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

import fastapi.routing
from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from serving.api.errors import ApiError
from serving.api.schemas import error_responses
from serving.api.state import get_state

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/favicon.ico"})
OPEN_PREFIXES = ("/static/",)


def is_open(path: str) -> bool:
    """Whether ``path`` is served without a key."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def check_bearer(header: str | None, keys: list[str]) -> None:
    """Accept ``Authorization: Bearer <key>`` with one of ``keys``.

    Raises:
        ApiError: 401 ``missing_credentials`` or ``invalid_credentials`` (with
            ``WWW-Authenticate: Bearer``).
    """
    challenge = {"WWW-Authenticate": "Bearer"}
    if not header:
        raise ApiError(401, "missing_credentials",
                       "this endpoint needs an 'Authorization: Bearer <key>' header",
                       headers=challenge)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "invalid_credentials",
                       "the Authorization header must be 'Bearer <key>'", headers=challenge)
    given = token.strip().encode()
    if not any(hmac.compare_digest(given, k.encode()) for k in keys):
        raise ApiError(401, "invalid_credentials", "the API key is not valid",
                       headers=challenge)


async def require_key(request: Request) -> None:
    """Router-level dependency: the request's key, when the app requires one
    (``GALACTO_AUTH``/``GALACTO_API_KEYS``).

    Raises:
        ApiError: 401, as :func:`check_bearer`.
    """
    settings = get_state(request).settings
    if settings.auth:
        check_bearer(request.headers.get("authorization"), settings.api_keys)


#: How a keyed router documents the 401 of :func:`require_key`.
UNAUTHORIZED_DESCRIPTION = "missing or invalid API key"


def keyed_router(errors: Mapping[int, str] | None = None, *, prefix: str = "",
                 tags: list[str | Enum] | None = None) -> APIRouter:
    """The router of a keyed resource: :func:`require_key` as its dependency, so every one of
    its routes checks the key, and ``responses=`` documenting the 401
    (:data:`UNAUTHORIZED_DESCRIPTION`) and ``errors`` (status -> description), in ascending
    order, every body an ``ErrorOut`` (:func:`serving.api.schemas.error_responses`; the
    router's ``responses`` is the ``ERRORS`` of its module)."""
    codes = dict(sorted({401: UNAUTHORIZED_DESCRIPTION, **(errors or {})}.items()))
    return APIRouter(prefix=prefix, tags=tags, dependencies=[Depends(require_key)],
                     responses=error_responses(codes))


def flat_routes(routes: Iterable[BaseRoute]) -> list[Any]:
    """Every route, in routing order, those of included routers too (recent FastAPI keeps an
    included router as one entry and flattens it with ``iter_route_contexts``; each item
    has the route's ``path``, ``methods``, ``dependencies`` and ``matches``)."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(flatten(list(routes))) if flatten is not None else list(routes)


def checks_key(route: Any) -> bool:
    """Whether ``route`` (an item of :func:`flat_routes`) has :func:`require_key` among its
    dependencies, its routers' included."""
    return any(getattr(d, "dependency", None) is require_key
               for d in getattr(route, "dependencies", None) or ())


def routed_to_key_check(scope: Scope) -> bool:
    """Whether routing will hand this HTTP request to a route that checks the key itself:
    the first route that fully matches it (path and method) has :func:`require_key`. False
    when nothing fully matches (404, 405, a slash redirect) or the app is unknown."""
    app = scope.get("app")
    if app is None:
        return False
    for route in flat_routes(getattr(app, "routes", ())):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return checks_key(route)
    return False
