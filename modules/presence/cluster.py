"""Presence on several nodes sharing one PostgreSQL database (docs/cluster.md).

`ClusterNode` is one node's membership: it owns no SIP state, only the rules of the cluster.
- Ownership: each subscription belongs to the node that accepted it; the node id is its sharing tag,
  stored in active_watchers.sharing_tag (OpenSIPS's column). Only the owner notifies and expires it.
- Announcements: a node that changed a presentity announces (pres_uri, event, etag) on the database's
  change feed (LISTEN/NOTIFY); every other node calls `on_presentity_changed(pres_uri, event, sender)`
  and notifies its own watchers (but `sender`, handle_publish's sender_uri, when every announcement that
  run answers names that one). An announcement carrying the stored change is first offered to
  `on_presentity_state(ann)`, at once as it arrives: True means memory took it and the run reads nothing.
  After the feed was cut, `on_resync()` asks the owner to re-read what it may have missed.
- Liveness (`membership.py`, composed): on several machines every node beats in rs_nodes and a silent
  peer is taken over by one survivor (`HeartbeatMembership`); the worker processes of one machine are
  told by their supervisor (`SupervisedMembership.adopt`). Either way the claimed rows go to
  `on_subscriptions_adopted(rows)`; a node that finds its own rows taken over calls
  `on_ownership_lost()` and joins again, owning nothing it did not reload.

Time is injected (`clock`, monotonic seconds; `wall_clock` for the rows people read); the node's work
happens in `on_timer()` at `next_deadline()`; `run()` is the thin asyncio loop around them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from routescript.db import MAX_PAYLOAD, DatabaseError

from .cluster_wire import (AnnouncementError, PresentityChanged, PublishedChange, SubscriptionMoved, decode,
                           encode)
from .membership import (ACTIVE, DEAD, MAX_NODE_ID, NODES, ClusterError, HeartbeatMembership, Membership,
                         Tags, WorkerIdentity)

log = logging.getLogger("routescript.presence.cluster")

__all__ = ["ACTIVE", "DEAD", "MAX_NODE_ID", "NODES", "ClusterConfig", "ClusterError", "ClusterNode",
           "ClusterStats", "config_from_params", "parse_pres_events", "worker_config"]

ACTIVE_WATCHERS = "active_watchers"
WORKERS_CHANNEL = "rs_presence_workers"   # the workers of one machine without cluster_id
MAX_PENDING_CHANGES = 10_000    # bound: presentities waiting for on_presentity_changed; beyond -> resync
MAX_ADOPT_BATCHES = 1_000       # bound: batches claimed in one takeover (the rest at the next heartbeat)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """The presence modparams of clustering (names: docs/cluster.md).

    cluster_id: OpenSIPS's presence `cluster_id`; nodes with the same id form one cluster (channel
        rs_presence_<id>); clusters sharing a PostgreSQL database need different ids. 0: the worker
        processes of one machine without a cluster (channel rs_presence_workers, no rs_nodes).
    node_id: `cluster_sharing_tag`: this node's sharing tag, written in active_watchers.sharing_tag.
    pres_events: OpenSIPS's `cluster_pres_events`: the events whose changes are announced/received
        (None: every event).
    ping_interval / node_timeout: `cluster_ping_interval` / `cluster_node_timeout` seconds (named after
        the clusterer module's ping_interval / node_timeout); node_timeout 0 = no automatic takeover.
    adopt_untagged: at start, claim rows with no sharing tag (made before clustering was enabled).
    adopt_batch: rows claimed per statement during a takeover.
    orphan_tags: tags whose rows are claimed at start too (worker 0: the slots of a previous run with
        more workers)."""

    cluster_id: int
    node_id: str
    pres_events: frozenset[str] | None = None
    ping_interval: float = 5.0
    node_timeout: float = 30.0
    adopt_untagged: bool = True
    adopt_batch: int = 500
    orphan_tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        cid = self.cluster_id
        if isinstance(cid, bool) or not isinstance(cid, int) or cid < 0:
            raise ClusterError(f"cluster_id must be a positive integer, not {self.cluster_id!r}")
        if not isinstance(self.node_id, str) or not self.node_id.strip() or len(self.node_id) > MAX_NODE_ID:
            raise ClusterError(f"the sharing tag (node id) must be 1..{MAX_NODE_ID} characters: "
                               f"{self.node_id!r}")
        if self.ping_interval <= 0:
            raise ClusterError("cluster_ping_interval must be above 0")
        if self.node_timeout and self.node_timeout <= self.ping_interval * 2:
            raise ClusterError("cluster_node_timeout must be 0 (no takeover) or above twice the ping "
                               "interval")
        if not 1 <= self.adopt_batch <= 10_000:
            raise ClusterError("adopt_batch must be within 1..10000")

    @property
    def channel(self) -> str:
        return f"rs_presence_{self.cluster_id}" if self.cluster_id else WORKERS_CHANNEL


def parse_pres_events(text: str | None) -> frozenset[str] | None:
    """cluster_pres_events: "presence, dialog;sla" -> {"presence", "dialog;sla"}; empty -> None (all)."""
    names = frozenset(p.strip() for p in (text or "").split(",") if p.strip())
    return names or None


Callback = Callable[..., "Awaitable[Any] | Any"]


async def _call(cb: Callback | None, *args: Any, **kwargs: Any) -> Any:
    if cb is None:
        return None
    result = cb(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


@dataclass(slots=True)
class ClusterStats:
    announced: int = 0
    received: int = 0
    ignored: int = 0            # own, not shared events, unknown operations
    applied: int = 0            # received changes memory took as they came (no read)
    malformed: int = 0
    adopted_rows: int = 0
    takeovers: int = 0
    resyncs: int = 0
    ownership_lost: int = 0
    heartbeat_failures: int = 0
    dropped_changes: int = 0
    peers_dead: list[str] = field(default_factory=list)


class ClusterNode:
    """One presence node's membership in a cluster. See the module docstring and docs/cluster.md.

    membership: who is alive (membership.py); default HeartbeatMembership (rs_nodes)."""

    def __init__(self, db: Any, config: ClusterConfig, *,
                 on_presentity_changed: Callable[[str, str, str | None], Awaitable[Any] | Any],
                 on_subscriptions_adopted: Callable[[list[dict[str, Any]]], Awaitable[Any] | Any],
                 on_resync: Callable[[], Awaitable[Any] | Any],
                 on_ownership_lost: Callable[[], Awaitable[Any] | Any] | None = None,
                 on_subscription_moved: Callable[[tuple[str, str, str]], Awaitable[Any] | Any] | None = None,
                 on_presentity_state: Callable[[PresentityChanged], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, membership: Membership | None = None) -> None:
        self.db = db
        self.config = config
        self.node_id = config.node_id
        self.on_presentity_changed = on_presentity_changed
        self.on_subscriptions_adopted = on_subscriptions_adopted
        self.on_resync = on_resync
        self.on_ownership_lost = on_ownership_lost
        self.on_subscription_moved = on_subscription_moved
        self.on_presentity_state = on_presentity_state
        self.clock = clock
        self.wall_clock = wall_clock
        self.stats = ClusterStats()
        self.membership: Membership = membership if membership is not None else HeartbeatMembership(rng)
        self._started = False
        # (pres_uri, event) being handled -> the senders of the announcements that came meanwhile (None: none)
        self._pending: dict[tuple[str, str], set[str | None] | None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifetime
    async def start(self) -> None:
        """Join (the membership: rs_nodes, or the supervisor's workers), start listening, and claim the
        untagged subscriptions (when configured) and the orphaned ones. Raises DatabaseError when the
        database is unreachable or incompatible (the server refuses to start)."""
        await self.membership.start(self)
        await self.db.listen(self.config.channel, self._on_payload, on_reconnect=self._on_reconnect)
        self._started = True
        if self.config.adopt_untagged:
            await self.sweep(None)
        if self.config.orphan_tags:
            await self.sweep(self.config.orphan_tags)

    async def stop(self) -> None:
        """Stop listening and beating. The rows stay: a node back within node_timeout keeps its
        subscriptions; otherwise a peer adopts them."""
        self._started = False
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        try:
            await self.db.unlisten(self.config.channel, self._on_payload, on_reconnect=self._on_reconnect)
        except DatabaseError as exc:
            log.warning("cluster %s: unlisten failed: %s", self.node_id, exc)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def run(self) -> asyncio.Task[None] | None:
        """Start the timer loop (heartbeat, dead-node detection) as a task; stop() ends it. None when the
        membership has nothing to time (supervised workers)."""
        if not self.membership.needs_timer:
            return None

        async def loop() -> None:
            while self._started:
                await asyncio.sleep(max(0.0, self.next_deadline() - self.clock()))
                await self.on_timer()
        self._runner = asyncio.get_running_loop().create_task(loop())
        return self._runner

    # ------------------------------------------------------------------ ownership
    @property
    def sharing_tag(self) -> str:
        """The value this node writes in active_watchers.sharing_tag (and filters its rows by)."""
        return self.node_id

    def owns_subscriptions(self, now: float | None = None) -> bool:
        """Whether this node may send its NOTIFYs and expire its subscriptions (fencing): not before
        start, and not while the membership says another node may own them now."""
        return self._started and self.membership.owns_subscriptions(self.clock() if now is None else now)

    # ------------------------------------------------------------------ announcements
    async def announce(self, pres_uri: str, event: str, etag: str = "", sender: str | None = None,
                       change: PublishedChange | None = None) -> bool:
        """Tell the other nodes that (pres_uri, event) changed. Call it after the change is stored -
        inside the storing transaction it is sent at commit. `sender`: the watcher left out of this
        change's NOTIFYs (handle_publish's sender_uri). `change`: the stored change, carried when the
        payload stays under the feed's limit (else the receivers read it). False when the event is not
        shared (cluster_pres_events). DatabaseError when the database is unreachable."""
        payload = self.announcement(pres_uri, event, etag, sender, change)
        if payload is None:
            return False
        await self.db.notify(self.config.channel, payload)
        self.stats.announced += 1
        return True

    def announce_now(self, pres_uri: str, event: str, etag: str = "", sender: str | None = None,
                     change: PublishedChange | None = None) -> bool:
        """`announce`, sent in this call when the database's feed can (SQLite: the hub and the workers'
        relay; GroupCommitter's on_commit, at the commit). True: sent, or nothing to send (the event
        is not shared); False: not sent, `await announce()` instead. DatabaseError as announce."""
        payload = self.announcement(pres_uri, event, etag, sender, change)
        if payload is None:
            return True
        if not self.db.notify_now(self.config.channel, payload):
            return False
        self.stats.announced += 1
        return True

    def announcement(self, pres_uri: str, event: str, etag: str = "", sender: str | None = None,
                     change: PublishedChange | None = None) -> str | None:
        """The payload `announce` sends (None: the event is not shared). The change is carried between
        the workers of one machine only (no cluster_id): their feed delivers it before any request a
        worker reads after it, and their clocks are one (PublishedChange.begun); between machines a
        request may overtake it."""
        if not self._shared(event):
            return None
        if self.config.cluster_id:
            change = None
        payload = encode(PresentityChanged(self.node_id, pres_uri, event, etag, sender, change))
        if change is not None and len(payload.encode("utf-8")) > MAX_PAYLOAD:
            payload = encode(PresentityChanged(self.node_id, pres_uri, event, etag, sender))   # too large
        return payload

    def _shared(self, event: str) -> bool:
        events = self.config.pres_events
        return events is None or event in events

    def _on_payload(self, channel: str, payload: str) -> None:
        try:
            ann = decode(payload)
        except AnnouncementError as exc:
            self.stats.malformed += 1
            log.warning("cluster %s: bad announcement on %s ignored (%s): %.200r", self.node_id, channel, exc,
                        payload)
            return
        if ann is None or ann.node == self.node_id:
            self.stats.ignored += 1
            return
        self.stats.received += 1
        if isinstance(ann, SubscriptionMoved):
            if ann.former == self.node_id:
                self._spawn(_call(self.on_subscription_moved, ann.key))
            return
        if not self._shared(ann.event):
            self.stats.ignored += 1
            return
        fresh = False
        if ann.change is not None and self.on_presentity_state is not None and \
                (ann.pres_uri, ann.event) not in self._pending:
            # Taken now, in arrival order (before any request this worker reads after it), and only
            # while no run of the presentity is under way: a run's read may have begun before the change.
            try:
                fresh = self.on_presentity_state(ann)
            except Exception:
                log.exception("cluster %s: applying the change of %s failed; read instead", self.node_id,
                              ann.pres_uri)
            self.stats.applied += fresh
        self._changed(ann.pres_uri, ann.event, ann.sender, read=not fresh)

    def _changed(self, pres_uri: str, event: str, sender: str | None = None, *, read: bool = True) -> None:
        """Coalesce: while (pres_uri, event) is being handled, more announcements of it make one more run,
        which leaves out a sender only when all of them named that one. `read` False: memory holds
        the change already (on_presentity_state), the first run reads nothing; a further run reads."""
        key = (pres_uri, event)
        if key in self._pending:
            senders = self._pending[key]
            if senders is None:
                self._pending[key] = {sender}
            else:
                senders.add(sender)
            return
        if len(self._pending) >= MAX_PENDING_CHANGES:
            self.stats.dropped_changes += 1
            if self.stats.dropped_changes == 1 or self.stats.dropped_changes % 1000 == 0:
                log.warning("cluster %s: %d presentities pending; resync instead", self.node_id,
                            len(self._pending))
            self._request_resync()
            return
        self._pending[key] = None
        self._spawn(self._deliver(key, sender, read))

    async def _deliver(self, key: tuple[str, str], sender: str | None, read: bool = True) -> None:
        try:
            while True:
                try:
                    if read:
                        await _call(self.on_presentity_changed, *key, sender)
                    else:
                        await _call(self.on_presentity_changed, *key, sender, read=False)
                        read = True
                except Exception:
                    log.exception("cluster %s: on_presentity_changed%r failed", self.node_id, key)
                senders = self._pending.get(key)
                if senders is None:
                    return
                self._pending[key] = None
                # several senders in one run: everyone is told (each of them needs the others' changes)
                sender = senders.pop() if len(senders) == 1 else None
        finally:
            self._pending.pop(key, None)

    def _on_reconnect(self) -> None:
        log.info("cluster %s: change feed back; resync", self.node_id)
        self._request_resync()

    def request_resync(self) -> None:
        """Announcements may have been lost (the supervisor's Resync: a worker died between a commit and
        its announcement): re-read what our watchers follow."""
        log.info("cluster %s: resync requested", self.node_id)
        self._request_resync()

    def _request_resync(self) -> None:
        self.stats.resyncs += 1
        self._spawn(self._resync())

    async def _resync(self) -> None:
        try:
            await _call(self.on_resync)
        except Exception:
            log.exception("cluster %s: on_resync failed", self.node_id)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ subscriptions moving between nodes
    async def claim_subscription(self, callid: str, to_tag: str, from_tag: str) -> dict[str, Any] | None:
        """An in-dialog SUBSCRIBE reached us for a dialog another node owns (fallback2db found its row):
        take it over (its owner is told and forgets it) and return the row as it is now ours; None when
        there is no such row or it is ours already."""
        key = {"callid": callid, "to_tag": to_tag, "from_tag": from_tag}
        rows = await self.db.query(ACTIVE_WATCHERS, key, columns=["sharing_tag"], limit=1)
        if not rows or rows[0]["sharing_tag"] == self.node_id:
            return None
        former = rows[0]["sharing_tag"]
        async with self.db.transaction():
            # One known dialog: a plain UPDATE waits for a lock its owner holds (its periodic save runs
            # right after each NOTIFY), where claim()'s SKIP LOCKED - right for a takeover's many rows -
            # skipped the row and the refresh was answered 481.
            if not await self.db.update(ACTIVE_WATCHERS, {**key, "sharing_tag": former},
                                        {"sharing_tag": self.node_id}):
                return None   # moved meanwhile (its owner deleted it, or a third node took it)
            got = await self.db.query(ACTIVE_WATCHERS, key, limit=1)
            if former:
                await self.db.notify(self.config.channel, encode(
                    SubscriptionMoved(self.node_id, former, callid, to_tag, from_tag)))
        return got[0] if got else None

    # ------------------------------------------------------------------ liveness and takeover
    def next_deadline(self) -> float:
        return self.membership.next_deadline()

    async def on_timer(self, now: float | None = None) -> None:
        """Do what is due at `now` (beat, look at the peers, finish takeovers). Never raises on a
        database failure."""
        await self.membership.on_timer(self.clock() if now is None else now)

    async def take_over(self, node_id: str) -> int:
        """MI (or the supervisor's Adopt): adopt `node_id`'s subscriptions now. Returns how many rows."""
        return await self.membership.take_over(node_id)

    async def ownership_lost(self) -> None:
        """The membership found our rows taken over: the service forgets them."""
        try:
            await _call(self.on_ownership_lost)
        except Exception:
            log.exception("cluster %s: on_ownership_lost failed", self.node_id)

    async def sweep(self, tags: Tags) -> int:
        """Claim the rows tagged `tags` (None: untagged; a tuple: any of those) in batches; each batch
        goes to on_subscriptions_adopted. Returns how many rows."""
        where: dict[str, Any] = {"sharing_tag": ("in", list(tags)) if isinstance(tags, tuple) else tags}
        total = 0
        for _ in range(MAX_ADOPT_BATCHES):
            rows = await self.db.claim(ACTIVE_WATCHERS, where, {"sharing_tag": self.node_id},
                                       limit=self.config.adopt_batch, order_by="id")
            if not rows:
                break
            total += len(rows)
            self.stats.adopted_rows += len(rows)
            try:
                await _call(self.on_subscriptions_adopted, rows)
            except Exception:
                log.exception("cluster %s: on_subscriptions_adopted failed for %d rows of %s (they are ours "
                              "in the database and load at the next start)", self.node_id, len(rows), tags)
        if total:
            log.info("cluster %s: adopted %d subscriptions of %s", self.node_id, total,
                     "no node" if tags is None else tags if isinstance(tags, str) else "workers gone")
        return total

    async def nodes(self) -> list[dict[str, Any]]:
        """The members of this cluster as rows (for an MI listing)."""
        return await self.membership.nodes()


def config_from_params(params: Any) -> ClusterConfig | None:
    """The ClusterConfig of the presence modparams (a mapping name -> value), None when clustering is off
    (cluster_id unset or 0). See docs/cluster.md for the parameter list."""
    cluster_id = int(params.get("cluster_id") or 0)
    if not cluster_id:
        return None
    tag = params.get("cluster_sharing_tag")
    if not tag:
        raise ClusterError("modparam(\"presence\", \"cluster_sharing_tag\", ...) is needed with cluster_id: "
                           "the name of this node (its sharing tag)")
    pres_events = parse_pres_events(params.get("cluster_pres_events"))
    return ClusterConfig(cluster_id, str(tag), pres_events,
                         float(params.get("cluster_ping_interval") or 5),
                         float(params.get("cluster_node_timeout") if params.get("cluster_node_timeout")
                               is not None else 30))


def worker_config(identity: WorkerIdentity, cluster: ClusterConfig | None) -> ClusterConfig:
    """The ClusterConfig of a worker process (docs/workers.md section 3): node "w<slot>" on the workers'
    channel with no cluster; "<cluster_sharing_tag>.w<slot>" in a PostgreSQL cluster (its channel,
    heartbeats and untagged-row claims as configured). Worker 0 claims the rows nobody else will load:
    untagged ones (a one-process run wrote them) and those of slots beyond N_total (a run with more
    workers). ClusterError when the sharing tag would be over 32 characters."""
    tag = cluster.node_id if cluster is not None else None
    node_id = identity.node_id(cluster_tag=tag)
    orphans = identity.orphan_tags(tag)
    if cluster is None:
        return ClusterConfig(0, node_id, adopt_untagged=identity.slot == 0, orphan_tags=orphans)
    return replace(cluster, node_id=node_id, orphan_tags=orphans)
