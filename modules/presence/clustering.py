"""The ClusterNode as the parts of the presence service use it (docs/cluster.md): whether this node may
send NOTIFYs (fencing), announcing a stored change, claiming another node's dialog and taking a
subscription over. Without clustering (`node` None) every answer is the one-server one."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from .base import TAKEOVER_CSEQ_GAP
from .cluster_wire import PublishedChange
from .events import PresenceEvent
from .notify import local_contact
from .presentity import PublishAction, PublishDecision
from .settings import PresenceSettings
from .subscription import DialogKey, Subscription, shared

if TYPE_CHECKING:
    from .cluster import ClusterNode
    from .server_api import PresenceServer

log = logging.getLogger("routescript.presence")


class WatcherInterest(Protocol):
    """Workers with worker_affinity "uri" (routescript/workers/interest.py PresentityInterest, docs/workers.md
    section 3): which worker holds watchers of which presentity. The subscription table counts
    (hold/release); a change is announced only when another worker may need it
    (may_skip_announcement); another worker's presentity (trusts_memory False) is read from the
    database before a PUBLISH about it is decided and before a new watcher's first NOTIFY."""

    def hold(self, pres_uri: str) -> None: ...

    def release(self, pres_uri: str) -> None: ...

    def trusts_memory(self, pres_uri: str) -> bool: ...

    def may_skip_announcement(self, pres_uri: str) -> bool: ...


class ClusterLink:
    """This node's place in the cluster: the ClusterNode (set by the module once started), the state
    hashes last sent per presentity (a resync compares them with the database) and whether NOTIFYs were
    held back while fenced (a resync follows)."""

    def __init__(self, server: PresenceServer, settings: PresenceSettings) -> None:
        self._server = server
        self._settings = settings
        self.node: ClusterNode | None = None
        self.interest: WatcherInterest | None = None   # workers, affinity "uri": see WatcherInterest
        # (pres_uri, event) -> hash of the last state body sent to its watchers (clustered: a resync
        # compares it with the database). Only presentities with watchers here.
        self._sent: dict[tuple[str, str], int] = {}
        self._missed_while_fenced = False

    def join(self, node: ClusterNode) -> None:
        """Clustering on (the module started `node`)."""
        self.node = node

    def fenced(self) -> bool:
        """Clustered and cut off from the cluster for too long: another node may own our subscriptions
        now, so we send no NOTIFY (ClusterNode.owns_subscriptions) until a heartbeat succeeds."""
        return self.node is not None and not self.node.owns_subscriptions()

    def held_back(self) -> None:
        """A NOTIFY was not sent because this node was fenced: the next clean_period resyncs."""
        self._missed_while_fenced = True

    def take_missed(self) -> bool:
        """Whether NOTIFYs were held back since the last call (clean_period then resyncs)."""
        missed, self._missed_while_fenced = self._missed_while_fenced, False
        return missed

    def sent(self, pres_uri: str, event: str, state_hash: int) -> None:
        """The watchers of (pres_uri, event) were sent the state hashing to `state_hash`."""
        self._sent[(pres_uri, event)] = state_hash

    def last_sent(self, pres_uri: str, event: str) -> int | None:
        return self._sent.get((pres_uri, event))

    def forget_sent(self, pres_uri: str, event: str) -> None:
        """(pres_uri, event) has no watcher here any more."""
        self._sent.pop((pres_uri, event), None)

    def keep_sent_only(self, pairs: list[tuple[str, str]]) -> None:
        """Forget the presentities not in `pairs` (those our watchers follow)."""
        wanted = set(pairs)
        for key in [k for k in self._sent if k not in wanted]:
            del self._sent[key]

    def forget_all_sent(self) -> None:
        self._sent.clear()

    async def announce(self, pres_uri: str, event: PresenceEvent, etag: str,
                       sender: str | None = None, decision: PublishDecision | None = None,
                       begun: float = 0.0) -> None:
        """Clustered: tell the other nodes, whose watchers of pres_uri then hear from their owner (but
        `sender`, left out here too). `decision`: the PUBLISH's stored change, carried with the
        announcement (published_change; `begun`: time.monotonic() before it was stored). The change is
        stored already; a failure here is logged (the other nodes catch up at their resync)."""
        if self.node is None:
            return
        if self.interest is not None and self.interest.may_skip_announcement(pres_uri):
            return   # no other worker holds a watcher of it, and none trusts its memory of it
        try:
            await self.node.announce(pres_uri, event.name, etag, sender,
                                     published_change(decision, begun) if decision is not None else None)
        except Exception as exc:  # noqa: BLE001 - stored already; other nodes catch up at resync
            log.error("cluster: announcing the change of %s (%s) failed: %s", pres_uri, event.name, exc)

    def announce_at_commit(self, pres_uri: str, event: PresenceEvent, etag: str, sender: str | None,
                           decision: PublishDecision, begun: float) -> bool:
        """`announce`, from the group commit's on_commit: at the commit, not once the PUBLISH's task
        resumes a loop turn or more later (docs/workers.md section 7, session 12). The interest is
        asked here, after the commit, as `announce` does. False when the feed cannot send without
        I/O (PostgreSQL): `announce` then, after the commit."""
        node = self.node
        if node is None or (self.interest is not None and self.interest.may_skip_announcement(pres_uri)):
            return True
        try:
            return node.announce_now(pres_uri, event.name, etag, sender, published_change(decision, begun))
        except Exception as exc:  # noqa: BLE001 - stored already; other nodes catch up at resync
            log.error("cluster: announcing the change of %s (%s) failed: %s", pres_uri, event.name, exc)
            return True

    async def claim_subscription(self, key: DialogKey) -> dict[str, Any] | None:
        """Another node's dialog (an in-dialog SUBSCRIBE reached us): its row, now ours."""
        assert self.node is not None
        return await self.node.claim_subscription(*key)

    def adopted(self, sub: Subscription) -> Subscription:
        """`sub`, taken over from another node, as this node's: CSeq and version go on above what its
        former owner may have sent without storing it (TAKEOVER_CSEQ_GAP); our Contact and socket replace
        its former owner's, so the watcher's refreshes reach us and not a dead node. The Contact is
        server_address, or our socket of the transport the dialog uses (the same rule as a SUBSCRIBE's
        reply, local_contact)."""
        proto = (sub.socket_info.partition(":")[0] or "udp").lower()
        sockets = self._server.sockets
        sock = next((s for s in sockets if s.proto.lower() == proto), sockets[0] if sockets else None)
        if sock is None:   # no socket at all (a test without a server): only the CSeq moves on
            contact, socket_info = self._settings.server_address or sub.local_contact, sub.socket_info
        else:
            contact = local_contact(self._settings.server_address, proto, sock.host, int(sock.port))
            socket_info = sock.name
        return sub.evolve(local_cseq=sub.local_cseq + TAKEOVER_CSEQ_GAP,
                          version=sub.version + TAKEOVER_CSEQ_GAP, local_contact=shared(contact),
                          socket_info=shared(socket_info))


_CHANGE_ACTION = {PublishAction.INSERT: "i", PublishAction.MODIFY: "m", PublishAction.REMOVE: "r"}


def published_change(decision: PublishDecision, begun: float) -> PublishedChange | None:
    """What an announcement carries of a PUBLISH's stored change: its row as the database now holds it
    (the integers publication_row stores). None when there is nothing to carry (a refresh, no
    publication) or the body is not UTF-8 text (the receivers read it)."""
    action = _CHANGE_ACTION.get(decision.action)
    pub = decision.publication
    if action is None or pub is None:
        return None
    if action == "r":
        return PublishedChange(action, begun)
    try:
        pub.body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return PublishedChange(action, begun, decision.old_etag or "", int(pub.expires_at),
                           int(pub.received_time), pub.body)
