"""Giving back the memory of a table that has shrunk (issue 15).

A CPython dict never gives back its slots when entries are deleted: after 20,000 subscriptions expired,
each table that had held them still took about 600 KB. The tables call `compact` where they expire
entries; it copies the dict (the copy is sized for what is left) once it holds under an eighth of the
most it held since the last copy.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

COMPACT_MIN = 128   # a table that never held this many is left alone (its slots are cheap)


def compact(table: dict[K, V], high: int) -> tuple[dict[K, V], int]:
    """(`table` or a right-sized copy of it, the new high-water mark). `high`: the most entries the
    table held since it was last copied (the caller keeps it, raising it when it expires entries)."""
    size = len(table)
    if high >= COMPACT_MIN and size * 8 <= high:
        return dict(table), size
    return table, max(high, size)
