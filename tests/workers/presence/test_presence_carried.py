"""A PUBLISH's stored change carried by its announcement between worker processes (docs/workers.md
section 7, session 12): the worker holding the watchers takes it into memory as it arrives and notifies
without reading the database - when its memory held the state the change was made on and no read of
its own may have seen the change already; otherwise it reads, as before. Two presence services on one
SQLite file, their hubs joined by a relay as the inbox bus joins worker processes
(tests/workers/presence/worker_nodes.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from routescript.db.feed import MAX_PAYLOAD, deliver_remote
from routescript.modules.presence.cluster_wire import (AnnouncementError, PresentityChanged, PublishedChange,
                                                       decode, encode)
from routescript.modules.presence.etag import EtagGenerator
from routescript.modules.presence.presentity import Publication, PresentityTable

from .worker_nodes import Worker, Workers, one_file_two_paths, relay_installed, settle, states, workers_on

PRES = "sip:carol@127.0.0.1"


class HeldRelay:
    """The inbox bus between two 'processes' (two hub keys on one file), delivering only when told:
    `deliver()` hands what was sent so far to the other side, in the order it was sent."""

    def __init__(self, key_a: str, key_b: str) -> None:
        self.peer = {key_a: key_b, key_b: key_a}
        self.held: list[tuple[str, str, str]] = []
        self.auto = True

    def send(self, db_key: str, channel: str, payload: str) -> None:
        self.held.append((self.peer[db_key], channel, payload))
        if self.auto:
            asyncio.get_running_loop().call_soon(self.deliver)

    def deliver(self) -> None:
        held, self.held = self.held, []
        for key, channel, payload in held:
            deliver_remote(key, channel, payload)


@pytest.fixture
def two_paths(tmp_path: Path) -> Iterator[tuple[str, str, HeldRelay]]:
    a, b = one_file_two_paths(tmp_path)
    relay = HeldRelay(a, b)
    with relay_installed(relay):
        yield a, b, relay


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[Workers]:
    async with workers_on(f"sqlite://{tmp_path}/db/presence.sqlite") as ws:
        yield ws


def count_reads(worker: Worker) -> list[str]:
    """The presentities `worker` reads from the database from now on."""
    store = worker.service.store
    assert store is not None
    reads: list[str] = []
    real = store.find_publications

    async def find(pres_uri: str, *args: Any) -> Any:
        reads.append(pres_uri)
        return await real(pres_uri, *args)

    store.find_publications = find   # type: ignore[method-assign]
    return reads


def etags(worker: Worker) -> list[str]:
    return [p.etag for p in worker.service.presentities.publications(PRES, "presence")]


async def dave_watches_in_w0(workers: Workers, path_a: str, path_b: str) -> tuple[Worker, Worker]:
    """w0 and w1 on the one file's two paths, dave's subscription to PRES held by w0, both settled."""
    w0 = await workers.start(0, url=f"sqlite://{path_a}")
    w1 = await workers.start(1, url=f"sqlite://{path_b}")
    await w0.subscribe("dave")
    await settle(w0, w1)
    return w0, w1


async def test_the_watchers_worker_notifies_a_carried_change_without_reading_the_database(
        workers: Workers, two_paths: tuple[str, str, HeldRelay]) -> None:
    path_a, path_b, _ = two_paths
    w0, w1 = await dave_watches_in_w0(workers, path_a, path_b)
    reads = count_reads(w0)
    etag = (await w1.publish("open")).header("SIP-ETag")           # inserted
    await settle(w0, w1)
    etag2 = (await w1.publish("closed", cseq=2, etag=etag)).header("SIP-ETag")   # modified
    await settle(w0, w1)
    assert etags(w0) == [etag2]
    await w1.publish(None, cseq=3, etag=etag2, expires=0)           # removed
    await settle(w0, w1)
    assert states(w0.notifies_to("dave")) == ["none", "open", "closed", "none"]
    assert reads == [] and etags(w0) == []
    assert w0.node is not None and w0.node.stats.applied == 3


async def test_without_carrying_the_watchers_worker_reads_each_change(
        workers: Workers, two_paths: tuple[str, str, HeldRelay]) -> None:
    """The control of the test above: the same changes read from the database, the same NOTIFYs."""
    path_a, path_b, _ = two_paths
    w0 = await workers.start(0, url=f"sqlite://{path_a}", carry=False)
    w1 = await workers.start(1, url=f"sqlite://{path_b}")
    await w0.subscribe("dave")
    await settle(w0, w1)
    reads = count_reads(w0)
    etag = (await w1.publish("open")).header("SIP-ETag")
    await settle(w0, w1)
    await w1.publish("closed", cseq=2, etag=etag)
    await settle(w0, w1)
    assert states(w0.notifies_to("dave")) == ["none", "open", "closed"]
    assert reads == [PRES, PRES]


async def test_a_change_a_read_of_this_worker_may_have_seen_is_read_again_not_taken(
        workers: Workers, two_paths: tuple[str, str, HeldRelay]) -> None:
    """w1 inserts a publication; before its announcement reaches w0, w0 reads it from the database (a
    PUBLISH with its ETag) and replaces it. Taking the late insert would bring the replaced
    publication back next to its successor: w0 reads instead and holds the successor only."""
    path_a, path_b, relay = two_paths
    w0, w1 = await dave_watches_in_w0(workers, path_a, path_b)
    relay.auto = False
    etag = (await w1.publish("open")).header("SIP-ETag")
    ok = await w0.publish("closed", cseq=2, etag=etag)   # w0 reads etag from the database: a modify
    assert ok.status == 200
    etag2 = ok.header("SIP-ETag")
    assert etags(w0) == [etag2]
    relay.deliver()                                        # w1's insert arrives late
    await settle(w0, w1)
    assert etags(w0) == [etag2]
    assert w0.node is not None and w0.node.stats.applied == 0
    assert states(w0.notifies_to("dave"))[-1] == "closed"


async def test_a_change_is_not_taken_while_the_presentity_is_in_use(
        workers: Workers, two_paths: tuple[str, str, HeldRelay]) -> None:
    """A request of w0 holding the presentity's lock may be reading it: the change is read after."""
    path_a, path_b, relay = two_paths
    w0, w1 = await dave_watches_in_w0(workers, path_a, path_b)
    relay.auto = False
    await w1.publish("open")
    reads = count_reads(w0)
    async with w0.service.locks.hold(PRES):
        relay.deliver()
    await settle(w0, w1)
    assert w0.node is not None and w0.node.stats.applied == 0 and reads == [PRES]
    assert states(w0.notifies_to("dave")) == ["none", "open"]


# --- the pure parts ---------------------------------------------------------------------------------------

def test_a_carried_change_round_trips_and_an_older_payload_carries_none() -> None:
    for change in (PublishedChange("i", 12.5, "", 1_000_600, 1_000_000, "<é/>".encode()),
                   PublishedChange("m", 13.0, "old.1", 1_000_600, 1_000_001, b"<presence/>"),
                   PublishedChange("r", 14.0)):
        ann = PresentityChanged("w1", PRES, "presence", "e.2", None, change)
        assert decode(encode(ann)) == ann
    assert decode('{"v": 1, "o": "p", "n": "x", "u": "sip:a@b", "e": "presence", "t": "e"}') == \
        PresentityChanged("x", "sip:a@b", "presence", "e", None, None)
    base = '{"v": 1, "o": "p", "n": "x", "u": "sip:a@b", "e": "presence", "t": "e", '
    for bad in ('"a": "z", "ct": 1}', '"a": "r"}', '"a": "r", "ct": -1}', '"a": "r", "ct": true}',
                '"a": "i", "ct": 1, "ot": "", "x": 5, "rt": 1}',
                '"a": "i", "ct": 1, "x": 5, "rt": 1, "b": 3}',
                '"a": "m", "ct": 1, "ot": "o", "x": "5", "rt": 1, "b": ""}'):
        with pytest.raises(AnnouncementError):
            decode(base + bad)


async def test_a_change_too_large_for_the_feed_is_announced_without_it(
        workers: Workers, two_paths: tuple[str, str, HeldRelay]) -> None:
    path_a, path_b, _ = two_paths
    w0 = await workers.start(0, url=f"sqlite://{path_a}")
    w1 = await workers.start(1, url=f"sqlite://{path_b}")
    assert w1.node is not None
    small = w1.node.announcement(PRES, "presence", "e.1", None,
                                 PublishedChange("i", 1.0, "", 5, 1, b"x" * 100))
    large = w1.node.announcement(PRES, "presence", "e.1", None,
                                 PublishedChange("i", 1.0, "", 5, 1, b"x" * MAX_PAYLOAD))
    assert small is not None and large is not None and len(large.encode()) <= MAX_PAYLOAD
    assert decode(small).change is not None and decode(large).change is None   # type: ignore[union-attr]
    assert w0.node is not None


def test_apply_change_takes_only_a_change_made_on_the_state_memory_holds() -> None:
    table = PresentityTable(EtagGenerator(1.0))
    now = time.monotonic()

    def pub(etag: str) -> Publication:
        return Publication(PRES, "presence", etag, 2_000.0, b"<p/>", "application/pidf+xml", 1_000.0)

    assert table.apply_change(PRES, "presence", "a", None, pub("a"), now)           # inserted
    assert not table.apply_change(PRES, "presence", "a", None, pub("a"), now)       # held already
    assert not table.apply_change(PRES, "presence", "b", "x", pub("b"), now)        # replaces one not held
    assert table.apply_change(PRES, "presence", "b", "a", pub("b"), now)            # modified
    assert not table.apply_change(PRES, "presence", "a", None, None, now)           # removes one not held
    assert [p.etag for p in table.publications(PRES, "presence")] == ["b"] and len(table) == 1
    # a read of the presentity that ended after the change began may have seen it: not taken
    table.replace_presentity(PRES, "presence", [pub("b")])
    assert not table.apply_change(PRES, "presence", "c", None, pub("c"), now)
    assert table.apply_change(PRES, "presence", "c", None, pub("c"), time.monotonic())
    assert table.apply_change(PRES, "presence", "c", None, None, time.monotonic()) and len(table) == 1
    table.read_floor = time.monotonic()                 # every read before (a load)
    assert not table.apply_change(PRES, "presence", "d", None, pub("d"), now)


async def test_a_change_is_announced_at_its_commit_before_the_publish_goes_on(
        workers: Workers, two_paths: tuple[str, str, HeldRelay]) -> None:
    """The announcement leaves from the group commit (on_commit), not once the PUBLISH's task resumes:
    when it is relayed, the publishing worker has neither answered nor taken the change in memory."""
    path_a, path_b, relay = two_paths
    w0, w1 = await dave_watches_in_w0(workers, path_a, path_b)
    seen: list[tuple[list[str], int]] = []
    real = relay.send

    def send(db_key: str, channel: str, payload: str) -> None:
        seen.append((etags(w1), len(w1.server.replies)))
        real(db_key, channel, payload)

    relay.send = send   # type: ignore[method-assign]
    replies = len(w1.server.replies)
    etag = (await w1.publish("open")).header("SIP-ETag")
    await settle(w0, w1)
    assert seen == [([], replies)]
    assert etags(w1) == [etag] and states(w0.notifies_to("dave")) == ["none", "open"]
