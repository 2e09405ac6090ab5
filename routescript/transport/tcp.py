"""One TCP or TLS connection (accepted or opened by us): framing, keep-alives, idle timeout, a time limit
for each message to arrive whole, bounded writes. An accepted TLS connection runs its handshake first
(within tls_handshake_timeout) and is a connection of the layer only once it succeeded, either side:
routescript.transport.tls.TlsStream does the TLS on the connection's bytes."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, Protocol, cast

from routescript.transport.address import TCP, SocketInfo, Source, host_for_uri
from routescript.transport.errors import FramingError, TransportError
from routescript.transport.framing import PONG, Ping, StreamFramer
from routescript.transport.tls import TlsSession, TlsStream, handshake_failure

log = logging.getLogger("routescript.transport")

# After answering a message that broke the stream: read and drop what the peer still sends, this much
# at most for this long, so the reply is not lost to a reset (close_after_reply).
LINGER_BYTES = 1 << 20
LINGER_SECONDS = 2.0


class ConnectionOwner(Protocol):
    """What a connection needs from the transport layer that owns it (TransportLayer): its bounds, an
    id, admission and the table of live connections, and where its messages go."""

    max_message_size: int
    max_write_buffer: int
    tcp_idle_timeout: float
    tcp_max_msg_time: float

    @property
    def tls_handshake_timeout(self) -> float: ...

    def next_conn_id(self) -> int: ...
    def admit_connection(self, conn: TcpConnection) -> bool: ...
    def tune_connection(self, transport: Any) -> None: ...
    def connection_opened(self, conn: TcpConnection) -> None: ...
    def connection_closed(self, conn: TcpConnection) -> None: ...
    def front(self, data: bytes, source: Source, reply: Callable[[bytes], None]) -> None: ...
    def answer_malformed(self, data: bytes, status: int, reason: str, source: Source,
                         reply: Callable[[bytes], None]) -> None: ...
    def log_connection(self, conn: TcpConnection, kind: str, msg: str, *args: object) -> None: ...


class _ConnLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line with the connection (aioquic's QuicConnectionAdapter idea)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra
        return f"[{extra['proto']}#{extra['conn_id']} {extra['peer']}] {msg}", kwargs  # type: ignore[index]


class TcpConnection(asyncio.Protocol):
    """`source` says where its messages come from (with `conn_id`); `outgoing` when we opened it.
    `proto` is "tcp" or "tls"; `tls_accept`: the context an accepted TLS connection's handshake uses;
    `tls` the established session's facts (None over TCP)."""

    def __init__(self, layer: ConnectionOwner, info: SocketInfo | None, *, outgoing: bool, proto: str = TCP,
                 tls_context: ssl.SSLContext | None = None, server_hostname: str | None = None) -> None:
        self.layer = layer
        self.info = info
        self.outgoing = outgoing
        self.proto = proto
        self.tls_context = tls_context
        self.server_hostname = server_hostname
        self.tls: TlsSession | None = None          # the established session's facts
        self._tls_stream: TlsStream | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        # an outgoing TLS connection: done when its handshake is (TransportError when it failed)
        self.ready: asyncio.Future[None] | None = None
        if tls_context is not None and outgoing:
            self.ready = asyncio.get_running_loop().create_future()
        self.conn_id = 0
        self.source: Source | None = None
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer(layer.max_message_size)
        self.last_activity = 0.0
        self.closed = False
        self._idle: asyncio.TimerHandle | None = None
        # tcp_max_msg_time: when the first bytes of the message being read arrived (None: between messages)
        self._message_since: float | None = None
        self._message_timer: asyncio.TimerHandle | None = None
        self._draining = 0   # bytes still to discard after a framing error's reply (lingering close)
        self.log: logging.LoggerAdapter = _ConnLog(  # type: ignore[type-arg]
            log, {"proto": proto, "conn_id": "?", "peer": "?"})

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # a stream protocol gets a full Transport
        self.transport = stream
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.conn_id = self.layer.next_conn_id()
        self.log = _ConnLog(log, {"proto": self.proto, "conn_id": self.conn_id,
                                  "peer": f"{host_for_uri(peer[0])}:{peer[1]}"})
        info = self.info or SocketInfo(self.proto, local[0], local[1])
        self.source = Source(self.proto, info, peer[0], peer[1], self.conn_id)
        self.layer.tune_connection(stream)
        if not self.outgoing and not self.layer.admit_connection(self):
            self.closed = True
            stream.abort()
            return
        if self.tls_context is not None:
            # TLS: the handshake first; a connection of the layer once it succeeded (_established)
            self._tls_stream = TlsStream(self.tls_context, server_side=not self.outgoing,
                                         server_hostname=self.server_hostname)
            self._flush_tls()
            timeout = self.layer.tls_handshake_timeout
            if timeout > 0:
                self._handshake_timer = asyncio.get_running_loop().call_later(timeout, self._handshake_late)
            return
        self._established()

    def _established(self) -> None:
        """The connection carries SIP from now on: in the layer's table, its idle timer running."""
        tls = self._tls_stream
        if tls is not None:
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()
                self._handshake_timer = None
            self.tls = TlsSession.of(tls.ssl)
            peer = ("verified" if self.tls.verified else "not verified") if self.tls.peer_cert else "none"
            self.log.debug("%s, %s, peer certificate %s", self.tls.version, self.tls.cipher, peer)
        self.layer.connection_opened(self)
        self.touch()
        self._arm_idle(self.layer.tcp_idle_timeout)
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(None)

    # --- TLS --------------------------------------------------------------------------------------

    def _decrypt(self, data: bytes) -> bytes | None:
        """The plaintext in `data` (b"" while the handshake runs); None when TLS failed (closed)."""
        tls = self._tls_stream
        assert tls is not None
        was_established = tls.established
        try:
            plain = tls.receive(data)
        except ssl.SSLError as exc:
            self._flush_tls()   # the alert that tells the peer why
            self._tls_failed(exc)
            return None
        self._flush_tls()
        if not was_established and tls.established:
            self._established()
        if tls.closed:   # close_notify: the peer is done
            self.close()
        return plain

    def _flush_tls(self) -> None:
        out = self._tls_stream.pending() if self._tls_stream is not None else b""
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def _tls_failed(self, exc: BaseException) -> None:
        """A handshake (or, later, a record) that failed: one log line saying why, and the connection
        closed. Ours to open: the error goes to whoever waits on `ready` (the layer logs it)."""
        established = self._tls_stream is not None and self._tls_stream.established
        kind, why = handshake_failure(exc, self.layer.tls_handshake_timeout)
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(TransportError(why))
        elif established:
            self.log.info("closing: %s", why)
        else:
            self.layer.log_connection(self, kind, "closing TLS connection from %s: %s", self.source, why)
        self.closed = True
        self._cancel_timers()
        if self.transport is not None:
            self.transport.close()   # after the alert written above

    def _handshake_late(self) -> None:
        self._handshake_timer = None
        if not self.closed and self._tls_stream is not None and not self._tls_stream.established:
            self._tls_failed(TimeoutError())

    def data_received(self, data: bytes) -> None:
        if self._draining:
            self._drain(len(data))
            return
        if self.closed or self.source is None:
            return
        if self._tls_stream is not None:
            plain = self._decrypt(data)
            if not plain:
                return
            data = plain
        self.touch()
        try:
            try:
                items = self.framer.feed(data)
            except FramingError as exc:
                # The stream is out of sync: answer if the broken message says enough, then close.
                self.log.debug("closing: %s", exc.reason)
                self.layer.answer_malformed(exc.head, exc.status, exc.reason, self.source, self._write_raw)
                self.close_after_reply()
                return
            for item in items:
                if self.closed:
                    break
                if isinstance(item, Ping):
                    self._write_raw(PONG)  # RFC 5626 3.5.1
                else:
                    self.layer.front(item, self.source, self._write_raw)
            self._time_message(bool(items))
        except Exception:  # nothing may stop the connection's reader
            self.log.exception("error handling received data")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timers()
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(TransportError(f"connection closed during the TLS handshake ({exc})"
                                                    if exc else "connection closed during the TLS handshake"))
        self.layer.connection_closed(self)
        if exc is not None:
            self.log.debug("connection lost: %s", exc)

    # --- writing and closing --------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return (not self.closed and self.transport is not None and not self.transport.is_closing()
                and (self._tls_stream is None or self._tls_stream.established))

    def write(self, data: bytes) -> None:
        """Send on this connection; TransportError when it is closed or the peer does not read."""
        if not self.open:
            raise TransportError(f"{self.proto} connection #{self.conn_id} is closed")
        assert self.transport is not None
        # Bound what we buffer for a peer that does not read (STYLE 7).
        if self.transport.get_write_buffer_size() + len(data) > self.layer.max_write_buffer:
            self.log.warning("closing: peer does not read (write buffer full)")
            self.close()
            raise TransportError(f"{self.proto} connection #{self.conn_id}: write buffer full")
        if self._tls_stream is not None:
            self._tls_stream.send(data)
            data = self._tls_stream.pending()
        self.transport.write(data)
        self.touch()

    def _write_raw(self, data: bytes) -> None:
        try:
            self.write(data)
        except TransportError as exc:
            self.log.debug("cannot answer: %s", exc)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_timers()
        if self.transport is not None:
            self.transport.close()

    def close_after_reply(self) -> None:
        """A lingering close: our reply (a 513 for an oversize message, a 400) is sent and the sending
        side shut (FIN), then what the peer still sends is read and discarded, up to LINGER_BYTES or
        LINGER_SECONDS, before the socket closes. Why: closing a socket with unread data makes the
        kernel send RST, and the peer's kernel then drops our reply unread (seen: a 250 KB REGISTER
        answered 513 got no answer at all)."""
        transport = self.transport
        if self.closed or transport is None or not transport.can_write_eof():
            self.close()
            return
        self.closed = True
        self._cancel_timers()
        self._draining = LINGER_BYTES
        transport.write_eof()
        self._idle = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)

    def _drain(self, size: int) -> None:
        self._draining = max(0, self._draining - size)
        if not self._draining and self.transport is not None:
            self.transport.close()   # the peer sent more than we wait for: RST it is

    def _cancel_timers(self) -> None:
        for timer in (self._idle, self._message_timer, self._handshake_timer):
            if timer is not None:
                timer.cancel()
        self._idle = self._message_timer = self._handshake_timer = None

    # --- idle timeout ---------------------------------------------------------------------------

    def touch(self) -> None:
        self.last_activity = asyncio.get_running_loop().time() if self.transport else 0.0

    def _arm_idle(self, delay: float) -> None:
        if delay > 0:
            self._idle = asyncio.get_running_loop().call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        # Re-armed lazily: activity only moves last_activity, the handle is rescheduled here.
        self._idle = None
        if self.closed:
            return
        timeout = self.layer.tcp_idle_timeout
        idle_for = asyncio.get_running_loop().time() - self.last_activity
        if idle_for >= timeout:
            self.log.debug("closing: idle for %.1f s", idle_for)
            self.close()
        else:
            self._arm_idle(timeout - idle_for)

    # --- tcp_max_msg_time -------------------------------------------------------------------------

    def _time_message(self, completed: bool) -> None:
        """After a read: a message begun and not complete must be whole within tcp_max_msg_time (OpenSIPS's
        guard against a peer trickling bytes to hold a connection and its buffer; the idle timeout never
        fires while bytes keep coming). `completed`: the read ended at least one message, so the part
        held now (if any) is a new one."""
        if not self.framer.in_message:
            self._message_since = None
        elif completed or self._message_since is None:
            self._message_since = self.last_activity
            if self._message_timer is None:
                self._arm_message_timer(self.layer.tcp_max_msg_time)

    def _arm_message_timer(self, delay: float) -> None:
        if delay > 0:
            self._message_timer = asyncio.get_running_loop().call_later(delay, self._check_message_time)

    def _check_message_time(self) -> None:
        # Re-armed lazily, as the idle timer: a message completing only clears _message_since.
        self._message_timer = None
        if self.closed or self._message_since is None:
            return
        limit = self.layer.tcp_max_msg_time
        waited = asyncio.get_running_loop().time() - self._message_since
        if waited < limit:
            self._arm_message_timer(limit - waited)
            return
        self.layer.log_connection(
            self, "tcp-msg-time", "closing TCP connection from %s: a message still incomplete after %.1f s "
            "(%d bytes; tcp_max_msg_time %g s)", self.source, waited, self.framer.buffered, limit)
        self.close()
