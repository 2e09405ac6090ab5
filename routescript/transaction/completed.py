"""Completed non-INVITE server transactions over UDP, kept only to answer retransmissions.

RFC 3261 17.2.2: once a non-INVITE server transaction has sent its final response it stays in the
Completed state for Timer J (64*T1 over UDP) and "MUST pass the final response to the transport
layer for retransmission whenever a retransmission of the request is received". That is all it still
does, so it is not worth a state machine and a timer per transaction: this table keeps, per
transaction key, the response bytes and where they go. Timer J is one constant, so entries expire in
insertion order from a deque (no heap). Sans-IO: every call takes `now`.

Bounded (STYLE 7): over `max_entries` the oldest entry is evicted early. Its cost is small - a
retransmission arriving after that runs the script again, as if the transaction had expired.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from routescript.transaction.states import State


class CompletedTransaction:
    """What a Completed non-INVITE server transaction keeps: `data` (the final response on the wire)
    and `dest` (the transport's Destination of the response). `lookup` returns it for a
    retransmission; it answers `state`, `replied` and `is_invite` like a ServerTransaction."""

    __slots__ = ("data", "dest", "expires", "key")

    state = State.COMPLETED
    is_invite = False
    replied = True

    def __init__(self, key: tuple[Any, ...], data: bytes, dest: Any, expires: float) -> None:
        self.key = key
        self.data = data
        self.dest = dest
        self.expires = expires

    def __repr__(self) -> str:
        return f"<CompletedTransaction {self.key!r} until {self.expires:.3f}>"


class CompletedTable:
    """key -> CompletedTransaction, expiring `hold` seconds after insertion, at most `max_entries`."""

    def __init__(self, hold: float, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.hold = hold
        self.max_entries = max_entries
        self.evicted = 0  # entries dropped before their time because the table was full
        self._entries: dict[tuple[Any, ...], CompletedTransaction] = {}
        self._order: deque[CompletedTransaction] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: tuple[Any, ...], data: bytes, dest: Any, now: float) -> int:
        """Keep the final response of transaction `key`; returns how many entries were evicted."""
        entry = CompletedTransaction(key, data, dest, now + self.hold)
        self._entries[key] = entry
        self._order.append(entry)
        evicted = 0
        while len(self._entries) > self.max_entries:
            old = self._order.popleft()
            if self._entries.get(old.key) is old:
                del self._entries[old.key]
                evicted += 1
        self.evicted += evicted
        return evicted

    def get(self, key: tuple[Any, ...], now: float) -> CompletedTransaction | None:
        """The entry of `key` unless it has expired (an expired one is dropped here)."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= now:
            del self._entries[key]
            return None
        return entry

    def expire(self, now: float) -> int:
        """Drop every entry whose time is over; returns how many."""
        order = self._order
        entries = self._entries
        dropped = 0
        while order and order[0].expires <= now:
            old = order.popleft()
            if entries.get(old.key) is old:
                del entries[old.key]
                dropped += 1
        return dropped

    def next_expiry(self) -> float | None:
        return self._order[0].expires if self._order else None

    def clear(self) -> None:
        self._entries.clear()
        self._order.clear()
