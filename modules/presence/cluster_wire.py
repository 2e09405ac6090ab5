"""What presence nodes announce to each other through the database's change feed (pure, no I/O).

An announcement names what changed, never the data itself: the receiver reads the tables. Payloads are
compact JSON objects, well under PostgreSQL's 8000-byte NOTIFY limit:

    {"v": 1, "o": "p", "n": "<node>", "u": "<pres_uri>", "e": "<event>", "t": "<etag>"}   presentity changed
        (+ "s": "<sender_uri>" when handle_publish was given one: the receivers leave that watcher out too)
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
                                 _text(obj, "s", MAX_URI, empty=True) or None)
    if op == "m":
        return SubscriptionMoved(_text(obj, "n", MAX_TOKEN), _text(obj, "f", MAX_TOKEN),
                                 _text(obj, "c", MAX_URI), _text(obj, "tt", MAX_TOKEN, empty=True),
                                 _text(obj, "ft", MAX_TOKEN, empty=True))
    return None


def _text(obj: dict[str, Any], name: str, limit: int, *, empty: bool = False) -> str:
    value = obj.get(name, "" if empty else None)
    if not isinstance(value, str) or (not value and not empty) or len(value) > limit:
        raise AnnouncementError(f"bad field {name!r}")
    return value
