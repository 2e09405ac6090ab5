"""Completed non-INVITE server transactions over UDP, kept only to answer retransmissions.

RFC 3261 17.2.2: once a non-INVITE server transaction has sent its final response it stays in the
Completed state for Timer J (64*T1 over UDP) and "MUST pass the final response to the transport
layer for retransmission whenever a retransmission of the request is received". That is all it still
does, so it is not worth a state machine and a timer per transaction: this table keeps, per
transaction key, the response bytes and where they go. Timer J is one constant, so entries expire in
insertion order from a deque (no heap). Sans-IO: every call takes `now`.

Invisible to the garbage collector: at a few thousand requests a second the table holds tens of
thousands of entries for 32 s, and every full collection would walk them all - measured at 100-400 ms
pauses every half second, which made clients retransmit and pushed the server into collapse. So an
entry is a plain tuple of bytes, strings and numbers, which CPython stops tracking after its first
collection: the Destination is kept as `Destination.packed()` (it holds a SocketInfo) and rebuilt by
`Destination.unpack` for the rare retransmission. The CompletedTransaction a lookup returns is made
then, not stored.

Bounded (STYLE 7): over `max_entries` the oldest entry is evicted early. Its cost is small - a
retransmission arriving after that runs the script again, as if the transaction had expired.
"""

from __future__ import annotations

from collections import deque

from routescript.sip import Destination
from routescript.transaction.keys import ServerKey
from routescript.transaction.states import State

_COMPACT_MIN = 128   # a table that never held this many entries is not copied when it empties

_Packed = tuple[object, ...] | None   # Destination.packed(), or None for an entry without one


class CompletedTransaction:
    """What a Completed non-INVITE server transaction keeps: `data` (the final response on the wire)
    and `dest` (where the response went). `lookup` returns it for a
    retransmission; it answers `state`, `replied` and `is_invite` like a ServerTransaction."""

    __slots__ = ("data", "dest", "expires", "key")

    state = State.COMPLETED
    is_invite = False
    replied = True

    def __init__(self, key: ServerKey, data: bytes, dest: Destination | None, expires: float) -> None:
        self.key = key
        self.data = data
        self.dest = dest
        self.expires = expires

    def __repr__(self) -> str:
        return f"<CompletedTransaction {self.key!r} until {self.expires:.3f}>"


class CompletedTable:
    """key -> (response bytes, packed destination, expiry), expiring `hold` seconds after insertion,
    at most `max_entries`. Also the Timer K table of answered client transactions: their key only
    (no bytes, no destination)."""

    def __init__(self, hold: float, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.hold = hold
        self.max_entries = max_entries
        self.evicted = 0  # entries dropped before their time because the table was full
        # key -> (bytes, packed destination, expiry). Read-only outside this class: the core tests
        # `key in table.entries` (no call) before asking `get` for a retransmission.
        self.entries: dict[ServerKey, tuple[bytes, _Packed, float]] = {}
        self._order: deque[tuple[float, ServerKey]] = deque()   # (expires, key), oldest first
        self._high = 0   # the most entries held since entries was last copied (expire)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, key: ServerKey, data: bytes, dest: Destination | None, now: float) -> int:
        """Keep the final response of transaction `key`; returns how many entries were evicted."""
        expires = now + self.hold
        entries = self.entries
        entries[key] = (data, None if dest is None else dest.packed(), expires)
        self._order.append((expires, key))
        evicted = 0
        while len(entries) > self.max_entries:
            old_expires, old_key = self._order.popleft()
            if self._drop(old_key, old_expires):
                evicted += 1
        self.evicted += evicted
        return evicted

    def get(self, key: ServerKey, now: float) -> CompletedTransaction | None:
        """The entry of `key` unless it has expired (an expired one is dropped here)."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        data, packed, expires = entry
        if expires <= now:
            del self.entries[key]
            return None
        dest = None if packed is None else Destination.unpack(packed)
        return CompletedTransaction(key, data, dest, expires)

    def contains(self, key: ServerKey, now: float) -> bool:
        """True while `key` has an unexpired entry (nothing is built)."""
        entry = self.entries.get(key)
        return entry is not None and entry[2] > now

    def expire(self, now: float) -> int:
        """Drop every entry whose time is over; returns how many."""
        order = self._order
        dropped = 0
        self._high = max(self._high, len(self.entries))
        while order and order[0][0] <= now:
            expires, key = order.popleft()
            if self._drop(key, expires):
                dropped += 1
        if dropped and self._high >= _COMPACT_MIN and len(self.entries) * 8 <= self._high:
            # A dict never gives its slots back: after a burst (50,000 entries: 2.5 MB) a right-sized copy
            self.entries = dict(self.entries)
            self._high = len(self.entries)
        return dropped

    def discard(self, key: ServerKey) -> None:
        """Forget `key` now (its response could not be sent); its place in the order is skipped later."""
        self.entries.pop(key, None)

    def _drop(self, key: ServerKey, expires: float) -> bool:
        # A key added again has a newer entry: its stale place in the order must not drop that one.
        entry = self.entries.get(key)
        if entry is not None and entry[2] == expires:
            del self.entries[key]
            return True
        return False

    def next_expiry(self) -> float | None:
        return self._order[0][0] if self._order else None

    def clear(self) -> None:
        self.entries.clear()
        self._order.clear()
