"""The refresh timer the publication and subscription sides share: run a tick, then sleep until the next
deadline (at most `period` seconds, at least 50 ms) or until woken by a change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def run_timer(tick: Callable[[], None], next_deadline: Callable[[], float | None],
                    clock: Callable[[], float], period: float, wake: asyncio.Event) -> None:
    while True:
        tick()
        deadline = next_deadline()
        delay = float(period)
        if deadline is not None:
            delay = max(0.05, min(delay, deadline - clock()))
        wake.clear()
        try:
            await asyncio.wait_for(wake.wait(), delay)
        except TimeoutError:
            pass
