"""Which workers hold watchers of a presentity, so a change is announced only where it is needed.

Without it every PUBLISH was announced to every other worker, which decoded it and marked the
presentity stale although none of its watchers lived there (measured, 2 workers at 2,200 PUBLISH/s:
12-13% of both workers' CPU; and past 100,000 such marks a worker read the database before every
request). With `worker_affinity = "uri"` a presentity's PUBLISHes and initial SUBSCRIBEs meet in its
**home** worker (crc32 of the Request-URI's user@host, docs/workers.md section 2), so the other workers
rarely hold anything of it.

`SharedInterest`: per slot, counters in anonymous shared memory made by the supervisor before fork (as
the queue probes' SharedDrain): a worker adds one in cell crc32(pres_uri) when it starts holding watchers
of a (presentity, event) and takes it away when the last one goes. Only the slot's own process writes
its row. A cell shared by two presentities gives a needless announcement, never a missing one.

`PresentityInterest`, one worker's view, gives presence three answers (docs/workers.md section 3,
"announcing only where needed", has the reasoning and the races):
- `may_skip_announcement(pres_uri)`: this worker is the presentity's home, no slot is adopted (slot
  table is the identity), and no other worker holds a watcher of it;
- `trusts_memory(pres_uri)`: this worker is its home. Another worker's presentity is read from the
  database before a PUBLISH about it is decided and before a new watcher's first NOTIFY (after the
  watcher is counted here, so a change committed after that read is announced to us);
- `hold` / `release`: the counting, called by presence's subscription table.
"""

from __future__ import annotations

import mmap
import zlib
from collections.abc import Callable
from functools import lru_cache

from routescript.sip import ParseError
from routescript.sip.peek import uri_user_host

from .dispatch import SlotTable

CELLS = 1 << 16          # per slot: 256 KiB of counters
_COUNTER = 4             # bytes: unsigned 32-bit


class SharedInterest:
    """`slots` rows of CELLS unsigned counters in MAP_SHARED | MAP_ANONYMOUS memory (kept across fork)."""

    def __init__(self, slots: int, cells: int = CELLS) -> None:
        if cells & (cells - 1):
            raise ValueError("cells must be a power of two")
        self.slots, self.cells = slots, cells
        # the rows, then one word per slot: 1 while that slot's worker starts (loads what it holds)
        self._mem = mmap.mmap(-1, (slots * cells + slots) * _COUNTER)
        self._counts = memoryview(self._mem).cast("I")
        self._starting = slots * cells

    def cell(self, key: str) -> int:
        return zlib.crc32(key.encode()) & (self.cells - 1)

    def add(self, slot: int, cell: int, delta: int) -> None:
        i = slot * self.cells + cell
        value = self._counts[i] + delta
        self._counts[i] = value if value > 0 else 0

    def count(self, slot: int, cell: int) -> int:
        return self._counts[slot * self.cells + cell]

    def held_elsewhere(self, slot: int, cell: int) -> bool:
        """Another slot holds the cell, or is starting (it does not know yet what it will hold)."""
        counts, cells, starting = self._counts, self.cells, self._starting
        return any(counts[other * cells + cell] or counts[starting + other]
                   for other in range(self.slots) if other != slot)

    def starting(self, slot: int) -> None:
        """A (re)started worker's row: what its former process counted is gone with it; until ready(),
        every change is announced to it."""
        self._counts[self._starting + slot] = 1
        start = slot * self.cells
        self._counts[start:start + self.cells] = memoryview(bytes(self.cells * _COUNTER)).cast("I")

    def ready(self, slot: int) -> None:
        self._counts[self._starting + slot] = 0


class PresentityInterest:
    """Worker `slot`'s view of the SharedInterest (see the module docstring). `slot_table()`: the table
    this worker routes by now (adoption changes it)."""

    def __init__(self, shared: SharedInterest, slot: int, n_total: int,
                 slot_table: Callable[[], SlotTable]) -> None:
        self.shared, self.slot, self.n_total = shared, slot, n_total
        self._slot_table = slot_table
        self.skipped = 0    # announcements not sent: nobody else needed them
        self.home = lru_cache(maxsize=65536)(self._home)

    def _home(self, pres_uri: str) -> bool:
        try:
            key = uri_user_host(pres_uri)
        except ParseError:
            return False
        return key is not None and zlib.crc32(key.encode()) % self.n_total == self.slot

    def hold(self, pres_uri: str) -> None:
        self.shared.add(self.slot, self.shared.cell(pres_uri), 1)

    def release(self, pres_uri: str) -> None:
        self.shared.add(self.slot, self.shared.cell(pres_uri), -1)

    def trusts_memory(self, pres_uri: str) -> bool:
        return self.home(pres_uri)

    def may_skip_announcement(self, pres_uri: str) -> bool:
        if not self.home(pres_uri):
            return False
        table = self._slot_table()
        if any(owner != slot for slot, owner in enumerate(table.owner_of)):   # a slot is adopted
            return False
        if self.shared.held_elsewhere(self.slot, self.shared.cell(pres_uri)):
            return False
        self.skipped += 1
        return True

    def starting(self) -> None:
        """This worker's process starts (before its modules load): its row counts from zero what this
        process will hold, and meanwhile every change is announced to it."""
        self.shared.starting(self.slot)

    def ready(self) -> None:
        """Its modules loaded what they hold (serving from now on)."""
        self.shared.ready(self.slot)
