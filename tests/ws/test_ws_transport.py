"""The ws listener of the TransportLayer over real loopback sockets: SIP in and out over a WebSocket,
the connection table's bounds, a silent connection cut off, plain HTTP answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from conftest import StubCore  # tests/transport/conftest.py's, through tests/ws/conftest.py

from routescript.sip import Destination
from routescript.testing import SipTestClient
from routescript.transport import TransportError, TransportLayer
from routescript.transport.ws import WsOptions


@pytest.fixture
async def ws_core() -> AsyncIterator[StubCore]:
    stub = StubCore()
    stub.layer = TransportLayer(stub.on_message, max_message_size=4096, tcp_idle_timeout=30.0,
                                max_tcp_connections_per_ip=3)
    stub.layer.ws_options = WsOptions(require_origin=False, handshake_timeout=0.5)
    yield stub
    await stub.layer.close()


async def test_sip_over_ws_in_and_out(ws_core: StubCore) -> None:
    info = await ws_core.layer.listen("ws", "127.0.0.1", 0)
    assert info.name.startswith("ws:127.0.0.1:")
    async with await SipTestClient.start("ws", ("127.0.0.1", info.port)) as ua:
        assert ua.ws_status == 101
        resp = await ua.send_request(ua.options())
        assert resp.status == 200
        _msg, source = ws_core.received[0]
        assert source.proto == "ws" and source.socket == info and source.conn_id is not None
        assert (source.remote_host, source.remote_port) == (ua.local_host, ua.local_port)
        # a request of ours reaches the peer by its connection id (a NOTIFY), and by its address (a
        # relayed request whose Contact names the connection's source)
        notify = ua.request("NOTIFY", ua.contact_uri, call_id="n1")
        ws_core.layer.send(notify.to_bytes(), Destination("ws", "x.invalid", 5060, source.conn_id))
        assert (await ua.expect_request("NOTIFY", call_id="n1")).method == "NOTIFY"
        again = ua.request("NOTIFY", ua.contact_uri, call_id="n2")
        ws_core.layer.send(again.to_bytes(), Destination("ws", ua.local_host, ua.local_port))
        await ua.expect_request("NOTIFY", call_id="n2")
        assert [c.conn_id for c in ws_core.layer.connections()] == [source.conn_id]


async def test_no_connection_no_send(ws_core: StubCore) -> None:
    """We never open a WebSocket connection: a ws destination without one is a TransportError."""
    await ws_core.layer.listen("ws", "127.0.0.1", 0)
    with pytest.raises(TransportError, match="no open WebSocket connection"):
        ws_core.layer.send(b"x", Destination("ws", "127.0.0.1", 9))
    with pytest.raises(TransportError, match="no open WebSocket connection"):
        await ws_core.layer.deliver(b"x", Destination("ws", "127.0.0.1", 9))


async def test_connections_per_address_are_bounded(ws_core: StubCore) -> None:
    """tcp_max_connections_per_ip counts WebSocket connections (3 here): the 4th is closed at accept."""
    info = await ws_core.layer.listen("ws", "127.0.0.1", 0)
    clients = [await SipTestClient.start("ws", ("127.0.0.1", info.port)) for _ in range(3)]
    try:
        assert ws_core.layer.tcp_connections == 3
        with pytest.raises(AssertionError, match="handshake refused"):
            await SipTestClient.start("ws", ("127.0.0.1", info.port))
        assert ws_core.layer.tcp_connections == 3
        for ua in clients:
            assert (await ua.send_request(ua.options())).status == 200
    finally:
        for ua in clients:
            await ua.close()


async def test_many_connections_each_its_own_flow(ws_core: StubCore) -> None:
    ws_core.layer.max_tcp_connections_per_ip = 0   # no per-address bound
    info = await ws_core.layer.listen("ws", "127.0.0.1", 0)
    clients = await asyncio.gather(*(SipTestClient.start("ws", ("127.0.0.1", info.port)) for _ in range(40)))
    try:
        responses = await asyncio.gather(*(ua.send_request(ua.options()) for ua in clients))
        assert [r.status for r in responses] == [200] * 40
        assert len({source.conn_id for _m, source in ws_core.received}) == 40
    finally:
        for ua in clients:
            await ua.close()
    for _ in range(100):
        if ws_core.layer.tcp_connections == 0:
            break
        await asyncio.sleep(0.02)
    assert ws_core.layer.tcp_connections == 0


async def _raw(port: int, data: bytes) -> bytes:
    """Send `data` on a plain TCP connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(-1), 3.0)
    finally:
        writer.close()


async def test_plain_http_gets_an_http_error_and_a_close(ws_core: StubCore) -> None:
    info = await ws_core.layer.listen("ws", "127.0.0.1", 0)
    answer = await _raw(info.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 426 ")
    assert ws_core.received == []


async def test_a_handshake_left_unfinished_is_cut_off(ws_core: StubCore) -> None:
    """ws_handshake_timeout (0.5 s here) runs from the handshake's first bytes."""
    info = await ws_core.layer.listen("ws", "127.0.0.1", 0)
    assert await _raw(info.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n") == b""
    assert ws_core.layer.tcp_connections == 0


async def test_a_silent_connection_is_closed_when_idle(ws_core: StubCore) -> None:
    """Nothing sent at all: the idle timeout's (tcp_connection_lifetime; 0.5 s here), as for TCP."""
    ws_core.layer.tcp_idle_timeout = 0.5
    info = await ws_core.layer.listen("ws", "127.0.0.1", 0)
    assert await _raw(info.port, b"") == b""
    assert ws_core.layer.tcp_connections == 0


async def test_origin_policy_on_the_listener(ws_core: StubCore) -> None:
    ws_core.layer.ws_options = WsOptions(allowed_origins=("https://page.example",))
    info = await ws_core.layer.listen("ws", "127.0.0.1", 0)
    with pytest.raises(AssertionError, match="HTTP 403"):
        await SipTestClient.start("ws", ("127.0.0.1", info.port), ws_origin="https://evil.example")
    async with await SipTestClient.start("ws", ("127.0.0.1", info.port),
                                         ws_origin="https://page.example") as ua:
        assert ua.ws_status == 101
