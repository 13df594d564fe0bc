"""Bearer-key authentication for every endpoint but the probes and the static viewer files.

The viewer page itself holds no data (it asks for the key and sends it with each call), so
``/`` and ``/static/*`` are open; ``/healthz`` and ``/readyz`` are open for orchestrators.
Keys are compared in constant time.
"""

from __future__ import annotations

import hmac

from serving.api.errors import ApiError

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
