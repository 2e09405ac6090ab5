"""Presence state and the database: load at start, the writes a PUBLISH or SUBSCRIBE commits before its
reply, the db_update_period flush (sync_db), and the fallback2db lookups that find what another server
stored (publications, a dialog, watchers).

As one of several worker processes (docs/workers.md section 3; `as_worker`): a refresh is committed
before its 200 too, loaded subscriptions go on 64 CSeqs above their row, and publications are read from
the database on a miss only - a presentity another worker changed (`stale`, from its announcement) or
a PUBLISH whose SIP-If-Match we do not hold - not before every request as fallback2db does."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from .base import TAKEOVER_CSEQ_GAP, _db_failure
from .cluster_wire import PresentityChanged
from .clustering import ClusterLink, WatcherInterest
from .events import PUBL_TYPE, EventRegistry, PresenceEvent
from .presentity import PresentityTable, Publication, PublishAction, PublishDecision, PublishFacts
from .settings import PresenceSettings
from .storage import Address, PresenceStore, publication_from_row, subscription_from_row
from .subscription import DialogKey, SubscribeAction, SubscribeDecision, Subscription, SubsTable, shared

log = logging.getLogger("routescript.presence")

MAX_STALE = 100_000   # bound: presentities marked changed elsewhere; beyond, every lookup reads the database


class Persistence:
    """The tables in memory and the database (`store`; None: memory only): load, the writes before a
    reply, sync_db, and the fallback2db reads (OpenSIPS fallback2db)."""

    def __init__(self, store: PresenceStore | None, settings: PresenceSettings, clock: Callable[[], float],
                 events: EventRegistry, presentities: PresentityTable, subscriptions: SubsTable,
                 cluster: ClusterLink) -> None:
        self.store = store
        self._settings = settings
        self._clock = clock
        self._events = events
        self._presentities = presentities
        self._subscriptions = subscriptions
        self._cluster = cluster
        # Dialogs whose new row (or deletion) is being committed before the 2xx: not read back from the
        # database meanwhile (fallback2db), their SUBSCRIBE is not answered yet. Read-only outside.
        self.storing: set[DialogKey] = set()
        # Workers: (pres_uri, event) another worker changed since we last read them (its announcement
        # reached us and none of our watchers follows them); the next request about them reads first.
        self.stale: set[tuple[str, str]] = set()
        self.reread_all = False      # the stale set overflowed: read before every request (fallback2db)
        # Whether a SUBSCRIBE/PUBLISH may need a read first (fallback2db, or something stale): one
        # attribute the handlers test before calling in.
        self.read_first = settings.fallback2db
        # What handle_subscribe commits before its 2xx: a refresh too when workers are on (a kill -9
        # must not lose an acknowledged refresh; the adopter would expire a live subscription early).
        self.refresh_before_reply = False
        self._cseq_gap_on_load = False
        # workers with affinity "uri" (clustering.WatcherInterest): what memory holds of another worker's
        # presentity is never trusted (no announcement may have come): read before it is used
        self.interest: WatcherInterest | None = None

    def as_worker(self) -> None:
        """This process is one of several workers sharing the database (docs/workers.md section 3)."""
        self.refresh_before_reply = self.store is not None
        # A restarted worker's NOTIFY CSeqs were not all stored (they wait for db_update_period): its
        # loaded dialogs go on above what it may have sent, as an adopter's do (TAKEOVER_CSEQ_GAP).
        self._cseq_gap_on_load = True

    def changed_elsewhere(self, pres_uri: str, event: str) -> None:
        """Another worker changed (pres_uri, event) and none of our watchers follows it: what memory holds
        of it is not to be trusted; the next request about it reads the database first."""
        if self._settings.fallback2db or self.reread_all:
            return
        if self.interest is not None and not self.interest.trusts_memory(pres_uri):
            return   # another worker's presentity: read before every use anyway (untrusted)
        if len(self.stale) >= MAX_STALE:
            log.warning("presence: %d presentities changed by other workers; reading the database before "
                        "every request from now on", len(self.stale))
            self.stale.clear()
            self.reread_all = True
        else:
            self.stale.add((pres_uri, event))
        self.read_first = True

    def take_announced(self, ann: PresentityChanged, event: PresenceEvent) -> bool:
        """Another worker's stored change carried by its announcement (ann.change), put in memory in
        place of a read, when memory is trusted for the presentity (not stale, no fallback2db) and held
        the state the change was made on (PresentityTable.apply_change). The publication is the one
        the read would make of its row (publication_from_row). False: the caller reads."""
        change = ann.change
        key = (ann.pres_uri, event.name)
        if change is None or self.store is None or self._settings.fallback2db or self.reread_all or \
                key in self.stale:
            return False
        if change.action == "r":
            return self._presentities.apply_change(ann.pres_uri, event.name, ann.etag, None, None,
                                                   change.begun)
        pub = Publication(shared(ann.pres_uri), shared(event.name), ann.etag, float(change.expires),
                          change.body, shared(event.content_type), float(change.received_time),
                          ann.sender)
        return self._presentities.apply_change(ann.pres_uri, event.name, ann.etag,
                                               change.old_etag if change.action == "m" else None, pub,
                                               change.begun)

    async def store_publication(self, d: PublishDecision, address: Address | None = None,
                                on_commit: Callable[[], None] | None = None) -> None:
        """A PUBLISH's change committed (group commit) before its reply. `address`: the presentity's
        (user, domain) as the request gave them. `on_commit`: called as it commits (not without a
        store: the caller then goes on at once)."""
        if self.store is None or d.publication is None:
            return
        if d.action is PublishAction.INSERT:
            await self.store.insert_publication(d.publication, address, on_commit)
        elif d.action in (PublishAction.REFRESH, PublishAction.MODIFY):
            assert d.old_etag is not None
            await self.store.replace_publication(d.old_etag, d.publication, address, on_commit)
        elif d.action is PublishAction.REMOVE:
            await self.store.delete_publication(d.publication, address, on_commit)

    async def store_subscription(self, d: SubscribeDecision) -> None:
        """A new subscription's row inserted, an unsubscribed one's deleted, committed (group commit, as a
        PUBLISH): what was acknowledged survives a crash. A refresh waits for the db_update_period sync,
        unless `refresh_before_reply` (workers): then its row is updated here as well. Meanwhile the
        dialog is `storing`: fallback2db does not read it back."""
        assert self.store is not None and d.subscription is not None
        key = d.subscription.key
        self.storing.add(key)
        try:
            if d.action is SubscribeAction.INSERT:
                await self.store.insert_subscription(d.subscription)
            elif d.action is SubscribeAction.REFRESH:
                await self.store.update_subscription(d.subscription)
            else:
                await self.store.delete_subscription(d.subscription)
        finally:
            self.storing.discard(key)

    async def sync_db(self) -> None:
        """db_update_period: flush subscription changes in one transaction. The database unreachable:
        they are kept for the next time. Another failure (a row the database refuses): saved one by
        one, so one bad row never keeps the others out."""
        if self.store is None:
            return
        inserts, updates, deletes = self._subscriptions.take_db_changes()
        try:
            lost = await self.store.sync_subscriptions(inserts, updates, deletes)
        except asyncio.CancelledError:
            # the module's stop cancels the db_update_period timer, maybe mid-flush: the changes go back
            # for the final flush (written twice at worst: upserts and updates by key)
            self._subscriptions.restore_db_changes(inserts, updates, deletes)
            raise
        except Exception as exc:  # noqa: BLE001 - changes kept for the next sync, or saved one by one
            if getattr(exc, "transient", False):
                log.error("saving subscriptions failed (%d changes kept for the next sync): %s",
                          len(inserts) + len(updates) + len(deletes), exc)
                self._subscriptions.restore_db_changes(inserts, updates, deletes)
                return
            log.warning("saving %d subscription changes at once failed (%s); saved one by one",
                        len(inserts) + len(updates) + len(deletes), exc)
            lost = await self._sync_one_by_one(inserts, updates, deletes)
        self._forget_lost(lost)

    async def _sync_one_by_one(self, inserts: list[Subscription], updates: list[Subscription],
                               deletes: list[Subscription]) -> list[Subscription]:
        """Each change in its own transaction. One the database refuses is logged and dropped (it would
        fail again at every sync; the record's next change tries again); once the database is
        unreachable the rest is kept for the next sync."""
        assert self.store is not None
        lost: list[Subscription] = []
        todo = [(sub, "insert") for sub in inserts] + [(sub, "update") for sub in updates] + \
            [(sub, "delete") for sub in deletes]
        for i, (sub, what) in enumerate(todo):
            change = ([sub] if what == "insert" else [], [sub] if what == "update" else [],
                      [sub] if what == "delete" else [])
            try:
                lost += await self.store.sync_subscriptions(*change)
            except asyncio.CancelledError:
                self._restore(todo[i:])   # the stop cancelled this flush: the rest is for the final one
                raise
            except Exception as exc:  # noqa: BLE001 - this row only
                if getattr(exc, "transient", False):
                    self._restore(todo[i:])
                    log.error("saving subscriptions failed (%d changes kept for the next sync): %s",
                              len(todo) - i, exc)
                    break
                log.error("subscription %s to %s not saved (%s dropped from this sync): %s", sub.callid,
                          sub.pres_uri, what, exc)
        return lost

    def _restore(self, rest: list[tuple[Subscription, str]]) -> None:
        """(subscription, "insert"/"update"/"delete") changes not written, back for the next sync."""
        self._subscriptions.restore_db_changes(*(
            [s for s, w in rest if w == kind] for kind in ("insert", "update", "delete")))

    def _forget_lost(self, lost: list[Subscription]) -> None:
        for sub in lost:
            # Clustered: the row carries another node's tag now (taken over); it sends the NOTIFYs.
            if self._subscriptions.forget(sub.key) is not None:
                log.info("subscription %s to %s is no longer ours (taken over); forgotten", sub.callid,
                         sub.pres_uri)

    async def load(self) -> tuple[int, int]:
        """At start: every live publication and subscription back from the database."""
        if self.store is None:
            return 0, 0
        now = self._clock()
        npub = nsub = 0
        for row in await self.store.live_publications(now - self._settings.expires_offset):
            event = self._events.contains_event(row["event"])
            if event is None:
                log.warning("stored publication for unknown event %r ignored", row["event"])
                continue
            self._presentities.load(publication_from_row(row, event.content_type))
            npub += 1
        self._presentities.read_floor = time.monotonic()   # every change begun before may be in the rows
        gap = self._cseq_gap_on_load
        for row in await self.store.live_subscriptions(now - self._settings.expires_offset):
            if self._events.contains_event(row["event"]) is None:
                continue
            sub = subscription_from_row(row)
            if gap:
                sub = sub.evolve(local_cseq=sub.local_cseq + TAKEOVER_CSEQ_GAP,
                                 version=sub.version + TAKEOVER_CSEQ_GAP)
            self._subscriptions.load(sub, changed=gap)
            nsub += 1
        return npub, nsub

    # ------------------------------------------------------------------ fallback2db
    async def fallback_publications(self, pres_uri: str, event: PresenceEvent, *,
                                    strict: bool = False) -> None:
        """fallback2db: publications another server stored for this presentity join the table
        (an etag lookup and the NOTIFY body then see them). Workers: only when another worker changed
        it since we last read it (`stale`). `strict`: a database failure raises the _BadRequest to
        answer (503/500) instead of going on with what memory holds."""
        if not self.read_first or self.store is None or event.type != PUBL_TYPE:
            return
        if not (self._settings.fallback2db or self.reread_all) and (pres_uri, event.name) not in self.stale:
            return
        await self.read_publications(pres_uri, event, strict=strict)

    async def before_publish(self, facts: PublishFacts, event: PresenceEvent) -> None:
        """What a PUBLISH reads first (the presentity's lock held): fallback2db, every time; a worker,
        on a miss only: the presentity is stale, or SIP-If-Match names an ETag we do not hold (another
        worker may have made it). `_BadRequest` (503/500) when the database cannot be read."""
        if self.store is None or event.type != PUBL_TYPE:
            return
        key = (facts.pres_uri, event.name)
        if not (self._settings.fallback2db or self.reread_all or key in self.stale) and (
                self._cluster.node is None or not facts.if_match
                or self._presentities.get(facts.pres_uri, event.name, facts.if_match) is not None) and (
                self.interest is None or self.interest.trusts_memory(facts.pres_uri)):
            return
        await self.read_publications(facts.pres_uri, event, strict=True)

    async def before_first_notify(self, pres_uri: str, event: PresenceEvent) -> None:
        """A new watcher, counted in the subscription table already, is about to get its first NOTIFY:
        another worker's presentity is read now (workers, affinity "uri"). Read after the count, so a
        change committed later is announced to us (the home worker checks the count after committing)."""
        interest = self.interest
        if interest is not None and event.type == PUBL_TYPE and not interest.trusts_memory(pres_uri):
            await self.read_publications(pres_uri, event)

    async def read_publications(self, pres_uri: str, event: PresenceEvent, *,
                                strict: bool = False) -> list[Publication]:
        """The presentity's live publications read from the database replace what memory holds. Returns
        those memory did not hold as they are (new, or a new body): what another node changed."""
        if self.store is None:
            return []
        try:
            rows = await self.store.find_publications(pres_uri, event.name,
                                                      self._clock() - self._settings.expires_offset)
        except Exception as exc:
            log.error("fallback2db: reading publications of %s failed: %s", pres_uri, exc)
            if strict:
                raise _db_failure(exc) from exc
            return []
        held = {p.etag: p.body for p in self._presentities.publications(pres_uri, event.name)}
        pubs = [publication_from_row(r, event.content_type) for r in rows]
        self._presentities.replace_presentity(pres_uri, event.name, pubs)
        if self.stale:
            self.stale.discard((pres_uri, event.name))
            self.read_first = bool(self.stale) or self.reread_all or self._settings.fallback2db
        return [p for p in pubs if held.get(p.etag) != p.body]

    async def fallback_dialog(self, msg: Any) -> None:
        """fallback2db: an in-dialog SUBSCRIBE for a dialog this server does not hold is looked up in
        the database (another server created it) before it is answered 481."""
        # Clustered or a worker: the dialog may be another node's (adopted, or its owner is gone)
        if not ((self._settings.fallback2db or self._cluster.node is not None) and self.store is not None):
            return
        from routescript.sip import ParseError

        try:
            key = (msg.call_id, msg.to.tag or "", msg.from_.tag or "")
        except ParseError:
            return  # answered 400 by _subscribe_facts
        if (not key[1] or self._subscriptions.get(key) is not None
                or self._subscriptions.deleted_since_sync(key)):
            return
        try:
            if self._cluster.node is not None:
                # Another node owns the dialog: it becomes ours, and its former owner forgets it.
                row = await self._cluster.claim_subscription(key)
            else:
                row = await self.store.find_subscription(*key)
        except Exception as exc:
            log.error("fallback2db: reading subscription %s failed: %s", key[0], exc)
            raise _db_failure(exc) from exc
        if row is not None and float(row["expires"]) + self._settings.expires_offset > self._clock():
            sub = subscription_from_row(row)
            if self._cluster.node is not None:
                self._subscriptions.load(self._cluster.adopted(sub), changed=True)
            else:
                self._subscriptions.load(sub)

    async def fallback_watchers(self, pres_uri: str, event: PresenceEvent) -> None:
        """fallback2db: subscriptions another server made to this presentity are notified too."""
        if not (self._settings.fallback2db and self.store is not None):
            return
        try:
            rows = await self.store.find_subscriptions(pres_uri, event.name,
                                                       self._clock() - self._settings.expires_offset)
        except Exception as exc:  # noqa: BLE001 - fallback2db is best effort: local watchers notified
            log.error("fallback2db: reading watchers of %s failed: %s", pres_uri, exc)
            return
        for row in rows:
            sub = subscription_from_row(row)
            key = sub.key
            # storing: its SUBSCRIBE is not answered yet (no NOTIFY before the 200)
            if self._subscriptions.get(key) is None and not self._subscriptions.deleted_since_sync(key) \
                    and key not in self.storing:
                self._subscriptions.load(sub)
