"""UDP listeners over real loopback sockets: delivery, received/rport, response routing, bad input."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routescript.sip import build_request, generate_branch, parse_uri
from routescript.testing import SipTestClient, SipTimeout
from routescript.transport import Destination, SocketInfo, Source, TransportError, TransportLayer

from .conftest import has_ipv6_loopback


def raw_request(via: str, *, method: str = "OPTIONS", extra: str = "", cseq: str | None = None) -> bytes:
    return (f"{method} sip:x@127.0.0.1 SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@example.com>;tag=1\r\n"
            f"To: <sip:x@example.com>\r\nCall-ID: raw-{generate_branch()}\r\n"
            f"CSeq: {cseq or '1 ' + method}\r\n{extra}Content-Length: 0\r\n\r\n").encode()


async def silent(client: SipTestClient, wait: float = 0.15) -> bool:
    """True when nothing at all comes back within `wait`."""
    before = len(client.responses) + len(client.requests) + len(client.garbage)
    await asyncio.sleep(wait)
    return len(client.responses) + len(client.requests) + len(client.garbage) == before


async def test_request_reaches_core_with_source_and_stamped_via(core):
    info = await core.layer.listen("udp", "127.0.0.1", 0)
    assert info.port != 0 and info.name == f"udp:127.0.0.1:{info.port}"
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        req = client.options()
        resp = await client.send_request(req)
        assert resp.status == 200
        msg, source = core.received[0]
        assert msg.method == "OPTIONS" and msg.call_id == req.call_id
        assert source.proto == "udp" and source.socket == info and source.conn_id is None
        assert (source.remote_host, source.remote_port) == ("127.0.0.1", client.local_port)
        # RFC 3581: empty rport filled, received added even though it equals sent-by
        assert msg.via.rport == client.local_port and msg.via.received == "127.0.0.1"
        assert resp.via.rport == client.local_port


async def test_response_routed_to_received_and_sent_by_port(core):
    """No rport: the response goes to received (the packet source) at the sent-by port."""
    info = await core.layer.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        branch = generate_branch()
        client.send_raw(raw_request(f"SIP/2.0/UDP 192.0.2.55:{client.local_port};branch={branch}"))
        await core.wait_for(1)
        msg, _ = core.received[0]
        assert msg.via.received == "127.0.0.1" and msg.via.rport is None
        await asyncio.sleep(0.1)
        assert [r.status for r in client.responses] == [200]
        assert client.responses[0].via.branch == branch


async def test_response_with_rport_ignores_a_wrong_sent_by_port(core):
    info = await core.layer.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        client.send_raw(raw_request(f"SIP/2.0/UDP 127.0.0.1:9;branch={generate_branch()};rport"))
        await core.wait_for(1)
        await asyncio.sleep(0.1)
        assert [r.status for r in client.responses] == [200]   # reached us, not port 9


async def test_garbage_datagram_dropped_and_logged_once_per_source(core, caplog):
    info = await core.layer.listen("udp", "127.0.0.1", 0)
    caplog.set_level(logging.WARNING, logger="routescript.transport")
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        for _ in range(3):
            client.send_raw(b"\x00\x01garbage that is not SIP at all\xff")
        assert await silent(client)
        assert core.received == []
        drops = [r for r in caplog.records if "dropped malformed" in r.getMessage()]
        assert len(drops) == 1
        # the listener still works
        assert (await client.send_request(client.options())).status == 200


async def test_partly_broken_request_answered_400_naming_the_problem(core):
    info = await core.layer.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        client.send_raw(raw_request(f"SIP/2.0/UDP 127.0.0.1:{client.local_port};branch=z9hG4bKb1;rport",
                                    cseq="1 INVITE"))
        await asyncio.sleep(0.15)
        assert [r.status for r in client.responses] == [400]
        assert client.responses[0].reason == "CSeq method does not match request method"
        # a CSeq that does not parse: the 400 copies it, so only its status line is checked here
        client.send_raw(raw_request(f"SIP/2.0/UDP 127.0.0.1:{client.local_port};branch=z9hG4bKb3;rport",
                                    cseq="x OPTIONS"))
        await asyncio.sleep(0.15)
        assert [g.split(b"\r\n")[0] for g in client.garbage] == [b"SIP/2.0 400 Bad CSeq header"]
        assert core.received == []


async def test_broken_via_answered_400(core):
    info = await core.layer.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        client.send_raw(raw_request("SIP/2.0/UDP ;;;branch=z9hG4bKb2"))
        await asyncio.sleep(0.15)
        assert [r.status for r in client.responses] == [400]
        assert "Via" in client.responses[0].reason
        assert core.received == []


async def test_oversize_datagram_answered_513(core):
    info = await core.layer.listen("udp", "127.0.0.1", 0)   # max_message_size=4096 in the fixture
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        big = raw_request(f"SIP/2.0/UDP 127.0.0.1:{client.local_port};branch=z9hG4bKbig;rport",
                          extra="X-Padding: " + "p" * 5000 + "\r\n")
        client.send_raw(big)
        await asyncio.sleep(0.15)
        assert [(r.status, r.reason) for r in client.responses] == [(513, "Message Too Large")]
        assert core.received == []


async def test_datagram_up_to_65535_bytes_received():
    from routescript.transport import TransportLayer
    got = []
    layer = TransportLayer(lambda m, s: got.append(m), max_message_size=65536)
    info = await layer.listen("udp", "127.0.0.1", 0)
    try:
        async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
            req = client.request("MESSAGE", "sip:x@127.0.0.1", body=b"b" * 60000, content_type="text/plain")
            client.send(req)
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.01)
            assert got and len(got[0].body) == 60000
    finally:
        await layer.close()


async def test_keepalive_crlf_ignored_and_responses_passed_up(core):
    info = await core.layer.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        client.send_raw(b"\r\n\r\n")
        client.send_raw(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKr\r\n"
                        b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: r1\r\n"
                        b"CSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n")
        await core.wait_for(1)
        msg, _ = core.received[0]
        assert not msg.is_request and msg.status == 200
        assert msg.via.received is None       # responses are not stamped
        assert await silent(client)           # and never answered


async def test_exception_in_callback_does_not_stop_the_listener(caplog):
    from routescript.transport import TransportLayer
    calls = []

    def on_message(msg, source):
        calls.append(msg)
        raise RuntimeError("core bug")

    layer = TransportLayer(on_message)
    info = await layer.listen("udp", "127.0.0.1", 0)
    try:
        async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
            client.send(client.options())
            client.send(client.options())
            for _ in range(100):
                if len(calls) == 2:
                    break
                await asyncio.sleep(0.01)
            assert len(calls) == 2
            assert "core bug" in caplog.text
    finally:
        await layer.close()


async def test_send_request_to_destination_and_destination_for(core):
    info = await core.layer.listen("udp", "127.0.0.1", 0)
    async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
        dest = core.layer.destination_for(parse_uri(client.contact_uri))
        assert dest == Destination("udp", "127.0.0.1", client.local_port)
        notify = build_request("NOTIFY", client.contact_uri, [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{info.port};branch={generate_branch()}"),
            ("From", "<sip:p@x>;tag=1"), ("To", "<sip:t@x>;tag=2"), ("Call-ID", "n1"), ("CSeq", "1 NOTIFY")])
        core.layer.send(notify.to_bytes(), dest)
        got = await client.expect_request("NOTIFY")
        assert got.call_id == "n1"


def test_destination_for_uri_parameters(core):
    layer = core.layer
    assert layer.destination_for(parse_uri("sip:b@192.0.2.1")) == Destination("udp", "192.0.2.1", 5060)
    assert layer.destination_for(parse_uri("sip:b@192.0.2.1:5070;transport=TCP")) == \
        Destination("tcp", "192.0.2.1", 5070)
    assert layer.destination_for(parse_uri("sip:b@[::1]:5070")).host == "::1"
    assert layer.destination_for(parse_uri("sip:b@x.example;maddr=192.0.2.9")).host == "192.0.2.9"
    with pytest.raises(TransportError):
        layer.destination_for(parse_uri("sips:b@192.0.2.1"))
    with pytest.raises(TransportError):
        layer.destination_for(parse_uri("sip:b@192.0.2.1;transport=sctp"))


async def test_send_without_a_socket_of_that_family_is_a_transport_error(core):
    await core.layer.listen("udp", "127.0.0.1", 0)
    with pytest.raises(TransportError):
        core.layer.send(b"x", Destination("udp", "::1", 5060))


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no ::1")
async def test_ipv6_udp(core):
    info = await core.layer.listen("udp", "::1", 0)
    assert info.name == f"udp:[::1]:{info.port}"
    async with await SipTestClient.start("udp", ("::1", info.port)) as client:
        req = client.options()
        assert "[::1]" in req.header("Via")
        resp = await client.send_request(req)
        assert resp.status == 200
        msg, source = core.received[0]
        assert source.remote_host == "::1"
        assert msg.via.rport == client.local_port and msg.via.received == "::1"


async def test_closed_layer_refuses_to_send(core):
    await core.layer.listen("udp", "127.0.0.1", 0)
    await core.layer.close()
    with pytest.raises(TransportError):
        await core.layer.deliver(b"x", Destination("udp", "127.0.0.1", 9))
    with pytest.raises(SipTimeout):
        raise SipTimeout("the exception type tests rely on")


# --- property: no input reaches the callback unparsed, and none raises ----------------------------

_VALID = raw_request("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKfz;rport")


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=600),
    st.tuples(st.integers(0, len(_VALID)), st.binary(max_size=20)).map(
        lambda t: _VALID[:t[0]] + t[1] + _VALID[t[0]:]),
    st.integers(0, len(_VALID)).map(lambda n: _VALID[:n]),
))
def test_receive_never_raises_and_only_hands_up_parsed_messages(data):
    got: list = []
    replies: list[bytes] = []
    layer = TransportLayer(lambda m, s: got.append(m))
    source = Source("udp", SocketInfo("udp", "127.0.0.1", 5060), "192.0.2.1", 5060)
    layer.receive(data, source, replies.append)
    assert len(got) + len(replies) <= 1
    for reply in replies:
        assert reply.startswith((b"SIP/2.0 4", b"SIP/2.0 5"))
    for m in got:
        assert m.is_request is False or m.via.received is not None or m.via.host == "192.0.2.1"


def _sysctl(name: str) -> int:
    from pathlib import Path

    return int(Path(f"/proc/sys/net/core/{name}").read_text())


async def test_udp_buffers_sized_from_maxbuffer() -> None:
    # A NOTIFY fan-out's answers come back in one burst: the default ~200 KB buffer dropped them.
    import socket

    from routescript.transport import TransportLayer

    rmem_max, wmem_max = _sysctl("rmem_max"), _sysctl("wmem_max")
    wanted = min(1 << 20, rmem_max)
    layer = TransportLayer(lambda msg, src: None, udp_buffer=wanted)
    try:
        info = await layer.listen("udp", "127.0.0.1", 0)
        sock = layer._udp[info].transport.get_extra_info("socket")   # type: ignore[union-attr]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= wanted   # Linux doubles it
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= min(wanted, wmem_max)
    finally:
        await layer.close()


async def test_send_refuses_an_address_of_the_other_family_than_the_socket_named(core):
    """A Destination naming a UDP socket (every reply names the one its request came in on) is sent
    from that socket; an IPv6 address cannot leave from an IPv4 socket: TransportError, not a crash."""
    info = await core.layer.listen("udp", "127.0.0.1", 0)
    with pytest.raises(TransportError, match="no UDP socket"):
        core.layer.send(b"x", Destination("udp", "::1", 5060, socket=info))
    with pytest.raises(TransportError, match="no UDP socket"):
        core.layer.send(b"x", Destination("udp", "127.0.0.1", 5060,
                                          socket=SocketInfo("udp", "127.0.0.1", 1)))   # not ours


class _Endpoint:
    """What on_datagram needs of a UdpEndpoint: its socket and a sendto (recorded)."""

    def __init__(self) -> None:
        self.info = SocketInfo("udp", "127.0.0.1", 5060)
        self.sent: list[bytes] = []
        self.sources: dict[tuple[str, int], Source] = {}

    def sendto(self, data: bytes, host: str, port: int) -> None:
        self.sent.append(data)


@pytest.mark.parametrize("data", [b"", b"\r\n", b"\r\n\r\n", b"\x00\x00\x00\x00", b" \t\r\n", b"\n"])
def test_keepalive_datagrams_are_dropped_silently_before_parsing(data: bytes, caplog) -> None:
    received: list[object] = []
    layer = TransportLayer(lambda msg, source: received.append(msg))
    endpoint = _Endpoint()
    with caplog.at_level(logging.DEBUG, logger="routescript.transport"):
        layer.on_datagram(endpoint, data, "127.0.0.1", 6000)   # type: ignore[arg-type]
    assert received == [] and endpoint.sent == [] and caplog.records == []


def test_a_message_after_leading_crlf_is_not_taken_for_a_keepalive() -> None:
    received: list[object] = []
    layer = TransportLayer(lambda msg, source: received.append(msg))
    layer.on_datagram(_Endpoint(), b"\r\n" + raw_request("SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKk"),  # type: ignore[arg-type]
                      "127.0.0.1", 6000)
    assert len(received) == 1


def test_each_peer_gets_its_own_source_made_once_and_the_memo_stays_bounded() -> None:
    from routescript.sip._memo import MEMO_SIZE
    received: list[Source] = []
    layer = TransportLayer(lambda msg, source: received.append(source))
    endpoint = _Endpoint()
    data = raw_request("SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKs")   # sent-by differs: reply_to stamped
    for host, port in (("127.0.0.1", 6000), ("127.0.0.1", 6001), ("127.0.0.1", 6000)):
        layer.on_datagram(endpoint, data, host, port)   # type: ignore[arg-type]
    assert [(s.remote_host, s.remote_port) for s in received] == [
        ("127.0.0.1", 6000), ("127.0.0.1", 6001), ("127.0.0.1", 6000)]
    assert all(s.socket == endpoint.info for s in received)
    assert all(s.reply_to is not None and s.reply_to.port == 5060 for s in received)
    assert endpoint.sources[("127.0.0.1", 6000)] == Source("udp", endpoint.info, "127.0.0.1", 6000)
    for port in range(MEMO_SIZE + 5):
        layer.on_datagram(endpoint, b"\x00x", "127.0.0.2", port)   # type: ignore[arg-type]
    assert len(endpoint.sources) <= MEMO_SIZE
