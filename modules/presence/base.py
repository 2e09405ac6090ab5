"""What every part of the presence service shares: its state, the request helpers (Event header,
reply, per-presentity lock) and the error replies a request or the database can end in."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from routescript.sip import ParseError

from .events import EventRegistry, PresenceEvent
from .limits import CAP_RETRY_AFTER, Refusal, RefusalLog
from .locks import KeyedLocks
from .notify import BodyCache, local_contact
from .presentity import PresentityTable
from .sender import MAX_QUEUED_PER_DIALOG, NotifySender
from .settings import PresenceSettings
from .storage import PresenceStore
from .subscription import DialogKey, Subscription, SubsTable, shared

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


def _taken_over(sub: Subscription, local_contact: str, socket_info: str) -> Subscription:
    """A subscription this node takes over from another: CSeq and version go on above what its former
    owner may have sent without storing it (TAKEOVER_CSEQ_GAP); our Contact and socket replace its
    former owner's, so the watcher's refreshes reach us and not a dead node."""
    return replace(sub, local_cseq=sub.local_cseq + TAKEOVER_CSEQ_GAP,
                   version=sub.version + TAKEOVER_CSEQ_GAP, local_contact=shared(local_contact),
                   socket_info=shared(socket_info))


def _db_failure(exc: BaseException) -> _BadRequest:
    """The reply to a request the database could not serve: 503 + Retry-After while it is unreachable
    (routescript.db DatabaseError.transient: the pool reconnects by itself), 500 for anything else."""
    if getattr(exc, "transient", False):
        return _BadRequest(503, REASON_UNAVAILABLE, (("Retry-After", str(DB_RETRY_AFTER)),))
    return _BadRequest(500, REASON_SERVER_ERROR)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _address(source: Any) -> str:
    """Where a request came from, for a log line: "proto:host:port" (or "?")."""
    host = getattr(source, "remote_host", None)
    if host is None:
        return "?"
    return f"{getattr(source, 'proto', '?')}:{host}:{getattr(source, 'remote_port', '?')}"


def _same_uri(a: str, b: str) -> bool:
    """Sender vs Contact comparison (OpenSIPS compares the URIs' text; we ignore case of scheme/host
    and the <> a Contact may carry)."""
    norm = [u.strip().strip("<>").lower() for u in (a, b)]
    return norm[0] == norm[1]


class ServiceBase:
    """The presence service's state (set by PresenceService.__init__) and its request helpers."""

    server: Any
    events: EventRegistry
    settings: PresenceSettings
    store: PresenceStore | None
    clock: Callable[[], float]
    presentities: PresentityTable
    subscriptions: SubsTable
    sender: NotifySender
    _locks: KeyedLocks
    bodies: BodyCache
    refusals: RefusalLog
    cluster: Any
    _notified: dict[tuple[str, str], int]
    _missed_while_fenced: bool
    _storing: set[DialogKey]

    def _event_of(self, msg: Any) -> PresenceEvent:
        try:
            ev = msg.event
        except ParseError as exc:
            raise _BadRequest(400, REASON_BAD_REQUEST) from exc
        event = self.events.search_event(ev.name, ev.params) if ev is not None else None
        if event is None:
            raise _BadRequest(489, REASON_BAD_EVENT, (("Allow-Events", self.events.get_event_list()),))
        return event

    def _reply(self, ctx: Any, status: int, reason: str, headers: Any = ()) -> None:
        self.server.reply(ctx, status, reason, headers=tuple(headers))

    def _refuse(self, ctx: Any, status: int, reason: str, refusal: Refusal, what: str) -> None:
        """A request a cap refused: `status` (503) with Retry-After, and a rate-limited log line
        naming the request (`what`) and the cap."""
        self.refusals.refused(refusal, self.clock(), what)
        self._reply(ctx, status, reason, (("Retry-After", str(CAP_RETRY_AFTER)),))

    def _adopted(self, sub: Subscription) -> Subscription:
        """`sub`, taken over from another node (clustering), as this node's: see _taken_over. The
        Contact is server_address, or our socket of the transport the dialog uses (the same rule as a
        SUBSCRIBE's reply, local_contact)."""
        proto = (sub.socket_info.partition(":")[0] or "udp").lower()
        sockets = list(getattr(self.server, "sockets", ()) or ())
        sock = next((s for s in sockets if str(getattr(s, "proto", "")).lower() == proto),
                    sockets[0] if sockets else None)
        if sock is None:   # no socket at all (a test without a server): only the CSeq moves on
            return _taken_over(sub, self.settings.server_address or sub.local_contact, sub.socket_info)
        contact = local_contact(self.settings.server_address, proto, sock.host, int(sock.port))
        return _taken_over(sub, contact, sock.name)

    def _lock(self, pres_uri: str) -> Any:
        """Serialises the handling of one presentity (its PUBLISHes, SUBSCRIBEs, NOTIFY bodies)."""
        return self._locks.hold(pres_uri)

