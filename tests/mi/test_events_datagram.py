"""External event subscribers: routescript.core.evi (subscribe, refresh, expiry with an injected clock) and
modules/event_datagram delivering raised events as JSON-RPC notifications over UDP and UNIX datagram
sockets, subscribed over MI (event_subscribe / subscribers_list / raise_event on mi_http and mi_fifo)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from routescript.core.events import EventBus
from routescript.core.evi import (DEFAULT_EXPIRE, MAX_SUBSCRIBERS, EventInterface, SubscribeError,
                                   event_interface)
from routescript.core.server import Server
from routescript.mi.client import MIReplyError, call_fifo, call_http

TIMEOUT = 5.0

CFG = """
log_level = 1
socket = udp:127.0.0.1:0
loadmodule "sl.so"
loadmodule "httpd.so"
loadmodule "mi_http.so"
loadmodule "mi_fifo.so"
loadmodule "event_datagram.so"
modparam("httpd", "ip", "127.0.0.1")
modparam("httpd", "port", 0)
modparam("mi_fifo", "fifo_name", "{fifo}")
modparam("mi_fifo", "reply_dir", "{dir}/")
route {{ exit; }}
event_route[E_TEST] {{ xlog("L_INFO", "E_TEST a=$param(a)\\n"); }}
"""


# ----------------------------------------------------------------------------------- evi, in memory
class FakeTransport:
    proto = "fake"

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], str]] = []

    async def parse(self, address: str) -> str:
        if not address or address == "bad":
            raise ValueError("bad address")
        return address.lower()

    def print(self, sock: str) -> str:
        return sock

    def raise_event(self, name: str, params: dict[str, Any], sock: str) -> None:
        if sock == "broken":
            raise OSError("unreachable")
        self.sent.append((name, params, sock))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def evi() -> tuple[EventInterface, FakeTransport, Clock]:
    bus = EventBus()
    bus.declare("E_A")
    bus.declare("E_B")
    clock = Clock()
    interface = EventInterface(bus, clock=clock)
    transport = FakeTransport()
    interface.register_transport(transport)
    return interface, transport, clock


async def test_subscribe_refresh_expire(evi: tuple[EventInterface, FakeTransport, Clock]) -> None:
    interface, transport, clock = evi
    sub = await interface.subscribe("E_A", "fake:One", 10)
    assert sub is not None and sub.socket == "fake:one" and sub.expire == 10
    clock.now += 8
    again = await interface.subscribe("E_A", "fake:ONE", 10)  # same socket: refreshed, not added
    assert again is sub and len(interface.subscribers()) == 1
    clock.now += 8  # 16 s after the first subscription, 8 after the refresh: alive
    await interface.bus.raise_event("E_A", {"x": 1})
    await interface.bus.raise_event("E_B", {"x": 2})  # nobody subscribed to E_B
    assert transport.sent == [("E_A", {"x": 1}, "one")]
    clock.now += 3
    assert interface.subscribers() == []  # expired, removed when met
    await interface.bus.raise_event("E_A", {"x": 3})
    assert len(transport.sent) == 1


async def test_unsubscribe_never_and_isolation(evi: tuple[EventInterface, FakeTransport, Clock]) -> None:
    interface, transport, clock = evi
    await interface.subscribe("E_A", "fake:broken")
    await interface.subscribe("E_A", "fake:two", None)
    assert [s.expire for s in interface.subscribers("E_A")] == [None, DEFAULT_EXPIRE]  # newest first
    clock.now += 10 * DEFAULT_EXPIRE
    await interface.bus.raise_event("E_A", {})
    assert transport.sent == [("E_A", {}, "two")]  # the broken one failed alone, then expired
    assert await interface.subscribe("E_A", "fake:two", 0) is None
    assert interface.subscribers() == []


async def test_refused_subscriptions(evi: tuple[EventInterface, FakeTransport, Clock]) -> None:
    interface, _transport, _clock = evi
    for event, sock, why in [("E_NOPE", "fake:x", "unknown event"),
                             ("E_A", "udp:1.2.3.4:5", "no event transport"),
                             ("E_A", "fake:bad", "bad socket"), ("E_A", "nocolon", "no event transport")]:
        with pytest.raises(SubscribeError, match=why):
            await interface.subscribe(event, sock)
    for i in range(MAX_SUBSCRIBERS):
        await interface.subscribe("E_A", f"fake:s{i}")
    with pytest.raises(SubscribeError, match="too many"):
        await interface.subscribe("E_B", "fake:one_more")
    with pytest.raises(ValueError, match="already registered"):
        interface.register_transport(FakeTransport())


# ------------------------------------------------------------------------- a running server
class Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    async def next(self) -> dict[str, Any]:
        data = await asyncio.wait_for(self.queue.get(), TIMEOUT)
        return json.loads(data)


@pytest.fixture
async def running(tmp_path: Path) -> Any:
    fifo = str(tmp_path / "fifo")
    cfg = tmp_path / "events.cfg"
    cfg.write_text(CFG.format(fifo=fifo, dir=tmp_path))
    server = Server()
    server.load(str(cfg))
    server.events.declare("E_TEST")  # as a module declaring it would (Module.events)
    await server.start()
    url = server.modules.get("httpd").url + "/mi"  # type: ignore[union-attr]

    async def mi(transport: str, method: str, params: Any = None) -> Any:
        if transport == "http":
            return await asyncio.wait_for(asyncio.to_thread(call_http, url, method, params), TIMEOUT)
        return await asyncio.wait_for(asyncio.to_thread(call_fifo, fifo, method, params,
                                                        reply_dir=str(tmp_path)), TIMEOUT)
    loop = asyncio.get_running_loop()
    transport, receiver = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
    try:
        yield server, mi, receiver, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()
        await server.stop()


@pytest.mark.parametrize("transport", ["http", "fifo"])
async def test_udp_subscriber_over_mi(running: Any, transport: str) -> None:
    server, mi, receiver, port = running
    sock = f"udp:127.0.0.1:{port}"
    assert await mi(transport, "event_subscribe", ["E_TEST", sock, 60]) == "OK"
    assert await mi(transport, "events_subscribers_list") == {"Events": [
        {"name": "E_TEST", "id": 0, "Subscribers": [{"socket": sock, "expire": 60}]}]}
    assert await mi(transport, "subscribers_list", {"event": "E_TEST", "socket": sock}) == {
        "Event": {"name": "E_TEST", "id": 0, "Subscriber": {"socket": sock, "expire": 60}}}

    await server.events.raise_event("E_TEST", {"a": "x", "n": 2})  # raised in-process (a module would)
    assert await receiver.next() == {"jsonrpc": "2.0", "method": "E_TEST", "params": {"a": "x", "n": 2}}
    assert await mi(transport, "raise_event", {"event": "E_TEST", "params": {"a": "mi"}}) == "OK"
    assert await receiver.next() == {"jsonrpc": "2.0", "method": "E_TEST", "params": {"a": "mi"}}
    assert await mi(transport, "raise_event", ["E_TEST"]) == "OK"
    assert await receiver.next() == {"jsonrpc": "2.0", "method": "E_TEST"}

    assert await mi(transport, "event_subscribe", ["E_TEST", sock, 0]) == "OK"  # unsubscribe
    assert await mi(transport, "subscribers_list") == {"Events": []}
    await server.events.raise_event("E_TEST", {"a": "lost"})
    await mi(transport, "event_subscribe", {"event": "E_TEST", "socket": sock})
    await server.events.raise_event("E_TEST", {"a": "after"})
    assert (await receiver.next())["params"] == {"a": "after"}  # nothing came while unsubscribed


@pytest.mark.parametrize("method, params, code, message, data", [
    ("event_subscribe", ["E_NOPE", "udp:127.0.0.1:9", 10], 400, "Bad parameter value",
     "unknown event E_NOPE"),
    ("event_subscribe", ["E_TEST", "tcp:127.0.0.1:9", 10], 400, "Bad parameter value", None),
    ("event_subscribe", ["E_TEST", "udp:127.0.0.1:99999", 10], 400, "Bad parameter value", None),
    ("event_subscribe", ["E_TEST", "udp:127.0.0.1:9", -1], -32602, "Invalid params", "Negative expire value"),
    ("subscribers_list", ["E_NOPE"], 404, "Event not published", None),
    ("subscribers_list", ["E_TEST", "udp:127.0.0.1:9"], 404, "Subscriber does not exist", None),
    ("raise_event", ["E_NOPE"], 400, "Event not registered", None),
    ("raise_event", ["E_TEST", "text"], -32602, "Invalid params", "Bad type for parameter 'params'"),
])
async def test_mi_errors(running: Any, method: str, params: Any, code: int, message: str, data: Any) -> None:
    _server, mi, _receiver, _port = running
    with pytest.raises(MIReplyError) as info:
        await mi("http", method, params)
    assert (info.value.code, info.value.message) == (code, message)
    if data is not None:
        assert info.value.data == data


async def test_unix_subscriber_and_expiry(running: Any, tmp_path: Path) -> None:
    server, mi, _receiver, _port = running
    path = str(tmp_path / "ev.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.setblocking(False)
    try:
        clock = Clock()
        event_interface(server).clock = clock  # made by event_datagram at load; time is injected
        assert await mi("http", "event_subscribe", ["E_TEST", f"unix:{path}", 30]) == "OK"
        await server.events.raise_event("E_TEST", {"a": 1})
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(rx, 65536), TIMEOUT)
        assert json.loads(data) == {"jsonrpc": "2.0", "method": "E_TEST", "params": {"a": 1}}
        clock.now += 31
        assert await mi("http", "subscribers_list", ["E_TEST"]) == {
            "Event": {"name": "E_TEST", "id": 0, "Subscribers": []}}
    finally:
        rx.close()
