"""routescript.core.requests: the RequestSender over a fake transaction layer - where a request goes,
its Via, the RFC 3261 18.1.1 move to TCP and the local 513."""

from __future__ import annotations

import asyncio

import pytest

from routescript.core.requests import OutgoingRequest, RequestSender, dialog_route, forget_destinations
from routescript.sip import (
    MAX_UDP_PAYLOAD,
    Destination,
    ParseError,
    SIPRequest,
    SIPResponse,
    SocketInfo,
    Source,
    build_reply,
    parse_message,
)

UDP_SOCK = SocketInfo("udp", "127.0.0.1", 5070)
TCP_SOCK = SocketInfo("tcp", "127.0.0.1", 5070)
OTHER_UDP = SocketInfo("udp", "127.0.0.2", 5090)


class FakeTransactions:
    """Records what is sent; answers `answer` (or per destination protocol) from the loop."""

    def __init__(self, answer: int = 200, answer_tcp: int | None = None) -> None:
        self.sent: list[tuple[SIPRequest, Destination, str | None]] = []
        self.answer, self.answer_tcp = answer, answer_tcp

    def send_request(self, req: SIPRequest, dest: Destination, on_final: object, *,
                     branch: str | None = None) -> object:
        self.sent.append((req, dest, branch))
        status = self.answer_tcp if dest.proto == "tcp" and self.answer_tcp is not None else self.answer
        asyncio.get_running_loop().call_soon(on_final, build_reply(req, status))  # type: ignore[arg-type]
        return None


def notify(ruri: str = "sip:bob@192.0.2.5:5062", routes: tuple[str, ...] = (),
           body: bytes = b"") -> OutgoingRequest:
    headers = (("To", "<sip:bob@example.com>;tag=w1"), ("From", "<sip:alice@example.com>;tag=p1"),
               ("CSeq", "1 NOTIFY"), ("Call-ID", "c-1"), ("Max-Forwards", "70"),
               *(("Route", r) for r in routes), ("Event", "presence"),
               ("Subscription-State", "active;expires=600"))
    return OutgoingRequest("NOTIFY", ruri, headers, body)


class Answers:
    def __init__(self) -> None:
        self.got: list[SIPResponse] = []

    def __call__(self, response: SIPResponse) -> None:
        self.got.append(response)


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    forget_destinations()


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_in_dialog_goes_to_the_remote_target_with_our_via() -> None:
    txns = FakeTransactions()
    sender = RequestSender(txns, [UDP_SOCK, TCP_SOCK])
    answers = Answers()
    sender.send_in_dialog(notify(), answers, source=Source("udp", UDP_SOCK, "192.0.2.5", 5062))
    assert answers.got == []             # never answered inside the call
    await settle()
    assert [r.status for r in answers.got] == [200]
    req, dest, branch = txns.sent[0]
    assert dest == Destination("udp", "192.0.2.5", 5062, None, UDP_SOCK)
    again = parse_message(req.to_bytes())
    assert again.header("Via") == f"SIP/2.0/UDP 127.0.0.1:5070;branch={branch}"
    assert branch is not None and branch.startswith("z9hG4bK")
    assert [name for name, _ in again.headers][-1] == "Content-Length"
    sender.send_in_dialog(notify(), answers, source=Source("udp", UDP_SOCK, "192.0.2.5", 5062))
    assert txns.sent[1][2] != branch     # a fresh branch per request


async def test_user_agent_header_goes_in_every_request_without_one() -> None:
    # core user_agent_header (OpenSIPS tm adds it to the requests it originates)
    txns = FakeTransactions()
    sender = RequestSender(txns, [UDP_SOCK], user_agent="rs-presence 1.0")
    src = Source("udp", UDP_SOCK, "192.0.2.5", 5062)
    sender.send_in_dialog(notify(), Answers(), source=src)
    own = notify()
    own = OutgoingRequest(own.method, own.ruri, (*own.headers, ("User-Agent", "watcher-ua")))
    sender.send_in_dialog(own, Answers(), source=src)
    RequestSender(txns, [UDP_SOCK]).send_in_dialog(notify(), Answers(), source=src)
    agents = [parse_message(req.to_bytes()).header("User-Agent") for req, _, _ in txns.sent]
    assert agents == ["rs-presence 1.0", "watcher-ua", None]


async def test_first_route_decides_where_it_goes() -> None:
    txns = FakeTransactions()
    sender = RequestSender(txns, [UDP_SOCK])
    routes = ("<sip:proxy.example.com:5080;lr>", "<sip:p2.example.com;lr>")
    sender.send_in_dialog(notify(routes=routes), Answers(), source=Source("udp", UDP_SOCK, "192.0.2.5", 5062))
    _, dest, _ = txns.sent[0]
    assert (dest.proto, dest.host, dest.port) == ("udp", "proxy.example.com", 5080)


async def test_transport_parameter_sips_and_maddr() -> None:
    txns = FakeTransactions()
    sender = RequestSender(txns, [UDP_SOCK, TCP_SOCK])
    src = Source("udp", UDP_SOCK, "192.0.2.5", 5062)
    for ruri in ("sip:bob@192.0.2.5:5062;transport=TCP", "sips:bob@192.0.2.5",
                 "sip:bob@x.example;maddr=192.0.2.9"):
        sender.send_in_dialog(notify(ruri), Answers(), source=src)
    tcp, tls, maddr = (dest for _, dest, _ in txns.sent)
    assert (tcp.proto, tcp.port, tcp.socket) == ("tcp", 5062, None)   # the UDP socket is no TCP one
    assert (tls.proto, tls.port) == ("tls", 5061)                       # the transport refuses it: 503
    assert (maddr.proto, maddr.host, maddr.port) == ("udp", "192.0.2.9", 5060)


async def test_the_dialogs_tcp_connection_is_reused() -> None:
    """A watcher that subscribed over TCP without ;transport= in its Contact gets its NOTIFY over TCP, on
    its connection; a target naming UDP goes over UDP, without the connection."""
    txns = FakeTransactions()
    sender = RequestSender(txns, [UDP_SOCK, TCP_SOCK])
    src = Source("tcp", TCP_SOCK, "192.0.2.5", 40000, conn_id=7)
    sender.send_in_dialog(notify(), Answers(), source=src)
    sender.send_in_dialog(notify("sip:bob@192.0.2.5:5062;transport=udp"), Answers(), source=src)
    (req, tcp, _), (_, udp, _) = txns.sent
    assert tcp == Destination("tcp", "192.0.2.5", 5062, 7, TCP_SOCK)
    assert parse_message(req.to_bytes()).via.transport == "TCP"
    assert (udp.proto, udp.conn_id) == ("udp", None)


async def test_without_a_source_the_named_socket_sends() -> None:
    """A dialog reloaded from the database has no source: the socket it came in on, by name."""
    txns = FakeTransactions()
    sender = RequestSender(txns, [UDP_SOCK, OTHER_UDP])
    sender.send_in_dialog(notify(), Answers(), socket="udp:127.0.0.2:5090")
    req, dest, _ = txns.sent[0]
    assert dest.socket == OTHER_UDP
    assert parse_message(req.to_bytes()).via.host == "127.0.0.2"
    sender.send_in_dialog(notify(), Answers(), socket="tcp:127.0.0.1:5070")   # gone: first socket, TCP
    assert txns.sent[1][1].proto == "tcp"


async def test_too_large_for_udp_goes_over_tcp() -> None:
    txns = FakeTransactions()
    sender = RequestSender(txns, [UDP_SOCK, TCP_SOCK])
    answers = Answers()
    big = notify(body=b"x" * (MAX_UDP_PAYLOAD + 1))
    sender.send_in_dialog(big, answers, source=Source("udp", UDP_SOCK, "192.0.2.5", 5062))
    await settle()
    req, dest, branch = txns.sent[0]
    assert dest == Destination("tcp", "192.0.2.5", 5062, None, TCP_SOCK)
    assert req.header("Via") == f"SIP/2.0/TCP 127.0.0.1:5070;branch={branch}"
    assert [r.status for r in answers.got] == [200]


async def test_just_fitting_stays_on_udp() -> None:
    txns = FakeTransactions()
    sender = RequestSender(txns, [UDP_SOCK, TCP_SOCK])
    small = notify(body=b"x" * 1400)     # over RFC 3261's 1300 bytes, under a datagram: UDP (OpenSIPS)
    sender.send_in_dialog(small, Answers(), source=Source("udp", UDP_SOCK, "192.0.2.5", 5062))
    assert txns.sent[0][1].proto == "udp"


async def test_too_large_without_a_tcp_socket_is_a_local_513() -> None:
    txns = FakeTransactions()
    sender = RequestSender(txns, [UDP_SOCK])
    answers = Answers()
    sender.send_in_dialog(notify(body=b"x" * (MAX_UDP_PAYLOAD + 1)), answers,
                          source=Source("udp", UDP_SOCK, "192.0.2.5", 5062))
    assert answers.got == [] and txns.sent == []
    await settle()
    assert [r.status for r in answers.got] == [513]
    assert answers.got[0].call_id == "c-1"


@pytest.mark.parametrize("failure", [408, 503])
async def test_too_large_and_tcp_fails_is_a_local_513(failure: int) -> None:
    txns = FakeTransactions(answer_tcp=failure)
    sender = RequestSender(txns, [UDP_SOCK, TCP_SOCK])
    answers = Answers()
    sender.send_in_dialog(notify(body=b"x" * (MAX_UDP_PAYLOAD + 1)), answers,
                          source=Source("udp", UDP_SOCK, "192.0.2.5", 5062))
    await settle()
    assert [r.status for r in answers.got] == [513]


async def test_tcp_socket_near_prefers_the_same_address_then_the_family() -> None:
    v6_tcp, other_tcp = SocketInfo("tcp", "::1", 5070), SocketInfo("tcp", "127.0.0.3", 5070)
    txns = FakeTransactions()
    sender = RequestSender(txns, [OTHER_UDP, v6_tcp, other_tcp, SocketInfo("tcp", "127.0.0.2", 5091)])
    big = notify(body=b"x" * (MAX_UDP_PAYLOAD + 1))
    sender.send_in_dialog(big, Answers(), source=Source("udp", OTHER_UDP, "192.0.2.5", 5062))
    assert txns.sent[0][1].socket == SocketInfo("tcp", "127.0.0.2", 5091)
    sender = RequestSender(txns, [UDP_SOCK, v6_tcp, other_tcp])
    sender.send_in_dialog(big, Answers(), source=Source("udp", UDP_SOCK, "192.0.2.5", 5062))
    assert txns.sent[1][1].socket == other_tcp


async def test_send_to_a_destination_or_by_the_request_uri() -> None:
    txns = FakeTransactions()
    sender = RequestSender(txns, [UDP_SOCK, TCP_SOCK])
    publish = OutgoingRequest("PUBLISH", "sip:alice@192.0.2.7", (
        ("To", "<sip:alice@192.0.2.7>"), ("From", "<sip:alice@192.0.2.7>;tag=1"), ("CSeq", "1 PUBLISH"),
        ("Call-ID", "p-1"), ("Event", "presence")))
    proxy = Destination("tcp", "192.0.2.1", 5060)
    sender.send_to(publish, Answers(), destination=proxy)
    sender.send_to(publish, Answers())
    (first, to_proxy, _), (_, direct, _) = txns.sent
    assert to_proxy == proxy
    assert parse_message(first.to_bytes()).via.transport == "TCP"       # from our TCP socket
    assert parse_message(first.to_bytes()).header("Max-Forwards") == "70"  # RFC 3261 8.1.1.6
    assert (direct.proto, direct.host, direct.port) == ("udp", "192.0.2.7", 5060)


async def test_a_target_that_is_no_uri_sends_nothing() -> None:
    txns = FakeTransactions()
    sender = RequestSender(txns, [UDP_SOCK])
    with pytest.raises(ParseError):
        sender.send_in_dialog(notify(routes=("<not a uri>",)), Answers(), source=None)
    assert txns.sent == []


def test_a_header_with_a_line_break_is_refused() -> None:
    request = OutgoingRequest("NOTIFY", "sip:b@h", (("Event", "presence\r\nX: y"),))
    with pytest.raises(ValueError, match="line break"):
        request.to_sip("SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1")


def test_dialog_route_loose_and_strict() -> None:
    """RFC 3261 12.2.1.1: a loose first route keeps the remote target as Request-URI; a strict one
    becomes the Request-URI and the remote target goes last."""
    assert dialog_route("sip:bob@h", ()) == ("sip:bob@h", [])
    loose = ("<sip:p1.example.com;lr>", "<sip:p2.example.com>")
    assert dialog_route("sip:bob@h", loose) == ("sip:bob@h", list(loose))
    strict = ("<sip:strict.example.com>", "<sip:p2.example.com;lr>")
    assert dialog_route("sip:bob@h", strict) == \
        ("sip:strict.example.com", ["<sip:p2.example.com;lr>", "<sip:bob@h>"])
    assert dialog_route("sip:bob@h", ('"P" <sip:p1.example.com;lr=on>;x=1',))[0] == "sip:bob@h"


async def test_a_hop_kept_for_a_dialog_sends_as_send_in_dialog_does() -> None:
    """Issue 18 item 9: hop_in_dialog works out once where a dialog's requests go (destination, socket,
    our Via up to its branch); send_by with it sends what send_in_dialog sends, each with a new branch."""
    source = Source("tcp", TCP_SOCK, "192.0.2.5", 40000, conn_id=7)
    txns = FakeTransactions()
    sender = RequestSender(txns, [UDP_SOCK, TCP_SOCK])
    hop = sender.hop_in_dialog(notify(), source=source)
    assert hop.destination == Destination("tcp", "192.0.2.5", 5062, 7, TCP_SOCK)
    assert hop.socket == TCP_SOCK and hop.via_prefix == "SIP/2.0/TCP 127.0.0.1:5070;branch="
    sender.send_in_dialog(notify(), Answers(), source=source)
    sender.send_by(notify(), hop, Answers())
    sender.send_by(notify(), hop, Answers())
    await settle()
    (direct, d1, b1), (kept, d2, b2), (again, d3, b3) = txns.sent
    assert d1 == d2 == d3 and len({b1, b2, b3}) == 3
    assert kept.to_bytes().replace(b2.encode(), b1.encode()) == direct.to_bytes()
    assert parse_message(again.to_bytes()).via.branch == b3


async def test_a_request_uri_parsed_by_the_caller_is_not_parsed_again(monkeypatch) -> None:
    """Issue 18 item 3: hop_in_dialog takes the Request-URI the caller parsed already (a SUBSCRIBE's
    Contact) when no Route names the next hop; with a Route the Route decides, as before."""
    from routescript.core import requests as requests_module
    from routescript.sip import parse_uri

    ruri = parse_uri("sip:bob@192.0.2.5:5062;transport=tcp")
    sender = RequestSender(FakeTransactions(), [UDP_SOCK, TCP_SOCK])

    def no_parse(text: str) -> None:
        raise AssertionError(f"parsed again: {text}")
    monkeypatch.setattr(requests_module, "parse_uri", no_parse)
    source = Source("udp", UDP_SOCK, "192.0.2.5", 5062)
    hop = sender.hop_in_dialog(notify(str(ruri)), source=source, ruri=ruri)
    assert hop.destination == Destination("tcp", "192.0.2.5", 5062, None, None)
    monkeypatch.undo()
    assert sender.hop_in_dialog(notify(str(ruri)), source=source) == hop   # what parsing it gives
    routed = sender.hop_in_dialog(notify(str(ruri), routes=("<sip:192.0.2.9:5080;lr>",)), ruri=ruri)
    assert (routed.destination.host, routed.destination.port) == ("192.0.2.9", 5080)
