"""The two wires a scenario's UAs talk over.

SimulatedNetwork (in process): the server's transport is a SimulatedTransport - the real
TransportLayer (parsing, received/rport stamping, malformed-message answers, reply routing) with its
sockets replaced by the network: what the server sends is delivered to the UA at that address and
transport (on the next loop turn, never inside the server's call), what a UA sends enters the
server through `TransportLayer.receive` as a datagram or TCP message from the UA's address would.
A message to an address no UA has is kept in `lost` (a UDP datagram is lost; a TCP connection to it
is refused, as a real network would do).

UdpWire (--target): one real UDP socket per UA, on loopback, talking to a live server.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable
from typing import Any

from routescript.core.counting import CountingTransportLayer
from routescript.sip import Destination, SocketInfo, Source
from routescript.transport.address import bare_host, normalize_host
from routescript.transport.errors import TransportError

from .ua import UserAgent


class SimulatedNetwork:
    """The UAs' addresses and the server's transport, joined in one loop (module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: SimulatedTransport | None = None
        self._uas: dict[tuple[str, str, int], UserAgent] = {}
        self._conn_ids: dict[str, int] = {}
        self._ids = itertools.count(1)
        self.lost: list[tuple[Destination, bytes]] = []
        self.sent_by_server = 0

    def add(self, ua: UserAgent) -> None:
        key = (ua.transport, normalize_host(ua.host), ua.port)
        if key in self._uas:
            raise ValueError(f"UAs {self._uas[key].name} and {ua.name} have the same address {ua.hostport}")
        self._uas[key] = ua
        if ua.transport == "tcp":
            self._conn_ids[ua.name] = next(self._ids)

    def make_transport(self, *args: Any, **kwargs: Any) -> SimulatedTransport:
        """The factory Server.start_simulated is given."""
        self.transport = SimulatedTransport(self, *args, **kwargs)
        return self.transport

    # --- the Wire the UAs use -------------------------------------------------------------------

    def send(self, ua: UserAgent, data: bytes) -> None:
        transport = self.transport
        if transport is None:
            raise RuntimeError("the server is not started")
        sock = transport.socket_of(ua.transport)
        source = Source(ua.transport, sock, ua.host, ua.port, self._conn_ids.get(ua.name))
        def reply(out: bytes) -> None:   # the transport's answer to a message it cannot parse
            self.loop.call_soon(ua.on_data, out)

        self.loop.call_soon(transport.receive, data, source, reply)

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        self.loop.call_later(delay, fn)

    def now(self) -> float:
        return self.loop.time()

    # --- what the server sends ------------------------------------------------------------------

    def deliver(self, data: bytes, dest: Destination) -> None:
        self.sent_by_server += 1
        ua = self._uas.get((dest.proto, normalize_host(bare_host(dest.host)), dest.port))
        if ua is None:
            self.lost.append((dest, data))
            if dest.proto == "tcp":
                raise TransportError(f"cannot connect to {dest}: no UA listens there (connection refused)")
            return
        self.loop.call_soon(ua.on_data, data)


class SimulatedTransport(CountingTransportLayer):
    """The server's TransportLayer on a SimulatedNetwork: `bind` makes a socket that only exists in
    the network; every send ends in `network.deliver`."""

    def __init__(self, network: SimulatedNetwork, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.network = network

    async def bind(self, proto: str, host: str, port: int) -> SocketInfo:
        proto = proto.lower()
        if proto not in ("udp", "tcp"):
            raise ValueError(f"unsupported transport {proto!r} (udp and tcp are)")
        info = SocketInfo(proto, bare_host(host), port or 5060)
        # a socket with no endpoint: only its SocketInfo is read (sockets, socket_for)
        if proto == "udp":
            self._udp[info] = None   # type: ignore[assignment]
        else:
            self._tcp_servers[info] = None   # type: ignore[assignment]
        return info

    def socket_of(self, proto: str) -> SocketInfo:
        for info in self.sockets:
            if info.proto == proto:
                return info
        raise TransportError(f"the script has no {proto} socket")

    async def start_serving(self) -> None:
        return None

    def start_queue_probes(self, interval: float = 0.1) -> None:
        return None

    def send(self, data: bytes, dest: Destination) -> None:
        self.network.deliver(data, dest)

    async def deliver(self, data: bytes, dest: Destination) -> None:
        self.network.deliver(data, dest)

    async def close(self) -> None:
        self._closed = True
        self._udp.clear()
        self._tcp_servers.clear()


class UdpWire:
    """--target: every UA on a real UDP socket, sending to the live server at `target`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, target: tuple[str, int]) -> None:
        self.loop = loop
        self.target = target
        self._sockets: dict[str, asyncio.DatagramTransport] = {}

    async def add(self, ua: UserAgent) -> None:
        if ua.transport != "udp":
            raise TransportError(f"UA {ua.name}: --target speaks UDP only (its transport is {ua.transport})")
        transport, _ = await self.loop.create_datagram_endpoint(
            lambda: _UaProtocol(ua), local_addr=(ua.host, ua.port), family=socket.AF_INET)
        ua.port = transport.get_extra_info("sockname")[1]
        self._sockets[ua.name] = transport

    def send(self, ua: UserAgent, data: bytes) -> None:
        self._sockets[ua.name].sendto(data, self.target)

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        self.loop.call_later(delay, fn)

    def now(self) -> float:
        return self.loop.time()

    def close(self) -> None:
        for transport in self._sockets.values():
            transport.close()
        self._sockets.clear()


class _UaProtocol(asyncio.DatagramProtocol):
    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.ua.on_data(data)
