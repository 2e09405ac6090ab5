"""The pieces that connect a worker process to the others (routescript/workers/node.py and the
supervisor's state of dead workers): slot-carrying Via branches and to-tags, the control messages of
adoption, the supervisor's choice of adopter and its slot table, the feed relay over the inboxes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from routescript.core.replies import set_tag_prefix, to_tag
from routescript.db.feed import LocalHub, deliver_remote
from routescript.sip import generate_branch, parse_message
from routescript.sip.build import set_branch_marker
from routescript.workers.control import Adopt, Adopted, ControlError, Load, SlotTableUpdate, decode, encode
from routescript.workers.dispatch import (
    SlotTable,
    branch_slot,
    parse_slot_tag,
    slot_branch_marker,
    slot_tag_prefix,
    tag_slot,
)
from routescript.workers.inbox import Inbox
from routescript.workers.messages import Announce
from routescript.workers.node import InboxFeedRelay
from routescript.workers.plan import WorkerPlan
from routescript.workers.supervisor import Supervisor
from routescript.workers.worker_process import Worker

SUBSCRIBE = (b"SUBSCRIBE sip:alice@127.0.0.1 SIP/2.0\r\n"
             b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKabc\r\n"
             b"From: <sip:bob@127.0.0.1>;tag=f1\r\nTo: <sip:alice@127.0.0.1>\r\n"
             b"Call-ID: c1\r\nCSeq: 1 SUBSCRIBE\r\nEvent: presence\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def one_process_tokens() -> Iterator[None]:
    """Whatever a test sets, the one-process forms afterwards."""
    yield
    set_branch_marker("")
    set_tag_prefix("rs.")


# --- tokens --------------------------------------------------------------------------------------------

def test_one_process_branches_and_tags_name_no_slot() -> None:
    assert branch_slot(generate_branch()) is None
    assert generate_branch().startswith("z9hG4bK")
    request = parse_message(SUBSCRIBE)
    assert to_tag(request).startswith("rs.") and tag_slot(to_tag(request)) is None


@pytest.mark.usefixtures("one_process_tokens")
def test_a_worker_s_branches_carry_its_slot_and_stay_unique() -> None:
    before = generate_branch()
    set_branch_marker(slot_branch_marker(37))
    branches = [generate_branch() for _ in range(3)]
    assert [branch_slot(b) for b in branches] == [37, 37, 37]
    assert len(set(branches)) == 3 and all(b.startswith("z9hG4bKrs11.") for b in branches)
    # new random bits, not the one-process ones with a slot in front
    assert before.rsplit(".", 1)[0][len("z9hG4bK"):] not in branches[0]


@pytest.mark.usefixtures("one_process_tokens")
def test_a_worker_s_to_tags_carry_its_slot_and_epoch_and_stay_stable() -> None:
    request = parse_message(SUBSCRIBE)
    plain = to_tag(request)
    set_tag_prefix(slot_tag_prefix(1, 3))
    tag = to_tag(request)
    assert parse_slot_tag(tag) == (1, 3)
    assert tag == "1.3." + plain   # the request's digest, the slot and epoch in front
    assert to_tag(parse_message(SUBSCRIBE)) == tag   # a retransmission: the same tag


def test_a_forked_child_draws_its_own_branch_bits() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: its first branch, then out
        try:
            os.write(write, generate_branch().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)
    ours = generate_branch()
    assert child.rsplit(".", 1)[0] != ours.rsplit(".", 1)[0], (child, ours)


# --- control messages ------------------------------------------------------------------------------

@pytest.mark.parametrize("message", [Load(12), Adopt(1), Adopted(1, 40), Adopted(2, 0, "DatabaseError: gone"),
                                     SlotTableUpdate(3, [0, 0, 2])], ids=lambda m: type(m).__name__)
def test_adoption_messages_round_trip(message: Any) -> None:
    assert decode(encode(message)[:-1]) == message


@pytest.mark.parametrize("line", [b'{"type":"slot_table","version":1,"owner_of":"01"}',
                                  b'{"type":"load","subscriptions":true}',
                                  b'{"type":"adopted","slot":1}'])
def test_bad_adoption_messages_are_control_errors(line: bytes) -> None:
    with pytest.raises(ControlError):
        decode(line)


# --- the supervisor's adoption and slot table (no fork: workers are records with a fake channel) ---

class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


def _worker(loop: asyncio.AbstractEventLoop, slot: int, load: int, *, ready: bool = True) -> Worker:
    worker = Worker(slot, 1, 1000 + slot, -1, FakeChannel(), None, 0.0,  # type: ignore[arg-type]
                    loop.create_future(), loop.create_future(), load=load)
    if ready:
        worker.ready.set_result(None)
    return worker


def _supervisor(n: int) -> Supervisor:
    return Supervisor(None, WorkerPlan(udp_workers=n))  # type: ignore[arg-type] # its server is not used here


async def test_a_down_slot_is_adopted_by_the_least_loaded_live_worker() -> None:
    loop = asyncio.get_running_loop()
    sup = _supervisor(4)
    sup.workers.update({0: _worker(loop, 0, 50), 2: _worker(loop, 2, 7), 3: _worker(loop, 3, 3, ready=False)})
    sup._adopt_if_down(1)
    assert sup.workers[2].channel.sent == [Adopt(1)]   # type: ignore[attr-defined]
    assert sup.workers[0].channel.sent == []           # type: ignore[attr-defined]
    assert sup.workers[3].channel.sent == []           # still starting: not a candidate
    sup._adopt_if_down(1)                              # already being adopted: not twice
    assert sup.workers[2].channel.sent == [Adopt(1)]   # type: ignore[attr-defined]
    sup.adoption.adopted(sup.workers[2], Adopted(1, 12))
    assert sup.adoption._adoptions[1].done()
    assert sup.adoption.slot_table == SlotTable(1, (0, 2, 2, 3))
    for slot in (0, 2, 3):   # every worker gets the new table
        assert sup.workers[slot].channel.sent[-1] == SlotTableUpdate(1, [0, 2, 2, 3])  # type: ignore[attr-defined]


async def test_a_running_or_restarting_slot_is_not_adopted() -> None:
    loop = asyncio.get_running_loop()
    sup = _supervisor(2)
    sup.workers.update({0: _worker(loop, 0, 0), 1: _worker(loop, 1, 0, ready=False)})   # w1 forked, starting
    sup._adopt_if_down(1)
    assert sup.workers[0].channel.sent == [] and sup.adoption._adoptions == {}   # type: ignore[attr-defined]


async def test_a_slot_whose_restart_runs_is_not_adopted() -> None:
    # A back-off equal to ADOPT_AFTER fires the restart and the adoption timers together: the restart
    # forking when the adoption timer runs must not let another worker adopt the slot (two owners).
    loop = asyncio.get_running_loop()
    sup = _supervisor(2)
    sup.workers.update({0: _worker(loop, 0, 0)})
    forking: asyncio.Future[Any] = loop.create_future()

    async def slow_fork(slot: int) -> Any:
        return await forking

    sup._fork = slow_fork   # type: ignore[method-assign]
    sup._restart(1)
    await asyncio.sleep(0)            # the restart task runs up to its fork
    sup._adopt_if_down(1)
    assert sup.workers[0].channel.sent == [] and sup.adoption._adoptions == {}   # type: ignore[attr-defined]
    forking.set_exception(OSError("no fork in this test"))
    await asyncio.sleep(0)
    for handle in sup._restarts.values():
        handle.cancel()
    sup._adopt_if_down(1)             # the restart failed: the slot is down, so it is adopted now
    assert sup.workers[0].channel.sent == [Adopt(1)]   # type: ignore[attr-defined]


async def test_a_failed_adoption_keeps_the_table_and_lets_the_slot_restart() -> None:
    loop = asyncio.get_running_loop()
    sup = _supervisor(2)
    sup.workers.update({0: _worker(loop, 0, 0)})
    sup._adopt_if_down(1)
    sup.adoption.adopted(sup.workers[0], Adopted(1, 0, "DatabaseError: locked"))
    assert sup.adoption._adoptions[1].done() and sup.adoption.slot_table == SlotTable.identity(2)


async def test_an_adopter_adopted_in_turn_hands_on_what_it_had_adopted() -> None:
    loop = asyncio.get_running_loop()
    sup = _supervisor(3)
    sup.workers.update({0: _worker(loop, 0, 0)})
    sup.adoption.set_owner(2, 1)    # w1 had adopted w2
    sup.adoption.set_owner(1, 0)    # then w1 died and w0 adopted it: w2's dialogs are w0's too
    assert sup.adoption.slot_table.owner_of == (0, 0, 0)
    sup.adoption.set_owner(1, 1)    # w1 back: its own new dialogs; w2's adopted rows stay with w0
    assert sup.adoption.slot_table.owner_of == (0, 1, 0) and sup.adoption.slot_table.version == 3


# --- feed B over the inboxes ------------------------------------------------------------------------

class FakeDispatcher:
    def __init__(self, refused: list[int]) -> None:
        self.sent: list[Any] = []
        self.refused = refused

    def broadcast(self, message: Any) -> list[int]:
        self.sent.append(message)
        return self.refused


def test_the_feed_relay_announces_to_the_other_workers_and_counts_refusals() -> None:
    dispatcher = FakeDispatcher([2])
    relay = InboxFeedRelay(dispatcher)   # type: ignore[arg-type]
    relay.send("/db/presence.sqlite", "rs_presence_workers", '{"u":"alice"}')
    assert dispatcher.sent == [Announce("/db/presence.sqlite", "rs_presence_workers", '{"u":"alice"}')]
    assert relay.refused == 1


def test_inbox_resync_from_the_supervisor_reaches_only_live_workers() -> None:
    loop = asyncio.new_event_loop()
    try:
        sup = _supervisor(2)
        sup.inboxes = [Inbox(0), Inbox(1)]
        sup.workers.update({0: _worker(loop, 0, 0)})
        sup._resync_live("w1 exited")
        assert sup.inboxes[0].receive_end.recv(4096)
        with pytest.raises(BlockingIOError):
            sup.inboxes[1].receive_end.recv(4096)
    finally:
        for inbox in sup.inboxes:
            inbox.close()
        loop.close()


class RecordingListeners:
    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []

    def dispatch(self, channel: str, payload: str) -> None:
        self.got.append((channel, payload))


def test_a_relayed_announcement_is_dispatched_at_once() -> None:
    """The inbox reader's order is the order the listeners see (no call_soon in between): an
    announcement read before a message is handled before it."""
    listeners = RecordingListeners()
    LocalHub.join("/wiring/presence.sqlite", listeners)   # type: ignore[arg-type]
    try:
        deliver_remote("/wiring/presence.sqlite", "rs_presence_workers", '{"u":"alice"}')
        assert listeners.got == [("rs_presence_workers", '{"u":"alice"}')]
    finally:
        LocalHub.leave_key("/wiring/presence.sqlite", listeners)   # type: ignore[arg-type]


async def test_an_adopter_that_dies_lets_the_adopted_slot_restart() -> None:
    loop = asyncio.get_running_loop()
    sup = _supervisor(3)
    sup.serving = True
    sup.inboxes = [Inbox(slot) for slot in range(3)]
    sup.workers.update({0: _worker(loop, 0, 5), 2: _worker(loop, 2, 1)})
    read_end, write_end = os.pipe()
    adopter = sup.workers[2]
    adopter.pidfd = read_end   # _reap closes it; no process behind it: waitpid finds no such child
    try:
        sup._adopt_if_down(1)
        assert adopter.channel.sent == [Adopt(1)]   # type: ignore[attr-defined]
        sup._reap(adopter)
        assert sup.adoption._adoptions[1].done() and sup.adoption.slot_table == SlotTable.identity(3)
        assert 2 not in sup.workers
    finally:
        sup.stopping = True
        for handle in sup._restarts.values():
            handle.cancel()
        os.close(write_end)
        for inbox in sup.inboxes:
            inbox.close()
