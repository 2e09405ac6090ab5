"""What the database costs, counted where every statement passes (Database._run): statements run, those
that failed, the time they took, the slowest of the last minute. One set per process (every Database of
the process, shared handles and a module's own alike, adds to it); the core shows it as the db:
statistics (core/health.py). The db layer keeps the numbers only: it knows no statistics registry."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW = 60.0   # seconds a maximum is remembered


class WindowMax:
    """The largest value seen in the last WINDOW to 2 x WINDOW seconds (two buckets that take turns): a
    gauge that falls again after a bad minute, with no reset to share between scrapers. Time injected."""

    __slots__ = ("_clock", "_started", "_current", "_previous")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._current = 0.0
        self._previous = 0.0

    def _turn(self, now: float) -> None:
        elapsed = now - self._started
        if elapsed >= WINDOW:
            self._previous = self._current if elapsed < 2 * WINDOW else 0.0
            self._current = 0.0
            self._started = now

    def add(self, value: float) -> None:
        self._turn(self._clock())
        if value > self._current:
            self._current = value

    @property
    def value(self) -> float:
        self._turn(self._clock())
        return max(self._current, self._previous)


@dataclass(slots=True)
class QueryMetrics:
    """Counters of database statements: `queries`, `errors`, `total_seconds`, and `slowest` (a
    WindowMax of their durations)."""

    queries: int = 0
    errors: int = 0
    total_seconds: float = 0.0
    slowest: WindowMax = field(default_factory=WindowMax)

    def observe(self, seconds: float, failed: bool) -> None:
        self.queries += 1
        self.total_seconds += seconds
        self.slowest.add(seconds)
        if failed:
            self.errors += 1

    # MI reset_statistics, one statistic at a time
    def reset_queries(self) -> None:
        self.queries = 0

    def reset_errors(self) -> None:
        self.errors = 0

    def reset_time(self) -> None:
        self.total_seconds = 0.0


QUERY_METRICS = QueryMetrics()
