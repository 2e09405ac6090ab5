"""Presence state and the database: load at start, db_update_period flush (sync_db), and the
fallback2db lookups that find what another server stored (publications, a dialog, watchers)."""

from __future__ import annotations

import logging
from typing import Any

from .base import ServiceBase, _db_failure
from .events import PUBL_TYPE, PresenceEvent
from .storage import publication_from_row, subscription_from_row
from .subscription import Subscription

log = logging.getLogger("routescript.presence")


class Persistence(ServiceBase):
    """sync_db / load, and the fallback2db reads (OpenSIPS fallback2db)."""

    async def sync_db(self) -> None:
        """db_update_period: flush subscription changes in one transaction. The database unreachable:
        they are kept for the next time. Another failure (a row the database refuses): saved one by
        one, so one bad row never keeps the others out."""
        if self.store is None:
            return
        inserts, updates, deletes = self.subscriptions.take_db_changes()
        try:
            lost = await self.store.sync_subscriptions(inserts, updates, deletes)
        except Exception as exc:  # noqa: BLE001 - changes kept for the next sync, or saved one by one
            if getattr(exc, "transient", False):
                log.error("saving subscriptions failed (%d changes kept for the next sync): %s",
                          len(inserts) + len(updates) + len(deletes), exc)
                self.subscriptions.restore_db_changes(inserts, updates, deletes)
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
            except Exception as exc:  # noqa: BLE001 - this row only
                if getattr(exc, "transient", False):
                    rest = todo[i:]
                    self.subscriptions.restore_db_changes(*(
                        [s for s, w in rest if w == kind] for kind in ("insert", "update", "delete")))
                    log.error("saving subscriptions failed (%d changes kept for the next sync): %s",
                              len(rest), exc)
                    break
                log.error("subscription %s to %s not saved (%s dropped from this sync): %s", sub.callid,
                          sub.pres_uri, what, exc)
        return lost

    def _forget_lost(self, lost: list[Subscription]) -> None:
        for sub in lost:
            # Clustered: the row carries another node's tag now (taken over); it sends the NOTIFYs.
            if self.subscriptions.forget(sub.key) is not None:
                log.info("subscription %s to %s is no longer ours (taken over); forgotten", sub.callid,
                         sub.pres_uri)

    async def load(self) -> tuple[int, int]:
        """At start: every live publication and subscription back from the database."""
        if self.store is None:
            return 0, 0
        now = self.clock()
        npub = nsub = 0
        for row in await self.store.live_publications(now - self.settings.expires_offset):
            event = self.events.contains_event(row["event"])
            if event is None:
                log.warning("stored publication for unknown event %r ignored", row["event"])
                continue
            self.presentities.load(publication_from_row(row, event.content_type))
            npub += 1
        for row in await self.store.live_subscriptions(now - self.settings.expires_offset):
            if self.events.contains_event(row["event"]) is None:
                continue
            self.subscriptions.load(subscription_from_row(row))
            nsub += 1
        return npub, nsub

    # ------------------------------------------------------------------ fallback2db
    async def _fallback_publications(self, pres_uri: str, event: PresenceEvent, *,
                                     strict: bool = False) -> None:
        """fallback2db: publications another server stored for this presentity join the table
        (an etag lookup and the NOTIFY body then see them). `strict`: a database failure raises the
        _BadRequest to answer (503/500) instead of going on with what memory holds."""
        if not (self.settings.fallback2db and self.store is not None and event.type == PUBL_TYPE):
            return
        try:
            rows = await self.store.find_publications(pres_uri, event.name,
                                                      self.clock() - self.settings.expires_offset)
        except Exception as exc:
            log.error("fallback2db: reading publications of %s failed: %s", pres_uri, exc)
            if strict:
                raise _db_failure(exc) from exc
            return
        self.presentities.replace_presentity(pres_uri, event.name,
                                             [publication_from_row(r, event.content_type) for r in rows])

    async def _fallback_dialog(self, msg: Any) -> None:
        """fallback2db: an in-dialog SUBSCRIBE for a dialog this server does not hold is looked up in
        the database (another server created it) before it is answered 481."""
        if not (self.settings.fallback2db and self.store is not None):
            return
        from routescript.sip import ParseError

        try:
            key = (msg.call_id, msg.to.tag or "", msg.from_.tag or "")
        except ParseError:
            return  # answered 400 by _subscribe_facts
        if (not key[1] or self.subscriptions.get(key) is not None
                or self.subscriptions.deleted_since_sync(key)):
            return
        try:
            if self.cluster is not None:
                # Another node owns the dialog: it becomes ours, and its former owner forgets it.
                row = await self.cluster.claim_subscription(*key)
            else:
                row = await self.store.find_subscription(*key)
        except Exception as exc:
            log.error("fallback2db: reading subscription %s failed: %s", key[0], exc)
            raise _db_failure(exc) from exc
        if row is not None and float(row["expires"]) + self.settings.expires_offset > self.clock():
            sub = subscription_from_row(row)
            if self.cluster is not None:
                self.subscriptions.load(self._adopted(sub), changed=True)
            else:
                self.subscriptions.load(sub)

    async def _fallback_watchers(self, pres_uri: str, event: PresenceEvent) -> None:
        """fallback2db: subscriptions another server made to this presentity are notified too."""
        if not (self.settings.fallback2db and self.store is not None):
            return
        try:
            rows = await self.store.find_subscriptions(pres_uri, event.name,
                                                       self.clock() - self.settings.expires_offset)
        except Exception as exc:  # noqa: BLE001 - fallback2db is best effort: local watchers notified
            log.error("fallback2db: reading watchers of %s failed: %s", pres_uri, exc)
            return
        for row in rows:
            sub = subscription_from_row(row)
            key = sub.key
            # _storing: its SUBSCRIBE is not answered yet (no NOTIFY before the 200)
            if self.subscriptions.get(key) is None and not self.subscriptions.deleted_since_sync(key) \
                    and key not in self._storing:
                self.subscriptions.load(sub)
