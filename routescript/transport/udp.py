"""The asyncio protocol of one UDP listening socket: hands datagrams to the layer, never raises."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from routescript.sip import MAX_UDP_PAYLOAD
from routescript.transport.address import SocketInfo
from routescript.transport.errors import TransportError

if TYPE_CHECKING:
    from routescript.transport.layer import TransportLayer
    from routescript.transport.probe import QueueDelayProbe

log = logging.getLogger("routescript.transport")


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, layer: TransportLayer) -> None:
        self.layer = layer
        self.info: SocketInfo | None = None      # set by the layer once the port is known
        self.transport: asyncio.DatagramTransport | None = None
        self.probe: QueueDelayProbe | None = None   # set by TransportLayer.start_queue_probes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.info is None or self.transport is None:
            return
        probe = self.probe
        if probe is not None and probe.is_probe(addr[0], addr[1]):
            probe.received(data)
            return
        try:
            self.layer._on_datagram(self, data, addr[0], addr[1])
        except Exception:  # nothing may stop the listener
            log.exception("%s: error handling a datagram from %s:%s", self.info.name, addr[0], addr[1])

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like, from an earlier sendto: not fatal for the socket.
        log.debug("%s: %s", self.info.name if self.info else "udp", exc)

    def sendto(self, data: bytes, host: str, port: int) -> None:
        if self.transport is None or self.transport.is_closing():
            raise TransportError(f"{self.info}: socket closed")
        if len(data) > MAX_UDP_PAYLOAD:
            # asyncio would hand sendto's EMSGSIZE to error_received (a debug line) and the sender
            # would retransmit in vain until its timeout: fail now, the way a failed send fails.
            raise TransportError(f"{self.info}: {len(data)} bytes do not fit in a UDP datagram "
                                 f"(at most {MAX_UDP_PAYLOAD})")
        self.transport.sendto(data, (host, port))
