"""Bounded memos of parsed header values (private).

A call's messages repeat the same values: the 180 and the 200 carry the same top Via (ours), the ACK
and the BYE the same To, Route set and Request-URI, and every call of a user agent the same To and
Request-URI in its INVITE. The parsed values are frozen, so one parse can serve them all.

A Memo is a dict from the text as written to its parsed value, emptied when MEMO_SIZE values have
been filed since it was last emptied (a flood of distinct values costs one clear per MEMO_SIZE parses,
and no more memory). Only successful parses are filed: bad input is parsed again, and raises again,
every time. The parsers read and file inline (`in`, `[]`, an attribute and a store: no call on the
way, hit or miss - every message parses several values).
"""

from __future__ import annotations

from typing import Generic, TypeVar

# Small on purpose: the repeats worth catching are close together (a 180 and its 200, the values every
# call of a user agent shares), and what a memo holds stays allocated after the traffic that filled it -
# at 1024 values each the memos kept 1.2 MB, which tests/e2e/test_presence_memory_release_e2e.py
# (48 KB allowed after a load is gone) refused.
MEMO_SIZE = 16

V = TypeVar("V")


class Memo(dict[str, V], Generic[V]):
    """Parsed values by their text; `filed` counts what was filed since the last clear()."""

    __slots__ = ("filed",)

    def __init__(self) -> None:
        super().__init__()
        self.filed = 0

    def clear(self) -> None:
        super().clear()
        self.filed = 0
