"""One lock per presentity, made only while someone holds or waits for it.

Every PUBLISH and SUBSCRIBE takes its presentity's lock, and nearly always nobody else holds it: the
free case is a dict lookup and insert, without an asyncio.Lock object or any suspension. Waiters are
served in arrival order; ownership passes straight to the next waiter, so no newcomer overtakes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

log = logging.getLogger("routescript.presence")


class KeyedLocks:
    """Mutual exclusion per key. `async with locks.hold(key):`."""

    def __init__(self, warn_at: int = 100_000) -> None:
        self._busy: dict[str, deque[asyncio.Future[None]]] = {}
        self.warn_at = warn_at   # bound: a log line when this many keys are busy at once

    def hold(self, key: str) -> _Held:
        return _Held((self, key))

    def locked(self, key: str) -> bool:
        return key in self._busy

    def __len__(self) -> int:
        return len(self._busy)

    async def acquire(self, key: str) -> None:
        waiters = self._busy.get(key)
        if waiters is None:
            if len(self._busy) >= self.warn_at:
                log.warning("%d presentities busy at once", len(self._busy))
            self._busy[key] = deque()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(key)   # handed to us just as we were cancelled: pass it on
            raise

    def release(self, key: str) -> None:
        waiters = self._busy[key]
        while waiters:
            fut = waiters.popleft()
            if not fut.done():   # a cancelled waiter is skipped
                fut.set_result(None)
                return
        del self._busy[key]


class _Held(tuple[KeyedLocks, str]):
    """`async with locks.hold(key)`. The free case runs here, inline: the key taken with a dict insert
    and given back with a delete, no further call or suspension; a held key waits in line (`acquire`)
    and is handed on to the next waiter (`release`). A tuple (locks, key) so that making one per hold
    runs no Python __init__."""

    __slots__ = ()

    async def __aenter__(self) -> None:
        locks, key = self
        busy = locks._busy
        if key in busy:
            await locks.acquire(key)
            return
        if len(busy) >= locks.warn_at:
            log.warning("%d presentities busy at once", len(busy))
        busy[key] = deque()

    async def __aexit__(self, *exc: object) -> None:
        locks, key = self
        if locks._busy[key]:
            locks.release(key)   # waiters: handed to the first one still waiting
        else:
            del locks._busy[key]
