"""Sending NOTIFYs: one ordered queue per dialog, one NOTIFY in flight per dialog.

CSeq numbers are taken when a NOTIFY is built (SubsTable.record_notify), and a dialog's NOTIFYs
leave in that order through its own queue, each waiting for the previous one's final response
(OpenSIPS with several workers was seen sending them out of order). The outcome of each is handed
to `on_result(subscription, status)` so the presence core can end a subscription on 481/408.

No task per NOTIFY: `send(sub, request, done)` starts a client transaction and `done(status)` is
called back once with its final status, which starts the dialog's next NOTIFY. A fan-out of hundreds
of NOTIFYs a change costs no task, future or coroutine each (they were a sixth of its CPU). When
`on_result` returns an awaitable (the subscription has to end), the dialog's next NOTIFY waits for it.

A dialog's queue ends with its subscription, whatever became of its NOTIFYs (issue 15: watchers that
never answer left queues of 64 NOTIFYs, each waiting out Timer F, long after their subscriptions had
expired). Two rules do it:
- a final NOTIFY (Subscription-State terminated: expiry, unsubscribe, fetch, a refused watcher)
  replaces the NOTIFYs still waiting behind the one in flight - it carries the last state, theirs is
  stale - is never refused by the queue bound, and nothing is queued after it;
- before the next NOTIFY of a dialog is sent, `is_live(subscription)` is asked; the waiting NOTIFYs of a
  subscription that has ended meanwhile (481 or 408 from the watcher, taken over by another node) are
  dropped. So a dialog's queue is gone at most one Timer F after its subscription ended (the NOTIFY in
  flight) plus one for its final NOTIFY.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .subscription import DialogKey, Subscription, SubState

log = logging.getLogger("routescript.presence")

MAX_QUEUED_PER_DIALOG = 64   # bound: NOTIFYs waiting for one dialog
MAX_DIALOG_QUEUES = 100_000  # bound: dialogs with NOTIFYs in flight

DoneFn = Callable[[int], None]
SendFn = Callable[[Subscription, Any, DoneFn], None]           # starts it; done(final status) later
ResultFn = Callable[[Subscription, int], Awaitable[None] | None]
LiveFn = Callable[[Subscription], bool]                          # is its subscription still held?


def _final(sub: Subscription) -> bool:
    """A NOTIFY built for a terminated subscription: the last one of its dialog."""
    return sub.status is SubState.TERMINATED


class NotifySender:
    def __init__(self, send: SendFn, on_result: ResultFn, is_live: LiveFn = lambda sub: True) -> None:
        self._send = send
        self._on_result = on_result
        self._is_live = is_live
        # dialog -> its NOTIFYs; the first one is in flight. A dialog is here exactly while busy.
        self._queues: dict[DialogKey, deque[tuple[Subscription, Any]]] = {}
        self._results: set[asyncio.Task[None]] = set()   # on_result work the next NOTIFY waits for
        self._closed = False
        self._idle: asyncio.Event | None = None   # set by drain(): nothing queued, nothing running
        self.sent = 0     # NOTIFYs that got a final answer (or failed locally): statistics
        self.failed = 0   # of those, the ones without a 2xx (408, 481, local errors...)
        self.dropped = 0  # queued NOTIFYs never sent: their subscription ended first (statistics)

    def enqueue(self, sub: Subscription, request: Any) -> bool:
        """Queue a built NOTIFY for its dialog; False (and a log line) when over a bound."""
        key = sub.key
        queue = self._queues.get(key)
        if queue is None:
            if len(self._queues) >= MAX_DIALOG_QUEUES:
                log.error("NOTIFY dropped for %s: %d dialogs already sending", sub.callid, len(self._queues))
                return False
            self._queues[key] = deque(((sub, request),))
            self._start(key)
            return True
        if _final(queue[-1][0]):
            log.info("NOTIFY for %s not sent: its subscription has ended (final NOTIFY queued)", sub.callid)
            self.dropped += 1
            return False
        if _final(sub):
            # the final NOTIFY supersedes the waiting ones (never the one in flight: its CSeq is out)
            while len(queue) > 1:
                queue.pop()
                self.dropped += 1
            queue.append((sub, request))
            return True
        if len(queue) >= MAX_QUEUED_PER_DIALOG:
            log.error("NOTIFY dropped for %s: %d already queued", sub.callid, len(queue))
            return False
        queue.append((sub, request))
        return True

    def _start(self, key: DialogKey) -> None:
        """Send the dialog's first queued NOTIFY."""
        sub, request = self._queues[key][0]
        answered = False

        def done(status: int) -> None:
            nonlocal answered
            if not answered:
                answered = True
                self._done(key, status)

        try:
            self._send(sub, request, done)
        except Exception:
            log.exception("NOTIFY to %s failed", sub.callid)
            asyncio.get_running_loop().call_soon(done, 500)

    def _done(self, key: DialogKey, status: int) -> None:
        queue = self._queues.get(key)
        if not queue or self._closed:
            return
        sub, _ = queue[0]
        self.sent += 1
        if not 200 <= status < 300:
            self.failed += 1
        try:
            result = self._on_result(sub, status)
        except Exception:
            log.exception("handling the NOTIFY response for %s failed", sub.callid)
            result = None
        if result is not None and inspect.isawaitable(result):
            task = asyncio.get_running_loop().create_task(self._after(key, result))
            self._results.add(task)
            task.add_done_callback(self._results.discard)
            task.add_done_callback(self._check_idle)
            return
        self._next(key)

    async def _after(self, key: DialogKey, result: Awaitable[None]) -> None:
        try:
            await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handling the NOTIFY response failed")
        self._next(key)

    def _next(self, key: DialogKey) -> None:
        queue = self._queues.get(key)
        if queue is None or self._closed:
            return
        queue.popleft()
        while queue and not _final(queue[0][0]) and not self._alive(queue[0][0]):
            queue.popleft()   # its subscription ended while the NOTIFY before was in flight
            self.dropped += 1
        if queue:
            self._start(key)
        else:
            del self._queues[key]
            self._check_idle()

    def _alive(self, sub: Subscription) -> bool:
        try:
            return self._is_live(sub)
        except Exception:  # a broken check must not keep a queue forever
            log.exception("checking the subscription %s failed; its NOTIFY is sent", sub.callid)
            return True

    def compact(self) -> None:
        """Give back the slots of emptied tables (clean_period): a dict or set never shrinks, and a
        fan-out to 20,000 watchers left one sized for them."""
        if not self._queues:
            self._queues = {}
        if not self._results:
            self._results = set()

    def pending(self) -> int:
        """NOTIFYs queued or in flight."""
        return sum(len(q) for q in self._queues.values())

    def dialogs(self) -> int:
        """Dialogs with a NOTIFY in flight (each holds a queue)."""
        return len(self._queues)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for the NOTIFYs in flight, e.g. at shutdown."""
        if not (self._queues or self._results):
            return
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._idle = None

    def _check_idle(self, *_: object) -> None:
        if self._idle is not None and not (self._queues or self._results):
            self._idle.set()

    async def close(self) -> None:
        self._closed = True
        self._queues.clear()
        for task in list(self._results):
            task.cancel()
        await asyncio.gather(*self._results, return_exceptions=True)
