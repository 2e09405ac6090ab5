"""--target: the same steps against a running server over UDP and TCP, in real time.

Choice: `advance` becomes a real sleep up to LIVE_MAX_ADVANCE (10 s); a scenario with a longer one, or
with a step only the in-process run can check (log, db, mi, routes) or a tls or ws UA, is skipped live with
the reason and the step's position - the in-process run is where it is checked. An expectation
waits up to LIVE_WAIT (2 s) for its message; `nothing` waits `within` (at least 0.2 s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from . import model as m
from .engine import LIVE_MAX_ADVANCE, LIVE_WAIT, World
from .network import LIVE_TRANSPORTS, LiveWire
from .ua import UserAgent

_QUIET = 0.2   # real seconds a `nothing` without `within` listens for strays


def live_obstacle(scenario: m.Scenario, file: m.ScenarioFile) -> str | None:
    """Why the scenario cannot run live, or None."""
    for step in scenario.steps:
        where = f"{step.pos}"
        if isinstance(step, m.IN_PROCESS_ONLY):
            kind = type(step).__name__.replace("Check", "").replace("Call", "").lower()
            return f"{where}: a {kind} step is checked in process only"
        seconds = 0.0
        if isinstance(step, m.Advance):
            seconds = step.seconds
        elif isinstance(step, m.Nothing):
            seconds = step.within
        if seconds > LIVE_MAX_ADVANCE:
            return f"{where}: {seconds:g} s of real time (at most {LIVE_MAX_ADVANCE:g} s live)"
    used = scenario_uas(scenario)
    for ua in file.uas.values():
        if ua.name in used and ua.transport not in LIVE_TRANSPORTS:
            return f"UA {ua.name} uses {ua.transport} (--target speaks {' and '.join(LIVE_TRANSPORTS)})"
    return None


def scenario_uas(scenario: m.Scenario) -> set[str]:
    """The UAs a scenario's steps name (who sends, who is expected to receive or answer)."""
    return {name for step in scenario.steps
            if (name := getattr(step, "ua", None)) is not None}


class LiveWorld(World):
    live = True

    def __init__(self, file: m.ScenarioFile, target: tuple[str, int]) -> None:
        self.file = file
        self.target = target
        self.uas: dict[str, UserAgent] = {}
        self.wire: LiveWire | None = None

    async def start(self, names: list[str]) -> None:
        self.wire = LiveWire(asyncio.get_running_loop(), self.target)
        for name in names:
            spec = self.file.uas.get(name) or m.UASpec(name)
            if spec.transport not in LIVE_TRANSPORTS:
                continue   # another scenario's browser (live_obstacle skips the scenarios that use it)
            ua = UserAgent(spec, self.wire, self.target[0])
            await self.wire.add(ua)
            self.uas[name] = ua

    async def stop(self) -> None:
        if self.wire is not None:
            self.wire.close()

    async def settle(self) -> None:
        await asyncio.sleep(0.02)

    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, _QUIET))

    async def wait_for(self, found: Callable[[], bool]) -> None:
        deadline = time.monotonic() + LIVE_WAIT
        # polled: a UA's queues, filled by its socket, have no event to wait on
        while not found() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    def server_uri(self) -> str:
        return f"sip:{self.target[0]}:{self.target[1]}"
