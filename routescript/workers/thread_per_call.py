"""The supervisor's default executor: a thread per call, so that no idle thread stays behind to make a
later fork refuse (a fork is only safe in a single-threaded process)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")


class ThreadPerCallExecutor(Executor):
    """The supervisor's default executor: one thread per call, gone when the call returns. The standard
    pool keeps its idle threads, and one thread too many makes every later fork refuse (mi_http checks
    passwords in a thread: asyncio.to_thread)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:   # noqa: BLE001 - handed to the caller through the future
                future.set_exception(exc)

        threading.Thread(target=run, name="routescript-supervisor-call", daemon=True).start()
        return future
