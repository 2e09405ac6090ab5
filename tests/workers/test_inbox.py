"""Inboxes over real socketpairs in one process: round trip through the asyncio reader, the largest
message, a full inbox, and a reader that survives garbage and a failing handler."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from routescript.sip.address import SocketInfo, Source
from routescript.workers.inbox import Inbox, InboxClosed, InboxFull, InboxReader
from routescript.workers.messages import Handoff, InboxMessage, Resync, TcpSend

MAX_DGRAM_QLEN = int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
SOURCE = Source("udp", SocketInfo("udp", "127.0.0.1", 5060), "127.0.0.1", 5070)


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox(1)
    yield box
    box.close()


def fill(box: Inbox, message: InboxMessage) -> int:
    """Send until the inbox is full; how many went in (bounded: it is full long before)."""
    for queued in range(100_000):
        try:
            box.send(message)
        except InboxFull:
            return queued
    return 100_000


class Collector:
    def __init__(self) -> None:
        self.messages: list[InboxMessage] = []
        self.arrived = asyncio.Event()

    def __call__(self, message: InboxMessage) -> None:
        self.messages.append(message)
        self.arrived.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(2):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def test_round_trip_through_the_reader(inbox: Inbox) -> None:
    got = Collector()
    reader = InboxReader(inbox, got)
    reader.start()
    sent = [Handoff(SOURCE, 1.5, b"OPTIONS"), TcpSend(7, b"bytes", "127.0.0.1", 5070), Resync("test")]
    for message in sent:
        inbox.send(message)
    await got.wait_for(3)
    reader.stop()
    assert got.messages == sent


async def test_a_65000_byte_message_passes(inbox: Inbox) -> None:
    got = Collector()
    reader = InboxReader(inbox, got)
    reader.start()
    data = bytes(range(256)) * 254   # 65,024 bytes
    inbox.send(Handoff(SOURCE, 0.0, data))
    await got.wait_for(1)
    reader.stop()
    assert got.messages[0].data == data  # type: ignore[union-attr]


async def test_a_full_inbox_says_so_and_accepts_again_once_read() -> None:
    box = Inbox(2, buffer_size=64 * 1024)
    try:
        message = Handoff(SOURCE, 0.0, b"x" * 800)
        queued = fill(box, message)
        with pytest.raises(InboxFull, match="inbox of worker slot 2 is full"):
            box.send(message)
        # More than net.unix.max_dgram_qlen (10 by default): a connected pair is bound by its buffer only.
        assert MAX_DGRAM_QLEN < queued < 100_000
        got = Collector()
        reader = InboxReader(box, got, batch=10_000)
        reader.start()
        await got.wait_for(queued)
        box.send(Resync("room again"))
        await got.wait_for(queued + 1)
        reader.stop()
        assert got.messages[-1] == Resync("room again")
    finally:
        box.close()


async def test_the_reader_survives_garbage_and_a_failing_handler(inbox: Inbox) -> None:
    got = Collector()

    def handler(message: InboxMessage) -> None:
        if message == Resync("boom"):
            raise RuntimeError("a handler bug")
        got(message)

    reader = InboxReader(inbox, handler)
    reader.start()
    inbox.send_datagram(b"\x00not ours")
    inbox.send(Resync("boom"))
    inbox.send(Resync("after"))
    await got.wait_for(1)
    reader.stop()
    assert got.messages == [Resync("after")]
    assert reader.bad_datagrams == 1
    assert reader.received == 3


async def test_one_wake_up_reads_what_is_queued_up_to_its_batch(inbox: Inbox) -> None:
    """read_ready goes on while poll says a datagram is queued (garbage and a failing handler
    included), and stops at its batch; read_queued reads nothing from an empty inbox."""
    got = Collector()
    reader = InboxReader(inbox, got, batch=4)
    reader.read_queued()
    assert reader.received == 0
    inbox.send_datagram(b"\x00not ours")
    for n in range(5):
        inbox.send(Resync(f"r{n}"))
    reader.read_ready()
    assert reader.received == 4 and reader.bad_datagrams == 1
    assert got.messages == [Resync("r0"), Resync("r1"), Resync("r2")]
    reader.read_queued()
    assert got.messages[3:] == [Resync("r3"), Resync("r4")]
    reader.read_queued()
    assert reader.received == 6


def test_sending_to_a_closed_inbox_raises(inbox: Inbox) -> None:
    inbox.close_receive_end()
    with pytest.raises(InboxClosed, match="slot 1 is closed"):
        inbox.send(Resync("nobody reads"))
