"""One accepted WebSocket connection (socket=ws:IP:PORT): the asyncio adapter around a WsSession.

A WebSocket connection is a SIP flow like a TCP connection: it has a connection id, sits in the
transport layer's connection table (tcp_max_connections and tcp_max_connections_per_ip count it, as
OpenSIPS's WS connections live in its TCP table), and replies, NOTIFYs and relayed requests reach
the peer over it. We only accept WebSocket connections: a request for a ws destination with no
open connection fails (a browser cannot be connected to; OpenSIPS's WS client side is not built).

Time bounds: the handshake must be read whole within `handshake_timeout` of its first bytes
(OpenSIPS's ws_handshake_timeout, a read timeout there). A connection that sends nothing at all is
the idle timeout's, as a silent TCP connection: a timer armed at the accept could fire, on an event
loop that runs timers first (uvloop), before the read of a handshake already waiting in the socket.
A connection with no traffic for the layer's tcp_idle_timeout is closed with close code 1001; a peer
that leaves our writes unread for `send_timeout` (OpenSIPS's ws_send_timeout) once the write buffer
is over its high-water mark is cut off, as is one over max_write_buffer.

For wss (a later step), the listener is the same with an ssl.SSLContext given to create_server: this
class sees decrypted bytes only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from routescript.transport.address import WS, SocketInfo, Source, host_for_uri
from routescript.transport.errors import TransportError
from routescript.transport.tls import TlsSession
from routescript.transport.wssession import WsPolicy, WsSession

log = logging.getLogger("routescript.transport")


@dataclass(frozen=True, slots=True)
class WsOptions:
    """The proto_ws module's settings for every ws listener (defaults: OpenSIPS's)."""

    max_msg_chunks: int = 4
    require_origin: bool = True
    allowed_origins: tuple[str, ...] = ()
    handshake_timeout: float = 0.1   # seconds (ws_handshake_timeout, 100 ms)
    send_timeout: float = 0.1        # seconds (ws_send_timeout, 100 ms)

    def policy(self, max_message_size: int) -> WsPolicy:
        return WsPolicy(max_message_size, self.max_msg_chunks, self.require_origin, self.allowed_origins)


class WsOwner(Protocol):
    """What a WebSocket connection needs from the transport layer (TransportLayer), as TcpConnection's
    ConnectionOwner."""

    max_message_size: int
    max_write_buffer: int
    tcp_idle_timeout: float

    def next_conn_id(self) -> int: ...
    def admit_connection(self, conn: Any) -> bool: ...
    def tune_connection(self, transport: Any) -> None: ...
    def connection_opened(self, conn: Any) -> None: ...
    def connection_closed(self, conn: Any) -> None: ...
    def front(self, data: bytes, source: Source, reply: Callable[[bytes], None]) -> None: ...
    def log_connection(self, conn: Any, kind: str, msg: str, *args: object) -> None: ...


class _WsLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[ws#{self.extra['conn_id']} {self.extra['peer']}] {msg}", kwargs  # type: ignore[index]


class WsConnection(asyncio.Protocol):
    """An accepted WebSocket connection on listener `info`. The attributes the layer's connection
    table reads are TcpConnection's: conn_id, proto, tls, source, info, outgoing, closed, open, write,
    close."""

    outgoing = False
    proto = WS
    tls: TlsSession | None = None   # ws only (wss would carry its session here)

    def __init__(self, layer: WsOwner, info: SocketInfo, options: WsOptions) -> None:
        self.layer = layer
        self.info = info
        self.options = options
        self.session = WsSession(options.policy(layer.max_message_size))
        self.conn_id = 0
        self.source: Source | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.last_activity = 0.0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.log: logging.LoggerAdapter = _WsLog(log, {"conn_id": "?", "peer": "?"})  # type: ignore[type-arg]

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)
        self.transport = stream
        peer = transport.get_extra_info("peername")
        self.conn_id = self.layer.next_conn_id()
        self.log = _WsLog(log, {"conn_id": self.conn_id, "peer": f"{host_for_uri(peer[0])}:{peer[1]}"})
        self.source = Source(WS, self.info, peer[0], peer[1], self.conn_id)
        self.layer.tune_connection(stream)
        if not self.layer.admit_connection(self):
            self.closed = True
            stream.abort()
            return
        # high-water mark for ws_send_timeout: a quarter of what we buffer at most for one peer
        stream.set_write_buffer_limits(high=max(1, self.layer.max_write_buffer // 4))
        self.layer.connection_opened(self)
        self._touch()
        self._arm("idle", self.layer.tcp_idle_timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self.closed or self.source is None:
            return
        self._touch()
        try:
            if self.session.handshaking and "handshake" not in self._timers:
                self._arm("handshake", self.options.handshake_timeout, self._handshake_late)
            messages = self.session.feed(data)
            if not self.session.handshaking:
                self._disarm("handshake")
            for message in messages:
                if self.closed:
                    break
                self.layer.front(message, self.source, self._write_raw)
        except Exception:  # nothing may stop the connection's reader
            self.log.exception("error handling received data")
        self._flush()

    def eof_received(self) -> bool:
        self.session.feed_eof()
        self._flush()
        return False   # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timers()
        self.layer.connection_closed(self)
        if exc is not None:
            self.log.debug("connection lost: %s", exc)

    def pause_writing(self) -> None:
        self._arm("send", self.options.send_timeout, self._send_late)

    def resume_writing(self) -> None:
        self._disarm("send")

    # --- writing and closing --------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return (not self.closed and self.session.open and self.transport is not None
                and not self.transport.is_closing())

    def write(self, data: bytes) -> None:
        """Send one SIP message on this connection; TransportError when it is closed or not open yet
        (handshake), or the peer does not read."""
        if not self.open:
            raise TransportError(f"ws connection #{self.conn_id} is not open")
        assert self.transport is not None
        if self.transport.get_write_buffer_size() + len(data) > self.layer.max_write_buffer:
            self.log.warning("closing: peer does not read (write buffer full)")
            self.transport.abort()
            raise TransportError(f"ws connection #{self.conn_id}: write buffer full")
        self.session.send(data)
        self._flush()
        self._touch()

    def _write_raw(self, data: bytes) -> None:
        try:
            self.write(data)
        except TransportError as exc:
            self.log.debug("cannot answer: %s", exc)

    def close(self) -> None:
        """The closing handshake (close code 1001, going away), then the TCP close."""
        if self.closed:
            return
        self.session.close()
        self._flush()

    def _flush(self) -> None:
        """Write what the session has to send; close once it says the connection is done."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        out = self.session.outgoing()
        if out:
            transport.write(out)
        if self.session.eof and not self.closed:
            if self.session.problem:
                self.layer.log_connection(self, "ws-refused", "closing WebSocket connection from %s: %s",
                                          self.source, self.session.problem)
            self.closed = True
            self._cancel_timers()
            transport.close()   # after the buffered bytes are written

    # --- timers ---------------------------------------------------------------------------------

    def _touch(self) -> None:
        self.last_activity = asyncio.get_running_loop().time()

    def _arm(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self._disarm(name)
        if delay > 0:
            self._timers[name] = asyncio.get_running_loop().call_later(delay, callback)

    def _disarm(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _cancel_timers(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _handshake_late(self) -> None:
        self._timers.pop("handshake", None)
        if self.session.handshaking and self.transport is not None:
            self.layer.log_connection(self, "ws-handshake", "closing WebSocket connection from %s: no "
                                      "handshake within %g s (ws_handshake_timeout)", self.source,
                                      self.options.handshake_timeout)
            self._abort()

    def _send_late(self) -> None:
        self._timers.pop("send", None)
        self.layer.log_connection(self, "ws-send", "closing WebSocket connection from %s: it left our "
                                  "writes unread for %g s (ws_send_timeout)", self.source,
                                  self.options.send_timeout)
        self._abort()

    def _check_idle(self) -> None:
        # Re-armed lazily: activity only moves last_activity.
        self._timers.pop("idle", None)
        if self.closed:
            return
        timeout = self.layer.tcp_idle_timeout
        idle_for = asyncio.get_running_loop().time() - self.last_activity
        if idle_for < timeout:
            self._arm("idle", timeout - idle_for, self._check_idle)
            return
        self.log.debug("closing: idle for %.1f s", idle_for)
        self.close()

    def _abort(self) -> None:
        self.closed = True
        self._cancel_timers()
        if self.transport is not None:
            self.transport.abort()
