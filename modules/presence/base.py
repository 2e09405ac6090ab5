"""What the parts of the presence service share: the replies to a request (Responder), the error
replies a request or the database can end in, and small helpers."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from routescript.sip import ParseError, Source

from .events import EventRegistry, PresenceEvent
from .limits import CAP_RETRY_AFTER, Refusal, RefusalLog
from .sender import MAX_QUEUED_PER_DIALOG

if TYPE_CHECKING:
    from routescript.script.context import MsgContext

    from .server_api import PresenceServer

REASON_BAD_REQUEST = "Bad request"
REASON_BAD_EVENT = "Bad Event"
REASON_SERVER_ERROR = "Server Internal Error"
REASON_UNAVAILABLE = "Service Unavailable"
# Retry-After of a 503 while the database is unreachable: the PostgreSQL pool retries after 0.5 s,
# doubling up to 30 s; a few seconds keeps phones from hammering a server that is reconnecting.
DB_RETRY_AFTER = 5
# A subscription taken over from another node continues its CSeq (and body version) this far above the
# stored one: its former owner may have sent NOTIFYs whose numbers it had not written yet (at most the
# ones queued for the dialog, NotifySender's bound). RFC 3261 12.2.1.1 asks CSeq to grow, not to be
# consecutive; a NOTIFY with a CSeq the watcher saw already would be refused (500) or taken as old.
TAKEOVER_CSEQ_GAP = MAX_QUEUED_PER_DIALOG


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason, self.headers = status, reason, headers


def _db_failure(exc: BaseException) -> _BadRequest:
    """The reply to a request the database could not serve: 503 + Retry-After while it is unreachable
    (routescript.db DatabaseError.transient: the pool reconnects by itself), 500 for anything else."""
    if getattr(exc, "transient", False):
        return _BadRequest(503, REASON_UNAVAILABLE, (("Retry-After", str(DB_RETRY_AFTER)),))
    return _BadRequest(500, REASON_SERVER_ERROR)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _address(source: Source | None) -> str:
    """Where a request came from, for a log line: "proto:host:port" (or "?")."""
    if source is None:
        return "?"
    return f"{source.proto}:{source.remote_host}:{source.remote_port}"


def _same_uri(a: str, b: str) -> bool:
    """Sender vs Contact comparison (OpenSIPS compares the URIs' text; we ignore case of scheme/host
    and the <> a Contact may carry)."""
    norm = [u.strip().strip("<>").lower() for u in (a, b)]
    return norm[0] == norm[1]


class Responder:
    """Replies to a PUBLISH or SUBSCRIBE: the Event header read against the registered packages, the
    reply sent through the server, a refusal by a cap answered and logged (rate-limited)."""

    def __init__(self, server: PresenceServer, events: EventRegistry, refusals: RefusalLog,
                 clock: Callable[[], float]) -> None:
        self._server = server
        self._events = events
        self._refusals = refusals
        self._clock = clock

    def event_of(self, msg: Any) -> PresenceEvent:
        """The package of the request's Event header; _BadRequest 400 (unreadable) or 489 (unknown)."""
        try:
            ev = msg.event
        except ParseError as exc:
            raise _BadRequest(400, REASON_BAD_REQUEST) from exc
        event = self._events.search_event(ev.name, ev.params) if ev is not None else None
        if event is None:
            raise _BadRequest(489, REASON_BAD_EVENT, (("Allow-Events", self._events.get_event_list()),))
        return event

    def search_event(self, name: str) -> PresenceEvent | None:
        """The package registered for an event name ("dialog"), or None (an in-process PUBLISH)."""
        return self._events.contains_event(name)

    def refused(self, refusal: Refusal, what: str) -> None:
        """Count and log (rate-limited) a request a cap refused; the caller answers it."""
        self._refusals.refused(refusal, self._clock(), what)

    def reply(self, ctx: MsgContext, status: int, reason: str,
              headers: Iterable[tuple[str, str]] = ()) -> None:
        self._server.reply(ctx, status, reason, headers=tuple(headers))

    def refuse(self, ctx: MsgContext, status: int, reason: str, refusal: Refusal, what: str) -> None:
        """A request a cap refused: `status` (503) with Retry-After, and a rate-limited log line
        naming the request (`what`) and the cap."""
        self._refusals.refused(refusal, self._clock(), what)
        self.reply(ctx, status, reason, (("Retry-After", str(CAP_RETRY_AFTER)),))

    def warn(self, key: tuple[str, str], fmt: str, *args: object) -> None:
        """A log line at most once a minute per `key` (a refused request's source address)."""
        self._refusals.warn(key, self._clock(), fmt, *args)
