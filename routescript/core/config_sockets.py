"""`socket=` / `listen=` lines: `[proto:]host[:port] [as host[:port]] [use_workers K]` parsed into
ListenSpec values, the protocols and default ports, and the socket a script without any gets."""

from __future__ import annotations

import re
from dataclasses import dataclass

from routescript.sip.hosts import host_for_uri

from .config_values import Pos
from .module import ConfigError

# When no socket= / listen= line is given OpenSIPS listens on every interface; we choose loopback
# UDP port 5060 so that a bare script never exposes a server to the network by accident.
DEFAULT_SOCKET = "udp:127.0.0.1:5060"

SUPPORTED_PROTOS = ("udp", "tcp", "tls", "ws", "wss")
# A socket line without a port: RFC 3261 19.1.2's 5061 for TLS (proto_tls's tls_port), 80 for ws and 443 for
# wss (proto_ws's ws_port and proto_wss's wss_port defaults, RFC 6455 3), 5060 for the others.
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}

@dataclass(frozen=True, slots=True)
class ListenSpec:
    """One `socket=` line: proto:host:port, plus the `as` advertised address if given."""

    proto: str
    host: str
    port: int
    advertised: str | None = None
    pos: Pos | None = None
    workers: int | None = None   # `use_workers K`: read by workers 0..K-1 (None: udp_/tcp_workers)

    @property
    def name(self) -> str:
        return f"{self.proto}:{host_for_uri(self.host)}:{self.port}"


# socket = [proto:]host[:port] [as host[:port]]
#   host = IPv4 | hostname | "[" IPv6 "]" | "*"
_SOCKET_RE = re.compile(
    r"^(?:(?P<proto>[a-zA-Z]+):)?(?P<host>\[[0-9a-fA-F:.]+\]|[^:\s\[\]]+)(?::(?P<port>\d+))?"
    r"(?:\s+as\s+(?P<adv>\S+))?\s*$")


def parse_socket(value: str, pos: Pos | None = None) -> ListenSpec:
    """Parse a socket/listen value; raises ConfigError at `pos`."""
    m = _SOCKET_RE.match(value.strip())
    if not m:
        raise ConfigError(f"bad socket definition \"{value}\" (expected proto:host:port)", pos)
    proto = (m.group("proto") or "udp").lower()
    if proto not in SUPPORTED_PROTOS:
        raise ConfigError(f"socket \"{value}\": protocol '{proto}' is not supported (udp, tcp, tls, ws, wss)",
                          pos)
    host = m.group("host")
    if host.startswith("["):
        host = host[1:-1]
    if host == "*":
        host = "0.0.0.0"  # noqa: S104 - OpenSIPS: `*` is every interface
    port = int(m.group("port") or DEFAULT_PORTS[proto])
    if not 0 <= port <= 65535:
        raise ConfigError(f"socket \"{value}\": port {port} out of range", pos)
    return ListenSpec(proto, host, port, m.group("adv"), pos)


def socket_of(value: object, pos: Pos | None) -> ListenSpec:
    """A socket= value: the parser's SocketSpec (with its `use_workers K`) or a plain string."""
    from routescript.script.ast import SocketSpec

    spec = parse_socket(str(value), pos)
    if isinstance(value, SocketSpec) and value.workers is not None:
        if value.workers < 1:
            raise ConfigError(f"socket \"{value}\": use_workers must be at least 1, got {value.workers}", pos)
        spec = ListenSpec(spec.proto, spec.host, spec.port, spec.advertised, spec.pos, value.workers)
    return spec
