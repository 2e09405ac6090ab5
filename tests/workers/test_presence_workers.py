"""Presence with N worker processes as nodes of the cluster model (docs/workers.md section 3), in one
process: two presence services w0 and w1 on one SQLite file, each with its own ClusterNode under a
SupervisedMembership, the way tests/cluster runs nodes on PostgreSQL. The change feed between them is
the in-process hub (both Databases on one file), or - as between real processes - two hubs joined by a
FeedRelay that carries each committed announcement to the other one's deliver_remote."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from routescript.db import Database, DatabaseError, open_database
from routescript.db.feed import LocalHub, deliver_remote, resync_local, set_feed_relay
from routescript.modules.presence.base import TAKEOVER_CSEQ_GAP
from routescript.modules.presence.cluster import ClusterConfig, ClusterNode, worker_config
from routescript.modules.presence.membership import (
    MAX_WORKER_SLOTS,
    ClusterError,
    SupervisedMembership,
    WorkerIdentity,
)
from routescript.modules.presence.service import PresenceService, PresenceSettings
from routescript.modules.presence.storage import PresenceStore
from routescript.modules.presence_xml import PresenceXmlModule
from routescript.testing.presence_doubles import (SOCK, ManualClock, PresenceCtx, PresenceServer,
                                                  presence_registry, sip_request)
from routescript.transport.address import Source
from routescript.workers.dispatch import SlotTable
from routescript.workers.interest import PresentityInterest, SharedInterest

WATCHER_SRC = Source("udp", SOCK, "127.0.0.1", 48261)


def slot_tag_prefix(slot: int | None) -> str:
    """Worker `slot`'s To tags carry the slot (docs/workers.md section 2, rule 2)."""
    return f"{slot if slot is not None else 'x'}.0."


def pidf(basic: str) -> bytes:
    return (b'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
            b'entity="sip:carol@127.0.0.1"><tuple id="t1"><status><basic>' + basic.encode() +
            b'</basic></status></tuple></presence>')


def publish(basic: str | None = "open", *, cseq: int = 1, expires: int = 600, etag: str | None = None) -> Any:
    body = pidf(basic) if basic else b""
    extra = (f"\nSIP-If-Match: {etag}" if etag else "") + \
        ("\nContent-Type: application/pidf+xml" if body else "")
    return sip_request(f"""
PUBLISH sip:carol@127.0.0.1:5070 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:45145;branch=z9hG4bKp{cseq}{basic}
From: <sip:carol@127.0.0.1>;tag=p1
To: <sip:carol@127.0.0.1>
Call-ID: pub-1
CSeq: {cseq} PUBLISH
Event: presence
Expires: {expires}{extra}""", body)


def subscribe(user: str, *, cseq: int = 1, expires: int = 600, to_tag: str | None = None) -> Any:
    tag = f";tag={to_tag}" if to_tag else ""
    return sip_request(f"""
SUBSCRIBE sip:carol@127.0.0.1:5070 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:48261;branch=z9hG4bKs{user}{cseq}
From: <sip:{user}@127.0.0.1>;tag=ft-{user}
To: <sip:carol@127.0.0.1>{tag}
Call-ID: sub-{user}
CSeq: {cseq} SUBSCRIBE
Contact: <sip:{user}@127.0.0.1:48261>
Event: presence
Expires: {expires}""")


@dataclass
class Worker:
    """One presence worker as the module starts it (module.py start()): its store tagged with its node
    id, its ClusterNode under a SupervisedMembership, loaded, then started (claims)."""

    slot: int | None
    db: Database
    server: PresenceServer
    service: PresenceService
    node: ClusterNode | None
    membership: SupervisedMembership | None
    subscribed: dict[str, str] = field(default_factory=dict)   # watcher -> our To tag

    @property
    def notifies(self) -> list[Any]:
        return self.server.transactions.sent

    def notifies_to(self, user: str) -> list[Any]:
        return [n for n in self.notifies if n.call_id == f"sub-{user}"]

    async def subscribe(self, user: str, expires: int = 600) -> Any:
        ctx = PresenceCtx(subscribe(user, expires=expires), WATCHER_SRC)
        assert await self.service.handle_subscribe(ctx) == 1
        ok = self.server.replies[-1]
        self.subscribed[user] = ok.to.tag
        return ok

    async def publish(self, basic: str | None = "open", **kw: Any) -> Any:
        await self.service.handle_publish(PresenceCtx(publish(basic, **kw), WATCHER_SRC))
        return self.server.replies[-1]


class Workers:
    """Workers on one SQLite file, made on demand and all stopped at the end; one fake clock."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clock = ManualClock()
        self.all: list[Worker] = []

    async def start(self, slot: int | None, n_total: int = 2, *, url: str | None = None,
                    epoch: int = 0, interest: SharedInterest | None = None, carry: bool = True) -> Worker:
        """`interest`: worker_affinity "uri" - the workers count their watchers there and announce a
        change only where it is needed (routescript/workers/interest.py). `carry` False: a received
        change is always read from the database (no on_presentity_state), as before session 12."""
        db = await open_database(url or self.url)
        await db.ensure_schema(["presentity", "active_watchers", "watchers"])
        server = PresenceServer(tag_prefix=slot_tag_prefix(slot))
        cfg = worker_config(WorkerIdentity(slot, n_total, epoch), None) if slot is not None else None
        settings = PresenceSettings(server_address="sip:presence@127.0.0.1:5070")
        service = PresenceService(server, presence_registry(), settings,
                                  store=PresenceStore(db, sharing_tag=cfg.node_id if cfg else None),
                                  clock=self.clock)
        node = membership = None
        if cfg is not None:
            membership = SupervisedMembership()
            node = ClusterNode(db, cfg, on_presentity_changed=service.cluster_presentity_changed,
                               on_presentity_state=service.cluster_presentity_state if carry else None,
                               on_subscriptions_adopted=service.cluster_adopt,
                               on_resync=service.cluster_resync,
                               on_ownership_lost=service.cluster_ownership_lost,
                               on_subscription_moved=service.cluster_subscription_moved, clock=self.clock,
                               membership=membership)
            service.join_cluster(node, as_worker=True)
            if interest is not None and slot is not None:
                view = PresentityInterest(interest, slot, n_total, lambda: SlotTable.identity(n_total))
                view.starting()
                service.count_interest(view)
        await service.load()
        if node is not None:
            await node.start()
            assert node.run() is None   # supervised: nothing to time
            if epoch > 0:               # a restarted slot: what it may have missed (module.py start())
                await service.cluster_rejoin()
        if interest is not None and slot is not None:
            interest.ready(slot)
        worker = Worker(slot, db, server, service, node, membership)
        self.all.append(worker)
        return worker

    async def stop(self, worker: Worker, *, crash: bool = False) -> None:
        """A graceful stop syncs what memory holds; a crash (kill -9) loses it."""
        if worker not in self.all:
            return
        self.all.remove(worker)
        if worker.node is not None:
            await worker.node.stop()
        await worker.service.sender.close()
        if not crash:
            await worker.service.sync_db()
        assert worker.service.store is not None
        await worker.service.store.committer.drain()
        await worker.db.close()

    async def close(self) -> None:
        for worker in list(self.all):
            await self.stop(worker)


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[Workers]:
    ws = Workers(f"sqlite://{tmp_path}/presence.sqlite")
    try:
        yield ws
    finally:
        await ws.close()


async def settle(*ws: Worker) -> None:
    """Let announcements, their reads and the NOTIFY queues run."""
    for _ in range(3):
        for _ in range(30):
            await asyncio.sleep(0)
        for w in ws:
            await w.service.sender.drain(1)
        await asyncio.sleep(0.01)


def states(notifies: list[Any]) -> list[str]:
    return ["open" if b"<basic>open" in n.body else "closed" if b"<basic>closed" in n.body else "none"
            for n in notifies]


def cseqs(notifies: list[Any]) -> list[int]:
    return [n.cseq.number for n in notifies]


def row_of(path: str, user: str) -> dict[str, Any]:
    """active_watchers row of sub-<user>, read by a connection of its own (as another process would)."""
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM active_watchers WHERE callid = ?", (f"sub-{user}",)).fetchone()
    return dict(row) if row is not None else {}


# --- exactly once, in order -----------------------------------------------------------------------------

async def test_a_publish_on_w0_reaches_watchers_on_both_workers_exactly_once_in_cseq_order(
        workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    await w0.subscribe("dave")
    await w1.subscribe("erin")
    await settle(w0, w1)
    assert states(w0.notifies_to("dave")) == ["none"] and states(w1.notifies_to("erin")) == ["none"]
    etag = (await w0.publish("open")).header("SIP-ETag")
    await settle(w0, w1)
    await w0.publish("closed", cseq=2, etag=etag)
    await settle(w0, w1)
    # each dialog is told by its owner only, each state once, CSeq strictly increasing
    assert states(w0.notifies_to("dave")) == ["none", "open", "closed"]
    assert states(w1.notifies_to("erin")) == ["none", "open", "closed"]
    assert w0.notifies_to("erin") == [] and w1.notifies_to("dave") == []
    for ns in (w0.notifies_to("dave"), w1.notifies_to("erin")):
        assert cseqs(ns) == sorted(set(cseqs(ns)))
    assert w1.node is not None and w1.node.stats.received == 2 and w0.node is not None and \
        w0.node.stats.announced == 2
    # w1 has no SQL per announcement to spare for presentities nobody there watches: marked stale only
    assert w1.service.persistence.stale == set()


async def test_an_announcement_without_watchers_marks_the_presentity_stale_and_the_next_request_reads(
        workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    etag = (await w0.publish("open")).header("SIP-ETag")
    await settle(w0, w1)
    assert w1.service.persistence.stale == {("sip:carol@127.0.0.1", "presence")}
    assert w1.service.persistence.read_first
    # w1 never held this publication: its first watcher is sent the state w0 stored
    await w1.subscribe("erin")
    await settle(w0, w1)
    assert states(w1.notifies_to("erin")) == ["open"]
    assert w1.service.persistence.stale == set() and not w1.service.persistence.read_first
    # a PUBLISH reaching w1 with w0's ETag is a modify there too (not 412)
    ok = await w1.publish("closed", cseq=2, etag=etag)
    assert ok.status == 200 and ok.header("SIP-ETag") != etag


async def test_a_publish_whose_etag_is_not_in_memory_reads_the_database(workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    etag = (await w0.publish("open")).header("SIP-ETag")
    await settle(w0, w1)
    w1.service.persistence.stale.clear()   # as if the announcement had been lost
    w1.service.persistence.read_first = False
    ok = await w1.publish(None, cseq=2, etag=etag)    # a refresh with an ETag w1 never saw
    assert ok.status == 200
    assert (await w1.publish(None, cseq=3, etag="no-such-etag")).status == 412


# --- the feed between processes: two hubs joined by a relay --------------------------------------------

class CrossRelay:
    """Two 'processes' on one file, seen through two paths (two hub keys): what one commits is carried
    to the other's deliver_remote, as the inbox bus does between workers."""

    def __init__(self, key_a: str, key_b: str) -> None:
        self.peer = {key_a: key_b, key_b: key_a}
        self.sent: list[tuple[str, str, str]] = []

    def send(self, db_key: str, channel: str, payload: str) -> None:
        self.sent.append((db_key, channel, payload))
        asyncio.get_running_loop().call_soon(deliver_remote, self.peer[db_key], channel, payload)


@pytest.fixture
def relay_paths(tmp_path: Path) -> AsyncIterator[tuple[str, str, CrossRelay]]:
    real = tmp_path / "db"
    real.mkdir()
    os.symlink(real, tmp_path / "other")
    a, b = str(real / "presence.sqlite"), str(tmp_path / "other" / "presence.sqlite")
    relay = CrossRelay(a, b)
    set_feed_relay(relay)
    try:
        yield a, b, relay
    finally:
        set_feed_relay(None)


async def test_through_the_relay_with_two_hubs_each_watcher_is_notified_once(
        workers: Workers, relay_paths: tuple[str, str, CrossRelay]) -> None:
    path_a, path_b, relay = relay_paths
    w0 = await workers.start(0, url=f"sqlite://{path_a}")
    w1 = await workers.start(1, url=f"sqlite://{path_b}")
    assert LocalHub._hubs.keys() >= {path_a, path_b}   # two hubs: only the relay joins them
    await w0.subscribe("dave")
    await w1.subscribe("erin")
    etag = (await w0.publish("open")).header("SIP-ETag")
    await settle(w0, w1)
    await w1.publish("closed", cseq=2, etag=etag)     # and the other way round
    await settle(w0, w1)
    assert states(w0.notifies_to("dave")) == ["none", "open", "closed"]
    assert states(w1.notifies_to("erin")) == ["none", "open", "closed"]
    # one relayed announcement per committed change, each delivered once, none relayed back again
    assert [k for k, _, _ in relay.sent] == [path_a, path_b]
    assert w0.node is not None and w1.node is not None
    assert (w0.node.stats.received, w1.node.stats.received) == (1, 1)


async def test_deliver_remote_checks_what_it_is_given_and_a_failing_relay_never_fails_the_commit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DatabaseError, match="channel"):
        deliver_remote("/x.sqlite", "Bad Channel", "{}")
    with pytest.raises(DatabaseError, match="payload"):
        deliver_remote("/x.sqlite", "rs_presence_workers", "x" * 9000)

    class Broken:
        def send(self, db_key: str, channel: str, payload: str) -> None:
            raise OSError("inbox full")

    got: list[str] = []
    db = await open_database(f"sqlite://{tmp_path}/f.sqlite")
    set_feed_relay(Broken())
    failures = LocalHub.relay_failures
    try:
        await db.listen("chan", lambda ch, p: got.append(p))
        with caplog.at_level(logging.ERROR, "routescript.db"):
            await db.notify("chan", "hello")
        await asyncio.sleep(0.01)
    finally:
        set_feed_relay(None)
        await db.close()
    assert got == ["hello"] and LocalHub.relay_failures == failures + 1
    assert "relaying an announcement" in caplog.text


async def test_resync_local_makes_every_listener_resync(workers: Workers) -> None:
    w0 = await workers.start(0)
    assert w0.node is not None
    before = w0.node.stats.resyncs
    resync_local()
    await settle(w0)
    assert w0.node.stats.resyncs == before + 1


# --- expiry and refreshes -------------------------------------------------------------------------------

async def test_an_expired_subscription_is_ended_once_by_its_owner(workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    await w0.subscribe("dave", expires=5)
    await w1.subscribe("erin", expires=5)
    await settle(w0, w1)
    workers.clock.now += 6
    for w in (w0, w1, w0, w1):     # every worker runs clean_period, twice
        await w.service.clean()
    await settle(w0, w1)
    ends = [(w.slot, n.call_id) for w in (w0, w1) for n in w.notifies
            if n.header("Subscription-State").startswith("terminated")]
    assert sorted(ends) == [(0, "sub-dave"), (1, "sub-erin")]


async def test_a_refresh_is_stored_before_its_200(workers: Workers, tmp_path: Path) -> None:
    w1 = await workers.start(1)
    await w1.subscribe("erin", expires=600)
    path = str(tmp_path / "presence.sqlite")
    seen: list[tuple[int, int]] = []
    w1.server.on_reply = lambda resp: seen.append((resp.status, row_of(path, "erin")["expires"]))
    workers.clock.now += 100
    msg = subscribe("erin", cseq=2, expires=300, to_tag=w1.subscribed["erin"])
    assert await w1.service.handle_subscribe(PresenceCtx(msg, WATCHER_SRC)) == 1
    # the 200 left with the row already saying the new expiry (a kill -9 right after loses nothing)
    assert seen == [(200, int(workers.clock.now) + 300)]
    assert row_of(path, "erin")["remote_cseq"] == 2 and row_of(path, "erin")["sharing_tag"] == "w1"


async def test_one_process_keeps_refreshes_for_the_periodic_sync(workers: Workers, tmp_path: Path) -> None:
    solo = await workers.start(None)
    await solo.subscribe("erin", expires=600)
    first = row_of(str(tmp_path / "presence.sqlite"), "erin")["expires"]
    workers.clock.now += 100
    msg = subscribe("erin", cseq=2, expires=300, to_tag=solo.subscribed["erin"])
    assert await solo.service.handle_subscribe(PresenceCtx(msg, WATCHER_SRC)) == 1
    assert row_of(str(tmp_path / "presence.sqlite"), "erin")["expires"] == first   # db_update_period's job


async def test_a_publication_refreshed_on_another_worker_is_read_again_once_it_expires_in_memory(
        workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    await w1.subscribe("erin", expires=3600)
    etag = (await w0.publish("open", expires=600)).header("SIP-ETag")
    await settle(w0, w1)
    workers.clock.now += 500
    await w0.publish(None, cseq=2, etag=etag, expires=600)   # a refresh: same state, nothing announced
    workers.clock.now += 101                                  # w1's copy has expired, the row has not
    await w1.service.clean()
    await settle(w0, w1)
    assert states(w1.notifies_to("erin")) == ["none", "open"]  # nothing changed for erin
    await w1.subscribe("frank")                               # a new watcher on w1 gets the live state
    await settle(w1)
    assert states(w1.notifies_to("frank")) == ["open"]


# --- adoption and restarts ------------------------------------------------------------------------------

async def test_w0_adopts_a_dead_w1_and_notifies_its_watchers_with_the_current_state(
        workers: Workers, tmp_path: Path) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    await w1.subscribe("erin")
    await settle(w0, w1)
    last_cseq = cseqs(w1.notifies_to("erin"))[-1]
    await workers.stop(w1, crash=True)                 # kill -9: nothing more from w1
    await w0.publish("open")                           # erin's owner is gone: nobody tells her
    await settle(w0)
    assert w0.notifies_to("erin") == []
    assert w0.membership is not None
    assert await w0.membership.adopt("w1") == 1        # the supervisor's Adopt(slot=1)
    await settle(w0)
    told = w0.notifies_to("erin")
    assert states(told) == ["open"] and told[0].cseq.number >= last_cseq + TAKEOVER_CSEQ_GAP
    assert told[0].from_.tag == w1.subscribed["erin"]  # the same dialog, now w0's
    assert row_of(str(tmp_path / "presence.sqlite"), "erin")["sharing_tag"] == "w0"
    # its refresh reaches w0 now (the slot table maps 1 -> 0) and is answered there
    msg = subscribe("erin", cseq=2, to_tag=w1.subscribed["erin"])
    assert await w0.service.handle_subscribe(PresenceCtx(msg, WATCHER_SRC)) == 1
    # a restarted w1 owns nothing: the rows tagged w1 are gone
    w1b = await workers.start(1, epoch=1)
    assert len(w1b.service.subscriptions) == 0
    with pytest.raises(ClusterError):
        await w0.membership.adopt("w0")


async def test_the_adopter_reads_the_presentities_it_adopts_even_after_a_lost_announcement(
        workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    await w0.publish("closed")
    await w1.subscribe("erin")
    await settle(w0, w1)
    etag = w0.server.replies[-1].header("SIP-ETag")
    await w1.publish("open", cseq=2, etag=etag)        # w1 changes it, then dies before w0 heard
    await workers.stop(w1, crash=True)
    w0.service.persistence.stale.clear()               # the announcement was lost with w1
    assert w0.membership is not None and await w0.membership.adopt("w1") == 1
    await settle(w0)
    assert states(w0.notifies_to("erin")) == ["open"]


async def test_a_restarted_worker_reloads_its_rows_and_goes_on_above_the_cseqs_it_may_have_sent(
        workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    await w0.publish("open")
    await w1.subscribe("erin")
    await settle(w0, w1)
    sent = cseqs(w1.notifies_to("erin"))[-1]
    await workers.stop(w1, crash=True)
    w1b = await workers.start(1, epoch=1)              # epoch + 1, same slot: its own rows back
    await settle(w1b)
    told = w1b.notifies_to("erin")
    assert states(told) == ["open"] and told[0].cseq.number > sent + TAKEOVER_CSEQ_GAP - 1
    assert len(w0.service.subscriptions) == 0


async def test_two_workers_after_one_process_and_back_lose_nothing(workers: Workers, tmp_path: Path) -> None:
    path = str(tmp_path / "presence.sqlite")
    solo = await workers.start(None)
    await solo.subscribe("dave")
    await solo.subscribe("erin")
    await workers.stop(solo)
    assert row_of(path, "dave")["sharing_tag"] is None
    # 2 workers: w0 claims the untagged rows (a one-process run wrote them)
    w0, w1 = await workers.start(0), await workers.start(1)
    assert (len(w0.service.subscriptions), len(w1.service.subscriptions)) == (2, 0)
    await w1.subscribe("frank")
    assert {row_of(path, u)["sharing_tag"] for u in ("dave", "erin")} == {"w0"}
    assert row_of(path, "frank")["sharing_tag"] == "w1"
    await workers.stop(w0)
    await workers.stop(w1)
    # back to one process: every row whatever its tag
    solo = await workers.start(None)
    assert sorted(s.callid for s in solo.service.subscriptions) == ["sub-dave", "sub-erin", "sub-frank"]
    await workers.stop(solo)
    # one worker after two: worker 0 claims the rows of the slot that is gone
    only = await workers.start(0, n_total=1)
    assert len(only.service.subscriptions) == 3
    assert row_of(path, "frank")["sharing_tag"] == "w0"


# --- the pure parts -------------------------------------------------------------------------------------

def test_worker_identity_and_its_tags() -> None:
    me = WorkerIdentity(0, 3, epoch=2)
    assert me.node_id() == "w0" and me.node_id(2) == "w2" and me.node_id(cluster_tag="node1") == "node1.w0"
    assert me.orphan_tags()[:2] == ("w3", "w4") and len(me.orphan_tags()) == MAX_WORKER_SLOTS - 3
    assert WorkerIdentity(1, 3).orphan_tags() == ()
    for bad in ((3, 3), (-1, 2), (0, 0), (0, MAX_WORKER_SLOTS + 1), (True, 2)):
        with pytest.raises(ClusterError):
            WorkerIdentity(*bad)  # type: ignore[arg-type]
    with pytest.raises(ClusterError, match="32 characters"):
        me.node_id(cluster_tag="n" * 30)


def test_worker_config_with_and_without_a_cluster() -> None:
    solo = worker_config(WorkerIdentity(1, 2), None)
    assert (solo.cluster_id, solo.node_id, solo.channel, solo.adopt_untagged, solo.orphan_tags) == \
        (0, "w1", "rs_presence_workers", False, ())
    first = worker_config(WorkerIdentity(0, 2), None)
    assert first.adopt_untagged and first.orphan_tags[0] == "w2"
    node = worker_config(WorkerIdentity(0, 2), ClusterConfig(7, "node1"))
    assert (node.cluster_id, node.node_id, node.channel, node.orphan_tags[0]) == \
        (7, "node1.w0", "rs_presence_7", "node1.w2")


async def test_a_refresh_reaching_the_former_owner_claims_its_dialog_back(workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    await w1.subscribe("erin")
    await workers.stop(w1, crash=True)
    assert w0.membership is not None and await w0.membership.adopt("w1") == 1
    w1b = await workers.start(1, epoch=1)              # back: its To tags bring erin's refresh to it
    msg = subscribe("erin", cseq=2, to_tag=w1.subscribed["erin"])
    assert await w1b.service.handle_subscribe(PresenceCtx(msg, WATCHER_SRC)) == 1
    assert w1b.server.replies[-1].status == 200
    await settle(w0, w1b)
    # claim_subscription: the row is w1's again and w0 was told to forget the dialog
    assert len(w1b.service.subscriptions) == 1 and len(w0.service.subscriptions) == 0


# --- the module: run_as_worker -------------------------------------------------------------------------

class ModuleHost(PresenceServer):
    """PresenceServer plus what PresenceModule.start uses of the server."""

    def __init__(self, slot: int | None) -> None:
        super().__init__(tag_prefix=slot_tag_prefix(slot))
        from routescript.core.stats import Statistics

        self.statistics = Statistics()
        self.dbs: list[Database] = []

    async def database(self, url: str) -> Database:
        db = await open_database(url)
        self.dbs.append(db)
        return db


def module_params(**over: Any) -> dict[str, Any]:
    from routescript.modules.presence import PresenceModule

    timers_off = {"clean_period": 0, "db_update_period": 0}
    return {p.name: p.default for p in PresenceModule.params} | timers_off | over


def xml_events() -> list[Any]:
    defaults = {p.name: p.default for p in PresenceXmlModule.params}
    return list(PresenceXmlModule(object(), defaults | {"force_active": 1}).make_events())


async def test_the_module_runs_as_worker_node_w_slot_on_sqlite(tmp_path: Path) -> None:
    from routescript.core.module import ConfigError
    from routescript.modules.presence import PresenceModule

    url = f"sqlite://{tmp_path}/presence.sqlite"
    hosts = [ModuleHost(0), ModuleHost(1)]
    mods = [PresenceModule(h, module_params(db_url=url)) for h in hosts]
    try:
        for slot, mod in enumerate(mods):
            for ev in xml_events():
                mod.add_event(ev)
            mod.check()
            mod.run_as_worker(WorkerIdentity(slot, 2))
            await mod.start()
        w0, w1 = mods
        assert w0.cluster is not None and w0.cluster.node_id == "w0" and w0.cluster.config.cluster_id == 0
        assert isinstance(w0.cluster.membership, SupervisedMembership)
        assert w0.service is not None and w0.service.store is not None
        assert w0.service.store.sharing_tag == "w0"
        assert w0.service.persistence.refresh_before_reply and not w0.service.settings.fallback2db
        assert w1.service is not None
        assert await w1.service.handle_subscribe(PresenceCtx(subscribe("erin"), WATCHER_SRC)) == 1
        assert await w1.adopt_worker(0) == 0        # w0 has no subscription to give
        with pytest.raises(RuntimeError, match="before the presence module starts"):
            w0.run_as_worker(WorkerIdentity(0, 2))
        w0.resync()
        await asyncio.sleep(0.01)
        assert w0.cluster.stats.resyncs == 1
        # w1 again: at the server's first start (epoch 0) its watchers hear nothing, as a lone server's;
        # a restart of the slot (epoch 1) sends each the current state (announcements it missed)
        for epoch, told in ((0, 0), (1, 1)):
            await mods[1].stop()
            for db in hosts[1].dbs:     # the host goes with its module: its connections close with it
                await db.close()
            hosts[1] = ModuleHost(1)
            mods[1] = start_again = PresenceModule(hosts[1], module_params(db_url=url))
            for ev in xml_events():
                start_again.add_event(ev)
            start_again.check()
            start_again.run_as_worker(WorkerIdentity(1, 2, epoch))
            await start_again.start()
            assert start_again.service is not None
            await start_again.service.sender.drain(1)
            assert len(start_again.service.subscriptions) == 1 and len(hosts[1].transactions.sent) == told
    finally:
        for mod in mods:
            await mod.stop()
        for h in hosts:
            for db in h.dbs:
                await db.close()
    # cluster_id on SQLite stays refused: other machines cannot read the file
    solo = PresenceModule(ModuleHost(None), module_params(db_url=url, cluster_id=1, cluster_sharing_tag="n1"))
    with pytest.raises(ConfigError, match="PostgreSQL"):
        solo.check()


# --- announcing only where needed (worker_affinity "uri": routescript/workers/interest.py) ---------------
# carol's home is w1: crc32("carol@127.0.0.1") % 2 == 1, where the dispatcher sends her PUBLISHes and
# initial SUBSCRIBEs.

async def test_the_home_worker_announces_a_change_only_while_another_worker_holds_a_watcher(
        workers: Workers) -> None:
    shared = SharedInterest(2)
    w0, w1 = await workers.start(0, interest=shared), await workers.start(1, interest=shared)
    assert w0.node is not None and w1.node is not None
    etag = (await w1.publish("open")).header("SIP-ETag")
    await settle(w0, w1)
    assert w1.node.stats.announced == 0 and w0.node.stats.received == 0   # nobody else needed it
    assert w0.service.persistence.stale == set()
    await w0.subscribe("erin")           # a watcher on the other worker (e.g. adopted, or callid routing)
    await settle(w0, w1)
    assert states(w0.notifies_to("erin")) == ["open"]   # read: w0 never heard of the change
    etag = (await w1.publish("closed", cseq=2, etag=etag)).header("SIP-ETag")
    await settle(w0, w1)
    assert w1.node.stats.announced == 1
    assert states(w0.notifies_to("erin")) == ["open", "closed"]
    bye = subscribe("erin", cseq=2, expires=0, to_tag=w0.subscribed["erin"])   # its last watcher there
    assert await w0.service.handle_subscribe(PresenceCtx(bye, WATCHER_SRC)) == 1          # gone: quiet again
    await settle(w0, w1)
    await w1.publish("open", cseq=3, etag=etag)
    await settle(w0, w1)
    assert w1.node.stats.announced == 1
    assert shared.count(0, shared.cell("sip:carol@127.0.0.1")) == 0


async def test_a_worker_never_trusts_its_memory_of_another_workers_presentity(workers: Workers) -> None:
    shared = SharedInterest(2)
    w0, w1 = await workers.start(0, interest=shared), await workers.start(1, interest=shared)
    first = (await w0.publish("open")).header("SIP-ETag")   # reached w0 (not its home): announced
    await settle(w0, w1)
    assert w0.node is not None and w0.node.stats.announced == 1
    # the home worker modifies it; w0 holds no watcher, so it is not told
    second = await w1.publish("closed", cseq=2, etag=first)
    assert second.status == 200
    await settle(w0, w1)
    assert w1.node is not None and w1.node.stats.announced == 0
    # w0 still holds the first ETag in memory, but reads before deciding: it is gone, 412 as from w1
    stale = await w0.publish("open", cseq=3, etag=first)
    assert stale.status == 412
    assert (await w0.publish("open", cseq=4, etag=second.header("SIP-ETag"))).status == 200


async def test_a_starting_worker_is_told_every_change_until_it_is_ready() -> None:
    shared = SharedInterest(2, cells=16)
    w1 = PresentityInterest(shared, 1, 2, lambda: SlotTable.identity(2))
    w0 = PresentityInterest(shared, 0, 2, lambda: SlotTable.identity(2))
    assert w1.may_skip_announcement("sip:carol@127.0.0.1")
    w0.hold("sip:dave@127.0.0.1")
    w0.starting()                                   # a restarted w0: its row counts from zero...
    assert shared.count(0, shared.cell("sip:dave@127.0.0.1")) == 0
    assert not w1.may_skip_announcement("sip:carol@127.0.0.1")   # ...and hears everything meanwhile
    w0.ready()
    assert w1.may_skip_announcement("sip:carol@127.0.0.1")
    w0.hold("sip:carol@127.0.0.1")
    assert not w1.may_skip_announcement("sip:carol@127.0.0.1")
    # a slot adopted by another worker: nobody skips (the adopter is not the home of what it serves)
    adopted = PresentityInterest(shared, 1, 2, lambda: SlotTable(1, (1, 1)))
    w0.release("sip:carol@127.0.0.1")
    assert not adopted.may_skip_announcement("sip:carol@127.0.0.1")
    # only the home worker may skip; another one always announces
    assert not w0.may_skip_announcement("sip:carol@127.0.0.1")
    assert w0.skipped == 0 and w1.skipped == 2


def test_the_counts_are_shared_with_forked_workers() -> None:
    shared = SharedInterest(2, cells=16)
    pid = os.fork()
    if pid == 0:   # the child: worker 0 holds a watcher of carol
        try:
            PresentityInterest(shared, 0, 2, lambda: SlotTable.identity(2)).hold("sip:carol@127.0.0.1")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    home = PresentityInterest(shared, 1, 2, lambda: SlotTable.identity(2))
    assert not home.may_skip_announcement("sip:carol@127.0.0.1")


# --- handle_publish's sender across workers (pua_bla: a phone is not told of its own call) ---------------

DAVE = "sip:dave@127.0.0.1:48261"     # the Contact of dave's subscription (subscribe() above)


async def publish_from(worker: Worker, sender: str, basic: str | None = "open", **kw: Any) -> Any:
    await worker.service.handle_publish(PresenceCtx(publish(basic, **kw), WATCHER_SRC), sender)
    return worker.server.replies[-1]


async def test_the_sender_is_left_out_on_another_worker_when_its_announcements_were_coalesced(
        workers: Workers) -> None:
    """dave's two changes are committed before w1 handles the first announcement (w1 busy with the
    presentity): w1's first read sees both, its second (the coalesced announcement) sees nothing new -
    dave must still not be told of his own change by either."""
    w0, w1 = await workers.start(0), await workers.start(1)
    await w1.subscribe("dave")
    await w1.subscribe("erin")
    await settle(w0, w1)
    async with w1.service.locks.hold("sip:carol@127.0.0.1"):
        etag = (await publish_from(w0, DAVE, "open")).header("SIP-ETag")
        await publish_from(w0, DAVE, "closed", cseq=2, etag=etag)
        await settle(w0)
    await settle(w0, w1)
    assert states(w1.notifies_to("dave")) == ["none"]
    assert states(w1.notifies_to("erin"))[0] == "none" and states(w1.notifies_to("erin"))[-1] == "closed"
    assert w0.notifies == []


async def test_the_sender_is_left_out_on_another_worker_when_another_publication_was_refreshed(
        workers: Workers) -> None:
    """erin's publication refreshed on w0 (a new ETag, nothing announced), then dave's change: w1's read
    finds both ETags new to it, yet only dave's publication changed - dave is not told of it."""
    w0, w1 = await workers.start(0), await workers.start(1)
    await w1.subscribe("dave")
    await w1.subscribe("erin")
    erin_etag = (await publish_from(w0, "sip:erin@127.0.0.1:48261", "open", cseq=1)).header("SIP-ETag")
    dave_etag = (await publish_from(w0, DAVE, "open", cseq=2)).header("SIP-ETag")
    await settle(w0, w1)
    told_dave = len(w1.notifies_to("dave"))
    assert states(w1.notifies_to("erin"))[-1] == "open"
    refreshed = await publish_from(w0, "sip:erin@127.0.0.1:48261", None, cseq=3, etag=erin_etag)
    assert refreshed.status == 200 and refreshed.header("SIP-ETag") != erin_etag
    await settle(w0, w1)
    await publish_from(w0, DAVE, "closed", cseq=4, etag=dave_etag)
    await settle(w0, w1)
    assert len(w1.notifies_to("dave")) == told_dave
    assert b"<basic>closed" in w1.notifies_to("erin")[-1].body
