"""Subscriptions (RFC 6665 / RFC 3265) and the in-memory subscription table (OpenSIPS subs_htable).

`SubsTable.handle_subscribe` decides what a SUBSCRIBE does without changing anything; the caller
`commit`s the decision, replies, then sends the NOTIFY the decision asks for. The subscription
states and what moves them are ONE table, `TRANSITIONS`, below. Time is passed in as `now`.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Container, Iterator
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from routescript.sip import SIPMessage, SipURI, Source

from ._compact import compact
from .events import PUBL_TYPE, PresenceEvent
from .limits import DEFAULT_MAX_SUBSCRIPTIONS, DEFAULT_MAX_SUBSCRIPTIONS_PER_SOURCE, Refusal, SourceCounts

if TYPE_CHECKING:
    from .clustering import WatcherInterest

REASON_OK = "OK"
REASON_ACCEPTED = "Accepted"
REASON_BAD_REQUEST = "Bad request"
REASON_NO_SUBSCRIPTION = "Subscription does not exist"
REASON_TOO_MANY = "Too many subscriptions"

DEFAULT_MAX_WATCHERS = 1000  # bound: subscriptions to one presentity and event

# db_flag values of OpenSIPS's subs_t (hash.h): what the next database sync must do with a record.
NO_UPDATEDB_FLAG = 1
UPDATEDB_FLAG = 2
INSERTDB_FLAG = 4


class SubState(enum.IntEnum):
    """Subscription status, with the numbers OpenSIPS keeps in active_watchers.status."""

    ACTIVE = 1
    PENDING = 2
    TERMINATED = 3
    WAITING = 4


class SubEvent(enum.Enum):
    """What happens to a subscription."""

    # Hashed by identity, in C: members are singletons compared by identity (Enum's own __hash__ hashes
    # the name in Python, two calls per TRANSITIONS lookup).
    __hash__ = object.__hash__

    ALLOW = "allow"              # authorization says allow (or force_active)
    CONFIRM = "confirm"          # authorization says ask the presentity (pending)
    BLOCK = "block"              # authorization says block
    DEACTIVATE = "deactivate"    # no rule matches any more (refreshWatchers)
    REFRESH = "refresh"          # in-dialog SUBSCRIBE with Expires > 0
    UNSUBSCRIBE = "unsubscribe"  # in-dialog SUBSCRIBE with Expires: 0
    EXPIRE = "expire"            # the clean_period timer found it expired
    NOTIFY_FAILED = "notify_failed"  # a NOTIFY got 481, or 408 with end_sub_on_timeout
    NOTIFY_TOO_LARGE = "notify_too_large"  # a NOTIFY fits no transport the watcher takes (513)


A, P, T, W = SubState.ACTIVE, SubState.PENDING, SubState.TERMINATED, SubState.WAITING
E = SubEvent

# (state, event) -> state. A pair missing here is a bug in the caller (SubscriptionStateError).
TRANSITIONS: dict[tuple[SubState, SubEvent], SubState] = {
    (P, E.ALLOW): A, (W, E.ALLOW): A, (A, E.ALLOW): A,
    (P, E.CONFIRM): P, (W, E.CONFIRM): P, (A, E.CONFIRM): P,
    (P, E.BLOCK): T, (W, E.BLOCK): T, (A, E.BLOCK): T,
    (P, E.DEACTIVATE): T, (W, E.DEACTIVATE): T, (A, E.DEACTIVATE): T,
    (A, E.REFRESH): A, (P, E.REFRESH): P, (W, E.REFRESH): W,
    (A, E.UNSUBSCRIBE): T, (P, E.UNSUBSCRIBE): T, (W, E.UNSUBSCRIBE): T,
    (A, E.EXPIRE): T, (P, E.EXPIRE): T, (W, E.EXPIRE): T, (T, E.EXPIRE): T,
    (A, E.NOTIFY_FAILED): T, (P, E.NOTIFY_FAILED): T, (W, E.NOTIFY_FAILED): T, (T, E.NOTIFY_FAILED): T,
    (A, E.NOTIFY_TOO_LARGE): T, (P, E.NOTIFY_TOO_LARGE): T, (W, E.NOTIFY_TOO_LARGE): T,
    (T, E.NOTIFY_TOO_LARGE): T,
}

# The Subscription-State reason a move to terminated carries (RFC 6665 4.1.3; OpenSIPS's choices:
# an unsubscribe is reported as "timeout", capture 11). A state too large to deliver is "probation":
# "the client SHOULD retry at some later time" - by then the presentity's state may have shrunk;
# "timeout" or "deactivated" would invite an immediate SUBSCRIBE that fails the same way.
TERMINATION_REASONS: dict[SubEvent, str] = {
    E.BLOCK: "rejected", E.DEACTIVATE: "deactivated", E.UNSUBSCRIBE: "timeout", E.EXPIRE: "timeout",
    E.NOTIFY_FAILED: "timeout", E.NOTIFY_TOO_LARGE: "probation",
}

del A, P, T, W, E


def auth_change(old: SubState, new: SubState) -> SubEvent | None:
    """refreshWatchers / a rules change: what a new authorization outcome `new` does to a watcher in
    state `old` (None: nothing to tell). OPENSIPS-BEHAVIOUR (measured): pending -> allowed is an active
    NOTIFY; -> block is terminated;reason=rejected; an active watcher no rule allows any more is
    terminated;reason=deactivated (RFC 6665: it may subscribe again, and is then pending)."""
    if new is old or new is SubState.WAITING:
        return None
    if new is SubState.ACTIVE:
        return SubEvent.ALLOW
    if new is SubState.TERMINATED:
        return SubEvent.BLOCK
    if old is SubState.ACTIVE:
        return SubEvent.DEACTIVATE
    return None


class SubscriptionStateError(Exception):
    """A transition the table does not allow: a bug in the caller, never the peer's fault."""


def transition(state: SubState, event: SubEvent) -> SubState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise SubscriptionStateError(f"no transition from {state.name} on {event.value}") from None


DialogKey = tuple[str, str, str]  # (Call-ID, our To tag, watcher's From tag)

# Memory (issue 7): a subscription is kept ~100,000 times over. The strings most records repeat (the
# domains, the receiving socket, our Contact, the User-Agent, the presentity URI that its publication and
# its other watchers name too) are shared through sys.intern, which drops an interned string once nothing
# else refers to it. A string unique to one dialog (Call-ID, tags, the watcher's Contact) is not interned:
# the interned table would cost more than it saves.
shared = sys.intern

MAX_SHARED_SOURCES = 4096   # bound: distinct transport sources kept for sharing (SubsTable.share_source)
# bound: watchers whose subscription ended, kept until the next clean_period forgets their allowed
# decision in the watchers table (SubsTable.take_ended); past it their rows stay, as in OpenSIPS.
MAX_ENDED_WATCHERS = 100_000

WatcherKey = tuple[str, str, str, str]   # (presentity URI, watcher user, watcher domain, event)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One subscription dialog (OpenSIPS subs_t; a row of active_watchers)."""

    pres_uri: str
    event: str                    # registered event name
    to_user: str
    to_domain: str
    watcher_user: str             # From user
    watcher_domain: str           # From host
    callid: str
    to_tag: str                   # ours
    from_tag: str                 # the watcher's
    contact: str                  # watcher Contact URI: the NOTIFY Request-URI
    expires_at: float             # absolute time granted to the watcher (without expires_offset)
    status: SubState = SubState.PENDING
    reason: str | None = None
    event_id: str | None = None
    local_cseq: int = 0           # CSeq of the last NOTIFY sent (the next one is local_cseq + 1)
    remote_cseq: int = 0
    record_route: tuple[str, ...] = ()   # Record-Route entries of the SUBSCRIBE, in order (route set)
    version: int = 0              # NOTIFYs sent so far (body "version" of watcherinfo/dialog-info)
    socket_info: str = ""         # receiving socket, "udp:127.0.0.1:5060"
    local_contact: str = ""       # our Contact (server_address or the receiving socket)
    user_agent: str = ""
    db_flag: int = INSERTDB_FLAG
    # Where the SUBSCRIBE came from (transport Source), to reuse a TCP connection; not stored.
    source: Source | None = field(default=None, compare=False, repr=False)
    # handle_subscribe("1"): active whatever the rules say, and the body is not filtered by them either
    # (stored as reason "forced" on an active row; OpenSIPS keeps reason "polite-block" the same way).
    forced: bool = False
    # (callid, to_tag, from_tag), the table's key for this dialog: given once when the record is made
    # (dialog_key) and carried by every copy (evolve), the very tuple the table is keyed by. Required,
    # so a record cannot be made without it; not compared (it repeats three fields).
    key: DialogKey = field(kw_only=True, compare=False, repr=False)

    @property
    def watcher_uri(self) -> str:
        return f"sip:{self.watcher_user}@{self.watcher_domain}" if self.watcher_user else \
            f"sip:{self.watcher_domain}"

    def remaining(self, now: float) -> int:
        # Rounded, not truncated: the NOTIFY sent a few milliseconds after the 200 says the value the
        # 200 granted (OpenSIPS counts whole seconds on both sides, capture 02: 600 then 600).
        return max(0, round(self.expires_at - now))

    def evolve(self, **changes: Any) -> Subscription:
        """The one way to copy a record with `changes` (dataclasses.replace's meaning). The fields are
        listed here in their order and the record built positionally: it runs once per NOTIFY, where
        replace (fields walked in Python, passed by keyword) cost four times as much. tests/presence
        checks it against replace field by field, so a field added later and left out here shows."""
        values: list[Any] = [
            self.pres_uri, self.event, self.to_user, self.to_domain, self.watcher_user, self.watcher_domain,
            self.callid, self.to_tag, self.from_tag, self.contact, self.expires_at, self.status, self.reason,
            self.event_id, self.local_cseq, self.remote_cseq, self.record_route, self.version,
            self.socket_info, self.local_contact, self.user_agent, self.db_flag, self.source, self.forced]
        for name in changes:   # noqa: PLC0206 - .items() would be one more call per NOTIFY
            values[_FIELD_INDEX[name]] = changes[name]
        key = self.key
        if "callid" in changes or "to_tag" in changes or "from_tag" in changes:
            key = (values[_CALLID], values[_TO_TAG], values[_FROM_TAG])
        return Subscription(*values, key=key)

    def moved(self, event: SubEvent, **changes: Any) -> Subscription:
        """The record after `event` (see TRANSITIONS), with `changes` to other fields."""
        state = transition(self.status, event)
        reason = TERMINATION_REASONS.get(event) if state is SubState.TERMINATED else None
        if state is SubState.TERMINATED and self.status is SubState.TERMINATED:
            reason = self.reason or reason
        return self.evolve(status=state, reason=reason, **changes)


_FIELD_INDEX = {f.name: i for i, f in enumerate(fields(Subscription)) if not f.kw_only}
_CALLID, _TO_TAG, _FROM_TAG = _FIELD_INDEX["callid"], _FIELD_INDEX["to_tag"], _FIELD_INDEX["from_tag"]


def dialog_key(callid: str, to_tag: str, from_tag: str) -> DialogKey:
    """The key of a subscription dialog (Subscription.key): (Call-ID, our To tag, the watcher's From tag)."""
    return (callid, to_tag, from_tag)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeFacts:
    """What handle_subscribe needs from a SUBSCRIBE, already parsed by the caller (built by keyword)."""

    event: PresenceEvent
    pres_uri: str                 # initial: user@host of the Request-URI (or the BLA presentity)
    to_user: str
    to_domain: str
    watcher_user: str
    watcher_domain: str
    callid: str
    cseq: int
    from_tag: str | None
    to_tag: str | None = None     # None: initial SUBSCRIBE
    contact: str | None = None    # Contact URI
    expires: int | None = None
    event_id: str | None = None
    record_route: tuple[str, ...] = ()
    socket_info: str = ""
    local_contact: str = ""
    user_agent: str = ""
    source: Source | None = None
    msg: SIPMessage | None = field(default=None, compare=False, repr=False)   # the request (evs_subs_handl)
    # `contact` as the request's Contact was parsed (None when it was not): the first NOTIFY's hop is
    # found from it, without parsing the Contact again.
    contact_uri: SipURI | None = field(default=None, compare=False, repr=False)

    @property
    def watcher_uri(self) -> str:
        return f"sip:{self.watcher_user}@{self.watcher_domain}" if self.watcher_user else \
            f"sip:{self.watcher_domain}"

    @property
    def initial(self) -> bool:
        return not self.to_tag


class SubscribeAction(enum.Enum):
    __hash__ = object.__hash__   # identity, in C (see SubEvent)

    NONE = "none"          # an error reply only
    INSERT = "insert"      # new subscription stored
    FETCH = "fetch"        # initial with Expires 0: NOTIFY once, nothing stored
    REFRESH = "refresh"
    REMOVE = "remove"      # unsubscribe


@dataclass(frozen=True, slots=True)
class SubscribeDecision:
    """The reply and what to do. `subscription` is the record after the change (for FETCH and
    REMOVE the record the final NOTIFY is built from). `notify`: send it a NOTIFY now;
    `winfo_changed`: watchers of the presence.winfo peer package should hear about it."""

    status: int
    reason: str
    action: SubscribeAction = SubscribeAction.NONE
    expires: int | None = None
    to_tag: str | None = None
    subscription: Subscription | None = None
    notify: bool = False
    winfo_changed: bool = False
    with_body: bool = False          # the NOTIFY carries the state (active, or an authorized fetch)
    refusal: Refusal | None = None   # a cap refused it (503 + Retry-After, logged by the caller)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _error(status: int, reason: str) -> SubscribeDecision:
    return SubscribeDecision(status, reason)


def reply_code(event: PresenceEvent, status: SubState) -> tuple[int, str]:
    """200 for an active (or watcher-info) subscription, 202 while pending (OpenSIPS update_subscription)."""
    if event.type == PUBL_TYPE and status in (SubState.PENDING, SubState.WAITING):
        return 202, REASON_ACCEPTED
    return 200, REASON_OK


class SubsTable:
    """Live subscription dialogs, by dialog and by (presentity, event).

    expires_offset: extra seconds a subscription is kept after the expiry granted to the watcher.
    max_subscriptions / max_per_source: caps on new subscriptions, in total and per watcher source
    address (modparams max_subscriptions, max_subscriptions_per_source; 0 = no cap); addresses in
    `trusted_sources` are exempt from the per-address one (limits.py). Every subscription held counts,
    those loaded from the database included; a refresh is never refused.
    """

    def __init__(self, *, max_expires: int = 3600, expires_offset: int = 0,
                 max_watchers: int = DEFAULT_MAX_WATCHERS, max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
                 max_per_source: int = DEFAULT_MAX_SUBSCRIPTIONS_PER_SOURCE,
                 trusted_sources: Container[str] = ()) -> None:
        self.max_expires = max_expires
        self.expires_offset = expires_offset
        self.max_watchers = max_watchers
        self.max_subscriptions = max_subscriptions
        self.max_per_source = max_per_source
        self._dialogs: dict[DialogKey, Subscription] = {}
        self._per_source = SourceCounts(trusted_sources)
        # event -> presentity URI -> its subscriptions' dialog keys, oldest first: the key itself while
        # there is one (no dict per presentity; the very tuple _dialogs is keyed by), else a dict used as
        # an ordered set. Keyed by event first: no (pres_uri, event) tuple kept per presentity.
        self._by_presentity: dict[str, dict[str, DialogKey | dict[DialogKey, None]]] = {}
        self._deleted: dict[DialogKey, Subscription] = {}   # removed since the last database sync
        # Transport sources, each kept once (a presence server behind a proxy hears every SUBSCRIBE
        # from the same address): the records keep the shared one. Bounded: emptied when full.
        self._sources: dict[Source, Source] = {}
        # Watchers whose subscription ended since the last take_ended() (not handle_subscribe("1") ones:
        # the rules did not decide for them), oldest first.
        self._ended: dict[WatcherKey, None] = {}
        self._high = 0   # the most dialogs held since _dialogs was last compacted (expire)
        self.ended_overflow = 0   # ended subscriptions not recorded: _ended was full
        # workers (clustering.WatcherInterest): told of each (presentity, event) gaining its first
        # watcher here and losing its last, so other workers know whom to announce a change to
        self.interest: WatcherInterest | None = None

    # --- the decision ---------------------------------------------------------------------------
    def handle_subscribe(self, facts: SubscribeFacts, now: float, *, to_tag: str,
                         initial_status: SubState = SubState.ACTIVE,
                         initial_reason: str | None = None, forced: bool = False) -> SubscribeDecision:
        """Decide what a SUBSCRIBE does. Pure: nothing changes until `commit(decision)`.

        to_tag: the tag to give a new dialog. initial_status/initial_reason: the authorization
        outcome for an initial SUBSCRIBE (ACTIVE with force_active or when the package needs no
        authorization; TERMINATED with "rejected" for a blocked watcher). forced: a new dialog is
        made with `forced` set (handle_subscribe("1") on a package that needs authorization).
        """
        event = facts.event
        if not facts.from_tag or not facts.contact:
            return _error(400, REASON_BAD_REQUEST)
        expires = event.default_expires if facts.expires is None else facts.expires
        expires = max(0, min(expires, self.max_expires))
        if facts.initial:
            return self._initial(facts, now, expires, to_tag, initial_status, initial_reason, forced)
        return self._in_dialog(facts, now, expires)

    def _initial(self, facts: SubscribeFacts, now: float, expires: int, to_tag: str,
                 status: SubState, reason: str | None, forced: bool = False) -> SubscribeDecision:
        event = facts.event
        assert facts.from_tag is not None and facts.contact is not None
        sub = Subscription(
            pres_uri=shared(facts.pres_uri), event=event.name, to_user=facts.to_user,
            to_domain=shared(facts.to_domain), watcher_user=facts.watcher_user,
            watcher_domain=shared(facts.watcher_domain), callid=facts.callid, to_tag=to_tag,
            from_tag=facts.from_tag, contact=facts.contact, expires_at=now + expires, status=status,
            reason=reason if status is SubState.TERMINATED else None, event_id=facts.event_id,
            remote_cseq=facts.cseq, record_route=facts.record_route, socket_info=shared(facts.socket_info),
            local_contact=shared(facts.local_contact), user_agent=shared(facts.user_agent),
            db_flag=INSERTDB_FLAG, source=self.share_source(facts.source), forced=forced,
            key=dialog_key(facts.callid, to_tag, facts.from_tag))
        code, text = reply_code(event, status)
        if expires == 0:
            # A fetch (RFC 6665 4.4.3): one final NOTIFY, nothing kept.
            if status is not SubState.TERMINATED:
                sub = sub.evolve(status=SubState.TERMINATED, reason="timeout")
            return SubscribeDecision(code, text, SubscribeAction.FETCH, 0, to_tag, sub, True, False,
                                     status is SubState.ACTIVE)
        refusal = self.over_cap(facts)
        if refusal is not None:
            return SubscribeDecision(503, REASON_TOO_MANY, refusal=refusal)
        # A watcher the rules block is kept too, terminated, until its expiry (OpenSIPS
        # update_subscription inserts it): presence.winfo lists it as status="terminated", it is told
        # nothing more, a refresh of it gets 481, and its expiry sends no second NOTIFY (expire()).
        return SubscribeDecision(code, text, SubscribeAction.INSERT, expires, to_tag, sub, True, True,
                                 status is SubState.ACTIVE)

    def over_cap(self, facts: SubscribeFacts) -> Refusal | None:
        """The cap a new subscription (`facts` of an initial SUBSCRIBE) would pass, if any. The caller
        may ask before the watcher's authorization (which reads and writes the database) so that a
        refused request costs little; the decision asks again."""
        if self.max_subscriptions and len(self._dialogs) >= self.max_subscriptions:
            return Refusal("max_subscriptions", self.max_subscriptions)
        if self.max_per_source:
            address = self._per_source.full(facts.source, self.max_per_source)
            if address is not None:
                return Refusal("max_subscriptions_per_source", self.max_per_source, address)
        if self.count_watchers(facts.pres_uri, facts.event.name) >= self.max_watchers:
            return Refusal("watchers of one presentity", self.max_watchers, facts.pres_uri)
        return None

    def _in_dialog(self, facts: SubscribeFacts, now: float, expires: int) -> SubscribeDecision:
        assert facts.to_tag is not None and facts.from_tag is not None and facts.contact is not None
        old = self._dialogs.get((facts.callid, facts.to_tag, facts.from_tag))
        if old is None or old.event != facts.event.name or old.status is SubState.TERMINATED \
                or old.expires_at + self.expires_offset <= now:
            return _error(481, REASON_NO_SUBSCRIPTION)
        if facts.cseq <= old.remote_cseq:
            return _error(400, REASON_BAD_REQUEST)  # RFC 3261 12.2.2: CSeq lower than the last one
        code, text = reply_code(facts.event, old.status)
        if expires == 0:
            sub = old.moved(SubEvent.UNSUBSCRIBE, remote_cseq=facts.cseq, expires_at=now)
            return SubscribeDecision(code, text, SubscribeAction.REMOVE, 0, None, sub, True, True)
        source = old.source if facts.source is None or facts.source == old.source else \
            self.share_source(facts.source)
        sub = old.moved(SubEvent.REFRESH, remote_cseq=facts.cseq, expires_at=now + expires,
                        contact=facts.contact, source=source)
        return SubscribeDecision(code, text, SubscribeAction.REFRESH, expires, None, sub, True, False,
                                 sub.status is SubState.ACTIVE)

    # --- changing the table ----------------------------------------------------------------------
    def commit(self, decision: SubscribeDecision, *, stored: bool = False) -> None:
        """Apply a decision (after its reply is decided; before the NOTIFY is built). `stored`: the
        row change of a new subscription or an unsubscribe is in the database already (handle_subscribe
        commits them before the 2xx), so the next sync has nothing to do for it."""
        sub = decision.subscription
        if sub is None:
            return
        if decision.action is SubscribeAction.INSERT:
            flag = NO_UPDATEDB_FLAG if stored else INSERTDB_FLAG
            # a new record carries INSERTDB_FLAG already (_initial): no copy then
            self._put(sub if sub.db_flag == flag else sub.evolve(db_flag=flag))
        elif decision.action is SubscribeAction.REFRESH:
            self.update(sub)
        elif decision.action is SubscribeAction.REMOVE:
            self.delete(sub.key)
            if stored:
                self._deleted.pop(sub.key, None)   # its row is deleted already (before the 2xx)
        elif decision.action is SubscribeAction.FETCH:
            self._note_ended(sub)   # a fetch: ended as soon as it was made

    def update(self, sub: Subscription) -> Subscription:
        """Replace a live record (status change, NOTIFY sent...). Returns the stored record."""
        old = self._dialogs.get(sub.key)
        if old is None:
            return sub
        flag = INSERTDB_FLAG if old.db_flag == INSERTDB_FLAG else UPDATEDB_FLAG
        sub = sub.evolve(db_flag=flag)
        self._dialogs[sub.key] = sub
        if old.source is not sub.source:
            self._per_source.move(old.source, sub.source)
        return sub

    def record_notify(self, sub: Subscription) -> Subscription:
        """Take the next CSeq for a NOTIFY to `sub`; returns the record to build it from.

        NOTIFYs for one dialog are numbered here, in the order they are built, so the caller
        sending them in that order keeps CSeq order. A record no longer in the table (fetch,
        unsubscribe, expiry) is numbered from its own last CSeq.
        """
        live = self._dialogs.get(sub.key)
        base = sub if live is None else live
        # One copy per NOTIFY (this runs once per watcher per change): CSeq, version, state, db flag.
        db_flag = base.db_flag
        if live is not None:
            db_flag = INSERTDB_FLAG if live.db_flag == INSERTDB_FLAG else UPDATEDB_FLAG
        after = base.evolve(status=sub.status, reason=sub.reason, local_cseq=base.local_cseq + 1,
                            version=base.version + 1, db_flag=db_flag)
        if live is not None:
            self._dialogs[sub.key] = after
        return after

    def delete(self, key: DialogKey) -> Subscription | None:
        sub = self._dialogs.pop(key, None)
        if sub is None:
            return None
        self._per_source.remove(sub.source)
        self._unindex(sub.pres_uri, sub.event, key)
        if sub.db_flag != INSERTDB_FLAG:
            self._deleted[key] = sub   # it is in the database: the next sync deletes it
        self._note_ended(sub)
        return sub

    def _note_ended(self, sub: Subscription) -> None:
        if sub.forced:
            return
        if len(self._ended) >= MAX_ENDED_WATCHERS:
            self.ended_overflow += 1
            return
        self._ended[(sub.pres_uri, sub.watcher_user, sub.watcher_domain, sub.event)] = None

    def take_ended(self) -> list[WatcherKey]:
        """The watchers whose subscription ended since the last call and that hold no other one to the
        same presentity and event (clean_period forgets their allowed decision)."""
        ended = []
        for key in self._ended:
            pres_uri, user, domain, event = key
            if not any(s.watcher_user == user and s.watcher_domain == domain
                       for s in self.watchers(pres_uri, event)):
                ended.append(key)
        self._ended.clear()
        return ended

    def forget(self, key: DialogKey) -> Subscription | None:
        """Drop a subscription from memory only: its row belongs to another node now (clustering), so
        neither a NOTIFY nor a database change follows."""
        sub = self.delete(key)
        self._deleted.pop(key, None)
        if sub is not None:
            self._ended.pop((sub.pres_uri, sub.watcher_user, sub.watcher_domain, sub.event), None)
        return sub

    def forget_all(self) -> int:
        """forget() every subscription (this node was taken over); returns how many."""
        n = len(self._dialogs)
        self._dialogs.clear()
        if self.interest is not None:
            for by_uri in self._by_presentity.values():
                for pres_uri in by_uri:
                    self.interest.release(pres_uri)
        self._by_presentity.clear()
        self._deleted.clear()
        self._per_source.clear()
        self._ended.clear()
        return n

    def presentities(self) -> list[tuple[str, str]]:
        """The (pres_uri, event) pairs that have at least one subscription here."""
        return [(pres_uri, event) for event, by_uri in self._by_presentity.items() for pres_uri in by_uri]

    def load(self, sub: Subscription, *, changed: bool = False) -> None:
        """Put back a subscription read from the database at start. `changed`: the record differs from
        its row (a dialog taken over from another node carries our Contact): the next sync writes it."""
        self._put(sub.evolve(db_flag=UPDATEDB_FLAG if changed else NO_UPDATEDB_FLAG))

    def _put(self, sub: Subscription) -> None:
        key = sub.key
        old = self._dialogs.get(key)
        if old is not None:
            # the same dialog again (fallback2db, a reload): the index keeps its entry and its key
            self._dialogs[key] = sub
            self._per_source.move(old.source, sub.source)
            if (old.pres_uri, old.event) != (sub.pres_uri, sub.event):
                self._unindex(old.pres_uri, old.event, key)
                self._index(sub.pres_uri, sub.event, key)
        else:
            self._dialogs[key] = sub
            self._per_source.add(sub.source)
            self._index(sub.pres_uri, sub.event, key)
        self._deleted.pop(key, None)

    def _index(self, pres_uri: str, event: str, key: DialogKey) -> None:
        by_uri = self._by_presentity.get(event)
        if by_uri is None:
            by_uri = self._by_presentity[event] = {}
        keys = by_uri.get(pres_uri)
        if keys is None:
            by_uri[pres_uri] = key
            if self.interest is not None:
                self.interest.hold(pres_uri)
        elif isinstance(keys, tuple):
            if keys != key:
                by_uri[pres_uri] = {keys: None, key: None}
        else:
            keys[key] = None

    def _unindex(self, pres_uri: str, event: str, key: DialogKey) -> None:
        by_uri = self._by_presentity.get(event)
        keys = by_uri.get(pres_uri) if by_uri is not None else None
        if keys is None:
            return
        assert by_uri is not None
        if isinstance(keys, tuple):
            if keys != key:
                return
            del by_uri[pres_uri]
            if self.interest is not None:
                self.interest.release(pres_uri)
        else:
            keys.pop(key, None)
            if len(keys) == 1:
                by_uri[pres_uri] = next(iter(keys))
            elif not keys:
                del by_uri[pres_uri]
                if self.interest is not None:
                    self.interest.release(pres_uri)
        if not by_uri:
            del self._by_presentity[event]

    def share_source(self, source: Source | None) -> Source | None:
        """`source` as the equal transport source already kept, if any (one object for the records of
        every subscription that came from the same address and socket)."""
        if source is None:
            return None
        try:
            kept = self._sources.get(source)
        except TypeError:   # an unhashable source (tests): kept as it is
            return source
        if kept is not None:
            return kept
        if len(self._sources) >= MAX_SHARED_SOURCES:
            self._sources.clear()
        self._sources[source] = source
        return source

    def expire(self, now: float) -> list[Subscription]:
        """Remove subscriptions past expiry + expires_offset; returns them (see take_expired)."""
        ended, dropped = self.take_expired(now)
        return ended + dropped

    def take_expired(self, now: float) -> tuple[list[Subscription], list[Subscription]]:
        """Remove subscriptions past expiry + expires_offset: (ended, dropped). `ended` are returned
        terminated;reason=timeout (the clean_period timer sends each a final NOTIFY); `dropped` were
        terminated already (a blocked watcher, told terminated;reason=rejected at once) and are told
        nothing again - their dialog is over (RFC 6665 4.4.1); OpenSIPS would send a second NOTIFY.
        The tables are compacted afterwards (a dict never shrinks by itself: _compact.py)."""
        ended, dropped = [], []
        high = self._high = max(self._high, len(self._dialogs))
        for key, sub in list(self._dialogs.items()):
            if sub.expires_at + self.expires_offset <= now:
                self.delete(key)
                if sub.status is SubState.TERMINATED:
                    dropped.append(sub)
                else:
                    ended.append(sub.moved(SubEvent.EXPIRE))
        self._dialogs, self._high = compact(self._dialogs, self._high)
        for event, by_uri in self._by_presentity.items():
            self._by_presentity[event] = compact(by_uri, high)[0]
        return ended, dropped

    def next_deadline(self) -> float | None:
        times = [s.expires_at + self.expires_offset for s in self._dialogs.values()]
        return min(times) if times else None

    def take_db_changes(self) -> tuple[list[Subscription], list[Subscription], list[Subscription]]:
        """(to insert, to update, to delete) since the last call; the live records are marked
        synchronised (db_update_period timer, and at shutdown)."""
        inserts, updates = [], []
        for key, sub in self._dialogs.items():
            if sub.db_flag == INSERTDB_FLAG:
                inserts.append(sub)
            elif sub.db_flag == UPDATEDB_FLAG:
                updates.append(sub)
            else:
                continue
            self._dialogs[key] = sub.evolve(db_flag=NO_UPDATEDB_FLAG)
        deletes = list(self._deleted.values())
        self._deleted.clear()
        return inserts, updates, deletes

    def restore_db_changes(self, inserts: list[Subscription], updates: list[Subscription],
                           deletes: list[Subscription]) -> None:
        """Give back changes a failed sync took, so the next sync tries them again."""
        for flag, subs in ((INSERTDB_FLAG, inserts), (UPDATEDB_FLAG, updates)):
            for sub in subs:
                live = self._dialogs.get(sub.key)
                if live is not None and live.db_flag == NO_UPDATEDB_FLAG:
                    self._dialogs[sub.key] = live.evolve(db_flag=flag)
        for sub in deletes:
            if sub.key not in self._dialogs:
                self._deleted[sub.key] = sub

    # --- lookups ---------------------------------------------------------------------------------
    def get(self, key: DialogKey) -> Subscription | None:
        return self._dialogs.get(key)

    def deleted_since_sync(self, key: DialogKey) -> bool:
        """Removed here but still in the database until the next sync (fallback2db must not read it back)."""
        return key in self._deleted

    def watchers(self, pres_uri: str, event: str) -> list[Subscription]:
        """Subscriptions to a presentity for an event, oldest first."""
        by_uri = self._by_presentity.get(event)
        keys = by_uri.get(pres_uri) if by_uri is not None else None
        if keys is None:
            return []
        if isinstance(keys, tuple):
            return [self._dialogs[keys]]
        return [self._dialogs[k] for k in keys]

    def count_from(self, source: Source | None) -> int:
        """How many subscriptions count against the per-address cap for `source`'s address."""
        return self._per_source.count(source)

    def count_watchers(self, pres_uri: str, event: str) -> int:
        """How many subscriptions a presentity has for an event."""
        by_uri = self._by_presentity.get(event)
        keys = by_uri.get(pres_uri) if by_uri is not None else None
        if keys is None:
            return 0
        return 1 if isinstance(keys, tuple) else len(keys)

    def __iter__(self) -> Iterator[Subscription]:
        return iter(list(self._dialogs.values()))

    def __len__(self) -> int:
        return len(self._dialogs)
