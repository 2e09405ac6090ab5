"""Watcher authorization: a new watcher judged by the kept decision or the package's rules
(pres-rules), refreshWatchers re-judging every watcher, and the RPID sphere the rules may test."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import _maybe_await
from .dispatch import UNREAD, Notifier
from .events import PresenceEvent
from .locks import KeyedLocks
from .persistence import Persistence
from .presentity import PresentityTable
from .settings import PresenceSettings
from .sphere import extract_sphere
from .storage import PresenceStore, split_pres_uri
from .subscription import SubscribeFacts, SubState, SubsTable, auth_change

log = logging.getLogger("routescript.presence")


class Authorizer:
    """get_auth_status / update_watchers_status and the watchers table (OpenSIPS watchers)."""

    def __init__(self, store: PresenceStore | None, settings: PresenceSettings, clock: Callable[[], float],
                 presentities: PresentityTable, subscriptions: SubsTable, locks: KeyedLocks,
                 notifier: Notifier, persistence: Persistence) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._presentities = presentities
        self._subscriptions = subscriptions
        self._locks = locks
        self._notifier = notifier
        self._persistence = persistence

    async def authorize(self, event: PresenceEvent,
                        facts: SubscribeFacts) -> tuple[SubState, str | None, Any]:
        """The authorization of a new watcher: the decision kept in the watchers table for this watcher,
        else the package's rules (presence_xml: pres-rules), which is then kept there (OpenSIPS
        get_db_subs_auth / insert_db_subs_auth). Returns (status, reason, the rules document read to
        decide - dispatch.UNREAD when none was: the first NOTIFY's body is filtered by the same one)."""
        if self._store is not None:
            try:
                row = await self._store.find_watcher_auth(facts.pres_uri, facts.watcher_user,
                                                          facts.watcher_domain, event.name)
            except Exception as exc:  # noqa: BLE001 - an unreadable watchers table falls back to the rules
                log.error("watchers table of %s not read: %s", facts.pres_uri, exc)
                row = None
            if row is not None and int(row.get("status") or 0) in SubState._value2member_map_:
                status = SubState(int(row["status"]))
                return status, (row.get("reason") or "rejected") if status is SubState.TERMINATED else None, \
                    UNREAD
        rules = await self._read_rules(event, facts)
        status, reason = (SubState.PENDING, None) if rules is UNREAD else \
            await self._auth_status(event, facts, rules)
        if self._store is not None:
            try:
                await self._store.save_watcher_auth(facts.pres_uri, facts.watcher_user, facts.watcher_domain,
                                                    event.name, int(status), reason, self._clock())
            except Exception as exc:  # noqa: BLE001 - the decision stands; saved at the next SUBSCRIBE
                log.error("watchers table of %s not written: %s", facts.pres_uri, exc)
        return status, reason, rules

    async def _read_rules(self, event: PresenceEvent, watcher: SubscribeFacts) -> Any:
        """get_rules_doc for the watcher's presentity (None: no document); UNREAD when it failed (the
        watcher is then pending)."""
        if event.get_rules_doc is None:
            return None
        user, domain = split_pres_uri(watcher.pres_uri)
        try:
            return await _maybe_await(event.get_rules_doc(user, domain))
        except Exception:
            log.exception("authorization of %s for %s failed; pending", watcher.watcher_uri, watcher.pres_uri)
            return UNREAD

    async def _auth_status(self, event: PresenceEvent, watcher: Any,
                           rules: Any) -> tuple[SubState, str | None]:
        """get_auth_status of `watcher` by the rules document `rules`; any failure -> pending."""
        try:
            outcome = (await _maybe_await(event.get_auth_status(watcher, rules))
                       if event.get_auth_status else None)
        except Exception:
            log.exception("authorization of %s for %s failed; pending", watcher.watcher_uri, watcher.pres_uri)
            return SubState.PENDING, None
        if outcome is None:
            return SubState.PENDING, None
        status, reason = outcome[0], outcome[1]
        return SubState(int(status)), reason

    async def update_watchers_status(self, pres_uri: str, event: PresenceEvent, rules_doc: Any = None) -> int:
        """OpenSIPS update_watchers_status: the rules of `pres_uri` changed (refreshWatchers type 0, a new
        xcap document, a sphere change). Re-judge every watcher - live subscriptions and the watchers
        table - and tell those whose state changed. `rules_doc` None: read it with get_rules_doc.
        Returns how many subscriptions changed state."""
        async with self._locks.hold(pres_uri):
            return await self.update_watchers(pres_uri, event, rules_doc)

    async def update_watchers(self, pres_uri: str, event: PresenceEvent, rules_doc: Any, *,
                              quiet: bool = False) -> int:
        if not event.req_auth:
            return 0
        if rules_doc is None and event.get_rules_doc is not None:
            user, domain = split_pres_uri(pres_uri)
            try:
                rules_doc = await _maybe_await(event.get_rules_doc(user, domain))
            except Exception as exc:  # noqa: BLE001 - unreadable rules: watchers keep their state
                log.error("rules of %s not read: %s", pres_uri, exc)
                return 0
        changed = 0
        decided: dict[tuple[str, str], SubState] = {}
        winfo_full = False
        for sub in self._subscriptions.watchers(pres_uri, event.name):
            if sub.forced or sub.status is SubState.TERMINATED:
                continue   # handle_subscribe("1"): the rules do not decide; a blocked one has ended
            status, _reason = await self._auth_status(event, sub, rules_doc)
            decided[(sub.watcher_user, sub.watcher_domain)] = sub.status
            move = auth_change(sub.status, status)
            if move is None:
                continue
            changed += 1
            after = sub.moved(move)
            log.info("watcher %s of %s: %s -> %s", sub.watcher_uri, pres_uri, sub.status.name,
                     after.status.name)
            if after.status is SubState.ACTIVE:
                live = self._subscriptions.update(after)
                await self._notifier.notify_one(live, event, with_body=True)
                await self._notifier.notify_winfo(pres_uri, event, changed=live)
            else:
                self._subscriptions.delete(sub.key)
                await self._notifier.notify_one(after, event, with_body=False)
                winfo_full = True
        if winfo_full:
            await self._notifier.notify_winfo(pres_uri, event)
        await self._update_watchers_table(pres_uri, event, rules_doc, decided)
        if changed and self._settings.fallback2db:
            await self._persistence.sync_db()
        if not quiet:
            log.info("refreshWatchers %s %s: %d subscription(s) changed", pres_uri, event.name, changed)
        return changed

    async def _update_watchers_table(self, pres_uri: str, event: PresenceEvent, rules_doc: Any,
                                     live_before: dict[tuple[str, str], SubState]) -> None:
        """The kept decisions follow the rules: a new outcome is stored; a watcher that was allowed or
        blocked and that no rule decides any more loses its row (a new SUBSCRIBE is judged afresh)."""
        if self._store is None:
            return
        try:
            rows = await self._store.watchers_of(pres_uri, event.name)
            for row in rows:
                watcher = _WatcherRow(pres_uri, row.get("watcher_username") or "",
                                      row.get("watcher_domain") or "")
                status, reason = await self._auth_status(event, watcher, rules_doc)
                old = int(row.get("status") or 0)
                if status is SubState.PENDING and old != int(SubState.PENDING):
                    await self._store.delete_watcher_auth(row["id"])
                elif old != int(status) or (row.get("reason") or None) != reason:
                    await self._store.update_watcher_auth(row["id"], int(status), reason)
        except Exception as exc:  # noqa: BLE001 - a failed update leaves the old decisions
            log.error("watchers table of %s not updated: %s", pres_uri, exc)

    def get_sphere(self, pres_uri: str) -> str | None:
        """OpenSIPS get_sphere: the RPID sphere of the newest presence publication, or None."""
        pubs = self._presentities.publications(pres_uri, "presence")
        return extract_sphere(pubs[-1].body) if pubs else None

    def sphere_if_checked(self, pres_uri: str, event: PresenceEvent) -> str | None:
        if not (self._settings.enable_sphere_check and event.name == "presence" and event.req_auth):
            return None
        return self.get_sphere(pres_uri)


@dataclass(frozen=True, slots=True)
class _WatcherRow:
    """A watchers-table row as get_auth_status sees a watcher."""

    pres_uri: str
    watcher_user: str
    watcher_domain: str

    @property
    def watcher_uri(self) -> str:
        return f"sip:{self.watcher_user}@{self.watcher_domain}" if self.watcher_user else \
            f"sip:{self.watcher_domain}"
