"""PUBLISH handling (RFC 3903): the request read, the publication stored and committed, the
reply with SIP-ETag, E_PRESENCE_PUBLISH raised, and the watchers notified."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from routescript.sip import ParseError, parse_uri

from .authorization import Authorizer
from .base import REASON_BAD_REQUEST, Responder, _address, _BadRequest, _db_failure
from .clustering import ClusterLink
from .column_limits import check_publish
from .dispatch import Notifier
from .events import PresenceEvent
from .limits import CAP_RETRY_AFTER
from .locks import KeyedLocks
from .notify import local_contact_of
from .persistence import Persistence
from .presentity import PresentityTable, PublishAction, PublishDecision, PublishFacts
from .server_api import PresenceServer
from .settings import PresenceSettings
from .storage import Address, join_pres_uri

if TYPE_CHECKING:
    from routescript.script.context import MsgContext

log = logging.getLogger("routescript.presence")

# How a read PUBLISH is answered: (status, reason, headers) - a SIP reply, or publish_local's result.
Respond = Callable[[int, str, list[tuple[str, str]]], None]


@dataclass(frozen=True, slots=True)
class LocalPublishResult:
    """What the reply to an in-process PUBLISH (publish_local) would have carried."""

    status: int
    reason: str
    etag: str | None = None       # SIP-ETag of a 2xx
    expires: int | None = None    # Expires of a 2xx (granted)
    retry_after: int | None = None


class PublishHandler:
    """handle_publish: read, decide (PresentityTable), commit (Persistence), reply, notify (Notifier)."""

    def __init__(self, server: PresenceServer, responder: Responder, settings: PresenceSettings,
                 clock: Callable[[], float], presentities: PresentityTable, locks: KeyedLocks,
                 persistence: Persistence, authorizer: Authorizer, notifier: Notifier,
                 cluster: ClusterLink) -> None:
        self._server = server
        self._responder = responder
        self._settings = settings
        self._clock = clock
        self._presentities = presentities
        self._locks = locks
        self._persistence = persistence
        self._authorizer = authorizer
        self._notifier = notifier
        self._cluster = cluster

    async def handle_publish(self, ctx: MsgContext, sender_uri: str | None = None) -> int:
        """handle_publish([sender_uri]): 1 on success, -1 after an error reply."""
        msg = ctx.msg
        try:
            event = self._responder.event_of(msg)
            facts, address = self._publish_facts(msg, event, sender_uri)
        except _BadRequest as exc:
            self._responder.reply(ctx, exc.status, exc.reason, exc.headers)
            return -1

        def respond(status: int, reason: str, headers: list[tuple[str, str]]) -> None:
            if status < 300 and self._settings.server_address:
                # The presence documentation: server_address is the Contact of "200OK replies to Subscribe
                # and Publish". (OpenSIPS 3.4 itself sends none on PUBLISH; unset, neither do we.)
                contact = local_contact_of(self._settings.server_address, ctx.source)
                headers = [*headers, ("Contact", f"<{contact}>")]
            self._responder.reply(ctx, status, reason, headers)

        source = _address(ctx.source)
        what = f"PUBLISH {msg.call_id} from {source} for {facts.pres_uri}"
        return await self.publish(facts, address, respond, what, source,
                                  label=f"PUBLISH {msg.call_id} for {facts.pres_uri}")

    async def publish_local(self, pres_uri: str, event_name: str, body: bytes | None, *,
                            etag: str | None = None, expires: int | None = None,
                            content_type: str | None = None, sender: str | None = None) -> LocalPublishResult:
        """A PUBLISH made inside this server (the pua module): the same decision, storage, event and
        NOTIFYs as a PUBLISH request for `pres_uri`, without a network round trip. Returns what the
        200/4xx reply would have said (status, reason, SIP-ETag, Expires). `pres_uri` is any SIP URI
        (port and parameters dropped, as a Request-URI's); `event_name` a registered package name;
        `sender` the URI handle_publish(sender_uri) would name (pua_bla's Sender): its watcher is skipped."""
        event = self._responder.search_event(event_name)
        if event is None:
            return LocalPublishResult(489, "Bad Event")
        try:
            uri = parse_uri(pres_uri.strip())
        except ParseError:
            return LocalPublishResult(400, REASON_BAD_REQUEST)
        user, domain = uri.user or "", uri.host
        facts = PublishFacts(pres_uri=join_pres_uri(user, domain), event=event, if_match=etag or None,
                             expires=expires, body=body or None,
                             content_type=content_type or event.content_type, sender=sender or None)
        outcome: list[LocalPublishResult] = []

        def respond(status: int, reason: str, headers: list[tuple[str, str]]) -> None:
            fields = dict(headers)
            exp, retry = fields.get("Expires"), fields.get("Retry-After")
            outcome.append(LocalPublishResult(status, reason, fields.get("SIP-ETag"),
                                              int(exp) if exp is not None else None,
                                              int(retry) if retry is not None else None))

        await self.publish(facts, (user, domain), respond, f"local PUBLISH for {facts.pres_uri}", "local")
        return outcome[0] if outcome else LocalPublishResult(500, "Server Internal Error")

    async def publish(self, facts: PublishFacts, address: Address, respond: Respond, what: str,
                      source: str, *, label: str | None = None) -> int:
        """A read PUBLISH from the request or from publish_local: decide, store, commit, answer through
        `respond` (before any NOTIFY, as a request's 200 OK), raise the event, notify. 1 or -1.
        `what` names the request in a cap's log line, `label` (default `what`) in a refusal's, `source`
        its sender (the key of the rate-limited lines)."""
        event = facts.event
        async with self._locks.hold(facts.pres_uri):
            try:
                await self._persistence.before_publish(facts, event)
            except _BadRequest as exc:
                respond(exc.status, exc.reason, list(exc.headers))
                return -1
            sphere_before = self._authorizer.sphere_if_checked(facts.pres_uri, event)
            now = self._clock()
            decision = self._presentities.handle_publish(facts, now)
            if decision.refusal is not None:
                self._responder.refused(decision.refusal, what)
                respond(decision.status, decision.reason, [("Retry-After", str(CAP_RETRY_AFTER))])
                return -1
            if not decision.ok:
                self._refuse_publish(respond, label or what, source, facts, decision)
                return -1
            on_commit = None
            announced: list[bool] = []
            begun = 0.0
            if decision.notify and self._cluster.node is not None:
                # clustered: announced at the commit; `begun`: when its transaction began at the latest
                begun = time.monotonic()

                def on_commit() -> None:
                    announced.append(self._cluster.announce_at_commit(
                        facts.pres_uri, event, decision.etag or "", facts.sender, decision, begun))
            try:
                await self._persistence.store_publication(decision, address, on_commit)
            except Exception as exc:  # noqa: BLE001 - the PUBLISH is answered (503 or 500) whatever failed
                log.error("PUBLISH for %s not stored: %s", facts.pres_uri, exc)
                err = _db_failure(exc)
                respond(err.status, err.reason, list(err.headers))
                return -1
            self._presentities.commit(decision)
            if on_commit is not None and announced != [True]:
                # stored and committed, not announced at the commit (PostgreSQL's feed, no store): the
                # other nodes may read it now (their watchers, their NOTIFYs)
                await self._cluster.announce(facts.pres_uri, event, decision.etag or "", facts.sender,
                                             decision, begun)
            headers = [("Expires", str(decision.expires))]
            if decision.etag:
                headers.append(("SIP-ETag", decision.etag))
            respond(decision.status, decision.reason, headers)
            self._raise_publish_event(facts, address, decision)
            if decision.notify and sphere_before != self._authorizer.sphere_if_checked(facts.pres_uri, event):
                # enable_sphere_check: the rules with sphere conditions may judge the watchers differently
                await self._authorizer.update_watchers(facts.pres_uri, event, None, quiet=True)
            if decision.notify:
                removed = decision.publication if decision.action is PublishAction.REMOVE else None
                await self._notifier.notify_presentity(facts.pres_uri, event, removed=removed,
                                                       skip_contact=facts.sender)
                if self._settings.fallback2db:
                    await self._persistence.sync_db()   # the NOTIFYs' CSeqs, for the other servers
        return 1

    def _refuse_publish(self, respond: Respond, what: str, source: str, facts: PublishFacts,
                        decision: PublishDecision) -> None:
        headers = []
        if decision.retry_after is not None:
            headers.append(("Retry-After", str(decision.retry_after)))
        if decision.detail:   # at most one line a minute per source address: no log flood
            self._responder.warn(("publish", source),
                                 "%s (%s) refused %d: %s", what, facts.event.name, decision.status,
                                 decision.detail)
        respond(decision.status, decision.reason, headers)

    def _publish_facts(self, msg: Any, event: PresenceEvent,
                       sender_uri: str | None) -> tuple[PublishFacts, Address]:
        """The facts of a PUBLISH and its presentity's (user, domain), read once from the Request-URI."""
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
        user, domain = uri.user or "", uri.host
        check_publish(msg, user, domain, sender)
        facts = PublishFacts(pres_uri=join_pres_uri(user, domain), event=event,
                             if_match=msg.header("SIP-If-Match"), expires=expires, body=msg.body or None,
                             content_type=ctype.mime if ctype is not None else None, sender=sender)
        return facts, (user, domain)

    def _raise_publish_event(self, facts: PublishFacts, address: Address, d: PublishDecision) -> None:
        bus = self._server.events
        if bus is None or not bus.wanted("E_PRESENCE_PUBLISH"):
            return
        user, domain = address
        body = d.publication.body if d.publication is not None else (facts.body or b"")
        try:
            bus.raise_event_nowait("E_PRESENCE_PUBLISH", {
                "user": user, "domain": domain, "event": facts.event.name, "expires": d.expires,
                "etag": d.etag, "old_etag": d.old_etag or "", "body": body.decode("utf-8", "replace")})
        except RuntimeError:  # no running loop (never in the server)
            pass

