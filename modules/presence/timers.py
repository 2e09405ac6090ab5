"""clean_period: expired publications and subscriptions ended (watchers told), clustered expiry
claimed by one node, and old pending/waiting authorization decisions forgotten."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .cluster_callbacks import ClusterCallbacks
from .clustering import ClusterLink
from .dispatch import Notifier
from .events import PUBL_TYPE, EventRegistry
from .locks import KeyedLocks
from .presentity import PresentityTable, Publication
from .settings import PresenceSettings
from .storage import PresenceStore, publication_from_row
from .subscription import SubState, SubsTable

log = logging.getLogger("routescript.presence")

MAX_EXPIRED_CLAIM = 1000        # bound: expired presentity rows one clean run deletes (clustered)
DEFAULT_WAITING_SUBS_DAYSNO = 3  # waiting_subs_daysno 0 means this, as in OpenSIPS (waiting_subs_time)


class ExpiryTimers:
    """clean (clean_period)."""

    def __init__(self, store: PresenceStore | None, settings: PresenceSettings, clock: Callable[[], float],
                 events: EventRegistry, presentities: PresentityTable, subscriptions: SubsTable,
                 locks: KeyedLocks, notifier: Notifier, cluster: ClusterLink,
                 cluster_callbacks: ClusterCallbacks) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._events = events
        self._presentities = presentities
        self._subscriptions = subscriptions
        self._locks = locks
        self._notifier = notifier
        self._cluster = cluster
        self._cluster_callbacks = cluster_callbacks

    async def clean(self) -> None:
        """clean_period: expired publications (watchers notified) and subscriptions (final NOTIFY)."""
        now = self._clock()
        gone_pubs = self._presentities.expire(now)
        if self._cluster.node is not None and self._store is not None:
            gone_pubs = await self._claim_expired(now, gone_pubs)
        elif self._store is not None and gone_pubs:
            try:
                await self._store.delete_publications(gone_pubs)
            except Exception as exc:  # noqa: BLE001 - the clean_period timer must go on
                log.error("deleting expired publications failed: %s", exc)
        seen: dict[tuple[str, str], Publication] = {}
        for pub in gone_pubs:
            seen[(pub.pres_uri, pub.event)] = pub
        for (pres_uri, name), pub in seen.items():
            event = self._events.contains_event(name)
            if event is not None:
                async with self._locks.hold(pres_uri):
                    await self._notifier.notify_presentity(pres_uri, event, removed=pub)
                await self._cluster.announce(pres_uri, event, "")
            if not self._presentities.publications(pres_uri, name):
                self._notifier.forget_body(pres_uri, name)
        if self._cluster.fenced():
            return   # our subscriptions may be another node's now: it expires them
        if self._cluster.node is not None and self._cluster.take_missed():
            await self._cluster_callbacks.cluster_resync(retries=1)
        self._notifier.forget_destinations()   # where NOTIFYs went: gone watchers not kept (issue 15)
        self._notifier.sender.compact()
        ended, dropped = self._subscriptions.take_expired(now)
        for sub, told in [(s, False) for s in ended] + [(s, True) for s in dropped]:
            event = self._events.contains_event(sub.event)
            if event is None:
                continue
            if not told:
                await self._notifier.notify_one(sub, event, with_body=False)
            if event.type == PUBL_TYPE:
                await self._notifier.notify_winfo(sub.pres_uri, event)
        await self._clean_watchers(now)

    async def _clean_watchers(self, now: float) -> None:
        """The watchers table (authorization decisions). OpenSIPS's msg_watchers_clean forgets pending
        decisions older than waiting_subs_daysno days (0: the default, 3), and OpenSIPS empties the table
        at every start. routescript keeps the table across restarts, so it also forgets the allowed
        decision of a watcher whose last subscription to that presentity has ended (expired, unsubscribed,
        ended by a 481, a fetch): a new SUBSCRIBE is judged by the rules again. Blocked decisions stay
        (the presentity's record of whom it refused) until refreshWatchers changes them."""
        ended = self._subscriptions.take_ended()
        if self._store is None:
            return
        allowed = [w for w in ended if (ev := self._events.contains_event(w[3])) is not None and ev.req_auth]
        days = self._settings.waiting_subs_daysno or DEFAULT_WAITING_SUBS_DAYSNO
        try:
            await self._store.forget_allowed(allowed)
            await self._store.delete_old_waiting(now - days * 86400,
                                                 (int(SubState.PENDING), int(SubState.WAITING)))
        except Exception as exc:  # noqa: BLE001 - the clean_period timer must go on
            log.error("cleaning the watchers table failed: %s", exc)

    async def _claim_expired(self, now: float, in_memory: list[Publication]) -> list[Publication]:
        """Clustered clean_period: the expired presentity rows are deleted by exactly one node (row
        locks), which notifies its watchers and announces the change; the others hear it from the
        announcement. Returns the publications this node deleted."""
        assert self._store is not None
        held = {(p.pres_uri, p.event, p.etag): p for p in in_memory}
        try:
            rows = await self._store.claim_expired_publications(now - self._settings.expires_offset,
                                                                MAX_EXPIRED_CLAIM)
        except Exception as exc:  # noqa: BLE001 - the clean_period timer must go on
            log.error("deleting expired publications failed: %s", exc)
            return []
        gone = []
        for row in rows:
            event = self._events.contains_event(row["event"])
            pub = publication_from_row(row, event.content_type if event is not None else "")
            pub = held.get((pub.pres_uri, pub.event, pub.etag), pub)
            self._presentities.replace_presentity(
                pub.pres_uri, pub.event, [p for p in self._presentities.publications(pub.pres_uri, pub.event)
                                          if p.etag != pub.etag])
            gone.append(pub)
            held.pop((pub.pres_uri, pub.event, pub.etag), None)
        # Expired in our memory, not in the database: another node refreshed (or already deleted) it;
        # what memory holds of that presentity is not to be trusted any more.
        self._cluster_callbacks.expired_in_memory_only(list(held.values()))
        return gone
