"""Inbox message codecs: every kind round-trips; garbage gives MessageDecodeError, never another crash."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routescript.sip.address import SocketInfo, Source
from routescript.transport.tls import TlsSession
from routescript.workers.messages import (
    MAX_DATAGRAM,
    MAX_PEER_CERT,
    Announce,
    Handoff,
    MessageDecodeError,
    Resync,
    SendFailed,
    TcpSend,
    decode,
    encode,
)

UDP_SOCKET = SocketInfo("udp", "127.0.0.1", 5060)
TCP_SOCKET = SocketInfo("tcp", "::1", 5060)
TLS_SOCKET = SocketInfo("tls", "127.0.0.1", 5061)
WSS_SOCKET = SocketInfo("wss", "127.0.0.1", 8443)
SESSION = TlsSession(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", description="TLSv1.3", bits=256,
                     peer_cert=b"\x30\x82" + bytes(range(256)) * 4, verified=True, domain="srv",
                     server_side=True)

MESSAGES = [
    Handoff(Source("udp", UDP_SOCKET, "10.0.0.7", 5070), 12345.678901, b"OPTIONS sip:x SIP/2.0\r\n\r\n"),
    Handoff(Source("tcp", TCP_SOCKET, "2001:db8::1", 40000, (1 << 48) | 7), 0.5, b""),
    Handoff(Source("tcp", TCP_SOCKET, "::1", 1, 0), 1.0, b"x"),          # conn_id 0 is not "none"
    Handoff(Source("tls", TLS_SOCKET, "10.0.0.7", 40001, (1 << 48) | 3, tls=SESSION), 2.0, b"SUBSCRIBE"),
    Handoff(Source("wss", WSS_SOCKET, "10.0.0.7", 40002, 4, tls=TlsSession(
        version="TLSv1.2", cipher="ECDHE", description="TLSv1.2", bits=128, peer_cert=None, verified=False,
        domain="", server_side=True)), 2.0, b"REGISTER"),
    Handoff(Source("ws", SocketInfo("ws", "127.0.0.1", 8080), "10.0.0.7", 40003, 5), 2.0, b"REGISTER"),
    TcpSend((3 << 48) | 99, b"SIP/2.0 200 OK\r\n\r\n", "10.0.0.7", 5070),
    TcpSend((3 << 48) | 98, b"NOTIFY ...", "10.0.0.7", 5071, "tls"),
    TcpSend(7, b"NOTIFY ...", "10.0.0.7", 40002, "wss"),
    TcpSend(1, b"NOTIFY ..."),
    TcpSend(0, b"NOTIFY ...", "127.0.0.1", 5090, "tcp", report_to=1),     # awaited by worker 1's transaction
    SendFailed("z9hG4bK-1.w1.abc", "NOTIFY", "tcp", "127.0.0.1", 5090,
               "cannot connect to tcp:127.0.0.1:5090: [Errno 111] Connection refused"),
    SendFailed("z9hG4bK-\u00e9", "INVITE", "tls", "2001:db8::1", 5061, ""),
    Announce("sqlite:///var/db/presence.db", "presentity", '{"uri": "sip:alice@example.com", "\u00e9": 1}'),
    Announce("", "", ""),
    Resync("worker 1 restarted"),
    Resync(""),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Handoff | TcpSend | Announce | Resync) -> None:
    assert decode(encode(message)) == message


@pytest.mark.parametrize("message", [m for m in MESSAGES if isinstance(m, Handoff)])
def test_a_handoff_carries_the_tls_session(message: Handoff) -> None:
    """Source.tls is not part of equality: compared by itself (the owner's $tls_* read it)."""
    got = decode(encode(message))
    assert isinstance(got, Handoff) and got.source.tls == message.source.tls and got.data == message.data


def test_a_full_size_message_with_a_big_certificate_fits() -> None:
    big = TlsSession(version="TLSv1.3", cipher="c" * 255, description="d" * 255, bits=256,
                     peer_cert=b"x" * MAX_PEER_CERT, verified=True, domain="s" * 255, server_side=True)
    datagram = encode(Handoff(Source("tls", TLS_SOCKET, "h" * 255, 5060, 1, tls=big), 1.0, b"x" * 65536))
    assert len(datagram) <= MAX_DATAGRAM
    assert decode(datagram).source.tls == big  # type: ignore[union-attr]



def test_a_full_size_sip_message_fits() -> None:
    data = b"x" * 65536
    datagram = encode(Handoff(Source("udp", UDP_SOCKET, "h" * 255, 5060), 1.0, data))
    assert len(datagram) <= MAX_DATAGRAM
    assert decode(datagram).data == data  # type: ignore[union-attr]


@pytest.mark.parametrize(("message", "error"), [
    (Handoff(Source("udp", UDP_SOCKET, "h" * 256, 1), 0.0, b""), "cannot encode Handoff"),
    (TcpSend(1, b"", "h" * 256, 1), "host name of 256 bytes"),
    (Handoff(Source("sctp", UDP_SOCKET, "h", 1), 0.0, b""), "cannot hand off"),
    (Handoff(Source("udp", UDP_SOCKET, "h", 70000), 0.0, b""), "cannot encode Handoff"),
    (TcpSend(1, b"x" * (MAX_DATAGRAM + 1)), "over the"),
    (TcpSend(1, b"x", "h", 1, "sctp"), "cannot hand off"),
    (TcpSend(1, b"x", "h", 1, report_to=256), "cannot encode TcpSend"),
    (SendFailed("z" * 256, "NOTIFY", "tcp", "h", 1, ""), "cannot encode SendFailed"),
    (Handoff(Source("tls", TLS_SOCKET, "h", 1, 1, tls=TlsSession(
        version="", cipher="", description="", bits=0, peer_cert=b"x" * (MAX_PEER_CERT + 1), verified=False,
        domain="", server_side=True)), 0.0, b""), "peer certificate of"),
])
def test_encode_refuses_what_does_not_fit(message: Handoff | TcpSend, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        encode(message)


@pytest.mark.parametrize(("datagram", "error"), [
    (b"", "empty"),
    (b"Z123", "unknown inbox message kind 0x5a"),
    (b"H\x00\x00", "Handoff datagram of 3 bytes is shorter than its header"),
    (encode(MESSAGES[0])[:30], "runs past the end"),
    (encode(MESSAGES[0])[:9] + b"\x07" + encode(MESSAGES[0])[10:], "unknown transport codes 7/0"),
    (b"T" + b"\x00" * 10 + b"\x05\x01ab", "TcpSend host runs past the end"),
    (b"T" + b"\x00" * 10 + b"\x00\x09ab", "TcpSend with unknown transport code 9"),
    (encode(MESSAGES[3])[:80], "Handoff TLS"),
    (encode(MESSAGES[3])[:200], "Handoff TLS certificate runs past the end"),
    (b"A\x00\x01\x00\x00\xff", "Announce db_key is not UTF-8"),
    (b"R\xc3", "Resync reason is not UTF-8"),
    (b"F\x00", "SendFailed datagram of 2 bytes is shorter than its header"),
    (b"F\x09\x00\x00\x00\x00\x00", "SendFailed with unknown transport code 9"),
    (b"F\x01\x00\x00\x00\x05\x01NOTIF", "SendFailed branch runs past the end"),
    (b"F\x01\x00\x00\x00\x00\x00\xff", "SendFailed reason is not UTF-8"),
])
def test_decode_names_what_is_wrong(datagram: bytes, error: str) -> None:
    with pytest.raises(MessageDecodeError, match=error):
        decode(datagram)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.one_of(st.binary(max_size=80),
                 st.sampled_from([encode(m) for m in MESSAGES]).flatmap(
                     lambda d: st.integers(0, len(d)).map(lambda n: d[:n]))))
def test_decode_raises_only_its_own_error(datagram: bytes) -> None:
    try:
        message = decode(datagram)
    except MessageDecodeError:
        return

    assert encode(message) == datagram   # what decodes is exactly what encode writes


def test_handoffs_from_one_peer_share_one_source() -> None:
    """The owner's decode of every Handoff from one peer gives the same Source object (made once: two
    frozen dataclasses per message were half of the decode), and another peer's its own."""
    source = Source("udp", UDP_SOCKET, "10.0.0.8", 5070)
    first = decode(encode(Handoff(source, 1.0, b"INVITE")))
    second = decode(encode(Handoff(source, 2.0, b"ACK")))
    other = decode(encode(Handoff(Source("udp", UDP_SOCKET, "10.0.0.8", 5071), 3.0, b"BYE")))
    assert isinstance(first, Handoff) and isinstance(second, Handoff) and isinstance(other, Handoff)
    assert first.source == source and second.source is first.source
    assert (second.arrived, second.data) == (2.0, b"ACK")
    assert other.source.remote_port == 5071 and other.source is not first.source


def test_a_tls_handoff_carries_its_own_session() -> None:
    """Not shared by the memo: each Handoff over TLS brings the session of its connection."""
    source = MESSAGES[3].source   # type: ignore[union-attr]
    renewed = SESSION.__class__(version="TLSv1.2", cipher="ECDHE", description="TLSv1.2", bits=128,
                                peer_cert=None, verified=False, domain="srv", server_side=True)
    first = decode(encode(Handoff(source, 1.0, b"x")))
    second = decode(encode(Handoff(Source(source.proto, source.socket, source.remote_host, source.remote_port,
                                          source.conn_id, tls=renewed), 1.0, b"x")))
    assert isinstance(first, Handoff) and isinstance(second, Handoff)
    assert first.source.tls == SESSION and second.source.tls == renewed
