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

from .etag import EtagGenerator
from .events import PUBL_TYPE, WINFO_TYPE, BodyError, EventRegistry, PresenceEvent
from .notify import build_notify, local_contact, presentity_body, watcher_body
from .presentity import PresentityTable, Publication, PublishAction, PublishDecision, PublishFacts
from .sender import NotifySender
from .storage import PresenceStore, join_pres_uri, publication_from_row, split_pres_uri, subscription_from_row
from .subscription import SubscribeAction, SubscribeFacts, Subscription, SubState, SubsTable

log = logging.getLogger("routescript.presence")

REASON_BAD_REQUEST = "Bad request"
REASON_BAD_EVENT = "Bad Event"
REASON_SERVER_ERROR = "Server Internal Error"
MAX_PRESENTITY_LOCKS = 100_000  # bound: presentities with a PUBLISH/SUBSCRIBE being handled


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


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason, self.headers = status, reason, headers


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
        self._locks: dict[str, asyncio.Lock] = {}

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
            await self._fallback_publications(facts.pres_uri, event)
            now = self.clock()
            decision = self.presentities.handle_publish(facts, now)
            if not decision.ok:
                self._reply(ctx, decision.status, decision.reason)
                return -1
            try:
                await self._store_publication(decision)
            except Exception as exc:
                log.error("PUBLISH for %s not stored: %s", facts.pres_uri, exc)
                self._reply(ctx, 500, REASON_SERVER_ERROR)
                return -1
            self.presentities.commit(decision)
            headers = [("Expires", str(decision.expires))]
            if decision.etag:
                headers.append(("SIP-ETag", decision.etag))
            self._reply(ctx, decision.status, decision.reason, headers)
            self._raise_publish_event(facts, decision)
            if decision.notify:
                removed = decision.publication if decision.action is PublishAction.REMOVE else None
                await self.notify_presentity(facts.pres_uri, event, removed=removed, skip_contact=facts.sender)
                if self.settings.fallback2db:
                    await self.sync_db()   # the NOTIFYs' CSeqs, for the other servers
        return 1

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
            now = self.clock()
            status, reason = SubState.ACTIVE, None
            if facts.initial and event.req_auth and not force_active:
                status, reason = await self._authorize(event, facts)
            decision = self.subscriptions.handle_subscribe(
                facts, now, to_tag=self.server.to_tag(msg), initial_status=status, initial_reason=reason)
            if not decision.ok:
                self._reply(ctx, decision.status, decision.reason)
                return -1
            self.subscriptions.commit(decision)
            self._reply(ctx, decision.status, decision.reason,
                        [("Expires", str(decision.expires)), ("Contact", f"<{facts.local_contact}>")])
            sub = decision.subscription
            assert sub is not None
            await self._notify_one(sub, event, with_body=decision.with_body,
                                   final_with_state=decision.action is SubscribeAction.FETCH)
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
        if to.tag:
            # In-dialog: the presentity is the one the dialog was made for.
            live = self.subscriptions.get((msg.call_id, to.tag, frm.tag or ""))
            if live is not None:
                pres_uri = live.pres_uri
        return SubscribeFacts(
            event, pres_uri, to.uri.user or "", to.uri.host, frm.uri.user or "", frm.uri.host, msg.call_id,
            cseq, frm.tag, to.tag, contact, expires, ev.id if ev is not None else None, rr,
            getattr(sock, "name", ""), lcontact, msg.header("User-Agent") or "", source)

    async def _authorize(self, event: PresenceEvent, facts: SubscribeFacts) -> tuple[SubState, str | None]:
        """The package's authorization for a new watcher (presence_xml: pres-rules)."""
        user, domain = split_pres_uri(facts.pres_uri)
        try:
            rules = await _maybe_await(event.get_rules_doc(user, domain)) if event.get_rules_doc else None
            outcome = await _maybe_await(event.get_auth_status(facts, rules)) if event.get_auth_status else None
        except Exception:
            log.exception("authorization of %s for %s failed; pending", facts.watcher_user, facts.pres_uri)
            return SubState.PENDING, None
        if outcome is None:
            return SubState.PENDING, None
        status, reason = outcome
        return SubState(status), reason

    # ------------------------------------------------------------------ NOTIFY
    async def notify_presentity(self, pres_uri: str, event: PresenceEvent, *, removed: Publication | None = None,
                                skip_contact: str | None = None) -> int:
        """Tell every watcher of (pres_uri, event) the new state; the body is built once. Returns how
        many NOTIFYs were queued. `skip_contact`: handle_publish's sender_uri (that watcher is left out)."""
        await self._fallback_watchers(pres_uri, event)
        watchers = self.subscriptions.watchers(pres_uri, event.name)
        if not watchers:
            return 0
        await self._fallback_publications(pres_uri, event)
        shared = presentity_body(event, pres_uri, self.presentities.publications(pres_uri, event.name),
                                 removed=removed, notify_offline_body=self.settings.notify_offline_body)
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

    async def notify_winfo(self, pres_uri: str, event: PresenceEvent, *, changed: Subscription | None = None) -> int:
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
                          final_with_state: bool = False, partial: Subscription | None = None) -> None:
        shared = None
        if with_body and event.type == PUBL_TYPE:
            await self._fallback_publications(sub.pres_uri, event)
            shared = presentity_body(event, sub.pres_uri, self.presentities.publications(sub.pres_uri, event.name),
                                     notify_offline_body=self.settings.notify_offline_body)
        rules = None
        if shared is not None and event.req_auth and event.apply_auth_nbody and event.get_rules_doc:
            user, domain = split_pres_uri(sub.pres_uri)
            rules = await _maybe_await(event.get_rules_doc(user, domain))
        self._queue_notify(sub, event, shared, rules, final_with_state=final_with_state,
                           winfo=with_body and event.type == WINFO_TYPE, partial=partial)

    def _queue_notify(self, sub: Subscription, event: PresenceEvent, shared: bytes | None, rules: Any, *,
                      final_with_state: bool = False, winfo: bool = False,
                      partial: Subscription | None = None) -> bool:
        now = self.clock()
        live = self.subscriptions.get(sub.key)
        current = replace(live, status=sub.status, reason=sub.reason) if live is not None else sub
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

        sip = request.to_sip()
        sock = self._socket_for(sub)
        if sock is not None:
            from routescript.transport.address import host_for_uri

            sip.add_header("Via", f"SIP/2.0/{sock.proto.upper()} {host_for_uri(sock.host)}:{sock.port};"
                                  f"branch={generate_branch()}", first=True)
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
        return Destination(proto, uri.host, port, conn_id, sock if getattr(sock, "proto", proto) == proto else None)

    async def _notify_result(self, sub: Subscription, status: int) -> None:
        """481 (dialog gone), or a timeout with end_sub_on_timeout, ends the subscription."""
        if status == 481 or (status == 408 and self.settings.end_sub_on_timeout):
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
        if self.store is not None and gone_pubs:
            try:
                await self.store.delete_publications(gone_pubs)
            except Exception as exc:
                log.error("deleting expired publications failed: %s", exc)
        seen: dict[tuple[str, str], Publication] = {}
        for pub in gone_pubs:
            seen[(pub.pres_uri, pub.event)] = pub
        for (pres_uri, name), pub in seen.items():
            event = self.events.contains_event(name)
            if event is not None:
                await self.notify_presentity(pres_uri, event, removed=pub)
        for sub in self.subscriptions.expire(now):
            event = self.events.contains_event(sub.event)
            if event is None:
                continue
            await self._notify_one(sub, event, with_body=False)
            if event.type == PUBL_TYPE:
                await self.notify_winfo(sub.pres_uri, event)

    async def sync_db(self) -> None:
        """db_update_period: flush subscription changes; on failure they are kept for the next time."""
        if self.store is None:
            return
        inserts, updates, deletes = self.subscriptions.take_db_changes()
        try:
            await self.store.sync_subscriptions(inserts, updates, deletes)
        except Exception as exc:
            log.error("saving subscriptions failed (%d changes kept for the next sync): %s",
                      len(inserts) + len(updates) + len(deletes), exc)
            self.subscriptions.restore_db_changes(inserts, updates, deletes)

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
    async def _fallback_publications(self, pres_uri: str, event: PresenceEvent) -> None:
        """fallback2db: publications another server stored for this presentity join the table
        (an etag lookup and the NOTIFY body then see them)."""
        if not (self.settings.fallback2db and self.store is not None and event.type == PUBL_TYPE):
            return
        try:
            rows = await self.store.find_publications(pres_uri, event.name,
                                                      self.clock() - self.settings.expires_offset)
        except Exception as exc:
            log.error("fallback2db: reading publications of %s failed: %s", pres_uri, exc)
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
        if not key[1] or self.subscriptions.get(key) is not None or self.subscriptions.deleted_since_sync(key):
            return
        try:
            row = await self.store.find_subscription(*key)
        except Exception as exc:
            log.error("fallback2db: reading subscription %s failed: %s", key[0], exc)
            return
        if row is not None and float(row["expires"]) + self.settings.expires_offset > self.clock():
            self.subscriptions.load(subscription_from_row(row))

    async def _fallback_watchers(self, pres_uri: str, event: PresenceEvent) -> None:
        """fallback2db: subscriptions another server made to this presentity are notified too."""
        if not (self.settings.fallback2db and self.store is not None):
            return
        try:
            rows = await self.store.find_subscriptions(pres_uri, event.name,
                                                       self.clock() - self.settings.expires_offset)
        except Exception as exc:
            log.error("fallback2db: reading watchers of %s failed: %s", pres_uri, exc)
            return
        for row in rows:
            sub = subscription_from_row(row)
            if self.subscriptions.get(sub.key) is None and not self.subscriptions.deleted_since_sync(sub.key):
                self.subscriptions.load(sub)

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

    def _lock(self, pres_uri: str) -> _PresentityLock:
        return _PresentityLock(self._locks, pres_uri)


class _PresentityLock:
    """Serialises the handling of one presentity; the lock is forgotten when nobody holds or waits."""

    def __init__(self, locks: dict[str, asyncio.Lock], key: str) -> None:
        self._locks, self._key = locks, key

    async def __aenter__(self) -> None:
        lock = self._locks.get(self._key)
        if lock is None:
            if len(self._locks) >= MAX_PRESENTITY_LOCKS:
                log.warning("%d presentities busy at once", len(self._locks))
            lock = self._locks[self._key] = asyncio.Lock()
        self._lock = lock
        await lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        if not self._lock.locked() and not getattr(self._lock, "_waiters", None):
            self._locks.pop(self._key, None)
