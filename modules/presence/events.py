"""Event packages the presence server handles - the Python side of OpenSIPS's bind_presence/add_event.

An event package module (presence_xml, presence_mwi, presence_dialoginfo) describes each package it
serves with a `PresenceEvent` (OpenSIPS's `pres_ev_t`) and adds it to the presence module's
`EventRegistry`. The presence core then calls the package's hooks; it never knows PIDF or dialog-info.

RFC 6665 section 8.4 / RFC 3265 section 7.2.1:
    Event       =  ( "Event" / "o" ) HCOLON event-type *( SEMI event-param )
    event-type  =  event-package *( "." event-template )
    event-param =  generic-param / ( "id" EQUAL token )
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# pres_ev_t.type
PUBL_TYPE = 1   # state comes from PUBLISH (presence, dialog, message-summary, ...)
WINFO_TYPE = 2  # state is the list of watchers of the peer package (presence.winfo)

# OpenSIPS's numeric event ids (parse_event.h), shown as `event` by MI pres_phtable_list.
EVENT_CODES = {
    "presence": 1, "presence.winfo": 2, "sip-profile": 3, "xcap-change": 4, "dialog": 5,
    "message-summary": 6, "dialog;sla": 7, "call-info": 8, "line-seize": 9, "as-feature-event": 10,
}

MAX_EVENTS = 64  # bound: a configuration registers a handful
MAX_EVENT_LOOKUPS = 1024  # bound: remembered event-name lookups


class BodyError(Exception):
    """A published body the event package refuses (the peer's fault): answered with `status reason`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")   (RFC 3261 25.1)
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")

EventParams = tuple[tuple[str, "str | None"], ...]


def parse_event_name(text: str) -> tuple[str, EventParams]:
    """Split an event name ("dialog;sla", "presence.winfo") into (package, params).

    The package is lower-cased (OpenSIPS's event parser compares names case-insensitively);
    parameter names are lower-cased, values kept. Raises ValueError on a malformed name.
    """
    parts = [p.strip() for p in text.split(";")]
    package = parts[0].lower()
    if not _TOKEN.match(package):
        raise ValueError(f"bad event name {text!r}")
    params: list[tuple[str, str | None]] = []
    for part in parts[1:]:
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not _TOKEN.match(name):
            raise ValueError(f"bad event parameter in {text!r}")
        params.append((name, value.strip() if eq else None))
    return package, tuple(params)


def _matching_params(params: Iterable[tuple[str, str | None]]) -> frozenset[tuple[str, str | None]]:
    # Choice: "id" names one subscription (RFC 6665 8.2.3), not the package, so it takes no part in
    # finding the package (old OpenSIPS compared it too and answered `presence;id=1` with 489).
    return frozenset((n.lower(), v) for n, v in params if n.lower() != "id")


# --- the hooks an event package may give (OpenSIPS pres_ev_t callbacks) -------------------------------
# Each is a Protocol so a package's functions are type-checked against the signature the presence core
# calls them with. A hook marked "may be async" may be a coroutine function; the others are called on the
# event loop and must be quick (bounded XML work). OpenSIPS's free_body / aux_free_body have no
# counterpart: Python frees bodies itself, so no package needs them.


class GetRulesDoc(Protocol):
    """get_rules_doc(user, domain) -> the presentity's authorization document, or None (may be async).
    Called for packages with req_auth, before get_auth_status and apply_auth_nbody."""

    def __call__(self, user: str, domain: str) -> Any: ...


class GetAuthStatus(Protocol):
    """get_auth_status(watcher, rules_doc) -> (status, reason) (may be async). `watcher` is a
    SubscribeFacts (new SUBSCRIBE) or a Subscription (refreshWatchers), both with pres_uri,
    watcher_user, watcher_domain; `status` is a SubState number (1 active, 2 pending, 3 terminated) and
    `reason` the Subscription-State reason of a terminated one ("rejected"). Return None (or raise) for
    "cannot decide": the watcher stays pending."""

    def __call__(self, watcher: Any, rules_doc: Any) -> Any: ...


class ApplyAuthNbody(Protocol):
    """apply_auth_nbody(body, subscription, rules_doc) -> the body this active watcher may see, None for
    no body (polite-block). Synchronous."""

    def __call__(self, body: bytes, subscription: Any, rules_doc: Any) -> bytes | None: ...


class AggNbody(Protocol):
    """agg_nbody(pres_uri, bodies, off_index) -> one body from the presentity's publications (oldest
    first). off_index: the index in `bodies` of a publication being removed, or None. Without agg_nbody
    the newest publication is sent as it is. Synchronous."""

    def __call__(self, pres_uri: str, bodies: Sequence[bytes], off_index: int | None) -> bytes: ...


class EvsPublHandl(Protocol):
    """evs_publ_handl(body) -> None; raise BodyError(status, reason) to refuse a PUBLISH body (the
    reply). Called for every PUBLISH that carries a body, before anything is stored."""

    def __call__(self, body: bytes) -> None: ...


class EvsSubsHandl(Protocol):
    """evs_subs_handl(facts) -> None (may be async); raise BodyError(status, reason) to refuse a
    SUBSCRIBE. `facts` is the SubscribeFacts (its `msg` is the SIP request)."""

    def __call__(self, facts: Any) -> Any: ...


class AuxBodyProcessing(Protocol):
    """aux_body_processing(subscription, body) -> the body rewritten for this one watcher (dialog-info
    version). `subscription.version` counts the NOTIFYs sent before this one. Synchronous."""

    def __call__(self, subscription: Any, body: bytes) -> bytes: ...


class BuildEmptyPresInfo(Protocol):
    """build_empty_pres_info(pres_uri) -> the body used when nothing is published (offline PIDF, empty
    dialog-info): always with mandatory_body, else only with notify_offline_body."""

    def __call__(self, pres_uri: str) -> bytes: ...


class WinfoBody(Protocol):
    """winfo_body(pres_uri, watchers, version, state) -> a watcherinfo document ("full"/"partial"),
    for WINFO_TYPE packages. `watchers` are Subscription records."""

    def __call__(self, pres_uri: str, watchers: Sequence[Any], version: int, state: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """One event package (OpenSIPS pres_ev_t), given to `bind_presence(server).add_event(...)`.

    name:            "presence", "dialog;sla", "x-example" - the Event header value it serves (package
                     name and parameters; "id" takes no part in matching)
    content_type:    the NOTIFY Content-Type (and the default of stored publications)
    default_expires: Expires granted when a PUBLISH/SUBSCRIBE has none
    type:            PUBL_TYPE (state from PUBLISH) or WINFO_TYPE (state = watchers of the peer package)
    req_auth:        watchers need authorization (get_rules_doc + get_auth_status); without it every
                     watcher is active at once
    etag_not_new:    keep one ETag for the life of a publication (OpenSIPS etag_not_new = 1); False: a
                     new ETag for every refresh/modify (RFC 3903)
    mandatory_body:  NOTIFY always carries a body (build_empty_pres_info when nothing is published)
    The hooks are described by the Protocol classes above; None = not provided.
    """

    name: str
    content_type: str
    default_expires: int = 3600
    type: int = PUBL_TYPE
    req_auth: bool = False
    etag_not_new: bool = False
    mandatory_body: bool = False
    get_rules_doc: GetRulesDoc | None = None
    get_auth_status: GetAuthStatus | None = None
    apply_auth_nbody: ApplyAuthNbody | None = None
    agg_nbody: AggNbody | None = None
    evs_publ_handl: EvsPublHandl | None = None
    evs_subs_handl: EvsSubsHandl | None = None
    aux_body_processing: AuxBodyProcessing | None = None
    build_empty_pres_info: BuildEmptyPresInfo | None = None
    winfo_body: WinfoBody | None = None
    package: str = field(init=False, compare=False)
    params: EventParams = field(init=False, compare=False)

    def __post_init__(self) -> None:
        package, params = parse_event_name(self.name)
        object.__setattr__(self, "package", package)
        object.__setattr__(self, "params", params)
        if not self.content_type:
            raise ValueError(f"event {self.name!r}: content_type is required")
        if self.req_auth and (self.get_auth_status is None or self.get_rules_doc is None):
            raise ValueError(f"event {self.name!r}: req_auth needs get_auth_status and get_rules_doc")

    @property
    def code(self) -> int:
        """OpenSIPS's numeric event id (0 for packages it does not know)."""
        return EVENT_CODES.get(self.name, 0)

    @property
    def wipeer_name(self) -> str:
        """The peer package: "presence" <-> "presence.winfo"."""
        if self.type == WINFO_TYPE:
            return self.name.rsplit(".", 1)[0]
        return self.name + ".winfo"

    def matches(self, package: str, params: Iterable[tuple[str, str | None]] = ()) -> bool:
        return package.lower() == self.package and _matching_params(params) == _matching_params(self.params)


class EventRegistry:
    """The registered event packages (OpenSIPS EvList). Newest first, as OpenSIPS lists them."""

    def __init__(self) -> None:
        self._events: list[PresenceEvent] = []
        # Lookups by name / by (package, params) are made for every request and NOTIFY: remembered,
        # forgotten when a package is added, bounded (names come from requests and database rows).
        self._by_name: dict[str, PresenceEvent | None] = {}
        self._by_header: dict[tuple[str, EventParams], PresenceEvent | None] = {}
        # a registered package's name -> (the package, its watcher-info peer)
        self._wipeers: dict[str, tuple[PresenceEvent, PresenceEvent | None]] = {}

    def add_event(self, event: PresenceEvent) -> PresenceEvent:
        """Register a package; registering a name again keeps the first one (OpenSIPS: "already
        registered") and returns it."""
        existing = self.contains_event(event.name)
        if existing is not None:
            return existing
        if len(self._events) >= MAX_EVENTS:
            raise ValueError(f"too many event packages (max {MAX_EVENTS})")
        # OpenSIPS links a new event at the head of its list; Allow-Events shows that order.
        self._events.insert(0, event)
        self._by_name.clear()
        self._by_header.clear()
        self._wipeers.clear()
        return event

    def search_event(self, package: str,
                     params: Iterable[tuple[str, str | None]] = ()) -> PresenceEvent | None:
        """Find the package an Event header names: `package` is the event-type ("presence.winfo"),
        `params` its parameters (both compared as OpenSIPS search_event does, "id" left out)."""
        params = tuple(params)
        key = (package, params)
        try:
            return self._by_header[key]
        except KeyError:
            pass
        found = next((event for event in self._events if event.matches(package, params)), None)
        if len(self._by_header) >= MAX_EVENT_LOOKUPS:
            self._by_header.clear()
        self._by_header[key] = found
        return found

    def contains_event(self, name: str) -> PresenceEvent | None:
        """Find a package by its textual name ("dialog;sla"); None if unknown or malformed."""
        try:
            return self._by_name[name]
        except KeyError:
            pass
        try:
            package, params = parse_event_name(name)
        except ValueError:
            return None
        found = self.search_event(package, params)
        if len(self._by_name) >= MAX_EVENT_LOOKUPS:
            self._by_name.clear()
        self._by_name[name] = found
        return found

    def get_event_list(self) -> str:
        """The Allow-Events value: "dialog, message-summary, dialog;sla, presence.winfo, presence"."""
        return ", ".join(e.name for e in self._events)

    def wipeer(self, event: PresenceEvent) -> PresenceEvent | None:
        """The watcher-info peer of a package (presence <-> presence.winfo), if registered. Asked for
        every SUBSCRIBE and NOTIFY: remembered per package name (bounded by the packages registered)."""
        kept = self._wipeers.get(event.name)
        if kept is not None and kept[0] is event:
            return kept[1]
        peer = self.contains_event(event.wipeer_name)
        if event is self.contains_event(event.name):   # a registered package (names are few)
            self._wipeers[event.name] = (event, peer)
        return peer

    def __iter__(self) -> Iterator[PresenceEvent]:
        return iter(list(self._events))

    def __len__(self) -> int:
        return len(self._events)
