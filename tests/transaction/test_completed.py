"""The completed-transaction table (sans-IO, injected time) and how the layer uses it over loopback
(the Timer J/K and TU-timeout paths run on a fake clock in test_core.py)."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from routescript.sip import Destination, SocketInfo, build_reply
from routescript.testing import SipTestClient
from routescript.transaction import State, TransactionLayer
from routescript.transaction.completed import CompletedTable
from routescript.transport import TransportLayer


DEST_A = Destination("udp", "192.0.2.1", 5060)
DEST_B = Destination("udp", "192.0.2.2", 5060)


def test_entries_expire_in_insertion_order() -> None:
    table = CompletedTable(hold=32.0, max_entries=10)
    table.add(("a",), b"A", DEST_A, now=0.0)
    table.add(("b",), b"B", DEST_B, now=1.0)
    got = table.get(("a",), now=31.9)
    assert got is not None and got.data == b"A" and got.dest == DEST_A and got.state is State.COMPLETED
    assert table.expire(32.0) == 1
    assert table.get(("a",), now=32.0) is None and len(table) == 1
    assert table.get(("b",), now=33.0) is None            # expired on lookup even before a sweep
    assert table.expire(40.0) == 0 and len(table) == 0 and table.next_expiry() is None


def test_overflow_evicts_the_oldest() -> None:
    table = CompletedTable(hold=32.0, max_entries=2)
    assert table.add(("a",), b"A", None, 0.0) == 0
    assert table.add(("b",), b"B", None, 0.1) == 0
    assert table.add(("c",), b"C", None, 0.2) == 1
    assert table.get(("a",), 0.3) is None
    assert table.get(("b",), 0.3) is not None and table.get(("c",), 0.3) is not None
    assert table.evicted == 1


def test_a_key_added_again_keeps_its_new_entry() -> None:
    table = CompletedTable(hold=10.0, max_entries=5)
    table.add(("a",), b"old", None, 0.0)
    table.add(("a",), b"new", None, 5.0)
    assert table.expire(10.0) == 0                        # the stale deque item does not drop the new one
    entry = table.get(("a",), 12.0)
    assert entry is not None and entry.data == b"new"


def test_entries_are_invisible_to_the_collector_and_give_back_the_destination() -> None:
    # Tens of thousands of entries live for Timer J: a full collection must not have to walk them.

    dest = Destination("udp", "127.0.0.1", 5062, None, SocketInfo("udp", "127.0.0.1", 5060))
    table = CompletedTable(hold=32.0, max_entries=10)
    key = ("3261", "z9hG4bK-1", ("127.0.0.1", 5062), "PUBLISH")
    table.add(key, b"SIP/2.0 200 OK\r\n\r\n", dest, now=0.0)
    gc.collect()
    gc.collect()   # a tuple holding a tuple is untracked once the inner one is (the next pass)
    assert not any(gc.is_tracked(item) for item in (*table.entries.values(), *table._order))
    got = table.get(key, now=1.0)
    assert got is not None and got.dest == dest and got.data.startswith(b"SIP/2.0 200")
    assert Destination.unpack(Destination("tcp", "::1", 5, 7).packed()) == Destination("tcp", "::1", 5, 7)


class _Core:
    def __init__(self) -> None:
        self.runs = 0
        self.transport = TransportLayer(self.on_message)
        self.transactions = TransactionLayer(self.transport, t1=0.02, t2=0.08, t4=0.1, timer_f=0.5,
                                             max_transactions=2, max_completed=3)
        self.answer = True

    def on_message(self, msg, source) -> None:  # type: ignore[no-untyped-def]
        if not msg.is_request or self.transactions.lookup(msg, source) is not None:
            return
        txn = self.transactions.create(msg, source)
        self.runs += 1
        if self.answer:
            self.transactions.reply(txn, build_reply(msg, 200, to_tag="srv"))


async def test_completed_transactions_do_not_count_against_the_limit(
        caplog: pytest.LogCaptureFixture) -> None:
    core = _Core()
    try:
        info = await core.transport.listen("udp", "127.0.0.1", 0)
        async with await SipTestClient.start("udp", ("127.0.0.1", info.port)) as client:
            requests = [client.options() for _ in range(6)]
            with caplog.at_level(logging.WARNING, logger="routescript.transaction"):
                for req in requests:                     # 6 > max_transactions = 2: all answered 200
                    assert (await client.send_request(req)).status == 200
            assert core.transactions.pending == 0 and core.transactions.completed == 3
            assert "completed-transaction cache full" in caplog.text
            client.send(requests[-1])                     # kept: resent without running the script
            client.send(requests[0])                      # evicted: runs the script again
            for _ in range(100):
                if core.runs == 7 and len(client.responses_for(requests[-1])) == 2:
                    break
                await asyncio.sleep(0.01)
            assert core.runs == 7
            assert [r.status for r in client.responses_for(requests[-1])] == [200, 200]
    finally:
        await core.transactions.close()
        await core.transport.close()


async def test_udp_request_that_cannot_be_sent_gets_503_at_once() -> None:
    from routescript.sip import build_request, generate_branch
    from routescript.transport import Destination

    transport = TransportLayer(lambda msg, src: None)       # no UDP socket to send from
    layer = TransactionLayer(transport, t1=0.02, timer_f=5.0)
    try:
        req = build_request("NOTIFY", "sip:bob@127.0.0.1:5999", [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:5998;branch={generate_branch()}"),
            ("From", "<sip:a@127.0.0.1>;tag=s"), ("To", "<sip:bob@127.0.0.1>;tag=c"), ("Call-ID", "u-1"),
            ("CSeq", "1 NOTIFY")])
        resp = await asyncio.wait_for(layer.request(req, Destination("udp", "127.0.0.1", 5999)), 1.0)
        assert resp.status == 503 and layer.pending == 0
    finally:
        await layer.close()
        await transport.close()


def test_a_table_that_emptied_gives_its_slots_back() -> None:
    """Issue 15: a dict keeps its slots when entries are deleted; after a burst the table is copied."""
    import sys

    table = CompletedTable(hold=32.0, max_entries=50_000)
    for n in range(20_000):
        table.add(("z9hG4bK" + str(n), "PUBLISH"), b"SIP/2.0 200 OK", None, now=float(n) / 1000)
    full = sys.getsizeof(table.entries)
    table.add(("late", "PUBLISH"), b"SIP/2.0 200 OK", None, now=100.0)
    assert table.expire(now=100.0) == 20_000
    assert len(table) == 1 and table.contains(("late", "PUBLISH"), 100.0)
    assert sys.getsizeof(table.entries) < full / 100
