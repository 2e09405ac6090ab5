"""NOTIFY dispatch: the watchers of a presentity (and its watcher-info subscribers) told its state,
each NOTIFY built, routed and sent, and its answer acted on; the cluster told of a stored change."""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from collections.abc import Awaitable, Callable
from typing import Any

from routescript.sip import generate_branch
from routescript.transport.address import host_for_uri

from .base import _maybe_await, _same_uri
from .events import PUBL_TYPE, WINFO_TYPE, PresenceEvent
from .notify import build_notify, presentity_body, watcher_body
from .persistence import Persistence
from .presentity import Publication
from .storage import split_pres_uri
from .subscription import SubState, Subscription

log = logging.getLogger("routescript.presence")


class NotifyDispatch(Persistence):
    """Watcher fan-out (notify_presentity, notify_winfo) and the NOTIFY transactions."""

    async def _announce(self, pres_uri: str, event: PresenceEvent, etag: str) -> None:
        """Clustered: tell the other nodes, whose watchers of pres_uri then hear from their owner. The
        change is stored already; a failure here is logged (the other nodes catch up at their resync)."""
        if self.cluster is None:
            return
        try:
            await self.cluster.announce(pres_uri, event.name, etag)
        except Exception as exc:  # noqa: BLE001 - stored already; other nodes catch up at resync
            log.error("cluster: announcing the change of %s (%s) failed: %s", pres_uri, event.name, exc)

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

    def _send_notify(self, sub: Subscription, request: Any, done: Callable[[int], None]) -> None:
        """Start one NOTIFY's client transaction; `done(final status)` is called back once."""
        sock = self._socket_for(sub)
        via = branch = None
        if sock is not None:
            # Built in, first, rather than added to the built request (which re-indexes its headers).
            branch = generate_branch()
            via = f"SIP/2.0/{sock.proto.upper()} {host_for_uri(sock.host)}:{sock.port};branch={branch}"
        sip = request.to_sip(via)
        dest = self._destination_for(sub, request, sock)
        self.server.transactions.send_request(sip, dest, lambda response: done(int(response.status)),
                                              branch=branch)

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
        routes = [v for n, v in request.headers if n == "Route"]
        target = routes[0].strip().lstrip("<").split(">")[0] if routes else request.ruri
        source = sub.source
        # The transport the SUBSCRIBE came over, unless the target names one: a watcher that subscribed
        # over TCP without ";transport=tcp" in its Contact (SIPp, many phones) listens on TCP only.
        came_over = (getattr(source, "proto", "") or sub.socket_info.partition(":")[0] or "udp").lower()
        source_proto = str(getattr(source, "proto", "")).lower() if source is not None else ""
        conn_id = getattr(source, "conn_id", None) if source is not None else None
        return _destination(target, came_over, source_proto, conn_id, sock)

    def _subscribed(self, sub: Subscription) -> bool:
        """Whether the NOTIFYs queued for `sub` still have a subscription to go with (NotifySender)."""
        return self.subscriptions.get(sub.key) is not None

    def _notify_result(self, sub: Subscription, status: int) -> Awaitable[None] | None:
        """481 (dialog gone), or a timeout with end_sub_on_timeout, ends the subscription (the
        returned awaitable; None - nothing to wait for - in the usual case)."""
        if not (status == 481 or (status == 408 and self.settings.end_sub_on_timeout)):
            return None
        return self._end_after_notify(sub, status)

    async def _end_after_notify(self, sub: Subscription, status: int) -> None:
        if self.subscriptions.delete(sub.key) is not None:
            log.info("subscription %s to %s ended: NOTIFY answered %d", sub.callid, sub.pres_uri, status)
            # a watcher went away: the presentity's watcher-info subscribers get the full list
            event = self.events.contains_event(sub.event)
            if event is not None and event.type == PUBL_TYPE:
                async with self._lock(sub.pres_uri):
                    await self.notify_winfo(sub.pres_uri, event)
            if self.settings.fallback2db:
                await self.sync_db()


def forget_destinations() -> None:
    """Empty the cache of NOTIFY destinations (clean_period: the watchers that have gone leave it; the
    live ones cost one parse of their target each on their next NOTIFY)."""
    _destination.cache_clear()


@functools.lru_cache(maxsize=4096)
def _destination(target: str, came_over: str, source_proto: str, conn_id: int | None, sock: Any) -> Any:
    """Where a NOTIFY to `target` goes: the same few answers for every NOTIFY of a dialog, so they are
    kept (parsing the target URI per NOTIFY was a twentieth of a fan-out). Raises ParseError for a
    target that is no URI (not cached)."""
    from routescript.sip import parse_uri
    from routescript.transport.address import Destination

    uri = parse_uri(target)
    proto = (uri.param("transport") or ("tls" if uri.scheme == "sips" else came_over)).lower()
    port = uri.port or (5061 if proto == "tls" else 5060)
    conn = conn_id if source_proto == proto and proto != "udp" else None
    return Destination(proto, uri.host, port, conn, sock if getattr(sock, "proto", proto) == proto else None)
