"""The presence server at work: PUBLISH and SUBSCRIBE handling, NOTIFY fan-out, timers, storage.

This is the thin asyncio layer over the sans-IO tables (presentity.py, subscription.py, notify.py):
it reads the facts out of a request, asks the tables for a decision, stores it, replies, and sends
the NOTIFYs. It reaches the rest of the server only through `server` (reply, to_tag, transactions,
events, sockets), so tests can hand it a small fake.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .bla import bla_presentity, is_bla
from .etag import EtagGenerator
from .events import PUBL_TYPE, WINFO_TYPE, BodyError, EventRegistry, PresenceEvent
from .locks import KeyedLocks
from .notify import BodyCache, build_notify, local_contact, presentity_body, watcher_body
from .presentity import PresentityTable, Publication, PublishAction, PublishDecision, PublishFacts
from .sender import MAX_QUEUED_PER_DIALOG, NotifySender
from .storage import PresenceStore, join_pres_uri, publication_from_row, split_pres_uri, subscription_from_row
from .sphere import extract_sphere
from .subscription import (SubscribeAction, SubscribeFacts, Subscription, SubState, SubsTable,
                           auth_change)

log = logging.getLogger("routescript.presence")

REASON_BAD_REQUEST = "Bad request"
REASON_BAD_EVENT = "Bad Event"
REASON_SERVER_ERROR = "Server Internal Error"
REASON_UNAVAILABLE = "Service Unavailable"
MAX_PRESENTITY_LOCKS = 100_000  # bound: presentities with a PUBLISH/SUBSCRIBE being handled
# Retry-After of a 503 while the database is unreachable: the PostgreSQL pool retries after 0.5 s,
# doubling up to 30 s; a few seconds keeps phones from hammering a server that is reconnecting.
DB_RETRY_AFTER = 5
MAX_EXPIRED_CLAIM = 1000        # bound: expired presentity rows one clean run deletes (clustered)
# A subscription taken over from another node continues its CSeq (and body version) this far above the
# stored one: its former owner may have sent NOTIFYs whose numbers it had not written yet (at most the
# ones queued for the dialog, NotifySender's bound). RFC 3261 12.2.1.1 asks CSeq to grow, not to be
# consecutive; a NOTIFY with a CSeq the watcher saw already would be refused (500) or taken as old.
TAKEOVER_CSEQ_GAP = MAX_QUEUED_PER_DIALOG


@dataclass(frozen=True, slots=True)
class PresenceSettings:
    """The modparams the service uses."""

    max_expires_publish: int = 3600
    max_expires_subscribe: int = 3600
    expires_offset: int = 0
    server_address: str = ""
    notify_offline_body: bool = False
    end_sub_on_timeout: bool = True
    # OpenSIPS fallback2db: a lookup that misses in memory continues in the database (several servers
    # sharing one database), and subscription changes are written through at once instead of waiting
    # for db_update_period, so the other servers find them.
    fallback2db: bool = False
    # RPID <sphere> of the presentity's publication feeds the pres-rules sphere conditions; a PUBLISH
    # that changes it re-evaluates the watchers (OpenSIPS does the same).
    enable_sphere_check: bool = False
    # Pending/waiting authorization decisions (watchers table) older than this many days are forgotten.
    waiting_subs_daysno: int = 3
    # bla_presentity_spec parsed: (pseudo-variable name, key), None when not set.
    bla_presentity_spec: tuple[str, str | None] | None = None


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason, self.headers = status, reason, headers


def _taken_over(sub: Subscription) -> Subscription:
    """A subscription this node takes over from another: CSeq and version go on above what its former
    owner may have sent without storing it (TAKEOVER_CSEQ_GAP)."""
    return replace(sub, local_cseq=sub.local_cseq + TAKEOVER_CSEQ_GAP,
                   version=sub.version + TAKEOVER_CSEQ_GAP)


def _db_failure(exc: BaseException) -> _BadRequest:
    """The reply to a request the database could not serve: 503 + Retry-After while it is unreachable
    (routescript.db DatabaseError.transient: the pool reconnects by itself), 500 for anything else."""
    if getattr(exc, "transient", False):
        return _BadRequest(503, REASON_UNAVAILABLE, (("Retry-After", str(DB_RETRY_AFTER)),))
    return _BadRequest(500, REASON_SERVER_ERROR)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _same_uri(a: str, b: str) -> bool:
    """Sender vs Contact comparison (OpenSIPS compares the URIs' text; we ignore case of scheme/host
    and the <> a Contact may carry)."""
    norm = [u.strip().strip("<>").lower() for u in (a, b)]
    return norm[0] == norm[1]


class PresenceService:
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
                                            expires_offset=settings.expires_offset)
        self.subscriptions = SubsTable(max_expires=settings.max_expires_subscribe,
                                       expires_offset=settings.expires_offset)
        self.sender = NotifySender(self._send_notify, self._notify_result)
        self._locks = KeyedLocks(MAX_PRESENTITY_LOCKS)
        # The shared NOTIFY body per presentity, rebuilt only when its publications change.
        self.bodies = BodyCache()
        # Clustering (docs/cluster.md): the ClusterNode, set by the module when cluster_id is set.
        self.cluster: Any = None
        # (pres_uri, event) -> hash of the last state body sent to its watchers (clustered: a resync
        # compares it with the database). Only presentities with watchers here.
        self._notified: dict[tuple[str, str], int] = {}
        self._missed_while_fenced = False

    # ------------------------------------------------------------------ PUBLISH
    async def handle_publish(self, ctx: Any, sender_uri: str | None = None) -> int:
        """handle_publish([sender_uri]): 1 on success, -1 after an error reply."""
        msg = ctx.msg
        try:
            event = self._event_of(msg)
            facts = self._publish_facts(msg, event, sender_uri)
        except _BadRequest as exc:
            self._reply(ctx, exc.status, exc.reason, exc.headers)
            return -1
        async with self._lock(facts.pres_uri):
            try:
                await self._fallback_publications(facts.pres_uri, event, strict=True)
            except _BadRequest as exc:
                self._reply(ctx, exc.status, exc.reason, exc.headers)
                return -1
            sphere_before = self._sphere_if_checked(facts.pres_uri, event)
            now = self.clock()
            decision = self.presentities.handle_publish(facts, now)
            if not decision.ok:
                self._reply(ctx, decision.status, decision.reason)
                return -1
            try:
                await self._store_publication(decision)
            except Exception as exc:  # noqa: BLE001 - the PUBLISH is answered (503 or 500) whatever failed
                log.error("PUBLISH for %s not stored: %s", facts.pres_uri, exc)
                err = _db_failure(exc)
                self._reply(ctx, err.status, err.reason, err.headers)
                return -1
            self.presentities.commit(decision)
            if decision.notify:
                # stored and committed: the other nodes may read it now (their watchers, their NOTIFYs)
                await self._announce(facts.pres_uri, event, decision.etag or "")
            headers = [("Expires", str(decision.expires))]
            if decision.etag:
                headers.append(("SIP-ETag", decision.etag))
            self._reply(ctx, decision.status, decision.reason, headers)
            self._raise_publish_event(facts, decision)
            if decision.notify and sphere_before != self._sphere_if_checked(facts.pres_uri, event):
                # enable_sphere_check: the rules with sphere conditions may judge the watchers differently
                await self._update_watchers(facts.pres_uri, event, None, quiet=True)
            if decision.notify:
                removed = decision.publication if decision.action is PublishAction.REMOVE else None
                await self.notify_presentity(facts.pres_uri, event, removed=removed,
                                             skip_contact=facts.sender)
                if self.settings.fallback2db:
                    await self.sync_db()   # the NOTIFYs' CSeqs, for the other servers
        return 1

    async def _announce(self, pres_uri: str, event: PresenceEvent, etag: str) -> None:
        """Clustered: tell the other nodes, whose watchers of pres_uri then hear from their owner. The
        change is stored already; a failure here is logged (the other nodes catch up at their resync)."""
        if self.cluster is None:
            return
        try:
            await self.cluster.announce(pres_uri, event.name, etag)
        except Exception as exc:  # noqa: BLE001 - stored already; other nodes catch up at resync
            log.error("cluster: announcing the change of %s (%s) failed: %s", pres_uri, event.name, exc)

    def _publish_facts(self, msg: Any, event: PresenceEvent, sender_uri: str | None) -> PublishFacts:
        from routescript.sip import ParseError, parse_uri

        try:
            uri = msg.uri
            expires = msg.expires
            ctype = msg.content_type
        except ParseError as exc:
            raise _BadRequest(400, REASON_BAD_REQUEST) from exc
        sender = None
        if sender_uri:
            try:
                parse_uri(sender_uri.strip())   # a bare SIP URI; "<sip:..>" is refused as OpenSIPS does
            except ParseError as exc:
                raise _BadRequest(400, REASON_BAD_REQUEST) from exc
            sender = sender_uri.strip()
        return PublishFacts(join_pres_uri(uri.user or "", uri.host), event, msg.header("SIP-If-Match"),
                            expires, msg.body or None, ctype.mime if ctype is not None else None, sender)

    async def _store_publication(self, d: PublishDecision) -> None:
        if self.store is None or d.publication is None:
            return
        if d.action is PublishAction.INSERT:
            await self.store.insert_publication(d.publication)
        elif d.action in (PublishAction.REFRESH, PublishAction.MODIFY):
            assert d.old_etag is not None
            await self.store.replace_publication(d.old_etag, d.publication)
        elif d.action is PublishAction.REMOVE:
            await self.store.delete_publication(d.publication)

    def _raise_publish_event(self, facts: PublishFacts, d: PublishDecision) -> None:
        bus = getattr(self.server, "events", None)
        if bus is None:
            return
        user, domain = split_pres_uri(facts.pres_uri)
        body = d.publication.body if d.publication is not None else (facts.body or b"")
        try:
            bus.raise_event_nowait("E_PRESENCE_PUBLISH", {
                "user": user, "domain": domain, "event": facts.event.name, "expires": d.expires,
                "etag": d.etag, "old_etag": d.old_etag or "", "body": body.decode("utf-8", "replace")})
        except RuntimeError:  # no running loop (never in the server)
            pass

    # ------------------------------------------------------------------ SUBSCRIBE
    async def handle_subscribe(self, ctx: Any, force_active: bool = False) -> int:
        """handle_subscribe([force_active]): 1 on success, -1 after an error reply."""
        msg = ctx.msg
        try:
            event = self._event_of(msg)
            await self._fallback_dialog(msg)
            facts = self._subscribe_facts(ctx, event)
            if event.evs_subs_handl is not None:
                await _maybe_await(event.evs_subs_handl(facts))
        except _BadRequest as exc:
            self._reply(ctx, exc.status, exc.reason, exc.headers)
            return -1
        except BodyError as exc:
            self._reply(ctx, exc.status, exc.reason)
            return -1
        async with self._lock(facts.pres_uri):
            if self.settings.fallback2db and event.type == PUBL_TYPE:
                # The shared database holds the state the NOTIFY carries: without it, 503/500.
                try:
                    await self._fallback_publications(facts.pres_uri, event, strict=True)
                except _BadRequest as exc:
                    self._reply(ctx, exc.status, exc.reason, exc.headers)
                    return -1
            now = self.clock()
            status, reason = SubState.ACTIVE, None
            if facts.initial and event.req_auth and not force_active:
                status, reason = await self._authorize(event, facts)
            decision = self.subscriptions.handle_subscribe(
                facts, now, to_tag=self.server.to_tag(msg), initial_status=status, initial_reason=reason,
                forced=bool(force_active and event.req_auth))
            if not decision.ok:
                self._reply(ctx, decision.status, decision.reason)
                return -1
            self.subscriptions.commit(decision)
            self._reply(ctx, decision.status, decision.reason,
                        [("Expires", str(decision.expires)), ("Contact", f"<{facts.local_contact}>")])
            sub = decision.subscription
            assert sub is not None
            await self._notify_one(sub, event, with_body=decision.with_body,
                                   final_with_state=decision.action is SubscribeAction.FETCH, reread=False)
            if decision.winfo_changed and event.type == PUBL_TYPE:
                full = decision.action is SubscribeAction.REMOVE
                await self.notify_winfo(sub.pres_uri, event, changed=None if full else sub)
            if self.settings.fallback2db:
                await self.sync_db()
        return 1

    def _subscribe_facts(self, ctx: Any, event: PresenceEvent) -> SubscribeFacts:
        from routescript.sip import ParseError

        msg = ctx.msg
        try:
            to, frm, uri = msg.to, msg.from_, msg.uri
            contacts = msg.contacts
            expires = msg.expires
            cseq = msg.cseq.number
            ev = msg.event
            rr = tuple(str(r) for r in msg.record_routes) if not to.tag else ()
        except ParseError as exc:
            raise _BadRequest(400, REASON_BAD_REQUEST) from exc
        contact = next((str(c.uri) for c in contacts if not c.star and c.uri is not None), None)
        source = ctx.source
        sock = getattr(source, "socket", None)
        proto = getattr(source, "proto", "udp") or "udp"
        lcontact = local_contact(self.settings.server_address, proto, getattr(sock, "host", "127.0.0.1"),
                                 int(getattr(sock, "port", 5060)))
        pres_uri = join_pres_uri(uri.user or "", uri.host)
        if is_bla(event) and not to.tag:
            pres_uri = self._bla_presentity(ctx)
        if to.tag:
            # In-dialog: the presentity is the one the dialog was made for.
            live = self.subscriptions.get((msg.call_id, to.tag, frm.tag or ""))
            if live is not None:
                pres_uri = live.pres_uri
        return SubscribeFacts(
            event, pres_uri, to.uri.user or "", to.uri.host, frm.uri.user or "", frm.uri.host, msg.call_id,
            cseq, frm.tag, to.tag, contact, expires, ev.id if ev is not None else None, rr,
            getattr(sock, "name", ""), lcontact, msg.header("User-Agent") or "", source, msg)

    def _bla_presentity(self, ctx: Any) -> str:
        """dialog;sla: Contact user @ From domain, or the bla_presentity_spec variable's URI
        (BodyError 400)."""
        spec = self.settings.bla_presentity_spec
        value = None
        if spec is not None:
            registry = getattr(self.server, "registry", None)
            pv = registry.pvars.get(spec[0]) if registry is not None else None
            if pv is not None:
                value = pv.getter(ctx, spec[1], None)
            elif spec[0] == "var":
                value = ctx.vars.get(spec[1])
            else:
                log.error("bla_presentity_spec: unknown pseudo-variable $%s", spec[0])
        return bla_presentity(ctx.msg, value, use_spec=value is not None)

    async def _authorize(self, event: PresenceEvent, facts: SubscribeFacts) -> tuple[SubState, str | None]:
        """The authorization of a new watcher: the decision kept in the watchers table for this watcher,
        else the package's rules (presence_xml: pres-rules), which is then kept there (OpenSIPS
        get_db_subs_auth / insert_db_subs_auth)."""
        if self.store is not None:
            try:
                row = await self.store.find_watcher_auth(facts.pres_uri, facts.watcher_user,
                                                         facts.watcher_domain, event.name)
            except Exception as exc:  # noqa: BLE001 - an unreadable watchers table falls back to the rules
                log.error("watchers table of %s not read: %s", facts.pres_uri, exc)
                row = None
            if row is not None and int(row.get("status") or 0) in SubState._value2member_map_:
                status = SubState(int(row["status"]))
                return status, (row.get("reason") or "rejected") if status is SubState.TERMINATED else None
        status, reason = await self._auth_status(event, facts, None, use_doc=False)
        if self.store is not None:
            try:
                await self.store.save_watcher_auth(facts.pres_uri, facts.watcher_user, facts.watcher_domain,
                                                   event.name, int(status), reason, self.clock())
            except Exception as exc:  # noqa: BLE001 - the decision stands; saved at the next SUBSCRIBE
                log.error("watchers table of %s not written: %s", facts.pres_uri, exc)
        return status, reason

    async def _auth_status(self, event: PresenceEvent, watcher: Any, rules: Any, *,
                           use_doc: bool) -> tuple[SubState, str | None]:
        """get_rules_doc (unless `use_doc`: `rules` given) then get_auth_status; any failure -> pending."""
        user, domain = split_pres_uri(watcher.pres_uri)
        try:
            if not use_doc:
                rules = await _maybe_await(event.get_rules_doc(user, domain)) if event.get_rules_doc else None
            outcome = (await _maybe_await(event.get_auth_status(watcher, rules))
                       if event.get_auth_status else None)
        except Exception:
            log.exception("authorization of %s for %s failed; pending", watcher.watcher_uri, watcher.pres_uri)
            return SubState.PENDING, None
        if outcome is None:
            return SubState.PENDING, None
        status, reason = outcome[0], outcome[1]
        return SubState(int(status)), reason

    # ------------------------------------------------------------------ authorization changes
    async def update_watchers_status(self, pres_uri: str, event: PresenceEvent, rules_doc: Any = None) -> int:
        """OpenSIPS update_watchers_status: the rules of `pres_uri` changed (refreshWatchers type 0, a new
        xcap document, a sphere change). Re-judge every watcher - live subscriptions and the watchers
        table - and tell those whose state changed. `rules_doc` None: read it with get_rules_doc.
        Returns how many subscriptions changed state."""
        async with self._lock(pres_uri):
            return await self._update_watchers(pres_uri, event, rules_doc)

    async def _update_watchers(self, pres_uri: str, event: PresenceEvent, rules_doc: Any, *,
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
        for sub in self.subscriptions.watchers(pres_uri, event.name):
            if sub.forced:
                continue   # handle_subscribe("1"): the rules do not decide for it
            status, _reason = await self._auth_status(event, sub, rules_doc, use_doc=True)
            decided[(sub.watcher_user, sub.watcher_domain)] = sub.status
            move = auth_change(sub.status, status)
            if move is None:
                continue
            changed += 1
            after = sub.moved(move)
            log.info("watcher %s of %s: %s -> %s", sub.watcher_uri, pres_uri, sub.status.name,
                     after.status.name)
            if after.status is SubState.ACTIVE:
                live = self.subscriptions.update(after)
                await self._notify_one(live, event, with_body=True)
                await self.notify_winfo(pres_uri, event, changed=live)
            else:
                self.subscriptions.delete(sub.key)
                await self._notify_one(after, event, with_body=False)
                winfo_full = True
        if winfo_full:
            await self.notify_winfo(pres_uri, event)
        await self._update_watchers_table(pres_uri, event, rules_doc, decided)
        if changed and self.settings.fallback2db:
            await self.sync_db()
        if not quiet:
            log.info("refreshWatchers %s %s: %d subscription(s) changed", pres_uri, event.name, changed)
        return changed

    async def _update_watchers_table(self, pres_uri: str, event: PresenceEvent, rules_doc: Any,
                                     live_before: dict[tuple[str, str], SubState]) -> None:
        """The kept decisions follow the rules: a new outcome is stored; a watcher that was allowed or
        blocked and that no rule decides any more loses its row (a new SUBSCRIBE is judged afresh)."""
        if self.store is None:
            return
        try:
            rows = await self.store.watchers_of(pres_uri, event.name)
            for row in rows:
                watcher = _WatcherRow(pres_uri, row.get("watcher_username") or "",
                                      row.get("watcher_domain") or "")
                status, reason = await self._auth_status(event, watcher, rules_doc, use_doc=True)
                old = int(row.get("status") or 0)
                if status is SubState.PENDING and old != int(SubState.PENDING):
                    await self.store.delete_watcher_auth(row["id"])
                elif old != int(status) or (row.get("reason") or None) != reason:
                    await self.store.update_watcher_auth(row["id"], int(status), reason)
        except Exception as exc:  # noqa: BLE001 - a failed update leaves the old decisions
            log.error("watchers table of %s not updated: %s", pres_uri, exc)

    def get_sphere(self, pres_uri: str) -> str | None:
        """OpenSIPS get_sphere: the RPID sphere of the newest presence publication, or None."""
        pubs = self.presentities.publications(pres_uri, "presence")
        return extract_sphere(pubs[-1].body) if pubs else None

    def _sphere_if_checked(self, pres_uri: str, event: PresenceEvent) -> str | None:
        if not (self.settings.enable_sphere_check and event.name == "presence" and event.req_auth):
            return None
        return self.get_sphere(pres_uri)

    def contains_presence(self, pres_uri: str, event: str = "presence") -> bool:
        """OpenSIPS contains_presence: has `pres_uri` a live publication for `event`?"""
        return self.presentities.contains_presence(pres_uri, event)

    # ------------------------------------------------------------------ NOTIFY
    async def notify_presentity(self, pres_uri: str, event: PresenceEvent, *,
                                removed: Publication | None = None,
                                skip_contact: str | None = None) -> int:
        """Tell every watcher of (pres_uri, event) the new state; the body is built once. Returns how
        many NOTIFYs were queued. `skip_contact`: handle_publish's sender_uri (that watcher is left out)."""
        if self.cluster is None:
            # fallback2db without clustering: every server notifies every watcher in the database
            # (OpenSIPS's way); clustered, each node notifies its own and the others are told.
            await self._fallback_watchers(pres_uri, event)
        watchers = self.subscriptions.watchers(pres_uri, event.name)
        if not watchers:
            self._notified.pop((pres_uri, event.name), None)
            return 0
        await self._fallback_publications(pres_uri, event)
        shared = presentity_body(event, pres_uri, self.presentities.publications(pres_uri, event.name),
                                 removed=removed, notify_offline_body=self.settings.notify_offline_body,
                                 cache=self.bodies)
        if self.cluster is not None and self._fenced():
            self._missed_while_fenced = True
            return 0
        if self.cluster is not None:
            self._notified[(pres_uri, event.name)] = hash(shared)
        rules = None
        if event.req_auth and event.apply_auth_nbody is not None and event.get_rules_doc is not None:
            user, domain = split_pres_uri(pres_uri)
            rules = await _maybe_await(event.get_rules_doc(user, domain))
        sent = 0
        for sub in watchers:
            if skip_contact and _same_uri(sub.contact, skip_contact):
                continue
            if self._queue_notify(sub, event, shared, rules):
                sent += 1
        return sent

    async def notify_winfo(self, pres_uri: str, event: PresenceEvent, *,
                           changed: Subscription | None = None) -> int:
        """Tell the presence.winfo watchers of pres_uri: `changed` alone (partial) or the full list."""
        winfo = self.events.wipeer(event)
        if winfo is None or winfo.type != WINFO_TYPE:
            return 0
        sent = 0
        for sub in self.subscriptions.watchers(pres_uri, winfo.name):
            if sub.status is SubState.ACTIVE:
                await self._notify_one(sub, winfo, with_body=True, partial=changed)
                sent += 1
        return sent

    async def _notify_one(self, sub: Subscription, event: PresenceEvent, *, with_body: bool,
                          final_with_state: bool = False, partial: Subscription | None = None,
                          reread: bool = True) -> None:
        shared = None
        if with_body and event.type == PUBL_TYPE:
            if reread:
                await self._fallback_publications(sub.pres_uri, event)
            shared = presentity_body(event, sub.pres_uri,
                                     self.presentities.publications(sub.pres_uri, event.name),
                                     notify_offline_body=self.settings.notify_offline_body,
                                     cache=self.bodies)
        rules = None
        if shared is not None and event.req_auth and event.apply_auth_nbody and event.get_rules_doc:
            user, domain = split_pres_uri(sub.pres_uri)
            rules = await _maybe_await(event.get_rules_doc(user, domain))
        self._queue_notify(sub, event, shared, rules, final_with_state=final_with_state,
                           winfo=with_body and event.type == WINFO_TYPE, partial=partial)

    def _fenced(self) -> bool:
        """Clustered and cut off from the cluster for too long: another node may own our subscriptions
        now, so we send no NOTIFY (ClusterNode.owns_subscriptions) until a heartbeat succeeds."""
        return self.cluster is not None and not self.cluster.owns_subscriptions()

    def _queue_notify(self, sub: Subscription, event: PresenceEvent, shared: bytes | None, rules: Any, *,
                      final_with_state: bool = False, winfo: bool = False,
                      partial: Subscription | None = None) -> bool:
        if self._fenced():
            self._missed_while_fenced = True
            log.warning("NOTIFY to %s for %s held back: this node is cut off from the cluster", sub.callid,
                        sub.pres_uri)
            return False
        now = self.clock()
        live = self.subscriptions.get(sub.key)
        if live is None or (live.status is sub.status and live.reason == sub.reason):
            current = live or sub
        else:
            current = replace(live, status=sub.status, reason=sub.reason)
        body: bytes | None
        if winfo and event.winfo_body is not None and (current.status is SubState.ACTIVE or final_with_state):
            peer = self.events.wipeer(event)
            watchers = [partial] if partial is not None else \
                (self.subscriptions.watchers(sub.pres_uri, peer.name) if peer is not None else [])
            body = event.winfo_body(sub.pres_uri, watchers, current.version, "partial" if partial else "full")
        else:
            body = watcher_body(event, current, shared, rules, final_with_state=final_with_state)
        after = self.subscriptions.record_notify(current)
        request = build_notify(after, now, body=body, content_type=event.content_type)
        return self.sender.enqueue(after, request)

    async def _send_notify(self, sub: Subscription, request: Any) -> int:
        from routescript.sip import generate_branch

        sock = self._socket_for(sub)
        via = None
        if sock is not None:
            from routescript.transport.address import host_for_uri

            # Built in, first, rather than added to the built request (which re-indexes its headers).
            via = (f"SIP/2.0/{sock.proto.upper()} {host_for_uri(sock.host)}:{sock.port};"
                   f"branch={generate_branch()}")
        sip = request.to_sip(via)
        dest = self._destination_for(sub, request, sock)
        response = await self.server.transactions.request(sip, dest)
        return int(response.status)

    def _socket_for(self, sub: Subscription) -> Any:
        source = sub.source
        if source is not None and getattr(source, "socket", None) is not None:
            return source.socket
        sockets = list(getattr(self.server, "sockets", ()) or ())
        for sock in sockets:
            if getattr(sock, "name", None) == sub.socket_info:
                return sock
        return sockets[0] if sockets else None

    def _destination_for(self, sub: Subscription, request: Any, sock: Any) -> Any:
        from routescript.sip import parse_uri
        from routescript.transport.address import Destination

        routes = [v for n, v in request.headers if n == "Route"]
        target = routes[0].strip().lstrip("<").split(">")[0] if routes else request.ruri
        uri = parse_uri(target)
        source = sub.source
        # The transport the SUBSCRIBE came over, unless the target names one: a watcher that subscribed
        # over TCP without ";transport=tcp" in its Contact (SIPp, many phones) listens on TCP only.
        came_over = (getattr(source, "proto", "") or sub.socket_info.partition(":")[0] or "udp").lower()
        proto = (uri.param("transport") or ("tls" if uri.scheme == "sips" else came_over)).lower()
        port = uri.port or (5061 if proto == "tls" else 5060)
        conn_id = None
        if source is not None and getattr(source, "proto", "").lower() == proto and proto != "udp":
            conn_id = source.conn_id
        return Destination(proto, uri.host, port, conn_id,
                           sock if getattr(sock, "proto", proto) == proto else None)

    async def _notify_result(self, sub: Subscription, status: int) -> None:
        """481 (dialog gone), or a timeout with end_sub_on_timeout, ends the subscription."""
        if not (status == 481 or (status == 408 and self.settings.end_sub_on_timeout)):
            return
        if self.subscriptions.delete(sub.key) is not None:
            log.info("subscription %s to %s ended: NOTIFY answered %d", sub.callid, sub.pres_uri, status)
            # a watcher went away: the presentity's watcher-info subscribers get the full list
            event = self.events.contains_event(sub.event)
            if event is not None and event.type == PUBL_TYPE:
                async with self._lock(sub.pres_uri):
                    await self.notify_winfo(sub.pres_uri, event)
            if self.settings.fallback2db:
                await self.sync_db()

    # ------------------------------------------------------------------ timers
    async def clean(self) -> None:
        """clean_period: expired publications (watchers notified) and subscriptions (final NOTIFY)."""
        now = self.clock()
        gone_pubs = self.presentities.expire(now)
        if self.cluster is not None and self.store is not None:
            gone_pubs = await self._claim_expired(now, gone_pubs)
        elif self.store is not None and gone_pubs:
            try:
                await self.store.delete_publications(gone_pubs)
            except Exception as exc:  # noqa: BLE001 - the clean_period timer must go on
                log.error("deleting expired publications failed: %s", exc)
        seen: dict[tuple[str, str], Publication] = {}
        for pub in gone_pubs:
            seen[(pub.pres_uri, pub.event)] = pub
        for (pres_uri, name), pub in seen.items():
            event = self.events.contains_event(name)
            if event is not None:
                async with self._lock(pres_uri):
                    await self.notify_presentity(pres_uri, event, removed=pub)
                await self._announce(pres_uri, event, "")
        if self._fenced():
            return   # our subscriptions may be another node's now: it expires them
        if self._missed_while_fenced and self.cluster is not None:
            self._missed_while_fenced = False
            await self.cluster_resync(retries=1)
        for sub in self.subscriptions.expire(now):
            event = self.events.contains_event(sub.event)
            if event is None:
                continue
            await self._notify_one(sub, event, with_body=False)
            if event.type == PUBL_TYPE:
                await self.notify_winfo(sub.pres_uri, event)
        if self.store is not None and self.settings.waiting_subs_daysno >= 0:
            try:
                await self.store.delete_old_waiting(now - self.settings.waiting_subs_daysno * 86400,
                                                    (int(SubState.PENDING), int(SubState.WAITING)))
            except Exception as exc:  # noqa: BLE001 - the clean_period timer must go on
                log.error("cleaning old pending watchers failed: %s", exc)

    async def _claim_expired(self, now: float, in_memory: list[Publication]) -> list[Publication]:
        """Clustered clean_period: the expired presentity rows are deleted by exactly one node (row
        locks), which notifies its watchers and announces the change; the others hear it from the
        announcement. Returns the publications this node deleted."""
        assert self.store is not None
        held = {(p.pres_uri, p.event, p.etag): p for p in in_memory}
        try:
            rows = await self.store.claim_expired_publications(now - self.settings.expires_offset,
                                                               MAX_EXPIRED_CLAIM)
        except Exception as exc:  # noqa: BLE001 - the clean_period timer must go on
            log.error("deleting expired publications failed: %s", exc)
            return []
        gone = []
        for row in rows:
            event = self.events.contains_event(row["event"])
            pub = publication_from_row(row, event.content_type if event is not None else "")
            pub = held.get((pub.pres_uri, pub.event, pub.etag), pub)
            self.presentities.replace_presentity(
                pub.pres_uri, pub.event, [p for p in self.presentities.publications(pub.pres_uri, pub.event)
                                          if p.etag != pub.etag])
            gone.append(pub)
        return gone

    async def sync_db(self) -> None:
        """db_update_period: flush subscription changes; on failure they are kept for the next time."""
        if self.store is None:
            return
        inserts, updates, deletes = self.subscriptions.take_db_changes()
        try:
            lost = await self.store.sync_subscriptions(inserts, updates, deletes)
        except Exception as exc:  # noqa: BLE001 - changes kept for the next sync
            log.error("saving subscriptions failed (%d changes kept for the next sync): %s",
                      len(inserts) + len(updates) + len(deletes), exc)
            self.subscriptions.restore_db_changes(inserts, updates, deletes)
            return
        for sub in lost or ():
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
            self.subscriptions.load(_taken_over(sub) if self.cluster is not None else sub)

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
            if self.subscriptions.get(sub.key) is None and not self.subscriptions.deleted_since_sync(sub.key):
                self.subscriptions.load(sub)

    # ------------------------------------------------------------------ clustering (docs/cluster.md)
    async def cluster_presentity_changed(self, pres_uri: str, event_name: str) -> None:
        """Another node stored a change of (pres_uri, event): our watchers of it get the new state."""
        event = self.events.contains_event(event_name)
        if event is None or not self.subscriptions.watchers(pres_uri, event.name):
            return   # nobody here to tell (the next lookup reads the database anyway: fallback2db)
        async with self._lock(pres_uri):
            await self.notify_presentity(pres_uri, event)
        await self.sync_db()   # the NOTIFYs' CSeqs, for a node that may adopt these subscriptions

    async def cluster_adopt(self, rows: list[dict[str, Any]]) -> None:
        """A dead node's subscriptions are ours now. Choice: each live one gets a NOTIFY with the current
        state at once - its watcher may have missed changes while its owner was dead - and CSeq goes on
        from the row's local_cseq. Expired ones are ended by our next clean_period run."""
        now = self.clock()
        adopted: list[tuple[Subscription, PresenceEvent]] = []
        for row in rows:
            event = self.events.contains_event(row["event"])
            if event is None:
                log.warning("adopted subscription %s for unknown event %r ignored", row.get("callid"),
                            row["event"])
                continue
            sub = _taken_over(subscription_from_row(row))
            self.subscriptions.load(sub)
            if sub.expires_at + self.settings.expires_offset > now and sub.status is not SubState.TERMINATED:
                adopted.append((sub, event))
        for sub, event in adopted:
            async with self._lock(sub.pres_uri):
                live = self.subscriptions.get(sub.key)
                if live is not None:
                    await self._notify_one(live, event, with_body=live.status is SubState.ACTIVE
                                           or event.type == WINFO_TYPE)
        log.info("cluster: %d subscriptions adopted (%d live, notified)", len(rows), len(adopted))
        await self.sync_db()

    async def cluster_rejoin(self) -> int:
        """At start, clustered: while this node was down, changes were announced to nobody here. Its
        subscriptions (just loaded) carry no trace of the state their watchers were last sent, so -
        choice - each presentity they follow is notified once with the current state (RFC 6665 allows
        a NOTIFY at any time). Returns how many NOTIFYs were queued."""
        sent = 0
        for pres_uri, name in self.subscriptions.presentities():
            event = self.events.contains_event(name)
            if event is None or event.type != PUBL_TYPE:
                continue
            async with self._lock(pres_uri):
                sent += await self.notify_presentity(pres_uri, event)
        if sent:
            log.info("cluster: rejoined; %d watchers sent the current state", sent)
            await self.sync_db()
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
        self._missed_while_fenced = True

    async def _resync_once(self) -> bool:
        pairs = self.subscriptions.presentities()
        for key in [k for k in self._notified if k not in set(pairs)]:
            del self._notified[key]
        changed = 0
        for pres_uri, name in pairs:
            event = self.events.contains_event(name)
            if event is None or event.type != PUBL_TYPE:
                continue
            async with self._lock(pres_uri):
                before = self._notified.get((pres_uri, name))
                if before is None:
                    before = hash(self._state_body(pres_uri, event))
                try:
                    await self._fallback_publications(pres_uri, event, strict=True)
                except _BadRequest:
                    return False
                if hash(self._state_body(pres_uri, event)) != before:
                    changed += 1
                    await self.notify_presentity(pres_uri, event)
        log.info("cluster: resync: %d of %d presentities changed", changed, len(pairs))
        if changed:
            await self.sync_db()
        return True

    def _state_body(self, pres_uri: str, event: PresenceEvent) -> bytes | None:
        return presentity_body(event, pres_uri, self.presentities.publications(pres_uri, event.name),
                               notify_offline_body=self.settings.notify_offline_body,
                               cache=self.bodies)

    async def cluster_ownership_lost(self) -> None:
        """We were cut off long enough for another node to adopt our subscriptions: forget them all
        (no NOTIFY: their new owner has them) and load back only the rows still tagged with us."""
        n = self.subscriptions.forget_all()
        self._notified.clear()
        kept = 0
        if self.store is not None:
            try:
                rows = await self.store.own_subscription_rows()
            except Exception as exc:  # noqa: BLE001 - nothing reloaded; the database resync fixes it
                log.error("cluster: reloading our subscriptions failed: %s", exc)
                rows = []
            for row in rows:
                if self.events.contains_event(row["event"]) is not None:
                    self.subscriptions.load(subscription_from_row(row))
                    kept += 1
        log.warning("cluster: %d subscriptions were taken over by another node; %d kept", n, kept)

    def cluster_subscription_moved(self, key: tuple[str, str, str]) -> None:
        """Another node took this dialog over (an in-dialog request reached it): forget it, silently."""
        if self.subscriptions.forget(key) is not None:
            log.info("subscription %s moved to another node", key[0])

    # ------------------------------------------------------------------ helpers
    def _event_of(self, msg: Any) -> PresenceEvent:
        from routescript.sip import ParseError

        try:
            ev = msg.event
        except ParseError as exc:
            raise _BadRequest(400, REASON_BAD_REQUEST) from exc
        event = self.events.search_event(ev.name, ev.params) if ev is not None else None
        if event is None:
            raise _BadRequest(489, REASON_BAD_EVENT, (("Allow-Events", self.events.get_event_list()),))
        return event

    def _reply(self, ctx: Any, status: int, reason: str, headers: Any = ()) -> None:
        self.server.reply(ctx, status, reason, headers=tuple(headers))

    def _lock(self, pres_uri: str) -> Any:
        """Serialises the handling of one presentity (its PUBLISHes, SUBSCRIBEs, NOTIFY bodies)."""
        return self._locks.hold(pres_uri)


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
