"""The presence server at work: PresenceService, composed of parts that each own one job and its state.

This is the thin asyncio layer over the sans-IO tables (presentity.py, subscription.py, notify.py): it
reads the facts out of a request, asks the tables for a decision, stores it, replies, and sends the
NOTIFYs. It reaches the rest of the server only through `server` (server_api.PresenceServer: reply,
to_tag, transactions, events, sockets), so tests can hand it a small fake.

The parts, wired once in PresenceService.__init__ (each gets only the collaborators it uses):
- the tables: PresentityTable (publications), SubsTable (subscription dialogs), BodyCache (the NOTIFY
  body per presentity, the Notifier's), KeyedLocks (one presentity's requests in turn);
- Responder (base.py): the Event header read, replies and refusals;
- ClusterLink (clustering.py): the ClusterNode as the parts see it (fencing, announcements, takeover);
- Persistence (persistence.py): load, the writes before a reply, sync_db, the fallback2db reads;
- Notifier (dispatch.py): watcher fan-out, the NotifySender queues, NOTIFY results;
- Authorizer (authorization.py): watcher rules, the watchers table, refreshWatchers;
- PublishHandler (publish.py), SubscribeHandler (subscribe.py): the two requests;
- ExpiryTimers (timers.py): clean_period; ClusterCallbacks (cluster_callbacks.py): what the ClusterNode
  calls.
Calls go from the handlers down to the tables; no part holds the service.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .authorization import Authorizer
from .base import TAKEOVER_CSEQ_GAP, Responder
from .cluster_callbacks import ClusterCallbacks
from .clustering import ClusterLink, WatcherInterest
from .dispatch import Notifier
from .etag import EtagGenerator
from .events import EventRegistry
from .limits import RefusalLog
from .locks import KeyedLocks
from .notify import BodyCache
from .persistence import Persistence
from .presentity import PresentityTable
from .publish import PublishHandler
from .server_api import PresenceServer
from .settings import PresenceSettings
from .storage import PresenceStore
from .subscribe import SubscribeHandler
from .subscription import SubsTable
from .timers import ExpiryTimers

if TYPE_CHECKING:
    from .cluster import ClusterNode

__all__ = ["MAX_PRESENTITY_LOCKS", "TAKEOVER_CSEQ_GAP", "PresenceService", "PresenceSettings"]

log = logging.getLogger("routescript.presence")

MAX_PRESENTITY_LOCKS = 100_000  # bound: presentities with a PUBLISH/SUBSCRIBE being handled


class PresenceService:
    """The presence service: PUBLISH, SUBSCRIBE, NOTIFY fan-out, timers, clustering, storage.

    The entry points (handle_publish, handle_subscribe, sync_db, clean, the cluster_* callbacks...) are
    the parts' own bound methods, so a call through the service costs no extra call."""

    def __init__(self, server: PresenceServer, events: EventRegistry, settings: PresenceSettings, *,
                 store: PresenceStore | None = None, clock: Callable[[], float] = time.time,
                 etags: EtagGenerator | None = None) -> None:
        self.server = server
        self.events = events
        self.settings = settings
        self.store = store
        self.clock = clock
        # --- the tables and the state every part reads
        self.presentities = PresentityTable(etags or EtagGenerator(clock()),
                                            max_expires=settings.max_expires_publish,
                                            expires_offset=settings.expires_offset,
                                            max_presentities=settings.max_presentities,
                                            max_aggregated_body_size=settings.max_aggregated_body_size)
        self.subscriptions = SubsTable(max_expires=settings.max_expires_subscribe,
                                       expires_offset=settings.expires_offset,
                                       max_subscriptions=settings.max_subscriptions,
                                       max_per_source=settings.max_subscriptions_per_source,
                                       trusted_sources=settings.trusted_sources)
        # The shared NOTIFY body per presentity, rebuilt only when its publications change.
        self.bodies = BodyCache()
        self.locks = KeyedLocks(MAX_PRESENTITY_LOCKS)
        self.refusals = RefusalLog(log)
        # --- the parts, each given what it uses
        self.clustering = ClusterLink(server, settings)
        self.persistence = Persistence(store, settings, clock, events, self.presentities, self.subscriptions,
                                       self.clustering)
        self.notifier = Notifier(server, events, settings, clock, self.presentities, self.subscriptions,
                                 self.bodies, self.locks, self.clustering, self.persistence)
        self.sender = self.notifier.sender
        self.authorizer = Authorizer(store, settings, clock, self.presentities, self.subscriptions,
                                     self.locks, self.notifier, self.persistence)
        responder = Responder(server, events, self.refusals, clock)
        self.publisher = PublishHandler(server, responder, settings, clock, self.presentities, self.locks,
                                        self.persistence, self.authorizer, self.notifier, self.clustering)
        self.subscriber = SubscribeHandler(server, responder, settings, clock, self.subscriptions, self.locks,
                                           self.persistence, self.authorizer, self.notifier)
        self.cluster_callbacks = ClusterCallbacks(store, settings, clock, events, self.subscriptions,
                                                  self.locks, self.notifier, self.persistence,
                                                  self.clustering)
        self.timers = ExpiryTimers(store, settings, clock, events, self.presentities, self.subscriptions,
                                   self.locks, self.notifier, self.clustering, self.cluster_callbacks)
        # --- the service's entry points (script functions, MI, timers, event packages, ClusterNode)
        self.handle_publish = self.publisher.handle_publish
        self.publish_local = self.publisher.publish_local
        self.handle_subscribe = self.subscriber.handle_subscribe
        self.load = self.persistence.load
        self.sync_db = self.persistence.sync_db
        self.clean = self.timers.clean
        self.notify_presentity = self.notifier.notify_presentity
        self.notify_winfo = self.notifier.notify_winfo
        self.update_watchers_status = self.authorizer.update_watchers_status
        self.get_sphere = self.authorizer.get_sphere
        self.contains_presence = self.presentities.contains_presence
        self.cluster_presentity_changed = self.cluster_callbacks.cluster_presentity_changed
        self.cluster_presentity_state = self.cluster_callbacks.cluster_presentity_state
        self.cluster_adopt = self.cluster_callbacks.cluster_adopt
        self.cluster_rejoin = self.cluster_callbacks.cluster_rejoin
        self.cluster_resync = self.cluster_callbacks.cluster_resync
        self.cluster_ownership_lost = self.cluster_callbacks.cluster_ownership_lost
        self.cluster_subscription_moved = self.cluster_callbacks.cluster_subscription_moved

    @property
    def cluster(self) -> ClusterNode | None:
        """The ClusterNode (docs/cluster.md), or None when presence is not clustered."""
        return self.clustering.node

    def join_cluster(self, node: ClusterNode, *, as_worker: bool = False) -> None:
        """Clustering on: `node` (made by the module with this service's cluster_* callbacks) decides
        fencing, carries the announcements and claims other nodes' dialogs. `as_worker`: this process
        is one of several workers (docs/workers.md section 3): refreshes are stored before their 2xx,
        loaded dialogs get the CSeq gap, publications are read on a miss. Before load()."""
        self.clustering.join(node)
        if as_worker:
            self.persistence.as_worker()

    def count_interest(self, interest: WatcherInterest) -> None:
        """Workers with worker_affinity "uri" and no cluster_id (docs/workers.md section 3): the
        subscription table counts which presentities it holds watchers of, a change nobody else needs is
        not announced, and another worker's presentities are read before they are used. Before load()."""
        self.subscriptions.interest = interest
        self.clustering.interest = interest
        self.persistence.interest = interest
