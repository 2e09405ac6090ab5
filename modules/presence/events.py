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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

# pres_ev_t.type
PUBL_TYPE = 1   # state comes from PUBLISH (presence, dialog, message-summary, ...)
WINFO_TYPE = 2  # state is the list of watchers of the peer package (presence.winfo)

# OpenSIPS's numeric event ids (parse_event.h), shown as `event` by MI pres_phtable_list.
EVENT_CODES = {
    "presence": 1, "presence.winfo": 2, "sip-profile": 3, "xcap-change": 4, "dialog": 5,
    "message-summary": 6, "dialog;sla": 7, "call-info": 8, "line-seize": 9, "as-feature-event": 10,
}

MAX_EVENTS = 64  # bound: a configuration registers a handful


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


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """One event package (OpenSIPS pres_ev_t). Hooks are plain callables; None = not provided.

    get_rules_doc(user, domain) -> rules document or None (may be a coroutine function)
    get_auth_status(subscription, rules_doc) -> (status, reason) (may be a coroutine function)
    apply_auth_nbody(body, subscription, rules_doc) -> body for that watcher (polite-block etc.)
    agg_nbody(pres_uri, bodies, off_index) -> one body from several publications; off_index is the
        index in `bodies` of a publication being removed (shown closed), or None
    evs_publ_handl(body) -> None, raises BodyError for a body the package refuses
    evs_subs_handl(subscribe facts) -> None, raises BodyError to refuse a SUBSCRIBE
    aux_body_processing(subscription, body) -> body rewritten per watcher (e.g. dialog-info version)
    build_empty_pres_info(pres_uri) -> body used when nothing is published (offline PIDF, empty
        dialog-info); used always when mandatory_body, else only with notify_offline_body
    winfo_body(pres_uri, watchers, version, state) -> watcherinfo document (WINFO_TYPE packages)
    """

    name: str
    content_type: str
    default_expires: int = 3600
    type: int = PUBL_TYPE
    req_auth: bool = False
    etag_not_new: bool = False
    mandatory_body: bool = False
    get_rules_doc: Callable[..., Any] | None = None
    get_auth_status: Callable[..., Any] | None = None
    apply_auth_nbody: Callable[..., Any] | None = None
    agg_nbody: Callable[..., Any] | None = None
    evs_publ_handl: Callable[..., Any] | None = None
    evs_subs_handl: Callable[..., Any] | None = None
    aux_body_processing: Callable[..., Any] | None = None
    build_empty_pres_info: Callable[..., Any] | None = None
    winfo_body: Callable[..., Any] | None = None
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
        return event

    def search_event(self, package: str, params: Iterable[tuple[str, str | None]] = ()) -> PresenceEvent | None:
        """Find the package an Event header names: `package` is the event-type ("presence.winfo"),
        `params` its parameters (both compared as OpenSIPS search_event does, "id" left out)."""
        params = tuple(params)
        for event in self._events:
            if event.matches(package, params):
                return event
        return None

    def contains_event(self, name: str) -> PresenceEvent | None:
        """Find a package by its textual name ("dialog;sla"); None if unknown or malformed."""
        try:
            package, params = parse_event_name(name)
        except ValueError:
            return None
        return self.search_event(package, params)

    def get_event_list(self) -> str:
        """The Allow-Events value: "dialog, message-summary, dialog;sla, presence.winfo, presence"."""
        return ", ".join(e.name for e in self._events)

    def wipeer(self, event: PresenceEvent) -> PresenceEvent | None:
        """The watcher-info peer of a package (presence <-> presence.winfo), if registered."""
        return self.contains_event(event.wipeer_name)

    def __iter__(self) -> Iterator[PresenceEvent]:
        return iter(list(self._events))

    def __len__(self) -> int:
        return len(self._events)
