"""The change feed on MySQL/MariaDB: a polled table, since MySQL has no LISTEN/NOTIFY.

`notify(channel, payload)` inserts a row into `rs_feed` (ours, created on first use; not an OpenSIPS
table). Inside a transaction the row becomes visible at commit and never when it rolls back, which is the
feed's promise (routescript.db.feed). Each listening Database runs one poller on a connection of its own:
every POLL_INTERVAL it reads the rows after the highest id it has seen and hands each one to the
listeners of its channel, in id order.

Auto-increment ids are taken at INSERT, not at COMMIT, so a transaction that inserted id 10 may commit
after id 11 was read. An id skipped that way is a *gap*: the poller reads it again at every poll until it
shows up or GAP_GRACE seconds have passed (it was rolled back, or its transaction took longer than that:
then that announcement is missed, as one is on PostgreSQL when a listener is cut off). Gaps are bounded
(MAX_GAPS); the server's auto_increment_increment is honoured (Galera sets it to the node count).

Rows older than RETENTION seconds are deleted by every poller now and then (any node may do it). After a
lost poll connection the poller reconnects with a back-off, goes on from the newest row (what was sent
meanwhile is missed, exactly as on PostgreSQL) and calls the on_reconnect callbacks: the owners re-read
the tables (a replay of the missed rows on top of that resync would announce each change twice).

Latency: an announcement reaches a listener on average POLL_INTERVAL / 2 after its commit (at most
POLL_INTERVAL plus one query); each listening Database costs one indexed SELECT per POLL_INTERVAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from routescript.db.base import log
from routescript.db.errors import DatabaseError
from routescript.db.feed import Listeners
from routescript.db.url import DbUrl

if TYPE_CHECKING:
    from routescript.db.mysql import MysqlDatabase

FEED_TABLE = "rs_feed"
POLL_INTERVAL = 0.05    # seconds between polls
POLL_BATCH = 1000       # rows read per poll (a fuller batch is followed by the next poll at once)
GAP_GRACE = 10.0        # seconds an id skipped by a slow transaction is waited for
MAX_GAPS = 1000         # bound on those ids; beyond, the oldest are given up
RETENTION = 60          # seconds an announcement row is kept
CLEAN_INTERVAL = 10.0   # seconds between deletions of old rows
EXISTS_SQL = ("SELECT COUNT(*) FROM information_schema.tables "
              "WHERE table_schema = DATABASE() AND table_name = 'rs_feed'")
CREATE_SQL = (f'CREATE TABLE IF NOT EXISTS "{FEED_TABLE}" ('
              '"id" BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL, '
              '"channel" VARCHAR(63) NOT NULL, "payload" TEXT NOT NULL, '
              '"created" INT UNSIGNED NOT NULL, KEY "created_idx" ("created")'
              ') ENGINE=InnoDB DEFAULT CHARSET=utf8mb4')
INSERT_SQL = (f'INSERT INTO "{FEED_TABLE}" ("channel", "payload", "created") '  # noqa: S608 - constant
              'VALUES (%s, %s, UNIX_TIMESTAMP())')


async def create_feed_table(conn: Any) -> None:
    """CREATE TABLE rs_feed unless it is there (asked first: IF NOT EXISTS alone logs a server warning)."""
    async with conn.cursor() as cur:
        await cur.execute(EXISTS_SQL)
        if int((await cur.fetchone())[0]) == 0:
            await cur.execute(CREATE_SQL)


class MysqlPoller:
    """The polling of `rs_feed` for one MysqlDatabase."""

    insert_sql = INSERT_SQL

    def __init__(self, url: str, target: DbUrl, listeners: Listeners, *, interval: float = POLL_INTERVAL,
                 first_delay: float = 0.5, max_delay: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.url = url
        self.target = target
        self.listeners = listeners
        self.interval = interval
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.clock = clock
        self.sleep = sleep
        self.conn: Any = None
        self.reconnects = 0
        self.top = 0                         # the highest id seen
        self.gaps: dict[int, float] = {}     # ids below top not seen yet -> when first missed
        self.step = 1                        # auto_increment_increment
        self.missed_gaps = 0                 # gaps given up (a rolled-back or very slow transaction)
        self._table_ready = False
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._cleaned = 0.0

    @property
    def connected(self) -> bool:
        return self.conn is not None and self.conn.connected

    async def ensure_table(self, db: MysqlDatabase) -> None:
        """Create rs_feed once, outside any transaction (DDL would commit the caller's)."""
        if not self._table_ready:
            await db._run_standalone(create_feed_table, False)
            self._table_ready = True

    async def listen(self, channel: str) -> None:
        if self._task is None or self._task.done():
            self._closed = False
            loop = asyncio.get_running_loop()
            self._first = loop.create_future()
            self._task = loop.create_task(self._supervise())
            await asyncio.shield(self._first)

    async def unlisten(self, channel: str) -> None:
        if not self.listeners.channels:
            await self.close()

    async def _connect(self) -> Any:
        import asyncmy

        from routescript.db.mysql import SESSION_SETUP, connect_kwargs
        conn = await asyncmy.connect(**connect_kwargs(self.target))
        try:
            async with conn.cursor() as cur:
                await cur.execute(SESSION_SETUP)
            await create_feed_table(conn)
            self._table_ready = True
            async with conn.cursor() as cur:
                await cur.execute("SELECT @@auto_increment_increment")
                self.step = max(1, int((await cur.fetchone())[0]))
                # announcements from now on: on a reconnection, those sent meanwhile are skipped, as on
                # PostgreSQL - the owners resync from the tables (on_reconnect), and a replay on top of
                # that would announce each change twice
                await cur.execute(f'SELECT COALESCE(MAX("id"), 0) FROM "{FEED_TABLE}"')  # noqa: S608
                self.top = int((await cur.fetchone())[0])
                self.gaps.clear()
        except BaseException:
            conn.close()
            raise
        return conn

    async def _supervise(self) -> None:
        delay = 0.0
        lost_before = False
        while not self._closed and self.listeners.channels:
            try:
                conn = await self._connect()
            except Exception as exc:  # noqa: BLE001 - every failure to connect is "try again later"
                if self._first is not None and not self._first.done():
                    self._first.set_exception(DatabaseError(f"cannot poll {self.url}: {exc}", "connection"))
                    return
                delay = self.first_delay if delay == 0 else min(self.max_delay, delay * 2)
                log.warning("%s: feed connection failed (%s); next attempt in %.2f s", self.url, exc, delay)
                await self.sleep(delay)
                continue
            self.conn = conn
            delay = 0.0
            if self._first is not None and not self._first.done():
                self._first.set_result(None)
            if lost_before:
                self.reconnects += 1
                log.info("%s: feed connection back; owners resync", self.url)
                self.listeners.reconnected()
            try:
                await self._poll_loop(conn)
            except Exception as exc:  # noqa: BLE001 - any failure of a poll means the connection is gone
                if not self._closed:
                    log.warning("%s: feed connection lost (%s); announcements wait until it is back",
                                self.url, exc)
            self.conn = None
            conn.close()
            if self._closed:
                return
            lost_before = True

    async def _poll_loop(self, conn: Any) -> None:
        while not self._closed and self.listeners.channels:
            full = await self.poll_once(conn)
            if not full:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()

    async def poll_once(self, conn: Any) -> bool:
        """One poll: deliver what is new; True when the batch was full (more to read at once)."""
        now = self.clock()
        for gap, since in list(self.gaps.items()):
            if now - since > GAP_GRACE:
                del self.gaps[gap]
                self.missed_gaps += 1
        sql = f'SELECT "id", "channel", "payload" FROM "{FEED_TABLE}" WHERE "id" > %s'  # noqa: S608
        params: list[Any] = [self.top]
        if self.gaps:
            sql += f' OR "id" IN ({", ".join(["%s"] * len(self.gaps))})'
            params += list(self.gaps)
        sql += f' ORDER BY "id" LIMIT {POLL_BATCH}'
        async with conn.cursor() as cur:
            await cur.execute(sql, tuple(params))
            rows = await cur.fetchall()
            if now - self._cleaned > CLEAN_INTERVAL:
                self._cleaned = now
                await cur.execute(f'DELETE FROM "{FEED_TABLE}" '  # noqa: S608 - constant
                                  'WHERE "created" < UNIX_TIMESTAMP() - %s LIMIT 10000', (RETENTION,))
        for raw_id, channel, payload in rows:
            row_id = int(raw_id)
            if row_id in self.gaps:
                del self.gaps[row_id]
            elif row_id > self.top:
                missing = range(self.top + self.step, row_id, self.step)
                if len(missing) <= MAX_GAPS:
                    for gap in missing:
                        self.gaps[gap] = now
                self.top = row_id
            else:
                continue   # read already
            self.listeners.dispatch(channel, payload)
        while len(self.gaps) > MAX_GAPS:
            del self.gaps[next(iter(self.gaps))]
            self.missed_gaps += 1
        return len(rows) >= POLL_BATCH

    def wake(self) -> None:
        """Poll now (this process just committed an announcement)."""
        self._wake.set()

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        conn, self.conn = self.conn, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if conn is not None:
            conn.close()
