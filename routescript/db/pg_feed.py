"""PostgreSQL LISTEN on a dedicated connection (never a pooled one: a pooled connection is handed to other
callers, and a LISTEN belongs to its session), kept alive by a supervisor task.

The supervisor connects, LISTENs every registered channel, then waits for the connection to end: the
server closing it (asyncpg's termination listener) or a keep-alive `SELECT 1` that fails or hangs
(a half-open TCP connection never reports its end). Then it reconnects with a back-off (first_delay
doubling up to max_delay), LISTENs everything again and calls the on_reconnect callbacks, because every
announcement sent in between is lost for us.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from routescript.db.base import log
from routescript.db.errors import DatabaseError
from routescript.db.feed import Listeners

CONNECT_TIMEOUT = 5.0


class PgListener:
    """The LISTEN connection of one PostgresDatabase."""

    def __init__(self, url: str, dsn: str, listeners: Listeners, *, first_delay: float = 0.5,
                 max_delay: float = 30.0, keepalive: float = 10.0,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.url = url
        self.dsn = dsn
        self.listeners = listeners
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.keepalive = keepalive
        self.sleep = sleep
        self.conn: asyncpg.Connection | None = None
        self.reconnects = 0             # connections made after a loss (each followed by on_reconnect)
        self._listening: set[str] = set()  # channels LISTENed on self.conn
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()     # one of (connect + LISTEN all, LISTEN one, UNLISTEN one) at a time
        self._closed = False

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.is_closed()

    async def listen(self, channel: str) -> None:
        """Start listening to `channel`. The first call connects and raises DatabaseError (transient)
        when the server cannot be reached; later, while the connection is being re-made, the channel is
        only registered and LISTENed as soon as it is back."""
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._first = loop.create_future()
            self._task = loop.create_task(self._supervise())
            await asyncio.shield(self._first)  # raises the first connection's failure
            return
        async with self._lock:
            if self.connected and channel not in self._listening:
                assert self.conn is not None
                try:
                    await self.conn.add_listener(channel, self._deliver)
                    self._listening.add(channel)
                except Exception as exc:  # noqa: BLE001 - the supervisor sees the loss and re-LISTENs all
                    log.info("%s: LISTEN %s failed (%s); done again on reconnect", self.url, channel, exc)

    async def unlisten(self, channel: str) -> None:
        async with self._lock:
            if channel in self._listening and self.connected:
                assert self.conn is not None
                with contextlib.suppress(Exception):
                    await self.conn.remove_listener(channel, self._deliver)
            self._listening.discard(channel)
        if not self.listeners.channels:
            await self.close()
            self._closed = False  # a later listen() starts again

    def _deliver(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.listeners.dispatch(channel, payload)

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT)
        try:
            self._listening.clear()
            for channel in self.listeners.channels:
                await conn.add_listener(channel, self._deliver)
                self._listening.add(channel)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _supervise(self) -> None:
        delay = 0.0
        lost_before = False
        while not self._closed and self.listeners.channels:
            try:
                async with self._lock:
                    conn = await self._connect()
            except Exception as exc:  # noqa: BLE001 - every failure to connect is "try again later"
                if self._first is not None and not self._first.done():
                    self._first.set_exception(
                        DatabaseError(f"cannot LISTEN on {self.url}: {exc}", "connection"))
                    return
                delay = self.first_delay if delay == 0 else min(self.max_delay, delay * 2)
                log.warning("%s: LISTEN connection failed (%s); next attempt in %.2f s", self.url, exc, delay)
                await self.sleep(delay)
                continue
            ended = asyncio.Event()
            conn.add_termination_listener(lambda _c, ended=ended: ended.set())
            self.conn = conn
            delay = 0.0
            if self._first is not None and not self._first.done():
                self._first.set_result(None)
            if lost_before:
                self.reconnects += 1
                log.info("%s: LISTEN connection back (%s); owners resync", self.url,
                         ", ".join(sorted(self._listening)))
                self.listeners.reconnected()
            await self._watch(conn, ended)
            self.conn = None
            conn.terminate()
            if self._closed:
                return
            lost_before = True
            log.warning("%s: LISTEN connection lost; announcements are missed until it is back", self.url)

    async def _watch(self, conn: asyncpg.Connection, ended: asyncio.Event) -> None:
        """Return when the connection has ended (or closing was asked for)."""
        while not ended.is_set() and not self._closed:
            try:
                await asyncio.wait_for(ended.wait(), self.keepalive)
                return
            except TimeoutError:
                pass
            try:
                async with self._lock:
                    await asyncio.wait_for(conn.execute("SELECT 1"), self.keepalive)
            except Exception:  # noqa: BLE001 - any failure of the keep-alive means the connection is gone
                return

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)
            conn.terminate()
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._listening.clear()
