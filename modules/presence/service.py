"""The presence server at work: PresenceService, assembled from one class per job.

This is the thin asyncio layer over the sans-IO tables (presentity.py, subscription.py, notify.py):
it reads the facts out of a request, asks the tables for a decision, stores it, replies, and sends
the NOTIFYs. It reaches the rest of the server only through `server` (reply, to_tag, transactions,
events, sockets), so tests can hand it a small fake. The jobs: publish.py (PUBLISH), subscribe.py
(SUBSCRIBE), authorization.py (watcher rules), dispatch.py (NOTIFY fan-out and sending),
persistence.py (database, fallback2db), cluster_callbacks.py (clustering), timers.py (clean_period),
base.py (shared state and helpers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .base import TAKEOVER_CSEQ_GAP
from .etag import EtagGenerator
from .events import EventRegistry
from .limits import RefusalLog
from .locks import KeyedLocks
from .notify import BodyCache
from .presentity import PresentityTable
from .publish import PublishHandler
from .sender import NotifySender
from .settings import PresenceSettings
from .storage import PresenceStore
from .subscribe import SubscribeHandler
from .subscription import SubsTable
from .timers import ExpiryTimers

__all__ = ["MAX_PRESENTITY_LOCKS", "TAKEOVER_CSEQ_GAP", "PresenceService", "PresenceSettings"]

log = logging.getLogger("routescript.presence")

MAX_PRESENTITY_LOCKS = 100_000  # bound: presentities with a PUBLISH/SUBSCRIBE being handled


class PresenceService(PublishHandler, SubscribeHandler, ExpiryTimers):
    """The presence service: PUBLISH, SUBSCRIBE, NOTIFY fan-out, timers, clustering, storage."""

    def __init__(self, server: Any, events: EventRegistry, settings: PresenceSettings, *,
                 store: PresenceStore | None = None, clock: Callable[[], float] = time.time,
                 etags: EtagGenerator | None = None) -> None:
        self.server = server
        self.events = events
        self.settings = settings
        self.store = store
        self.clock = clock
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
        self.refusals = RefusalLog(log)
        self.sender = NotifySender(self._send_notify, self._notify_result, self._subscribed)
        self._locks = KeyedLocks(MAX_PRESENTITY_LOCKS)
        # The shared NOTIFY body per presentity, rebuilt only when its publications change.
        self.bodies = BodyCache()
        # Clustering (docs/cluster.md): the ClusterNode, set by the module when cluster_id is set.
        self.cluster: Any = None
        # (pres_uri, event) -> hash of the last state body sent to its watchers (clustered: a resync
        # compares it with the database). Only presentities with watchers here.
        self._notified: dict[tuple[str, str], int] = {}
        self._missed_while_fenced = False
        # Dialogs whose new row (or deletion) is being committed before the 2xx: not read back from the
        # database meanwhile (fallback2db), their SUBSCRIBE is not answered yet.
        self._storing: set[tuple[str, str, str]] = set()
