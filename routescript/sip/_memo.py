"""Bounded memos of parsed header values (private).

A call's messages repeat the same values: the 180 and the 200 carry the same top Via (ours), the ACK
and the BYE the same To, Route set and Request-URI, and every call of a user agent the same To and
Request-URI in its INVITE. The parsed values are frozen, so one parse can serve them all.

A memo is a plain dict from the text as written to its parsed value, emptied when it holds MEMO_SIZE
values (only a miss files one; a flood of distinct values costs one clear per MEMO_SIZE parses,
and no more memory). Only successful parses are filed: bad input is parsed again, and raises again,
every time. The parsers read and file inline (`in` and `[]` on a hit: no call on the way - every message
parses several values).
"""

from __future__ import annotations

# Small on purpose: the repeats worth catching are close together (a 180 and its 200, the values every
# call of a user agent shares), and what a memo holds stays allocated after the traffic that filled it -
# at 1024 values each the memos kept 1.2 MB, which tests/e2e/test_presence_memory_release_e2e.py
# (48 KB allowed after a load is gone) refused.
MEMO_SIZE = 16
