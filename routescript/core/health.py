"""Statistics an operator needs beyond OpenSIPS's (docs/operations.md, "Metrics"): whether the event loop
keeps up, what the database costs, how much memory and how many files the process holds.

    process:loop_lag_ms       how late the loop ran a timer at the last sample (every LAG_INTERVAL s)
    process:loop_lag_max_ms   the largest such lag of the last minute (one to two minutes: WindowMax)
    process:rss_bytes         resident memory (/proc/self/statm)
    process:open_files        file descriptors open (/proc/self/fd): sockets, database files, pipes
    db:queries                database statements run (routescript/db/metrics.py)
    db:query_errors           statements that failed (refused, or the database away)
    db:query_time_ms          their total time: db:query_time_ms / db:queries is the mean latency
    db:query_max_ms           the slowest statement of the last minute (likewise)
    core:queue_delay_refusals requests answered 503 by queue_delay_limit (dispatch.py)

With worker processes each worker keeps its own and MI get_statistics merges them: memory, files and
database counters add up; the lags are the worst worker's ("max").
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from routescript.db.metrics import QUERY_METRICS, WindowMax

from .stats import CoreCounters, Statistics

LAG_INTERVAL = 0.5   # seconds between two loop-lag samples: cheap (one timer), fine enough for alerts


class LoopLagMonitor:
    """The event loop's lag: how much later than asked a timer of LAG_INTERVAL fires. A loop blocked by
    a long computation or a blocking call shows here before the clients see it."""

    def __init__(self) -> None:
        self.last = 0.0
        self.worst = WindowMax()

    def record(self, lag: float) -> None:
        self.last = lag
        self.worst.add(lag)

    async def run(self) -> None:
        """Sample until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            self.record(max(0.0, loop.time() - asked - LAG_INTERVAL))


def rss_bytes() -> int:
    """Resident set size of this process (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def open_files() -> int:
    """File descriptors open in this process (the one listing them not counted; 0 without /proc)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1
    except OSError:
        return 0


def register_health_statistics(stats: Statistics, counters: CoreCounters, lag: LoopLagMonitor) -> None:
    """The statistics of the module docstring."""
    def ms(read: Callable[[], float]) -> Callable[[], int]:
        return lambda: round(read() * 1000)

    stats.register("process", "loop_lag_ms", func=ms(lambda: lag.last), aggregate="max")
    stats.register("process", "loop_lag_max_ms", func=ms(lambda: lag.worst.value), aggregate="max")
    stats.register("process", "rss_bytes", func=rss_bytes)
    stats.register("process", "open_files", func=open_files)
    metrics = QUERY_METRICS
    stats.register("db", "queries", func=lambda: metrics.queries, reset=metrics.reset_queries)
    stats.register("db", "query_errors", func=lambda: metrics.errors, reset=metrics.reset_errors)
    stats.register("db", "query_time_ms", func=ms(lambda: metrics.total_seconds), reset=metrics.reset_time)
    stats.register("db", "query_max_ms", func=ms(lambda: metrics.slowest.value), aggregate="max")

    def refusals() -> int:
        return counters.queue_delay_refusals

    def reset_refusals() -> None:
        counters.queue_delay_refusals = 0

    stats.register("core", "queue_delay_refusals", func=refusals, reset=reset_refusals)

