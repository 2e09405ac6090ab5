"""SUBSCRIBE handling (RFC 6665): the request read (BLA presentity included) and its lengths checked, the
watcher authorized, the subscription committed (a new one or an unsubscribe stored first), the reply and
the first NOTIFY sent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from routescript.sip import ParseError, SIPRequest, name_addr_tag

from .authorization import Authorizer
from .base import REASON_BAD_REQUEST, Responder, _address, _BadRequest, _db_failure, _maybe_await
from .bla import bla_presentity, is_bla
from .column_limits import REQUEST_URI, check_subscribe
from .dispatch import UNREAD, Notifier
from .events import PUBL_TYPE, BodyError, PresenceEvent
from .limits import Refusal
from .locks import KeyedLocks
from .notify import local_contact_of
from .persistence import Persistence
from .server_api import PresenceServer
from .settings import PresenceSettings
from .storage import join_pres_uri
from .subscription import (REASON_TOO_MANY, SubEvent, SubscribeAction, SubscribeDecision, SubscribeFacts,
                           SubState, Subscription, SubsTable)

if TYPE_CHECKING:
    from routescript.script.context import MsgContext

log = logging.getLogger("routescript.presence")

# What a SUBSCRIBE changes in the database before its 2xx (a refresh waits for db_update_period).
STORED_BEFORE_REPLY = frozenset((SubscribeAction.INSERT, SubscribeAction.REMOVE))


class SubscribeHandler:
    """handle_subscribe: read, authorize (Authorizer), decide (SubsTable), commit (Persistence), reply,
    notify (Notifier)."""

    def __init__(self, server: PresenceServer, responder: Responder, settings: PresenceSettings,
                 clock: Callable[[], float], subscriptions: SubsTable, locks: KeyedLocks,
                 persistence: Persistence, authorizer: Authorizer, notifier: Notifier) -> None:
        self._server = server
        self._responder = responder
        self._settings = settings
        self._clock = clock
        self._subscriptions = subscriptions
        self._locks = locks
        self._persistence = persistence
        self._authorizer = authorizer
        self._notifier = notifier

    async def handle_subscribe(self, ctx: MsgContext, force_active: bool = False) -> int:
        """handle_subscribe([force_active]): 1 on success, -1 after an error reply."""
        msg = ctx.msg
        try:
            event = self._responder.event_of(msg)
            await self._persistence.fallback_dialog(msg)
            facts = self._subscribe_facts(ctx, event)
            initial = not facts.to_tag   # facts.initial, read once
            _check_columns(facts, initial)
            if event.evs_subs_handl is not None:
                await _maybe_await(event.evs_subs_handl(facts))
        except _BadRequest as exc:
            self._responder.reply(ctx, exc.status, exc.reason, exc.headers)
            return -1
        except BodyError as exc:
            self._responder.reply(ctx, exc.status, exc.reason)
            return -1
        if initial and facts.expires != 0:
            refusal = self._subscriptions.over_cap(facts)
            if refusal is not None:   # refused before the authorization's database work
                self._refuse_subscribe(ctx, facts, refusal)
                return -1
        async with self._locks.hold(facts.pres_uri):
            decided = await self._decide(ctx, facts, event, force_active, initial)
            if decided is None:
                return -1
            decision, rules = decided
            if self._persistence.store is None or decision.action not in STORED_BEFORE_REPLY:
                if decision.action is SubscribeAction.REFRESH and self._persistence.refresh_before_reply \
                        and not await self._store_refresh(ctx, facts, decision):
                    return -1
                await self._conclude(ctx, facts, event, decision, rules)
                return 1
        # A new dialog (nobody knows its To tag before our 200) or an unsubscribe: its row is committed
        # before the 2xx, outside the presentity's lock, so the SUBSCRIBEs of one presentity share group
        # commits (one commit each behind the lock capped a popular presentity's new watchers at the
        # disk's sync rate: 60/s measured on SQLite). The cost: max_watchers may be passed by the
        # SUBSCRIBEs being stored at that moment (at most the requests the core runs at once).
        try:
            await self._persistence.store_subscription(decision)
        except Exception as exc:  # noqa: BLE001 - the SUBSCRIBE is answered (503 or 500) whatever failed
            log.error("SUBSCRIBE %s to %s not stored: %s", facts.callid, facts.pres_uri, exc)
            err = _db_failure(exc)
            self._responder.reply(ctx, err.status, err.reason, err.headers)
            return -1
        async with self._locks.hold(facts.pres_uri):
            await self._conclude(ctx, facts, event, self._as_now(decision), rules, stored=True)
        return 1

    async def _store_refresh(self, ctx: MsgContext, facts: SubscribeFacts,
                             decision: SubscribeDecision) -> bool:
        """Workers: a refresh's row committed before its 2xx, the presentity's lock held (refreshes are
        rare - 100,000 watchers every hour is 28 a second - so they wait for their commit in turn, and
        no NOTIFY can move the dialog on meanwhile). False after the error reply (503 or 500)."""
        try:
            await self._persistence.store_subscription(decision)
        except Exception as exc:  # noqa: BLE001 - the SUBSCRIBE is answered (503 or 500) whatever failed
            log.error("SUBSCRIBE refresh %s to %s not stored: %s", facts.callid, facts.pres_uri, exc)
            err = _db_failure(exc)
            self._responder.reply(ctx, err.status, err.reason, err.headers)
            return False
        return True

    async def _decide(self, ctx: MsgContext, facts: SubscribeFacts, event: PresenceEvent,
                      force_active: bool, initial: bool) -> tuple[SubscribeDecision, Any] | None:
        """What the SUBSCRIBE does (the presentity's lock held) and the rules document its
        authorization read (UNREAD: none); None after an error reply."""
        if self._persistence.read_first and event.type == PUBL_TYPE:
            # The shared database holds the state the NOTIFY carries (fallback2db, or another worker
            # changed it): without it, 503/500.
            try:
                await self._persistence.fallback_publications(facts.pres_uri, event, strict=True)
            except _BadRequest as exc:
                self._responder.reply(ctx, exc.status, exc.reason, exc.headers)
                return None
        now = self._clock()
        status, reason, rules = SubState.ACTIVE, None, UNREAD
        if initial and event.req_auth and not force_active:
            status, reason, rules = await self._authorizer.authorize(event, facts)
        decision = self._subscriptions.handle_subscribe(
            facts, now, to_tag=self._server.to_tag(ctx.msg), initial_status=status, initial_reason=reason,
            forced=bool(force_active and event.req_auth))
        if decision.refusal is not None:
            self._refuse_subscribe(ctx, facts, decision.refusal)
            return None
        if not decision.ok:
            self._responder.reply(ctx, decision.status, decision.reason)
            return None
        return decision, rules

    def _as_now(self, d: SubscribeDecision) -> SubscribeDecision:
        """An unsubscribe decided before its row was deleted, as of now (the lock held again): a NOTIFY
        sent meanwhile moved the dialog's CSeq on, and the final NOTIFY goes above it; a dialog ended
        meanwhile (expiry, a NOTIFY answered 481) was told so already: no second final NOTIFY."""
        sub = d.subscription
        if d.action is not SubscribeAction.REMOVE or sub is None:
            return d
        live = self._subscriptions.get(sub.key)
        if live is None:
            return replace(d, notify=False, winfo_changed=False)
        if (live.local_cseq, live.version) == (sub.local_cseq, sub.version):
            return d
        return replace(d, subscription=live.moved(SubEvent.UNSUBSCRIBE, remote_cseq=sub.remote_cseq,
                                                  expires_at=sub.expires_at))

    async def _conclude(self, ctx: MsgContext, facts: SubscribeFacts, event: PresenceEvent,
                        decision: SubscribeDecision, rules: Any, *, stored: bool = False) -> None:
        """The decision applied (the presentity's lock held): the table changed, the 2xx, then the
        NOTIFY (and the watcher-info subscribers told). `rules`: the document the authorization read,
        which filters the first NOTIFY's body too (one read per SUBSCRIBE)."""
        self._subscriptions.commit(decision, stored=stored)
        self._responder.reply(ctx, decision.status, decision.reason,
                              [("Expires", str(decision.expires)), ("Contact", f"<{facts.local_contact}>")])
        sub = decision.subscription
        assert sub is not None
        if decision.notify:
            if decision.action in (SubscribeAction.INSERT, SubscribeAction.FETCH):
                await self._persistence.before_first_notify(sub.pres_uri, event)
            fetch = decision.action is SubscribeAction.FETCH
            target = facts.contact_uri if facts.contact == sub.contact else None   # parsed already
            await self._notifier.notify_one(sub, event, with_body=decision.with_body, final_with_state=fetch,
                                            reread=False, rules=rules, target=target)
        if decision.winfo_changed and event.type == PUBL_TYPE:
            full = decision.action is SubscribeAction.REMOVE
            await self._notifier.notify_winfo(sub.pres_uri, event, changed=None if full else sub)
        if self._settings.fallback2db:
            await self._persistence.sync_db()

    def _refuse_subscribe(self, ctx: MsgContext, facts: SubscribeFacts, refusal: Refusal) -> None:
        self._responder.refuse(ctx, 503, REASON_TOO_MANY, refusal,
                               f"SUBSCRIBE {facts.callid} from {_address(facts.source)} to {facts.pres_uri}")

    def _subscribe_facts(self, ctx: MsgContext, event: PresenceEvent) -> SubscribeFacts:
        live = self._dialog_of(ctx.msg)
        if live is not None:
            return self._in_dialog_facts(ctx, event, live)
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
        contact_uri = next((c.uri for c in contacts if not c.star and c.uri is not None), None)
        contact = str(contact_uri) if contact_uri is not None else None
        source = ctx.source
        sock = source.socket if source is not None else None
        lcontact = local_contact_of(self._settings.server_address, source)
        pres_uri = join_pres_uri(uri.user or "", uri.host)
        if is_bla(event) and not to.tag:
            pres_uri = self._bla_presentity(ctx)
        return SubscribeFacts(
            event=event, pres_uri=pres_uri, to_user=to.uri.user or "", to_domain=to.uri.host,
            watcher_user=frm.uri.user or "", watcher_domain=frm.uri.host, callid=msg.call_id, cseq=cseq,
            from_tag=frm.tag, to_tag=to.tag, contact=contact, expires=expires,
            event_id=ev.id if ev is not None else None, record_route=rr,
            socket_info=sock.name if sock is not None else "", local_contact=lcontact,
            user_agent=msg.header("User-Agent") or "", source=source, msg=msg, contact_uri=contact_uri)

    def _dialog_of(self, msg: SIPRequest) -> Subscription | None:
        """The live subscription an in-dialog SUBSCRIBE names by Call-ID and tags, read from the raw
        To and From values (name_addr_tag) without parsing their URIs; None for an initial one or a
        dialog the table does not hold (those get the full parse, and its 400 when malformed)."""
        to = msg.header("To")
        to_tag = name_addr_tag(to) if to is not None else ""
        if not to_tag:
            return None
        frm = msg.header("From")
        call_id = msg.header("Call-ID")
        if frm is None or call_id is None:
            return None
        return self._subscriptions.get((call_id, to_tag, name_addr_tag(frm)))

    def _in_dialog_facts(self, ctx: MsgContext, event: PresenceEvent, live: Subscription) -> SubscribeFacts:
        """The facts of a refresh or unsubscribe of `live`: the dialog's own identities (its To and From
        are the dialog's, RFC 3261 12.2.1.1), and from the request only what it may change - CSeq,
        Expires, Event id and the remote target (its Contact parsed only when it is not the stored
        one as written)."""
        msg = ctx.msg
        try:
            expires = msg.expires
            cseq = msg.cseq.number
            ev = msg.event
            contact: str | None = live.contact
            contact_uri = None
            if msg.header_all("Contact") != [f"<{live.contact}>"]:
                contact_uri = next((c.uri for c in msg.contacts if not c.star and c.uri is not None), None)
                contact = str(contact_uri) if contact_uri is not None else None
        except ParseError as exc:
            raise _BadRequest(400, REASON_BAD_REQUEST) from exc
        source = ctx.source
        sock = source.socket if source is not None else None
        return SubscribeFacts(
            event=event, pres_uri=live.pres_uri, to_user=live.to_user, to_domain=live.to_domain,
            watcher_user=live.watcher_user, watcher_domain=live.watcher_domain, callid=live.callid, cseq=cseq,
            from_tag=live.from_tag, to_tag=live.to_tag, contact=contact, expires=expires,
            event_id=ev.id if ev is not None else None, socket_info=sock.name if sock is not None else "",
            local_contact=local_contact_of(self._settings.server_address, source),
            user_agent=msg.header("User-Agent") or "", source=source, msg=msg, contact_uri=contact_uri)

    def _bla_presentity(self, ctx: MsgContext) -> str:
        """dialog;sla: Contact user @ From domain, or the bla_presentity_spec variable's URI
        (BodyError 400)."""
        spec = self._settings.bla_presentity_spec
        value = None
        if spec is not None:
            registry = self._server.registry
            pv = registry.pvars.get(spec[0]) if registry is not None else None
            if pv is not None:
                value = pv.getter(ctx, spec[1], None)
            elif spec[0] == "var":
                value = ctx.vars.get(spec[1]) if spec[1] is not None else None
            else:
                log.error("bla_presentity_spec: unknown pseudo-variable $%s", spec[0])
        return bla_presentity(ctx.msg, value, use_spec=value is not None)


def _check_columns(facts: SubscribeFacts, initial: bool) -> None:
    """_BadRequest (4xx) when a value of the SUBSCRIBE cannot be stored (column_limits)."""
    check_subscribe(facts.callid, facts.pres_uri, facts.watcher_user, facts.watcher_domain, facts.to_user,
                    facts.to_domain, facts.from_tag, facts.to_tag, facts.event_id, facts.contact,
                    presentity_from="Contact" if initial and is_bla(facts.event) else REQUEST_URI)
