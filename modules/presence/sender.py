"""Sending NOTIFYs: one ordered queue per dialog, one NOTIFY in flight per dialog.

CSeq numbers are taken when a NOTIFY is built (SubsTable.record_notify), and a dialog's NOTIFYs
leave in that order through its own queue, each waiting for the previous one's final response
(OpenSIPS with several workers was seen sending them out of order). The outcome of each is handed
to `on_result(subscription, status)` so the presence core can end a subscription on 481/408.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .subscription import DialogKey, Subscription

log = logging.getLogger("routescript.presence")

MAX_QUEUED_PER_DIALOG = 64   # bound: NOTIFYs waiting for one dialog
MAX_DIALOG_QUEUES = 100_000  # bound: dialogs with NOTIFYs in flight

SendFn = Callable[[Subscription, Any], Awaitable[int]]        # -> final status code
ResultFn = Callable[[Subscription, int], Awaitable[None] | None]


class NotifySender:
    def __init__(self, send: SendFn, on_result: ResultFn) -> None:
        self._send = send
        self._on_result = on_result
        self._queues: dict[DialogKey, list[tuple[Subscription, Any]]] = {}
        self._workers: dict[DialogKey, asyncio.Task[None]] = {}
        self.sent = 0     # NOTIFYs that got a final answer (or failed locally): statistics
        self.failed = 0   # of those, the ones without a 2xx (408, 481, local errors...)

    def enqueue(self, sub: Subscription, request: Any) -> bool:
        """Queue a built NOTIFY for its dialog; False (and a log line) when over a bound."""
        key = sub.key
        queue = self._queues.get(key)
        if queue is None:
            if len(self._queues) >= MAX_DIALOG_QUEUES:
                log.error("NOTIFY dropped for %s: %d dialogs already sending", sub.callid, len(self._queues))
                return False
            queue = self._queues[key] = []
        if len(queue) >= MAX_QUEUED_PER_DIALOG:
            log.error("NOTIFY dropped for %s: %d already queued", sub.callid, len(queue))
            return False
        queue.append((sub, request))
        if key not in self._workers:
            self._workers[key] = asyncio.get_running_loop().create_task(self._drain(key))
        return True

    async def _drain(self, key: DialogKey) -> None:
        try:
            while self._queues.get(key):
                sub, request = self._queues[key].pop(0)
                try:
                    status = await self._send(sub, request)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("NOTIFY to %s failed", sub.callid)
                    status = 500
                self.sent += 1
                if not 200 <= status < 300:
                    self.failed += 1
                try:
                    result = self._on_result(sub, status)
                    if result is not None:
                        await result
                except Exception:
                    log.exception("handling the NOTIFY response for %s failed", sub.callid)
        finally:
            self._queues.pop(key, None)
            self._workers.pop(key, None)

    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values()) + len(self._workers)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for the NOTIFYs in flight, e.g. at shutdown."""
        tasks = list(self._workers.values())
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def close(self) -> None:
        for task in list(self._workers.values()):
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
