"""TCP listeners and connections over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from routescript.sip import build_request, generate_branch
from routescript.testing import SipTestClient
from routescript.transport import Destination, TransportError, TransportLayer
from routescript.transport.keepalive import KeepAlive

from .conftest import has_ipv6_loopback


async def open_raw(port: int, host: str = "127.0.0.1"):
    return await asyncio.open_connection(host, port)


async def read_closed(reader: asyncio.StreamReader, timeout: float = 2.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), timeout)


def notify_to(client: SipTestClient, via_host: str, via_port: int, call_id: str = "n-tcp") -> bytes:
    return build_request("NOTIFY", client.contact_uri, [
        ("Via", f"SIP/2.0/TCP {via_host}:{via_port};branch={generate_branch()}"),
        ("From", "<sip:p@x>;tag=1"), ("To", "<sip:t@x>;tag=2"), ("Call-ID", call_id),
        ("CSeq", "1 NOTIFY")]).to_bytes()


async def test_request_and_reply_on_the_same_connection(core):
    info = await core.layer.listen("tcp", "127.0.0.1", 0)
    async with await SipTestClient.start("tcp", ("127.0.0.1", info.port)) as client:
        req = client.subscribe("sip:alice@127.0.0.1")
        resp = await client.send_request(req)
        assert resp.status == 200
        msg, source = core.received[0]
        assert source.proto == "tcp" and source.conn_id is not None and source.socket == info
        assert source.remote_port == client.local_port
        assert msg.via.rport == client.local_port and msg.via.received == "127.0.0.1"
        assert core.layer.tcp_connections == 1


async def test_two_messages_in_one_segment_and_one_split(core):
    info = await core.layer.listen("tcp", "127.0.0.1", 0)
    async with await SipTestClient.start("tcp", ("127.0.0.1", info.port)) as client:
        a, b = client.options(), client.options()
        client.send_raw(a.to_bytes() + b.to_bytes()[:30])
        await core.wait_for(1)
        client.send_raw(b.to_bytes()[30:])
        await core.wait_for(2)
        assert [m.call_id for m, _ in core.received] == [a.call_id, b.call_id]
        assert (await client.expect_response(b, final=True)).status == 200


async def test_ping_gets_pong(core):
    info = await core.layer.listen("tcp", "127.0.0.1", 0)
    reader, writer = await open_raw(info.port)
    writer.write(b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
    writer.close()


async def test_garbage_closes_only_that_connection(core):
    info = await core.layer.listen("tcp", "127.0.0.1", 0)
    async with await SipTestClient.start("tcp", ("127.0.0.1", info.port)) as good:
        reader, writer = await open_raw(info.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        assert await read_closed(reader) == b""          # closed without an answer
        assert (await good.send_request(good.options())).status == 200
        assert core.received and all(m.method == "OPTIONS" for m, _ in core.received)


async def test_missing_content_length_answered_400_then_closed(core):
    info = await core.layer.listen("tcp", "127.0.0.1", 0)
    reader, writer = await open_raw(info.port)
    writer.write("OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n"
                 f"Via: SIP/2.0/TCP 127.0.0.1:1;branch={generate_branch()}\r\n"
                 "From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: nocl\r\n"
                 "CSeq: 1 OPTIONS\r\n\r\n".encode())
    data = await read_closed(reader)
    assert data.startswith(b"SIP/2.0 400 Missing Content-Length")
    assert core.received == []


async def test_unparsable_but_framed_message_answered_400_and_connection_kept(core):
    info = await core.layer.listen("tcp", "127.0.0.1", 0)
    async with await SipTestClient.start("tcp", ("127.0.0.1", info.port)) as client:
        bad = (f"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP {client.hostport};branch=z9hG4bKq\r\n"
               "From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: q1\r\nCSeq: 1 INVITE\r\n"
               "Content-Length: 0\r\n\r\n").encode()
        client.send_raw(bad)
        for _ in range(100):
            if client.responses:
                break
            await asyncio.sleep(0.01)
        assert client.responses[0].status == 400
        assert (await client.send_request(client.options())).status == 200
        assert client.connected


async def test_oversize_message_answered_513_and_closed(core):
    info = await core.layer.listen("tcp", "127.0.0.1", 0)   # max_message_size=4096 in the fixture
    reader, writer = await open_raw(info.port)
    writer.write("MESSAGE sip:x@127.0.0.1 SIP/2.0\r\n"
                 f"Via: SIP/2.0/TCP 127.0.0.1:1;branch={generate_branch()}\r\n"
                 "From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: big\r\nCSeq: 1 MESSAGE\r\n"
                 "Content-Length: 100000\r\n\r\n".encode())
    data = await read_closed(reader)
    assert data.startswith(b"SIP/2.0 513 Message Too Large")
    assert core.received == []


async def test_idle_connection_closed():
    layer = TransportLayer(lambda m, s: None, tcp_idle_timeout=0.15)
    info = await layer.listen("tcp", "127.0.0.1", 0)
    try:
        reader, writer = await open_raw(info.port)
        await asyncio.sleep(0.05)
        assert layer.tcp_connections == 1
        writer.write(b"\r\n\r\n")                           # activity pushes the timeout back
        assert await asyncio.wait_for(reader.readexactly(2), 1) == b"\r\n"
        assert await read_closed(reader, 2.0) == b""
        assert layer.tcp_connections == 0
    finally:
        await layer.close()


async def test_connection_bound():
    layer = TransportLayer(lambda m, s: None, max_tcp_connections=2)
    info = await layer.listen("tcp", "127.0.0.1", 0)
    try:
        conns = [await open_raw(info.port) for _ in range(2)]
        await asyncio.sleep(0.05)
        reader, _ = await open_raw(info.port)
        assert await read_closed(reader) == b""            # the third is refused
        assert layer.tcp_connections == 2
        for _, w in conns:
            w.close()
    finally:
        await layer.close()


async def test_request_reuses_the_clients_connection(core):
    """How NOTIFYs reach a TCP subscriber: the open connection from its Contact address is reused."""
    info = await core.layer.listen("tcp", "127.0.0.1", 0)
    async with await SipTestClient.start("tcp", ("127.0.0.1", info.port)) as client:
        await client.send_request(client.subscribe("sip:alice@127.0.0.1"))
        _, source = core.received[0]
        from routescript.sip import parse_uri
        dest = core.layer.destination_for(parse_uri(client.contact_uri))
        assert dest.proto == "tcp" and dest.port == client.local_port
        await core.layer.deliver(notify_to(client, "127.0.0.1", info.port), dest)
        got = await client.expect_request("NOTIFY")
        assert got.call_id == "n-tcp"
        assert core.layer.tcp_connections == 1             # no second connection
        # by conn_id as well
        await core.layer.deliver(notify_to(client, "127.0.0.1", info.port, "n2"),
                                 Destination("tcp", "192.0.2.1", 1, conn_id=source.conn_id))
        assert (await client.expect_request("NOTIFY")).call_id == "n2"


async def test_outgoing_connection_opened_on_demand_and_reused():
    received = []
    server = TransportLayer(lambda m, s: received.append((m, s)))
    peer = TransportLayer(lambda m, s: received.append((m, s)))
    await server.listen("tcp", "127.0.0.1", 0)
    peer_info = await peer.listen("tcp", "127.0.0.1", 0)
    try:
        dest = Destination("tcp", "127.0.0.1", peer_info.port)
        for i in range(3):
            data = (f"NOTIFY sip:p@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK{i}\r\n"
                    f"From: <sip:a@b>;tag=1\r\nTo: <sip:p@b>;tag=2\r\nCall-ID: o{i}\r\n"
                    f"CSeq: {i + 1} NOTIFY\r\n"
                    "Content-Length: 0\r\n\r\n").encode()
            if i == 2:
                server.send(data, dest)                     # sync send on the open connection
            else:
                await server.deliver(data, dest)
        for _ in range(200):
            if len(received) == 3:
                break
            await asyncio.sleep(0.01)
        assert [m.call_id for m, _ in received] == ["o0", "o1", "o2"]
        assert len({s.conn_id for _, s in received}) == 1
        assert server.tcp_connections == 1
        assert server.socket_for(dest) is not None
    finally:
        await server.close()
        await peer.close()


async def test_connect_refused_is_a_transport_error(core):
    await core.layer.listen("tcp", "127.0.0.1", 0)
    probe = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(TransportError):
        await core.layer.deliver(b"x", Destination("tcp", "127.0.0.1", port))


async def test_reply_after_the_connection_closed_opens_a_new_one_to_sent_by():
    """RFC 3261 18.2.2: connection gone -> new connection to received at the sent-by port."""
    got: list = []
    answerer = TransportLayer(lambda m, s: got.append((m, s)))
    uac = TransportLayer(lambda m, s: got.append((m, s)))
    info = await answerer.listen("tcp", "127.0.0.1", 0)
    uac_info = await uac.listen("tcp", "127.0.0.1", 0)          # where the UAC accepts connections
    try:
        data = (f"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{uac_info.port};"
                f"branch={generate_branch()}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: re1\r\n"
                "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        _reader, writer = await open_raw(info.port)
        writer.write(data)
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        req, source = got.pop()
        writer.close()
        await asyncio.sleep(0.05)
        from routescript.sip import build_reply
        answerer.send_reply(build_reply(req, 200), source)
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.01)
        resp, src = got[0]
        assert resp.status == 200 and resp.call_id == "re1"
        assert src.socket == uac_info
    finally:
        await answerer.close()
        await uac.close()


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no ::1")
async def test_ipv6_tcp(core):
    info = await core.layer.listen("tcp", "::1", 0)
    async with await SipTestClient.start("tcp", ("::1", info.port)) as client:
        assert (await client.send_request(client.options())).status == 200
        _, source = core.received[0]
        assert source.remote_host == "::1" and source.proto == "tcp"


# --- per-address bound and tcp_max_msg_time (issue 15) ------------------------------------------------

async def _layer(stub, **options):
    """The stub core on a TransportLayer made with `options`; returns the TCP listening port."""
    stub.layer = TransportLayer(stub.on_message, tcp_idle_timeout=30.0, **options)
    return (await stub.layer.listen("tcp", "127.0.0.1", 0)).port


async def _wait(predicate, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_one_address_cannot_take_every_connection(caplog):
    """2,048 idle connections from one address used to lock every other TCP client out: over
    tcp_max_connections_per_ip the new connection is closed at accept (logged once); another address
    is still served, and a connection closing frees its address's slot."""
    from .conftest import StubCore

    stub = StubCore()
    port = await _layer(stub, max_tcp_connections=6, max_tcp_connections_per_ip=3)
    try:
        held = [await open_raw(port) for _ in range(3)]
        await _wait(lambda: stub.layer.tcp_connections == 3)
        refused = [await open_raw(port) for _ in range(3)]
        for reader, _ in refused:
            assert await read_closed(reader) == b""          # closed at accept, nothing said
        assert stub.layer.tcp_connections == 3
        assert sum("tcp_max_connections_per_ip" in r.getMessage() for r in caplog.records) == 1
        async with await SipTestClient.start("tcp", ("127.0.0.1", port), local_host="127.0.0.2") as other:
            assert (await other.send_request(other.options())).status == 200
        held.pop()[1].close()
        await _wait(lambda: stub.layer.tcp_connections == 2)
        reader, writer = await open_raw(port)                # the slot is free again
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
        for _, w in [*held, (reader, writer)]:
            w.close()
    finally:
        await stub.layer.close()


async def test_trusted_address_is_exempt_from_the_per_address_bound():
    from routescript.core.netlist import NetworkList

    from .conftest import StubCore

    stub = StubCore()
    trusted = NetworkList.parse("127.0.0.0/30")
    port = await _layer(stub, max_tcp_connections_per_ip=2, tcp_trusted_sources=trusted)
    try:
        conns = [await open_raw(port) for _ in range(5)]
        await _wait(lambda: stub.layer.tcp_connections == 5)
        reader, writer = conns[-1]
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
        for _, w in conns:
            w.close()
    finally:
        await stub.layer.close()


async def test_a_message_trickled_too_slowly_closes_the_connection(caplog):
    """A peer sending a message a few bytes at a time never looks idle; once its first bytes are in, the
    message has tcp_max_msg_time to arrive whole. Keep-alive line ends and complete messages do not
    start that clock."""
    from .conftest import StubCore

    stub = StubCore()
    port = await _layer(stub, tcp_max_msg_time=0.3)
    try:
        slow_reader, slow = await open_raw(port)
        alive_reader, alive = await open_raw(port)
        async with await SipTestClient.start("tcp", ("127.0.0.1", port)) as good:
            slow.write(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKs\r\n")
            alive.write(b"\r\n")                              # may become a ping: no message begun
            for _ in range(4):                                # complete messages, 0.15 s apart
                assert (await good.send_request(good.options())).status == 200
                with contextlib.suppress(ConnectionError):   # the slow one keeps sending (till cut off)
                    slow.write(b"X")
                await asyncio.sleep(0.15)
            try:
                assert await read_closed(slow_reader, 2.0) == b""
            except ConnectionError:                           # closed while we were still writing
                pass
            assert good.connected
            alive.write(b"\r\n")
            assert await asyncio.wait_for(alive_reader.readexactly(2), 2) == b"\r\n"
        assert any("tcp_max_msg_time" in r.getMessage() for r in caplog.records)
        alive.close()
    finally:
        await stub.layer.close()


@pytest.mark.parametrize("keepalive", [KeepAlive(idle=30, interval=5, count=4), None])
async def test_keepalive_on_accepted_connections(keepalive):
    """tcp_keepalive (on by default, as OpenSIPS) with tcp_keepidle/keepinterval/keepcount: set on every
    accepted connection's socket; off: the system's default (no keepalive)."""
    import socket

    layer = TransportLayer(lambda m, s: None)
    layer.tcp_keepalive = keepalive
    info = await layer.listen("tcp", "127.0.0.1", 0)
    try:
        _reader, writer = await open_raw(info.port)
        for _ in range(100):
            if layer.tcp_connections:
                break
            await asyncio.sleep(0.01)
        [conn] = layer.connections()
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == (keepalive is not None)
        if keepalive is not None:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
        writer.close()
    finally:
        await layer.close()
