"""A virtual clock for running a server in process: an asyncio loop whose time moves only when a test
says so, and a wall clock (time.time, datetime.now) that moves with it.

    loop = VirtualClockLoop()
    ...                                  # inject messages
    await loop.settle()                  # every consequence that needs no time to pass has happened
    await loop.advance(601)              # every timer due in the next 601 s fires, in order, instantly

Why not looptime (the nearest library): it moves time whenever the loop idles, guessing with "no-op
cycles" whether a thread is still working. The server's SQLite work runs in aiosqlite's own thread
(not run_in_executor), so a commit in flight would let the clock jump, firing retransmission and expiry
timers in the middle of a request. Here time moves only inside advance(), and only when nothing is
running: no ready callback, no timer due, no outside work (executor jobs, and what the caller marks
with `outside_work()`: routescript.testing.scenario marks every aiosqlite call).

The wall clock is time-machine's (a well-kept library that patches the C functions, so even a
`clock=time.time` default bound at import time reads the virtual time): it starts at the real time
of the loop's creation, stands still, and is shifted by what advance() moves. time.monotonic and
time.perf_counter stay real (asyncio's own clock is this loop's time(), not them).
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import time
from collections.abc import Callable, Iterator
from typing import Any

# A loop waiting for an outside event (a thread's result, a socket) with nothing of its own to run
# looks again this often (real seconds): bounded, so a lost wake-up costs a pause, never a hang.
_REAL_POLL = 0.05


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop on a virtual clock (module docstring). Not thread-safe beyond what asyncio
    is: call its methods from the loop's thread."""

    def __init__(self, *, wall_clock: bool = True) -> None:
        super().__init__(selectors.DefaultSelector())
        self._now = 1_000.0                  # arbitrary: no code may read meaning into the loop's zero
        self._outside = 0                    # outside work in flight (threads)
        self._settled: list[asyncio.Future[None]] = []
        self._advance_to: float | None = None
        self._advance_done: asyncio.Future[None] | None = None
        self._wall: Any = None               # time_machine.Coordinates while the wall clock is ours
        self._travel: Any = None
        if wall_clock:
            import time_machine

            self._travel = time_machine.travel(time.time(), tick=False)
            self._wall = self._travel.start()
        self._real_select: Callable[[float | None], list[tuple[selectors.SelectorKey, int]]] = \
            self._selector.select   # type: ignore[attr-defined]
        self._selector.select = self._select          # type: ignore[attr-defined]

    # --- the clock ------------------------------------------------------------------------------

    def time(self) -> float:
        return self._now

    async def settle(self) -> None:
        """Return once the loop has nothing left to do at this instant: no callback ready, no timer due,
        no outside work in flight. The clock does not move."""
        fut: asyncio.Future[None] = self.create_future()
        self._settled.append(fut)
        await fut

    async def advance(self, seconds: float) -> None:
        """Move the clock `seconds` ahead, stopping at every timer due on the way (each runs at its own
        time, and what it starts settles before the clock moves on); returns settled at the end."""
        if seconds < 0:
            raise ValueError("time cannot go back")
        if self._advance_done is not None:
            raise RuntimeError("advance() is already running")
        self._advance_to = self._now + seconds
        self._advance_done = self.create_future()
        try:
            await self._advance_done
        finally:
            self._advance_to = self._advance_done = None
        await self.settle()

    @contextlib.contextmanager
    def outside_work(self) -> Iterator[None]:
        """Mark work done outside the loop (another thread) whose result the loop will be woken for:
        the clock stands still and settle() waits while any is in flight."""
        self._outside += 1
        try:
            yield
        finally:
            self._outside -= 1

    def run_in_executor(self, executor: Any, func: Callable[..., Any],  # type: ignore[override]
                        *args: Any) -> asyncio.Future[Any]:
        future = super().run_in_executor(executor, func, *args)
        self._outside += 1

        def done(_: asyncio.Future[Any]) -> None:
            self._outside -= 1

        future.add_done_callback(done)
        return future

    def _move_to(self, when: float) -> None:
        if when > self._now:
            if self._wall is not None:
                self._wall.shift(when - self._now)
            self._now = when

    def _select(self, timeout: float | None) -> list[tuple[selectors.SelectorKey, int]]:
        """The selector's select as the loop calls it: `timeout` 0 means something is ready to run;
        otherwise it is the (virtual) time to the next timer, None when there is none."""
        events: list[tuple[selectors.SelectorKey, int]] = self._real_select(0)
        if events or timeout == 0:
            return events
        if self._outside:
            return self._real_select(_REAL_POLL)   # a thread's answer wakes us through the self-pipe
        if self._settled:
            waiting, self._settled = self._settled, []
            for fut in waiting:
                if not fut.done():
                    fut.set_result(None)
            return []
        target = self._advance_to
        if target is not None and self._advance_done is not None:
            next_timer = self._now + timeout if timeout is not None else None
            if next_timer is not None and next_timer <= target:
                self._move_to(next_timer)
            else:
                self._move_to(target)
                if not self._advance_done.done():
                    self._advance_done.set_result(None)
            return []
        # Nothing to run and nobody moving the clock: wait for the outside world (in real time).
        return self._real_select(_REAL_POLL)

    def close(self) -> None:
        super().close()
        if self._travel is not None:
            self._travel.stop()
            self._travel = self._wall = None
