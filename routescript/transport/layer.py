"""TransportLayer: every socket of the server, one receive path and one send path.

Receive: datagram or TCP frame -> routescript.sip.parse_message -> received/rport stamped on the top
Via of a request -> on_message(msg, source). Bad input never reaches the callback and never stops a
listener: a request that still names Via/From/To/Call-ID/CSeq is answered 400 (or 513) with the
problem as the reason phrase; anything else is dropped and logged at most once per source and minute.

Send: UDP from the listening socket (the one the request came in on, for replies), TCP on an open
connection (the one the request came on, or any open one to the same remote address - this is how
NOTIFYs reach a subscriber behind its own TCP connection), opening a new one on demand. TLS is TCP with
a handshake (routescript.transport.tls): the same connections, framing and bounds, with the SSL
contexts of the layer's TlsProvider (`tls`; without one, tls sockets and destinations are refused).
WebSocket (ws, and wss: the same over TLS with `wss_tls`'s contexts) connections are in the same table
(routescript.transport.ws); we only accept them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket as _socket
import ssl
import time
from collections.abc import Callable, Container, Coroutine, Iterable
from typing import Any, Protocol

from routescript.sip import ParseError, parse_message, reply_to_malformed
from routescript.sip._memo import MEMO_SIZE
from routescript.transport._ratelimit import RateLimitedLog
from routescript.transport.address import (
    STREAM_PROTOCOLS,
    TCP,
    TLS,
    UDP,
    WS,
    WS_PROTOCOLS,
    WSS,
    Destination,
    SocketInfo,
    Source,
    bare_host,
    is_ip,
    is_ipv6,
    normalize_host,
)
from routescript.transport.errors import TransportError
from routescript.transport.probe import QueueDelayProbe
from routescript.transport.routing import receive_route, request_destination, response_destination
from routescript.transport.keepalive import KeepAlive
from routescript.transport.tcp import TcpConnection
from routescript.transport.tls import TlsProvider, TlsSession, handshake_failure
from routescript.transport.udp import UdpEndpoint
from routescript.transport.ws import WsConnection, WsOptions

log = logging.getLogger("routescript.transport")

# What a keep-alive datagram is made of (or nothing at all); a message starts with a letter, so its first
# byte tells it apart without stripping (a copy of) every datagram.
_KEEPALIVE_CHARS = b"\r\n\x00 \t"
_KEEPALIVE_BYTES = frozenset([b"", *(_KEEPALIVE_CHARS[i:i + 1] for i in range(len(_KEEPALIVE_CHARS)))])

OnMessage = Callable[[Any, Source], None]
Reply = Callable[[bytes], None]
# Worker processes (routescript.workers.router) replace `front` (every complete message read goes there
# first; `receive` by default) to hand messages to other workers, and set `tcp_relay(data, dest, awaited)`:
# True when it sent to a connection another worker holds (dest.conn_id names it). `awaited`: the caller
# (deliver: a client transaction's first send) waits for the outcome, so the holder reports a failure back.
Front = Callable[[bytes, Source, Reply], None]


class TcpRelay(Protocol):
    def __call__(self, data: bytes, dest: Destination, awaited: bool = False) -> bool: ...
# A stream connection in the table: TCP, or WebSocket (a SIP flow like a TCP connection).
Connection = TcpConnection | WsConnection


class TransportLayer:
    """All listening sockets and TCP connections.

    on_message(msg, source): a plain callback for every message that parsed (requests with their top
        Via stamped); exceptions it raises are logged, never propagated into the sockets.
    max_message_size: bigger datagrams and TCP messages are answered 513 (default 64 KiB).
    tcp_idle_timeout: a TCP connection with no traffic this long is closed (OpenSIPS
        tcp_connection_lifetime, default 120 s).
    max_tcp_connections: accepted + opened connections (OpenSIPS tcp_max_connections, default 2048);
        a connection over the bound is refused (closed at once) and logged.
    max_tcp_connections_per_ip: accepted connections from one remote address (routescript's own core
        parameter tcp_max_connections_per_ip, default 256; 0 = no limit): one address holding every
        connection would lock all other TCP clients out. Over it the new connection is closed at accept
        and logged. Addresses in `tcp_trusted_sources` (a container of host strings: an edge proxy)
        are exempt.
    tcp_max_msg_time: seconds a message may take to arrive whole once its first bytes are in
        (OpenSIPS tcp_max_msg_time, default 4; 0 = no limit); then the connection is closed and logged.
    tcp_connect_timeout: how long opening an outgoing connection may take.
    conn_id_base: connection ids start above it (a worker's slot << 48: ids global across workers).
    tls: the SSL contexts of tls sockets and destinations (TlsProvider); None: no TLS.
    wss_tls, wss_options (attributes, set before binding): the SSL contexts and settings of wss
        listeners (proto_wss), ws_options those of ws listeners (proto_ws).
    """

    def __init__(self, on_message: OnMessage, *, max_message_size: int = 65536,
                 tcp_idle_timeout: float = 120.0, max_tcp_connections: int = 2048,
                 max_tcp_connections_per_ip: int = 256, tcp_trusted_sources: Container[str] = (),
                 tcp_max_msg_time: float = 4.0,
                 tcp_connect_timeout: float = 5.0, max_write_buffer: int = 1 << 20,
                 drop_log_interval: float = 60.0, udp_buffer: int = 0, conn_id_base: int = 0,
                 tls: TlsProvider | None = None) -> None:
        self.on_message = on_message
        self.tls = tls
        self.tcp_keepalive: KeepAlive | None = None   # tcp_keepalive & co (lifecycle sets it)
        self.front: Front = self.receive
        self.tcp_relay: TcpRelay | None = None
        # In a worker that accepts no TCP connections: a conn_id naming the worker that does (no real
        # connection: that worker sends by address), for peers this one has no connection to.
        self.tcp_acceptor: int | None = None
        self.udp_buffer = udp_buffer
        self.max_message_size = max_message_size
        self.tcp_idle_timeout = tcp_idle_timeout
        self.max_tcp_connections = max_tcp_connections
        self.max_tcp_connections_per_ip = max_tcp_connections_per_ip
        self.tcp_trusted_sources = tcp_trusted_sources
        self.tcp_max_msg_time = tcp_max_msg_time
        self.tcp_connect_timeout = tcp_connect_timeout
        self.max_write_buffer = max_write_buffer
        self.ws_options = WsOptions()    # proto_ws's parameters (the core sets them before binding)
        self.wss_options = WsOptions()   # proto_wss's
        self.wss_tls: TlsProvider | None = None   # the SSL contexts of wss listeners (proto_wss's)
        self._udp: dict[SocketInfo, UdpEndpoint] = {}
        self._tcp_servers: dict[SocketInfo, asyncio.AbstractServer] = {}
        self._ws_servers: dict[SocketInfo, asyncio.AbstractServer] = {}
        self._conns: dict[int, Connection] = {}
        self._by_remote: dict[tuple[str, str, int], Connection] = {}   # (proto, host, port)
        self._accepted_per_ip: dict[str, int] = {}   # open accepted connections by remote address
        self._connecting: dict[tuple[str, str, int], asyncio.Future[TcpConnection]] = {}
        self._conn_ids = itertools.count(conn_id_base + 1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._drop_log = RateLimitedLog(log, interval=drop_log_interval)
        self._closed = False
        self._not_read: set[SocketInfo] = set()   # adopted sockets this process only sends from

    # --- listening ------------------------------------------------------------------------------

    @property
    def sockets(self) -> list[SocketInfo]:
        """Every listening socket, in the order they were opened."""
        return [*self._udp, *self._tcp_servers, *self._ws_servers]

    @property
    def tls_handshake_timeout(self) -> float:
        return self.tls.handshake_timeout if self.tls is not None else 0.0

    @property
    def tcp_connections(self) -> int:
        return len(self._conns)

    def connections(self) -> list[Connection]:
        """The open TCP and WebSocket connections (accepted and opened), for listings such as MI
        list_tcp_conns."""
        return list(self._conns.values())

    def tls_session(self, conn_id: int | None) -> TlsSession | None:
        """The TLS session of connection `conn_id` while it is open (None: not TLS, or gone): what the
        $tls_* pseudo-variables of a message read."""
        conn = self._conns.get(conn_id) if conn_id is not None else None
        return conn.tls if conn is not None else None

    async def listen(self, proto: str, host: str, port: int) -> SocketInfo:
        """Open a listening socket (`socket=udp:127.0.0.1:5060`) and read it at once; port 0 picks a
        free one. The returned SocketInfo carries the real port. OSError when it cannot be bound."""
        info = await self.bind(proto, host, port)
        await self.start_serving()
        return info

    async def bind(self, proto: str, host: str, port: int) -> SocketInfo:
        """Bind a listening socket without reading it: what arrives waits in the kernel (a UDP socket's
        receive buffer, a TCP listen backlog) until start_serving(). The server binds first, then
        drops privileges and starts its modules, and reads only when it can serve (OpenSIPS binds
        before its workers exist too); replies and requests can be sent from a bound socket."""
        proto = proto.lower()
        host = bare_host(host)
        loop = asyncio.get_running_loop()
        if proto == UDP:
            sock = _bind_udp(host, port)
            info = SocketInfo(UDP, host, sock.getsockname()[1])
            _size_udp_buffers(sock, self.udp_buffer, info)
            endpoint = UdpEndpoint(self, sock)
            endpoint.info = info
            self._udp[info] = endpoint
        elif proto == TCP:
            holder: list[SocketInfo] = []
            server = await loop.create_server(
                lambda: TcpConnection(self, holder[0] if holder else None, outgoing=False),
                host, port, reuse_address=True, start_serving=False)
            info = SocketInfo(TCP, host, server.sockets[0].getsockname()[1])
            holder.append(info)
            self._tcp_servers[info] = server
        elif proto == TLS:
            info = await self._bind_tls(host, port)
        elif proto in WS_PROTOCOLS:
            info = await self._bind_ws(proto, host, port)
        else:
            raise ValueError(f"unsupported transport {proto!r} (udp, tcp, tls, ws and wss are)")
        log.info("listening on %s", info.name)
        return info

    async def _bind_tls(self, host: str, port: int, sock: _socket.socket | None = None) -> SocketInfo:
        """A listening TCP socket whose connections start with a TLS handshake, with the context the
        provider gives for it (OSError when there is no provider or no TLS domain for it). `sock`: an
        already bound socket to serve (adopt)."""
        if self.tls is None:
            raise OSError("tls sockets need proto_tls and tls_mgm loaded")
        holder: list[tuple[SocketInfo, ssl.SSLContext]] = []
        server = await asyncio.get_running_loop().create_server(
            lambda: TcpConnection(self, holder[0][0], outgoing=False, proto=TLS, tls_context=holder[0][1]),
            start_serving=False, **_where(host, port, sock))
        info = SocketInfo(TLS, host, server.sockets[0].getsockname()[1])
        try:
            holder.append((info, self.tls.server_context(info)))
        except LookupError as exc:
            server.close()
            raise OSError(str(exc.args[0] if exc.args else exc)) from None
        self._tcp_servers[info] = server
        return info

    async def _bind_ws(self, proto: str, host: str, port: int,
                       sock: _socket.socket | None = None) -> SocketInfo:
        """A WebSocket listener: a TCP server whose connections are WsConnections; for wss each starts
        with a TLS handshake, with the context the provider gives for the socket (OSError when there
        is no provider or no TLS domain for it). `sock`: an already bound socket to serve (adopt)."""
        holder: list[tuple[SocketInfo, ssl.SSLContext | None]] = []
        options = self.wss_options if proto == WSS else self.ws_options
        provider = self.wss_tls if proto == WSS else None
        if proto == WSS and provider is None:
            raise OSError("wss sockets need proto_wss and tls_mgm loaded")
        server = await asyncio.get_running_loop().create_server(
            lambda: WsConnection(self, holder[0][0], options, holder[0][1]), start_serving=False,
            **_where(host, port, sock))
        info = SocketInfo(proto, host, server.sockets[0].getsockname()[1])
        context = None
        if provider is not None:
            try:
                context = provider.server_context(info)
            except LookupError as exc:
                server.close()
                raise OSError(str(exc.args[0] if exc.args else exc)) from None
        holder.append((info, context))
        self._ws_servers[info] = server
        return info

    async def adopt(self, sock: _socket.socket, *, read: bool = True, proto: str | None = None) -> SocketInfo:
        """Take an already bound socket as a listening socket instead of binding one: a worker process
        adopts the UDP sockets and TCP listening sockets its supervisor bound before forking
        (docs/workers.md, section 1: every worker reads the same inherited fd). Not read until
        start_serving(), as bind(); `read=False`: a socket this worker only sends from (`use_workers K`
        names fewer readers than workers), never read here. `proto`: what a listening stream socket
        serves (tcp, tls, ws, wss; tcp when not given). ValueError for another kind of socket."""
        if sock.family not in (_socket.AF_INET, _socket.AF_INET6) or sock.type not in (
                _socket.SOCK_DGRAM, _socket.SOCK_STREAM):
            raise ValueError(f"cannot adopt socket type {sock.type!r} of family {sock.family!r} (UDP and TCP "
                             "listening sockets)")
        stream_proto = (proto or TCP).lower()
        if sock.type == _socket.SOCK_STREAM and stream_proto not in (TCP, TLS, *WS_PROTOCOLS):
            raise ValueError(f"cannot adopt a listening socket for {stream_proto!r} (tcp, tls, ws, wss)")
        sock.setblocking(False)
        host = bare_host(str(sock.getsockname()[0]))
        port = int(sock.getsockname()[1])
        if sock.type == _socket.SOCK_DGRAM:
            info = SocketInfo(UDP, host, port)
            _size_udp_buffers(sock, self.udp_buffer, info)
            endpoint = UdpEndpoint(self, sock)
            endpoint.info = info
            endpoint.shared = True
            self._udp[info] = endpoint
        elif stream_proto == TLS:
            info = await self._bind_tls(host, port, sock)
        elif stream_proto in WS_PROTOCOLS:
            info = await self._bind_ws(stream_proto, host, port, sock)
        else:
            holder: list[SocketInfo] = []
            server = await asyncio.get_running_loop().create_server(
                lambda: TcpConnection(self, holder[0] if holder else None, outgoing=False),
                sock=sock, start_serving=False)
            info = SocketInfo(TCP, host, port)
            holder.append(info)
            self._tcp_servers[info] = server
        if not read:
            self._not_read.add(info)
        log.info("adopted %s%s", info.name, "" if read else " (sending only)")
        return info

    async def start_serving(self) -> None:
        """Read every bound socket from now on (what waited in the kernel comes first)."""
        loop = asyncio.get_running_loop()
        for info, endpoint in self._udp.items():
            if info in self._not_read:
                continue
            if endpoint.transport is None:
                await loop.create_datagram_endpoint(lambda ep=endpoint: ep, sock=endpoint.sock)  # type: ignore[misc]
        for info, server in (*self._tcp_servers.items(), *self._ws_servers.items()):
            if info not in self._not_read and not server.is_serving():
                await server.start_serving()

    # --- the kernel's receive buffers ------------------------------------------------------------

    def start_queue_probes(self, interval: float = 0.1) -> None:
        """Measure, every `interval` seconds, how long datagrams wait in each UDP socket's kernel
        buffer (routescript.transport.probe); `queue_delay(source, now)` reads it."""
        for endpoint in self._udp.values():
            if endpoint.probe is None and endpoint.info is not None:
                endpoint.probe = QueueDelayProbe(endpoint.info.host, endpoint.info.port, interval=interval)
                endpoint.probe.start()

    def queue_delay(self, source: Source, now: float) -> float:
        """How long a datagram `source` sent and we read at `now` (time.monotonic()) probably waited in
        the kernel's buffer: 0 for TCP, or when no probe runs."""
        endpoint = self._udp.get(source.socket) if source.proto == UDP else None
        probe = endpoint.probe if endpoint is not None else None
        return probe.delay(now) if probe is not None else 0.0

    # --- receiving ------------------------------------------------------------------------------

    def on_datagram(self, endpoint: UdpEndpoint, data: bytes, host: str, port: int) -> None:
        assert endpoint.info is not None
        if data[:1] in _KEEPALIVE_BYTES and not data.strip(_KEEPALIVE_CHARS):
            return  # a keep-alive (CRLF, or the zero bytes some NAT helpers send)
        # The Source of a peer's datagrams is the same every time: made once (a frozen dataclass costs
        # some 10,000 instructions to make), bounded like the parse memos.
        key = (host, port)
        sources = endpoint.sources
        if key in sources:
            source = sources[key]
        else:
            if len(sources) >= MEMO_SIZE:
                sources.clear()
            source = sources[key] = Source(UDP, endpoint.info, host, port)

        def reply(out: bytes) -> None:
            endpoint.sendto(out, host, port)

        if len(data) > self.max_message_size:
            self.answer_malformed(data, 513, "Message Too Large", source, reply)
            return
        self.front(data, source, reply)

    def receive(self, data: bytes, source: Source, reply: Callable[[bytes], None]) -> None:
        """One complete message from `source`; `reply` sends raw bytes back the way it came."""
        try:
            msg = parse_message(data, max_size=self.max_message_size)
            if msg.is_request:
                # received/rport stamped, and where its replies go worked out from the same reading
                stamped, reply_to = receive_route(msg.via, source)
                if stamped is not None:
                    msg.set_top_via(stamped)
                source = Source(source.proto, source.socket, source.remote_host, source.remote_port,
                                source.conn_id, reply_to, source.tls)
        except ParseError as exc:
            self.answer_malformed(data, exc.status, exc.reason, source, reply)
            return
        try:
            self.on_message(msg, source)
        except Exception:  # the core's bug must not stop the listener
            log.exception("on_message failed for a message from %s", source)

    def answer_malformed(self, data: bytes, status: int, reason: str, source: Source,
                          reply: Callable[[bytes], None]) -> None:
        """400/513 with `reason` when the bytes still say who to answer; else drop and log (limited).

        Choice: the reply goes back to the packet's source address (the Via may be what is broken),
        on UDP from the socket it arrived on, on TCP over the same connection.
        """
        out = None
        try:
            out = reply_to_malformed(data, status, reason)
        except Exception:
            log.exception("reply_to_malformed failed")
        if out is None:
            self._drop_log.log(source.remote_host, self._now(),
                               "dropped malformed message from %s (%d bytes): %s", source, len(data), reason)
            return
        self._drop_log.log(("answered", source.remote_host), self._now(),
                           "malformed message from %s answered %d %s", source, status, reason,
                           level=logging.INFO)
        try:
            reply(out)
        except OSError as exc:
            log.info("cannot answer %s: %s", source, exc)

    # --- TCP connection table (called by TcpConnection) -------------------------------------------

    def next_conn_id(self) -> int:
        return next(self._conn_ids)

    def tune_connection(self, transport: Any) -> None:
        """Socket options of a new connection, accepted or opened (TCP, TLS, WebSocket): keepalive."""
        if self.tcp_keepalive is not None:
            self.tcp_keepalive.apply(transport)

    def admit_connection(self, conn: Connection) -> bool:
        """Whether an accepted connection may stay: within tcp_max_connections, and within
        tcp_max_connections_per_ip for its address (unless trusted). A refusal is logged, at most once
        a minute per address (a flood must not flood the log)."""
        if self._closed:
            return False
        assert conn.source is not None
        if len(self._conns) >= self.max_tcp_connections:
            self._drop_log.log(("tcp-limit",), self._now(),
                               "refusing TCP connection from %s: %d connections open (tcp_max_connections)",
                               conn.source, len(self._conns))
            return False
        per_ip = self.max_tcp_connections_per_ip
        if per_ip > 0:
            host = normalize_host(conn.source.remote_host)
            if self._accepted_per_ip.get(host, 0) >= per_ip and host not in self.tcp_trusted_sources:
                self.log_connection(conn, "tcp-per-ip", "refusing TCP connection from %s: %d connections "
                                     "from this address (tcp_max_connections_per_ip)", conn.source, per_ip)
                return False
        return True

    def log_connection(self, conn: Connection, kind: str, msg: str, *args: object) -> None:
        """A warning about `conn`, rate-limited per kind and remote address."""
        host = conn.source.remote_host if conn.source is not None else "?"
        self._drop_log.log((kind, host), self._now(), msg, *args)

    def connection_opened(self, conn: Connection) -> None:
        assert conn.source is not None
        self._conns[conn.conn_id] = conn
        host = normalize_host(conn.source.remote_host)
        self._by_remote[(conn.source.proto, host, conn.source.remote_port)] = conn
        if not conn.outgoing:
            self._accepted_per_ip[host] = self._accepted_per_ip.get(host, 0) + 1
        conn.log.debug("connection %s", "opened" if conn.outgoing else "accepted")

    def connection_closed(self, conn: Connection) -> None:
        if self._conns.get(conn.conn_id) is conn:
            del self._conns[conn.conn_id]
            if not conn.outgoing and conn.source is not None:
                host = normalize_host(conn.source.remote_host)
                left = self._accepted_per_ip.get(host, 1) - 1
                if left > 0:
                    self._accepted_per_ip[host] = left
                else:
                    self._accepted_per_ip.pop(host, None)
        if conn.source is not None:
            key = (conn.source.proto, normalize_host(conn.source.remote_host), conn.source.remote_port)
            if self._by_remote.get(key) is conn:
                del self._by_remote[key]

    def connection(self, conn_id: int) -> Connection | None:
        """The open TCP or WebSocket connection with this id, if any."""
        conn = self._conns.get(conn_id)
        return conn if conn is not None and conn.open else None

    def _find_connection(self, dest: Destination) -> Connection | None:
        if dest.conn_id is not None:
            conn = self.connection(dest.conn_id)
            if conn is not None and conn.proto == dest.proto:
                return conn
        conn = self._by_remote.get((dest.proto, normalize_host(dest.host), dest.port))
        return conn if conn is not None and conn.open else None

    async def _open_connection(self, dest: Destination) -> TcpConnection:
        key = (dest.proto, normalize_host(dest.host), dest.port)
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        if self._closed:
            raise TransportError("transport layer closed")
        if len(self._conns) + len(self._connecting) >= self.max_tcp_connections:
            raise TransportError(f"cannot connect to {dest}: max_tcp_connections reached")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TcpConnection] = loop.create_future()
        self._connecting[key] = future
        info = self.socket_for(dest)
        local_addr = None
        wildcard = ("0.0.0.0", "::")  # noqa: S104 - the addresses a socket bound to "any" reports
        if info is not None and info.host not in wildcard and is_ipv6(info.host) == is_ipv6(dest.host):
            local_addr = (info.host, 0)  # leave from the listening address, as OpenSIPS does
        try:
            tls_options = self._tls_client_options(dest)
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: TcpConnection(self, info, outgoing=True, proto=dest.proto,
                                                             **tls_options),
                                       bare_host(dest.host), dest.port, local_addr=local_addr),
                self.tcp_connect_timeout)
            if conn.ready is not None:   # TLS: its handshake ends (or fails) within tls_handshake_timeout
                await conn.ready
            future.set_result(conn)
            return conn
        except (TimeoutError, OSError, LookupError) as exc:
            if dest.proto == TLS:
                why = str(exc) if isinstance(exc, TransportError) else handshake_failure(
                    exc, self.tls_handshake_timeout)[1]
                log.warning("cannot open a TLS connection to %s: %s", dest, why)
                exc = OSError(why)
            error = TransportError(f"cannot connect to {dest}: {exc or 'timeout'}")
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise error from None
        finally:
            del self._connecting[key]

    def _tls_client_options(self, dest: Destination) -> dict[str, Any]:
        """create_connection's TLS arguments for `dest` (none over TCP): the client context the provider
        picks for it, the host name as SNI (RFC 6066 3: never an IP literal), the handshake timeout.
        LookupError when no client TLS domain matches."""
        if dest.proto != TLS:
            return {}
        if self.tls is None:
            raise TransportError(f"cannot reach {dest}: no TLS (proto_tls is not loaded)")
        name = None if is_ip(dest.host) else bare_host(dest.host)
        return {"tls_context": self.tls.client_context(dest, name), "server_hostname": name}

    # --- sending --------------------------------------------------------------------------------

    def socket_for(self, dest: Destination) -> SocketInfo | None:
        """The listening socket a message to `dest` leaves from (its `socket` when given, else the
        first one of the same transport and address family): what a Via sent-by should name."""
        if dest.socket is not None and dest.socket.proto == dest.proto:
            return dest.socket
        want_v6 = is_ipv6(dest.host) if is_ip(dest.host) else None
        listeners: Iterable[SocketInfo] = self._udp if dest.proto == UDP else (
            self._ws_servers if dest.proto in WS_PROTOCOLS else self._tcp_servers)
        for info in listeners:
            if info.proto == dest.proto and (want_v6 is None or is_ipv6(info.host) == want_v6):
                return info
        return None

    def _udp_endpoint(self, dest: Destination) -> UdpEndpoint:
        """The endpoint a datagram to `dest` leaves from. Its host is an IP address (send() and
        deliver() resolve names first), so only the address family is checked; `dest.socket` when it
        is a UDP one (every reply: the socket the request came in on), else socket_for's choice."""
        socket = dest.socket
        info = socket if socket is not None and socket.proto == UDP else self.socket_for(dest)
        endpoint = self._udp.get(info) if info is not None else None
        # Both hosts are IP literals, and of those exactly the IPv6 ones hold a ":" (RFC 4291 2.2).
        if endpoint is None or (":" in endpoint.info.host) != (":" in dest.host):  # type: ignore[union-attr]
            raise TransportError(f"no UDP socket to send to {dest}")
        return endpoint

    def send(self, data: bytes, dest: Destination) -> None:
        """Send now when possible (UDP to an IP address, TCP on an open connection); otherwise (a
        host name to resolve, a TCP connection to open) the send runs in the background and a failure
        is logged. TransportError when it cannot be sent at all."""
        if dest.proto == UDP:
            if is_ip(dest.host):
                self._udp_endpoint(dest).sendto(data, bare_host(dest.host), dest.port)
                return
        elif dest.proto in STREAM_PROTOCOLS or dest.proto in WS_PROTOCOLS:
            if self._relayed(data, dest):
                return
            conn = self._find_connection(dest)
            if conn is not None:
                conn.write(data)
                return
            if self._to_acceptor(data, dest):
                return
            if dest.proto in WS_PROTOCOLS:
                raise _no_ws_connection(dest)
        else:
            raise TransportError(f"unsupported transport {dest.proto!r}")
        self._spawn(self.deliver(data, dest), f"send to {dest}")

    def _relayed(self, data: bytes, dest: Destination, *, awaited: bool = False) -> bool:
        """True when dest.conn_id names another worker's connection and the bytes went to it."""
        relay = self.tcp_relay
        return relay is not None and dest.conn_id is not None and relay(data, dest, awaited)

    def _to_acceptor(self, data: bytes, dest: Destination, *, awaited: bool = False) -> bool:
        """A worker that accepts no TCP connection, sending to a peer it has no connection to: the
        worker that accepts them may hold one (a phone connected to us, a browser's WebSocket: reachable
        by nothing else), so the bytes go there (docs/workers.md 4: it writes on its connection to that
        address, or opens one - never a WebSocket one). True when handed over."""
        acceptor, relay = self.tcp_acceptor, self.tcp_relay
        if acceptor is None or relay is None or dest.conn_id is not None:
            return False
        return relay(data, Destination(dest.proto, dest.host, dest.port, acceptor, dest.socket), awaited)

    async def deliver(self, data: bytes, dest: Destination) -> None:
        """Send, resolving the host and opening a TCP connection when needed; TransportError when the
        message could not be handed to the network."""
        if self._closed:
            raise TransportError("transport layer closed")
        if dest.proto == UDP:
            host = bare_host(dest.host)
            if not is_ip(host):
                host = await self._resolve(host, dest.port)
                dest = Destination(UDP, host, dest.port, socket=dest.socket)
            self._udp_endpoint(dest).sendto(data, host, dest.port)
        elif dest.proto in STREAM_PROTOCOLS or dest.proto in WS_PROTOCOLS:
            if self._relayed(data, dest, awaited=True):
                return
            conn = self._find_connection(dest)
            if conn is None and self._to_acceptor(data, dest, awaited=True):
                return
            if conn is None and dest.proto in WS_PROTOCOLS:
                raise _no_ws_connection(dest)
            conn = conn or await self._open_connection(dest)
            conn.write(data)
        else:
            raise TransportError(f"unsupported transport {dest.proto!r}")

    async def _resolve(self, host: str, port: int) -> str:
        """A-record lookup for a UDP destination (no NAPTR/SRV: see the report)."""
        families = {is_ipv6(info.host) for info in self._udp}
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=_socket.SOCK_DGRAM)
        except OSError as exc:
            raise TransportError(f"cannot resolve {host}: {exc}") from None
        for family, _, _, _, addr in infos:
            if (family == _socket.AF_INET6) in families:
                return str(addr[0])
        raise TransportError(f"cannot resolve {host} to an address we have a UDP socket for")

    def send_reply(self, response: Any, source: Source, dest: Destination | None = None) -> None:
        """Send a response to the request that came from `source`, routed per RFC 3261 18.2.2 and
        RFC 3581 from the response's top Via: the same TCP connection while it is open (else a new one
        to received/sent-by), UDP to received:rport / received:sent-by-port / sent-by. `dest`: what
        reply_destination() gave, when the caller already asked (the transaction layer keeps it)."""
        if dest is None:
            dest = source.reply_to or self.reply_destination(response, source)
        data = response.to_bytes()
        if dest.proto != UDP and dest.conn_id is not None:
            conn = self.connection(dest.conn_id)
            if conn is not None:
                conn.write(data)
                return
            relay = self.tcp_relay
            if relay is not None and relay(data, dest):
                return
            dest = Destination(dest.proto, dest.host, dest.port, None, dest.socket)
        self.send(data, dest)

    @staticmethod
    def reply_destination(response: Any, source: Source) -> Destination:
        """Where `send_reply` sends `response` (RFC 3261 18.2.2, RFC 3581): the transaction layer keeps
        it with the response bytes to resend them for a retransmitted request with `send`. The Source of
        a request this layer received carries the answer already (`reply_to`, from receive_route)."""
        if source.reply_to is not None:
            return source.reply_to
        try:
            return response_destination(response.via, source)
        except ParseError:
            # Choice: a response whose Via we cannot read goes back where the request came from.
            return Destination(source.proto, source.remote_host, source.remote_port, source.conn_id,
                               source.socket)

    def destination_for(self, uri: Any, socket: SocketInfo | None = None) -> Destination:
        """Where a request for `uri` (a routescript.sip SipURI: a Contact, a Route) goes, when we can
        send it there: routing.request_destination (the one rule; the core's request sender uses it
        too), then TransportError for TLS (sips:, ;transport=tls) without proto_tls, or an unknown
        transport.

        Transport from ;transport= (UDP when absent: RFC 3263 4.1 for a numeric host and no NAPTR);
        ;maddr= overrides the host; port defaults to 5060. No NAPTR/SRV lookups. `socket` is the
        preferred local socket (used when it has the same transport).
        """
        dest = request_destination(uri, socket=socket)
        if dest.proto == TLS and self.tls is None:
            raise TransportError(f"cannot reach {uri}: TLS needs proto_tls and tls_mgm loaded")
        if dest.proto not in (UDP, TCP, TLS, WS, WSS):
            raise TransportError(f"cannot reach {uri}: transport {dest.proto!r} is not supported")
        return dest

    # --- housekeeping ---------------------------------------------------------------------------

    @staticmethod
    def _now() -> float:
        # Only the rate limit of log lines reads the clock here; monotonic works with or without a loop.
        return time.monotonic()

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.info("%s failed: %s", what, t.exception())

        task.add_done_callback(done)

    async def close(self) -> None:
        """Close every listener and connection; pending background sends are cancelled."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for server in (*self._tcp_servers.values(), *self._ws_servers.values()):
            server.close()
        for conn in list(self._conns.values()):
            conn.close()
        for endpoint in self._udp.values():
            if endpoint.probe is not None:
                endpoint.probe.close()
                endpoint.probe = None
            if endpoint.transport is not None:
                endpoint.transport.close()
            else:
                endpoint.sock.close()   # bound, never read
        for server in (*self._tcp_servers.values(), *self._ws_servers.values()):
            try:
                await asyncio.wait_for(server.wait_closed(), 1.0)
            except (TimeoutError, OSError):
                pass
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._udp.clear()
        self._tcp_servers.clear()
        self._ws_servers.clear()
        self._conns.clear()
        self._by_remote.clear()
        self._accepted_per_ip.clear()


def _no_ws_connection(dest: Destination) -> TransportError:
    """We never open a WebSocket connection (RFC 7118 clients are browsers and phones that connect to
    us): a request for a ws/wss destination with no open connection fails with this."""
    return TransportError(f"no open WebSocket connection to {dest} (routescript does not open "
                          "WebSocket connections)")


def _where(host: str, port: int, sock: _socket.socket | None) -> dict[str, Any]:
    """create_server's arguments for a listener: the given bound socket, else host and port to bind."""
    if sock is not None:
        return {"sock": sock}
    return {"host": host, "port": port, "reuse_address": True}


def _bind_udp(host: str, port: int) -> _socket.socket:
    """A non-blocking UDP socket bound to host:port (every address the name resolves to is tried, as
    asyncio's create_datagram_endpoint does). OSError when none can be bound."""
    error: OSError | None = None
    for family, kind, proto, _name, addr in _socket.getaddrinfo(host, port, type=_socket.SOCK_DGRAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError(f"cannot resolve {host}")


def _size_udp_buffers(sock: Any, size: int, info: SocketInfo) -> None:
    """Ask for `size`-byte receive and send buffers (OpenSIPS's maxbuffer). A NOTIFY fan-out sends
    hundreds of requests in one go and their 200s come back together: with the kernel's default (about
    200 KB, which loopback datagrams fill at a hundred or so) the answers were dropped and every NOTIFY
    retransmitted. The kernel caps the size at net.core.rmem_max / wmem_max without an error."""
    if size <= 0 or sock is None:
        return
    for opt in (_socket.SO_RCVBUF, _socket.SO_SNDBUF):
        try:
            sock.setsockopt(_socket.SOL_SOCKET, opt, size)
        except OSError as exc:
            log.warning("%s: cannot set the UDP buffer to %d bytes: %s", info.name, size, exc)
            return
    log.debug("%s: UDP buffers %d/%d bytes (asked %d)", info.name, sock.getsockopt(_socket.SOL_SOCKET,
              _socket.SO_RCVBUF), sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF), size)
