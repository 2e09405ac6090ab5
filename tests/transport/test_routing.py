"""received/rport stamping and response routing (RFC 3261 18.2.1/18.2.2, RFC 3581) - sans-IO."""

from __future__ import annotations

import pytest

from routescript.sip import build_reply, parse_via
from routescript.transport import (Destination, SocketInfo, Source, TransportLayer, response_destination,
                                   stamp_via)
from routescript.transport.address import normalize_host
from routescript.transport.routing import receive_route

UDP_SOCK = SocketInfo("udp", "127.0.0.1", 5060)
TCP_SOCK = SocketInfo("tcp", "127.0.0.1", 5060)


def test_no_stamp_when_sent_by_is_the_source_and_no_rport():
    assert stamp_via(parse_via("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1"), "127.0.0.1", 5070) is None


def test_received_when_sent_by_differs():
    via = stamp_via(parse_via("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1"), "127.0.0.1", 40000)
    assert via.received == "127.0.0.1" and via.rport is None
    assert via.branch == "z9hG4bK1"


def test_received_when_sent_by_is_a_name():
    via = stamp_via(parse_via("SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1"), "192.0.2.4", 5060)
    assert via.received == "192.0.2.4"


def test_empty_rport_filled_and_received_added_even_when_equal():
    via = stamp_via(parse_via("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;rport"), "127.0.0.1", 41234)
    assert via.rport == 41234 and via.received == "127.0.0.1"


def test_ipv6_source_compared_canonically():
    assert stamp_via(parse_via("SIP/2.0/UDP [::1]:5070;branch=z9hG4bK1"), "::1", 5070) is None
    via = stamp_via(parse_via("SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK1;rport"), "::1", 5071)
    assert via.received == "::1" and via.rport == 5071
    assert "received=::1" in str(via)


def test_udp_response_goes_to_received_and_rport():
    via = parse_via("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport=40000;received=192.0.2.1")
    dest = response_destination(via, Source("udp", UDP_SOCK, "192.0.2.1", 40000))
    assert dest == Destination("udp", "192.0.2.1", 40000, socket=UDP_SOCK)


def test_udp_response_to_received_at_sent_by_port_without_rport():
    via = parse_via("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;received=192.0.2.1")
    assert response_destination(via, Source("udp", UDP_SOCK, "192.0.2.1", 40000)).port == 5070


def test_udp_response_to_sent_by_default_port():
    via = parse_via("SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1")
    dest = response_destination(via, Source("udp", UDP_SOCK, "192.0.2.7", 5060))
    assert (dest.host, dest.port) == ("192.0.2.7", 5060)


def test_udp_maddr_wins():
    via = parse_via("SIP/2.0/UDP 192.0.2.7:5080;branch=z9hG4bK1;maddr=239.1.1.1;received=192.0.2.8")
    dest = response_destination(via, Source("udp", UDP_SOCK, "192.0.2.8", 5080))
    assert (dest.host, dest.port) == ("239.1.1.1", 5080)


def test_tcp_response_on_the_connection_else_received_at_sent_by_port():
    via = parse_via("SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bK1;rport=40000;received=192.0.2.1")
    dest = response_destination(via, Source("tcp", TCP_SOCK, "192.0.2.1", 40000, conn_id=7))
    assert dest.conn_id == 7
    assert (dest.proto, dest.host, dest.port) == ("tcp", "192.0.2.1", 5070)


def test_ipv6_received_brackets_stripped():
    via = parse_via("SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK1;received=[::1];rport=5071")
    dest = response_destination(via, Source("udp", UDP_SOCK, "::1", 5071))
    assert (dest.host, dest.port) == ("::1", 5071)


@pytest.mark.parametrize("via_text", [
    "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1",                      # nothing to stamp
    "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1",                           # default port
    "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1",                       # received added
    "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1",                    # a name: received added
    "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;rport",                # received and rport added
    "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport=6000",            # rport with a value kept
    "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;rport=6000",           # ... and nothing stamped
    "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;received=192.0.2.9",   # the sender's own received
    "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;maddr=224.0.1.75;rport",  # maddr first
    "SIP/2.0/UDP [::1]:5070;branch=z9hG4bK1",                          # IPv6 in brackets
    "SIP/2.0/UDP [::0001]:5070;branch=z9hG4bK1",                       # ... not in canonical form
    "SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK1;rport",
    "SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bK1",
])
@pytest.mark.parametrize("source", [
    Source("udp", UDP_SOCK, "127.0.0.1", 40000),
    Source("udp", SocketInfo("udp", "::1", 5060), "::1", 5070),
    Source("tcp", TCP_SOCK, "127.0.0.1", 40001, conn_id=3),
])
def test_receive_route_answers_as_stamp_via_then_response_destination(via_text: str, source: Source) -> None:
    """receive_route reads the Via once for both jobs: it must agree with the two rules it joins."""
    via = parse_via(via_text)
    stamped = stamp_via(via, source.remote_host, source.remote_port)
    got_stamped, got_dest = receive_route(via, source)
    assert got_stamped == stamped
    want = response_destination(stamped or via, source)
    assert (got_dest.proto, got_dest.port, got_dest.conn_id) == (want.proto, want.port, want.conn_id)
    assert normalize_host(got_dest.host) == normalize_host(want.host)   # the same address
    assert got_dest.socket is source.socket


def test_a_received_request_carries_its_reply_destination_in_its_source() -> None:
    """TransportLayer.receive hands the request up with Source.reply_to set; reply_destination and
    send_reply use it, and it is no part of the Source's equality."""
    got: list[tuple[object, Source]] = []
    transport = TransportLayer(lambda msg, source: got.append((msg, source)))
    source = Source("udp", UDP_SOCK, "192.0.2.7", 40000)
    transport.receive(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n"
                      b"Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKr1;rport\r\n"
                      b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: r1\r\n"
                      b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", source, lambda out: None)
    [(msg, received_from)] = got
    assert received_from.reply_to == Destination("udp", "192.0.2.7", 40000, socket=UDP_SOCK)
    assert received_from == source and hash(received_from) == hash(source)
    response = build_reply(msg, 200)  # type: ignore[arg-type]
    assert TransportLayer.reply_destination(response, received_from) is received_from.reply_to


def test_receive_route_replies_to_the_source_address_as_the_socket_wrote_it() -> None:
    """sent-by equal to the source (as an address, not as text): the reply goes to the source's own
    form, which the socket API takes as it is."""
    source = Source("udp", SocketInfo("udp", "::1", 5060), "::1", 5070)
    stamped, dest = receive_route(parse_via("SIP/2.0/UDP [::0001]:5070;branch=z9hG4bK1"), source)
    assert stamped is None and dest == Destination("udp", "::1", 5070, socket=source.socket)


def test_a_ws_contact_in_a_dialog_over_wss_uses_the_wss_connection() -> None:
    """RFC 7118 5.2 registers only ";transport=ws" for URIs: a browser over wss writes it in its Contact,
    and a sips URI with it means WSS."""
    from routescript.sip import parse_uri
    from routescript.transport.routing import request_destination

    contact = parse_uri("sip:k8f2@df7jal23ls0d.invalid;transport=ws")
    dest = request_destination(contact, default_transport="wss", conn_id=7, conn_transport="wss")
    assert (dest.proto, dest.conn_id) == ("wss", 7)
    dest = request_destination(contact, default_transport="ws", conn_id=7, conn_transport="ws")
    assert (dest.proto, dest.conn_id) == ("ws", 7)
    assert request_destination(parse_uri("sips:a@h.example;transport=ws")).proto == "wss"
    assert request_destination(parse_uri("sip:a@h.example;transport=wss")).proto == "wss"
