"""Where messages come from and go to: listening sockets, sources, destinations.

Plain frozen value objects; no I/O. They live in the SIP layer (not in transport) because every layer
names them: transport fills them, transactions keep them, modules say where a request goes, and none
of those may import transport (DESIGN's dependency rules). Hosts are kept without IPv6 brackets here
(the socket API form, "::1"); `SocketInfo.name` and URIs add the brackets back ("udp:[::1]:5060").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .hosts import bare_host, host_for_uri, is_ip, is_ipv6, normalize_host

__all__ = ["DEFAULT_SIP_PORT", "DEFAULT_SIPS_PORT", "PROTOCOLS", "STREAM_PROTOCOLS", "TCP", "TLS", "UDP",
           "WS", "WSS", "WS_PROTOCOLS", "Destination", "SocketInfo", "Source", "bare_host", "host_for_uri",
           "is_ip", "is_ipv6", "normalize_host"]

UDP = "udp"
TCP = "tcp"
TLS = "tls"
WS = "ws"   # RFC 7118: SIP over WebSocket (Via: SIP/2.0/WS)
WSS = "wss"   # RFC 7118: SIP over secure WebSocket, WebSocket over TLS (Via: SIP/2.0/WSS)
PROTOCOLS = (UDP, TCP, TLS, WS, WSS)
WS_PROTOCOLS = (WS, WSS)   # carried by a connection of routescript.transport.ws
STREAM_PROTOCOLS = (TCP, TLS)   # carried by a connection of routescript.transport.tcp, framed alike (not ws)

DEFAULT_SIP_PORT = 5060  # RFC 3261 19.1.2: default port for sip: over UDP and TCP
DEFAULT_SIPS_PORT = 5061  # RFC 3261 19.1.2: default port for sips: (TLS)


@dataclass(frozen=True, slots=True)
class SocketInfo:
    """A listening socket, as named by a `socket=`/`listen=` line: proto:host:port."""

    proto: str
    host: str
    port: int

    @property
    def name(self) -> str:
        return f"{self.proto}:{host_for_uri(self.host)}:{self.port}"

    @property
    def reliable(self) -> bool:
        """True for stream transports (RFC 3261 timers that are 0 on reliable transports)."""
        return self.proto != UDP

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from. `conn_id` names the TCP connection (None for UDP). `reply_to`:
    where responses to a received request go (RFC 3261 18.2.2, RFC 3581), worked out by the transport
    as it read the top Via (None: not known; not part of equality). `tls`: the TLS session of the
    connection (routescript.transport.tls.TlsSession) when the message was read by another worker
    process, which alone holds the connection (docs/workers.md 4); None otherwise (the transport layer
    is asked by conn_id then). Not part of equality either."""

    proto: str
    socket: SocketInfo
    remote_host: str
    remote_port: int
    conn_id: int | None = None
    reply_to: Destination | None = field(default=None, compare=False)
    tls: Any = field(default=None, compare=False)

    @property
    def reliable(self) -> bool:
        return self.proto != UDP

    def __str__(self) -> str:
        return f"{self.proto}:{host_for_uri(self.remote_host)}:{self.remote_port}"


@dataclass(frozen=True, slots=True)
class Destination:
    """Where to send. `conn_id` prefers that TCP connection while it is open; `socket` picks the
    local listening socket to send from (UDP) or to bind to (new TCP connections)."""

    proto: str
    host: str
    port: int
    conn_id: int | None = None
    socket: SocketInfo | None = None

    @property
    def reliable(self) -> bool:
        return self.proto != UDP

    def __str__(self) -> str:
        return f"{self.proto}:{host_for_uri(self.host)}:{self.port}"

    def packed(self) -> tuple[Any, ...]:
        """This destination as a tuple of plain values, which the garbage collector stops tracking (the
        transaction layer keeps tens of thousands of them for Timer J); `unpack` makes it again."""
        s = self.socket
        if s is None:
            return (self.proto, self.host, self.port, self.conn_id)
        return (self.proto, self.host, self.port, self.conn_id, s.proto, s.host, s.port)

    @classmethod
    def unpack(cls, packed: tuple[Any, ...]) -> Destination:
        if len(packed) == 4:
            return cls(*packed)
        proto, host, port, conn_id, s_proto, s_host, s_port = packed
        return cls(proto, host, port, conn_id, SocketInfo(s_proto, s_host, s_port))
