"""Building NOTIFY requests and their bodies (RFC 6665 section 4.2.2, RFC 3856 section 6.7).

Everything here is pure: the caller takes the CSeq (`SubsTable.record_notify`), describes the request
with `build_notify` (a routescript.core.requests.OutgoingRequest), and hands it to the core's request
sender (`server.requests.send_in_dialog`), which adds Via and Content-Length, finds where it goes and
runs its client transaction. Header order follows what OpenSIPS 3.4 sends (captures 02, 03, 19): To,
From, CSeq, Call-ID, Max-Forwards, Route, Event, Contact, Subscription-State, Content-Type.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from routescript.core.requests import Hop, OutgoingRequest, dialog_route
from routescript.sip import SipURI, Source

from .events import PresenceEvent
from .presentity import Publication
from .subscription import DialogKey, SubState, Subscription


# Publication fields read per publication when bodies are aggregated or compared: in C, no Python call each.
_RECEIVED = attrgetter("received_time")
_BODY = attrgetter("body")

# A NOTIFY ready to send: Request-URI, header lines in order, body (the core's request description).
NotifyRequest = OutgoingRequest


def subscription_state(sub: Subscription, now: float) -> str:
    """The Subscription-State value (RFC 6665 8.2.3):
        Subscription-State = "Subscription-State" HCOLON substate-value *( SEMI subexp-params )
        substate-value     = "active" / "pending" / "terminated" / extension-substate
        subexp-params      = ("reason" EQUAL event-reason-value) / ("expires" EQUAL delta-seconds) / ...
    `expires` counts down to the expiry granted to the watcher.
    """
    if sub.status is SubState.TERMINATED:
        return f"terminated;reason={sub.reason or 'timeout'}"
    # Choice: OpenSIPS's internal "waiting" state is not a substate on the wire; it is "pending".
    state = "active" if sub.status is SubState.ACTIVE else "pending"
    return f"{state};expires={sub.remaining(now)}"


@functools.lru_cache(maxsize=256)
def local_contact(server_address: str, proto: str, host: str, port: int) -> str:
    """Our Contact URI: server_address, or the socket the SUBSCRIBE came in on; `;transport=` for
    anything but UDP (OpenSIPS send_2XX_reply does the same, capture 19)."""
    if server_address:
        uri = server_address
    else:
        hostpart = f"[{host}]" if ":" in host and not host.startswith("[") else host
        uri = f"sip:{hostpart}:{port}"
    proto = proto.lower()
    if proto != "udp" and ";transport=" not in uri.lower():
        uri += f";transport={proto}"
    return uri


def local_contact_of(server_address: str, source: Source | None) -> str:
    """local_contact for a request that came from transport `source` (its receiving socket); the few
    answers (one per socket) are cached, as this runs for every PUBLISH and SUBSCRIBE."""
    if source is None:
        return local_contact(server_address, "udp", "127.0.0.1", 5060)
    sock = source.socket
    return local_contact(server_address, source.proto or "udp", sock.host, sock.port)


def event_header(sub: Subscription) -> str:
    return f"{sub.event};id={sub.event_id}" if sub.event_id else sub.event


def route_set(sub: Subscription) -> tuple[str, list[str]]:
    """(Request-URI, Route values) per RFC 3261 12.2.1.1 (routescript.core.requests.dialog_route): the
    remote target is the watcher's Contact; the route set is the SUBSCRIBE's Record-Route in order. A
    strict first route (no ;lr) becomes the Request-URI and the remote target goes last."""
    return dialog_route(sub.contact, sub.record_route)


Header = tuple[str, str]


@dataclass(frozen=True, slots=True)
class NotifyHead:
    """What every NOTIFY of a dialog repeats, in OpenSIPS's order around the two lines that change:
    Request-URI; To, From; [CSeq]; Call-ID, Max-Forwards, Route..., Event, Contact; [Subscription-State]."""

    ruri: str
    before_cseq: tuple[Header, ...]
    after_cseq: tuple[Header, ...]


def notify_head(sub: Subscription, max_forwards: int = 70) -> NotifyHead:
    """The constant part of `sub`'s NOTIFYs (DialogPaths keeps it while the dialog's state behind it -
    `dialog_basis` - stays the same)."""
    ruri, routes = route_set(sub)
    return NotifyHead(
        ruri,
        (("To", f"<{sub.watcher_uri}>;tag={sub.from_tag}"), ("From", f"<{sub.pres_uri}>;tag={sub.to_tag}")),
        (("Call-ID", sub.callid), ("Max-Forwards", str(max_forwards)), *[("Route", r) for r in routes],
         ("Event", event_header(sub)), ("Contact", f"<{sub.local_contact}>")))


def build_notify(sub: Subscription, now: float, *, body: bytes | None = None,
                 content_type: str | None = None, extra_headers: Sequence[tuple[str, str]] = (),
                 max_forwards: int = 70, head: NotifyHead | None = None) -> OutgoingRequest:
    """The NOTIFY for `sub` as it is now; `sub.local_cseq` is its CSeq (take it with
    SubsTable.record_notify first). Content-Type and body only when there is a body. `head`: the
    dialog's notify_head kept from an earlier NOTIFY (DialogPaths), else built here."""
    if head is None:
        head = notify_head(sub, max_forwards)
    headers = (*head.before_cseq, ("CSeq", f"{sub.local_cseq} NOTIFY"), *head.after_cseq,
               ("Subscription-State", subscription_state(sub, now)), *extra_headers)
    if body:
        headers += (("Content-Type", content_type or "text/plain"),)
    return OutgoingRequest("NOTIFY", head.ruri, headers, body or b"")


# What a dialog's NOTIFY head and hop are made from besides its key (Call-ID and tags): a refresh that
# moves the remote target or comes from another transport source changes it.
DialogBasis = tuple[Any, ...]


def dialog_basis(sub: Subscription) -> DialogBasis:
    return (sub.contact, sub.record_route, sub.pres_uri, sub.watcher_user, sub.watcher_domain, sub.event,
            sub.event_id, sub.local_contact, sub.source, sub.socket_info)


MAX_DIALOG_PATHS = 8192   # bound: dialogs whose NOTIFY head and hop are kept (emptied when full)


class DialogPaths:
    """Per subscription dialog, its NOTIFY head and where its NOTIFYs go (the core's Hop), made once
    for the dialog as it stands and reused for each NOTIFY - a fan-out builds none of it again per
    change. An entry is used only while `dialog_basis` of the subscription is what it was made from,
    so a refresh with a new Contact or transport source is followed at once. Entries leave with the
    dialog's final NOTIFY, at clean_period (`clear`), or all at once when the bound is reached."""

    def __init__(self, max_entries: int = MAX_DIALOG_PATHS) -> None:
        self.max_entries = max_entries
        self._entries: dict[DialogKey, DialogPath] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, sub: Subscription, target: SipURI | None = None) -> DialogPath:
        """The dialog's entry as `sub` stands (made, or made again, when its basis changed). `target`:
        `sub.contact` parsed, when the caller has it (its hop is then found without parsing it)."""
        basis = dialog_basis(sub)
        path = self._entries.get(sub.key)
        if path is None or path.basis != basis:
            if path is None and len(self._entries) >= self.max_entries:
                self._entries = {}
            path = self._entries[sub.key] = DialogPath(basis, notify_head(sub), target)
        return path

    def forget(self, sub: Subscription) -> None:
        """The dialog's last NOTIFY has gone: its entry is not needed again."""
        self._entries.pop(sub.key, None)

    def clear(self) -> None:
        self._entries = {}


class DialogPath:
    """One dialog's kept NOTIFY head and, once its first NOTIFY was sent, its hop (found from `target`,
    the remote target already parsed, when the entry was made with it)."""

    __slots__ = ("basis", "head", "hop", "target")

    def __init__(self, basis: DialogBasis, head: NotifyHead, target: SipURI | None = None) -> None:
        self.basis, self.head, self.target = basis, head, target
        self.hop: Hop | None = None


class BodyCache:
    """The shared body of each presentity, remembered with exactly what it was built from.

    An entry is (event, publication bodies oldest first, notify_offline_body) -> body. It is used only
    when all three are the same as now, so it can never be stale: a PUBLISH that modifies, refreshes
    with a new body, expires or removes a publication changes the key, and the body is built again.
    That is the invalidation on every commit/expiry/removal, without depending on every path calling
    a hook. Comparing the key is cheap: the bodies are the publications' own bytes objects (identity
    compares first). One entry per (presentity, event); bound: `max_entries`, least recently used out.
    """

    def __init__(self, max_entries: int = 2048) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[PresenceEvent, tuple[bytes, ...], bool,
                                                          bytes | None]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def body(self, event: PresenceEvent, pres_uri: str, publications: Sequence[Publication], *,
             notify_offline_body: bool = False) -> bytes | None:
        """presentity_body(event, pres_uri, publications) (no `removed`), built once per state."""
        pubs = sorted(publications, key=_RECEIVED)
        bodies = tuple(map(_BODY, pubs))
        slot = (pres_uri, event.name)
        entry = self._entries.get(slot)
        if entry is not None and entry[0] is event and entry[2] is notify_offline_body \
                and entry[1] == bodies:
            self.hits += 1
            self._entries.move_to_end(slot)
            return entry[3]
        self.misses += 1
        result = _build_body(event, pres_uri, pubs, None, notify_offline_body)
        self._keep(slot, (event, bodies, notify_offline_body, result))
        return result

    def holds(self, event: PresenceEvent, pres_uri: str, publications: Sequence[Publication], *,
              notify_offline_body: bool = False) -> bool:
        """True when `body` would answer from the cache (nothing to build)."""
        entry = self._entries.get((pres_uri, event.name))
        return entry is not None and entry[0] is event and entry[2] is notify_offline_body \
            and entry[1] == tuple(map(_BODY, sorted(publications, key=_RECEIVED)))

    def keep(self, event: PresenceEvent, pres_uri: str, publications: Sequence[Publication],
             body: bytes | None, *, notify_offline_body: bool = False) -> None:
        """Remember `body`, built elsewhere (in a worker thread) from exactly these publications."""
        self.misses += 1
        bodies = tuple(map(_BODY, sorted(publications, key=_RECEIVED)))
        self._keep((pres_uri, event.name), (event, bodies, notify_offline_body, body))

    def _keep(self, slot: tuple[str, str],
              entry: tuple[PresenceEvent, tuple[bytes, ...], bool, bytes | None]) -> None:
        self._entries[slot] = entry
        self._entries.move_to_end(slot)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, pres_uri: str, event: str) -> None:
        """Forget the presentity's entry (memory only: a kept entry is never used once stale)."""
        self._entries.pop((pres_uri, event), None)
        if not self._entries:
            self._entries = OrderedDict()   # an emptied dict keeps its slots: give them back

    def clear(self) -> None:
        self._entries.clear()


def presentity_body(event: PresenceEvent, pres_uri: str, publications: Sequence[Publication], *,
                    removed: Publication | None = None, notify_offline_body: bool = False,
                    cache: BodyCache | None = None) -> bytes | None:
    """The body every watcher of a presentity shares after a change (built once per change).

    Several publications are merged by the package's agg_nbody; without one the newest wins
    (OpenSIPS). A publication being removed is passed to agg_nbody at `off_index` so it can be shown
    closed in the same document. Nothing published: the package's empty document when it has one
    and either needs a body (dialog) or notify_offline_body is set; else no body.
    `cache`: reuse the body built for the same publications (a removal's one-off body is not cached).
    """
    if cache is not None and removed is None:
        return cache.body(event, pres_uri, publications, notify_offline_body=notify_offline_body)
    pubs = sorted(publications, key=_RECEIVED)
    return _build_body(event, pres_uri, pubs, removed, notify_offline_body)


def _build_body(event: PresenceEvent, pres_uri: str, pubs: Sequence[Publication], removed: Publication | None,
                notify_offline_body: bool) -> bytes | None:
    if event.agg_nbody is not None:
        bodies = [p.body for p in pubs]
        off_index = None
        if removed is not None:
            bodies.append(removed.body)
            off_index = len(bodies) - 1
        if bodies:
            return bytes(event.agg_nbody(pres_uri, bodies, off_index))
    elif pubs:
        return pubs[-1].body
    if event.build_empty_pres_info is not None and (event.mandatory_body or notify_offline_body):
        return bytes(event.build_empty_pres_info(pres_uri))
    return None


def filters_body(event: PresenceEvent, sub: Subscription) -> bool:
    """Whether the package's rules rewrite the body `sub` is sent (watcher_body): the rules document
    is read only then. A handle_subscribe("1") watcher's body is not filtered by them."""
    return event.req_auth and event.apply_auth_nbody is not None and event.get_rules_doc is not None \
        and not sub.forced


def watcher_body(event: PresenceEvent, sub: Subscription, shared: bytes | None, rules_doc: Any = None,
                 *, final_with_state: bool = False) -> bytes | None:
    """The body one watcher gets: none unless active (pending and terminated watchers learn nothing,
    RFC 3856 6.6) - except the final NOTIFY of an authorized fetch (`final_with_state`, capture 20) -
    then the package's per-watcher authorization and rewriting hooks."""
    if shared is None or (sub.status is not SubState.ACTIVE and not final_with_state):
        return None
    body: bytes | None = shared
    if event.apply_auth_nbody is not None and filters_body(event, sub):
        body = event.apply_auth_nbody(shared, sub, rules_doc)
    if body is not None and event.aux_body_processing is not None:
        body = event.aux_body_processing(sub, body)
    return body
