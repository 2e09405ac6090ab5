"""One worker process as a part of the whole server (docs/workers.md sections 2, 3 and 5): what connects
its transport, its change feed and its stateful modules to the other workers and to the supervisor.

WorkerNode, made in the child right after the fork:
- `prepare()` (before the modules start): this slot's marks in every Via branch and to-tag it makes
  (rules 1 and 2: responses and in-dialog requests come back here), each stateful module told it runs
  as a worker (presence: a node of the cluster model, sharing tag w<slot>), and the SQLite change feed
  relayed to the other workers (feed B: an Announce to every other inbox at commit);
- `attach(transport)`: the WorkerDispatcher in front of the transport (a message for another worker is
  handed to it), reading this slot's inbox once the worker serves;
- the control messages of section 5: `load()` for the supervisor's choice of adopter, `adopt(slot)`,
  `set_slot_table(...)`; an inbox Resync (the supervisor's, when a worker died) makes every listener
  stateful module read its state again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from routescript.core.replies import set_tag_prefix
from routescript.db import DatabaseError
from routescript.db.feed import deliver_remote, set_feed_relay
from routescript.sip import Destination
from routescript.sip.build import set_branch_marker

from .dispatch import Affinity, SlotTable, conn_id_base, slot_branch_marker, slot_tag_prefix
from .inbox import Inbox
from .interest import PresentityInterest, SharedInterest
from .messages import Announce, Resync, SendFailed
from .router import WorkerDispatcher

if TYPE_CHECKING:
    from routescript.core.server import Server
    from routescript.transport import TransportLayer

__all__ = ["LOAD_STATISTIC", "InboxFeedRelay", "WorkerNode", "WorkerPlace", "WorkerStateModule"]

log = logging.getLogger("routescript.workers")

# What "load" means when the supervisor picks an adopter: the subscriptions a worker holds.
LOAD_STATISTIC = "presence:active_subscriptions"


@dataclass(frozen=True, slots=True)
class WorkerPlace:
    """Where this process stands: slot, N_total and how many times the slot restarted (0: first start;
    the supervisor counts its epochs from 1)."""

    slot: int
    n_total: int
    epoch: int


@runtime_checkable
class WorkerStateModule(Protocol):
    """A module holding state per worker (presence): told before it starts that it runs as a worker
    (any object with slot, n_total and epoch), asked to adopt a dead worker's state, to read its state
    again after announcements may have been lost."""

    def run_as_worker(self, identity: Any) -> None: ...

    async def adopt_worker(self, slot: int) -> int: ...

    def resync(self) -> None: ...


class InboxFeedRelay:
    """Feed B (routescript.db.feed.FeedRelay): an announcement committed here goes to every other
    worker's inbox. An inbox that refuses it (full, or its worker gone) is logged by the dispatcher;
    the supervisor's Resync at a worker's death repairs what a dead worker missed."""

    def __init__(self, dispatcher: WorkerDispatcher) -> None:
        self.dispatcher = dispatcher
        self.refused = 0

    def send(self, db_key: str, channel: str, payload: str) -> None:
        self.refused += len(self.dispatcher.broadcast(Announce(db_key, channel, payload)))


class WorkerNode:
    """Worker `place.slot`'s connections to the others (see the module docstring)."""

    def __init__(self, server: Server, place: WorkerPlace, inboxes: Sequence[Inbox], *,
                 affinity: Affinity, slot_table: SlotTable, interest: SharedInterest | None = None) -> None:
        self.server = server
        self.place = place
        self.inboxes = tuple(inboxes)
        self.affinity: Affinity = affinity
        self.slot_table = slot_table
        self.dispatcher: WorkerDispatcher | None = None
        # affinity "uri": which workers hold watchers of a presentity (interest.py), for presence to
        # announce a change only where it is needed
        self.interest = None if interest is None or affinity != "uri" else PresentityInterest(
            interest, place.slot, place.n_total, lambda: self.slot_table)

    @property
    def conn_id_base(self) -> int:
        return conn_id_base(self.place.slot)

    def state_modules(self) -> list[WorkerStateModule]:
        return [m for m in self.server.modules.instances.values() if isinstance(m, WorkerStateModule)]

    def prepare(self) -> None:
        """Before the modules start: this slot in our tokens, the stateful modules as workers."""
        place = self.place
        set_branch_marker(slot_branch_marker(place.slot))
        set_tag_prefix(slot_tag_prefix(place.slot, place.epoch + 1))
        if self.interest is not None:
            self.interest.starting()
        for module in self.state_modules():
            module.run_as_worker(place)
            use_interest = getattr(module, "use_presentity_interest", None)
            if use_interest is not None and self.interest is not None:
                use_interest(self.interest)

    def attach(self, transport: TransportLayer) -> None:
        """The dispatcher in front of `transport` (made with conn_id_base), the feed relayed through it.
        The inbox is read from `serve()` on."""
        dispatcher = WorkerDispatcher(transport, self.place.slot, self.inboxes, affinity=self.affinity,
                                      slot_table=self.slot_table)
        dispatcher.on_announce = self._announced
        dispatcher.on_resync = self._resync
        dispatcher.on_send_failed = self._send_failed
        transport.front = dispatcher.on_received
        transport.tcp_relay = dispatcher.relay_tcp
        if self.place.slot != 0:
            # worker 0 accepts TCP connections (tcp_workers=1, the default): a relayed request to a peer
            # connected to us goes through it (docs/workers.md 4). Choice: with tcp_workers > 1 only
            # worker 0's connections are found this way.
            transport.tcp_acceptor = conn_id_base(0)
        self.dispatcher = dispatcher
        set_feed_relay(InboxFeedRelay(dispatcher))

    def serve(self) -> None:
        """Read this slot's inbox (Handoffs queued while the worker started are served now)."""
        assert self.dispatcher is not None, "attach() first"
        self.dispatcher.attach()
        if self.interest is not None:
            self.interest.ready()

    def detach(self) -> None:
        set_feed_relay(None)
        if self.dispatcher is not None:
            self.dispatcher.detach()

    # --- the change feed and the supervisor ------------------------------------------------------------

    def _send_failed(self, report: SendFailed) -> bool:
        """A request of ours that the worker holding the TCP connection could not send: its client
        transaction's transport error (docs/workers.md 4)."""
        transactions = getattr(self.server, "transactions", None)
        if transactions is None:
            return False
        dest = Destination(report.proto, report.remote_host, report.remote_port)
        return bool(transactions.send_failed(report.branch, report.method, dest, report.reason))

    def _announced(self, message: Announce) -> None:
        try:
            deliver_remote(message.db_key, message.channel, message.payload)
        except DatabaseError as exc:   # the sender's bug: its announcement is not ours to repair
            log.error("w%d: announcement from another worker refused: %s", self.place.slot, exc)

    def _resync(self, message: Resync) -> None:
        # the modules' own resync (presence: cluster_resync), on SQLite and PostgreSQL alike
        log.info("w%d: resync (%s)", self.place.slot, message.reason)
        for module in self.state_modules():
            module.resync()

    def load(self) -> int:
        """The subscriptions this worker holds (0 without a stateful module)."""
        stat = self.server.statistics.get(LOAD_STATISTIC)
        return stat.value if stat is not None else 0

    async def adopt(self, slot: int) -> int:
        """The supervisor's Adopt: every stateful module takes dead worker `slot`'s state; the rows taken."""
        rows = 0
        for module in self.state_modules():
            rows += await module.adopt_worker(slot)
        return rows

    def set_slot_table(self, version: int, owner_of: Sequence[int]) -> None:
        """The supervisor's SlotTable message; ValueError when it does not fit this server."""
        table = SlotTable(version, tuple(int(o) for o in owner_of))
        self.slot_table = table
        if self.dispatcher is not None:
            self.dispatcher.set_slot_table(table)
