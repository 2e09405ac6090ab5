"""Profile sizes across worker processes (docs/modules/dialog.md, "Workers").

A dialog lives in one worker (every request of a call shares its Call-ID and the dispatcher sends it to
one worker), but get_profile_size() must count the calls of every worker: a concurrent-call limit that
counted one worker only would let a user place N calls per worker.

`SharedProfiles`: per worker slot, two rows of CELLS unsigned counters (a count-min sketch with two hash
functions) in anonymous shared memory made before fork (MAP_SHARED, as routescript/workers/interest.py
does). Only a slot's own process writes its rows; a reader adds, for every other slot, the smaller of the
key's two cells. A worker's own count is exact (its DialogTable). Two keys sharing both cells in one slot
make a count too large, never too small; with 2^18 cells per row and a thousand live keys in a worker the
chance is about (1000 / 2^18)^2, 1.5e-5 per key. A restarted worker clears its rows (its dialogs were in
its memory only).
"""

from __future__ import annotations

import mmap
import zlib

CELLS = 1 << 18      # per row; two rows per slot: 2 MiB per worker
_TOTAL = "\x00all"   # the key of a profile's total (every value)


def _cells(key: str) -> tuple[int, int]:
    data = key.encode()
    first = zlib.crc32(data) & (CELLS - 1)
    second = zlib.adler32(data[::-1] + b"\x7f") & (CELLS - 1)
    return first, second


def key_of(profile: str, value: str | None) -> str:
    return f"{profile}\x00{value}" if value is not None else profile + _TOTAL


class SharedProfiles:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._mem = mmap.mmap(-1, slots * 2 * CELLS * 4)
        self._counts = memoryview(self._mem).cast("I")

    def clear(self, slot: int) -> None:
        start = slot * 2 * CELLS
        self._counts[start:start + 2 * CELLS] = memoryview(bytes(2 * CELLS * 4)).cast("I")

    def add(self, slot: int, profile: str, value: str | None, delta: int) -> None:
        """A dialog of `slot` joined (delta 1) or left (-1) the profile with `value`; the profile's total
        counts too."""
        keys = [key_of(profile, None)] if value is None else [key_of(profile, value), key_of(profile, None)]
        base = slot * 2 * CELLS
        for key in keys:
            first, second = _cells(key)
            for i in (base + first, base + CELLS + second):
                n = self._counts[i] + delta
                self._counts[i] = n if n > 0 else 0

    def others(self, slot: int, profile: str, value: str | None) -> int:
        """The count of every slot but `slot`."""
        first, second = _cells(key_of(profile, value))
        total = 0
        for other in range(self.slots):
            if other == slot:
                continue
            base = other * 2 * CELLS
            total += min(self._counts[base + first], self._counts[base + CELLS + second])
        return total
