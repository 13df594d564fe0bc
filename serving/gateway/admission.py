"""Admission of TCP connections to the DICOM listener, before pynetdicom sees them.

pynetdicom starts an association (a thread that counts against ``maximum_associations``) for
every accepted TCP connection and then waits up to the ACSE timeout for the A-ASSOCIATE-RQ,
reading a PDU of whatever length its header declares. So connections that send nothing, or
half a request, or a header declaring hundreds of MB, each held a slot of the allowed PACS (or
made the gateway buffer the bytes) before any AE title was checked. Here every connection is
admitted in three cheap steps first, in its own short-lived thread that is not an association:

1. the peer address is checked when every allow-list entry names a host
   (:meth:`AdmissionGate.address_allowed`, at accept time, before any byte is read);
2. the 6-byte PDU header must arrive within the request deadline, be an A-ASSOCIATE-RQ (PDU
   type 0x01, PS3.8 9.3.2) and declare at most ``max_request_bytes``;
3. the whole A-ASSOCIATE-RQ must arrive within the same deadline.

Only then is an association created, and the request bytes already read are replayed to it
(:class:`ReplaySocket`). A refused connection is closed without an answer and counted in
``galacto_gateway_connections_refused_total{reason}``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

if TYPE_CHECKING:
    from pynetdicom.association import Association

log = logging.getLogger("galacto.gateway")

#: PDU type of an A-ASSOCIATE-RQ (PS3.8 9.3.2).
A_ASSOCIATE_RQ: Final = 0x01
#: Bytes of a PDU header: type, reserved, 4-byte big-endian length (PS3.8 9.3.1).
PDU_HEADER_BYTES: Final = 6
#: Connections being admitted at once; more are closed at once (each holds a thread and a
#: file descriptor for at most the request deadline).
MAX_PENDING: Final = 256
#: At most one log line per refusal reason in this many seconds (a flood of connections does
#: not flood the log; the metric counts every one).
LOG_INTERVAL_S: Final = 10.0

#: Closed set of refusal reasons (metric label values).
REASONS: Final = ("address", "busy", "closed", "timeout", "not_associate_rq", "too_large")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NotAdmittedError(Exception):
    """The connection is not admitted; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AdmissionGate:
    """What a connection must pass before it becomes an association.

    Attributes:
        networks: peer networks admitted at accept time; ``None``: any address (the
            allow-list is empty or has an entry without host).
        request_timeout_s: deadline for the whole A-ASSOCIATE-RQ, seconds from accept.
        max_request_bytes: largest A-ASSOCIATE-RQ PDU accepted, bytes (header included).
        on_refused: called with the reason of each refused connection (metrics).
    """

    networks: tuple[Network, ...] | None
    request_timeout_s: float
    max_request_bytes: int
    on_refused: Callable[[str], None] = lambda reason: None

    def address_allowed(self, address: str) -> bool:
        """True when a peer at ``address`` (IP text) may connect at all."""
        if self.networks is None:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def read_request(self, sock: socket.socket) -> bytes:
        """The A-ASSOCIATE-RQ PDU (header and body) read from ``sock`` within the deadline.

        Raises:
            NotAdmittedError: closed, too slow, not an A-ASSOCIATE-RQ, or longer than
                allowed; no byte beyond the header is read from a request declared too long.
        """
        deadline = time.monotonic() + self.request_timeout_s
        header = _read_exactly(sock, PDU_HEADER_BYTES, deadline, self.request_timeout_s)
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type != A_ASSOCIATE_RQ:
            raise NotAdmittedError("not_associate_rq",
                          f"first PDU is of type 0x{pdu_type:02X}; expected an "
                          "A-ASSOCIATE-RQ (0x01)")
        if PDU_HEADER_BYTES + length > self.max_request_bytes:
            raise NotAdmittedError("too_large",
                          f"A-ASSOCIATE-RQ declares {PDU_HEADER_BYTES + length} bytes; expected "
                          f"at most {self.max_request_bytes}")
        return header + _read_exactly(sock, length, deadline, self.request_timeout_s)


def _read_exactly(sock: socket.socket, n: int, deadline: float, timeout_s: float) -> bytes:
    """``n`` bytes from ``sock`` before ``deadline`` (monotonic seconds).

    Raises:
        NotAdmittedError: the deadline passed, or the peer closed or broke the connection.
    """
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotAdmittedError("timeout", f"no complete A-ASSOCIATE-RQ within {timeout_s:g} s "
                                     f"({len(buf)} of {n} bytes)")
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(65536, n - len(buf)))
        except TimeoutError:
            continue  # the loop re-checks the deadline
        except OSError as exc:
            raise NotAdmittedError("closed", f"connection error ({type(exc).__name__})") from None
        if not chunk:
            raise NotAdmittedError("closed", "closed before a complete A-ASSOCIATE-RQ arrived")
        buf += chunk
    return bytes(buf)


class ReplaySocket(AssociationSocket):
    """An :class:`AssociationSocket` that first returns bytes already read from its socket
    (the A-ASSOCIATE-RQ the gate read), then reads the socket as usual."""

    def __init__(self, assoc: Association, client_socket: socket.socket, replay: bytes) -> None:
        self._replay = bytearray(replay)
        super().__init__(assoc, client_socket=client_socket)

    @property
    def ready(self) -> bool:
        """True when replayed bytes are left or the socket has data."""
        return bool(self._replay) or bool(super().ready)

    def recv(self, nr_bytes: int) -> bytearray:
        """``nr_bytes`` bytes: replayed ones first, then from the socket."""
        head = self._replay[:nr_bytes]
        del self._replay[:nr_bytes]
        if len(head) < nr_bytes:
            head += super().recv(nr_bytes - len(head))
        return head


class AdmittingRequestHandler(RequestHandler):
    """pynetdicom's request handler, creating the association only for a connection that
    passed :attr:`AdmittingServer.gate`."""

    server: AdmittingServer

    def handle(self) -> None:
        """Admit the connection (or close it), then run the association as pynetdicom does."""
        sock = self.request
        assert isinstance(sock, socket.socket)
        address = str(self.client_address[0])
        try:
            request = self.server.admit(sock, address)
        except NotAdmittedError as exc:
            self.server.refuse(sock, address, exc)
            return
        except OSError as exc:
            self.server.refuse(sock, address, NotAdmittedError(
                "closed", f"connection error ({type(exc).__name__})"))
            return
        sock.settimeout(None)  # pynetdicom reads blocking sockets
        self._replayed = request
        super().handle()

    def _create_association(self) -> Association:
        """pynetdicom's association for this connection, reading through a
        :class:`ReplaySocket` that first returns the A-ASSOCIATE-RQ the gate read."""
        assoc = super()._create_association()
        replay = ReplaySocket(assoc, self.request, self._replayed)
        # Both sockets announced the connection (Evt5) on the not yet started DUL's queue;
        # the state machine must see it once.
        assoc.dul.event_queue.get_nowait()
        assoc.dul.socket = replay
        return assoc


class AdmittingServer(ThreadedAssociationServer):
    """pynetdicom's threaded association server with an :class:`AdmissionGate` in front.

    Made by ``AE.make_server(..., server_class=AdmittingServer, gate=gate,
    request_handler=AdmittingRequestHandler)``.
    """

    daemon_threads = True

    def __init__(self, *args: Any, gate: AdmissionGate, **kwargs: Any) -> None:
        self.gate = gate
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._logged: dict[str, float] = {}
        super().__init__(*args, **kwargs)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Accept-time check of the peer address (socketserver closes a refused one)."""
        address = str(client_address[0])
        if self.gate.address_allowed(address):
            return True
        self._note(address, NotAdmittedError("address", "peer address not in the allow-list"))
        return False

    def admit(self, sock: socket.socket, address: str) -> bytes:
        """The connection's A-ASSOCIATE-RQ, read under the gate's limits.

        Raises:
            NotAdmittedError: too many connections pending, or see
                :meth:`AdmissionGate.read_request`.
        """
        with self._pending_lock:
            if self._pending >= MAX_PENDING:
                raise NotAdmittedError(
                    "busy", f"{MAX_PENDING} connections are already being admitted")
            self._pending += 1
        try:
            return self.gate.read_request(sock)
        finally:
            with self._pending_lock:
                self._pending -= 1

    def refuse(self, sock: socket.socket, address: str, exc: NotAdmittedError) -> None:
        """Close a refused connection (without reading more) and record why."""
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        self._note(address, exc)

    def _note(self, address: str, exc: NotAdmittedError) -> None:
        self.gate.on_refused(exc.reason)
        now = time.monotonic()
        with self._pending_lock:
            if now - self._logged.get(exc.reason, -LOG_INTERVAL_S) < LOG_INTERVAL_S:
                return
            self._logged[exc.reason] = now
        level = logging.DEBUG if exc.reason == "closed" else logging.WARNING
        log.log(level, "connection from %s refused before association: %s", address, exc,
                extra={"peer": address, "reason": exc.reason})

    def shutdown(self) -> None:
        """Stop serving and close the listening socket."""
        with contextlib.suppress(ValueError):  # not in ae._servers: made by make_server
            super().shutdown()
