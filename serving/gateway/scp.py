"""The DICOM listener: a pynetdicom Application Entity answering C-ECHO and C-STORE.

It accepts the image storage SOP classes the intake reads (MG, DX For Presentation and For
Processing, CR, Secondary Capture, multi-frame grayscale Secondary Capture, and Breast
Tomosynthesis Image: :data:`STORAGE_CLASSES`) in every transfer syntax the intake decodes,
checks the calling AE title (and host) against the allow-list at association time, and stores
each instance durably in the spool before answering. A tomosynthesis volume is one (large)
instance: ``GALACTO_GATEWAY_MAX_INSTANCE_MB`` must hold it.

The store handler never raises: every failure is a DIMSE status, logged without patient data
(no names, IDs or UIDs; studies appear as a short hash, see :func:`uid_tag`):

- ``0x0000`` success (also for a duplicate SOP Instance UID, stored once: an instance whose
  job still holds it in the spool; logged, not analysed again);
- ``0xA700`` out of resources: instance larger than ``max_instance_mb``, spool quota reached
  (both checked before any parse), or the disk refused the write;
- ``0xA900`` data set does not match SOP class: SOP Class/Instance UID differ from the
  request, or a required UID is absent;
- ``0xC000`` cannot understand: the guarded parse
  (:func:`serving.pipeline.intake.parse.read_dataset`: not DICOM, deflate bomb, element flood,
  ...) refused it (the log names the intake's error code), or a UID is not UID syntax;
- ``0x0110`` processing failure: anything unexpected.

Connections are admitted before they become associations (:mod:`serving.gateway.admission`):
peer address, deadline and size of the A-ASSOCIATE-RQ.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any, Final

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from serving.dicom_status import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SUCCESS,
)
from serving.gateway.admission import AdmissionGate, AdmittingRequestHandler, AdmittingServer
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.settings import CallerRule, GatewaySettings
from serving.gateway.spool import (
    InvalidInstanceError,
    Spool,
    SpoolFullError,
    Stored,
    StoreOutcome,
    uid_tag,
)
from serving.pipeline.dicom_in import ACCEPTED_SOP_CLASSES, SUPPORTED_TRANSFER_SYNTAXES
from serving.pipeline.errors import IntakeError
from serving.pipeline.intake.parse import read_dataset
from serving.pipeline.intake.volume_header import BREAST_TOMOSYNTHESIS

log = logging.getLogger("galacto.gateway")


def _status_text(status: int) -> str:
    """A DIMSE status as written in log lines, e.g. ``0xA700``."""
    return f"0x{status:04X}"


#: Storage SOP classes accepted: the 2D intake's image classes (the multi-frame grayscale
#: Secondary Captures among them, read as volumes) and Breast Tomosynthesis Image Storage.
STORAGE_CLASSES: Final = (*ACCEPTED_SOP_CLASSES, BREAST_TOMOSYNTHESIS)
#: Transfer syntaxes offered for every storage class, uncompressed first.
TRANSFER_SYNTAXES: Final = sorted(SUPPORTED_TRANSFER_SYNTAXES,
                                  key=lambda uid: (uid.startswith("1.2.840.10008.1.2.4"), uid))


def _resolve(host: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks an allow-list host stands for (a name is resolved once, at start)."""
    try:
        return [ipaddress.ip_network(host, strict=False)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        log.warning("allow-list host does not resolve; its entry never matches",
                    extra={"host": host})
        return []
    return [ipaddress.ip_network(str(info[4][0])) for info in infos]


class AllowList:
    """Calling AE titles (and hosts) allowed to associate; empty: everyone."""

    def __init__(self, rules: list[CallerRule]) -> None:
        self.rules = rules
        self._nets = {rule: _resolve(rule.host) for rule in rules if rule.host}

    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None:
        """Peer networks admitted at accept time: the union of the entries' hosts when every
        entry names one; ``None`` (any address) when the list is empty or an entry has no
        host, since its AE title may come from anywhere."""
        if not self.rules or any(rule.host is None for rule in self.rules):
            return None
        return tuple(net for rule in self.rules for net in self._nets.get(rule, []))

    @property
    def ae_titles(self) -> list[str]:
        """The AE titles named (for pynetdicom's ``require_calling_aet``)."""
        return sorted({rule.ae_title for rule in self.rules})

    def allows(self, calling_ae: str, address: str | None) -> bool:
        """True when a rule matches this calling AE title and peer address."""
        if not self.rules:
            return True
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            ip = None
        for rule in self.rules:
            if rule.ae_title != calling_ae.strip():
                continue
            if rule.host is None:
                return True
            if ip is not None and any(ip in net for net in self._nets.get(rule, [])):
                return True
        return False


class StoreSCP:
    """C-ECHO / C-STORE listener feeding ``spool``.

    Args:
        settings: AE title, address, allow-list, timeouts.
        spool: where instances go.
        metrics: counters to update.
        on_stored: called with the job id after each instance stored (not for duplicates).
    """

    def __init__(self, settings: GatewaySettings, spool: Spool, metrics: GatewayMetrics,
                 on_stored: Callable[[int], None] | None = None) -> None:
        self.settings = settings
        self.spool = spool
        self.metrics = metrics
        self.on_stored = on_stored
        self.allow = AllowList(settings.allowed_callers)
        self._server: Any = None
        self._lock = threading.Lock()
        self._active: dict[int, int] = {}  # open association -> job of its latest instance

    # -- life cycle ----------------------------------------------------------------------

    def build_ae(self) -> AE:
        """The Application Entity with its supported contexts and checks."""
        ae = AE(ae_title=self.settings.ae_title)
        ae.add_supported_context(Verification)
        for sop_class in STORAGE_CLASSES:
            ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
        ae.require_calling_aet = self.allow.ae_titles
        ae.require_called_aet = self.settings.check_called_ae
        ae.maximum_associations = self.settings.max_associations
        timeout = self.settings.network_timeout_s
        # the request itself was read by the admission gate: ACSE waits are short
        ae.acse_timeout = min(timeout, self.settings.association_request_timeout_s)
        ae.dimse_timeout = timeout
        ae.network_timeout = timeout
        return ae

    def gate(self) -> AdmissionGate:
        """The checks a connection passes before it becomes an association."""
        return AdmissionGate(
            networks=self.allow.networks(),
            request_timeout_s=self.settings.association_request_timeout_s,
            max_request_bytes=self.settings.association_request_max_kib * 1024,
            on_refused=lambda reason: self.metrics.connections_refused.labels(reason).inc())

    def start(self) -> None:
        """Listen (in background threads) on the configured host and port."""
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested), (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store), (evt.EVT_RELEASED, self._on_closed),
            (evt.EVT_ABORTED, self._on_closed), (evt.EVT_CONN_CLOSE, self._on_closed)]
        server: Any = self.build_ae().make_server(
            (self.settings.host, self.settings.port), evt_handlers=handlers,
            server_class=AdmittingServer, gate=self.gate(),
            request_handler=AdmittingRequestHandler)
        threading.Thread(target=server.serve_forever, name="galacto-gateway-listener",
                         daemon=True).start()
        self._server = server

    def stop(self) -> None:
        """Stop listening and close open associations."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    @property
    def port(self) -> int:
        """The port listened on (the one picked when the setting is 0)."""
        if self._server is None:
            raise RuntimeError("the DICOM listener is not started")
        return int(self._server.server_address[1])

    def held_jobs(self) -> set[int]:
        """Jobs whose latest instance came on an association that is still open and has not
        moved on to another study (it may still be sending to them)."""
        with self._lock:
            return set(self._active.values())

    # -- handlers ------------------------------------------------------------------------

    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(getattr(primitive, "calling_ae_title", "") or "").strip()
        address = getattr(assoc.requestor, "address", None)
        if not self.allow.allows(calling, address):
            log.warning("association refused: caller %r from %s is not in the allow-list",
                        calling, address, extra={"calling_ae": calling, "peer": address})
            assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent, user, calling AE unknown
            assoc.kill()  # flushes the A-ASSOCIATE-RJ before pynetdicom closes the socket

    def _on_echo(self, event: evt.Event) -> int:
        return SUCCESS

    def _on_closed(self, event: evt.Event) -> None:
        with self._lock:
            self._active.pop(id(event.assoc), None)

    def _on_store(self, event: evt.Event) -> int:
        try:
            status, outcome = self._store(event)
        except Exception as exc:  # the handler never raises: log the type, answer a status
            log.error("C-STORE failed unexpectedly", extra={"exc_type": type(exc).__name__})
            status, outcome = PROCESSING_FAILURE, "error"
        self.metrics.instances.labels(outcome).inc()
        return status

    def _store(self, event: evt.Event) -> tuple[int, str]:
        """``(DIMSE status, metrics outcome)`` for one C-STORE request: size and quota first
        (no parse), then one guarded parse of the header, then the durable write."""
        data = event.encoded_dataset(include_meta=True)
        refused = self._check_size(len(data))
        if refused is not None:
            return refused
        try:
            header = read_dataset(data, max_pixels=self.settings.limits.parse_pixels)
        except IntakeError as exc:
            log.warning("C-STORE refused: data set cannot be parsed (%s)", exc.code,
                        extra={"code": exc.code, "status": _status_text(CANNOT_UNDERSTAND)})
            return CANNOT_UNDERSTAND, "refused_invalid"
        mismatch = self._mismatch(header, event)
        if mismatch:
            log.warning("C-STORE refused: %s", mismatch,
                        extra={"status": _status_text(DOES_NOT_MATCH_SOP_CLASS)})
            return DOES_NOT_MATCH_SOP_CLASS, "refused_invalid"
        calling = str(event.assoc.requestor.ae_title or "").strip()
        try:
            stored = self.spool.store(data, study_uid=str(header.StudyInstanceUID),
                                      sop_uid=str(header.SOPInstanceUID),
                                      sop_class_uid=str(header.SOPClassUID), calling_ae=calling)
        except InvalidInstanceError as exc:
            log.warning("C-STORE refused: %s", exc,
                        extra={"status": _status_text(CANNOT_UNDERSTAND)})
            return CANNOT_UNDERSTAND, "refused_invalid"
        except (SpoolFullError, OSError) as exc:
            log.error("C-STORE refused: out of resources (%s)", type(exc).__name__,
                      extra={"status": _status_text(OUT_OF_RESOURCES),
                             "spool_bytes": self.spool.used_bytes})
            return OUT_OF_RESOURCES, "refused_quota"
        with self._lock:
            self._active[id(event.assoc)] = stored.job_id
        self._log_stored(stored, str(header.StudyInstanceUID))
        if stored.outcome is StoreOutcome.STORED and self.on_stored is not None:
            self.on_stored(stored.job_id)
        return SUCCESS, stored.outcome.value

    def _check_size(self, size: int) -> tuple[int, str] | None:
        """0xA700 when an instance of ``size`` bytes is over the instance limit or does not
        fit in the spool's quota (checked before anything is parsed); None when it may go on.
        """
        limit = self.settings.max_instance_bytes
        if size > limit:
            log.warning("C-STORE refused: instance of %d bytes; at most %d accepted "
                        "(GALACTO_GATEWAY_MAX_INSTANCE_MB)", size, limit,
                        extra={"status": _status_text(OUT_OF_RESOURCES), "bytes": size})
            return OUT_OF_RESOURCES, "refused_quota"
        try:
            self.spool.check_room(size)
        except SpoolFullError:
            log.error("C-STORE refused: out of resources (spool quota)",
                      extra={"status": _status_text(OUT_OF_RESOURCES),
                             "spool_bytes": self.spool.used_bytes})
            return OUT_OF_RESOURCES, "refused_quota"
        return None

    def _log_stored(self, stored: Stored, study_uid: str) -> None:
        """Debug line for a stored instance; info line for a duplicate (the sender got
        success, but the instance is not analysed again while its job holds it)."""
        if stored.outcome is StoreOutcome.DUPLICATE:
            log.info("instance already in the spool (job %d, study %s): not stored or analysed "
                     "again until the job is released (retention or purge)", stored.job_id,
                     uid_tag(study_uid), extra={"job": stored.job_id})
            return
        log.debug("instance stored (job %d, study %s)", stored.job_id, uid_tag(study_uid),
                  extra={"job": stored.job_id})

    @staticmethod
    def _mismatch(header: Dataset, event: evt.Event) -> str | None:
        """Why the data set does not match the request, or None."""
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"):
            if not str(header.get(keyword) or "").strip():
                return f"{keyword} is absent; expected a UID"
        req: Any = event.request
        if str(header.SOPClassUID) != str(req.AffectedSOPClassUID):
            return "SOPClassUID differs from the request's Affected SOP Class UID"
        if str(header.SOPInstanceUID) != str(req.AffectedSOPInstanceUID):
            return "SOPInstanceUID differs from the request's Affected SOP Instance UID"
        return None
