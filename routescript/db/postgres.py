"""PostgreSQL backend through asyncpg: a connection pool, prepared statements (asyncpg prepares each SQL text
once per connection and keeps it in its statement cache), and a back-off when the server goes away.

Lost connection: the failing call raises DatabaseError(kind="connection") (a 503 for the caller), the pool's
connections are marked for replacement, and calls fail fast until the back-off delay (0.5 s doubling up to
30 s) has passed; the next call after that reconnects. A read (query/count) that meets a dead pooled
connection is tried once more at once on a fresh one - a read is safe to repeat, a write is not (it may
have been committed before the connection dropped).

The change feed (LISTEN/NOTIFY, routescript.db.feed) has a connection of its own: see routescript.db.pg_feed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from routescript.db.backoff import Backoff
from routescript.db.base import Database, log
from routescript.db.errors import DatabaseError, ErrorKind
from routescript.db.pg_feed import PgListener

T = TypeVar("T")

POOL_MAX_SIZE = 10
ACQUIRE_TIMEOUT = 10.0   # seconds waiting for a free pooled connection
COMMAND_TIMEOUT = 30.0   # seconds for one statement
CONNECT_TIMEOUT = 5.0
SCHEMA_LOCK_KEY = 0x7273_5343   # "rsSC": pg_advisory_xact_lock key serialising schema creation/upgrade


async def _in_task(coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro` inside a task. asyncpg's timeouts (pool.acquire, command_timeout) are asyncio.timeout
    scopes, which refuse to run outside a task; a caller driving a coroutine by hand before making it a
    task (the core runs each message eagerly up to its first real wait) would get "Timeout should be
    used inside a task". Awaiting a task from there is that first real wait, so the cost is one task, once."""
    if asyncio.current_task() is not None:
        return await coro
    return await asyncio.ensure_future(coro)


class PostgresDatabase(Database):
    dialect = "postgres"

    def __init__(self, url: str, pool: asyncpg.Pool, table_names: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic, *, dsn: str = "") -> None:
        super().__init__(url, table_names)
        self._pool = pool
        self.backoff = Backoff(clock)
        self._dsn = dsn
        self._listener: PgListener | None = None

    @classmethod
    async def open(cls, url: str, dsn: str, table_names: Mapping[str, str] | None = None,
                   clock: Callable[[], float] = time.monotonic,
                   max_size: int = POOL_MAX_SIZE) -> PostgresDatabase:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, timeout=CONNECT_TIMEOUT,
                                             command_timeout=COMMAND_TIMEOUT)
        except Exception as exc:
            raise DatabaseError(f"cannot connect to {url}: {exc}", _kind(exc)) from exc
        return cls(url, pool, table_names, clock, dsn=dsn)

    async def _run(self, fn: Callable[[Any], Awaitable[T]], *, idempotent: bool = False) -> T:
        return await _in_task(super()._run(fn, idempotent=idempotent))

    async def _run_standalone(self, fn: Callable[[Any], Awaitable[T]], idempotent: bool) -> T:
        self.backoff.check(self.url)
        attempts = 2 if idempotent else 1
        for attempt in range(attempts):
            try:
                async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                    result = await fn(conn)
            except DatabaseError:
                raise
            except Exception as exc:
                err = self._translate(exc)
                if not err.transient:
                    raise err from exc
                await self._pool.expire_connections()
                if attempt + 1 < attempts:
                    log.info("%s: connection lost (%s); retrying the read once", self.url, exc)
                    continue
                self.backoff.failed()
                log.warning("%s: %s; next attempt in %.1f s", self.url, err.message, self.backoff.delay)
                raise err from exc
            self.backoff.succeeded()
            return result
        raise AssertionError("unreachable")  # the loop always returns or raises

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[Any]:
        self.backoff.check(self.url)
        try:
            conn = await _in_task(self._pool.acquire(timeout=ACQUIRE_TIMEOUT))
        except Exception as exc:
            raise await self._lost(exc) from exc
        try:
            tr = conn.transaction()
            try:
                await _in_task(tr.start())
            except Exception as exc:
                raise await self._lost(exc) from exc
            try:
                yield conn
            except BaseException:
                try:
                    await _in_task(tr.rollback())
                except Exception as exc:  # noqa: BLE001 - the connection is gone: the server rolls back by itself
                    log.warning("%s: rollback failed: %s", self.url, exc)
                raise
            try:
                await _in_task(tr.commit())
            except Exception as exc:
                raise await self._lost(exc) from exc
            self.backoff.succeeded()
        finally:
            await _in_task(self._pool.release(conn))

    async def _lost(self, exc: Exception) -> DatabaseError:
        err = self._translate(exc)
        if err.transient:
            await self._connection_failed(exc)
        return err

    async def _connection_failed(self, cause: BaseException | None = None) -> None:
        await self._pool.expire_connections()
        self.backoff.failed()

    async def _fetch(self, conn: asyncpg.Connection, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        return [tuple(r) for r in await conn.fetch(sql, *params)]

    async def _execute(self, conn: asyncpg.Connection, sql: str, params: Sequence[Any]) -> int:
        status = await conn.execute(sql, *params)
        # "UPDATE 3", "DELETE 0", "INSERT 0 1"; DDL statuses carry no count.
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def _insert(self, conn: asyncpg.Connection, sql: str, params: Sequence[Any],
                      has_id: bool) -> int | None:
        if has_id:
            return int(await conn.fetchval(sql, *params))
        await conn.execute(sql, *params)
        return None

    async def _executemany(self, conn: asyncpg.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await conn.executemany(sql, rows)

    async def _table_columns(self, conn: asyncpg.Connection, name: str) -> set[str] | None:
        rows = await conn.fetch("SELECT column_name FROM information_schema.columns "
                                "WHERE table_schema = current_schema() AND table_name = $1", name)
        return {r[0] for r in rows} or None

    async def _lock_schema(self) -> None:
        # A transaction-scoped advisory lock (per database): concurrent CREATE TABLEs would otherwise
        # fail on each other ("duplicate key ... pg_type"). The key is any fixed number of ours.
        await self._run(lambda conn: self._fetch(conn, "SELECT pg_advisory_xact_lock($1)", [SCHEMA_LOCK_KEY]))

    def _translate(self, exc: Exception) -> DatabaseError:
        if isinstance(exc, DatabaseError):
            return exc
        return DatabaseError(f"PostgreSQL {self.url}: {exc}", _kind(exc))

    # --- change feed: LISTEN on a connection of its own, NOTIFY through the pool ---------------------
    @property
    def listener(self) -> PgListener:
        """The LISTEN connection's supervisor (its back-off and keep-alive are attributes)."""
        if self._listener is None:
            self._listener = PgListener(self.url, self._dsn, self.listeners)
        return self._listener

    async def _listen(self, channel: str) -> None:
        await self.listener.listen(channel)

    async def _unlisten(self, channel: str) -> None:
        if self._listener is not None:
            await self._listener.unlisten(channel)

    async def _notify(self, channel: str, payload: str) -> None:
        # pg_notify joins the current transaction, if any: PostgreSQL sends it at commit.
        await self._run(lambda conn: self._fetch(conn, "SELECT pg_notify($1, $2)", [channel, payload]))

    async def _close_feed(self) -> None:
        if self._listener is not None:
            await self._listener.close()

    async def _close(self) -> None:
        try:
            await self._pool.close()
        except Exception as exc:  # noqa: BLE001 - a dead server must not stop shutdown
            log.warning("%s: closing the pool: %s", self.url, exc)
            self._pool.terminate()


# SQLSTATE classes meaning "not now": connection exception, insufficient resources, operator intervention
# (admin/crash shutdown, cannot connect now), and transaction rollback (serialization failure, deadlock).
_TRANSIENT_STATES = ("08", "53", "57P", "40")


def _kind(exc: BaseException) -> ErrorKind:
    if isinstance(exc, (OSError, TimeoutError, asyncpg.exceptions.ConnectionDoesNotExistError)):
        return "connection"
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        if state.startswith("23"):
            return "constraint"
        if state.startswith(_TRANSIENT_STATES):
            return "connection"
        return "query"
    # Our statements never overlap on a connection (a lock per transaction, one user per pooled connection)
    # and never outlive its lease, so these client-side complaints mean the server cut the connection
    # under us (e.g. pg_terminate_backend) and the pool already dropped it.
    if (isinstance(exc, (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError))
            and not isinstance(exc, asyncpg.DataError)
            and any(t in str(exc) for t in _DEAD_CONNECTION)):
        return "connection"
    return "query"


_DEAD_CONNECTION = ("closed", "released back to the pool", "another operation")
