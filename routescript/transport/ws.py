"""One accepted WebSocket connection (socket=ws:IP:PORT, socket=wss:IP:PORT): the asyncio adapter around
a WsSession, with TLS underneath for wss.

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

wss: the listener gives each connection the SSL context tls_mgm has for the socket, and the
connection runs TLS on its bytes with a TlsStream (sans-IO, as proto_tls's connections: every failed
handshake is ours to log, which asyncio's own TLS transport would drop silently). The TLS handshake
must end within `tls_handshake_timeout` of the accept (proto_wss's wss_tls_handshake_timeout, as
proto_tls's timer); the WebSocket session above sees plaintext only.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from routescript.transport.address import SocketInfo, Source, host_for_uri
from routescript.transport.errors import TransportError
from routescript.transport.tls import TlsSession, TlsStream, handshake_failure
from routescript.transport.wssession import WsPolicy, WsSession

log = logging.getLogger("routescript.transport")


@dataclass(frozen=True, slots=True)
class WsOptions:
    """The proto_ws (proto_wss) module's settings for every ws (wss) listener (defaults: OpenSIPS's)."""

    max_msg_chunks: int = 4
    require_origin: bool = True
    allowed_origins: tuple[str, ...] = ()
    handshake_timeout: float = 0.1   # seconds (ws_handshake_timeout, 100 ms)
    send_timeout: float = 0.1        # seconds (ws_send_timeout, 100 ms)
    tls_handshake_timeout: float = 0.1   # seconds, wss only (proto_wss's wss_tls_handshake_timeout)

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
        extra = self.extra
        return f"[{extra['proto']}#{extra['conn_id']} {extra['peer']}] {msg}", kwargs  # type: ignore[index]


class WsConnection(asyncio.Protocol):
    """An accepted WebSocket connection on listener `info` (ws, or wss with `tls_context`: the SSL
    context its TLS handshake starts with). The attributes the layer's connection table reads are
    TcpConnection's: conn_id, proto, tls, source, info, outgoing, closed, open, write, close."""

    outgoing = False

    def __init__(self, layer: WsOwner, info: SocketInfo, options: WsOptions,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.layer = layer
        self.info = info
        self.proto = info.proto   # ws or wss
        self.options = options
        self.tls_context = tls_context
        self.tls: TlsSession | None = None   # wss: the established session's facts
        self._tls_stream: TlsStream | None = None
        self.session = WsSession(options.policy(layer.max_message_size))
        self.conn_id = 0
        self.source: Source | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.last_activity = 0.0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.log: logging.LoggerAdapter = _WsLog(  # type: ignore[type-arg]
            log, {"proto": self.proto, "conn_id": "?", "peer": "?"})

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)
        self.transport = stream
        peer = transport.get_extra_info("peername")
        self.conn_id = self.layer.next_conn_id()
        self.log = _WsLog(log, {"proto": self.proto, "conn_id": self.conn_id,
                                "peer": f"{host_for_uri(peer[0])}:{peer[1]}"})
        self.source = Source(self.proto, self.info, peer[0], peer[1], self.conn_id)
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
        if self.tls_context is not None:
            self._tls_stream = TlsStream(self.tls_context, server_side=True)
            self._arm("tls", self.options.tls_handshake_timeout, self._tls_late)

    def data_received(self, data: bytes) -> None:
        if self.closed or self.source is None:
            return
        self._touch()
        if self._tls_stream is not None:
            plain = self._decrypt(data)
            if not plain:
                return
            data = plain
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

    # --- TLS (wss) ------------------------------------------------------------------------------

    def _decrypt(self, data: bytes) -> bytes | None:
        """The plaintext in `data` (b"" while the handshake runs); None when TLS failed (closed)."""
        tls = self._tls_stream
        assert tls is not None and self.transport is not None
        was_established = tls.established
        try:
            plain = tls.receive(data)
        except ssl.SSLError as exc:
            self.transport.write(tls.pending())   # the alert that tells the peer why
            self._tls_failed(exc)
            return None
        self.transport.write(tls.pending())
        if not was_established and tls.established:
            self._disarm("tls")
            self.tls = TlsSession.of(tls.ssl)
            self.log.debug("%s, %s", self.tls.version, self.tls.cipher)
        if tls.closed:   # close_notify: the peer is done
            self.session.feed_eof()
            self._flush()
        return plain

    def _tls_failed(self, exc: BaseException) -> None:
        """One log line saying why TLS failed (rate-limited per address before the session is up: a
        scanner must not flood the log), and the connection closed after the alert."""
        established = self._tls_stream is not None and self._tls_stream.established
        _kind, why = handshake_failure(exc, self.options.tls_handshake_timeout)
        if established:
            self.log.info("closing: %s", why)
        else:
            self.layer.log_connection(self, _kind, "closing WSS connection from %s: %s", self.source, why)
        self.closed = True
        self._cancel_timers()
        if self.transport is not None:
            self.transport.close()

    def _tls_late(self) -> None:
        self._timers.pop("tls", None)
        if not self.closed and self._tls_stream is not None and not self._tls_stream.established:
            self._tls_failed(TimeoutError())

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
            raise TransportError(f"{self.proto} connection #{self.conn_id} is not open")
        assert self.transport is not None
        if self.transport.get_write_buffer_size() + len(data) > self.layer.max_write_buffer:
            self.log.warning("closing: peer does not read (write buffer full)")
            self.transport.abort()
            raise TransportError(f"{self.proto} connection #{self.conn_id}: write buffer full")
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
        tls = self._tls_stream
        if out and tls is not None:
            if not tls.established or tls.closed:   # nothing can be written before or after the session
                out = b""
            else:
                tls.send(out)
                out = tls.pending()
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
