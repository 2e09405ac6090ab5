"""The event bus: `raise_event("E_PRESENCE_PUBLISH", {...})` feeds `event_route[E_PRESENCE_PUBLISH]`.

As in OpenSIPS's evi, an event has a name and named parameters; the script reads them with
`$param(name)`. External subscribers (the MI `event_subscribe` / event_datagram side, a later issue)
register callbacks here; each gets `(name, params)` and is isolated from the others' failures.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from routescript.script.context import EVENT_ROUTE, MsgContext

if TYPE_CHECKING:
    from .host import ModuleHost

log = logging.getLogger("routescript.core")

# An event's parameters are script values ($param(name)): ints, strings, None - Any by design.
EventParams = dict[str, Any]
Subscriber = Callable[[str, EventParams], "Awaitable[None] | None"]


class EventBus:
    """Named events -> event_route runs and subscriber callbacks.

    `run_route(name, ctx)` is the server's hook to run `event_route[name]` (returns False when the
    script has none). Events are declared by modules (`Module.events`) and by the core; raising an
    undeclared one is a bug in the raiser and is logged, not silently dropped.
    """

    # Bound on concurrently running event deliveries; beyond it, deliveries wait (never dropped).
    MAX_PENDING = 1024

    def __init__(self, run_route: Callable[[str, MsgContext], Awaitable[bool]] | None = None,
                 server: ModuleHost | None = None, has_route: Callable[[str], bool] | None = None,
                 run_route_now: Callable[[str, MsgContext], bool] | None = None) -> None:
        self._run_route = run_route
        self._has_route = has_route
        self._run_route_now = run_route_now   # runs a never-waiting event_route in place (Routes)
        self._server = server
        self._declared: set[str] = set()
        self._subscribers: dict[str, list[Subscriber]] = {}
        self._any: list[Subscriber] = []
        self._sem = asyncio.Semaphore(self.MAX_PENDING)
        self._tasks: set[asyncio.Task[None]] = set()

    def declare(self, name: str) -> None:
        self._declared.add(name)

    @property
    def declared(self) -> frozenset[str]:
        return frozenset(self._declared)

    def subscribe(self, callback: Subscriber, name: str | None = None) -> None:
        """Call `callback(name, params)` for event `name`, or for every event when name is None."""
        if name is None:
            self._any.append(callback)
        else:
            self._subscribers.setdefault(name, []).append(callback)

    def unsubscribe(self, callback: Subscriber, name: str | None = None) -> None:
        lst = self._any if name is None else self._subscribers.get(name, [])
        if callback in lst:
            lst.remove(callback)

    def wanted(self, name: str) -> bool:
        """Whether raising `name` now would reach anyone: the script's event_route[name] (asked each
        time: a reload may add or drop it) or a subscriber. A raiser on the hot path (every PUBLISH)
        asks first and skips building the parameters and the delivery task (a sixth of a PUBLISH's
        200 path when nobody listens, the usual case)."""
        if self._any or self._subscribers.get(name):
            return True
        if self._run_route is None:
            return False
        return self._has_route is None or self._has_route(name)

    async def raise_event(self, name: str, params: EventParams) -> None:
        """Deliver now: run event_route[name] with ctx.params, then the subscribers. Waits for both."""
        if self._declared and name not in self._declared:
            log.error("event %s raised but never declared by a module or the core", name)
        async with self._sem:
            if self._run_route is not None:
                ctx = MsgContext(server=self._server, route_type=EVENT_ROUTE, params=dict(params))
                try:
                    await self._run_route(name, ctx)
                except Exception:
                    log.exception("event_route[%s] failed", name)
            for cb in [*self._subscribers.get(name, ()), *self._any]:
                try:
                    result = cb(name, dict(params))
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("subscriber of %s failed", name)

    def raise_event_nowait(self, name: str, params: EventParams) -> None:
        """Deliver without waiting (for callers that must not block, e.g. a reply path). An event with
        no subscriber whose event_route never waits (compiled so, not declared async) is delivered in
        place, as OpenSIPS runs a sync event_route: it cannot block, and costs no task. Anything else
        is a task running raise_event."""
        if self._run_route_now is not None and not self._any and not self._subscribers.get(name):
            ctx = MsgContext(server=self._server, route_type=EVENT_ROUTE, params=dict(params))
            if self._run_route_now(name, ctx):
                if self._declared and name not in self._declared:
                    log.error("event %s raised but never declared by a module or the core", name)
                return
        task = asyncio.get_running_loop().create_task(self.raise_event(name, params))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for scheduled deliveries (used at shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
