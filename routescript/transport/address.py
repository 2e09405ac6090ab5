"""Where messages come from and go to: listening sockets, sources, destinations.

Plain frozen value objects; no I/O. Hosts are kept without IPv6 brackets here (the socket API form,
"::1"); `SocketInfo.name` and URIs add the brackets back ("udp:[::1]:5060").
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

UDP = "udp"
TCP = "tcp"
PROTOCOLS = (UDP, TCP)

DEFAULT_SIP_PORT = 5060  # RFC 3261 19.1.2: default port for sip: over UDP and TCP


def bare_host(host: str) -> str:
    """Strip IPv6 reference brackets: "[::1]" -> "::1"; other hosts are returned unchanged."""
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def normalize_host(host: str) -> str:
    """Canonical text of an IP literal (so "::0001" and "[::1]" compare equal); names are lower-cased."""
    host = bare_host(host)
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(bare_host(host))
    except ValueError:
        return False
    return True


def is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(bare_host(host)).version == 6
    except ValueError:
        return False


def host_for_uri(host: str) -> str:
    """Host as written in a SIP URI or Via: IPv6 literals in brackets (RFC 3261 25.1 IPv6reference)."""
    host = bare_host(host)
    return f"[{host}]" if is_ipv6(host) else host


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
    """Where a message came from. `conn_id` names the TCP connection (None for UDP)."""

    proto: str
    socket: SocketInfo
    remote_host: str
    remote_port: int
    conn_id: int | None = None

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
