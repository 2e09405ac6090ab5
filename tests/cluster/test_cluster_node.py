"""ClusterNode: two or more nodes on one PostgreSQL schema (announcements, dead-node takeover, resync
after a cut through a TCP proxy we control), one node on SQLite, and the pure parts (wire, config)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from db.pg_proxy import TcpProxy, pg_host_port, proxied
from db.test_db_behaviour import watcher

from routescript.db import Database, DatabaseError, open_database
from routescript.modules.presence.cluster import (
    ClusterConfig,
    ClusterError,
    ClusterNode,
    config_from_params,
    parse_pres_events,
)
from routescript.modules.presence.cluster import worker_config
from routescript.modules.presence.cluster_wire import (
    AnnouncementError,
    PresentityChanged,
    SubscriptionMoved,
    decode,
    encode,
)
from routescript.modules.presence.membership import Membership, SupervisedMembership, WorkerIdentity

from .conftest import FakeClock


@dataclass
class Recorder:
    """The presence service as a node sees it: what the callbacks were called with."""

    changed: list[tuple[str, str, float]] = field(default_factory=list)
    adopted: list[dict[str, Any]] = field(default_factory=list)
    resyncs: int = 0
    lost: int = 0
    moved: list[tuple[str, str, str]] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def on_changed(self, uri: str, event: str, sender: str | None = None) -> None:
        self.changed.append((uri, event, time.perf_counter()))
        self.event.set()

    def on_adopted(self, rows: list[dict[str, Any]]) -> None:
        self.adopted += rows

    def on_resync(self) -> None:
        self.resyncs += 1
        self.event.set()

    def on_lost(self) -> None:
        self.lost += 1

    def on_moved(self, key: tuple[str, str, str]) -> None:
        self.moved.append(key)
        self.event.set()

    async def wait(self, cond: Callable[[], bool], timeout: float = 3.0) -> None:
        async def poll() -> None:
            while not cond():
                self.event.clear()
                await self.event.wait()
        await asyncio.wait_for(poll(), timeout)


class Cluster:
    """Nodes made on demand, all closed at the end; one shared fake clock."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cluster_id = random.randrange(1, 2**30)  # channels are per database: no two tests share one
        self.clock = FakeClock()
        self.dbs: list[Database] = []
        self.nodes: list[ClusterNode] = []

    async def node(self, node_id: str, *, url: str | None = None, start: bool = True,
                   membership: Membership | None = None, cfg: ClusterConfig | None = None,
                   **config: Any) -> tuple[ClusterNode, Recorder]:
        db = await open_database(url or self.url)
        self.dbs.append(db)
        await db.ensure_schema(["active_watchers"])
        rec = Recorder()
        settings = {"ping_interval": 5, "node_timeout": 30, **config}
        node = ClusterNode(db, cfg or ClusterConfig(self.cluster_id, node_id, **settings),
                           on_presentity_changed=rec.on_changed, on_subscriptions_adopted=rec.on_adopted,
                           on_resync=rec.on_resync, on_ownership_lost=rec.on_lost,
                           on_subscription_moved=rec.on_moved, clock=self.clock,
                           wall_clock=lambda: 1_700_000_000.0, rng=random.Random(node_id),
                           membership=membership)
        if start:
            await node.start()
        self.nodes.append(node)
        return node, rec

    async def close(self) -> None:
        for node in self.nodes:
            await node.stop()
        for db in self.dbs:
            await db.close()


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[Cluster]:
    c = Cluster(cluster_url)
    try:
        yield c
    finally:
        await c.close()


async def tick(nodes: list[ClusterNode], clock: FakeClock, seconds: float) -> None:
    """Advance the clock in ping-interval steps, running the due timers of `nodes` (the others are silent)."""
    end = clock.now + seconds
    while clock.now < end:
        clock.now = min(end, *(n.next_deadline() for n in nodes))
        for n in nodes:
            await n.on_timer()


# --- announcements ------------------------------------------------------------------------------------

async def test_a_publish_on_one_node_reaches_the_other_within_100_ms(cluster: Cluster) -> None:
    a, rec_a = await cluster.node("a")
    b, rec_b = await cluster.node("b")
    c, rec_c = await cluster.node("c", pres_events=frozenset({"dialog"}))  # not sharing presence
    worst = 0.0
    for i in range(20):
        sent = time.perf_counter()
        assert await a.announce(f"sip:user{i}@example.com", "presence", f"etag{i}")
        await rec_b.wait(lambda i=i: len(rec_b.changed) > i)
        worst = max(worst, rec_b.changed[i][2] - sent)
    assert worst < 0.1, f"slowest announcement took {worst * 1000:.1f} ms"
    assert [u for u, _, _ in rec_b.changed] == [f"sip:user{i}@example.com" for i in range(20)]
    assert {e for _, e, _ in rec_b.changed} == {"presence"}
    await b.announce("sip:x@example.com", "dialog")
    await rec_c.wait(lambda: len(rec_c.changed) == 1)
    await rec_a.wait(lambda: any(u == "sip:x@example.com" for u, _, _ in rec_a.changed))
    assert rec_c.changed[0][:2] == ("sip:x@example.com", "dialog")  # presence was filtered out
    assert not any(u.startswith("sip:user") for u, _, _ in rec_a.changed)  # its own announcements skipped
    assert await c.announce("sip:y@example.com", "presence") is False  # not a shared event: not sent
    assert c.stats.ignored == 20


async def test_announcements_of_one_presentity_are_coalesced_while_it_is_handled(cluster: Cluster) -> None:
    a, _ = await cluster.node("a")
    b, _rec = await cluster.node("b")
    release = asyncio.Event()
    calls: list[str] = []

    async def slow(uri: str, event: str, sender: str | None = None) -> None:
        calls.append(uri)
        await release.wait()

    b.on_presentity_changed = slow
    for _ in range(5):
        await a.announce("sip:alice@example.com", "presence")
    await a.announce("sip:bob@example.com", "presence")
    for _ in range(100):
        if len(calls) >= 2 and b.stats.received == 6:
            break
        await asyncio.sleep(0.01)
    assert sorted(calls) == ["sip:alice@example.com", "sip:bob@example.com"]
    release.set()
    for _ in range(100):
        if not b._pending:
            break
        await asyncio.sleep(0.01)
    # alice: one run for the first announcement, one more for the four that came meanwhile
    assert calls.count("sip:alice@example.com") == 2 and calls.count("sip:bob@example.com") == 1


async def test_a_malformed_announcement_is_dropped(cluster: Cluster) -> None:
    a, _ = await cluster.node("a")
    b, rec = await cluster.node("b")
    await a.db.notify(a.config.channel, "{not json")
    await a.db.notify(a.config.channel, '{"v": 99, "o": "p"}')       # a newer node: ignored quietly
    await a.announce("sip:ok@example.com", "presence")
    await rec.wait(lambda: len(rec.changed) == 1)
    assert b.stats.malformed == 1 and rec.changed[0][0] == "sip:ok@example.com"


# --- dead nodes -----------------------------------------------------------------------------------------

async def seed_rows(db: Database, tag: str | None, n: int, start: int = 0) -> None:
    await db.insert_many("active_watchers", [watcher(start + i, sharing_tag=tag, callid=f"{tag}-{start + i}")
                                             for i in range(n)])


async def test_exactly_one_node_adopts_a_dead_nodes_rows_even_when_two_race(cluster: Cluster) -> None:
    a, rec_a = await cluster.node("a")
    b, rec_b = await cluster.node("b")
    for round_ in range(3):
        dead, _ = await cluster.node(f"dead{round_}")
        await seed_rows(a.db, dead.node_id, 120, start=round_ * 1000)
        await dead.stop()                          # it stops beating (its rows stay)
        await tick([a, b], cluster.clock, 5)       # both see its last beat now...
        since = cluster.clock.now
        await tick([a, b], cluster.clock, 24)      # ...and time it: not silent long enough yet
        assert await a.db.count("active_watchers", {"sharing_tag": dead.node_id}) == 120
        cluster.clock.now = since + 30
        before = (len(rec_a.adopted), len(rec_b.adopted))
        await asyncio.gather(a.on_timer(), b.on_timer())   # both find it silent for 30 s at once
        got = (len(rec_a.adopted) - before[0], len(rec_b.adopted) - before[1])
        assert sorted(got) == [0, 120], got        # one node adopted all, the other none
        winner = "a" if got[0] else "b"
        row = (await a.db.query("rs_nodes", {"node_id": dead.node_id}))[0]
        assert row["state"] == "dead" and row["adopted_by"] == winner
        assert await a.db.count("active_watchers", {"sharing_tag": dead.node_id}) == 0
    ids = [r["id"] for r in rec_a.adopted + rec_b.adopted]
    assert len(ids) == 360 and len(set(ids)) == 360
    assert all(r["sharing_tag"] in ("a", "b") for r in rec_a.adopted + rec_b.adopted)


async def test_an_alive_node_is_never_adopted(cluster: Cluster) -> None:
    a, rec_a = await cluster.node("a")
    b, _ = await cluster.node("b")
    await seed_rows(a.db, "b", 3)
    await tick([a, b], cluster.clock, 120)         # b keeps beating
    assert rec_a.adopted == [] and await a.db.count("active_watchers", {"sharing_tag": "b"}) == 3
    assert a.owns_subscriptions() and b.owns_subscriptions()


async def test_a_node_back_after_its_takeover_drops_ownership_and_joins_again(cluster: Cluster) -> None:
    a, rec_a = await cluster.node("a")
    b, rec_b = await cluster.node("b")
    await seed_rows(a.db, "b", 4)
    await tick([a], cluster.clock, 40)             # b is cut off: a adopts its rows
    assert len(rec_a.adopted) == 4
    assert not b.owns_subscriptions()              # b fenced itself: no NOTIFYs from it meanwhile
    await b.on_timer()                             # b's next heartbeat finds its row taken
    assert rec_b.lost == 1 and b.owns_subscriptions()
    row = (await a.db.query("rs_nodes", {"node_id": "b"}))[0]
    assert row["state"] == "active" and row["adopted_by"] is None
    assert await a.db.count("active_watchers", {"sharing_tag": "a"}) == 4
    await tick([a, b], cluster.clock, 60)          # both alive: nothing moves any more
    assert len(rec_a.adopted) == 4 and rec_b.lost == 1


async def test_takeover_by_mi_and_of_an_unknown_tag(cluster: Cluster) -> None:
    a, _rec_a = await cluster.node("a")
    b, rec_b = await cluster.node("b")
    await seed_rows(a.db, "b", 2)
    await seed_rows(a.db, "opensips-tag", 3)       # rows of a tag no rs_nodes row describes
    assert await a.take_over("b") == 2             # alive or not: the operator decides
    assert await a.take_over("opensips-tag") == 3
    assert await a.take_over("nobody") == 0
    with pytest.raises(ClusterError):
        await a.take_over("a")
    await b.on_timer(cluster.clock.now + 5)
    assert rec_b.lost == 1
    assert {r["node_id"]: r["state"] for r in await a.nodes()} == {"a": "active", "b": "active"}


async def test_unfinished_takeover_of_a_dead_adopter_is_finished_by_the_next(cluster: Cluster) -> None:
    a, rec_a = await cluster.node("a")
    b, rec_b = await cluster.node("b", adopt_batch=2)
    c, _ = await cluster.node("c")
    await seed_rows(a.db, "c", 5)
    # b wins c but dies half-way: c's row says adopted_by b, and c's rows are still tagged c
    await a.db.update("rs_nodes", {"node_id": "c"}, {"state": "dead", "adopted_by": "b"})
    await b.stop()
    await c.stop()
    await tick([a], cluster.clock, 40)             # a adopts b, and with it what b left of c
    assert await a.db.count("active_watchers", {"sharing_tag": "c"}) == 0
    assert len(rec_a.adopted) == 5 and rec_b.adopted == []
    assert (await a.db.query("rs_nodes", {"node_id": "c"}))[0]["adopted_by"] == "a"


async def test_untagged_rows_are_claimed_at_start(cluster: Cluster) -> None:
    db = await open_database(cluster.url)
    cluster.dbs.append(db)
    await db.ensure_schema(["active_watchers"])
    await seed_rows(db, None, 3)
    _a, rec = await cluster.node("a")
    assert len(rec.adopted) == 3 and {r["sharing_tag"] for r in rec.adopted} == {"a"}
    _b, rec_b = await cluster.node("b")
    assert rec_b.adopted == []


async def test_an_in_dialog_subscribe_on_another_node_moves_the_dialog(cluster: Cluster) -> None:
    a, rec_a = await cluster.node("a")
    b, rec_b = await cluster.node("b")
    await seed_rows(a.db, "a", 1)
    row = (await a.db.query("active_watchers"))[0]
    got = await b.claim_subscription(row["callid"], row["to_tag"], row["from_tag"])
    assert got is not None and got["sharing_tag"] == "b" and got["id"] == row["id"]
    await rec_a.wait(lambda: len(rec_a.moved) == 1)
    assert rec_a.moved == [(row["callid"], row["to_tag"], row["from_tag"])] and rec_b.moved == []
    assert await b.claim_subscription(row["callid"], row["to_tag"], row["from_tag"]) is None  # ours already
    assert await b.claim_subscription("nope", "x", "y") is None



async def test_an_in_dialog_claim_waits_for_the_owners_write(cluster: Cluster) -> None:
    """The owner's periodic save (fallback2db syncs right after each NOTIFY) holds the row's lock for a
    moment; a refresh of that dialog reaching another node at that moment must wait for it, not skip the
    row (FOR UPDATE SKIP LOCKED, the takeover's way) and answer 481 - seen under load in
    test_cluster_e2e's dialog-move test."""
    a, _ = await cluster.node("a")
    b, _ = await cluster.node("b")
    await seed_rows(a.db, "a", 1)
    row = (await a.db.query("active_watchers"))[0]
    async with a.db.transaction():   # the owner's write, holding the row's lock
        await a.db.update("active_watchers", {"id": row["id"]}, {"local_cseq": row["local_cseq"] + 1})
        claim = asyncio.ensure_future(b.claim_subscription(row["callid"], row["to_tag"], row["from_tag"]))
        await asyncio.sleep(0.3)   # the claim is waiting for the lock (or, skipping it, done already)
    got = await asyncio.wait_for(claim, 10)
    assert got is not None and got["sharing_tag"] == "b" and got["local_cseq"] == row["local_cseq"] + 1


# --- resync after a cut -----------------------------------------------------------------------------------

def feed_of(db: Any) -> Any:
    """The change feed's connection supervisor: PostgreSQL's LISTEN connection or MySQL's poller."""
    return db.poller if hasattr(db, "poller") else db.listener


async def test_resync_after_the_database_connection_was_lost(cluster: Cluster) -> None:
    proxy = TcpProxy(pg_host_port(cluster.url))
    await proxy.start()
    try:
        a, _ = await cluster.node("a")
        b, rec = await cluster.node("b", url=proxied(cluster.url, proxy))
        feed = feed_of(b.db)
        feed.first_delay = 0.02
        if hasattr(feed, "keepalive"):     # PostgreSQL's LISTEN connection; MySQL's poller sees a cut at once
            feed.keepalive = 0.2
        await a.announce("sip:before@example.com", "presence")
        await rec.wait(lambda: len(rec.changed) == 1)

        await proxy.stop()                 # b loses the database
        for _ in range(300):
            if not feed.connected:
                break
            await asyncio.sleep(0.01)
        await a.announce("sip:missed@example.com", "presence")  # lost for b...
        await proxy.start()
        await rec.wait(lambda: rec.resyncs == 1, timeout=5)      # ...so b is told to resync
        await a.announce("sip:after@example.com", "presence")
        await rec.wait(lambda: len(rec.changed) == 2)
        assert [u for u, _, _ in rec.changed] == ["sip:before@example.com", "sip:after@example.com"]
    finally:
        await proxy.stop()


async def test_heartbeat_failures_fence_the_node_without_raising(cluster: Cluster) -> None:
    proxy = TcpProxy(pg_host_port(cluster.url))
    await proxy.start()
    try:
        b, _ = await cluster.node("b", url=proxied(cluster.url, proxy))
        await proxy.stop()
        for _ in range(8):                 # 40 s of failing heartbeats
            cluster.clock.now += 5
            await b.on_timer()
        assert b.stats.heartbeat_failures >= 1
        assert not b.owns_subscriptions()
    finally:
        await proxy.stop()


# --- worker processes as nodes (docs/workers.md section 3) ----------------------------------------------

async def test_supervised_workers_adopt_each_row_of_a_dead_worker_once_even_when_two_race(
        cluster: Cluster) -> None:
    w0, rec0 = await cluster.node("w0", membership=SupervisedMembership())
    w1, rec1 = await cluster.node("w1", membership=SupervisedMembership())
    await seed_rows(w0.db, "w2", 300)
    assert w0.run() is None and w0.owns_subscriptions() and w0.next_deadline() == float("inf")
    got = await asyncio.gather(w0.take_over("w2"), w1.take_over("w2"))   # two Adopts at once
    assert sum(got) == 300
    ids = [r["id"] for r in rec0.adopted + rec1.adopted]
    assert len(ids) == 300 and len(set(ids)) == 300
    assert await w0.db.count("active_watchers", {"sharing_tag": "w2"}) == 0
    with pytest.raises(DatabaseError, match="rs_nodes"):  # the supervisor is the membership: no table
        await w0.db.count("rs_nodes")
    assert next(n["node_id"] for n in await w0.nodes()) == "w0"
    with pytest.raises(ClusterError):
        await w0.take_over("w0")


async def test_the_workers_of_a_cluster_node_beat_as_node1_w_slot_and_worker_0_claims_slots_gone(
        cluster: Cluster) -> None:
    db = await open_database(cluster.url)
    cluster.dbs.append(db)
    await db.ensure_schema(["active_watchers"])
    for tag in ("node1.w1", "node1.w3", "node2.w5"):
        await seed_rows(db, tag, 2, start=len(tag) * 100 + int(tag[-1]) * 10)
    base = ClusterConfig(cluster.cluster_id, "node1", ping_interval=5, node_timeout=30)
    w0, rec0 = await cluster.node("node1.w0", cfg=worker_config(WorkerIdentity(0, 2), base))
    _w1, rec1 = await cluster.node("node1.w1", cfg=worker_config(WorkerIdentity(1, 2), base))
    assert w0.node_id == "node1.w0" and w0.config.channel == f"rs_presence_{cluster.cluster_id}"
    assert {r["callid"].split("-")[0] for r in rec0.adopted} == {"node1.w3"} and rec1.adopted == []
    assert await db.count("active_watchers", {"sharing_tag": "node2.w5"}) == 2   # another machine's
    assert sorted(r["node_id"] for r in await w0.nodes()) == ["node1.w0", "node1.w1"]


# --- one node on SQLite: the same code, the in-process feed ---------------------------------------------

async def test_nodes_on_one_sqlite_file_work_the_same(tmp_path: Path) -> None:
    c = Cluster(f"sqlite://{tmp_path}/presence.sqlite")
    try:
        a, rec_a = await c.node("a")
        _b, rec_b = await c.node("b")
        await seed_rows(a.db, "b", 2)
        await a.announce("sip:alice@example.com", "presence")
        await rec_b.wait(lambda: len(rec_b.changed) == 1)
        await tick([a], c.clock, 40)
        assert len(rec_a.adopted) == 2 and rec_a.changed == []
    finally:
        await c.close()


# --- pure parts -------------------------------------------------------------------------------------------

def test_wire_round_trip_and_bad_payloads() -> None:
    for ann in (PresentityChanged("n1", "sip:alice@example.com", "dialog;sla", "a.1"),
                PresentityChanged("n1", "sip:line@example.com", "dialog;sla", "a.2", "sip:phone1@10.0.0.1"),
                SubscriptionMoved("n2", "n1", "call@host", "tt", "ft")):
        text = encode(ann)
        assert decode(text) == ann and len(text.encode()) < 8000
    assert decode('{"v": 2, "o": "p"}') is None and decode('{"v": 1, "o": "zz"}') is None
    # an older node's announcement (no "s") names no sender; a sender is only sent when there is one
    assert decode('{"v": 1, "o": "p", "n": "x", "u": "sip:a@b", "e": "presence"}') == \
        PresentityChanged("x", "sip:a@b", "presence", "", None)
    assert '"s"' not in encode(PresentityChanged("x", "sip:a@b", "presence"))
    for bad in ("", "[]", "nope", '{"v": 1, "o": "p", "n": "x", "u": 3, "e": "presence"}',
                '{"v": 1, "o": "p", "n": "", "u": "sip:a@b", "e": "presence"}',
                '{"v": 1, "o": "p", "n": "x", "u": "sip:a@b", "e": "presence", "s": 7}',
                '{"v": 1, "o": "p", "n": "x", "u": "' + "a" * 2000 + '", "e": "presence"}'):
        with pytest.raises(AnnouncementError):
            decode(bad)


def test_config_checks_and_modparams() -> None:
    assert config_from_params({"cluster_id": 0}) is None
    cfg = config_from_params({"cluster_id": 7, "cluster_sharing_tag": "node1",
                              "cluster_pres_events": "presence, dialog;sla", "cluster_node_timeout": 0})
    assert cfg is not None and cfg.channel == "rs_presence_7" and cfg.node_timeout == 0
    assert cfg.pres_events == frozenset({"presence", "dialog;sla"})
    assert parse_pres_events(" , ") is None
    with pytest.raises(ClusterError, match="cluster_sharing_tag"):
        config_from_params({"cluster_id": 7})
    for bad in ({"cluster_id": -1, "node_id": "n"}, {"cluster_id": 1, "node_id": "x" * 33},
                {"cluster_id": 1, "node_id": "n", "node_timeout": 6, "ping_interval": 5},
                {"cluster_id": True, "node_id": "n"}):
        with pytest.raises(ClusterError):
            ClusterConfig(**bad)  # type: ignore[arg-type]


async def test_a_coalesced_run_leaves_out_a_sender_only_when_every_announcement_named_it(
        cluster: Cluster) -> None:
    a, _ = await cluster.node("a")
    b, _rec = await cluster.node("b")
    release = asyncio.Event()
    calls: list[tuple[str, str | None]] = []

    async def slow(uri: str, event: str, sender: str | None = None) -> None:
        calls.append((uri, sender))
        await release.wait()

    b.on_presentity_changed = slow
    phone1, phone2 = "sip:phone1@127.0.0.1:5062", "sip:phone2@127.0.0.1:5064"
    await a.announce("sip:line@example.com", "presence", "e1", phone1)
    await a.announce("sip:line@example.com", "presence", "e1", phone1)   # coalesced: phone1 only
    await a.announce("sip:other@example.com", "presence", "e2", phone1)
    await a.announce("sip:other@example.com", "presence", "e2", phone1)
    await a.announce("sip:other@example.com", "presence", "e3", phone2)  # coalesced: two senders
    for _ in range(100):
        if len(calls) >= 2 and b.stats.received == 5:
            break
        await asyncio.sleep(0.01)
    release.set()
    for _ in range(100):
        if not b._pending:
            break
        await asyncio.sleep(0.01)
    assert [c for c in calls if c[0] == "sip:line@example.com"] == [("sip:line@example.com", phone1)] * 2
    assert [c for c in calls if c[0] == "sip:other@example.com"] == [("sip:other@example.com", phone1),
                                                                    ("sip:other@example.com", None)]
