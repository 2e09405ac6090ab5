"""SIP over WebSocket on one connection (RFC 7118) - sans-IO, bounded.

The WebSocket protocol itself (RFC 6455: the HTTP/1.1 upgrade, frame parsing, masking, ping/pong,
the closing handshake) is the `websockets` library's sans-IO ServerProtocol; this class adds what SIP
needs around it, as OpenSIPS's proto_ws does:
- the handshake (RFC 7118 4): the `sip` subprotocol is required ("The WebSocket server [...] MUST
  include the value 'sip' in the Sec-WebSocket-Protocol header" of its 101; a client offering no `sip`
  gets 400, as OpenSIPS answers); a Host header is required (RFC 6455 4.1 item 4; OpenSIPS refuses
  without one); an Origin header when `require_origin` (OpenSIPS's `require_origin`, default on), and
  one of `allowed_origins` when that list is not empty (our own: RFC 6455 10.2, cross-site
  WebSocket hijacking). Any other HTTP request gets a plain HTTP error and the connection closes.
- RFC 7118 5.1: "Each SIP message MUST be carried within a single WebSocket message"; text or
  binary frames are both read. A message may arrive fragmented, in at most `max_msg_chunks` frames
  (OpenSIPS's ws_max_msg_chunks bounds read chunks; here frames), and be at most `max_message_size`
  bytes long: over either bound the connection is failed with close code 1009 / 1008.
- what we send goes in one text frame (every SIP message we write is UTF-8), else one binary frame.
- a message of only line ends: "\\r\\n\\r\\n" is a keep-alive ping answered "\\r\\n" (RFC 5626 3.5.1,
  as SIP.js sends it over WebSocket); others are ignored (RFC 3261 7.5).
"""

from __future__ import annotations

import http
import logging
from dataclasses import dataclass

from websockets.exceptions import InvalidState
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import SEND_EOF, State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

SUBPROTOCOL = "sip"   # RFC 7118 7: the IANA-registered WebSocket subprotocol for SIP
PING = b"\r\n\r\n"
PONG = b"\r\n"

# The library logs every connection's open and close at INFO (ours say it at debug, with the connection
# id): under its own name, at WARNING unless a configuration asks for more.
_library_log = logging.getLogger("routescript.transport.websockets")
_library_log.setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class WsPolicy:
    """What a WebSocket listener accepts (the proto_ws module's parameters, and the core's size bound)."""

    max_message_size: int = 65536
    max_msg_chunks: int = 4
    require_origin: bool = True
    allowed_origins: tuple[str, ...] = ()   # empty: any Origin (when one is required, any present one)


class WsSession:
    """One server-side WebSocket connection carrying SIP.

    feed(data) -> the complete SIP messages read (bytes); then outgoing() -> bytes to write (the
    handshake's answer, pongs, close frames), and `eof` when the connection should be closed once
    they are written. send(message) frames a SIP message of ours. `problem` says why the peer was
    refused or cut off (for the log), `open` whether SIP may flow.
    """

    def __init__(self, policy: WsPolicy) -> None:
        self.policy = policy
        self._ws = ServerProtocol(subprotocols=[Subprotocol(SUBPROTOCOL)], max_size=policy.max_message_size,
                                  logger=_library_log)
        self._parts: list[bytes] = []   # the frames of a fragmented message so far
        self._out: list[bytes] = []
        self.eof = False
        self.problem: str | None = None
        self.origin: str | None = None
        self.path = ""

    @property
    def open(self) -> bool:
        return self._ws.state is State.OPEN

    @property
    def handshaking(self) -> bool:
        return self._ws.state is State.CONNECTING and not self.eof

    # --- reading ------------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[bytes]:
        self._ws.receive_data(data)
        return self._after_receive()

    def feed_eof(self) -> list[bytes]:
        """The peer closed its sending side."""
        try:
            self._ws.receive_eof()
        except EOFError:
            pass   # already at EOF: nothing more can come
        return self._after_receive()

    def _after_receive(self) -> list[bytes]:
        messages: list[bytes] = []
        for event in self._ws.events_received():
            if isinstance(event, Request):
                self._answer_handshake(event)
            elif isinstance(event, Frame):
                message = self._on_frame(event)
                if message is not None:
                    messages.append(message)
        if self._ws.handshake_exc is not None and self.problem is None:
            self.problem = f"bad handshake: {self._ws.handshake_exc}"
        failed = self._ws.parser_exc
        # a peer that drops the connection without a close frame is no problem to report (a tab closed)
        if failed is not None and self.problem is None and not isinstance(failed, EOFError):
            self.problem = str(failed)
        self._collect()
        if not self._ws.accept_called and self._ws.handshake_exc is not None and self._out[:1] == [b""]:
            # Not even an HTTP request (a SIP message sent to the WebSocket port, garbage): the library
            # only closes; a plain 400 first tells a person with curl what is wrong.
            refusal = self._ws.reject(http.HTTPStatus.BAD_REQUEST, "Expected a WebSocket handshake "
                                      "(HTTP/1.1 GET with Upgrade: websocket and Sec-WebSocket-Protocol: "
                                      "sip).\n")
            self._out.insert(0, refusal.serialize())
        return messages

    def _answer_handshake(self, request: Request) -> None:
        self.path = request.path
        why = self._refusal(request)
        if why is not None:
            self.problem = why
            response = self._ws.reject(http.HTTPStatus.FORBIDDEN if "Origin" in why
                                       else http.HTTPStatus.BAD_REQUEST,
                                       f"Failed to open a WebSocket connection: {why}.\n")
        else:
            response = self._ws.accept(request)
            if response.status_code != 101:
                body = response.body.decode(errors="replace").strip()
                self.problem = f"handshake refused: {response.status_code} {body}"
        self._ws.send_response(response)

    def _refusal(self, request: Request) -> str | None:
        """Why this upgrade request is refused before the library checks the rest, or None."""
        headers = request.headers
        if "Host" not in headers:
            return "no Host header"
        origins = headers.get_all("Origin")
        if len(origins) > 1:
            return "more than one Origin header"
        origin = origins[0] if origins else None
        self.origin = origin
        if origin is None:
            return "no Origin header (require_origin)" if self.policy.require_origin else None
        allowed = self.policy.allowed_origins
        if allowed and origin not in allowed:
            return f"Origin {origin} is not one of allowed_origins"
        return None

    def _on_frame(self, frame: Frame) -> bytes | None:
        """A data frame's contribution: a whole SIP message, or None (a part, a control frame)."""
        if frame.opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            return None   # ping (the library answered it), pong, close (the library echoed it)
        self._parts.append(bytes(frame.data))
        if not frame.fin:
            if len(self._parts) >= self.policy.max_msg_chunks:
                self._fail(CloseCode.POLICY_VIOLATION,
                           f"a message in more than {self.policy.max_msg_chunks} frames (ws_max_msg_chunks)")
            return None
        message = b"".join(self._parts)
        self._parts.clear()
        if not message.strip(b"\r\n"):
            if message == PING:
                self.send(PONG)
            return None
        return message

    def _fail(self, code: CloseCode, why: str) -> None:
        self.problem = why
        self._parts.clear()
        self._ws.fail(code, why[:120])   # a close frame's reason fits in 123 bytes

    # --- writing ------------------------------------------------------------------------------

    def send(self, message: bytes) -> None:
        """One SIP message of ours in one WebSocket message. InvalidState once closing."""
        try:
            message.decode("utf-8")
        except UnicodeDecodeError:
            self._ws.send_binary(message)
        else:
            self._ws.send_text(message)
        self._collect()

    def close(self, code: CloseCode = CloseCode.GOING_AWAY, reason: str = "") -> None:
        """Start the closing handshake (idle, shutting down); nothing when it has begun already."""
        if self._ws.state is State.OPEN:
            try:
                self._ws.send_close(code, reason)
            except InvalidState:
                pass
            self._collect()
        self.eof = True

    def outgoing(self) -> bytes:
        """The bytes to write now (then close the connection when `eof`)."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _collect(self) -> None:
        for chunk in self._ws.data_to_send():
            if chunk == SEND_EOF:
                self.eof = True
            self._out.append(chunk)
        if self._ws.close_expected():
            self.eof = True
