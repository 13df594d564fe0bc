"""Refusing cross-site requests that change state (CSRF from a browser page).

A page on another site can make a browser send a form post (``multipart/form-data``,
``application/x-www-form-urlencoded``, ``text/plain``) to a service on this machine without any
CORS preflight: a cross-site form post to ``/v1/detect`` was processed. Browsers say where a
request comes from (``Sec-Fetch-Site``, ``Origin``); other clients send neither. So a request
with an unsafe method is refused with 403 ``cross_site_request`` when ``Sec-Fetch-Site`` is
anything but ``same-origin`` or ``none`` (typed by the user), or when ``Origin`` is present
and is not this service (the request's Host, or ``GALACTO_PUBLIC_BASE_URL``). The viewer page
(same origin) passes; curl, DICOMweb clients and the gateway send neither header.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request

from serving.api.errors import ApiError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: ``Sec-Fetch-Site`` values of requests from this origin or from the user.
SAME_ORIGIN_SITES = frozenset({"same-origin", "none"})


def _netloc(url: str) -> str | None:
    """``host[:port]`` of ``url`` in lower case, or None when it has none (``null``)."""
    try:
        return urlsplit(url).netloc.lower() or None
    except ValueError:
        return None


def check_same_origin(request: Request, public_base_url: str | None) -> None:
    """Refuse a state-changing request that a browser sent from another origin.

    Raises:
        ApiError: 403 ``cross_site_request``.
    """
    if request.method in SAFE_METHODS:
        return
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None and site.lower() not in SAME_ORIGIN_SITES:
        raise _refused(f"Sec-Fetch-Site is {site[:32]!r}")
    if origin is None:
        return
    ours = {request.headers.get("host", "").lower()}
    if public_base_url:
        ours.add(_netloc(public_base_url) or "")
    if _netloc(origin) not in ours:
        raise _refused("its Origin is another site")


def _refused(why: str) -> ApiError:
    return ApiError(403, "cross_site_request",
                    f"a browser sent this request from another site ({why}); state-changing "
                    "requests are taken from the same origin or from non-browser clients only")
