"""The reconnect back-off the server back ends share (PostgreSQL, MySQL)."""

from __future__ import annotations

from collections.abc import Callable

from routescript.db.errors import DatabaseError


class Backoff:
    """When to try the server again after a connection failure. `clock` is injected (monotonic seconds)."""

    def __init__(self, clock: Callable[[], float], first: float = 0.5, cap: float = 30.0) -> None:
        self.clock = clock
        self.first = first
        self.cap = cap
        self.delay = 0.0
        self.retry_at: float | None = None

    def check(self, url: str) -> None:
        if self.retry_at is not None:
            wait = self.retry_at - self.clock()
            if wait > 0:
                raise DatabaseError(f"database {url} unreachable; next attempt in {wait:.1f} s", "connection")

    def failed(self) -> None:
        self.delay = self.first if self.delay == 0 else min(self.cap, self.delay * 2)
        self.retry_at = self.clock() + self.delay

    def succeeded(self) -> None:
        self.delay = 0.0
        self.retry_at = None
