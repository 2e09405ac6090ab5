"""The asyncio protocol of one UDP listening socket: hands datagrams to the layer, never raises."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Any

from routescript.sip import MAX_UDP_PAYLOAD
from routescript.transport.address import SocketInfo, Source
from routescript.transport.errors import TransportError

if TYPE_CHECKING:
    from routescript.transport.layer import TransportLayer
    from routescript.transport.probe import QueueDelayProbe

log = logging.getLogger("routescript.transport")


class UdpEndpoint(asyncio.DatagramProtocol):
    """One bound UDP socket: sends from it at once, reads it once the layer starts serving (the
    loop then owns the socket through `transport`)."""

    def __init__(self, layer: TransportLayer, sock: socket.socket) -> None:
        self.layer = layer
        self.sock = sock
        self.info: SocketInfo | None = None      # set by the layer once the port is known
        self.transport: asyncio.DatagramTransport | None = None
        self.probe: QueueDelayProbe | None = None   # set by TransportLayer.start_queue_probes
        self.shared = False   # adopted from a supervisor: other worker processes read this socket too
        # The Source of each peer's datagrams by (host, port), made once (TransportLayer.on_datagram).
        self.sources: dict[tuple[str, int], Source] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.info is None or self.transport is None:
            return
        probe = self.probe
        if probe is not None and (probe.is_probe(addr[0], addr[1])
                                  or (self.shared and probe.is_sibling_probe(addr[0], data))):
            probe.received(data)
            return
        try:
            self.layer.on_datagram(self, data, addr[0], addr[1])
        except Exception:  # nothing may stop the listener
            log.exception("%s: error handling a datagram from %s:%s", self.info.name, addr[0], addr[1])

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like, from an earlier sendto: not fatal for the socket.
        log.debug("%s: %s", self.info.name if self.info else "udp", exc)

    def sendto(self, data: bytes, host: str, port: int) -> None:
        if len(data) > MAX_UDP_PAYLOAD:
            # asyncio would hand sendto's EMSGSIZE to error_received (a debug line) and the sender
            # would retransmit in vain until its timeout: fail now, the way a failed send fails.
            raise TransportError(f"{self.info}: {len(data)} bytes do not fit in a UDP datagram "
                                 f"(at most {MAX_UDP_PAYLOAD})")
        if self.transport is None:
            self._sendto_unserved(data, host, port)
            return
        if self.transport.is_closing():
            raise TransportError(f"{self.info}: socket closed")
        self.transport.sendto(data, (host, port))

    def _sendto_unserved(self, data: bytes, host: str, port: int) -> None:
        """Before the layer reads this socket (start-up): straight on the non-blocking socket."""
        if self.sock.fileno() < 0:
            raise TransportError(f"{self.info}: socket closed")
        try:
            self.sock.sendto(data, (host, port))
        except OSError as exc:   # a full send buffer (EAGAIN), an unreachable network
            raise TransportError(f"{self.info}: {exc.strerror or exc}") from None
