"""One worker process as the supervisor sees it (Worker), and what the supervisor does to it through its
pidfd: signal it, and say how it exited."""

from __future__ import annotations

import asyncio
import signal
import socket
from dataclasses import dataclass, field
from typing import Any

from .control import ControlChannel, MIReply


@dataclass(slots=True)
class Worker:
    """One slot's current process as the supervisor sees it."""

    slot: int
    epoch: int
    pid: int
    pidfd: int
    channel: ControlChannel
    control: socket.socket            # the supervisor's end of the control pair
    started_at: float
    ready: asyncio.Future[str | None]   # None: Ready; a text: why it did not start
    exited: asyncio.Future[int]         # the exit status
    last_pong: float = 0.0
    load: int = 0                       # subscriptions held, from its last Load
    pending_mi: dict[int, asyncio.Future[MIReply]] = field(default_factory=dict)
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)   # StatsReply, Prepared by id/gen
    reader: asyncio.Task[None] | None = None


def send_signal(worker: Worker, sig: int) -> None:
    """Send `sig` through the worker's pidfd (never to another process that got its PID since)."""
    if worker.exited.done():
        return
    try:
        signal.pidfd_send_signal(worker.pidfd, sig)
    except ProcessLookupError:
        pass   # exiting: its pidfd reports it


def describe_exit(code: int) -> str:
    """waitstatus_to_exitcode's value in words: `status 1` or `killed by SIGKILL`."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:   # a real-time signal has no name
            return f"killed by signal {-code}"
    return f"status {code}"
