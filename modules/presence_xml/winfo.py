"""Watcher information documents (RFC 3858, application/watcherinfo+xml) for presence.winfo.

RFC 3858 section 5.4 schema, the part written and read here:
    <watcherinfo version="xs:nonNegativeInteger" state="full|partial">   (both required)
      <watcher-list resource="xs:anyURI" package="xs:string">             (both required) *
        <watcher id="xs:string" status="pending|active|waiting|terminated"
                 event="subscribe|approved|deactivated|probation|rejected|timeout|giveup|noresource"
                 display-name? duration-subscribed?="xs:unsignedLong" expiration?="xs:unsignedLong">
          watcher URI (xs:anyURI)</watcher> *
The output has OpenSIPS's shape (capture 22): attributes id, event, status in that order, no whitespace.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple, cast, get_args

from lxml import etree

from .xml_util import (BAD_REQUEST, NS_WATCHERINFO, BodyError, local_name, parse_xml, qname, serialize,
                       xml_safe)

__all__ = [
    "WatcherEvent",
    "WatcherInfo",
    "WatcherStatus",
    "WinfoDocument",
    "WinfoState",
    "parse_winfo",
    "winfo_document",
]

WatcherStatus = Literal["active", "pending", "waiting", "terminated"]
WatcherEvent = Literal[
    "subscribe", "approved", "deactivated", "probation", "rejected", "timeout", "giveup", "noresource"
]
WinfoState = Literal["full", "partial"]

_STATUSES: frozenset[str] = frozenset(get_args(WatcherStatus))
_EVENTS: frozenset[str] = frozenset(get_args(WatcherEvent))
_STATES: frozenset[str] = frozenset(get_args(WinfoState))

_WATCHERINFO = qname(NS_WATCHERINFO, "watcherinfo")
_WATCHER_LIST = qname(NS_WATCHERINFO, "watcher-list")
_WATCHER = qname(NS_WATCHERINFO, "watcher")

_UNSIGNED_LONG_MAX = 2**64 - 1
_XML_SPACE = " \t\r\n"  # XML white space (S production); other Unicode spaces are content


@dataclass(frozen=True, slots=True)
class WatcherInfo:
    """One `<watcher>`: `id` (OpenSIPS uses the subscription's Call-ID), the watcher's `uri`, its
    subscription `status` and the `event` that led to it; `duration` is duration-subscribed (seconds),
    `expiration` seconds left. Out-of-range values raise ValueError (a bug in the caller)."""

    id: str
    uri: str
    status: WatcherStatus
    event: WatcherEvent
    display_name: str | None = None
    duration: int | None = None
    expiration: int | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("watcher id must not be empty")
        if self.status not in _STATUSES:
            raise ValueError(f"watcher status {self.status!r} is not one of {sorted(_STATUSES)}")
        if self.event not in _EVENTS:
            raise ValueError(f"watcher event {self.event!r} is not one of {sorted(_EVENTS)}")
        for name in ("duration", "expiration"):
            value = getattr(self, name)
            if value is not None and not (0 <= value <= _UNSIGNED_LONG_MAX):
                raise ValueError(f"watcher {name} {value} is not an unsignedLong")


class WinfoDocument(NamedTuple):
    """What `parse_winfo` returns; unpacks as (version, state, resource, watchers)."""

    version: int
    state: WinfoState
    resource: str | None
    watchers: list[WatcherInfo]


def winfo_document(
    presentity_uri: str,
    watchers: Iterable[WatcherInfo],
    version: int,
    state: WinfoState,
    package: str = "presence",
) -> bytes:
    """The application/watcherinfo+xml body for the watchers of `presentity_uri`'s `package`:

        <?xml version="1.0"?>
        <watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="0" state="full">
        <watcher-list resource="sip:alice@..." package="presence">
        <watcher id="<callid>" event="subscribe" status="active">sip:bob@...</watcher>...

    (one line in the output). `version` counts the documents sent in this winfo subscription (RFC 3858
    section 4.2: starts at 0, +1 per NOTIFY); `state` is "full" for the whole list, "partial" for the
    changed watchers only. Bad arguments raise ValueError. The strings (URIs, ids, display names) come
    from stored subscriptions: a character XML cannot carry is %-escaped with a warning (`xml_safe`), so a
    bad row never loses the NOTIFY.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"winfo version must be a non-negative integer, got {version!r}")
    if state not in _STATES:
        raise ValueError(f"winfo state must be 'full' or 'partial', got {state!r}")
    root = etree.Element(_WATCHERINFO, nsmap={None: NS_WATCHERINFO})
    root.set("version", str(version))
    root.set("state", state)
    watcher_list = etree.SubElement(root, _WATCHER_LIST)
    watcher_list.set("resource", xml_safe(presentity_uri, "watcher-list resource", presentity_uri))
    watcher_list.set("package", package)
    for watcher in watchers:
        element = etree.SubElement(watcher_list, _WATCHER)
        element.set("id", xml_safe(watcher.id, "watcher id", presentity_uri))
        element.set("event", watcher.event)
        element.set("status", watcher.status)
        if watcher.display_name is not None:
            display = xml_safe(watcher.display_name, "watcher display-name", presentity_uri)
            element.set("display-name", display)
        if watcher.duration is not None:
            element.set("duration-subscribed", str(watcher.duration))
        if watcher.expiration is not None:
            element.set("expiration", str(watcher.expiration))
        element.text = xml_safe(watcher.uri, "watcher URI", presentity_uri)
    return serialize(root)


def parse_winfo(body: bytes) -> WinfoDocument:
    """Read a watcherinfo document (for tests and clients).

    Returns (version, state, resource, watchers) of the first `<watcher-list>`; resource is None and the
    list empty when the document has no watcher-list (valid: a full list of nothing). Further
    watcher-lists (one per resource, from a resource list server) are not read. Raises `BodyError`
    (415 for XML that does not parse, 400 for a document that breaks the RFC 3858 schema).
    """
    root = parse_xml(body)
    if root.tag != _WATCHERINFO:
        raise BodyError(*BAD_REQUEST, f"root element is <{local_name(root)}>, not <watcherinfo>")
    version = _unsigned(root.get("version"), "version")
    state = root.get("state")
    if state not in _STATES:
        raise BodyError(*BAD_REQUEST, f"watcherinfo state {state!r} is not 'full' or 'partial'")
    watcher_list = root.find(_WATCHER_LIST)
    if watcher_list is None:
        return WinfoDocument(version, cast(WinfoState, state), None, [])
    resource = watcher_list.get("resource")
    if not resource:
        raise BodyError(*BAD_REQUEST, "watcher-list without a resource")
    watchers = [_read_watcher(element) for element in watcher_list.iterchildren(_WATCHER)]
    return WinfoDocument(version, cast(WinfoState, state), resource, watchers)


def _read_watcher(element: etree._Element) -> WatcherInfo:
    status = element.get("status")
    event = element.get("event")
    watcher_id = element.get("id")
    if status not in _STATUSES or event not in _EVENTS or not watcher_id:
        raise BodyError(
            *BAD_REQUEST, f"watcher with id={watcher_id!r} status={status!r} event={event!r} is not valid"
        )
    duration = element.get("duration-subscribed")
    expiration = element.get("expiration")
    return WatcherInfo(
        id=watcher_id,
        uri=(element.text or "").strip(_XML_SPACE),
        status=cast(WatcherStatus, status),
        event=cast(WatcherEvent, event),
        display_name=element.get("display-name"),
        duration=None if duration is None else _unsigned(duration, "duration-subscribed"),
        expiration=None if expiration is None else _unsigned(expiration, "expiration"),
    )


def _unsigned(text: str | None, name: str) -> int:
    value = (text or "").strip()
    if not value.isascii() or not value.isdigit() or len(value) > 20 or int(value) > _UNSIGNED_LONG_MAX:
        raise BodyError(*BAD_REQUEST, f"watcherinfo {name} {text!r} is not a non-negative integer")
    return int(value)
