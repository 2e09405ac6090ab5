"""NotifySender's per-dialog queue ends with its subscription (issue 15), in memory: NOTIFYs are handed
to a fake `send` and answered by hand."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from routescript.modules.presence.sender import NotifySender
from routescript.modules.presence.subscription import SubState, Subscription

pytestmark = pytest.mark.asyncio

SUB = Subscription("sip:ann@127.0.0.1", "presence", "ann", "127.0.0.1", "bob", "127.0.0.1", "c-1", "t-1",
                   "f-1", "sip:bob@127.0.0.1:5070", 1000.0, SubState.ACTIVE, key=("c-1", "t-1", "f-1"))
FINAL = replace(SUB, status=SubState.TERMINATED, reason="timeout")


class Harness:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.done: list[Any] = []
        self.live = True
        self.sender = NotifySender(self._send, lambda sub, status: None, lambda sub: self.live)

    def _send(self, sub: Subscription, request: Any, done: Any) -> None:
        self.sent.append(request)
        self.done.append(done)

    async def answer(self, status: int = 200) -> None:
        self.done.pop(0)(status)
        await asyncio.sleep(0)


async def test_the_final_notify_supersedes_the_waiting_ones_and_closes_the_queue() -> None:
    h = Harness()
    for n in range(5):
        assert h.sender.enqueue(SUB, f"n{n}")
    assert h.sender.enqueue(FINAL, "final")           # never refused, replaces n1..n4
    assert not h.sender.enqueue(SUB, "late")          # nothing after the final NOTIFY
    assert h.sender.pending() == 2 and h.sender.dropped == 5
    await h.answer(408)
    await h.answer(408)
    assert h.sent == ["n0", "final"]
    assert h.sender.dialogs() == 0 and h.sender.pending() == 0


async def test_notifies_of_an_ended_subscription_are_dropped() -> None:
    h = Harness()
    for n in range(4):
        h.sender.enqueue(SUB, f"n{n}")
    h.live = False                                     # a 481, a takeover... ended it meanwhile
    await h.answer(481)
    assert h.sent == ["n0"] and h.sender.dialogs() == 0 and h.sender.dropped == 3


async def test_a_full_queue_still_takes_the_final_notify() -> None:
    h = Harness()
    while h.sender.enqueue(SUB, "n"):
        pass
    assert h.sender.enqueue(FINAL, "final")
    await h.answer(408)
    assert h.sent[-1] == "final"
