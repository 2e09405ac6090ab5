"""Splitting a SIP byte stream (TCP) into messages - sans-IO, bounded.

RFC 3261 18.3: "In the case of stream-oriented transports such as TCP, the Content-Length header
field indicates the size of the body. All SIP implementations MUST use Content-Length with
stream-oriented transports."  The framing itself (Content-Length, size bound) is
routescript.sip.frame_length; this class adds what a connection needs around it:
- RFC 5626 3.5.1 keep-alives: a double CRLF "ping" between messages is answered with a CRLF "pong";
  RFC 3261 7.5: other CRLFs before a start line are ignored.
- a bounded buffer, and no quadratic rescans for a peer that trickles bytes: the end of the header
  block is searched incrementally and frame_length runs once per message head.
"""

from __future__ import annotations

from dataclasses import dataclass

from routescript.sip import ParseError, frame_length
from routescript.transport.errors import FramingError

PING = b"\r\n\r\n"
PONG = b"\r\n"


@dataclass(frozen=True, slots=True)
class Ping:
    """The peer sent a double-CRLF keep-alive; answer with PONG."""


class StreamFramer:
    """Feed it stream bytes, get back complete messages (bytes) and Pings, in order.

    The buffer never grows past `max_message_size` plus one read: a header block that does not end
    within it, or a Content-Length that would pass it, is a FramingError with status 513; a message
    without Content-Length (or a bad one) a FramingError with status 400. After a FramingError the
    stream is out of sync: the framer refuses more input and the caller closes the connection.
    """

    def __init__(self, max_message_size: int = 65536) -> None:
        self.max_message_size = max_message_size
        self._buf = bytearray()
        self._scan_from = 0            # where the search for the end of the head resumes
        self._need: int | None = None  # total length of the current message, once its head is read
        self._broken = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def in_message(self) -> bool:
        """True while part of a message is held (line ends that may become a keep-alive ping are not
        part of one): the connection's tcp_max_msg_time runs while this is true."""
        buf = self._buf
        return bool(buf) and (self._need is not None or buf[0] not in b"\r\n")

    def feed(self, data: bytes) -> list[bytes | Ping]:
        if self._broken:
            raise FramingError("stream out of sync")
        self._buf += data
        out: list[bytes | Ping] = []
        try:
            while (item := self._next()) is not None:
                out.append(item)
        except FramingError:
            self._broken = True
            raise
        return out

    def _next(self) -> bytes | Ping | None:
        buf = self._buf
        if self._need is None:
            # Between messages: keep-alive pings and stray line ends.
            while buf and buf[0] in b"\r\n":
                if buf[:4] == PING:
                    del buf[:4]
                    return Ping()
                if PING.startswith(bytes(buf)):
                    return None  # may still become a ping
                del buf[: 2 if buf[:2] == b"\r\n" else 1]
            body_start = self._find_body_start() if buf else -1
            if body_start < 0:
                if len(buf) > self.max_message_size:
                    raise FramingError("Message Too Large", 513, bytes(buf[: self.max_message_size]))
                return None
            head = bytes(buf[:body_start])
            try:
                # frame_length reads Content-Length and checks the bounds. The head is padded with
                # max_message_size zero bytes so that it answers with the total even before the
                # body is in (it answers None for an incomplete message); a bigger total is a 513.
                total = frame_length(head + bytes(self.max_message_size), max_size=self.max_message_size)
            except ParseError as exc:
                raise FramingError(exc.reason, exc.status, head) from None
            if total is None:  # cannot happen with the padding; treat as out of sync
                raise FramingError("Message Too Large", 513, head)
            self._need = total
        if len(buf) < self._need:
            return None
        message = bytes(buf[: self._need])
        del buf[: self._need]
        self._need = None
        self._scan_from = 0
        return message

    def _find_body_start(self) -> int:
        """Offset just past the empty line ending the head (CRLF, or bare LF as routescript.sip
        accepts it), or -1. Resumes where the last search stopped."""
        buf = self._buf
        start = max(0, self._scan_from - 2)
        i = buf.find(b"\n\r\n", start)
        j = buf.find(b"\n\n", start, i + 1 if i >= 0 else len(buf))
        if j >= 0:
            return j + 2
        if i >= 0:
            return i + 3
        self._scan_from = len(buf)
        return -1
