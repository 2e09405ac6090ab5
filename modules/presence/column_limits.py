"""What a request would store, checked against the column sizes of OpenSIPS's schema when it arrives.

active_watchers.callid is VARCHAR(64), contact VARCHAR(255)... (routescript/db/schema.py, OpenSIPS 3.4's
tables). PostgreSQL refuses a longer value, and one such row used to fail every periodic save of
active_watchers; SQLite stores anything. OpenSIPS sends the request on and logs the failed insert. Our
rule, the same on both back ends: a value the schema cannot hold is refused before anything is done,
with a reply naming it - 414 for the Request-URI (RFC 3261 21.4.12), else 400 "<header> too long" (RFC
3261 21.4.1: the reason phrase says what is wrong) - and one log line with the Call-ID. The sizes are
the schema's, not parameters: a value that fits is one OpenSIPS's tables can hold too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from operator import gt
from typing import Any

from routescript.db.schema import SCHEMA

from .base import _BadRequest

log = logging.getLogger("routescript.presence")

REQUEST_URI = "Request-URI"
MAX_LOGGED = 100   # characters of an oversized Call-ID written to the log


def column_sizes(table: str, columns: tuple[str, ...]) -> tuple[int, ...]:
    """The sizes of `columns` of `table`, in that order (an unbounded column: sys.maxsize), read from
    the schema once at import: a request's values are compared with them in one pass (`fit`)."""
    sizes = [SCHEMA[table].by_name[column].size for column in columns]
    return tuple(sys.maxsize if size is None else size for size in sizes)


def fit(values: tuple[str, ...], sizes: tuple[int, ...]) -> bool:
    """Every value no longer than its size (`column_sizes`, same order): the common case, checked in C
    without a Python call per value; `oversized` then names the first that does not fit."""
    return not any(map(gt, map(len, values), sizes))


# The active_watchers columns a SUBSCRIBE fills from the request, in check_subscribe's order.
SUBSCRIBE_COLUMNS = ("callid", "presentity_uri", "watcher_username", "watcher_domain", "to_user", "to_domain",
                     "from_tag", "to_tag", "event_id", "contact")
SUBSCRIBE_SIZES = column_sizes("active_watchers", SUBSCRIBE_COLUMNS)
PUBLISH_SIZES = column_sizes("presentity", ("username", "domain", "sender"))


def oversized(table: str, values: Iterable[tuple[str, str, str | None]]) -> tuple[str, str, int, int] | None:
    """The first of `values` - (what the request calls it, column of `table`, value) - longer than its
    column, as (what, column, length, size); None when all fit."""
    columns = SCHEMA[table].by_name
    for what, column, value in values:
        size = columns[column].size
        if value is not None and size is not None and len(value) > size:
            return what, column, len(value), size
    return None


def refusal(method: str, callid: str, table: str, misfit: tuple[str, str, int, int]) -> _BadRequest:
    """The reply to a request whose value `misfit` cannot be stored, logged once with the Call-ID."""
    what, column, length, size = misfit
    shown = callid if len(callid) <= MAX_LOGGED else callid[:MAX_LOGGED] + "..."
    log.warning("%s refused: %s is %d characters, %s.%s holds %d (Call-ID %s)", method, what, length, table,
                column, size, shown)
    if what == REQUEST_URI:
        return _BadRequest(414, "Request-URI Too Long")
    return _BadRequest(400, f"{what} too long")


def check_subscribe(callid: str, pres_uri: str, watcher_user: str, watcher_domain: str, to_user: str,
                    to_domain: str, from_tag: str | None, to_tag: str | None, event_id: str | None,
                    contact: str | None, *, presentity_from: str = REQUEST_URI) -> None:
    """The active_watchers (and watchers) columns a SUBSCRIBE fills from the request; raises the
    _BadRequest to answer. `presentity_from`: what the presentity URI came from (the Contact for a BLA
    subscription)."""
    if fit((callid, pres_uri, watcher_user, watcher_domain, to_user, to_domain, from_tag or "", to_tag or "",
            event_id or "", contact or ""), SUBSCRIBE_SIZES):
        return
    misfit = oversized("active_watchers", (
        ("Call-ID", "callid", callid), (presentity_from, "presentity_uri", pres_uri),
        ("From", "watcher_username", watcher_user), ("From", "watcher_domain", watcher_domain),
        ("To", "to_user", to_user), ("To", "to_domain", to_domain), ("From tag", "from_tag", from_tag),
        ("To tag", "to_tag", to_tag), ("Event", "event_id", event_id), ("Contact", "contact", contact)))
    if misfit is not None:
        raise refusal("SUBSCRIBE", callid, "active_watchers", misfit)


def check_publish(msg: Any, user: str, domain: str, sender: str | None) -> None:
    """The presentity columns a PUBLISH fills from the request (and handle_publish's sender_uri); raises
    the _BadRequest to answer."""
    if fit((user, domain, sender or ""), PUBLISH_SIZES):
        return
    misfit = oversized("presentity", (
        (REQUEST_URI, "username", user), (REQUEST_URI, "domain", domain), ("Sender", "sender", sender)))
    if misfit is not None:
        raise refusal("PUBLISH", msg.call_id, "presentity", misfit)
