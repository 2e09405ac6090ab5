"""Who is alive in a presence cluster, and so who owns which subscriptions: the part of ClusterNode that
differs between machines and the worker processes of one machine (docs/cluster.md, docs/workers.md
section 3).

- `HeartbeatMembership`: nodes on several machines beat in rs_nodes; a peer silent for node_timeout is
  taken over by exactly one survivor (a compare-and-set on its row). A node cut off too long fences
  itself (owns nothing until a heartbeat succeeds).
- `SupervisedMembership`: the workers of one `routescript run`. Their supervisor is the authority: it
  reaps a dead worker (waitpid) and tells one live worker to `adopt` its rows. No table, no timer, no
  peer timing: a running worker always owns its subscriptions.

Both claim rows through the node's `sweep(tags)` (FOR UPDATE SKIP LOCKED / one SQLite transaction), so a
row never has two owners, whoever asks.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from routescript.db import DatabaseError

if TYPE_CHECKING:
    from .cluster import ClusterConfig, ClusterStats

log = logging.getLogger("routescript.presence.cluster")

NODES = "rs_nodes"
ACTIVE, DEAD = "active", "dead"
MAX_NODE_ID = 32            # active_watchers.sharing_tag is VARCHAR(32)
BEAT_MODULO = 2**31         # rs_nodes.beat is an INTEGER
MAX_WORKER_SLOTS = 256      # bound: worker slots a configuration may have (and worker 0 sweeps at start)

# A sweep's target: one sharing tag, None (untagged rows), or several tags at once.
Tags = str | None | tuple[str, ...]


class ClusterError(Exception):
    """A misuse of the cluster API (bad configuration, taking over oneself): our fault, not a peer's."""


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """This process as one worker of a `routescript run` with worker processes (docs/workers.md): its
    slot, how many slots the configuration has (N_total) and its epoch (restarts of the slot). Given
    to the presence module before it starts (`PresenceModule.run_as_worker`); None is one process."""

    slot: int
    n_total: int
    epoch: int = 0

    def __post_init__(self) -> None:
        for name in ("slot", "n_total", "epoch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ClusterError(f"worker {name} must be an integer, not {value!r}")
        if not 1 <= self.n_total <= MAX_WORKER_SLOTS:
            raise ClusterError(f"worker count {self.n_total} outside 1..{MAX_WORKER_SLOTS}")
        if not 0 <= self.slot < self.n_total:
            raise ClusterError(f"worker slot {self.slot} outside 0..{self.n_total - 1}")
        if self.epoch < 0:
            raise ClusterError(f"worker epoch {self.epoch} is negative")

    def node_id(self, slot: int | None = None, cluster_tag: str | None = None) -> str:
        """The sharing tag of worker `slot` (default: this one): "w0", or "node1.w0" on a machine that
        is itself a node of a PostgreSQL cluster (cluster_sharing_tag=node1). ClusterError beyond the
        32 characters of active_watchers.sharing_tag."""
        tag = worker_tag(self.slot if slot is None else slot, cluster_tag)
        if len(tag) > MAX_NODE_ID:
            raise ClusterError(f"worker sharing tag {tag!r} is over {MAX_NODE_ID} characters: shorten "
                               f"cluster_sharing_tag")
        return tag

    def orphan_tags(self, cluster_tag: str | None = None) -> tuple[str, ...]:
        """The tags of slots this configuration no longer has (a previous run had more workers): worker
        0 claims their rows at start, nobody else would ever load them."""
        if self.slot != 0:
            return ()
        return tuple(worker_tag(k, cluster_tag) for k in range(self.n_total, MAX_WORKER_SLOTS))


def worker_tag(slot: int, cluster_tag: str | None = None) -> str:
    return f"{cluster_tag}.w{slot}" if cluster_tag else f"w{slot}"


class MembershipHost(Protocol):
    """What a Membership uses of its ClusterNode."""

    db: Any
    config: ClusterConfig
    node_id: str
    stats: ClusterStats
    clock: Callable[[], float]
    wall_clock: Callable[[], float]

    async def sweep(self, tags: Tags) -> int: ...

    async def ownership_lost(self) -> None: ...


class Membership(Protocol):
    """The liveness part of a ClusterNode (see the module docstring)."""

    needs_timer: bool   # False: on_timer never has work (the node runs no timer task)

    async def start(self, node: MembershipHost) -> None:
        """Join (before the node listens); DatabaseError when the database is unreachable."""

    def owns_subscriptions(self, now: float) -> bool:
        """Whether this node may notify and expire its subscriptions now (fencing)."""

    def next_deadline(self) -> float: ...

    async def on_timer(self, now: float) -> None:
        """What is due at `now`; never raises on a database failure."""

    async def take_over(self, node_id: str) -> int:
        """Adopt `node_id`'s subscriptions now; returns how many rows."""

    async def nodes(self) -> list[dict[str, Any]]:
        """The members as rows (node_id, state, last_seen, started, adopted_by), for MI."""


class SupervisedMembership:
    """The workers of one machine: the supervisor knows who died (it reaped the process) and calls
    `adopt(node_id)` on one live worker, which claims that worker's rows. Nothing to time, nothing
    stored: while it runs, a worker owns its subscriptions."""

    needs_timer = False

    def __init__(self) -> None:
        self._node: MembershipHost | None = None
        self.adopted: list[str] = []   # the workers this one adopted, in order (for MI and logs)

    async def start(self, node: MembershipHost) -> None:
        self._node = node

    def owns_subscriptions(self, now: float) -> bool:
        return self._node is not None

    def next_deadline(self) -> float:
        return float("inf")

    async def on_timer(self, now: float) -> None:
        return None

    async def adopt(self, node_id: str) -> int:
        """The supervisor's Adopt: worker `node_id` is dead (or restarting too slowly); its rows are ours
        now, handed to on_subscriptions_adopted (its watchers notified with the current state)."""
        node = self._node
        if node is None:
            raise ClusterError("adopt before the cluster node started")
        if node_id == node.node_id:
            raise ClusterError("a worker cannot adopt itself")
        if not isinstance(node_id, str) or not node_id or len(node_id) > MAX_NODE_ID:
            raise ClusterError(f"bad node id {node_id!r}")
        node.stats.takeovers += 1
        node.stats.peers_dead.append(node_id)
        self.adopted.append(node_id)
        return await node.sweep(node_id)

    async def take_over(self, node_id: str) -> int:
        return await self.adopt(node_id)

    async def nodes(self) -> list[dict[str, Any]]:
        if self._node is None:
            return []
        return [{"node_id": self._node.node_id, "state": ACTIVE, "last_seen": 0, "started": 0,
                 "adopted_by": None}] + [{"node_id": n, "state": DEAD, "last_seen": 0, "started": 0,
                                          "adopted_by": self._node.node_id} for n in self.adopted]


@dataclass(slots=True)
class _Peer:
    beat: int
    since: float  # our clock when we saw `beat` first


class HeartbeatMembership:
    """Nodes on several machines (docs/cluster.md "Takeover"): every node beats in rs_nodes (our table,
    created here). An observer times each peer's beat changes on its own clock (no clock-skew issue); a
    peer silent for node_timeout is dead: one node wins the compare-and-set on its rs_nodes row and claims
    its subscriptions. A node that finds its own row taken over (it was cut off too long) loses ownership
    and joins again, owning nothing it did not reload."""

    needs_timer = True

    def __init__(self, rng: random.Random | None = None) -> None:
        self._beat = (rng or random.SystemRandom()).randrange(BEAT_MODULO)
        self._peers: dict[str, _Peer] = {}
        self._next_beat = 0.0
        self._last_beat_ok: float | None = None
        self._node: MembershipHost | None = None

    @property
    def node(self) -> MembershipHost:
        if self._node is None:
            raise ClusterError("the cluster node has not started")
        return self._node

    async def start(self, node: MembershipHost) -> None:
        if not node.config.cluster_id:
            raise ClusterError("rs_nodes heartbeats need a cluster_id")
        self._node = node
        await node.db.ensure_schema([NODES])
        await self._register()
        now = node.clock()
        self._last_beat_ok = now
        self._next_beat = now + node.config.ping_interval

    def owns_subscriptions(self, now: float) -> bool:
        """False once our last successful heartbeat is older than node_timeout: peers may have adopted
        our subscriptions, so we must not send their NOTIFYs (self-fencing) until a heartbeat succeeds
        again (which also tells us whether we were taken over)."""
        if self._node is None or self._last_beat_ok is None:
            return False
        if not self._node.config.node_timeout:
            return True
        return now - self._last_beat_ok < self._node.config.node_timeout

    def next_deadline(self) -> float:
        return self._next_beat

    async def on_timer(self, now: float) -> None:
        """Beat, look at the peers, finish takeovers. A database failure is logged (the node is fenced
        once it lasts node_timeout)."""
        if now < self._next_beat:
            return
        node = self.node
        self._next_beat = now + node.config.ping_interval
        try:
            await self.heartbeat(now)
            await self.check_peers(now)
            await self._finish_takeovers()
        except DatabaseError as exc:
            node.stats.heartbeat_failures += 1
            log.warning("cluster %s: heartbeat failed: %s", node.node_id, exc)

    async def heartbeat(self, now: float) -> None:
        node = self.node
        self._beat = (self._beat + 1) % BEAT_MODULO
        n = await node.db.update(NODES, {"cluster_id": node.config.cluster_id, "node_id": node.node_id,
                                         "state": ACTIVE},
                                 {"beat": self._beat, "last_seen": int(node.wall_clock())})
        if n == 0:
            # Our row is gone or marked dead: a peer adopted our subscriptions while we were cut off.
            node.stats.ownership_lost += 1
            log.warning("cluster %s: this node was taken over; dropping its subscriptions and joining again",
                        node.node_id)
            await node.ownership_lost()
            await self._register()
        self._last_beat_ok = now

    async def check_peers(self, now: float) -> list[str]:
        """Time the peers' beats; take over the ones silent for node_timeout. Returns the nodes we adopted."""
        node = self.node
        rows = await node.db.query(NODES, {"cluster_id": node.config.cluster_id, "state": ACTIVE,
                                           "node_id": ("!=", node.node_id)}, columns=["node_id", "beat"])
        alive = {r["node_id"]: int(r["beat"]) for r in rows}
        for gone in set(self._peers) - set(alive):
            del self._peers[gone]
        adopted = []
        timeout = node.config.node_timeout
        for peer_id, beat in alive.items():
            peer = self._peers.get(peer_id)
            if peer is None or peer.beat != beat:
                self._peers[peer_id] = _Peer(beat, now)
            elif timeout and now - peer.since >= timeout:
                log.warning("cluster %s: node %s silent for %.0f s: taking over its subscriptions",
                            node.node_id, peer_id, now - peer.since)
                if await self._take_over(peer_id, expected_beat=beat) is not None:
                    adopted.append(peer_id)
                self._peers.pop(peer_id, None)
        return adopted

    async def take_over(self, node_id: str) -> int:
        """MI: adopt `node_id`'s subscriptions now, alive or not (an alive node notices at its next
        heartbeat and drops them). Also takes rows tagged `node_id` that no rs_nodes row describes
        (an OpenSIPS sharing tag). Returns how many rows were adopted."""
        if node_id == self.node.node_id:
            raise ClusterError("a node cannot take over itself")
        if not isinstance(node_id, str) or not node_id or len(node_id) > MAX_NODE_ID:
            raise ClusterError(f"bad node id {node_id!r}")
        n = await self._take_over(node_id, expected_beat=None)
        return n or 0

    async def _take_over(self, peer_id: str, expected_beat: int | None) -> int | None:
        """Compare-and-set on the node's row, then claim its rows. None when another node won."""
        node = self.node
        db, cluster_id = node.db, node.config.cluster_id
        where: dict[str, Any] = {"cluster_id": cluster_id, "node_id": peer_id}
        if expected_beat is not None:  # automatic: only if it is still the silent node we timed
            where.update(state=ACTIVE, beat=expected_beat)
        async with db.transaction():
            won = await db.update(NODES, where, {"state": DEAD, "adopted_by": node.node_id})
            if won:
                # the dead node's own unfinished takeovers become ours too
                await db.update(NODES, {"cluster_id": cluster_id, "state": DEAD, "adopted_by": peer_id},
                                {"adopted_by": node.node_id})
        if not won and expected_beat is not None:
            return None
        node.stats.takeovers += 1
        node.stats.peers_dead.append(peer_id)
        return await node.sweep(peer_id)

    async def _finish_takeovers(self) -> None:
        """Rows still tagged with a node we adopted (a batch bound was hit, or the adopter before us died
        half-way) are claimed now."""
        node = self.node
        rows = await node.db.query(NODES, {"cluster_id": node.config.cluster_id, "state": DEAD,
                                           "adopted_by": node.node_id}, columns=["node_id"])
        for r in rows:
            await node.sweep(r["node_id"])

    async def _register(self) -> None:
        node = self.node
        now = int(node.wall_clock())
        await node.db.upsert(NODES, {"cluster_id": node.config.cluster_id, "node_id": node.node_id,
                                     "state": ACTIVE, "beat": self._beat, "last_seen": now, "started": now,
                                     "adopted_by": None}, ("cluster_id", "node_id"))

    async def nodes(self) -> list[dict[str, Any]]:
        """The rs_nodes rows of this cluster."""
        node = self.node
        return list(await node.db.query(NODES, {"cluster_id": node.config.cluster_id}, order_by="node_id"))

