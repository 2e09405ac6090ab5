"""The parts Server is composed of, each alone: Routes, Timers, Replier, MessageDispatcher and the
Lifecycle's start steps (the Server-level behaviour is in test_server.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from routescript.core.close_stack import CloseStack
from routescript.core.config import CoreConfig
from routescript.core.dispatch import MessageDispatcher
from routescript.core.loader import build_registry
from routescript.core.loading import LoadError
from routescript.core.module import ModuleSet
from routescript.core.replies import Replier, to_tag
from routescript.core.routes import Routes
from routescript.core.server import Server
from routescript.core.stats import CoreCounters
from routescript.core.timers import Timers
from routescript.core.transaction_setup import make_transactions
from routescript.script import compile_script
from routescript.script.context import EVENT_ROUTE, REQUEST_ROUTE, MsgContext
from routescript.script.parser import parse_text
from routescript.sip import SocketInfo, Source, parse_message

pytestmark = pytest.mark.asyncio

SOCK = SocketInfo("udp", "127.0.0.1", 5060)
SRC = Source("udp", SOCK, "192.0.2.1", 5062)


def request(method: str = "OPTIONS", to_tag: str = "") -> Any:
    tt = f";tag={to_tag}" if to_tag else ""
    return parse_message((f"{method} sip:bob@127.0.0.1 SIP/2.0\r\n"
                          "Via: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKparts1\r\n"
                          "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
                          f"To: <sip:bob@127.0.0.1>{tt}\r\n"
                          "Call-ID: parts-1@test\r\n"
                          f"CSeq: 1 {method}\r\n"
                          "Content-Length: 0\r\n\r\n").encode())


def script(text: str) -> Any:
    return compile_script(parse_text(text, "parts.cfg"), build_registry(ModuleSet()))


class Recording:
    """A transport that keeps what the core sends."""

    def __init__(self) -> None:
        self.replies: list[tuple[Any, Any]] = []

    def send_reply(self, response: Any, source: Any, dest: Any = None) -> None:
        self.replies.append((response, source))

    def queue_delay(self, source: Any, now: float) -> float:
        return 0.0

    def reply_destination(self, response: Any, source: Any) -> Any:
        return source


class Layers:
    """The server as the parts see it (layers.SipLayers), without a Server."""

    def __init__(self) -> None:
        self.config = CoreConfig()
        self.transport: Any = Recording()
        self.transactions: Any = None


# ---------------------------------------------------------------------------------------------- Routes
async def test_routes_answer_for_the_current_script_and_a_swap_applies_to_what_runs_next() -> None:
    routes = Routes()
    assert not routes.has_event("E_X")                     # before load: no script, no event route
    first = script('route { exit; }\nevent_route[E_X] { exit; }\ntimer_route[t, 2] { exit; }\n')
    routes.script = first
    assert routes.has(REQUEST_ROUTE, None) and routes.has_event("E_X")
    assert routes.timer_routes() == [("t", 2.0)]
    assert await routes.run_event("E_X", MsgContext(route_type=EVENT_ROUTE))
    routes.script = script("route { exit; }\n")
    assert not routes.has_event("E_X") and routes.timer_routes() == []
    assert not await routes.run_event("E_X", MsgContext(route_type=EVENT_ROUTE))
    assert routes.has(EVENT_ROUTE, "E_X", first)           # a message keeps the script it started with


# ---------------------------------------------------------------------------------------------- Timers
async def test_timers_run_between_start_and_stop_only() -> None:
    ticks: list[str] = []

    class Noting(Routes):
        async def run(self, kind: str, name: str | None, ctx: MsgContext, s: Any = None) -> int:
            ticks.append(str(name))
            return await super().run(kind, name, ctx, s)

    routes = Noting()
    routes.script = script("timer_route[t, 1] { exit; }\nroute { exit; }\n")
    timers = Timers(routes, server=None)
    timers.routes = lambda: [("t", 0.01)]  # type: ignore[method-assign]
    timers.refresh()
    assert timers.names == set()                           # not started: a reload starts nothing
    timers.start()
    assert timers.names == {"t"}
    for _ in range(300):
        if len(ticks) >= 2:
            break
        await asyncio.sleep(0.01)
    assert ticks[:2] == ["t", "t"]
    await timers.stop()
    assert timers.names == set() and not timers.running


# ---------------------------------------------------------------------------------------------- Replier
async def test_replier_sends_stateless_with_server_header_and_counts_sl() -> None:
    layers = Layers()
    layers.config.values["server_header"] = "Server: parts"
    counters = CoreCounters()
    replier = Replier(layers, counters)
    msg = request()
    ctx = MsgContext(msg=msg, source=SRC)
    resp = replier.send_reply(ctx, 200, "OK", headers=(("X-A", "1"),))
    assert layers.transport.replies == [(resp, SRC)] and ctx.replied
    assert resp.header("Server") == "parts" and resp.header("X-A") == "1"
    assert resp.to.tag == to_tag(msg) == Server.to_tag(msg)
    assert counters.sent_replies == 1


async def test_replier_reply_goes_through_the_transaction_when_there_is_one() -> None:
    layers = Layers()

    class Transactions:
        def __init__(self) -> None:
            self.replied: list[Any] = []

        def reply(self, transaction: Any, response: Any) -> None:
            self.replied.append((transaction, response))

    layers.transactions = Transactions()
    replier = Replier(layers, CoreCounters())
    ctx = MsgContext(msg=request(), source=SRC, transaction="t1")
    ctx.reply_headers = [("X-Script", "yes")]
    resp = replier.reply(ctx, 180, "Ringing")
    assert layers.transactions.replied == [("t1", resp)] and layers.transport.replies == []
    assert resp.header("X-Script") == "yes" and not ctx.replied   # a provisional reply


# ---------------------------------------------------------------------------------------------- dispatcher
def dispatcher(layers: Layers | None = None) -> tuple[MessageDispatcher, Layers, CoreCounters]:
    layers = layers or Layers()
    counters = CoreCounters()
    routes = Routes()
    routes.script = script("route { exit; }\n")
    return MessageDispatcher(layers, routes, Replier(layers, counters), counters), layers, counters


async def test_a_closed_dispatcher_answers_503_and_counts_the_request() -> None:
    d, layers, counters = dispatcher()
    d.on_message(request(), SRC)
    (resp, to), = layers.transport.replies
    assert (resp.status, resp.header("Retry-After"), to) == (503, "5", SRC)
    assert (counters.rcv_requests, counters.drop_requests) == (1, 1)
    d.on_message(request("ACK"), SRC)                      # an ACK is never answered
    assert len(layers.transport.replies) == 1


async def test_an_open_dispatcher_runs_a_task_per_message_within_max_pending() -> None:
    d, layers, counters = dispatcher()
    d.accepting = True
    d.on_message(request(), SRC)
    await d.finish(1.0)
    assert counters.rcv_requests == 1 and layers.transport.replies == []   # the script exited
    d.max_pending = 0
    d.on_message(request(), SRC)
    (resp, _to), = layers.transport.replies
    assert resp.status == 503 and counters.drop_requests == 1


# ---------------------------------------------------------------------------------------------- start steps
async def test_bind_sockets_refuses_an_address_in_use_with_its_position(tmp_path: Path) -> None:
    taken = Server()
    cfg = tmp_path / "a.cfg"
    cfg.write_text("socket = udp:127.0.0.1:0\nroute { exit; }\n")
    taken.load(str(cfg))
    await taken.start()
    try:
        port = taken.sockets[0].port
        second = Server()
        cfg2 = tmp_path / "b.cfg"
        cfg2.write_text(f"socket = udp:127.0.0.1:{port}\nroute {{ exit; }}\n")
        second.load(str(cfg2))
        closing = CloseStack()
        with pytest.raises(LoadError, match="cannot listen on") as err:
            await second.lifecycle.transport_setup.bind_sockets(closing)
        assert "b.cfg:1" in str(err.value)
        await closing.close_all()                          # the transport made before the failure
    finally:
        await taken.stop()


async def test_make_transactions_takes_tm_timers(tmp_path: Path) -> None:
    server = Server()
    cfg = tmp_path / "s.cfg"
    cfg.write_text('loadmodule "tm.so"\nmodparam("tm", "fr_timeout", 7)\nroute { exit; }\n')
    server.load(str(cfg))
    closing = CloseStack()
    transactions = make_transactions(server, closing, Recording())  # type: ignore[arg-type]
    assert server.transactions is transactions and transactions.timers.timer_f == 7.0
    assert server.lifecycle.confinement.drop_privileges() is None      # no user/group: nothing to switch
    await closing.close_all()
