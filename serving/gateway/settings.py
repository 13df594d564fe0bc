"""Gateway settings from ``GALACTO_GATEWAY_*`` environment variables (pydantic-settings).

Defaults run on a laptop: AE title ``GALACTO`` on ``127.0.0.1:11112``, a spool in
``./galacto-spool``, any caller accepted (on loopback only: another listen address needs an
allow-list or ``ALLOW_ANY``), results kept in the spool (no destination). Nonsense refuses to
start with a message naming the variable, what was expected and what was found.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from serving.gateway.volumes import IntakeLimits
from serving.outputs.common import ResultKind
from serving.pipeline.dicom_in import DEFAULT_MAX_FRAMES
from serving.providers import check_providers
from serving.settings import tomo_env, tomo_override

if TYPE_CHECKING:
    from serving.pipeline.detect_volume import TomoSettings
    from serving.pipeline.model import DetectorModel

#: AE title: 1-16 characters of the DICOM default repertoire, no backslash or control
#: characters, not only spaces (PS3.5 6.2, VR AE).
AE_TITLE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
#: A host name (RFC 1123 labels) or an IPv4/IPv6 address (checked separately).
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
ENV = "GALACTO_GATEWAY_"


def check_ae_title(value: str, what: str) -> str:
    """``value`` stripped if it is a valid AE title, else ``ValueError`` saying why.

    Args:
        value: the AE title as configured.
        what: the setting's name, for the message.
    """
    stripped = value.strip()
    if not stripped or not AE_TITLE_RE.match(stripped):
        raise ValueError(f"{what} must be an AE title of 1 to 16 printable ASCII characters "
                         f"without a backslash, not only spaces; found {value!r}")
    return stripped


def check_host(value: str, what: str) -> str:
    """``value`` if it is an IP address, a CIDR network or a host name, else ``ValueError``."""
    text = value.strip()
    try:
        ipaddress.ip_network(text, strict=False)
        return text
    except ValueError:
        pass
    if HOSTNAME_RE.match(text):
        return text
    raise ValueError(f"{what} must be an IP address, a network (10.0.0.0/8) or a host name; "
                     f"found {value!r}")


@dataclass(frozen=True)
class CallerRule:
    """One allow-list entry: a calling AE title, optionally bound to a host.

    Attributes:
        ae_title: the calling AE title (stripped, compared exactly, case-sensitive as DICOM).
        host: an IP address, a CIDR network or a host name the association must come from;
            ``None`` accepts the AE title from any host.
    """

    ae_title: str
    host: str | None = None

    @classmethod
    def parse(cls, text: str) -> CallerRule:
        """``"AE"`` or ``"AE@host"`` -> rule; ``ValueError`` naming the entry otherwise."""
        ae, sep, host = text.strip().partition("@")
        what = f"{ENV}ALLOWED_CALLERS entry {text!r}"
        if sep and not host.strip():
            raise ValueError(f"{what}: nothing after '@'; expected AE or AE@host")
        return cls(ae_title=check_ae_title(ae, what),
                   host=check_host(host, what) if sep else None)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}" if self.host else self.ae_title


def _env_path(name: str) -> Path | None:
    """The path in environment variable ``name``, or None when it is unset or empty."""
    value = os.environ.get(name, "").strip()
    return Path(value) if value else None


def _split(value: object) -> object:
    """A comma-separated environment string -> list of non-empty stripped items."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class GatewaySettings(BaseSettings):
    """Everything ``galacto gateway`` can be configured with (prefix ``GALACTO_GATEWAY_``).

    Attributes:
        enabled: start the gateway inside ``galacto serve`` too (``galacto gateway run``
            ignores it).
        ae_title: our AE title (called AE title the peers use, calling AE title when sending).
        host, port: where the DICOM listener listens (port 0: any free port).
        check_called_ae: refuse associations addressed to another AE title.
        allowed_callers: comma list of calling AE titles, ``AE`` or ``AE@host`` (host: IP,
            CIDR network or name); empty: anyone may send. ``AE@host`` is the secure form: a
            calling AE title is only a name the peer chooses, and when every entry names a
            host, other addresses are closed at accept time.
        allow_any: allow an empty ``allowed_callers`` on an address other than loopback
            (default false: the gateway refuses to start, so it is never open by accident).
        max_associations: associations served at once (connections that have not yet sent a
            complete A-ASSOCIATE-RQ are not counted, see :mod:`serving.gateway.admission`).
        association_request_timeout_s: seconds from connect within which the whole
            A-ASSOCIATE-RQ must arrive; later, the connection is closed.
        association_request_max_kib: largest A-ASSOCIATE-RQ PDU accepted (KiB); a longer one
            is closed without being read.
        max_instance_mb: largest instance accepted by C-STORE (MiB of the encoded data set);
            larger ones get 0xA700 before being parsed or written. A tomosynthesis volume is
            one instance: a site that receives DBT raises it to its largest volume (an
            uncompressed 16-bit volume is 2 bytes x frames x rows x columns).
        spool_dir: where instances, results and the job database are kept.
        spool_max_mb: quota of the spool (MiB of instance and result files); a C-STORE that
            would exceed it is refused with 0xA700 (out of resources).
        keep_instances: keep received instance files of finished jobs until the retention
            period is over (default: delete them as soon as nothing needs them: once the
            results are stored and the job is sent or kept, or once it is skipped; a failed
            job keeps them for re-analysis until the retention period is over).
        retain_hours: retention period (hours after a job finished) after which the job's
            remaining instance and result files are released and a re-sent instance of it
            starts a new job; the job record stays. 0: at the next retention sweep.
        quiet_period_s: seconds without a new instance after which a study is processed.
        workers: studies processed at once (threads).
        ort_threads: ONNX Runtime threads per inference (default: the runtime's choice).
        ort_providers: ONNX Runtime execution providers (see ``GALACTO_ORT_PROVIDERS`` of the
            HTTP service), comma list, default ``cpu``.
        max_pixels: largest accepted Rows x Columns of one image.
        max_frames: most frames of one tomosynthesis volume (Breast Tomosynthesis Image,
            multi-frame grayscale Secondary Capture); a larger one is skipped
            (``image_too_large``).
        max_volume_pixels: most pixels of one volume, NumberOfFrames x Rows x Columns
            (default None: ``max_pixels``); a larger one is skipped. The C-STORE header parse
            of a deflated instance may inflate to twice the larger of ``max_pixels`` and
            this.
        tomo_slab, tomo_stride: how volumes are run through the 2D detector (default:
            ``GALACTO_TOMO_SLAB`` / ``GALACTO_TOMO_STRIDE``, the ones ``galacto serve`` uses;
            unset: the settings the model card's tomosynthesis points were fitted with).
        results: result objects to produce, comma list of ``sr`` (Mammography CAD SR),
            ``tid1500`` and ``gsps``.
        destination_ae_title, destination_host, destination_port: where results are sent by
            C-STORE; all three or none (none: results stay in the spool).
        stow_url: DICOMweb base URL to send results by STOW-RS instead
            (``POST {stow_url}/studies``).
        stow_token: bearer token for ``stow_url`` (optional).
        send_retries: retries after a failed send (so ``send_retries + 1`` attempts).
        backoff_s: base of the exponential backoff: retry ``k`` waits ``backoff_s * 2**(k-1)``
            seconds.
        network_timeout_s: DICOM association, DIMSE and network timeouts (seconds), and the
            STOW-RS request timeout.
        operating_point: operating point name (default: the model card's).
        model: model folder ``models/<name>/<version>`` (default: the bundled galacto-small).
        calibration: a site calibration file written by ``galacto calibrate`` (default:
            ``GALACTO_CALIBRATION``, the one ``galacto serve`` uses); its thresholds replace
            the card's operating points.
    """

    model_config = SettingsConfigDict(env_prefix=ENV, extra="ignore")

    enabled: bool = False
    ae_title: str = "GALACTO"
    host: str = "127.0.0.1"
    port: int = Field(default=11112, ge=0, le=65535)
    check_called_ae: bool = True
    allowed_callers: Annotated[list[CallerRule], NoDecode] = Field(default_factory=list)
    allow_any: bool = False
    max_associations: int = Field(default=10, ge=1, le=1000)
    association_request_timeout_s: float = Field(default=5.0, gt=0, le=300)
    association_request_max_kib: int = Field(default=64, ge=4, le=16384)
    max_instance_mb: float = Field(default=256.0, gt=0)
    spool_dir: Path = Path("galacto-spool")
    spool_max_mb: float = Field(default=10240.0, gt=0)
    keep_instances: bool = False
    retain_hours: float = Field(default=168.0, ge=0, le=24 * 3650)
    quiet_period_s: float = Field(default=10.0, gt=0, le=86400)
    workers: int = Field(default=1, ge=1, le=64)
    ort_threads: int | None = Field(default=None, ge=1)
    ort_providers: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["cpu"])
    max_pixels: int = Field(default=8192 * 8192, ge=1)
    max_frames: int = Field(default=DEFAULT_MAX_FRAMES, ge=1)
    max_volume_pixels: int | None = Field(default=None, ge=1)
    tomo_slab: int | None = Field(default_factory=lambda: tomo_env().slab, ge=1)
    tomo_stride: int | None = Field(default_factory=lambda: tomo_env().stride, ge=1)
    results: Annotated[list[ResultKind], NoDecode] = Field(
        default_factory=lambda: [ResultKind.CAD_SR])
    destination_ae_title: str | None = None
    destination_host: str | None = None
    destination_port: int | None = Field(default=None, ge=1, le=65535)
    stow_url: str | None = None
    stow_token: str | None = None
    send_retries: int = Field(default=5, ge=0, le=100)
    backoff_s: float = Field(default=2.0, ge=0, le=3600)
    network_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    operating_point: str | None = None
    model: Path | None = None
    calibration: Path | None = Field(default_factory=lambda: _env_path("GALACTO_CALIBRATION"))

    @field_validator("ort_providers", mode="before")
    @classmethod
    def _providers(cls, value: object) -> object:
        items = _split(value)
        return check_providers(items) if isinstance(items, list) else items

    @field_validator("allowed_callers", mode="before")
    @classmethod
    def _callers(cls, value: object) -> object:
        items = _split(value)
        if isinstance(items, list):
            return [CallerRule.parse(i) if isinstance(i, str) else i for i in items]
        return items

    @field_validator("results", mode="before")
    @classmethod
    def _results(cls, value: object) -> object:
        items = _split(value)
        if isinstance(items, list):
            known = [k.value for k in ResultKind]
            for item in items:
                if isinstance(item, str) and item not in known:
                    raise ValueError(f"unknown result kind {item!r}; expected a comma list "
                                     f"of {', '.join(known)}")
        return items

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return check_ae_title(value, f"{ENV}AE_TITLE")

    @field_validator("destination_ae_title")
    @classmethod
    def _destination_ae(cls, value: str | None) -> str | None:
        return None if value is None else check_ae_title(value, f"{ENV}DESTINATION_AE_TITLE")

    @field_validator("destination_host")
    @classmethod
    def _destination_host(cls, value: str | None) -> str | None:
        return None if value is None else check_host(value, f"{ENV}DESTINATION_HOST")

    @field_validator("stow_url")
    @classmethod
    def _stow_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{ENV}STOW_URL must be an http:// or https:// URL; found "
                             f"{value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> GatewaySettings:
        if not self.results:
            raise ValueError(f"{ENV}RESULTS is empty; expected at least one of "
                             f"{', '.join(k.value for k in ResultKind)}")
        if len(set(self.results)) != len(self.results):
            raise ValueError(f"{ENV}RESULTS lists a kind twice: "
                             f"{','.join(k.value for k in self.results)}")
        parts = {"AE_TITLE": self.destination_ae_title, "HOST": self.destination_host,
                 "PORT": self.destination_port}
        given = [k for k, v in parts.items() if v is not None]
        if given and len(given) != 3:
            missing = [f"{ENV}DESTINATION_{k}" for k, v in parts.items() if v is None]
            raise ValueError(f"the destination needs AE title, host and port; "
                             f"{', '.join(missing)} missing (set all three or none)")
        if given and self.stow_url:
            raise ValueError(f"both a C-STORE destination and {ENV}STOW_URL are set; "
                             "expected one of them")
        if self.stow_token and not self.stow_url:
            raise ValueError(f"{ENV}STOW_TOKEN is set but {ENV}STOW_URL is not")
        return self

    @property
    def spool_max_bytes(self) -> int:
        """``spool_max_mb`` in bytes."""
        return int(self.spool_max_mb * 1024 * 1024)

    @property
    def max_instance_bytes(self) -> int:
        """``max_instance_mb`` in bytes."""
        return int(self.max_instance_mb * 1024 * 1024)

    @property
    def limits(self) -> IntakeLimits:
        """The bounds instances are read under (``max_pixels``, ``max_frames``,
        ``max_volume_pixels``)."""
        return IntakeLimits(max_pixels=self.max_pixels, max_frames=self.max_frames,
                            max_volume_pixels=self.max_volume_pixels or self.max_pixels)

    def tomo_for(self, model: DetectorModel) -> TomoSettings | None:
        """How ``model`` runs volumes here: :func:`serving.settings.tomo_override` of
        ``tomo_slab`` and ``tomo_stride`` (None: as the model card says)."""
        return tomo_override(model, self.tomo_slab, self.tomo_stride)

    @property
    def retain_s(self) -> float:
        """``retain_hours`` in seconds."""
        return self.retain_hours * 3600.0

    @property
    def has_destination(self) -> bool:
        """True when results are sent somewhere (C-STORE or STOW-RS)."""
        return self.destination_ae_title is not None or self.stow_url is not None

    def exposure_error(self) -> str | None:
        """Why listening with these settings would be open to anyone (a non-loopback address
        with an empty allow-list and ``allow_any`` false), or None when it is not."""
        if self.allowed_callers or self.allow_any or is_loopback(self.host):
            return None
        return (f"the gateway would accept C-STORE from any machine on {self.host!r}: set "
                f"{ENV}ALLOWED_CALLERS to the PACS that may send (AE@host, e.g. "
                f"PACS@10.0.0.5), listen on 127.0.0.1, or set {ENV}ALLOW_ANY=true to accept "
                "anyone on purpose")

    def unbound_callers(self) -> list[CallerRule]:
        """Allow-list entries without a host (any machine may use their AE title)."""
        return [rule for rule in self.allowed_callers if rule.host is None]

    def describe_destination(self) -> str:
        """``AE@host:port``, the STOW-RS URL, or ``"none (results stay in the spool)"``."""
        if self.destination_ae_title is not None:
            return f"{self.destination_ae_title}@{self.destination_host}:{self.destination_port}"
        if self.stow_url is not None:
            return f"STOW-RS {self.stow_url}"
        return "none (results stay in the spool)"

    def with_overrides(self, **values: Any) -> GatewaySettings:
        """A validated copy with ``values`` (``None`` values ignored), for CLI flags."""
        data = self.model_dump()
        data.update({k: v for k, v in values.items() if v is not None})
        return GatewaySettings.model_validate(data)


def is_loopback(host: str) -> bool:
    """True for a listen address only this machine can reach (``127.0.0.0/8``, ``::1``,
    ``localhost``); ``0.0.0.0``, ``::`` and other names are not."""
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return host.strip().lower() == "localhost"


def parse_destination(text: str) -> tuple[str, str, int]:
    """``"AE@host:port"`` -> ``(AE, host, port)``; ``ValueError`` saying what was expected.

    IPv6 hosts go in brackets: ``AE@[::1]:104``.
    """
    m = re.match(r"^([^@]+)@(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(\d{1,5})$", text.strip())
    if m is None:
        raise ValueError(f"destination must be AE@host:port (e.g. PACS@10.0.0.5:104); "
                         f"found {text!r}")
    ae, host, port = m.group(1), m.group(2).strip("[]"), int(m.group(3))
    if not 1 <= port <= 65535:
        raise ValueError(f"destination port must be 1..65535; found {port}")
    return check_ae_title(ae, "destination AE title"), check_host(host, "destination host"), port
