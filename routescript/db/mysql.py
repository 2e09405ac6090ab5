"""MySQL / MariaDB backend through asyncmy (`pip install routescript[mysql]`): a connection pool, reconnect
with back-off, deadlock retries, and a change feed polled from a table (routescript.db.mysql_feed).

Sessions: autocommit outside transactions; `sql_mode` gains ANSI_QUOTES (the schema's identifiers are
double-quoted, as in the other dialects); READ COMMITTED isolation (as PostgreSQL's default: no gap locks,
so concurrent PUBLISHes of one presentity do not deadlock on each other's index gaps); the FOUND_ROWS
client flag, so an UPDATE reports the rows it matched, as the other back ends do, not only those it changed.

Lost connection: as on PostgreSQL (routescript.db.postgres) - the failing call raises
DatabaseError(kind="connection") (503 + Retry-After for the caller), idle pooled connections are closed,
and calls fail fast until the back-off delay (0.5 s doubling up to 30 s) has passed. A read meeting a dead
pooled connection is tried once more at once.

Deadlocks (1213) and lock wait timeouts (1205): InnoDB rolls the whole transaction back, so a statement
outside a transaction and a group commit (write_batch outside a transaction) are safely run again, up to
DEADLOCK_RETRIES times (counted in `deadlock_retries`, logged); inside a caller's transaction the error is
transient (503) and does not start the back-off: the server is fine, the transaction lost a race.

claim()/claim_delete(): MySQL has neither UPDATE ... RETURNING nor a sub-select on the table being changed,
so a claim is three statements in one transaction: SELECT the keys ... FOR UPDATE SKIP LOCKED (MariaDB
10.6+, MySQL 8.0+), UPDATE/DELETE those keys, and read the rows back (claim) or before (claim_delete).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncmy
from asyncmy import errors as myerrors

from routescript.db import _sql
from routescript.db.backoff import Backoff
from routescript.db.base import Database, Row, _row, log
from routescript.db.errors import DatabaseError, ErrorKind
from routescript.db.mysql_feed import MysqlPoller
from routescript.db.schema import quote
from routescript.db.url import DbUrl

T = TypeVar("T")

POOL_MAX_SIZE = 10
ACQUIRE_TIMEOUT = 10.0   # seconds waiting for a free pooled connection
COMMAND_TIMEOUT = 30.0   # seconds reading one reply
CONNECT_TIMEOUT = 5
DEADLOCK_RETRIES = 3
SCHEMA_LOCK = "routescript_schema"   # GET_LOCK name serialising schema creation/upgrade
SCHEMA_LOCK_WAIT = 30                # seconds
FOUND_ROWS = 2                       # CLIENT_FOUND_ROWS
SESSION_SETUP = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"
INIT_COMMAND = "SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')"

# Server error numbers meaning "not now": too many connections, server shutdown, lock wait timeout,
# deadlock, connection killed, read-only (a fail-over in progress), aborted / timed-out connections.
_TRANSIENT = frozenset({1040, 1053, 1205, 1213, 1290, 1927, 1152, 1836, 4031})
# Client error numbers (CR_*): cannot connect, server gone away, lost connection, ...
_CLIENT_TRANSIENT = frozenset({2002, 2003, 2006, 2013, 2055, 2026})
_LOCK_CONFLICT = frozenset({1205, 1213})


def connect_kwargs(target: DbUrl) -> dict[str, Any]:
    return {"host": target.host, "port": target.port, "user": target.user, "password": target.password,
            "db": target.database, "autocommit": True, "charset": "utf8mb4", "client_flag": FOUND_ROWS,
            "init_command": INIT_COMMAND, "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": COMMAND_TIMEOUT}


class MysqlDatabase(Database):
    dialect = "mysql"

    def __init__(self, url: str, pool: Any, target: DbUrl, table_names: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(url, table_names)
        self._pool = pool
        self._target = target
        self.backoff = Backoff(clock)
        self.deadlock_retries = 0   # statements / group commits run again after a deadlock
        self._ready: weakref.WeakSet[Any] = weakref.WeakSet()   # connections whose session is set up
        self._poller: MysqlPoller | None = None

    @classmethod
    async def open(cls, target: DbUrl, table_names: Mapping[str, str] | None = None,
                   clock: Callable[[], float] = time.monotonic,
                   max_size: int = POOL_MAX_SIZE) -> MysqlDatabase:
        try:
            pool = await asyncmy.create_pool(minsize=1, maxsize=max_size, pool_recycle=3600,
                                             **connect_kwargs(target))
        except Exception as exc:
            raise DatabaseError(f"cannot connect to {target.redacted}: {exc}", _kind(exc)) from exc
        return cls(target.redacted, pool, target, table_names, clock)

    # --- connections --------------------------------------------------------------------------------

    async def _acquire(self) -> Any:
        conn = await asyncio.wait_for(self._pool.acquire(), ACQUIRE_TIMEOUT)
        if conn not in self._ready:
            try:
                async with conn.cursor() as cur:
                    await cur.execute(SESSION_SETUP)
            except BaseException:
                self._pool.release(conn)
                raise
            self._ready.add(conn)
        return conn


    async def _run_standalone(self, fn: Callable[[Any], Awaitable[T]], idempotent: bool) -> T:
        self.backoff.check(self.url)
        lost_retries = 1 if idempotent else 0
        conflicts = 0
        while True:
            try:
                conn = await self._acquire()
                try:
                    result = await fn(conn)
                finally:
                    self._pool.release(conn)
            except DatabaseError:
                raise
            except Exception as exc:
                err = self._translate(exc)
                if not err.transient:
                    raise err from exc
                if _lock_conflict(exc):
                    # autocommit: the statement was rolled back as a whole, running it again is safe
                    if conflicts < DEADLOCK_RETRIES:
                        conflicts += 1
                        self._count_retry(exc)
                        continue
                    raise err from exc
                await self._pool.clear()
                if lost_retries:
                    lost_retries -= 1
                    log.info("%s: connection lost (%s); retrying the read once", self.url, exc)
                    continue
                self.backoff.failed()
                log.warning("%s: %s; next attempt in %.1f s", self.url, err.message, self.backoff.delay)
                raise err from exc
            self.backoff.succeeded()
            return result

    def _count_retry(self, exc: BaseException) -> None:
        self.deadlock_retries += 1
        log.info("%s: %s; running it again (%d retries so far)", self.url, exc, self.deadlock_retries)

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[Any]:
        self.backoff.check(self.url)
        try:
            conn = await self._acquire()
        except Exception as exc:
            raise await self._lost(exc) from exc
        try:
            try:
                await conn.begin()
            except Exception as exc:
                raise await self._lost(exc) from exc
            try:
                yield conn
            except BaseException:
                try:
                    await conn.rollback()
                except Exception as exc:  # noqa: BLE001 - the connection is gone: the server rolls back by itself
                    log.warning("%s: rollback failed: %s", self.url, exc)
                raise
            try:
                await conn.commit()
            except Exception as exc:
                raise await self._lost(exc) from exc
            self.backoff.succeeded()
        finally:
            self._pool.release(conn)   # one left in a transaction (a failed commit) is closed, not reused

    async def _lost(self, exc: Exception) -> DatabaseError:
        err = self._translate(exc)
        if err.transient:
            await self._connection_failed(exc)
        return err

    async def _connection_failed(self, cause: BaseException) -> None:
        if _lock_conflict(cause):   # a deadlock or lock wait: the transaction's, the link is fine
            return
        await self._pool.clear()
        self.backoff.failed()

    async def _commit_runs(self, runs: list[tuple[str, list[list[Any]]]]) -> None:
        """A group commit: run again as a whole when InnoDB chose it as a deadlock victim (it was rolled
        back entirely, so nothing of it is committed twice)."""
        conflicts = 0
        while True:
            try:
                await super()._commit_runs(runs)
                return
            except DatabaseError as err:
                cause = err.__cause__
                if cause is None or not _lock_conflict(cause) or conflicts >= DEADLOCK_RETRIES:
                    raise
                conflicts += 1
                self._count_retry(cause)

    # --- statements ---------------------------------------------------------------------------------

    async def _fetch(self, conn: Any, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        async with conn.cursor() as cur:
            await cur.execute(sql, tuple(params) if params else None)
            return list(await cur.fetchall())

    async def _execute(self, conn: Any, sql: str, params: Sequence[Any]) -> int:
        async with conn.cursor() as cur:
            await cur.execute(sql, tuple(params) if params else None)
            return max(0, int(cur.rowcount))

    async def _insert(self, conn: Any, sql: str, params: Sequence[Any], has_id: bool) -> int | None:
        async with conn.cursor() as cur:
            await cur.execute(sql, tuple(params))
            return int(cur.lastrowid) if has_id else None

    async def _executemany(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with conn.cursor() as cur:
            if len(rows) == 1:
                await cur.execute(sql, tuple(rows[0]))
            else:
                await cur.executemany(sql, [tuple(r) for r in rows])

    async def _table_columns(self, conn: Any, name: str) -> set[str] | None:
        rows = await self._fetch(conn, "SELECT column_name FROM information_schema.columns "
                                       "WHERE table_schema = DATABASE() AND table_name = %s", [name])
        return {r[0] for r in rows} or None

    def _translate(self, exc: Exception) -> DatabaseError:
        if isinstance(exc, DatabaseError):
            return exc
        return DatabaseError(f"MySQL {self.url}: {exc}", _kind(exc))

    # --- claims -------------------------------------------------------------------------------------

    async def claim(self, table: str, where: Mapping[str, Any], values: Mapping[str, Any], *,
                    limit: int | None = None, order_by: str | Sequence[str] | None = None) -> list[Row]:
        return await self._claim(table, where, values, limit, order_by)

    async def claim_delete(self, table: str, where: Mapping[str, Any], *, limit: int | None = None,
                           order_by: str | Sequence[str] | None = None) -> list[Row]:
        return await self._claim(table, where, None, limit, order_by)

    async def _claim(self, table: str, where: Mapping[str, Any], values: Mapping[str, Any] | None,
                     limit: int | None, order_by: str | Sequence[str] | None) -> list[Row]:
        t, name = self._table(table)
        key = "id" if t.has_id else next((c.name for c in t.columns if c.kind == "bigkey"), None)
        if key is None:
            raise DatabaseError(f"claim on '{t.name}': the table has no key column")
        if not isinstance(where, Mapping):
            raise DatabaseError("where must be a dict ({} to touch every row)")
        sql, params, cols = _sql.select(t, name, self.dialect, where, None, order_by, limit)
        sql += " FOR UPDATE SKIP LOCKED"
        if values is not None:
            update_cols, update_vals = _sql.row_values(t, values)   # checked before anything runs
        async with self.transaction():
            raw = await self._run(lambda conn: self._fetch(conn, sql, params))
            if not raw:
                return []
            rows = [_row(cols, r) for r in raw]
            keys = [r[key] for r in rows]
            holders = ", ".join(["%s"] * len(keys))
            if values is None:
                stmt = f"DELETE FROM {quote(name)} WHERE {quote(key)} IN ({holders})"  # noqa: S608 - schema names
                await self._run(lambda conn: self._execute(conn, stmt, keys))
                return rows
            sets = ", ".join(f"{quote(c.name)} = %s" for c in update_cols)
            stmt = f"UPDATE {quote(name)} SET {sets} WHERE {quote(key)} IN ({holders})"  # noqa: S608
            await self._run(lambda conn: self._execute(conn, stmt, [*update_vals, *keys]))
            again, _, _ = _sql.select(t, name, self.dialect, {key: ("in", keys)}, None, None, None)
            raw = await self._run(lambda conn: self._fetch(conn, again, keys))
            return [_row(cols, r) for r in raw]

    # --- schema -------------------------------------------------------------------------------------

    async def _sync_schema(self, tables: Any, upgrade: bool) -> list[str]:
        # DDL commits implicitly in MySQL, so the schema transaction cannot hold a lock by itself: a named
        # lock on a connection of its own keeps other servers out until the tables are done.
        self.backoff.check(self.url)
        try:
            conn = await self._acquire()
        except Exception as exc:
            raise await self._lost(exc) from exc
        try:
            got = await self._fetch(conn, "SELECT GET_LOCK(%s, %s)", [SCHEMA_LOCK, SCHEMA_LOCK_WAIT])
            if not got or got[0][0] != 1:
                raise DatabaseError(f"{self.url}: another server held the schema lock for "
                                    f"{SCHEMA_LOCK_WAIT} s", "connection")
            try:
                return await super()._sync_schema(tables, upgrade)
            finally:
                await self._fetch(conn, "SELECT RELEASE_LOCK(%s)", [SCHEMA_LOCK])
        except DatabaseError:
            raise
        except Exception as exc:
            raise await self._lost(exc) from exc
        finally:
            self._pool.release(conn)

    # --- change feed: a polled table (routescript.db.mysql_feed) ------------------------------------

    @property
    def poller(self) -> MysqlPoller:
        if self._poller is None:
            self._poller = MysqlPoller(self.url, self._target, self.listeners)
        return self._poller

    async def _listen(self, channel: str) -> None:
        await self.poller.listen(channel)

    async def _unlisten(self, channel: str) -> None:
        if self._poller is not None:
            await self._poller.unlisten(channel)

    async def _notify(self, channel: str, payload: str) -> None:
        # An INSERT: inside a transaction it becomes visible (and is polled) at commit, never on rollback.
        await self.poller.ensure_table(self)
        await self._run(lambda conn: self._execute(conn, self.poller.insert_sql, [channel, payload]))
        if self._poller is not None and self._poller.connected:   # this process listens: poll now
            tx = self.current_transaction()
            if tx is None:
                self._poller.wake()
            else:
                tx.after_commit.append(self._poller.wake)

    async def _close_feed(self) -> None:
        if self._poller is not None:
            await self._poller.close()

    async def _close(self) -> None:
        self._pool.close()
        try:
            await asyncio.wait_for(self._pool.wait_closed(), 5)
        except Exception as exc:  # noqa: BLE001 - a dead server must not stop shutdown
            log.warning("%s: closing the pool: %s", self.url, exc)
            self._pool.terminate()


def _errno(exc: BaseException) -> int | None:
    if isinstance(exc, myerrors.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return int(exc.args[0])
    return None


def _lock_conflict(exc: BaseException) -> bool:
    return _errno(exc) in _LOCK_CONFLICT


def _kind(exc: BaseException) -> ErrorKind:
    if isinstance(exc, (OSError, TimeoutError, asyncio.TimeoutError)):
        return "connection"
    code = _errno(exc)
    if code is not None and (code in _TRANSIENT or code in _CLIENT_TRANSIENT):
        return "connection"
    if isinstance(exc, myerrors.IntegrityError):
        return "constraint"
    if isinstance(exc, myerrors.InterfaceError) or (isinstance(exc, myerrors.OperationalError) and code == 0):
        return "connection"   # "(0, '')": the connection is closed under us
    return "query"
