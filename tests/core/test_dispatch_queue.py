"""The dispatcher's MAX_RUNNING bound, kept by admission: messages beyond it wait in a FIFO run queue
without a task, start as running ones end, count in MAX_PENDING, and are dropped (logged) when the stop
grace runs out."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import pytest

from routescript.core import dispatch
from routescript.core.dispatch import MessageDispatcher
from routescript.core.replies import Replier
from routescript.core.routes import Routes
from routescript.core.stats import CoreCounters
from routescript.script import compile_script, parse_text
from routescript.script.registry import ArgSpec, Registry, function
from routescript.sip import SocketInfo, Source, parse_message

SRC = Source("udp", SocketInfo("udp", "127.0.0.1", 5060), "192.0.2.1", 5062)
MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark", default="none")


def request(n: int) -> Any:
    return parse_message((f"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK{n}\r\n"
                          f"From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c{n}\r\nCSeq: 1 OPTIONS\r\n"
                          "Content-Length: 0\r\n\r\n").encode())


class Layers:
    def __init__(self) -> None:
        from routescript.core.config import CoreConfig
        self.config = CoreConfig()
        self.transport: Any = None
        self.transactions: Any = None


def dispatcher(gate: asyncio.Event, log: list[tuple[str, str]]) -> MessageDispatcher:
    async def hold(ctx: Any, text: str) -> int:
        log.append(("start", ctx.msg.call_id))
        MARK.set(ctx.msg.call_id)   # set inside a message: must not leak into the next one's task
        await gate.wait()
        log.append(("end", ctx.msg.call_id))
        return 1

    reg = Registry()
    reg.add_function(function("hold", hold, ArgSpec("str")))
    routes = Routes()
    routes.script = compile_script(parse_text('route { hold("x"); exit; }', "q.cfg"), reg)
    layers = Layers()
    counters = CoreCounters()
    d = MessageDispatcher(layers, routes, Replier(layers, counters), counters)  # type: ignore[arg-type]
    d.accepting = True
    return d


async def test_messages_beyond_max_running_wait_in_order_without_a_task(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "MAX_RUNNING", 2)
    gate, log = asyncio.Event(), []
    d = dispatcher(gate, log)
    for n in range(5):
        d.on_message(request(n), SRC)
    await asyncio.sleep(0.01)
    assert [e for e in log if e[0] == "start"] == [("start", "c0"), ("start", "c1")]
    assert len(d._tasks) == 2 and len(d._queued) == 3
    d.max_pending = 5                  # running and queued count together
    d.on_message(request(9), SRC)
    assert len(d._queued) == 3 and d._counters.drop_requests == 1
    gate.set()
    await d.finish(1.0)
    assert [c for what, c in log if what == "start"] == ["c0", "c1", "c2", "c3", "c4"]
    assert len([e for e in log if e[0] == "end"]) == 5 and d._running == 0 and not d._queued


async def test_a_queued_message_runs_in_the_context_it_arrived_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "MAX_RUNNING", 1)
    gate, log = asyncio.Event(), []
    d = dispatcher(gate, log)
    seen: list[str] = []
    real = d.handle_message

    async def spy(msg: Any, source: Any, arrived: Any = None, *, admitted: bool = False) -> None:
        seen.append(MARK.get())
        await real(msg, source, arrived, admitted=admitted)

    d.handle_message = spy   # type: ignore[method-assign]
    d.on_message(request(0), SRC)
    d.on_message(request(1), SRC)
    await asyncio.sleep(0.01)
    gate.set()
    await d.finish(1.0)
    assert seen == ["none", "none"]   # not "c0", set by the message whose end started it


async def test_stop_grace_over_drops_the_queue_and_cancels_what_runs(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(dispatch, "MAX_RUNNING", 1)
    gate, log = asyncio.Event(), []
    d = dispatcher(gate, log)
    for n in range(3):
        d.on_message(request(n), SRC)
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger="routescript.core"):
        await d.finish(0.05)
    await asyncio.sleep(0.01)
    assert log == [("start", "c0")] and not d._queued and not d._tasks
    assert "2 queued messages dropped" in caplog.text
