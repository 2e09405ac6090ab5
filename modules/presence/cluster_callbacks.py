"""What the ClusterNode calls the service for (docs/cluster.md): another node's change, adopted
subscriptions, rejoin and resync after lost announcements, ownership lost or a dialog moved."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .base import _BadRequest
from .cluster_wire import PresentityChanged
from .clustering import ClusterLink
from .dispatch import Notifier
from .events import PUBL_TYPE, WINFO_TYPE, EventRegistry, PresenceEvent
from .locks import KeyedLocks
from .persistence import Persistence
from .presentity import Publication
from .settings import PresenceSettings
from .storage import PresenceStore, subscription_from_row
from .subscription import SubState, Subscription, SubsTable

log = logging.getLogger("routescript.presence")


class ClusterCallbacks:
    """cluster_* callbacks of the presence service (handed to the ClusterNode by the module)."""

    def __init__(self, store: PresenceStore | None, settings: PresenceSettings, clock: Callable[[], float],
                 events: EventRegistry, subscriptions: SubsTable, locks: KeyedLocks, notifier: Notifier,
                 persistence: Persistence, cluster: ClusterLink) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._events = events
        self._subscriptions = subscriptions
        self._locks = locks
        self._notifier = notifier
        self._persistence = persistence
        self._cluster = cluster

    def cluster_presentity_state(self, ann: PresentityChanged) -> bool:
        """An announcement carrying its stored change, as it arrives (before any request read after it):
        True when memory took the change (Persistence.take_announced), so the run that notifies our
        watchers reads nothing. Only while nothing here is using the presentity (its lock free: a read
        under way may have begun before the change, and would put the older state back) and some
        watcher here follows it (else the presentity is only marked stale, as without the change)."""
        event = self._events.contains_event(ann.event)
        if event is None or event.type != PUBL_TYPE or self._locks.locked(ann.pres_uri) or \
                not self._subscriptions.watchers(ann.pres_uri, event.name):
            return False
        return self._persistence.take_announced(ann, event)

    async def cluster_presentity_changed(self, pres_uri: str, event_name: str,
                                         sender: str | None = None, *, read: bool = True) -> None:
        """Another node stored a change of (pres_uri, event): our watchers of it get the new state, but
        `sender` (the handle_publish sender_uri the announcement carried, as that node left it out).
        Taken from the announcement, not guessed from what the read finds new: a read may find nothing
        new (the change was read with an earlier announcement) or other publications new to this
        node (refreshed elsewhere: a new ETag, nothing announced). `read` False: memory holds the change
        already (cluster_presentity_state took it)."""
        event = self._events.contains_event(event_name)
        if event is None:
            return
        if not self._subscriptions.watchers(pres_uri, event.name):
            # nobody here to tell; the next lookup reads the database (fallback2db: always; a worker:
            # because it is marked stale now)
            self._persistence.changed_elsewhere(pres_uri, event.name)
            return
        fallback2db = self._settings.fallback2db
        async with self._locks.hold(pres_uri):
            if read and not fallback2db and event.type == PUBL_TYPE:
                # without fallback2db notify_presentity reads nothing: the change is in the database
                await self._persistence.read_publications(pres_uri, event)
            await self._notifier.notify_presentity(pres_uri, event, skip_contact=sender)
        if fallback2db:
            # the NOTIFYs' CSeqs, for a node that may adopt these subscriptions (workers: the adopter's
            # CSeq gap covers them, no write per announcement)
            await self._persistence.sync_db()

    def expired_in_memory_only(self, pubs: list[Publication]) -> None:
        """clean_period found these publications expired in memory but not in the database: another node
        refreshed them (a refresh announces nothing: the state is the same) or deleted them. Workers
        (no fallback2db): their presentities are read again at the next request about them."""
        for pub in pubs:
            self._persistence.changed_elsewhere(pub.pres_uri, pub.event)

    async def cluster_adopt(self, rows: list[dict[str, Any]]) -> None:
        """A dead node's subscriptions are ours now. Choice: each live one gets a NOTIFY with the current
        state at once - its watcher may have missed changes while its owner was dead - CSeq goes on
        from the row's local_cseq, and our Contact replaces the dead node's (the watcher's refreshes
        follow it). Expired ones are ended by our next clean_period run."""
        now = self._clock()
        adopted: list[tuple[Subscription, PresenceEvent]] = []
        for row in rows:
            event = self._events.contains_event(row["event"])
            if event is None:
                log.warning("adopted subscription %s for unknown event %r ignored", row.get("callid"),
                            row["event"])
                continue
            sub = self._cluster.adopted(subscription_from_row(row))
            self._subscriptions.load(sub, changed=True)   # our Contact and CSeq, saved by the sync below
            if sub.expires_at + self._settings.expires_offset > now and sub.status is not SubState.TERMINATED:
                adopted.append((sub, event))
        if not self._settings.fallback2db:
            # Workers: what memory holds of these presentities may be stale (changes announced while
            # nobody here watched them); notify_one reads only under fallback2db.
            followed = {(sub.pres_uri, event.name): event for sub, event in adopted
                        if event.type == PUBL_TYPE}
            for (pres_uri, _), event in followed.items():
                async with self._locks.hold(pres_uri):
                    await self._persistence.read_publications(pres_uri, event)
        for sub, event in adopted:
            async with self._locks.hold(sub.pres_uri):
                live = self._subscriptions.get(sub.key)
                if live is not None:
                    await self._notifier.notify_one(live, event, with_body=live.status is SubState.ACTIVE
                                                    or event.type == WINFO_TYPE)
        log.info("cluster: %d subscriptions adopted (%d live, notified)", len(rows), len(adopted))
        await self._persistence.sync_db()

    async def cluster_rejoin(self) -> int:
        """At start, clustered: while this node was down, changes were announced to nobody here. Its
        subscriptions (just loaded) carry no trace of the state their watchers were last sent, so -
        choice - each presentity they follow is notified once with the current state (RFC 6665 allows
        a NOTIFY at any time). Returns how many NOTIFYs were queued."""
        sent = 0
        for pres_uri, name in self._subscriptions.presentities():
            event = self._events.contains_event(name)
            if event is None or event.type != PUBL_TYPE:
                continue
            async with self._locks.hold(pres_uri):
                sent += await self._notifier.notify_presentity(pres_uri, event)
        if sent:
            log.info("cluster: rejoined; %d watchers sent the current state", sent)
            await self._persistence.sync_db()
        return sent

    async def cluster_resync(self, *, retries: int = 6, first_delay: float = 0.5) -> None:
        """Announcements may have been lost (our LISTEN connection was down): every presentity our
        watchers follow is read again, and its watchers hear about it when its state is not the one
        they were last sent. The pool may still be waiting to reconnect when the LISTEN connection is
        back: the reads are retried (`retries` times, the delay doubling), then left to clean_period."""
        delay = first_delay
        for _ in range(retries):
            if await self._resync_once():
                return
            await asyncio.sleep(delay)
            delay *= 2
        log.warning("cluster: resync postponed to the next clean_period run: the database is not back")
        self._cluster.held_back()

    async def _resync_once(self) -> bool:
        pairs = self._subscriptions.presentities()
        self._cluster.keep_sent_only(pairs)
        changed = 0
        for pres_uri, name in pairs:
            event = self._events.contains_event(name)
            if event is None or event.type != PUBL_TYPE:
                continue
            async with self._locks.hold(pres_uri):
                before = self._cluster.last_sent(pres_uri, name)
                if before is None:
                    before = hash(self._notifier.state_body(pres_uri, event))
                try:
                    await self._persistence.read_publications(pres_uri, event, strict=True)
                except _BadRequest:
                    return False
                if hash(self._notifier.state_body(pres_uri, event)) != before:
                    changed += 1
                    await self._notifier.notify_presentity(pres_uri, event)
        log.info("cluster: resync: %d of %d presentities changed", changed, len(pairs))
        if changed:
            await self._persistence.sync_db()
        return True

    async def cluster_ownership_lost(self) -> None:
        """We were cut off long enough for another node to adopt our subscriptions: forget them all
        (no NOTIFY: their new owner has them) and load back only the rows still tagged with us."""
        n = self._subscriptions.forget_all()
        self._cluster.forget_all_sent()
        kept = 0
        if self._store is not None:
            try:
                rows = await self._store.own_subscription_rows()
            except Exception as exc:  # noqa: BLE001 - nothing reloaded; the database resync fixes it
                log.error("cluster: reloading our subscriptions failed: %s", exc)
                rows = []
            for row in rows:
                if self._events.contains_event(row["event"]) is not None:
                    self._subscriptions.load(subscription_from_row(row))
                    kept += 1
        log.warning("cluster: %d subscriptions were taken over by another node; %d kept", n, kept)

    def cluster_subscription_moved(self, key: tuple[str, str, str]) -> None:
        """Another node took this dialog over (an in-dialog request reached it): forget it, silently."""
        if self._subscriptions.forget(key) is not None:
            log.info("subscription %s moved to another node", key[0])

