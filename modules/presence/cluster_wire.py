"""What presence nodes announce to each other through the database's change feed (pure, no I/O).

An announcement names what changed; the receiver reads the tables - unless it carries the change itself
(a PUBLISH's new row, when it fits) and the receiver's memory held the state the change was made on
(docs/workers.md section 7, session 12: the read was most of the cross-worker NOTIFY latency). Payloads
are compact JSON objects under PostgreSQL's 8000-byte NOTIFY limit:

    {"v": 1, "o": "p", "n": "<node>", "u": "<pres_uri>", "e": "<event>", "t": "<etag>"}   presentity changed
        (+ "s": "<sender_uri>" when handle_publish was given one: the receivers leave that watcher out too)
        (+ the change, when carried: "a": "i" inserted / "m" modified / "r" removed, "ct": the
        announcing worker's time.monotonic() before the change's transaction began, "ot": the etag it
        replaced (modified), "x": expires, "rt": received_time (the row's integers), "b": the body as
        UTF-8 text (inserted, modified))
    {"v": 1, "o": "m", "n": "<node>", "f": "<former owner>", "c": "<callid>",
     "tt": "<to_tag>", "ft": "<from_tag>"}                                                subscription moved

Unknown versions or operations are ignored by the receiver (a newer node in a rolling upgrade), so the
format can grow without breaking older nodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

WIRE_VERSION = 1
# Bounds on announced values: the active_watchers / presentity column sizes (255, 64), with room.
MAX_URI = 1024
MAX_TOKEN = 256


class AnnouncementError(ValueError):
    """A payload that is not an announcement we understand (the sending node's fault: logged, dropped)."""


@dataclass(frozen=True, slots=True)
class PresentityChanged:
    """A PUBLISH (or an expiry) changed the state of (pres_uri, event) on node `node`."""

    node: str
    pres_uri: str
    event: str
    etag: str = ""
    # handle_publish's sender_uri: the watcher the announcing node left out, left out by the others too
    sender: str | None = None
    change: PublishedChange | None = None   # the stored change itself, when it is carried


CHANGE_ACTIONS = ("i", "m", "r")   # inserted, modified, removed


@dataclass(frozen=True, slots=True)
class PublishedChange:
    """A PUBLISH's stored change of one publication (etag `PresentityChanged.etag`), as its row says:
    `action` one of CHANGE_ACTIONS, `begun` the announcing worker's time.monotonic() before the
    change's transaction began (one clock for the workers of one machine: a read that ended before it
    cannot have seen the change), `old_etag` the etag a modification replaced, `expires` and
    `received_time` the row's integer seconds, `body` (empty for a removal)."""

    action: str
    begun: float
    old_etag: str = ""
    expires: int = 0
    received_time: int = 0
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class SubscriptionMoved:
    """Node `node` took the subscription dialog (callid, to_tag, from_tag) over from `former`."""

    node: str
    former: str
    callid: str
    to_tag: str
    from_tag: str

    @property
    def key(self) -> tuple[str, str, str]:
        """The presence service's DialogKey."""
        return (self.callid, self.to_tag, self.from_tag)


Announcement = PresentityChanged | SubscriptionMoved


def encode(ann: Announcement) -> str:
    if isinstance(ann, PresentityChanged):
        obj: dict[str, Any] = {"v": WIRE_VERSION, "o": "p", "n": ann.node, "u": ann.pres_uri, "e": ann.event,
                               "t": ann.etag}
        if ann.sender:
            obj["s"] = ann.sender   # absent for most changes; a node that does not know "s" ignores it
        change = ann.change
        if change is not None:   # a node that does not know these fields ignores them and reads
            obj["a"] = change.action
            obj["ct"] = change.begun
            if change.action != "r":
                obj.update(ot=change.old_etag, x=change.expires, rt=change.received_time,
                           b=change.body.decode("utf-8"))
    else:
        obj = {"v": WIRE_VERSION, "o": "m", "n": ann.node, "f": ann.former, "c": ann.callid,
               "tt": ann.to_tag, "ft": ann.from_tag}
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def decode(payload: str) -> Announcement | None:
    """The announcement in `payload`; None for a version/operation this node does not know (ignored);
    AnnouncementError for a malformed one."""
    try:
        obj = json.loads(payload)
    except (ValueError, TypeError) as exc:
        raise AnnouncementError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise AnnouncementError("not a JSON object")
    if obj.get("v") != WIRE_VERSION:
        return None
    op = obj.get("o")
    if op == "p":
        return PresentityChanged(_text(obj, "n", MAX_TOKEN), _text(obj, "u", MAX_URI),
                                 _text(obj, "e", MAX_TOKEN), _text(obj, "t", MAX_TOKEN, empty=True),
                                 _text(obj, "s", MAX_URI, empty=True) or None, _change(obj))
    if op == "m":
        return SubscriptionMoved(_text(obj, "n", MAX_TOKEN), _text(obj, "f", MAX_TOKEN),
                                 _text(obj, "c", MAX_URI), _text(obj, "tt", MAX_TOKEN, empty=True),
                                 _text(obj, "ft", MAX_TOKEN, empty=True))
    return None


def _change(obj: dict[str, Any]) -> PublishedChange | None:
    action = obj.get("a")
    if action is None:
        return None
    if action not in CHANGE_ACTIONS:
        raise AnnouncementError("bad field 'a'")
    begun = obj.get("ct")
    if isinstance(begun, bool) or not isinstance(begun, (int, float)) or not begun >= 0:
        raise AnnouncementError("bad field 'ct'")
    if action == "r":
        return PublishedChange("r", float(begun))
    body = obj.get("b")
    if not isinstance(body, str):
        raise AnnouncementError("bad field 'b'")
    return PublishedChange(action, float(begun), _text(obj, "ot", MAX_TOKEN, empty=True), _int(obj, "x"),
                           _int(obj, "rt"), body.encode("utf-8"))


def _int(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AnnouncementError(f"bad field {name!r}")
    return value


def _text(obj: dict[str, Any], name: str, limit: int, *, empty: bool = False) -> str:
    value = obj.get(name, "" if empty else None)
    if not isinstance(value, str) or (not value and not empty) or len(value) > limit:
        raise AnnouncementError(f"bad field {name!r}")
    return value
