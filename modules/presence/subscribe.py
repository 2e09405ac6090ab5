"""SUBSCRIBE handling (RFC 6665): the request read (BLA presentity included), the watcher
authorized, the subscription committed, the reply and the first NOTIFY sent."""

from __future__ import annotations

import logging
from typing import Any

from routescript.sip import ParseError

from .authorization import WatcherAuthorization
from .base import REASON_BAD_REQUEST, _BadRequest, _maybe_await
from .bla import bla_presentity, is_bla
from .events import PUBL_TYPE, BodyError, PresenceEvent
from .notify import local_contact_of
from .storage import join_pres_uri
from .subscription import SubscribeAction, SubscribeFacts, SubState

log = logging.getLogger("routescript.presence")


class SubscribeHandler(WatcherAuthorization):
    """handle_subscribe."""

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
        lcontact = local_contact_of(self.settings.server_address, source)
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
