"""The publications this server makes itself (RFC 3903, the event state compositor's client side): the
sans-IO table of OpenSIPS pua's hash table, publication part.

No I/O and no clock: every method takes `now`, returns the PUBLISH to send (a `Send`), and is told the
answer with `response`. The adapter (publisher.py) sends, delivers in-process or over SIP, and calls
`due(now)` at `next_deadline()`.

One record per (presentity, event, id) - OpenSIPS's pres_uri + event + pres_id. Its life, RFC 3903:
    publish(body, expires>0), no record     -> initial PUBLISH (no SIP-If-Match, body)          4.2
    2xx                                     -> SIP-ETag and the granted Expires kept             4.1
    publish(body) again                     -> modify: SIP-If-Match + body                       4.4
    granted end - REFRESH_MARGIN            -> refresh: SIP-If-Match, no body                    4.3
    publish(expires=0)                      -> remove: SIP-If-Match, Expires: 0 (body if given)  4.5
    412 to a modify or refresh              -> the state is gone at the compositor: a fresh
                                               initial PUBLISH of the current body (once)        4.1
    423 Interval Too Brief + Min-Expires    -> sent again with Expires = Min-Expires (once)      11.2
    the publisher's own end reached         -> forgotten (the compositor expires its copy too)
One PUBLISH in flight per record: a publish() meanwhile is queued (the newest wins) and sent after the
answer, so SIP-If-Match always names the newest ETag.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

__all__ = ["DEFAULT_MAX_RECORDS", "REFRESH_MARGIN", "Follows", "Op", "PuaFull", "PubKey", "PubRecord",
           "PubTable", "Send", "Sender"]

REFRESH_MARGIN = 10.0          # seconds before the granted end a refresh is sent (at most half the grant)
DEFAULT_MAX_RECORDS = 100_000  # bound: publications held


Sender = tuple[str, str]   # (header name, URI): "Sender", "sip:201@10.0.0.7:5062"
# (Call-ID, our tag or ""): the dialog a publication follows - pua_dialoginfo's call, the subscription
# whose NOTIFYs pua_bla publishes. Its worker owns the publication's row in the pua table (store.py).
Follows = tuple[str, str]


class Op(enum.Enum):
    INITIAL = "initial"
    MODIFY = "modify"
    REFRESH = "refresh"
    REMOVE = "remove"


class PuaFull(Exception):
    """The table holds max_records publications: a new one is refused (the caller logs it)."""


@dataclass(frozen=True, slots=True)
class PubKey:
    pres_uri: str
    event: str        # "dialog", "presence"
    id: str = ""      # OpenSIPS pres_id: one presentity may have several publications of one event


@dataclass(frozen=True, slots=True)
class Send:
    """A PUBLISH to send. `seq` ties its answer to it (an answer to an older one is ignored)."""

    key: PubKey
    op: Op
    seq: int
    expires: int
    etag: str | None = None        # SIP-If-Match
    body: bytes | None = None
    content_type: str = ""
    outbound_proxy: str | None = None
    sender: Sender | None = None   # pua_bla's (header name, URI): the publishing phone, not notified


@dataclass(frozen=True, slots=True)
class _Queued:
    body: bytes | None
    content_type: str
    desired_at: float | None       # None: a removal


@dataclass(frozen=True, slots=True)
class PubRecord:
    key: PubKey
    body: bytes
    content_type: str
    desired_at: float              # the end the publisher asked for (absolute)
    etag: str | None = None        # from the last 2xx
    expires_at: float = 0.0        # the end the compositor granted (absolute); 0 before the first 2xx
    granted: int = 0               # the Expires of the last 2xx
    outbound_proxy: str | None = None
    sender: Sender | None = None
    in_flight: Send | None = None
    queued: _Queued | None = None
    retried: bool = False          # a 412/423 was answered by a new PUBLISH once already
    follows: Follows | None = None
    loaded: bool = False           # read from the pua table, not answered since (no body known)


class PubTable:
    """The publications, keyed by PubKey. default_expires: the Expires of a publish() without one;
    min_expires: a shorter (non-zero) one is raised to it (OpenSIPS pua min_expires)."""

    def __init__(self, *, default_expires: int = 3600, min_expires: int = 0,
                 max_records: int = DEFAULT_MAX_RECORDS) -> None:
        self.default_expires = default_expires
        self.min_expires = min_expires
        self.max_records = max_records
        self._records: dict[PubKey, PubRecord] = {}
        self._seq = 0

    # --- reading ----------------------------------------------------------------------------------
    def get(self, key: PubKey) -> PubRecord | None:
        return self._records.get(key)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[PubRecord]:
        return iter(list(self._records.values()))

    def restore(self, rec: PubRecord) -> bool:
        """A publication read back from the pua table (confirmed: it has an ETag). False when its key is
        held already (its publisher published again before the table was read: that one is newer)."""
        if rec.key in self._records:
            return False
        if self.max_records and len(self._records) >= self.max_records:
            raise PuaFull(f"{len(self._records)} publications held (max {self.max_records})")
        self._records[rec.key] = replace(rec, in_flight=None, queued=None, retried=False, loaded=True)
        return True

    def next_deadline(self) -> float | None:
        """When `due` has something to do next (None: nothing held)."""
        times = [self._deadline(r) for r in self._records.values() if r.in_flight is None]
        return min(times) if times else None

    @staticmethod
    def _deadline(rec: PubRecord) -> float:
        if rec.etag is None:
            return rec.desired_at
        grant = rec.expires_at
        return min(rec.desired_at, grant - _margin(rec))

    # --- the publisher's side ---------------------------------------------------------------------
    def publish(self, key: PubKey, body: bytes | None, now: float, *, expires: int | None = None,
                content_type: str = "", outbound_proxy: str | None = None,
                etag: str | None = None, sender: Sender | None = None,
                follows: Follows | None = None) -> Send | None:
        """The state of `key` is now `body` for `expires` seconds (None: default_expires; 0: remove).
        Returns the PUBLISH to send now, or None (nothing to send, or queued behind one in flight).
        `etag`: for a publication this table does not hold, the ETag it had before a restart (kept by
        its module, e.g. in the dialog) - it is modified (or removed) rather than published afresh, so
        the compositor does not keep the old copy. Raises PuaFull for a new publication over
        max_records. `sender`: OpenSIPS pua's extra header naming the publisher (pua_bla), kept with the
        record for its refreshes. `follows`: the dialog whose worker owns the publication (kept with
        it, written to the pua table). A publication read back from the pua table and not answered
        since takes the `etag` its publisher kept, which is never older than the table's (written every
        update_period)."""
        if expires is None or expires < 0:
            expires = self.default_expires
        elif 0 < expires < self.min_expires:
            expires = self.min_expires
        rec = self._records.get(key)
        if rec is None and etag:
            if self.max_records and len(self._records) >= self.max_records:
                raise PuaFull(f"{len(self._records)} publications held (max {self.max_records})")
            rec = PubRecord(key, body or b"", content_type, now + max(expires, 1), etag=etag,
                            outbound_proxy=outbound_proxy, sender=sender, follows=follows)
            self._records[key] = rec
        elif rec is not None:
            kept = etag if etag and rec.loaded and rec.in_flight is None else rec.etag
            if kept != rec.etag or (follows and follows != rec.follows):
                rec = replace(rec, etag=kept, follows=follows or rec.follows)
                self._records[key] = rec
        if expires == 0:
            if rec is None:
                return None
            if rec.in_flight is not None:
                queued = _Queued(body, content_type or rec.content_type, None)
                self._records[key] = replace(rec, queued=queued)
                return None
            if rec.etag is None:
                del self._records[key]
                return None
            return self._send(replace(rec, body=body or rec.body), Op.REMOVE, 0, body=body)
        desired_at = now + expires
        if rec is None:
            if self.max_records and len(self._records) >= self.max_records:
                raise PuaFull(f"{len(self._records)} publications held (max {self.max_records})")
            rec = PubRecord(key, body or b"", content_type, desired_at, outbound_proxy=outbound_proxy,
                            sender=sender, follows=follows)
            return self._send(rec, Op.INITIAL, expires, body=rec.body)
        if rec.in_flight is not None:
            queued = _Queued(body, content_type or rec.content_type, desired_at)
            self._records[key] = replace(rec, queued=queued)
            return None
        rec = replace(rec, body=body if body is not None else rec.body,
                      content_type=content_type or rec.content_type, desired_at=desired_at, retried=False,
                      sender=sender or rec.sender)
        if rec.etag is None:
            return self._send(rec, Op.INITIAL, expires, body=rec.body)
        return self._send(rec, Op.MODIFY if body is not None else Op.REFRESH, expires,
                          body=body)

    def _send(self, rec: PubRecord, op: Op, expires: int, *, body: bytes | None) -> Send:
        self._seq += 1
        send = Send(rec.key, op, self._seq, expires, None if op is Op.INITIAL else rec.etag, body,
                    rec.content_type, rec.outbound_proxy, rec.sender)
        self._records[rec.key] = replace(rec, in_flight=send)
        return send

    # --- the compositor's answer ------------------------------------------------------------------
    def response(self, send: Send, status: int, now: float, *, etag: str | None = None,
                 expires: int | None = None, min_expires: int | None = None) -> Send | None:
        """The final answer to `send` (408 for no answer). Returns the next PUBLISH, if any."""
        rec = self._records.get(send.key)
        if rec is None or rec.in_flight is None or rec.in_flight.seq != send.seq:
            return None   # an answer to a PUBLISH that is not the one in flight (the record was dropped)
        rec = replace(rec, in_flight=None)
        if 200 <= status < 300:
            if send.op is Op.REMOVE:
                del self._records[send.key]
                return self._after_removal(rec, now)
            granted = expires if expires is not None and expires >= 0 else send.expires
            rec = replace(rec, etag=etag or rec.etag, expires_at=now + granted, granted=granted,
                          retried=False, loaded=False)
            self._records[send.key] = rec
            return self._next_queued(rec, now)
        if status == 412 and send.op in (Op.MODIFY, Op.REFRESH) and not rec.retried and rec.body:
            # RFC 3903 4.1: the ETag is unknown to the compositor - publish the state afresh. (A
            # publication read from the pua table has no body to publish: forgotten below, its
            # publisher's next change publishes it afresh.)
            rec = replace(rec, etag=None, retried=True)
            return self._send(rec, Op.INITIAL, _remaining(rec, now), body=rec.body)
        if status == 423 and min_expires is not None and min_expires > send.expires and not rec.retried:
            rec = replace(rec, retried=True)
            return self._send(rec, send.op, min_expires, body=send.body)
        # Any other failure (or a second 412/423): the compositor holds nothing we can name - forget
        # it; a queued change starts afresh.
        del self._records[send.key]
        if rec.queued is not None and rec.queued.desired_at is not None:
            return self.publish(rec.key, rec.queued.body or rec.body, now,
                                expires=max(1, math.ceil(rec.queued.desired_at - now)),
                                content_type=rec.queued.content_type, outbound_proxy=rec.outbound_proxy,
                                sender=rec.sender, follows=rec.follows)
        return None

    def _after_removal(self, rec: PubRecord, now: float) -> Send | None:
        q = rec.queued
        if q is None or q.desired_at is None or q.desired_at <= now:
            return None
        return self.publish(rec.key, q.body, now, expires=max(1, math.ceil(q.desired_at - now)),
                            content_type=q.content_type, outbound_proxy=rec.outbound_proxy,
                            sender=rec.sender, follows=rec.follows)

    def _next_queued(self, rec: PubRecord, now: float) -> Send | None:
        q = rec.queued
        if q is None:
            return None
        self._records[rec.key] = replace(rec, queued=None)
        if q.desired_at is None:
            return self.publish(rec.key, q.body, now, expires=0, content_type=q.content_type)
        return self.publish(rec.key, q.body, now, expires=max(1, math.ceil(q.desired_at - now)),
                            content_type=q.content_type)

    # --- time -------------------------------------------------------------------------------------
    def due(self, now: float) -> list[Send]:
        """Refreshes due at `now`; publications whose publisher's end has come are forgotten."""
        sends: list[Send] = []
        for rec in list(self._records.values()):
            if rec.in_flight is not None:
                continue
            if rec.desired_at <= now:
                del self._records[rec.key]
                continue
            if rec.etag is not None and rec.expires_at - _margin(rec) <= now:
                sends.append(self._send(rec, Op.REFRESH, _remaining(rec, now), body=None))
        return sends

    def drop(self, key: PubKey) -> None:
        """Forget a publication without telling the compositor (its send failed before leaving)."""
        self._records.pop(key, None)


def _margin(rec: PubRecord) -> float:
    return min(REFRESH_MARGIN, rec.granted / 2)


def _remaining(rec: PubRecord, now: float) -> int:
    return max(1, math.ceil(rec.desired_at - now))
