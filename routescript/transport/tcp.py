"""One TCP or TLS connection (accepted or opened by us): framing, keep-alives, idle timeout, a time limit
for each message to arrive whole, bounded writes. An accepted TLS connection runs its handshake first
(within tls_handshake_timeout) and is a connection of the layer only once it succeeded; one we open is
handed over after its handshake by asyncio."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from routescript.transport.address import TCP, SocketInfo, Source, host_for_uri
from routescript.transport.errors import FramingError, TransportError
from routescript.transport.framing import PONG, Ping, StreamFramer
from routescript.transport.tls import TlsSession, handshake_failure

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
    tls_handshake_timeout: float

    def next_conn_id(self) -> int: ...
    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None: ...
    def admit_connection(self, conn: TcpConnection) -> bool: ...
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
                 tls_accept: ssl.SSLContext | None = None) -> None:
        self.layer = layer
        self.info = info
        self.outgoing = outgoing
        self.proto = proto
        self.tls_accept = tls_accept
        self.tls: TlsSession | None = None
        self._early: list[bytes] = []   # what arrived between the handshake's end and _established
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
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.conn_id = self.layer.next_conn_id()
        self.log = _ConnLog(log, {"proto": self.proto, "conn_id": self.conn_id,
                                  "peer": f"{host_for_uri(peer[0])}:{peer[1]}"})
        info = self.info or SocketInfo(self.proto, local[0], local[1])
        self.source = Source(self.proto, info, peer[0], peer[1], self.conn_id)
        if not self.outgoing and not self.layer.admit_connection(self):
            self.closed = True
            stream.abort()
            return
        if self.tls_accept is not None:
            # Nothing is read until the handshake takes the stream over (start_tls resumes reading).
            stream.pause_reading()
            self.layer.spawn(self._accept_tls(stream, self.tls_accept), f"TLS handshake of {self.source}")
            return
        self._established(stream)

    def _established(self, stream: asyncio.Transport) -> None:
        """The connection carries SIP from now on: in the layer's table, its idle timer running."""
        self.transport = stream
        tls = stream.get_extra_info("ssl_object")
        if tls is not None:
            self.tls = TlsSession.of(tls)
            self.log.debug("%s, %s, peer certificate %s", self.tls.version, self.tls.cipher,
                           "verified" if self.tls.verified else "present (not verified)"
                           if self.tls.peer_cert else "none")
        self.layer.connection_opened(self)
        self.touch()
        self._arm_idle(self.layer.tcp_idle_timeout)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    async def _accept_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        """The server side of the handshake, within tls_handshake_timeout. A failure (no TLS at all, a
        certificate refused, a stalled peer) closes the connection and says why in one log line."""
        timeout = self.layer.tls_handshake_timeout
        try:
            stream = await asyncio.get_running_loop().start_tls(
                raw, self, context, server_side=True, ssl_handshake_timeout=timeout)
        except asyncio.CancelledError:
            raw.abort()
            raise
        except (OSError, ValueError) as exc:   # ssl.SSLError is an OSError; start_tls closed the stream
            self.closed = True
            raw.abort()
            kind, why = handshake_failure(exc, timeout)
            self.layer.log_connection(self, kind, "closing TLS connection from %s: %s", self.source, why)
            return
        if stream is None or self.closed:   # the peer went away as the handshake ended
            self.closed = True
            raw.abort()
            return
        self._established(stream)

    def data_received(self, data: bytes) -> None:
        if self._draining:
            self._drain(len(data))
            return
        if self.closed or self.source is None:
            return
        if self.transport is None:
            # TLS: the first records decrypted as the handshake ends, before start_tls returns the stream
            self._early.append(data)
            if sum(map(len, self._early)) > 2 * self.layer.max_message_size:   # bounded (STYLE 7)
                self.log.warning("closing: %d bytes before the handshake was seen to end",
                                 sum(map(len, self._early)))
                self.close()
            return
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
        self.layer.connection_closed(self)
        if exc is not None:
            self.log.debug("connection lost: %s", exc)

    # --- writing and closing --------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

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
        for timer in (self._idle, self._message_timer):
            if timer is not None:
                timer.cancel()
        self._idle = self._message_timer = None

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
