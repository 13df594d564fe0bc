"""Sending a job's result objects: C-STORE SCU to a DICOM node, or STOW-RS to a DICOMweb URL.

A sender makes one attempt and reports which objects were delivered and, when not all were,
why (:class:`SendOutcome`); retries and backoff are the gateway's business. Reasons name the
destination and the DIMSE status or HTTP status, never patient data.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from serving.dicom_status import STORE_WARNINGS, SUCCESS
from serving.gateway.settings import GatewaySettings
from serving.gateway.spool import ResultRecord

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("galacto.gateway")

#: DICOM JSON tags read from a STOW-RS response.
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"


@dataclass(frozen=True)
class SendOutcome:
    """One send attempt: the SOP Instance UIDs delivered, and the error when not all were."""

    sent: list[str] = field(default_factory=list)
    error: str | None = None


class Sender(Protocol):
    """Something that delivers result objects somewhere."""

    def describe(self) -> str:
        """Where results go, for messages (``AE@host:port`` or the URL)."""
        ...

    def send(self, results: Sequence[ResultRecord]) -> SendOutcome:
        """One attempt to deliver ``results``."""
        ...


class DimseSender:
    """C-STORE SCU: one association per attempt, every result on it.

    Args:
        calling_ae: our AE title.
        ae_title, host, port: the destination.
        timeout_s: connection, ACSE, DIMSE and network timeouts (seconds).
    """

    def __init__(self, calling_ae: str, ae_title: str, host: str, port: int,
                 timeout_s: float = 30.0) -> None:
        self.calling_ae = calling_ae
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self.timeout_s = timeout_s

    def describe(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    def _ae(self, results: Sequence[ResultRecord]) -> AE:
        ae = AE(ae_title=self.calling_ae)
        for sop_class in dict.fromkeys(r.sop_class_uid for r in results):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.connection_timeout = self.timeout_s
        ae.acse_timeout = self.timeout_s
        ae.dimse_timeout = self.timeout_s
        ae.network_timeout = self.timeout_s
        return ae

    def send(self, results: Sequence[ResultRecord]) -> SendOutcome:
        if not results:
            return SendOutcome()
        assoc = self._ae(results).associate(self.host, self.port, ae_title=self.ae_title)
        if not assoc.is_established:
            why = "association rejected" if assoc.is_rejected else \
                "association aborted" if assoc.is_aborted else "no association (connection " \
                "refused or timed out)"
            return SendOutcome(error=f"{self.describe()}: {why}")
        sent: list[str] = []
        error: str | None = None
        try:
            for k, result in enumerate(results, start=1):
                problem = self._store_one(assoc, result)
                if problem is not None:
                    error = f"{self.describe()}: result {k}/{len(results)}: {problem}"
                    break
                sent.append(result.sop_instance_uid)
        finally:
            if assoc.is_established:
                assoc.release()
        return SendOutcome(sent=sent, error=error)

    @staticmethod
    def _store_one(assoc: Any, result: ResultRecord) -> str | None:
        """None when stored (success or warning), else what went wrong."""
        try:
            status = assoc.send_c_store(result.path)
        except (ValueError, AttributeError, OSError) as exc:
            return f"cannot send ({type(exc).__name__}: {exc})"
        code = getattr(status, "Status", None)
        if code is None:
            return "no C-STORE response (timeout or association aborted)"
        if int(code) == SUCCESS or int(code) in STORE_WARNINGS:
            return None
        return f"C-STORE status 0x{int(code):04X}"


class StowSender:
    """STOW-RS (PS3.18 10.5): one ``POST {url}/studies`` per attempt with every result.

    Args:
        url: DICOMweb base URL (without ``/studies``).
        token: bearer token, or None.
        timeout_s: request timeout (seconds).
        transport: an httpx transport (tests pass a mock), or None for the network.
    """

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.transport = transport

    def describe(self) -> str:
        return f"STOW-RS {self.url}/studies"

    def _body(self, results: Sequence[ResultRecord]) -> tuple[bytes, str]:
        boundary = f"galacto-{uuid.uuid4().hex}"
        parts = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                 + r.path.read_bytes() + b"\r\n" for r in results]
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return body, f'multipart/related; type="application/dicom"; boundary={boundary}'

    def send(self, results: Sequence[ResultRecord]) -> SendOutcome:
        if not results:
            return SendOutcome()
        try:
            import httpx
        except ImportError:
            return SendOutcome(error="STOW-RS needs the httpx package (pip install httpx)")
        body, content_type = self._body(results)
        headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            with httpx.Client(transport=self.transport, timeout=self.timeout_s) as client:
                resp = client.post(f"{self.url}/studies", content=body, headers=headers)
        except httpx.HTTPError as exc:
            return SendOutcome(error=f"{self.describe()}: {type(exc).__name__}")
        if resp.status_code == 200:
            return SendOutcome(sent=[r.sop_instance_uid for r in results])
        sent = _stow_referenced(resp) if resp.status_code == 202 else []
        known = {r.sop_instance_uid for r in results}
        sent = [uid for uid in sent if uid in known]
        return SendOutcome(sent=sent, error=f"{self.describe()}: HTTP {resp.status_code}, "
                                            f"{len(sent)} of {len(results)} stored")


def _stow_referenced(resp: httpx.Response) -> list[str]:
    """SOP Instance UIDs in a STOW-RS response's ReferencedSOPSequence (DICOM JSON)."""
    try:
        body = resp.json()
        items = body[REFERENCED_SOP_SEQUENCE]["Value"]
        return [str(item[REFERENCED_SOP_INSTANCE_UID]["Value"][0]) for item in items]
    except (ValueError, KeyError, IndexError, TypeError):
        return []


def make_sender(settings: GatewaySettings) -> Sender | None:
    """The sender the settings configure, or None when results stay in the spool."""
    if settings.destination_ae_title is not None:
        assert settings.destination_host is not None and settings.destination_port is not None
        return DimseSender(settings.ae_title, settings.destination_ae_title,
                           settings.destination_host, settings.destination_port,
                           settings.network_timeout_s)
    if settings.stow_url is not None:
        return StowSender(settings.stow_url, settings.stow_token, settings.network_timeout_s)
    return None
