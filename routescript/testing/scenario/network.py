"""The two wires a scenario's UAs talk over.

SimulatedNetwork (in process): the server's transport is a SimulatedTransport - the real
TransportLayer (parsing, received/rport stamping, malformed-message answers, reply routing) with its
sockets replaced by the network: what the server sends is delivered to the UA at that address and
transport (on the next loop turn, never inside the server's call), what a UA sends enters the
server through `TransportLayer.receive` as a datagram or TCP message from the UA's address would.
A message to an address no UA has is kept in `lost` (a UDP datagram is lost; a TCP connection to it
is refused, as a real network would do).

A tcp, tls or ws UA has one connection to the server, open for the whole scenario, with an id the
server sees (`Source.conn_id`): what the server sends with that id (a reply, a NOTIFY in a dialog the
connection made) reaches the UA whatever host the Via or Contact names - a browser's `.invalid` -
and what it sends to the UA's address over that transport finds the connection too, as the real
TransportLayer finds an open one by its remote address. Choices: the WebSocket handshake (and
proto_ws's origin check) and the TLS handshake are not simulated - the connection is one that
passed them, so a tls connection carries no TLS session ($tls_* are empty, is_peer_verified fails);
the server opens a new tcp or tls connection to a UA's address when none is open (there is always
one here) and never opens a ws one (TransportError, as routescript does).

LiveWire (--target): one real UDP socket or TCP connection per UA, on loopback, talking to a live
server.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable
from typing import Any

from routescript.core.counting import CountingTransportLayer
from routescript.sip import Destination, SocketInfo, Source
from routescript.sip.address import TCP, UDP, WS
from routescript.transport.address import bare_host, normalize_host
from routescript.transport.errors import TransportError

from ..client import _TcpProto as TcpProto
from .model import TRANSPORTS
from .ua import UserAgent


# The transports of a script's sockets (and of its UAs) the simulated network carries.
SIMULATED_TRANSPORTS = TRANSPORTS


class SimulatedNetwork:
    """The UAs' addresses and the server's transport, joined in one loop (module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: SimulatedTransport | None = None
        self._uas: dict[tuple[str, str, int], UserAgent] = {}
        self._conn_ids: dict[str, int] = {}              # UA name -> its connection's id
        self._conns: dict[int, SimulatedConnection] = {}
        self._ids = itertools.count(1)
        self.lost: list[tuple[Destination, bytes]] = []
        self.sent_by_server = 0

    def add(self, ua: UserAgent) -> None:
        key = (ua.transport, normalize_host(ua.host), ua.port)
        if key in self._uas:
            raise ValueError(f"UAs {self._uas[key].name} and {ua.name} have the same address {ua.hostport}")
        self._uas[key] = ua
        if ua.transport != UDP:
            conn = SimulatedConnection(next(self._ids), ua, self)
            self._conn_ids[ua.name] = conn.conn_id
            self._conns[conn.conn_id] = conn

    def connection(self, conn_id: int) -> SimulatedConnection | None:
        return self._conns.get(conn_id)

    def make_transport(self, *args: Any, **kwargs: Any) -> SimulatedTransport:
        """The factory Server.start_simulated is given."""
        self.transport = SimulatedTransport(self, *args, **kwargs)
        return self.transport

    # --- the Wire the UAs use -------------------------------------------------------------------

    def send(self, ua: UserAgent, data: bytes) -> None:
        transport = self.transport
        if transport is None:
            raise RuntimeError("the server is not started")
        if transport.closed:
            return   # the server has stopped (a UA's ACK to a late retransmission): nobody reads it
        try:
            sock = transport.socket_of(ua.transport)
        except TransportError:
            raise TransportError(f"{ua.name} sends over {ua.transport}, but the script has no "
                                 f"{ua.transport} socket") from None
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
        """`data` to the UA `dest` names: over its connection (dest.conn_id, else the one open from
        that address), or as a datagram to its address (module docstring)."""
        self.sent_by_server += 1
        conn = self._conns.get(dest.conn_id) if dest.conn_id is not None else None
        ua: UserAgent | None = conn.ua if conn is not None and conn.proto == dest.proto else None
        if ua is None:
            ua = self._uas.get((dest.proto, normalize_host(bare_host(dest.host)), dest.port))
        if ua is None:
            self.lost.append((dest, data))
            if dest.proto == WS:
                raise TransportError(f"no open WebSocket connection to {dest} (routescript does not open "
                                     "WebSocket connections)")
            if dest.proto != UDP:
                raise TransportError(f"cannot connect to {dest}: no UA listens there (connection refused)")
            return
        self.loop.call_soon(ua.on_data, data)


class SimulatedConnection:
    """A UA's connection as the server's TransportLayer sees it (`connection(conn_id)`): open, of the
    UA's transport, written to by delivering to the UA; no TLS session (module docstring)."""

    tls = None
    outgoing = False
    open = True

    def __init__(self, conn_id: int, ua: UserAgent, network: SimulatedNetwork) -> None:
        self.conn_id = conn_id
        self.ua = ua
        self.proto = ua.transport
        self._network = network

    def write(self, data: bytes) -> None:
        self._network.deliver(data, Destination(self.proto, self.ua.host, self.ua.port, self.conn_id))


class SimulatedTransport(CountingTransportLayer):
    """The server's TransportLayer on a SimulatedNetwork: `bind` makes a socket that only exists in
    the network; every send ends in `network.deliver`."""

    def __init__(self, network: SimulatedNetwork, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.network = network

    async def bind(self, proto: str, host: str, port: int) -> SocketInfo:
        proto = proto.lower()
        if proto not in SIMULATED_TRANSPORTS:
            raise ValueError(f"unsupported transport {proto!r} ({', '.join(SIMULATED_TRANSPORTS)} are)")
        info = SocketInfo(proto, bare_host(host), port or 5060)
        # a socket with no endpoint: only its SocketInfo is read (sockets, socket_for)
        if proto == UDP:
            self._udp[info] = None   # type: ignore[assignment]
        elif proto == WS:
            self._ws_servers[info] = None   # type: ignore[assignment]
        else:
            self._tcp_servers[info] = None   # type: ignore[assignment]
        return info

    def connection(self, conn_id: int) -> Any:
        """The UA's simulated connection: the real layer's reply path (send_reply) writes on it."""
        return self.network.connection(conn_id)

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

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        self._closed = True
        self._udp.clear()
        self._tcp_servers.clear()
        self._ws_servers.clear()


class LiveWire:
    """--target: every UA on a real socket on its loopback address, talking to the live server at
    `target` - a UDP socket, or for a tcp UA one TCP connection opened at the start (its Contact names
    the connection's local port, so the server's requests to it find the open connection, RFC 3261
    18.1.1 / 18.2.2, as a phone behind NAT is reached). tls and ws UAs are refused (no handshake here)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, target: tuple[str, int]) -> None:
        self.loop = loop
        self.target = target
        self._sockets: dict[str, asyncio.DatagramTransport] = {}
        self._streams: dict[str, asyncio.Transport] = {}

    async def add(self, ua: UserAgent) -> None:
        if ua.transport == UDP:
            transport, _ = await self.loop.create_datagram_endpoint(
                lambda: _UaProtocol(ua), local_addr=(ua.host, ua.port), family=socket.AF_INET)
            ua.port = transport.get_extra_info("sockname")[1]
            self._sockets[ua.name] = transport
        elif ua.transport == TCP:
            # an ephemeral local port (a fixed one could still be in TIME_WAIT from the last scenario)
            # the test client's framed stream (Content-Length framing, keep-alive pings answered)
            stream, _ = await self.loop.create_connection(
                lambda: TcpProto(lambda data, _addr: ua.on_data(data), self.target), self.target[0],
                self.target[1], local_addr=(ua.host, 0))
            ua.port = stream.get_extra_info("sockname")[1]
            self._streams[ua.name] = stream
        else:
            raise TransportError(f"UA {ua.name}: --target speaks {', '.join(LIVE_TRANSPORTS)} (its transport "
                                 f"is {ua.transport})")

    def send(self, ua: UserAgent, data: bytes) -> None:
        if ua.name in self._streams:
            self._streams[ua.name].write(data)
        else:
            self._sockets[ua.name].sendto(data, self.target)

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        self.loop.call_later(delay, fn)

    def now(self) -> float:
        return self.loop.time()

    def close(self) -> None:
        for transport in (*self._sockets.values(), *self._streams.values()):
            transport.close()
        self._sockets.clear()
        self._streams.clear()


# The transports a UA may use with --target.
LIVE_TRANSPORTS = (UDP, TCP)


class _UaProtocol(asyncio.DatagramProtocol):
    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.ua.on_data(data)
