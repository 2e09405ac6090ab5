"""The pua table (OpenSIPS 3.4's `pua`, version 8): rows from publications and subscriptions, and back.

Pure functions; store.py owns the database handle, when it writes and which rows a worker loads.

The columns as OpenSIPS's pua.c uses them (db_update / db_restore):
- every row: `pres_uri`, `pres_id` (the publication id, "" for a subscription), `event` (pua's event
  bit: presence 1, presence.winfo 2, dialog;sla 4, message-summary 8, conference 16, xcap-diff 32,
  dialog 64, call-info 128, reg 256), `flag` (the module that made it: UL_PUBLISH 1, BLA_PUBLISH 2,
  BLA_SUBSCRIBE 4, DIALOG_PUBLISH 1024, ...), `expires` (the end the other side granted, unix seconds),
  `desired_expires` (the end its module asked for; 0: refreshed for ever, 3600 s at a time).
- a publication: `etag`, `extra_headers` (headers of every PUBLISH, "Name: value\\r\\n" each: pua_bla's
  Sender). The body is not stored (as in OpenSIPS): after a restart a refresh needs none, and the next
  change brings one.
- a subscription (`watcher_uri` set): `to_uri`, `call_id`, `to_tag` (the notifier's), `from_tag` (ours),
  `cseq`, `record_route` (the route set, comma-joined), `contact` (ours), `remote_contact` (the remote
  target), `version`.
Ours, in OpenSIPS's columns: a publication's outbound proxy is the `Route: <uri;lr>` line of its
`extra_headers` (the header its PUBLISHes carry over SIP); a publication's `call_id` / `from_tag` name the
dialog it follows (Follows: pua_dialoginfo's call, the subscription whose NOTIFYs pua_bla publishes) -
OpenSIPS reads those two only for subscriptions - so its owner worker is found from the row (row_owner);
a Call-ID longer than the column is written as its CRC-32 (CRC_FORM). A text longer than its column is
not written at all (BadRow: the record lives in memory only).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

from routescript.db.schema import PUA
from routescript.sip import split_values
from routescript.workers.dispatch import tag_slot

from .subscriptions import SubKey, SubRecord
from .table import PubKey, PubRecord

__all__ = ["EVENT_BITS", "BadRow", "publication_of", "row_of_publication", "row_of_subscription", "row_owner",
           "subscription_of"]

# OpenSIPS pua hash.h: the event bits and the module flags
EVENT_BITS = {"presence": 1, "presence.winfo": 2, "dialog;sla": 4, "message-summary": 8, "conference": 16,
              "xcap-diff": 32, "dialog": 64, "call-info": 128, "reg": 256}
EVENT_NAMES = {bit: name for name, bit in EVENT_BITS.items()}
UL_PUBLISH, BLA_PUBLISH, BLA_SUBSCRIBE, DIALOG_PUBLISH = 1, 2, 4, 1024
# The flag a row gets: our publishers are one per event (pua_dialoginfo: dialog, pua_bla: dialog;sla).
PUBLISH_FLAGS = {"dialog": DIALOG_PUBLISH, "dialog;sla": BLA_PUBLISH, "presence": UL_PUBLISH}
SUBSCRIBE_FLAGS = {"dialog;sla": BLA_SUBSCRIBE}
CONTENT_TYPES = {"presence": "application/pidf+xml", "dialog": "application/dialog-info+xml",
                 "dialog;sla": "application/dialog-info+xml"}
FOREVER = 3600   # OpenSIPS update_pua: desired_expires 0 is refreshed 3600 s at a time
SIZES = {c.name: c.size for c in PUA.columns if c.kind == "str" and c.size}
# A followed Call-ID longer than the call_id column is written as its CRC-32 in this form (a space: no
# Call-ID has one, RFC 3261 25.1), which is all the owner rule needs.
CRC_FORM = "crc32 "


class BadRow(ValueError):
    """A row that cannot be a publication or a subscription (logged and skipped at start)."""


def row_owner(call_id: str | None, tag: str | None, n_total: int) -> int:
    """The worker that owns a row, by the dispatcher's rules for the requests it will see
    (docs/workers.md 2): the slot our tag names (rule 2: the NOTIFYs of a subscription, and pua_bla's
    publications made from them), else crc32(Call-ID) % n (rule 4: pua_dialoginfo's call), else worker 0
    (a row naming no dialog: OpenSIPS's, or another module's)."""
    if n_total <= 1:
        return 0
    slot = tag_slot(tag) if tag else None
    if slot is not None and slot < n_total:
        return slot
    if not call_id:
        return 0
    if call_id.startswith(CRC_FORM):
        try:
            return int(call_id[len(CRC_FORM):], 16) % n_total
        except ValueError:
            return 0
    return zlib.crc32(call_id.encode()) % n_total


def _followed_call_id(call_id: str) -> str | None:
    if len(call_id) <= SIZES["call_id"]:
        return call_id or None
    return f"{CRC_FORM}{zlib.crc32(call_id.encode()):08x}"


def _fitting(row: dict[str, Any]) -> dict[str, Any]:
    """`row` when every text fits its column (PostgreSQL and MySQL refuse longer ones); else BadRow: the
    record then lives in memory only (a row that cannot be written must not stop the others)."""
    for name, size in SIZES.items():
        value = row.get(name)
        if isinstance(value, str) and len(value) > size:
            raise BadRow(f"{name} of {len(value)} characters does not fit the table's {size}")
    return row


def _event_bit(event: str) -> int:
    bit = EVENT_BITS.get(event.lower())
    if bit is None:
        raise BadRow(f"event {event!r} has no pua event bit (known: {', '.join(EVENT_BITS)})")
    return bit


def _extra_headers(rec: PubRecord) -> str | None:
    lines = []
    if rec.outbound_proxy:
        proxy = rec.outbound_proxy.strip().strip("<>")
        lines.append(f"Route: <{proxy if ';lr' in proxy else proxy + ';lr'}>\r\n")
    if rec.sender is not None:
        lines.append(f"{rec.sender[0]}: <{rec.sender[1]}>\r\n")
    return "".join(lines) or None


def row_of_publication(rec: PubRecord) -> dict[str, Any]:
    """The row of a confirmed publication (one with an ETag). BadRow for an event pua has no bit for."""
    event = rec.key.event
    call_id, tag = rec.follows or ("", "")
    return _fitting({
        "pres_uri": rec.key.pres_uri, "pres_id": rec.key.id, "event": _event_bit(event),
        "expires": int(rec.expires_at), "desired_expires": math.ceil(rec.desired_at),
        "flag": PUBLISH_FLAGS.get(event.lower(), 0), "etag": rec.etag, "tuple_id": None, "watcher_uri": None,
        "to_uri": None, "call_id": _followed_call_id(call_id), "to_tag": None, "from_tag": tag or None,
        "cseq": None, "record_route": None, "contact": None, "remote_contact": None, "version": None,
        "extra_headers": _extra_headers(rec),
    })


def row_of_subscription(rec: SubRecord) -> dict[str, Any]:
    """The row of a subscription whose dialog is established (it has the notifier's tag)."""
    event = rec.key.event
    return _fitting({
        "pres_uri": rec.key.pres_uri, "pres_id": "", "event": _event_bit(event),
        "expires": int(rec.expires_at), "desired_expires": math.ceil(rec.desired_at),
        "flag": SUBSCRIBE_FLAGS.get(event.lower(), 0), "etag": None, "tuple_id": None,
        "watcher_uri": rec.key.watcher_uri, "to_uri": rec.to_uri, "call_id": rec.call_id,
        "to_tag": rec.to_tag, "from_tag": rec.from_tag, "cseq": rec.cseq,
        "record_route": ",".join(rec.route_set) or None, "contact": rec.contact,
        "remote_contact": rec.remote_target, "version": 0, "extra_headers": None,
    })


def is_subscription(row: dict[str, Any]) -> bool:
    return bool(row.get("watcher_uri"))


def _text(row: dict[str, Any], column: str, *, required: bool = True) -> str:
    value = row.get(column)
    if isinstance(value, bytes):
        value = value.decode()   # UnicodeDecodeError: a BadRow (caught below)
    if value is None or value == "":
        if required:
            raise BadRow(f"no {column}")
        return ""
    if not isinstance(value, str):
        raise BadRow(f"{column} is not text: {value!r}")
    return value


def _int(row: dict[str, Any], column: str) -> int:
    value = row.get(column)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRow(f"{column} is not a number: {value!r}")
    try:
        return int(value)
    except ValueError:
        raise BadRow(f"{column} is not a number: {value!r}") from None


def _times(row: dict[str, Any], now: float) -> tuple[float, float]:
    """(granted end, desired end) of a row; OpenSIPS's desired_expires 0 ("for ever") is one more
    FOREVER after the granted end, as its update_pua refreshes it."""
    expires = _int(row, "expires")
    desired = _int(row, "desired_expires")
    return float(expires), float(desired if desired > 0 else max(expires, int(now)) + FOREVER)


def _read_extra_headers(text: str) -> tuple[str | None, tuple[str, str] | None]:
    """(outbound proxy, sender header) from extra_headers; BadRow for a line that is no header."""
    proxy: str | None = None
    sender: tuple[str, str] | None = None
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value or any(c in name for c in " \t"):
            raise BadRow(f"extra_headers line {line!r} is no header")
        if name.lower() == "route" and proxy is None:
            proxy = value.strip("<>").removesuffix(";lr")
        elif sender is None:
            sender = (name, value.strip("<>"))
        else:
            raise BadRow(f"extra_headers has more than one header besides Route: {text!r}")
    return proxy, sender


def _event(row: dict[str, Any]) -> str:
    """The event named by the row's pua event bit; BadRow for a bit pua does not know."""
    bit = _int(row, "event")
    event = EVENT_NAMES.get(bit)
    if event is None:
        raise BadRow(f"event bit {bit} is not one of pua's")
    return event


def publication_of(row: dict[str, Any], now: float) -> PubRecord:
    """The publication of a row (watcher_uri empty). BadRow when it cannot be one."""
    try:
        event = _event(row)
        key = PubKey(_text(row, "pres_uri"), event, _text(row, "pres_id", required=False))
        etag = _text(row, "etag", required=False)
        if not etag:
            raise BadRow("no etag: never confirmed, nothing to refresh")
        expires_at, desired_at = _times(row, now)
        proxy, sender = _read_extra_headers(_text(row, "extra_headers", required=False))
        call_id = _text(row, "call_id", required=False)
        tag = _text(row, "from_tag", required=False)
    except UnicodeDecodeError as exc:
        raise BadRow(f"not UTF-8: {exc}") from None
    return PubRecord(key, b"", CONTENT_TYPES.get(event, ""), desired_at, etag=etag, expires_at=expires_at,
                     granted=max(0, int(expires_at - now)), outbound_proxy=proxy, sender=sender,
                     follows=(call_id, tag) if call_id or tag else None, loaded=True)


def subscription_of(row: dict[str, Any], now: float) -> SubRecord:
    """The subscription of a row (watcher_uri set). BadRow when it cannot be one."""
    try:
        event = _event(row)
        pres_uri = _text(row, "pres_uri")
        key = SubKey(pres_uri, _text(row, "watcher_uri"), event)
        expires_at, desired_at = _times(row, now)
        cseq = _int(row, "cseq")
        if cseq < 0:
            raise BadRow(f"cseq {cseq} is negative")
        return SubRecord(key, _text(row, "to_uri", required=False) or pres_uri, _text(row, "contact"),
                         _text(row, "call_id"), _text(row, "from_tag"), desired_at, cseq=cseq,
                         to_tag=_text(row, "to_tag"),
                         remote_target=_text(row, "remote_contact", required=False) or pres_uri,
                         route_set=tuple(split_values(_text(row, "record_route", required=False))),
                         expires_at=expires_at, granted=max(0, int(expires_at - now)))
    except UnicodeDecodeError as exc:
        raise BadRow(f"not UTF-8: {exc}") from None
