"""Service settings from ``GALACTO_*`` environment variables (pydantic-settings).

Defaults run on a laptop: the bundled model, ``127.0.0.1:8000``, results in a local folder, no
authentication (with a logged warning). Unsafe combinations refuse to start: authentication
on with no key, or with a key that is short or a well-known placeholder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from serving.outputs.common import ResultKind

log = logging.getLogger(__name__)

#: Keys that are never accepted (placeholders people copy from examples).
PLACEHOLDER_KEYS = frozenset({"changeme", "change-me", "secret", "default", "password",
                              "apikey", "api-key", "galacto", "test", "token", "example"})
MIN_KEY_LENGTH = 16


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
        max_upload_mb: largest accepted request body (MiB), checked before it is read whole.
        max_pixels: largest accepted Rows x Columns of one image.
        max_concurrent_inferences: inferences running at once (each uses ``ort_threads``).
        max_queue: requests allowed to wait for an inference slot; beyond that: 503.
        retry_after_s: Retry-After (seconds) sent with a 503.
        auth: require ``Authorization: Bearer <key>`` on every endpoint except the probes
            (and the static viewer page); on by itself when ``api_keys`` is set.
        api_keys: accepted keys, comma-separated (``GALACTO_API_KEYS=k1,k2``).
        results_dir: where STOW-RS results are stored for WADO-RS retrieval.
        stow_results: result objects STOW-RS produces and stores, comma-separated among
            ``sr`` (Mammography CAD SR), ``tid1500`` and ``gsps`` (default: all three).
        log_json: structured JSON logs (one object per line) instead of plain text.
    """

    model_config = SettingsConfigDict(env_prefix="GALACTO_", extra="ignore")

    model: Path | None = None
    operating_point: str | None = None
    calibration: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    ort_threads: int | None = Field(default=None, ge=1)
    max_upload_mb: float = Field(default=512.0, gt=0)
    max_pixels: int = Field(default=8192 * 8192, ge=1)
    max_concurrent_inferences: int = Field(default=1, ge=1)
    max_queue: int = Field(default=8, ge=0)
    retry_after_s: int = Field(default=5, ge=1)
    auth: bool = False
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    results_dir: Path = Path("galacto-results")
    stow_results: Annotated[list[ResultKind], NoDecode] = Field(
        default_factory=lambda: [ResultKind.CAD_SR, ResultKind.TID1500, ResultKind.GSPS])
    log_json: bool = True

    @field_validator("api_keys", "stow_results", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
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

    def check_safe(self) -> None:
        """Refuse unsafe settings; warn when the service runs without authentication.

        Raises:
            SettingsError: auth is on with no key, or a key shorter than
                :data:`MIN_KEY_LENGTH` characters or a placeholder such as ``changeme``.
        """
        if not self.auth:
            log.warning("authentication is OFF: every endpoint is open to anyone who can "
                        "reach this port; set GALACTO_API_KEYS to require a Bearer key")
            return
        if not self.api_keys:
            raise SettingsError("GALACTO_AUTH is on but GALACTO_API_KEYS is empty: set at least "
                                "one key (comma-separated)")
        for i, key in enumerate(self.api_keys):
            if key.lower() in PLACEHOLDER_KEYS:
                raise SettingsError(f"GALACTO_API_KEYS key #{i + 1} is a placeholder "
                                    f"({key!r}): use a random key, e.g. "
                                    "`python -c 'import secrets; print(secrets.token_urlsafe())'`")
            if len(key) < MIN_KEY_LENGTH:
                raise SettingsError(f"GALACTO_API_KEYS key #{i + 1} has {len(key)} characters; "
                                    f"at least {MIN_KEY_LENGTH} are required")
