"""Service settings from ``GALACTO_*`` environment variables (pydantic-settings).

Defaults run on a laptop: the bundled model, ``127.0.0.1:8000``, results in a local folder, no
authentication (with a logged warning), requests only for loopback host names. Unsafe
combinations refuse to start: a listen address other than loopback without API keys (unless
``GALACTO_AUTH=off`` says so on purpose), authentication on with no key, or a key that is short
or a well-known placeholder.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from serving.outputs.common import ResultKind
from serving.pipeline.dicom_in import DEFAULT_MAX_FRAMES
from serving.providers import check_providers

if TYPE_CHECKING:
    from serving.pipeline.detect_volume import TomoSettings
    from serving.pipeline.model import DetectorModel

log = logging.getLogger(__name__)

#: Keys that are never accepted (placeholders people copy from examples).
PLACEHOLDER_KEYS = frozenset({"changeme", "change-me", "secret", "default", "password",
                              "apikey", "api-key", "galacto", "test", "token", "example"})
MIN_KEY_LENGTH = 16
_WORDS = "|".join(sorted((re.escape(w.replace("-", "")) for w in PLACEHOLDER_KEYS),
                         key=len, reverse=True))
_PLACEHOLDER_RE = re.compile(rf"(?:(?:{_WORDS}|key|api|my|your|here|\d+)[-_.:\s]*)+")


def is_placeholder(key: str) -> bool:
    """Whether ``key`` is made only of placeholder words, separators and digits
    (``changeme``, ``changeme-changeme-changeme``, ``my-secret-key-123``, ``your_api_key``)."""
    return _PLACEHOLDER_RE.fullmatch(key.strip().lower()) is not None
#: Host names a loopback service answers to by default (plus the listen host).
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
#: ``GALACTO_PUBLIC_BASE_URL``: scheme and host, optionally a path; no query or fragment.
PUBLIC_URL_RE = r"^https?://[^/?#\s]+(/[^?#\s]*)?$"


def is_loopback(host: str) -> bool:
    """Whether the listen address ``host`` only accepts connections from this machine
    (``localhost``, ``127.0.0.0/8``, ``::1``); ``0.0.0.0``, ``::`` and names are not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_pattern(host: str) -> str:
    """``host`` as Starlette's TrustedHostMiddleware compares it with a Host header (without
    the port): lower case, IPv6 literals in brackets (``::1`` -> ``[::1]``)."""
    host = host.strip().lower()
    try:
        if ipaddress.ip_address(host.strip("[]")).version == 6:
            return f"[{host.strip('[]')}]"
    except ValueError:
        pass
    return host


class SettingsError(ValueError):
    """The settings cannot be used to start the service; the message says which and why."""


class Settings(BaseSettings):
    """Everything ``galacto serve`` can be configured with (environment prefix ``GALACTO_``).

    Attributes:
        model: model folder ``models/<name>/<version>`` (default: the bundled galacto-small,
            highest version).
        operating_point: default operating point name (default: the model card's).
        calibration: a site calibration file written by ``galacto calibrate``; its thresholds
            replace the card's operating points (a file made for another model is refused
            when the model loads).
        host, port: where the HTTP server listens.
        ort_threads: ONNX Runtime intra-op threads per inference (default: ORT's choice).
        ort_providers: ONNX Runtime execution providers, comma list in order of preference
            (``cpu``, ``cuda``, ``tensorrt``, ``openvino`` or full provider names; CPU is
            always the fallback); one the installed runtime lacks is refused at start.
        max_upload_mb: largest accepted request body (MiB), checked before it is read whole.
        max_pixels: largest accepted Rows x Columns of one image.
        max_frames: most frames of one tomosynthesis volume (Breast Tomosynthesis Image,
            multi-frame grayscale Secondary Capture); beyond: 413 ``image_too_large``.
        max_volume_pixels: most pixels of one volume, NumberOfFrames x Rows x Columns
            (default None: ``max_pixels``, so that a volume costs no more memory than the
            largest 2D image; a DBT site raises it); beyond: 413 ``image_too_large``. A
            deflated part may inflate to twice the larger of ``max_pixels`` and this (still
            within ``max_upload_mb`` for the request).
        tomo_slab, tomo_stride: how a volume is run through the 2D detector
            (``GALACTO_TOMO_SLAB``, ``GALACTO_TOMO_STRIDE``): frames averaged into one
            detector input, and frames between inputs. Default None: the settings the model
            card's tomosynthesis operating points were fitted with (else the pipeline's,
            slabs of 3 every 3rd frame); one set replaces that one only (:func:`tomo_override`;
            a response says when they differ from the card's).
        max_concurrent_inferences: inferences running at once (each uses ``ort_threads``).
        max_queue: requests admitted beside the running ones (reading their body, in triage
            or waiting for a slot); beyond that: 503 ``busy``, before the body is read. Bodies
            in memory are at most ``(max_concurrent_inferences + max_queue) x max_upload_mb``.
        max_admitted_per_client: requests one client (its API key when auth is on, else its
            address) may have admitted at once; beyond: 503 ``busy`` before the body is read.
            When every place is taken, a request of a client holding fewer takes the place
            of a body read behind the minimum rate (:mod:`serving.api.admission`).
        suspect_hold_s: seconds a client whose request was refused as hostile (malformed,
            oversized or too slow) is served after the others and shares half of the places
            with the other such clients (:mod:`serving.api.admission`); 0: never.
        triage_workers: threads that read each part with the guarded intake and check its
            header before the request waits for an inference slot; a request whose parts
            are all refused is answered from triage.
        retry_after_s: Retry-After (seconds) sent with a 503.
        auth: require ``Authorization: Bearer <key>`` on every endpoint except the probes
            (and the static viewer page); on by itself when ``api_keys`` is set. Set it off
            explicitly (``GALACTO_AUTH=off``, ``--no-auth``) to serve a non-loopback address
            without keys; otherwise that refuses to start.
        api_keys: accepted keys, comma-separated (``GALACTO_API_KEYS=k1,k2``).
        allowed_hosts: Host header names accepted besides :data:`LOOPBACK_NAMES` (always
            accepted: the container's HEALTHCHECK and local probes use them, and a page
            cannot name them by DNS rebinding), comma-separated; ``*.example.org`` matches
            subdomains, ``*`` turns the check off. Default: the listen ``host``.
        public_base_url: the service's URL as clients reach it (``https://ai.example.org``),
            used for STOW-RS ``RetrieveURL``; without it the request's (allowed) Host is used.
        max_parts: most parts of one multipart body; beyond: 413 ``too_many_parts``.
        max_connections: open connections at most (uvicorn ``limit_concurrency``: 503 beyond
            it; connections beyond it are also closed as soon as they are accepted). Lowered
            at startup to fit the open-file limit.
        backlog: listen backlog (connections the kernel queues before they are accepted).
        keep_alive_s: seconds an idle keep-alive connection stays open after a response.
        header_timeout_s: seconds a client has to send a request's headers, counted from the
            connection (or the previous response); the connection is closed after that. Also
            the time an unread body is drained after an early answer.
        body_timeout_s: seconds the server waits for one request body in all; then 408.
        body_grace_s: seconds of waiting for a body before ``min_body_rate_kib_s`` applies.
        min_body_rate_kib_s: average body rate (KiB/s) a client must keep after the first
            ``body_grace_s`` seconds of waiting for its body; below it: 408.
        max_header_kib: largest request line plus headers (KiB); beyond: 400.
        results_retention_days: STOW-RS results older than this are deleted (checked at
            startup and hourly); 0 keeps them until deleted by hand.
        results_dir: where STOW-RS results are stored for WADO-RS retrieval.
        stow_results: result objects STOW-RS produces and stores, comma-separated among
            ``sr`` (Mammography CAD SR), ``tid1500`` and ``gsps`` (default: all three).
        log_json: structured JSON logs (one object per line) instead of plain text.
        render_cache_mb: stored pixel data (MiB) of the tomosynthesis volumes kept after
            ``POST /v1/render`` so that ``GET /v1/render/{render_id}`` draws their other frames
            without a new upload (at most 8 volumes, each forgotten after 15 minutes unused,
            least recently used evicted first: :mod:`serving.api.render_cache`); 0 keeps
            none.
    """

    model_config = SettingsConfigDict(env_prefix="GALACTO_", extra="ignore")

    model: Path | None = None
    operating_point: str | None = None
    calibration: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    ort_threads: int | None = Field(default=None, ge=1)
    ort_providers: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["cpu"])
    max_upload_mb: float = Field(default=512.0, gt=0)
    max_pixels: int = Field(default=8192 * 8192, ge=1)
    max_frames: int = Field(default=DEFAULT_MAX_FRAMES, ge=1)
    max_volume_pixels: int | None = Field(default=None, ge=1)
    tomo_slab: int | None = Field(default=None, ge=1)
    tomo_stride: int | None = Field(default=None, ge=1)
    max_concurrent_inferences: int = Field(default=1, ge=1)
    max_queue: int = Field(default=8, ge=0)
    max_admitted_per_client: int = Field(default=2, ge=1)
    triage_workers: int = Field(default=1, ge=1, le=64)
    suspect_hold_s: float = Field(default=60.0, ge=0)
    retry_after_s: int = Field(default=5, ge=1)
    auth: bool = False
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    public_base_url: str | None = Field(default=None, pattern=PUBLIC_URL_RE)
    max_parts: int = Field(default=500, ge=1)
    max_connections: int = Field(default=2048, ge=8)
    backlog: int = Field(default=128, ge=1)
    keep_alive_s: int = Field(default=5, ge=1)
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=600.0, gt=0)
    body_grace_s: float = Field(default=2.0, gt=0)
    min_body_rate_kib_s: float = Field(default=32.0, ge=0)
    max_header_kib: int = Field(default=16, ge=1, le=1024)
    results_retention_days: float = Field(default=0.0, ge=0)
    results_dir: Path = Path("galacto-results")
    stow_results: Annotated[list[ResultKind], NoDecode] = Field(
        default_factory=lambda: [ResultKind.CAD_SR, ResultKind.TID1500, ResultKind.GSPS])
    log_json: bool = True
    render_cache_mb: float = Field(default=256.0, ge=0)

    @field_validator("api_keys", "stow_results", "allowed_hosts", "ort_providers",
                     mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("ort_providers")
    @classmethod
    def _providers(cls, value: list[str]) -> list[str]:
        return check_providers(value)

    @field_validator("allowed_hosts")
    @classmethod
    def _host_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if "*" in pattern[1:] or (pattern.startswith("*") and pattern != "*"
                                      and not pattern.startswith("*.")):
                raise ValueError(f"GALACTO_ALLOWED_HOSTS entry {pattern!r}: a wildcard must be "
                                 "'*' alone or lead a domain, as in '*.example.org'")
            normalized = host_pattern(pattern)  # an IPv6 literal comes back in brackets
            if ":" in normalized and not normalized.startswith("["):
                raise ValueError(f"GALACTO_ALLOWED_HOSTS entry {pattern!r}: a host name "
                                 "without a port")
        return value

    @model_validator(mode="after")
    def _auth_on_with_keys(self) -> Settings:
        if self.api_keys:
            self.auth = True
        return self

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def render_cache_bytes(self) -> int:
        """``render_cache_mb`` in bytes."""
        return int(self.render_cache_mb * 1024 * 1024)

    @property
    def volume_pixels(self) -> int:
        """The bound on a volume's pixels in force: ``max_volume_pixels``, else
        ``max_pixels``."""
        return self.max_volume_pixels or self.max_pixels

    def tomo_for(self, model: DetectorModel) -> TomoSettings | None:
        """How ``model`` runs volumes here: :func:`tomo_override` of ``tomo_slab`` and
        ``tomo_stride`` (None: as the model card says)."""
        return tomo_override(model, self.tomo_slab, self.tomo_stride)

    @property
    def auth_turned_off(self) -> bool:
        """Whether authentication was turned off explicitly (``GALACTO_AUTH=off``), not just
        left at its default."""
        return "auth" in self.model_fields_set and not self.auth

    @property
    def trusted_hosts(self) -> list[str]:
        """Host names accepted in the Host header (TrustedHostMiddleware patterns)."""
        names = [*LOOPBACK_NAMES, *(self.allowed_hosts or [self.host])]
        return list(dict.fromkeys(host_pattern(h) for h in names if h.strip()))

    def check_safe(self) -> None:
        """Refuse unsafe settings; warn when the service runs without authentication.

        Raises:
            SettingsError: a non-loopback ``host`` without keys and without
                ``GALACTO_AUTH=off``; auth on with no key, or a key shorter than
                :data:`MIN_KEY_LENGTH` characters or a placeholder such as ``changeme``.
        """
        if not self.auth:
            if not is_loopback(self.host) and not self.auth_turned_off:
                raise SettingsError(
                    f"GALACTO_HOST={self.host} accepts connections from other machines, but "
                    "no API key is set: set GALACTO_API_KEYS (comma-separated Bearer keys), "
                    "or GALACTO_AUTH=off (galacto serve --no-auth) to serve without "
                    "authentication on purpose")
            log.warning("authentication is OFF: every endpoint is open to anyone who can "
                        "reach this port; set GALACTO_API_KEYS to require a Bearer key")
            return
        if not self.api_keys:
            raise SettingsError("GALACTO_AUTH is on but GALACTO_API_KEYS is empty: set at least "
                                "one key (comma-separated)")
        for i, key in enumerate(self.api_keys):
            if is_placeholder(key):
                raise SettingsError(f"GALACTO_API_KEYS key #{i + 1} is a placeholder "
                                    "(made of words like changeme, secret, password): use a "
                                    "random key, e.g. "
                                    "`python -c 'import secrets; print(secrets.token_urlsafe())'`")
            if len(key) < MIN_KEY_LENGTH:
                raise SettingsError(f"GALACTO_API_KEYS key #{i + 1} has {len(key)} characters; "
                                    f"at least {MIN_KEY_LENGTH} are required")


class TomoEnv(BaseSettings):
    """``GALACTO_TOMO_SLAB`` and ``GALACTO_TOMO_STRIDE`` alone, for the adapters that do not
    read :class:`Settings` (the DICOM gateway, ``galacto detect``): the same variables.

    Attributes:
        slab: frames averaged into one detector input (1: every frame alone), >= 1; None:
            unset.
        stride: frames between detector inputs, >= 1; None: unset.
    """

    model_config = SettingsConfigDict(env_prefix="GALACTO_TOMO_", extra="ignore")

    slab: int | None = Field(default=None, ge=1)
    stride: int | None = Field(default=None, ge=1)


def tomo_env() -> TomoEnv:
    """``GALACTO_TOMO_SLAB`` and ``GALACTO_TOMO_STRIDE`` from the environment.

    Raises:
        SettingsError: a variable is set but not an int >= 1 (the message names it).
    """
    from pydantic import ValidationError

    try:
        return TomoEnv()
    except ValidationError as exc:
        names = ", ".join(f"GALACTO_TOMO_{str(e['loc'][0]).upper()}" for e in exc.errors()
                          if e.get("loc"))
        raise SettingsError(f"{names or 'GALACTO_TOMO_*'}: expected a whole number of frames "
                            ">= 1") from None


def tomo_override(model: DetectorModel, slab: int | None, stride: int | None
                  ) -> TomoSettings | None:
    """How volumes are run when a slab or stride is configured: the settings ``model``'s card
    names (:attr:`~serving.pipeline.model.DetectorModel.tomo_settings`: those its
    tomosynthesis operating points were fitted with, else the pipeline's defaults) with the
    configured ones replaced; None when neither is configured, so that
    :func:`serving.pipeline.detect.detect` runs volumes as the card says.

    Raises:
        ValueError: a value below 1.
    """
    if slab is None and stride is None:
        return None
    base = model.tomo_settings
    return dataclasses.replace(base, slab=base.slab if slab is None else slab,
                               stride=base.stride if stride is None else stride)
