"""DNS answers kept for their TTL, positive and negative (RFC 2308), so that a repeat lookup is answered
without awaiting (Resolver.resolve_now). Time is injected: `now` comes from the caller."""

from __future__ import annotations

from collections.abc import Sequence

from .records import Query, RecordSet

__all__ = ["RecordCache"]


class RecordCache:
    """Query -> (RecordSet, expires at). Bounded: past `max_entries` the oldest entry is dropped first
    (answers to the busiest names are refreshed, so they are rarely the oldest)."""

    __slots__ = ("_entries", "max_entries")

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: dict[Query, tuple[RecordSet, float]] = {}
        self.max_entries = max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query: Query, now: float) -> RecordSet | None:
        entry = self._entries.get(query)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._entries[query]
            return None
        return entry[0]

    def get_all(self, queries: Sequence[Query], now: float) -> list[RecordSet] | None:
        """The answers to every query, or None as soon as one is not cached."""
        answers: list[RecordSet] = []
        for query in queries:
            answer = self.get(query, now)
            if answer is None:
                return None
            answers.append(answer)
        return answers

    def put(self, query: Query, answer: RecordSet, now: float) -> None:
        if answer.ttl <= 0:
            return
        self._entries.pop(query, None)                 # re-inserted last: the newest
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[query] = (answer, now + answer.ttl)

    def clear(self) -> None:
        self._entries.clear()
