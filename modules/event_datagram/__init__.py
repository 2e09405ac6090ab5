"""event_datagram - raised events sent as datagrams over UDP or UNIX sockets (OpenSIPS event_datagram).

    loadmodule "event_datagram.so"
    # an external application subscribes over MI:
    #   routescript mi event_subscribe E_PRESENCE_PUBLISH udp:127.0.0.1:8888 3600
    #   routescript mi event_subscribe E_PRESENCE_PUBLISH unix:/tmp/events.sock

Each event is one datagram holding a JSON-RPC 2.0 notification, as OpenSIPS 3.x sends it:
    {"jsonrpc":"2.0","method":"E_PRESENCE_PUBLISH","params":{"user":"alice",...}}
Choice: an event raised without parameters has no "params" member (JSON-RPC 2.0 makes it optional).

Sockets: `udp:host:port` (an IPv4/IPv6 address, `[v6]:port`, or a name resolved once, when the
subscription is made, as OpenSIPS does) and `unix:/path` (a datagram UNIX socket). The module sends
from its own unbound sockets, made on first use; a send that would block (the receiver's buffer is
full) or fails is logged and that datagram is lost - datagram delivery is best effort, as in OpenSIPS.
A payload over MAX_DATAGRAM bytes is not sent (logged).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from typing import TYPE_CHECKING, Any

from routescript.core.module import ConfigError, Module

if TYPE_CHECKING:
    from routescript.core.host import ModuleHost

log = logging.getLogger("routescript.event_datagram")

MAX_DATAGRAM = 65507  # the largest UDP/IPv4 payload


def notification(name: str, params: dict[str, Any]) -> bytes:
    """The datagram for one event: a JSON-RPC 2.0 notification, printed compactly."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": name}
    if params:
        body["params"] = params
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


class _Sender:
    """One unbound, non-blocking datagram socket per address family, made on first use."""

    def __init__(self) -> None:
        self._socks: dict[int, socket.socket] = {}

    def send(self, family: int, data: bytes, address: Any) -> None:
        sock = self._socks.get(family)
        if sock is None:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._socks[family] = sock
        sock.sendto(data, address)

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()


class UdpTransport:
    """`udp:host:port`. The reply socket is (family, (ip, port)) - equal for equal destinations."""

    proto = "udp"

    def __init__(self, sender: _Sender) -> None:
        self.sender = sender

    async def parse(self, address: str) -> tuple[int, tuple[str, int]]:
        host, port = _split_host_port(address)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            return family, (str(ip), port)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise ValueError(f"cannot resolve {host}: {exc}") from None
        if not infos:
            raise ValueError(f"cannot resolve {host}")
        family, _type, _proto, _name, sockaddr = infos[0]
        return family, (str(sockaddr[0]), int(sockaddr[1]))

    def print(self, sock: tuple[int, tuple[str, int]]) -> str:
        family, (ip, port) = sock
        return f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"

    def raise_event(self, name: str, params: dict[str, Any], sock: tuple[int, tuple[str, int]]) -> None:
        _send(self.sender, sock[0], name, params, sock[1], f"udp:{self.print(sock)}")


class UnixTransport:
    """`unix:/path/to/socket` (a SOCK_DGRAM UNIX socket the subscriber listens on)."""

    proto = "unix"

    def __init__(self, sender: _Sender) -> None:
        self.sender = sender

    async def parse(self, address: str) -> str:
        if not address.startswith("/"):
            raise ValueError("a unix socket must be an absolute path")
        if len(address.encode()) > 107:  # sun_path is 108 bytes with its NUL
            raise ValueError("unix socket path too long")
        return address

    def print(self, sock: str) -> str:
        return sock

    def raise_event(self, name: str, params: dict[str, Any], sock: str) -> None:
        _send(self.sender, socket.AF_UNIX, name, params, sock, f"unix:{sock}")


def _send(sender: _Sender, family: int, name: str, params: dict[str, Any], address: Any, where: str) -> None:
    data = notification(name, params)
    if len(data) > MAX_DATAGRAM:
        log.error("event %s: %d bytes is too large for a datagram to %s; not sent", name, len(data), where)
        return
    try:
        sender.send(family, data, address)
    except BlockingIOError:
        log.warning("event %s: %s is not reading; datagram dropped", name, where)
    except OSError as exc:
        log.warning("event %s: cannot send to %s: %s", name, where, exc.strerror or exc)


def _split_host_port(address: str) -> tuple[str, int]:
    """`127.0.0.1:8888`, `[::1]:8888`, `host.example:8888` -> (host, port)."""
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("expected [ipv6]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise ValueError("expected host:port")
    if not host:
        raise ValueError("missing host")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port '{port_text}'")
    return host, int(port_text)


class EventDatagramModule(Module):
    name = "event_datagram"

    def __init__(self, server: ModuleHost, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.sender = _Sender()
        self.udp = UdpTransport(self.sender)
        self.unix = UnixTransport(self.sender)

    def check(self) -> None:
        from routescript.core.evi import event_interface

        evi = event_interface(self.server)
        try:
            evi.register_transport(self.udp)
            evi.register_transport(self.unix)
        except ValueError as exc:
            raise ConfigError(f"event_datagram: {exc}") from None

    async def stop(self) -> None:
        self.sender.close()


MODULE = EventDatagramModule
