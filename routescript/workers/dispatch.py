"""Which worker owns a message (docs/workers.md section 2), and the tokens that carry a worker's slot.

Sans-IO: `owner_slot` decides from `PeekedKeys` (routescript.sip.peek) alone. The rules, first match wins:

1. a response whose top Via branch is ours (`slot_branch`) -> that slot; another branch -> None (the
   reader handles it: a stateless forward's response needs no state);
2. a request whose To tag is ours (`slot_tag`) -> that slot (in-dialog requests of our dialogs);
3. affinity "uri" and a PUBLISH or SUBSCRIBE without To tag -> crc32(R-URI user@host) % n;
4. anything else -> crc32(Call-ID) % n.

A slot read from a branch or tag that is not below n (an older run with more workers) names no worker:
rule 1 gives None, rule 2 falls through. The chosen slot is then mapped by the SlotTable (a slot that is
not running, adopted by another worker).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import zlib
from dataclasses import dataclass
from typing import Literal

from routescript.sip.peek import PeekedKeys

__all__ = ["AFFINITIES", "CONN_ID_BITS", "MAX_SLOTS", "Affinity", "SlotTable", "branch_slot", "conn_id_base",
           "conn_id_slot", "owner_slot", "parse_slot_tag", "slot_branch", "slot_branch_marker", "slot_tag",
           "slot_tag_prefix", "tag_slot"]

Affinity = Literal["uri", "callid"]
AFFINITIES: tuple[Affinity, ...] = ("uri", "callid")

MAX_SLOTS = 1024          # far above any sensible worker count; bounds what a branch or tag may claim
CONN_ID_BITS = 48         # conn_id = slot << 48 | local id: a handed-over Source still names its connection

_MAGIC = "z9hG4bK"        # RFC 3261 8.1.1.7 magic cookie
_OURS = _MAGIC + "rs"     # our branches: z9hG4bK rs <slot base 36> . <unique part>
# Our forms, read with one regex call each (they are read for every message a worker reads); base 36 in
# lower case only, six digits at most (int(text, 36) alone would accept "+1", " 1", "1_0", upper case).
_SLOT_BRANCH = re.compile(r"z9hG4bKrs([0-9a-z]{1,6})\..", re.DOTALL)
_SLOT_TAG = re.compile(r"([0-9a-z]{1,6})\.([0-9a-z]{1,6})\..", re.DOTALL)


@dataclass(frozen=True, slots=True)
class SlotTable:
    """Which running worker serves each slot (supervisor-owned, pushed to every worker): slot s -> s
    while s runs or restarts (its inbox queues meanwhile), s -> its adopter after adoption."""

    version: int
    owner_of: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.owner_of)
        if not 0 < n <= MAX_SLOTS:
            raise ValueError(f"a slot table has 1 to {MAX_SLOTS} slots, not {n}")
        for slot, owner in enumerate(self.owner_of):
            if not 0 <= owner < n:
                raise ValueError(f"slot {slot} mapped to {owner}, not a slot of this {n}-slot table")

    @classmethod
    def identity(cls, n: int) -> SlotTable:
        """Every slot served by its own worker (version 0: nothing adopted)."""
        return cls(0, tuple(range(n)))

    @property
    def slots(self) -> int:
        return len(self.owner_of)


def owner_slot(keys: PeekedKeys, n: int, affinity: Affinity = "uri",
               slot_table: SlotTable | None = None) -> int | None:
    """The worker that must handle the message with these keys (rules 1-4 above, then the slot table),
    or None for a response whose branch is not ours (whoever read it handles it)."""
    if keys.is_response:
        slot = branch_slot(keys.top_branch) if keys.top_branch is not None else None
        if slot is None or slot >= n:
            return None
    else:
        slot = tag_slot(keys.to_tag) if keys.to_tag is not None else None
        if slot is None or slot >= n:
            if affinity == "uri" and keys.ruri_user_host is not None:
                key = keys.ruri_user_host
            elif keys.call_id is not None:
                key = keys.call_id
            else:   # peek_keys and keys_from_message give every request its Call-ID
                raise ValueError("the keys of a request without a Call-ID")
            slot = zlib.crc32(key.encode()) % n
    return slot if slot_table is None else slot_table.owner_of[slot]


# --- slots in Via branches ---------------------------------------------------------------------------
# RFC 3261 8.1.1.7: a branch must be unique across space and time. The unique part is this process's
# 64 random bits and a counter; forked workers and a worker restarted in the same slot must not repeat
# each other's, so a child draws new bits (os.register_at_fork below) instead of inheriting the parent's.

class _UniquePart:
    """64 random bits drawn once per process, then a counter: unique, and no system call per branch."""

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.prefix = secrets.token_hex(8) + "."
        self.numbers = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.numbers):x}"


_unique = _UniquePart()
os.register_at_fork(after_in_child=_unique.reseed)


def _base36(value: int) -> str:
    if value < 0:
        raise ValueError(f"a slot or epoch is not negative: {value}")
    digits = ""
    while True:
        value, digit = divmod(value, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
        if not value:
            return digits


def _check_slot(slot: int) -> None:
    if not 0 <= slot < MAX_SLOTS:
        raise ValueError(f"slot {slot} is not in 0..{MAX_SLOTS - 1}")


def slot_branch(slot: int) -> str:
    """A new Via branch naming `slot`: "z9hG4bKrs" + slot in base 36 + "." + this process's unique part."""
    _check_slot(slot)
    return f"{_OURS}{_base36(slot)}.{_unique.next()}"


def slot_branch_marker(slot: int) -> str:
    """What worker `slot` gives routescript.sip.build.set_branch_marker: then every branch it generates
    has slot_branch's form ("z9hG4bK" + marker + its own random bits + a counter)."""
    _check_slot(slot)
    return f"rs{_base36(slot)}."


def branch_slot(branch: str) -> int | None:
    """The slot a `slot_branch` names; None for any other branch."""
    m = _SLOT_BRANCH.match(branch)
    if m is None:
        return None
    slot = int(m[1], 36)
    return slot if slot < MAX_SLOTS else None


# --- slots in To (and From) tags -----------------------------------------------------------------------

def slot_tag(slot: int, epoch: int, base: str) -> str:
    """A tag naming `slot` and the worker's `epoch` (both base 36): "<slot>.<epoch>.<base>", `base`
    being the random part (routescript.sip.generate_tag: RFC 3261 19.3's 32 random bits and more)."""
    _check_slot(slot)
    if not base:
        raise ValueError("a tag needs its random part")
    return f"{_base36(slot)}.{_base36(epoch)}.{base}"


def slot_tag_prefix(slot: int, epoch: int) -> str:
    """What worker `slot` in `epoch` gives routescript.core.replies.set_tag_prefix: its to-tags become
    slot_tag(slot, epoch, "rs." + the request's digest)."""
    return slot_tag(slot, epoch, "rs") + "."


def parse_slot_tag(tag: str) -> tuple[int, int] | None:
    """(slot, epoch) of a `slot_tag`; None for a tag of another form."""
    m = _SLOT_TAG.match(tag)
    if m is None:
        return None
    slot = int(m[1], 36)
    return None if slot >= MAX_SLOTS else (slot, int(m[2], 36))


def tag_slot(tag: str) -> int | None:
    """The slot a `slot_tag` names; None for a tag of another form."""
    m = _SLOT_TAG.match(tag)
    if m is None:
        return None
    slot = int(m[1], 36)
    return slot if slot < MAX_SLOTS else None


# --- global TCP connection ids ------------------------------------------------------------------------

def conn_id_base(slot: int) -> int:
    """The first conn_id of `slot`'s connections is conn_id_base(slot) + 1."""
    _check_slot(slot)
    return slot << CONN_ID_BITS


def conn_id_slot(conn_id: int) -> int:
    """The slot whose worker holds connection `conn_id`."""
    return conn_id >> CONN_ID_BITS
