"""Inbox message codecs: every kind round-trips; garbage gives MessageDecodeError, never another crash."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routescript.sip.address import SocketInfo, Source
from routescript.workers.messages import (
    MAX_DATAGRAM,
    Announce,
    Handoff,
    MessageDecodeError,
    Resync,
    TcpSend,
    decode,
    encode,
)

UDP_SOCKET = SocketInfo("udp", "127.0.0.1", 5060)
TCP_SOCKET = SocketInfo("tcp", "::1", 5060)

MESSAGES = [
    Handoff(Source("udp", UDP_SOCKET, "10.0.0.7", 5070), 12345.678901, b"OPTIONS sip:x SIP/2.0\r\n\r\n"),
    Handoff(Source("tcp", TCP_SOCKET, "2001:db8::1", 40000, (1 << 48) | 7), 0.5, b""),
    Handoff(Source("tcp", TCP_SOCKET, "::1", 1, 0), 1.0, b"x"),          # conn_id 0 is not "none"
    TcpSend((3 << 48) | 99, b"SIP/2.0 200 OK\r\n\r\n", "10.0.0.7", 5070),
    TcpSend(1, b"NOTIFY ..."),
    Announce("sqlite:///var/db/presence.db", "presentity", '{"uri": "sip:alice@example.com", "\u00e9": 1}'),
    Announce("", "", ""),
    Resync("worker 1 restarted"),
    Resync(""),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Handoff | TcpSend | Announce | Resync) -> None:
    assert decode(encode(message)) == message



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
])
def test_encode_refuses_what_does_not_fit(message: Handoff | TcpSend, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        encode(message)


@pytest.mark.parametrize(("datagram", "error"), [
    (b"", "empty"),
    (b"Z123", "unknown inbox message kind 0x5a"),
    (b"H\x00\x00", "Handoff datagram of 3 bytes is shorter than its header"),
    (encode(MESSAGES[0])[:30], "runs past the end"),
    (b"H\x07" + encode(MESSAGES[0])[2:], "unknown transport codes 7/0"),
    (b"T" + b"\x00" * 10 + b"\x05ab", "TcpSend host runs past the end"),
    (b"A\x00\x01\x00\x00\xff", "Announce db_key is not UTF-8"),
    (b"R\xc3", "Resync reason is not UTF-8"),
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
