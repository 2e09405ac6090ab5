"""Walking a whole table from an MI command without holding the event loop.

One event loop serves SIP and MI. A command that lists or exposes every row (subs_phtable_list over
100,000 subscriptions, pres_expose over every publication) handles WALK_SLICE rows, then hands the
loop back (`await asyncio.sleep(0)`) so queued SIP requests are answered before the next slice: a
walk adds at most one slice's work to any request's wait. The reply of such a command is encoded
the same way (routescript.mi.jsonrpc.encode_reply).

How many walks may run at once is the registry's business (core parameter `mi_max_walks`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")

# Rows handled between two returns to the loop. A slice of subs_phtable_list records or of
# E_PRESENCE_EXPOSED events costs about 1-3 ms here; SIP answers wait at most that much longer.
WALK_SLICE = 256


async def in_slices(rows: Iterable[T], size: int = WALK_SLICE) -> AsyncIterator[Sequence[T]]:
    """The rows in lists of at most `size`, the loop let run after each (not before the first)."""
    batch: list[T] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
            await asyncio.sleep(0)
    if batch:
        yield batch


async def let_loop_run() -> None:
    """Hand the loop back once (between two slices of a walk that is not a plain iteration)."""
    await asyncio.sleep(0)
