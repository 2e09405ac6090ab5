"""Presence with N worker processes as nodes of the cluster model (docs/workers.md section 3), in one
process: presence services w0, w1... on one SQLite file, each with its own ClusterNode under a
SupervisedMembership, the way tests/cluster runs nodes on PostgreSQL (Workers makes them; the `workers`
fixture in conftest.py stops them). The change feed between them is the in-process hub (both Databases on
one file), or - as between real processes - two hubs joined by a FeedRelay (test_feed_relay.py)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routescript.db import Database, open_database
from routescript.db.feed import FeedRelay, set_feed_relay
from routescript.modules.presence.cluster import ClusterNode, worker_config
from routescript.modules.presence.membership import SupervisedMembership, WorkerIdentity
from routescript.modules.presence.service import PresenceService, PresenceSettings
from routescript.modules.presence.storage import PresenceStore
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


def one_file_two_paths(tmp_path: Path) -> tuple[str, str]:
    """One SQLite file seen through two paths (a symlinked directory): two hub keys, as two processes'."""
    real = tmp_path / "db"
    real.mkdir()
    os.symlink(real, tmp_path / "other")
    return str(real / "presence.sqlite"), str(tmp_path / "other" / "presence.sqlite")


@contextmanager
def relay_installed(relay: FeedRelay) -> Iterator[None]:
    """`relay` carries every committed announcement while the block runs."""
    set_feed_relay(relay)
    try:
        yield
    finally:
        set_feed_relay(None)


@asynccontextmanager
async def workers_on(url: str) -> AsyncIterator[Workers]:
    """Workers on the database at `url`, every one stopped at the end."""
    ws = Workers(url)
    try:
        yield ws
    finally:
        await ws.close()
