"""Publications (RFC 3903) and the in-memory presentity table (OpenSIPS pres_htable).

`PresentityTable.handle_publish` decides what a PUBLISH does without changing anything; the caller
stores the decision's change in the database, then `commit`s it and replies (a publication is
stored before its 200 OK). Time is always passed in as `now` (seconds, float).

RFC 3903 section 6 (processing PUBLISH) in short:
  no SIP-If-Match, body           -> new publication, 200 + SIP-ETag + Expires
  SIP-If-Match, no body           -> refresh, 200 + new SIP-ETag (no NOTIFY)
  SIP-If-Match, body              -> modify, 200 + new SIP-ETag, watchers notified
  SIP-If-Match, Expires: 0        -> remove, 200 + Expires: 0, watchers notified
  unknown SIP-If-Match            -> 412 Conditional Request Failed
"""

from __future__ import annotations

import enum
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from operator import attrgetter

from ._compact import compact
from .etag import EtagGenerator
from .events import BodyError, PresenceEvent
from .limits import DEFAULT_MAX_PRESENTITIES, Refusal

# Reason phrases as OpenSIPS 3.4 writes them on the wire (OPENSIPS-BEHAVIOUR.md, captures 07 and 15).
REASON_OK = "OK"
REASON_BAD_REQUEST = "Bad request"
REASON_CONDITIONAL_FAILED = "Conditional request failed"
REASON_TOO_MANY = "Too many publications"
REASON_BODY_TOO_LARGE = "Presentity State Too Large"

_RECEIVED = attrgetter("received_time")   # publications in aggregation order, sorted without a call each
DEFAULT_MAX_PER_PRESENTITY = 256  # bound: publications (devices) kept for one presentity and event
# Bound (modparam max_aggregated_body_size): the bodies of one presentity's publications of one event,
# together - what its NOTIFY body is aggregated from. 60 KiB keeps that NOTIFY, headers included, in
# one UDP datagram (65,507 bytes) and under the 64 KiB most SIP stacks (OpenSIPS: BUF_SIZE 65535)
# read, while leaving room for dozens of devices' PIDF documents (1-3 KB each). Without it one
# presentity could hold 256 x 64 KB = 16 MB, and every change sent that to each watcher.
DEFAULT_MAX_AGGREGATED_BODY_SIZE = 61440
MAX_READ_TIMES = 100_000   # bound: presentities whose last read time is kept (apply_change); beyond, a floor


@dataclass(frozen=True, slots=True)
class Publication:
    """One published state (a row of OpenSIPS's presentity table)."""

    pres_uri: str
    event: str            # registered event name ("presence", "dialog;sla")
    etag: str
    expires_at: float     # absolute time the publisher was granted (without expires_offset)
    body: bytes
    content_type: str
    received_time: float
    sender: str | None = None
    generation: int = 0   # how many etags this publication has had before the current one

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now))


@dataclass(frozen=True, slots=True)
class PublishFacts:
    """What handle_publish needs from a PUBLISH, already parsed by the caller."""

    pres_uri: str                 # sip:user@domain from the Request-URI
    event: PresenceEvent
    if_match: str | None = None   # SIP-If-Match
    expires: int | None = None    # Expires header, None when absent
    body: bytes | None = None     # None or b"" when there is no body
    content_type: str | None = None
    sender: str | None = None     # handle_publish(sender_uri) value


class PublishAction(enum.Enum):
    NONE = "none"          # nothing stored (errors; Expires 0 on a new publication)
    INSERT = "insert"
    REFRESH = "refresh"    # new etag and expiry, same body
    MODIFY = "modify"      # new etag, expiry and body
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class PublishDecision:
    """The reply to send and the change to make. `publication` is the row after the change (for
    REMOVE: the removed row); `old_etag` is the etag of the row being changed (database key)."""

    status: int
    reason: str
    action: PublishAction = PublishAction.NONE
    etag: str | None = None          # SIP-ETag of the reply
    expires: int | None = None       # Expires of the reply
    publication: Publication | None = None
    old_etag: str | None = None
    notify: bool = False             # watchers must be told
    removed_body: bytes | None = None
    refusal: Refusal | None = None   # a cap refused it (503 + Retry-After, logged by the caller)
    retry_after: int | None = None   # Retry-After of an error reply: when the condition may be over
    detail: str | None = None        # why the PUBLISH was refused, for the log line

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _error(status: int, reason: str) -> PublishDecision:
    return PublishDecision(status, reason)


class PresentityTable:
    """Live publications by (presentity URI, event), then by etag, in arrival order.

    expires_offset: extra seconds a publication is kept (and its etag still accepted) after the
    expiry granted to the publisher, as OpenSIPS's expires_offset.
    max_presentities: cap on the publications held (rows of OpenSIPS's presentity table: one per
    publishing device and event; modparam max_presentities, 0 = no cap). Only a new publication is
    refused: refreshing, modifying or removing one held never is.
    """

    def __init__(self, etags: EtagGenerator, *, max_expires: int = 3600, expires_offset: int = 0,
                 max_per_presentity: int = DEFAULT_MAX_PER_PRESENTITY,
                 max_presentities: int = DEFAULT_MAX_PRESENTITIES,
                 max_aggregated_body_size: int = DEFAULT_MAX_AGGREGATED_BODY_SIZE) -> None:
        self._etags = etags
        self.max_expires = max_expires
        self.expires_offset = expires_offset
        self.max_per_presentity = max_per_presentity
        self.max_presentities = max_presentities
        self.max_aggregated_body_size = max_aggregated_body_size
        self._table: dict[tuple[str, str], dict[str, Publication]] = {}
        self._count = 0   # publications in _table, kept as it changes (len() per PUBLISH would walk it)
        self._high = 0   # the most presentities held since _table was last compacted (expire)
        # time.monotonic() at the end of the last database read of a presentity (replace_presentity),
        # and before which every read ended (load, or the map overflowed): apply_change's check
        self._read_at: dict[tuple[str, str], float] = {}
        self.read_floor = 0.0

    # --- the decision ---------------------------------------------------------------------------
    def handle_publish(self, facts: PublishFacts, now: float) -> PublishDecision:
        """Decide what a PUBLISH does. Pure: nothing changes until `commit(decision)`."""
        event = facts.event
        body = facts.body or None
        if body is None and facts.if_match is None:
            return _error(400, REASON_BAD_REQUEST)
        expires = event.default_expires if facts.expires is None else facts.expires
        # RFC 3903 allows 423 for too-brief intervals; OpenSIPS accepts small values as they are.
        expires = max(0, min(expires, self.max_expires))

        if facts.if_match is None:
            assert body is not None
            if expires == 0:
                # Nothing to keep: answered like OpenSIPS (200, a fresh etag, Expires: 0).
                return PublishDecision(200, REASON_OK, PublishAction.NONE, self._etags.new(), 0)
            refused = self._check_body(event, body)
            if refused is not None:
                return refused
            refusal = self._over_cap(facts)
            if refusal is not None:
                return PublishDecision(503, REASON_TOO_MANY, refusal=refusal)
            refused = self._check_aggregated_size(facts.pres_uri, event.name, body, None, now)
            if refused is not None:
                return refused
            etag = self._etags.new()
            # The presentity URI is shared with its watchers' records, the content type with every
            # publication of the package (sys.intern; subscription.py: memory, issue 7).
            pub = Publication(sys.intern(facts.pres_uri), event.name, etag, now + expires, body,
                              sys.intern(facts.content_type or event.content_type), now, facts.sender)
            return PublishDecision(200, REASON_OK, PublishAction.INSERT, etag, expires, pub, None, True)

        old = self.get(facts.pres_uri, event.name, facts.if_match, now)
        if old is None:
            return _error(412, REASON_CONDITIONAL_FAILED)
        if expires == 0:
            # The reply echoes the removed etag (capture 10a).
            return PublishDecision(200, REASON_OK, PublishAction.REMOVE, old.etag, 0, old, old.etag,
                                   True, old.body)
        if body is not None:
            refused = self._check_body(event, body) or \
                self._check_aggregated_size(facts.pres_uri, event.name, body, old.etag, now)
            if refused is not None:
                return refused
        etag, generation = old.etag, old.generation
        if not event.etag_not_new:
            generation += 1
            etag = self._etags.new(generation)
        if body is None:
            pub = replace(old, etag=etag, expires_at=now + expires, generation=generation)
            return PublishDecision(200, REASON_OK, PublishAction.REFRESH, etag, expires, pub, old.etag, False)
        pub = replace(old, etag=etag, expires_at=now + expires, body=body, received_time=now,
                      content_type=sys.intern(facts.content_type) if facts.content_type else old.content_type,
                      sender=facts.sender,
                      generation=generation)
        return PublishDecision(200, REASON_OK, PublishAction.MODIFY, etag, expires, pub, old.etag, True)

    def _over_cap(self, facts: PublishFacts) -> Refusal | None:
        """The cap a new publication would pass, if any."""
        if self.max_presentities and self._count >= self.max_presentities:
            return Refusal("max_presentities", self.max_presentities)
        if len(self._table.get((facts.pres_uri, facts.event.name), ())) >= self.max_per_presentity:
            return Refusal("publications of one presentity", self.max_per_presentity, facts.pres_uri)
        return None

    @staticmethod
    def _check_body(event: PresenceEvent, body: bytes) -> PublishDecision | None:
        if event.evs_publ_handl is None:
            return None
        try:
            event.evs_publ_handl(body)
        except BodyError as exc:
            return _error(exc.status, exc.reason)
        return None

    def _check_aggregated_size(self, pres_uri: str, event: str, body: bytes, replacing: str | None,
                               now: float) -> PublishDecision | None:
        """413 when `body`, with the bodies of the presentity's other publications (all but the one
        with etag `replacing`), would exceed max_aggregated_body_size.

        RFC 3261 21.4.11 413: "the request entity-body is larger than the server is willing or able to
        process" - here, given what the presentity already holds; "if the condition is temporary, the
        server SHOULD include a Retry-After": the seconds until the first of the other publications
        expires (without other publications the body alone is too large: no Retry-After). Not 503:
        that says the server is overloaded and sends phones to another server; not 403: the publisher
        is allowed to publish, just not this much."""
        rows = self._table.get((pres_uri, event))
        total = len(body)
        if rows:
            for etag, pub in rows.items():
                if etag != replacing:
                    total += len(pub.body)
        limit = self.max_aggregated_body_size
        if total <= limit:
            return None
        others = [pub.expires_at for etag, pub in (rows or {}).items() if etag != replacing]
        retry_after = max(1, round(min(others) + self.expires_offset - now)) if others else None
        return PublishDecision(413, REASON_BODY_TOO_LARGE, retry_after=retry_after,
                               detail=f"its publications' bodies would total {total} bytes "
                                      f"(max_aggregated_body_size {limit}: {len(body)} in this PUBLISH, "
                                      f"{total - len(body)} in {len(others)} other publication(s))")

    # --- changing the table ----------------------------------------------------------------------
    def commit(self, decision: PublishDecision) -> None:
        """Apply a decision once its change is stored."""
        pub = decision.publication
        if pub is None or decision.action is PublishAction.NONE:
            return
        key = (pub.pres_uri, pub.event)
        if decision.action is PublishAction.INSERT:
            self._add(key, pub)
            return
        rows = self._table.get(key)
        if rows is None or decision.old_etag not in rows:
            return  # expired meanwhile; the stored change is cleaned with it
        del rows[decision.old_etag]
        if decision.action is not PublishAction.REMOVE:
            rows[pub.etag] = pub
        else:
            self._count -= 1
        if not rows:
            del self._table[key]

    def apply_change(self, pres_uri: str, event: str, etag: str, old_etag: str | None,
                     pub: Publication | None, begun: float) -> bool:
        """Another worker's stored change of one publication, taken when memory holds the state it was
        made on: `pub` new (old_etag None: inserted), `old_etag` replaced by `pub` (modified), `etag`
        gone (pub None: removed). `begun`: time.monotonic() before the change's transaction began.
        False, nothing changed, when memory does not hold that state, or when memory was read from the
        database after `begun` (the read may have seen the change, and this worker built on it: an
        insert taken again would bring back a publication it has replaced since); the caller reads."""
        key = (pres_uri, event)
        if max(self.read_floor, self._read_at.get(key, 0.0)) >= begun:
            return False
        rows = self._table.get(key)
        if pub is None:
            if rows is None or etag not in rows:
                return False
            del rows[etag]
            self._count -= 1
            if not rows:
                del self._table[key]
            return True
        if old_etag is None:
            if (rows is not None and (etag in rows or len(rows) >= self.max_per_presentity)):
                return False
            self._add(key, pub)
            return True
        if rows is None or old_etag not in rows or (etag != old_etag and etag in rows):
            return False
        del rows[old_etag]
        rows[etag] = pub
        return True

    def load(self, pub: Publication) -> None:
        """Put back a publication read from the database at start (it counts against the cap, which
        never refuses what is already stored)."""
        self._add((pub.pres_uri, pub.event), pub)

    def _add(self, key: tuple[str, str], pub: Publication) -> None:
        rows = self._table.setdefault(key, {})
        if pub.etag not in rows:
            self._count += 1
        rows[pub.etag] = pub

    def replace_presentity(self, pres_uri: str, event: str, pubs: list[Publication]) -> None:
        """Make `pubs` the publications of (pres_uri, event) - fallback2db, where the database shared
        with other servers is the truth; a publication we hold with the same etag and body is kept as it
        is. Not the body alone: an event whose modify keeps the ETag (etag_not_new: dialog;sla) changes
        the body under the same etag, and the old body must not win."""
        key = (pres_uri, event)
        if len(self._read_at) >= MAX_READ_TIMES:
            self._read_at.clear()
            self.read_floor = time.monotonic()
        self._read_at[key] = time.monotonic()
        old = self._table.get(key, {})
        rows = {}
        for p in pubs[: self.max_per_presentity]:
            held = old.get(p.etag)
            rows[p.etag] = held if held is not None and held.body == p.body else p
        self._count += len(rows) - len(old)
        if rows:
            self._table[key] = rows
        else:
            self._table.pop(key, None)

    def expire(self, now: float) -> list[Publication]:
        """Remove and return publications past expiry + expires_offset (the clean_period timer)."""
        gone: list[Publication] = []
        self._high = max(self._high, len(self._table))
        for key in list(self._table):
            rows = self._table[key]
            for etag, pub in list(rows.items()):
                if pub.expires_at + self.expires_offset <= now:
                    gone.append(pub)
                    del rows[etag]
            if not rows:
                del self._table[key]
        self._count -= len(gone)
        self._table, self._high = compact(self._table, self._high)
        return gone

    def next_deadline(self) -> float | None:
        """When the next publication expires (for a timer), or None."""
        times = [p.expires_at + self.expires_offset for rows in self._table.values() for p in rows.values()]
        return min(times) if times else None

    # --- lookups ---------------------------------------------------------------------------------
    def get(self, pres_uri: str, event: str, etag: str, now: float | None = None) -> Publication | None:
        """The live publication with that etag, or None (also when past its grace time)."""
        pub = self._table.get((pres_uri, event), {}).get(etag)
        if pub is not None and now is not None and pub.expires_at + self.expires_offset <= now:
            return None
        return pub

    def publications(self, pres_uri: str, event: str) -> list[Publication]:
        """Publications of a presentity for an event, oldest received first (aggregation order)."""
        rows = self._table.get((pres_uri, event), {})
        return sorted(rows.values(), key=_RECEIVED)

    def contains_presence(self, pres_uri: str, event: str = "presence") -> bool:
        return bool(self._table.get((pres_uri, event)))

    def keys(self) -> list[tuple[str, str]]:
        return list(self._table)

    def __iter__(self) -> Iterator[Publication]:
        for rows in list(self._table.values()):
            yield from list(rows.values())

    def __len__(self) -> int:
        return self._count
