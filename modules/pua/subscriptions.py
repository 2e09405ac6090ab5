"""The subscriptions this server makes itself (RFC 6665 subscriber side): the sans-IO table of OpenSIPS pua's
SUBSCRIBE records (pua_api send_subscribe / is_dialog), for pua_bla.

No I/O and no clock: every method takes `now` and returns the SUBSCRIBE to send (a `SubSend`); the
answer comes back through `response`. The adapter (PuaModule) sends it and calls `due(now)` at
`next_deadline()`.

One record per (presentity, watcher, event). Its life:
    subscribe(expires>0), no record     -> initial SUBSCRIBE (new Call-ID and From tag)     RFC 6665 4.1.2.1
    2xx                                 -> the dialog: To tag, Contact as remote target,
                                           Record-Route reversed as route set, the granted
                                           Expires                                       RFC 3261 12.1.2
    a NOTIFY first (before the 2xx)     -> its From tag makes the dialog                    RFC 6665 4.1.2.4
    subscribe(expires>0) again          -> refresh in the dialog with the new Expires       4.1.2.2
    granted end - REFRESH_MARGIN        -> refresh while the subscriber's own end is ahead
    subscribe(expires=0)                -> unsubscribe (Expires: 0) in the dialog           4.1.2.3
    423 + Min-Expires                   -> sent again with Min-Expires (once)
    any other failure, or a NOTIFY with
    Subscription-State: terminated      -> forgotten: the next subscribe() starts afresh
One SUBSCRIBE in flight per record; a subscribe() meanwhile is queued (the newest wins).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from .table import REFRESH_MARGIN

__all__ = ["DEFAULT_MAX_SUBSCRIPTIONS", "SubKey", "SubRecord", "SubSend", "SubTable", "SubsFull"]

DEFAULT_MAX_SUBSCRIPTIONS = 100_000   # bound: subscriptions held


class SubsFull(Exception):
    """max_records subscriptions are held: a new one is refused (the caller logs it)."""


@dataclass(frozen=True, slots=True)
class SubKey:
    pres_uri: str      # the Request-URI of the initial SUBSCRIBE (pua_bla: the phone's contact)
    watcher_uri: str   # our From (pua_bla: the line's AoR)
    event: str


@dataclass(frozen=True, slots=True)
class SubSend:
    """A SUBSCRIBE to send. `seq` ties its answer to it."""

    key: SubKey
    seq: int
    expires: int
    call_id: str
    from_tag: str
    cseq: int
    to_uri: str
    contact: str                       # our Contact (pua_bla's server_address)
    to_tag: str | None = None          # None: the initial SUBSCRIBE
    remote_target: str | None = None
    route_set: tuple[str, ...] = ()
    outbound_proxy: str | None = None  # the next hop of the initial SUBSCRIBE


@dataclass(frozen=True, slots=True)
class SubRecord:
    key: SubKey
    to_uri: str
    contact: str
    call_id: str
    from_tag: str
    desired_at: float                  # the subscriber's own end (absolute)
    outbound_proxy: str | None = None
    cseq: int = 0
    to_tag: str | None = None
    remote_target: str | None = None
    route_set: tuple[str, ...] = ()
    expires_at: float = 0.0            # the end the notifier granted
    granted: int = 0
    in_flight: SubSend | None = None
    queued: int | None = None          # the Expires of a subscribe() made while one was in flight
    retried: bool = False


class SubTable:
    def __init__(self, *, max_records: int = DEFAULT_MAX_SUBSCRIPTIONS) -> None:
        self.max_records = max_records
        self._records: dict[SubKey, SubRecord] = {}
        self._by_dialog: dict[tuple[str, str], SubKey] = {}   # (Call-ID, our From tag) -> key
        self._seq = 0

    def get(self, key: SubKey) -> SubRecord | None:
        return self._records.get(key)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[SubRecord]:
        return iter(list(self._records.values()))

    def restore(self, rec: SubRecord) -> bool:
        """A subscription read back from the pua table (its dialog established). False when its key or
        its dialog is held already."""
        if rec.key in self._records or (rec.call_id, rec.from_tag) in self._by_dialog:
            return False
        if self.max_records and len(self._records) >= self.max_records:
            raise SubsFull(f"{len(self._records)} subscriptions held (max {self.max_records})")
        self._records[rec.key] = replace(rec, in_flight=None, queued=None, retried=False)
        self._by_dialog[(rec.call_id, rec.from_tag)] = rec.key
        return True

    def next_deadline(self) -> float | None:
        times = [min(r.desired_at, r.expires_at - _margin(r)) if r.to_tag else r.desired_at
                 for r in self._records.values() if r.in_flight is None]
        return min(times) if times else None

    # --- the subscriber's side --------------------------------------------------------------------
    def subscribe(self, key: SubKey, now: float, expires: int, *, to_uri: str, contact: str, call_id: str,
                  from_tag: str, outbound_proxy: str | None = None) -> SubSend | None:
        """Watch `key` for `expires` seconds (0: unsubscribe). `call_id` and `from_tag` are used when a
        new dialog starts. Returns the SUBSCRIBE to send now, or None. Raises SubsFull."""
        rec = self._records.get(key)
        if rec is None:
            if expires <= 0:
                return None
            if self.max_records and len(self._records) >= self.max_records:
                raise SubsFull(f"{len(self._records)} subscriptions held (max {self.max_records})")
            rec = SubRecord(key, to_uri, contact, call_id, from_tag, now + expires,
                            outbound_proxy=outbound_proxy)
            self._by_dialog[(call_id, from_tag)] = key
            return self._send(rec, expires)
        if rec.in_flight is not None:
            self._records[key] = replace(rec, queued=max(expires, 0))
            return None
        if expires <= 0 and rec.to_tag is None:
            self._forget(key)
            return None
        rec = replace(rec, desired_at=now + max(expires, 0), retried=False)
        return self._send(rec, max(expires, 0))

    def _send(self, rec: SubRecord, expires: int) -> SubSend:
        self._seq += 1
        rec = replace(rec, cseq=rec.cseq + 1)
        send = SubSend(rec.key, self._seq, expires, rec.call_id, rec.from_tag, rec.cseq, rec.to_uri,
                       rec.contact, rec.to_tag, rec.remote_target, rec.route_set,
                       rec.outbound_proxy if rec.to_tag is None else None)
        self._records[rec.key] = replace(rec, in_flight=send)
        return send

    def _forget(self, key: SubKey) -> None:
        rec = self._records.pop(key, None)
        if rec is not None:
            self._by_dialog.pop((rec.call_id, rec.from_tag), None)

    # --- the notifier's answers -------------------------------------------------------------------
    def response(self, send: SubSend, status: int, now: float, *, to_tag: str | None = None,
                 expires: int | None = None, contact: str | None = None, record_route: tuple[str, ...] = (),
                 min_expires: int | None = None) -> SubSend | None:
        """The final answer to `send` (408 for none). Returns the next SUBSCRIBE, if any."""
        rec = self._records.get(send.key)
        if rec is None or rec.in_flight is None or rec.in_flight.seq != send.seq:
            return None
        rec = replace(rec, in_flight=None)
        if 200 <= status < 300:
            if send.expires == 0:
                self._forget(send.key)
                return None
            if send.to_tag is None:
                # the initial SUBSCRIBE's 2xx (RFC 3261 12.1.2): its To tag (unless a NOTIFY came
                # first), and its Record-Route reversed as the route set
                rec = replace(rec, to_tag=rec.to_tag or to_tag or None,
                              route_set=tuple(reversed(record_route)))
            granted = expires if expires is not None and 0 <= expires <= send.expires else send.expires
            if granted == 0:   # a 2xx granting nothing ends the subscription (no refresh loop on it)
                self._forget(send.key)
                return None
            rec = replace(rec, remote_target=contact or rec.remote_target or send.key.pres_uri,
                          expires_at=now + granted, granted=granted, retried=False)
            if rec.to_tag is None:   # a 2xx without a To tag makes no dialog: nothing to refresh in
                self._forget(send.key)
                return None
            self._records[send.key] = rec
            if rec.queued is not None:
                queued = rec.queued
                self._records[send.key] = replace(rec, queued=None)
                if queued == 0:
                    return self._send(rec, 0)
                rec = replace(rec, desired_at=now + queued)
                return self._send(rec, queued)
            return None
        if status == 423 and min_expires is not None and min_expires > send.expires and not rec.retried:
            return self._send(replace(rec, retried=True), min_expires)
        self._forget(send.key)
        return None

    def notify(self, call_id: str, our_tag: str, their_tag: str, *,
               terminated: bool = False) -> SubKey | None:
        """A NOTIFY with this Call-ID, our tag in its To and `their_tag` in its From (OpenSIPS pua
        is_dialog): the key of the subscription it belongs to, or None. A NOTIFY ahead of the 2xx
        makes the dialog; `terminated` (Subscription-State: terminated) ends the subscription."""
        key = self._by_dialog.get((call_id, our_tag))
        rec = self._records.get(key) if key is not None else None
        if rec is None or key is None:
            return None
        if rec.to_tag is None:
            rec = replace(rec, to_tag=their_tag)
            self._records[key] = rec
        elif rec.to_tag != their_tag:
            return None   # another dialog of a forked SUBSCRIBE: not ours to follow (RFC 6665 4.1.2.4)
        if terminated and rec.in_flight is None:
            self._forget(key)
        return key

    # --- time -------------------------------------------------------------------------------------
    def due(self, now: float) -> list[SubSend]:
        """Refreshes due at `now`; subscriptions whose subscriber's end has come are forgotten (the
        notifier ends its copy at the same time)."""
        sends: list[SubSend] = []
        for rec in list(self._records.values()):
            if rec.in_flight is not None:
                continue
            if rec.desired_at <= now:
                self._forget(rec.key)
            elif rec.to_tag is not None and rec.expires_at - _margin(rec) <= now:
                sends.append(self._send(rec, max(1, int(rec.desired_at - now + 0.999))))
        return sends


def _margin(rec: SubRecord) -> float:
    return min(REFRESH_MARGIN, rec.granted / 2)
