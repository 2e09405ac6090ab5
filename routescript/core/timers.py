"""timer_route loops: one asyncio task per timer_route[name, interval] of the current script."""

from __future__ import annotations

import asyncio
import logging

from routescript.script.context import TIMER_ROUTE, MsgContext

from .routes import Routes

log = logging.getLogger("routescript.core")


class Timers:
    """Runs every timer_route of the script between start() and stop(). refresh() (after a reload)
    starts the loops of names the new script added; a loop whose route is gone ends at its next tick."""

    def __init__(self, routes: Routes, server: object) -> None:
        self._routes = routes
        self._server = server          # what the routes see as ctx.server
        self.running = False
        self.names: set[str] = set()   # the names whose loop runs now
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self) -> list[tuple[str, float]]:
        """(name, interval seconds) of the current script's timer routes, read at every tick."""
        return self._routes.timer_routes()

    def start(self) -> None:
        self.running = True
        self.refresh()

    def refresh(self) -> None:
        """One loop per timer_route name not yet running (at start, and after a reload adds one)."""
        if not self.running:
            return
        for name, _interval in self.routes():
            if name not in self.names:
                self.names.add(name)
                task = asyncio.get_running_loop().create_task(self._loop(name))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Cancel every loop and wait for it to end (a tick's route is interrupted, as at shutdown)."""
        self.running = False
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _loop(self, name: str) -> None:
        """Run timer_route[name] every interval seconds. The interval and the route are read from the
        current script at each tick, so a reload that changes them applies at the next tick, and one
        that removes the route ends the loop."""
        try:
            while self.running:
                interval = dict(self.routes()).get(name)
                if interval is None:
                    log.info("timer_route[%s] is gone after reload_routes; its timer stops", name)
                    return
                await asyncio.sleep(max(interval, 0.001))
                if not self.running:
                    return
                ctx = MsgContext(server=self._server, route_type=TIMER_ROUTE)
                await self._routes.run(TIMER_ROUTE, name, ctx)
        finally:
            self.names.discard(name)
