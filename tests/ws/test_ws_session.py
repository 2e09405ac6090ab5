"""WsSession in memory: the `websockets` client's sans-IO protocol wired to ours, no sockets, no clock
(aioquic's two-endpoints-in-memory tests). The handshake (RFC 6455 4, RFC 7118 4), messages, bounds,
ping/pong and the closing handshake."""

from __future__ import annotations

import pytest
from websockets.client import ClientProtocol
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Origin, Subprotocol
from websockets.uri import parse_uri

from routescript.transport.wssession import WsPolicy, WsSession

OPTIONS = (b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK1\r\n"
           b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n"
           b"Content-Length: 0\r\n\r\n")


class Pair:
    """A client protocol and our session, bytes carried between them by hand."""

    def __init__(self, policy: WsPolicy | None = None, *, origin: str | None = "https://page.example",
                 subprotocols: list[str] | None = None) -> None:
        offered = ["sip"] if subprotocols is None else subprotocols
        self.client = ClientProtocol(parse_uri("ws://127.0.0.1:8080/"),
                                     origin=Origin(origin) if origin else None,
                                     subprotocols=[Subprotocol(p) for p in offered] or None)
        self.server = WsSession(policy or WsPolicy())
        self.received: list[bytes] = []     # SIP messages our session read
        self.events: list[object] = []      # what the client read

    def handshake(self) -> Response:
        self.client.send_request(self.client.connect())
        self.to_server()
        response = next(e for e in self.events if isinstance(e, Response))
        return response

    def to_server(self) -> None:
        for chunk in self.client.data_to_send():
            if chunk:
                self.received += self.server.feed(chunk)
            else:
                self.received += self.server.feed_eof()
        self.to_client()

    def to_client(self) -> None:
        out = self.server.outgoing()
        if out:
            self.client.receive_data(out)
        if self.server.eof:
            self.client.receive_eof()
        self.events += self.client.events_received()

    def frames(self, opcode: Opcode) -> list[bytes]:
        return [bytes(e.data) for e in self.events if isinstance(e, Frame) and e.opcode is opcode]


def test_handshake_accepts_sip_and_carries_messages_both_ways() -> None:
    pair = Pair()
    response = pair.handshake()
    assert response.status_code == 101
    assert response.headers["Sec-WebSocket-Protocol"] == "sip"
    assert pair.server.open and pair.server.origin == "https://page.example"
    pair.client.send_text(OPTIONS)
    pair.to_server()
    assert pair.received == [OPTIONS]
    pair.server.send(b"SIP/2.0 200 OK\r\n\r\n")
    pair.to_client()
    assert pair.frames(Opcode.TEXT) == [b"SIP/2.0 200 OK\r\n\r\n"]


@pytest.mark.parametrize("offered", [[], ["chat"], ["chat", "xmpp"]])
def test_a_client_not_offering_sip_is_refused(offered: list[str]) -> None:
    """RFC 7118 4: the server's 101 names `sip`; a client offering no `sip` gets 400, as OpenSIPS."""
    pair = Pair(subprotocols=offered)
    response = pair.handshake()
    assert response.status_code == 400
    assert pair.server.eof and not pair.server.open
    assert "subprotocol" in (pair.server.problem or "")


def test_sip_among_others_is_chosen() -> None:
    pair = Pair(subprotocols=["chat", "sip"])
    assert pair.handshake().headers["Sec-WebSocket-Protocol"] == "sip"


def test_origin_required_by_default_and_checked_against_the_allowed_list() -> None:
    assert Pair(origin=None).handshake().status_code == 403
    assert Pair(WsPolicy(require_origin=False), origin=None).handshake().status_code == 101
    policy = WsPolicy(allowed_origins=("https://phone.example",))
    refused = Pair(policy, origin="https://evil.example")
    assert refused.handshake().status_code == 403
    assert "allowed_origins" in (refused.server.problem or "")
    assert Pair(policy, origin="https://phone.example").handshake().status_code == 101


def _http(session: WsSession, request: bytes) -> bytes:
    session.feed(request)
    assert session.eof
    return session.outgoing()


def test_a_plain_http_request_gets_an_http_error() -> None:
    out = _http(WsSession(WsPolicy()), b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://a\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"Upgrade: websocket" in out


def test_a_post_is_refused_405() -> None:
    out = _http(WsSession(WsPolicy()), b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 4")


def test_sip_sent_to_the_websocket_port_gets_400() -> None:
    """Not an HTTP request at all (a phone configured with the wrong port): a plain 400, then close."""
    out = _http(WsSession(WsPolicy()), OPTIONS)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"WebSocket handshake" in out


def test_no_host_header_is_refused() -> None:
    request = (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nOrigin: http://a\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Protocol: sip\r\n\r\n")
    assert _http(WsSession(WsPolicy()), request).startswith(b"HTTP/1.1 400")


def test_an_oversize_message_closes_with_1009() -> None:
    pair = Pair(WsPolicy(max_message_size=1000))
    pair.handshake()
    pair.client.send_text(b"x" * 1001)
    pair.to_server()
    assert pair.received == []
    assert pair.server.eof
    assert pair.client.close_code == CloseCode.MESSAGE_TOO_BIG


def test_a_fragmented_message_is_joined_within_max_msg_chunks() -> None:
    pair = Pair(WsPolicy(max_msg_chunks=3))
    pair.handshake()
    head, rest = OPTIONS[:40], OPTIONS[40:]
    pair.client.send_text(head, fin=False)
    pair.client.send_continuation(rest[:10], fin=False)
    pair.client.send_continuation(rest[10:], fin=True)
    pair.to_server()
    assert pair.received == [OPTIONS]


def test_more_fragments_than_max_msg_chunks_close_with_1008() -> None:
    pair = Pair(WsPolicy(max_msg_chunks=2))
    pair.handshake()
    pair.client.send_text(b"a", fin=False)
    pair.client.send_continuation(b"b", fin=False)
    pair.client.send_continuation(b"c", fin=True)
    pair.to_server()
    assert pair.received == []
    assert pair.client.close_code == CloseCode.POLICY_VIOLATION
    assert "ws_max_msg_chunks" in (pair.server.problem or "")


def test_ping_gets_pong_and_crlf_keepalive_gets_crlf() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.send_ping(b"are you there")
    pair.client.send_text(b"\r\n\r\n")
    pair.to_server()
    assert pair.frames(Opcode.PONG) == [b"are you there"]
    assert pair.frames(Opcode.TEXT) == [b"\r\n"]
    assert pair.received == []


def test_close_is_echoed_and_ends_the_session() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.send_close(CloseCode.NORMAL_CLOSURE, "bye")
    pair.to_server()
    assert pair.server.eof and not pair.server.open
    assert pair.client.close_code == CloseCode.NORMAL_CLOSURE
    assert pair.server.problem is None


def test_our_close_starts_the_closing_handshake() -> None:
    pair = Pair()
    pair.handshake()
    pair.server.close()
    pair.to_client()
    assert pair.client.state in (State.CLOSING, State.CLOSED)
    assert pair.client.close_code == CloseCode.GOING_AWAY


def test_binary_frames_are_read_and_non_utf8_goes_out_binary() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.send_binary(OPTIONS)
    pair.to_server()
    assert pair.received == [OPTIONS]
    pair.server.send(b"SIP/2.0 200 OK\r\nX: \xff\r\n\r\n")
    pair.to_client()
    assert pair.frames(Opcode.BINARY) == [b"SIP/2.0 200 OK\r\nX: \xff\r\n\r\n"]
