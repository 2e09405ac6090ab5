"""The script messages run with: one CompiledScript, swapped whole by reload_routes.

Every part that runs a route (the dispatcher, the timers, start-up, the event bus) asks this object,
so the swap is one assignment between messages; a message already running keeps the script it started
with (it holds its own reference).
"""

from __future__ import annotations

import logging
from routescript.script import CompiledScript
from routescript.script.context import EVENT_ROUTE, MsgContext

log = logging.getLogger("routescript.core")


class Routes:
    """The current compiled script and the questions the core asks it."""

    __slots__ = ("script",)

    def __init__(self) -> None:
        self.script: CompiledScript | None = None   # None until the first load

    def current(self) -> CompiledScript:
        script = self.script
        assert script is not None, "no script: load() first"
        return script

    def has(self, kind: str, name: str | None, script: CompiledScript | None = None) -> bool:
        """Whether `script` (the current one by default) has route kind[name]."""
        script = script or self.script
        assert script is not None, "no script: load() first"
        return script.has(kind, name)

    async def run(self, kind: str, name: str | None, ctx: MsgContext,
                  script: CompiledScript | None = None) -> int:
        """Run kind[name] of `script` (the current one by default); its return code."""
        script = script or self.script
        assert script is not None, "no script: load() first"
        return await script.run(kind, name, ctx)

    def has_event(self, name: str) -> bool:
        """The EventBus's question: does the script have event_route[name]? (False before load.) Read
        from the current script's own table of event routes: a reload swaps it with the script."""
        script = self.script
        return script is not None and name in script.event_routes

    async def run_event(self, name: str, ctx: MsgContext) -> bool:
        """The EventBus's hook: run event_route[name]; False when the script has none."""
        script = self.script
        fn = script.event_routes.get(name) if script is not None else None
        if fn is None:
            return False
        ctx.route_type = EVENT_ROUTE
        await fn(ctx)
        return True

    def run_event_now(self, name: str, ctx: MsgContext) -> bool:
        """Run event_route[name] in place when the script compiled it as never waiting
        (CompiledScript.instant_events): its coroutine completes on its first step, no task needed.
        False when it has no such route (none, or one that may wait: the caller schedules run_event)."""
        script = self.script
        if script is None or name not in script.instant_events:
            return False
        ctx.route_type = EVENT_ROUTE
        step = script.instant_events[name](ctx)
        try:
            step.send(None)
        except StopIteration:
            return True
        step.close()   # a compiler bug: never-waiting code waited; the rest of the route is not run
        log.error("event_route[%s] suspended although compiled as never waiting; stopped there", name)
        return True

    def timer_routes(self) -> list[tuple[str, float]]:
        """(name, interval seconds) of the current script's timer_route[name, interval] blocks."""
        return [(str(name), float(interval)) for name, interval, _fn in self.current().timer_routes]
