"""The CloseStack: how to close what the server's start opened, in reverse order and within a bound, and
what to say when a close is abandoned (lifecycle.py pushes a step for everything it opens)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable

log = logging.getLogger("routescript.core")

# Once shutdown_timeout is spent, each step still to close gets this long (the SIP sockets, the databases:
# a database left open keeps its thread, and the interpreter waits for it at exit - a stop that hung).
AFTER_OVERRUN_STEP = 0.5


class CloseStack:
    """How to close what start() opened, in the order it was opened. close_all() closes the last
    opened first; a step that fails is logged and the others still run."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], Awaitable[object]]]] = []

    def push(self, what: str, close: Callable[[], Awaitable[object]]) -> None:
        self._steps.append((what, close))

    async def close_all(self, limit: float | None = None) -> list[str]:
        """Close every step; with `limit` (seconds) a step still running when the limit is spent is
        abandoned (cancelled) and logged, and each later step still gets AFTER_OVERRUN_STEP seconds:
        one stuck module must not leave the sockets and databases open. Returns what was abandoned.
        Bound: limit + AFTER_OVERRUN_STEP per step left, for steps that let themselves be cancelled."""
        loop = asyncio.get_running_loop()
        end = None if limit is None else loop.time() + limit
        abandoned: list[str] = []
        while self._steps:
            what, close = self._steps.pop()
            if end is None:
                try:
                    await close()
                except Exception:
                    log.exception("closing %s failed", what)
                continue
            left = max(end - loop.time(), AFTER_OVERRUN_STEP)
            # a task of its own: a close that ignores its cancellation cannot hold the stop
            step = asyncio.ensure_future(close())
            done, _ = await asyncio.wait({step}, timeout=left)
            if not done:
                step.cancel()
                step.add_done_callback(_retrieve)
                abandoned.append(what)
                log.error("stopping: closing %s took more than %.1f s: abandoned", what, left)
            elif not step.cancelled() and (exc := step.exception()) is not None:
                log.error("closing %s failed", what, exc_info=exc)
        return abandoned


def _retrieve(task: asyncio.Future[object]) -> None:
    """An abandoned close that ends later: its outcome is read (no 'exception never retrieved')."""
    if not task.cancelled():
        task.exception()


def sync_close(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    """A synchronous close for the CloseStack."""
    async def run() -> None:
        close()
    return run


def log_left_running() -> None:
    """After an abandoned close: the tasks still pending and the threads still alive (a non-daemon one
    keeps the interpreter from exiting), so that a stop that does not end says what it waits for."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    if tasks:
        names = sorted(f"{t.get_name()} ({getattr(t.get_coro(), '__qualname__', '?')})" for t in tasks)
        log.warning("stopping: %d tasks still pending: %s%s", len(tasks), "; ".join(names[:10]),
                    f" ... ({len(names) - 10} more)" if len(names) > 10 else "")
    threads = [t.name for t in threading.enumerate()
               if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if threads:
        log.warning("stopping: threads still running: %s", ", ".join(sorted(threads)))
