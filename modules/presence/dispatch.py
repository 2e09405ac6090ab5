"""The Notifier: the watchers of a presentity (and its watcher-info subscribers) told its state, each
NOTIFY built, queued (its NotifySender), routed and sent, and its answer acted on (481, 408, 513 end the
subscription)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from routescript.core import requests
from routescript.core.requests import TOO_LARGE, OutgoingRequest
from routescript.sip import SipURI

from .base import _maybe_await, _same_uri
from .clustering import ClusterLink
from .events import PUBL_TYPE, WINFO_TYPE, EventRegistry, PresenceEvent
from .locks import KeyedLocks
from .mixing import DIALOG_EVENT, PRESENCE_EVENT, dialog_presence_body
from .notify import (BodyCache, DialogPath, DialogPaths, build_notify, filters_body, presentity_body,
                     watcher_body)
from .persistence import Persistence
from .presentity import PresentityTable, Publication
from .sender import NotifySender
from .server_api import PresenceServer
from .settings import PresenceSettings
from .storage import split_pres_uri
from .subscription import SubEvent, SubState, Subscription, SubsTable

log = logging.getLogger("routescript.presence")

# Bounds on how long one change holds the loop (the rest waits in a worker thread, or for its turn):
AGGREGATE_ON_LOOP_MAX = 16   # publications aggregated on the loop; more go to a worker thread
FANOUT_SLICE = 0.002         # seconds of NOTIFY fan-out between two turns of the loop

# The final status a NOTIFY gets when its state fits no transport the watcher takes (RFC 3261 21.5.11
# 513 Message Too Large, made by the core's request sender, RFC 3261 18.1.1): the subscription ends.
NOTIFY_TOO_LARGE = TOO_LARGE


# notify_one's `rules` when the caller has not read the rules document (None is "no document").
UNREAD: Any = object()


class Notifier:
    """Watcher fan-out (notify_presentity, notify_winfo, notify_one) and the NOTIFY transactions: it owns
    the NotifySender (one ordered queue per dialog) and acts on each NOTIFY's final status."""

    def __init__(self, server: PresenceServer, events: EventRegistry, settings: PresenceSettings,
                 clock: Callable[[], float], presentities: PresentityTable, subscriptions: SubsTable,
                 bodies: BodyCache, locks: KeyedLocks, cluster: ClusterLink,
                 persistence: Persistence) -> None:
        self.server = server
        self._events = events
        self._settings = settings
        self._clock = clock
        self._presentities = presentities
        self._subscriptions = subscriptions
        self._bodies = bodies
        self._locks = locks
        self._cluster = cluster
        self._persistence = persistence
        self.sender = NotifySender(self._send_notify, self._notify_result, self._subscribed)
        self._paths = DialogPaths()   # per dialog: its NOTIFY head and hop, made once

    async def notify_presentity(self, pres_uri: str, event: PresenceEvent, *,
                                removed: Publication | None = None,
                                skip_contact: str | None = None) -> int:
        """_notify_watchers, and with mix_dialog_presence a dialog change told to the presence watchers
        too (_notify_mixed)."""
        sent = await self._notify_watchers(pres_uri, event, removed=removed, skip_contact=skip_contact)
        return sent + await self._notify_mixed(pres_uri, event)

    async def _notify_watchers(self, pres_uri: str, event: PresenceEvent, *,
                               removed: Publication | None = None,
                               skip_contact: str | None = None) -> int:
        """Tell every active watcher of (pres_uri, event) the new state; the body is built once. Returns
        how many NOTIFYs were queued. `skip_contact`: handle_publish's sender_uri (that watcher is left
        out). A pending, waiting or terminated (blocked) watcher is told nothing: it learns its state
        from the NOTIFY its SUBSCRIBE or an authorization change sends (OpenSIPS get_subs_dialog takes
        active subscriptions only; RFC 3856 6.6)."""
        if self._cluster.node is None:
            # fallback2db without clustering: every server notifies every watcher in the database
            # (OpenSIPS's way); clustered, each node notifies its own and the others are told.
            await self._persistence.fallback_watchers(pres_uri, event)
        watchers = self._subscriptions.watchers(pres_uri, event.name)
        if not watchers:
            if self._cluster.node is not None:
                self._cluster.forget_sent(pres_uri, event.name)
            return 0
        await self._persistence.fallback_publications(pres_uri, event)
        shared = await self.presentity_body(pres_uri, event, removed)
        cluster = self._cluster
        if cluster.node is not None:
            if cluster.fenced():
                cluster.held_back()
                return 0
            cluster.sent(pres_uri, event.name, hash(shared))
        # The watchers as they are now: building the body (a worker thread) let the loop run.
        watchers = self._subscriptions.watchers(pres_uri, event.name)
        rules: Any = UNREAD   # read once per change, when a watcher's body is the first filtered by it
        sent = 0
        # Once per change, and again after the loop ran (a pause): the time the NOTIFYs' expires count
        # from, and whether this node may send at all; `watchers` are the table's records until a pause.
        now = self._clock()
        slice_end = time.perf_counter() + FANOUT_SLICE
        paused = False
        for listed in watchers:
            if listed.status is not SubState.ACTIVE or \
                    (skip_contact and _same_uri(listed.contact, skip_contact)):
                continue
            if rules is UNREAD and filters_body(event, listed):
                rules = await self._rules_doc(pres_uri, event)
                paused = True   # the loop ran while the document was read
                now = self._clock()
            sub = listed
            if paused:
                if self._cluster.fenced():
                    self._held_back(listed)
                    break
                live = self._subscriptions.get(listed.key)
                if live is None or live.status is not SubState.ACTIVE:
                    continue   # ended or no longer active while the loop ran (a 481, expiry)
                sub = live
            if self._send_state(sub, event, watcher_body(event, sub, shared, rules), now):
                sent += 1
            if time.perf_counter() >= slice_end:
                # Let the loop run between slices of the fan-out: a 60 KB body to hundreds of watchers
                # is tens of milliseconds of building and sendto. The presentity's lock is still held,
                # and each dialog's NOTIFYs are numbered and queued in order as before.
                await asyncio.sleep(0)
                slice_end = time.perf_counter() + FANOUT_SLICE
                paused = True
                now = self._clock()
        return sent

    async def _notify_mixed(self, pres_uri: str, event: PresenceEvent) -> int:
        """mix_dialog_presence: a change of the presentity's dialog state is a change of its presence
        state too - its `presence` watchers are told (OpenSIPS: the publish of a dialog event sends the
        presence NOTIFYs as well). Called with the presentity's lock held, as for the dialog change."""
        if not self._settings.mix_dialog_presence or event.name != DIALOG_EVENT:
            return 0
        presence = self._events.contains_event(PRESENCE_EVENT)
        if presence is None:
            return 0
        return await self._notify_watchers(pres_uri, presence)

    async def notify_winfo(self, pres_uri: str, event: PresenceEvent, *,
                           changed: Subscription | None = None) -> int:
        """Tell the presence.winfo watchers of pres_uri: `changed` alone (partial) or the full list."""
        winfo = self._events.wipeer(event)
        if winfo is None or winfo.type != WINFO_TYPE:
            return 0
        sent = 0
        for sub in self._subscriptions.watchers(pres_uri, winfo.name):
            if sub.status is SubState.ACTIVE:
                await self.notify_one(sub, winfo, with_body=True, partial=changed)
                sent += 1
        return sent

    async def notify_one(self, sub: Subscription, event: PresenceEvent, *, with_body: bool,
                         final_with_state: bool = False, partial: Subscription | None = None,
                         reread: bool = True, rules: Any = UNREAD, target: SipURI | None = None) -> None:
        """One NOTIFY to `sub`. `rules`: the presentity's rules document when the caller has just read
        it (the authorization of a new watcher), else read here - only when it filters this body.
        `target`: `sub.contact` as the caller parsed it (a SUBSCRIBE's facts), not parsed again."""
        shared = None
        if with_body and event.type == PUBL_TYPE:
            if reread:
                await self._persistence.fallback_publications(sub.pres_uri, event)
            shared = await self.presentity_body(sub.pres_uri, event)
        if shared is None or not filters_body(event, sub):
            rules = None
        elif rules is UNREAD:
            rules = await self._rules_doc(sub.pres_uri, event)
        self._queue_notify(sub, event, shared, rules, final_with_state=final_with_state,
                           winfo=with_body and event.type == WINFO_TYPE, partial=partial, target=target)

    async def _rules_doc(self, pres_uri: str, event: PresenceEvent) -> Any:
        """The presentity's authorization document (the package's get_rules_doc: a database read)."""
        assert event.get_rules_doc is not None
        user, domain = split_pres_uri(pres_uri)
        return await _maybe_await(event.get_rules_doc(user, domain))

    async def presentity_body(self, pres_uri: str, event: PresenceEvent,
                              removed: Publication | None = None) -> bytes | None:
        """The body all watchers of the presentity share now (presentity_body). Aggregating many
        publications runs in a worker thread: 256 PIDF documents took 11 ms of the loop, 16 took
        1 ms (agg_nbody is pure, bytes in and bytes out; lxml's parser is per thread). The caller
        holds the presentity's lock, so its state cannot change meanwhile."""
        pubs, offline = self._mixed(pres_uri, event)
        if event.agg_nbody is None or len(pubs) <= AGGREGATE_ON_LOOP_MAX or \
                (removed is None and self._bodies.holds(event, pres_uri, pubs, notify_offline_body=offline)):
            return presentity_body(event, pres_uri, pubs, removed=removed, notify_offline_body=offline,
                                   cache=self._bodies)
        body = await asyncio.to_thread(presentity_body, event, pres_uri, pubs, removed=removed,
                                       notify_offline_body=offline)
        if removed is None:
            self._bodies.keep(event, pres_uri, pubs, body, notify_offline_body=offline)
        return body

    def state_body(self, pres_uri: str, event: PresenceEvent) -> bytes | None:
        """The body the watchers of (pres_uri, event) would be sent now (from the cache when it holds
        it): a cluster resync compares its hash with the one last sent."""
        pubs, offline = self._mixed(pres_uri, event)
        return presentity_body(event, pres_uri, pubs, notify_offline_body=offline, cache=self._bodies)

    def _mixed(self, pres_uri: str, event: PresenceEvent) -> tuple[list[Publication], bool]:
        """The publications a body is built from, and whether an offline body stands in for none.
        mix_dialog_presence (mixing.py) adds to a `presence` body the PIDF made from the presentity's
        live dialog publications, as the newest publication (so its note and person aggregate last), and
        sends the offline body when there is nothing at all, as OpenSIPS does."""
        pubs = self._presentities.publications(pres_uri, event.name)
        offline = self._settings.notify_offline_body
        if not self._settings.mix_dialog_presence or event.name != PRESENCE_EVENT:
            return pubs, offline
        dialogs = self._presentities.publications(pres_uri, DIALOG_EVENT)
        mixed = dialog_presence_body(pres_uri, [p.body for p in dialogs]) if dialogs else None
        if mixed is None:
            return pubs, True
        newest = max((p.received_time for p in (*pubs, *dialogs)), default=0.0)
        extra = Publication(pres_uri, PRESENCE_EVENT, "", float("inf"), mixed, event.content_type, newest + 1)
        return [*pubs, extra], True

    def forget_body(self, pres_uri: str, event: str) -> None:
        """The presentity's last publication for `event` is gone: its body is never asked for again
        (memory only)."""
        self._bodies.discard(pres_uri, event)

    def _queue_notify(self, sub: Subscription, event: PresenceEvent, shared: bytes | None, rules: Any, *,
                      final_with_state: bool = False, winfo: bool = False,
                      partial: Subscription | None = None, target: SipURI | None = None) -> bool:
        if self._cluster.fenced():
            self._held_back(sub)
            return False
        live = self._subscriptions.get(sub.key)
        if live is None or (live.status is sub.status and live.reason == sub.reason):
            current = live or sub
        else:
            current = live.evolve(status=sub.status, reason=sub.reason)
        body: bytes | None
        if winfo and event.winfo_body is not None and (current.status is SubState.ACTIVE or final_with_state):
            peer = self._events.wipeer(event)
            watchers = [partial] if partial is not None else \
                (self._subscriptions.watchers(sub.pres_uri, peer.name) if peer is not None else [])
            body = event.winfo_body(sub.pres_uri, watchers, current.version, "partial" if partial else "full")
        else:
            body = watcher_body(event, current, shared, rules, final_with_state=final_with_state)
        return self._send_state(current, event, body, self._clock(), target)

    def _send_state(self, current: Subscription, event: PresenceEvent, body: bytes | None, now: float,
                    target: SipURI | None = None) -> bool:
        """The NOTIFY telling `current` (the dialog's record as it stands, with the state to say) `body`:
        numbered, built on the dialog's kept head and queued for its dialog."""
        after = self._subscriptions.record_notify(current)
        path = self._paths.entry(after, target)
        request = build_notify(after, now, body=body, content_type=event.content_type, head=path.head)
        return self.sender.enqueue(after, (request, path))

    def _held_back(self, sub: Subscription) -> None:
        self._cluster.held_back()
        log.warning("NOTIFY to %s for %s held back: this node is cut off from the cluster", sub.callid,
                    sub.pres_uri)

    def _subscribed(self, sub: Subscription) -> bool:
        """Whether the NOTIFYs queued for `sub` still have a subscription to go with (NotifySender)."""
        return self._subscriptions.get(sub.key) is not None

    def _notify_result(self, sub: Subscription, status: int) -> Awaitable[None] | None:
        """481 (dialog gone), a timeout with end_sub_on_timeout, or a NOTIFY too large for any
        transport the watcher takes (513) ends the subscription (the returned awaitable; None -
        nothing to wait for - in the usual case)."""
        if not (status in (481, NOTIFY_TOO_LARGE) or (status == 408 and self._settings.end_sub_on_timeout)):
            return None
        return self._end_after_notify(sub, status)

    async def _end_after_notify(self, sub: Subscription, status: int) -> None:
        gone = self._subscriptions.delete(sub.key)
        if gone is not None:
            event = self._events.contains_event(sub.event)
            if status == NOTIFY_TOO_LARGE:
                log.warning("subscription %s to %s ended: its state does not fit in a NOTIFY the watcher "
                            "can receive; told terminated;reason=probation", sub.callid, sub.pres_uri)
                if event is not None:   # the last NOTIFY, without a body: small enough for any transport
                    await self.notify_one(gone.moved(SubEvent.NOTIFY_TOO_LARGE), event, with_body=False)
            else:
                log.info("subscription %s to %s ended: NOTIFY answered %d", sub.callid, sub.pres_uri, status)
            # a watcher went away: the presentity's watcher-info subscribers get the full list
            if event is not None and event.type == PUBL_TYPE:
                async with self._locks.hold(sub.pres_uri):
                    await self.notify_winfo(sub.pres_uri, event)
            if self._settings.fallback2db:
                await self._persistence.sync_db()

    def _send_notify(self, sub: Subscription, queued: tuple[OutgoingRequest, DialogPath],
                     done: Callable[[int], None]) -> None:
        """Start one NOTIFY's client transaction through the core's request sender, which writes the Via,
        finds where it goes (the SUBSCRIBE's transport and TCP connection, the route set: worked out for
        the dialog's first NOTIFY and kept with its head, DialogPaths) and moves a NOTIFY too large for
        UDP to TCP (RFC 3261 18.1.1); `done(final status)` is called back once. 513 - it fits no
        transport the watcher takes - ends the subscription (`_notify_result`)."""
        request, path = queued
        sender = self.server.requests
        assert sender is not None, "a NOTIFY before the server started"
        hop = path.hop
        if hop is None:
            hop = path.hop = sender.hop_in_dialog(request, source=sub.source, socket=sub.socket_info,
                                                  ruri=path.target)
        if sub.status is SubState.TERMINATED:
            self._paths.forget(sub)   # the dialog's last NOTIFY
        sender.send_by(request, hop, lambda response: done(response.status))

    def forget_destinations(self) -> None:
        """clean_period: where the NOTIFYs of watchers now gone went is forgotten - the dialogs' kept
        heads and hops, and the core request sender's destinations (bounded; a live dialog costs one
        parse of its target on its next NOTIFY)."""
        self._paths.clear()
        requests.forget_destinations()
