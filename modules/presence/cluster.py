"""Presence on several nodes sharing one PostgreSQL database (docs/cluster.md).

`ClusterNode` is one node's membership: it owns no SIP state, only the rules of the cluster.
- Ownership: each subscription belongs to the node that accepted it; the node id is its sharing tag,
  stored in active_watchers.sharing_tag (OpenSIPS's column). Only the owner notifies and expires it.
- Announcements: a node that changed a presentity announces (pres_uri, event, etag) on the database's
  change feed (LISTEN/NOTIFY); every other node calls `on_presentity_changed(pres_uri, event)` and
  notifies its own watchers. After the feed was cut, `on_resync()` asks the owner to re-read what it
  may have missed.
- Liveness: every node beats in rs_nodes (our table, created here). An observer times each peer's beat
  changes on its own clock (no clock-skew issue); a peer silent for `node_timeout` is dead: one node wins
  the compare-and-set on its rs_nodes row and claims its subscriptions (FOR UPDATE SKIP LOCKED),
  handing them to `on_subscriptions_adopted(rows)`. A node that finds its own row taken over (it was
  cut off too long) calls `on_ownership_lost()` and joins again, owning nothing it did not reload.

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
from dataclasses import dataclass, field
from typing import Any

from routescript.db import DatabaseError

from .cluster_wire import AnnouncementError, PresentityChanged, SubscriptionMoved, decode, encode

log = logging.getLogger("routescript.presence.cluster")

NODES = "rs_nodes"
ACTIVE_WATCHERS = "active_watchers"
ACTIVE, DEAD = "active", "dead"
MAX_NODE_ID = 32                # active_watchers.sharing_tag is VARCHAR(32)
MAX_PENDING_CHANGES = 10_000    # bound: presentities waiting for on_presentity_changed; beyond -> resync
MAX_ADOPT_BATCHES = 1_000       # bound: batches claimed in one takeover (the rest at the next heartbeat)
BEAT_MODULO = 2**31             # rs_nodes.beat is an INTEGER


class ClusterError(Exception):
    """A misuse of the cluster API (bad configuration, taking over oneself): our fault, not a peer's."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """The presence modparams of clustering (names: docs/cluster.md).

    cluster_id: OpenSIPS's presence `cluster_id`; nodes with the same id form one cluster (channel
        rs_presence_<id>); clusters sharing a PostgreSQL database need different ids.
    node_id: `cluster_sharing_tag`: this node's sharing tag, written in active_watchers.sharing_tag.
    pres_events: OpenSIPS's `cluster_pres_events`: the events whose changes are announced/received
        (None: every event).
    ping_interval / node_timeout: `cluster_ping_interval` / `cluster_node_timeout` seconds (named after
        the clusterer module's ping_interval / node_timeout); node_timeout 0 = no automatic takeover.
    adopt_untagged: at start, claim rows with no sharing tag (made before clustering was enabled).
    adopt_batch: rows claimed per statement during a takeover."""

    cluster_id: int
    node_id: str
    pres_events: frozenset[str] | None = None
    ping_interval: float = 5.0
    node_timeout: float = 30.0
    adopt_untagged: bool = True
    adopt_batch: int = 500

    def __post_init__(self) -> None:
        cid = self.cluster_id
        if isinstance(cid, bool) or not isinstance(cid, int) or cid <= 0:
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
        return f"rs_presence_{self.cluster_id}"


def parse_pres_events(text: str | None) -> frozenset[str] | None:
    """cluster_pres_events: "presence, dialog;sla" -> {"presence", "dialog;sla"}; empty -> None (all)."""
    names = frozenset(p.strip() for p in (text or "").split(",") if p.strip())
    return names or None


@dataclass(slots=True)
class _Peer:
    beat: int
    since: float  # our clock when we saw `beat` first


Callback = Callable[..., "Awaitable[Any] | Any"]


async def _call(cb: Callback | None, *args: Any) -> Any:
    if cb is None:
        return None
    result = cb(*args)
    return await result if inspect.isawaitable(result) else result


@dataclass(slots=True)
class ClusterStats:
    announced: int = 0
    received: int = 0
    ignored: int = 0            # own, not shared events, unknown operations
    malformed: int = 0
    adopted_rows: int = 0
    takeovers: int = 0
    resyncs: int = 0
    ownership_lost: int = 0
    heartbeat_failures: int = 0
    dropped_changes: int = 0
    peers_dead: list[str] = field(default_factory=list)


class ClusterNode:
    """One presence node's membership in a cluster. See the module docstring and docs/cluster.md."""

    def __init__(self, db: Any, config: ClusterConfig, *,
                 on_presentity_changed: Callable[[str, str], Awaitable[Any] | Any],
                 on_subscriptions_adopted: Callable[[list[dict[str, Any]]], Awaitable[Any] | Any],
                 on_resync: Callable[[], Awaitable[Any] | Any],
                 on_ownership_lost: Callable[[], Awaitable[Any] | Any] | None = None,
                 on_subscription_moved: Callable[[tuple[str, str, str]], Awaitable[Any] | Any] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None) -> None:
        self.db = db
        self.config = config
        self.node_id = config.node_id
        self.on_presentity_changed = on_presentity_changed
        self.on_subscriptions_adopted = on_subscriptions_adopted
        self.on_resync = on_resync
        self.on_ownership_lost = on_ownership_lost
        self.on_subscription_moved = on_subscription_moved
        self.clock = clock
        self.wall_clock = wall_clock
        self.stats = ClusterStats()
        self._beat = (rng or random.SystemRandom()).randrange(BEAT_MODULO)
        self._peers: dict[str, _Peer] = {}
        self._next_beat = 0.0
        self._last_beat_ok: float | None = None
        self._started = False
        self._pending: dict[tuple[str, str], bool] = {}  # (pres_uri, event) -> announced again meanwhile
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifetime
    async def start(self) -> None:
        """Create rs_nodes when missing, join (register this node), start listening, and claim the
        untagged subscriptions when configured. Raises DatabaseError when the database is unreachable
        or incompatible (the server refuses to start)."""
        await self.db.ensure_schema([NODES])
        await self._register()
        await self.db.listen(self.config.channel, self._on_payload, on_reconnect=self._on_reconnect)
        self._started = True
        now = self.clock()
        self._last_beat_ok = now
        self._next_beat = now + self.config.ping_interval
        if self.config.adopt_untagged:
            await self._sweep(None)

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

    def run(self) -> asyncio.Task[None]:
        """Start the timer loop (heartbeat, dead-node detection) as a task; stop() ends it."""
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
        """False once our last successful heartbeat is older than node_timeout: peers may have adopted
        our subscriptions, so we must not send their NOTIFYs (self-fencing) until a heartbeat succeeds
        again (which also tells us whether we were taken over)."""
        if not self._started or self._last_beat_ok is None:
            return False
        if not self.config.node_timeout:
            return True
        return (self.clock() if now is None else now) - self._last_beat_ok < self.config.node_timeout

    # ------------------------------------------------------------------ announcements
    async def announce(self, pres_uri: str, event: str, etag: str = "") -> bool:
        """Tell the other nodes that (pres_uri, event) changed. Call it after the change is stored -
        inside the storing transaction it is sent at commit. False when the event is not shared
        (cluster_pres_events). DatabaseError when the database is unreachable."""
        if not self._shared(event):
            return False
        ann = PresentityChanged(self.node_id, pres_uri, event, etag)
        await self.db.notify(self.config.channel, encode(ann))
        self.stats.announced += 1
        return True

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
        self._changed(ann.pres_uri, ann.event)

    def _changed(self, pres_uri: str, event: str) -> None:
        """Coalesce: while (pres_uri, event) is being handled, more announcements of it make one more run."""
        key = (pres_uri, event)
        if key in self._pending:
            self._pending[key] = True
            return
        if len(self._pending) >= MAX_PENDING_CHANGES:
            self.stats.dropped_changes += 1
            if self.stats.dropped_changes == 1 or self.stats.dropped_changes % 1000 == 0:
                log.warning("cluster %s: %d presentities pending; resync instead", self.node_id,
                            len(self._pending))
            self._request_resync()
            return
        self._pending[key] = False
        self._spawn(self._deliver(key))

    async def _deliver(self, key: tuple[str, str]) -> None:
        try:
            while True:
                try:
                    await _call(self.on_presentity_changed, *key)
                except Exception:
                    log.exception("cluster %s: on_presentity_changed%r failed", self.node_id, key)
                if not self._pending.get(key):
                    return
                self._pending[key] = False
        finally:
            self._pending.pop(key, None)

    def _on_reconnect(self) -> None:
        log.info("cluster %s: change feed back; resync", self.node_id)
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

    # ------------------------------------------------------------------ heartbeat and takeover
    def next_deadline(self) -> float:
        return self._next_beat

    async def on_timer(self, now: float | None = None) -> None:
        """Do what is due at `now`: beat, look at the peers, finish takeovers. Never raises on a database
        failure (logged; the node is fenced once it lasts node_timeout)."""
        now = self.clock() if now is None else now
        if now < self._next_beat:
            return
        self._next_beat = now + self.config.ping_interval
        try:
            await self.heartbeat(now)
            await self.check_peers(now)
            await self._finish_takeovers()
        except DatabaseError as exc:
            self.stats.heartbeat_failures += 1
            log.warning("cluster %s: heartbeat failed: %s", self.node_id, exc)

    async def heartbeat(self, now: float) -> None:
        self._beat = (self._beat + 1) % BEAT_MODULO
        n = await self.db.update(NODES, {"cluster_id": self.config.cluster_id, "node_id": self.node_id,
                                         "state": ACTIVE},
                                 {"beat": self._beat, "last_seen": int(self.wall_clock())})
        if n == 0:
            # Our row is gone or marked dead: a peer adopted our subscriptions while we were cut off.
            self.stats.ownership_lost += 1
            log.warning("cluster %s: this node was taken over; dropping its subscriptions and joining again",
                        self.node_id)
            try:
                await _call(self.on_ownership_lost)
            except Exception:
                log.exception("cluster %s: on_ownership_lost failed", self.node_id)
            await self._register()
        self._last_beat_ok = now

    async def check_peers(self, now: float) -> list[str]:
        """Time the peers' beats; take over the ones silent for node_timeout. Returns the nodes we adopted."""
        rows = await self.db.query(NODES, {"cluster_id": self.config.cluster_id, "state": ACTIVE,
                                           "node_id": ("!=", self.node_id)}, columns=["node_id", "beat"])
        alive = {r["node_id"]: int(r["beat"]) for r in rows}
        for gone in set(self._peers) - set(alive):
            del self._peers[gone]
        adopted = []
        for node, beat in alive.items():
            peer = self._peers.get(node)
            if peer is None or peer.beat != beat:
                self._peers[node] = _Peer(beat, now)
            elif self.config.node_timeout and now - peer.since >= self.config.node_timeout:
                log.warning("cluster %s: node %s silent for %.0f s: taking over its subscriptions",
                            self.node_id, node, now - peer.since)
                if await self._take_over(node, expected_beat=beat) is not None:
                    adopted.append(node)
                self._peers.pop(node, None)
        return adopted

    async def take_over(self, node_id: str) -> int:
        """MI: adopt `node_id`'s subscriptions now, alive or not (an alive node notices at its next
        heartbeat and drops them). Also takes rows tagged `node_id` that no rs_nodes row describes
        (an OpenSIPS sharing tag). Returns how many rows were adopted."""
        if node_id == self.node_id:
            raise ClusterError("a node cannot take over itself")
        if not isinstance(node_id, str) or not node_id or len(node_id) > MAX_NODE_ID:
            raise ClusterError(f"bad node id {node_id!r}")
        n = await self._take_over(node_id, expected_beat=None)
        return n or 0

    async def _take_over(self, node: str, expected_beat: int | None) -> int | None:
        """Compare-and-set on the node's row, then claim its rows. None when another node won."""
        where: dict[str, Any] = {"cluster_id": self.config.cluster_id, "node_id": node}
        if expected_beat is not None:  # automatic: only if it is still the silent node we timed
            where.update(state=ACTIVE, beat=expected_beat)
        async with self.db.transaction():
            won = await self.db.update(NODES, where, {"state": DEAD, "adopted_by": self.node_id})
            if won:
                # the dead node's own unfinished takeovers become ours too
                await self.db.update(NODES, {"cluster_id": self.config.cluster_id, "state": DEAD,
                                             "adopted_by": node}, {"adopted_by": self.node_id})
        if not won and expected_beat is not None:
            return None
        self.stats.takeovers += 1
        self.stats.peers_dead.append(node)
        return await self._sweep(node)

    async def _finish_takeovers(self) -> None:
        """Rows still tagged with a node we adopted (a batch bound was hit, or the adopter before us died
        half-way) are claimed now."""
        rows = await self.db.query(NODES, {"cluster_id": self.config.cluster_id, "state": DEAD,
                                           "adopted_by": self.node_id}, columns=["node_id"])
        for r in rows:
            await self._sweep(r["node_id"])

    async def _sweep(self, node: str | None) -> int:
        """Claim the rows tagged `node` (None: untagged) in batches; each batch goes to
        on_subscriptions_adopted. Returns how many rows."""
        total = 0
        for _ in range(MAX_ADOPT_BATCHES):
            rows = await self.db.claim(ACTIVE_WATCHERS, {"sharing_tag": node}, {"sharing_tag": self.node_id},
                                       limit=self.config.adopt_batch, order_by="id")
            if not rows:
                break
            total += len(rows)
            self.stats.adopted_rows += len(rows)
            try:
                await _call(self.on_subscriptions_adopted, rows)
            except Exception:
                log.exception("cluster %s: on_subscriptions_adopted failed for %d rows of %s (they are ours "
                              "in the database and load at the next start)", self.node_id, len(rows), node)
        if total:
            log.info("cluster %s: adopted %d subscriptions of %s", self.node_id, total, node or "no node")
        return total

    async def _register(self) -> None:
        now = int(self.wall_clock())
        await self.db.upsert(NODES, {"cluster_id": self.config.cluster_id, "node_id": self.node_id,
                                     "state": ACTIVE, "beat": self._beat, "last_seen": now, "started": now,
                                     "adopted_by": None}, ("cluster_id", "node_id"))

    async def nodes(self) -> list[dict[str, Any]]:
        """The rs_nodes rows of this cluster (for an MI listing)."""
        return list(await self.db.query(NODES, {"cluster_id": self.config.cluster_id}, order_by="node_id"))


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
