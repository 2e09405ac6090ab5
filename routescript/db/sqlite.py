"""SQLite backend (the embedded default), through aiosqlite so no query blocks the event loop.

One connection per Database, used by one task at a time (an asyncio lock): concurrent callers queue here
instead of meeting "database is locked". Settings and why:
- journal_mode=WAL: readers (an OpenSIPS or sqlite3 shell looking at the same file) do not block the writer.
- synchronous=FULL: in WAL mode NORMAL may lose the last commits on power loss or an OS crash; a PUBLISH is
  answered 200 only after it is stored, so its commit must reach the disk. Batching many writes in one
  `transaction()` (group commit) pays for one sync instead of many.
- busy_timeout=5000 ms: another process holding the write lock makes us wait, not fail at once.
- BEGIN IMMEDIATE: a transaction takes the write lock when it starts, so it cannot fail halfway on upgrade.

The change feed (listen/notify) reaches the Databases of this process opened on the same file, and other
processes only through the relay core sets for worker processes (routescript.db.feed.set_feed_relay).
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite


from routescript.db.base import Database, log
from routescript.db.errors import DatabaseError, ErrorKind
from routescript.db.feed import LocalHub, check_channel, check_payload
from routescript.db.schema import quote
from routescript.db.sqlite_gate import WriterGate

# DATETIME columns (location.last_modified) as OpenSIPS writes them: 'YYYY-MM-DD HH:MM:SS' (the sqlite3
# module's own datetime adapter is deprecated since Python 3.12).
sqlite3.register_adapter(datetime, lambda value: value.strftime("%Y-%m-%d %H:%M:%S"))

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
# sqlite3.OperationalError texts that mean "try again later", not "your SQL is wrong".
_TRANSIENT = ("locked", "busy", "disk i/o", "unable to open", "database or disk is full",
              "no active connection", "closed")


# The connections not closed yet: each has a (non-daemon) thread the interpreter waits for at exit.
_OPEN: weakref.WeakSet[SqliteDatabase] = weakref.WeakSet()


def abandon_open_connections() -> list[str]:
    """A stop that gave up on a close (shutdown_timeout spent): every connection still open is told to
    close once what is queued on its thread is done, without waiting for it - so the thread ends and the
    process can exit. Returns their URLs (for the log)."""
    urls = []
    for db in list(_OPEN):
        _OPEN.discard(db)
        db.abandon()
        urls.append(db.url)
    return sorted(urls)


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, url: str, path: str, conn: aiosqlite.Connection,
                 table_names: Mapping[str, str] | None = None) -> None:
        super().__init__(url, table_names)
        self.path = path
        self._conn = conn
        self._lock = asyncio.Lock()
        # our writers in every process take the gate around a transaction (sqlite_gate.py: why)
        self._gate = WriterGate(path) if path != ":memory:" else None
        _OPEN.add(self)

    def abandon(self) -> None:
        """Close without waiting (abandon_open_connections): later calls raise DatabaseError."""
        self._closed = True
        self._conn.stop()

    @classmethod
    async def open(cls, url: str, path: str, table_names: Mapping[str, str] | None = None) -> SqliteDatabase:
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # autocommit (we BEGIN ourselves); the loop's thread runs the rows of a batch (_commit_runs)
            conn = await aiosqlite.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseError(f"cannot open SQLite database {path}: {exc}", "connection") from exc
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
            if path != ":memory:" and (not mode or str(next(iter(mode))[0]).lower() != "wal"):
                log.warning("%s: WAL journal mode refused (%s); readers may block writers", url, mode)
            await conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            await conn.close()
            raise DatabaseError(f"cannot open SQLite database {path}: {exc}", _kind(exc)) from exc
        return cls(url, path, conn, table_names)

    async def _run_standalone(self, fn: Callable[[Any], Awaitable[T]], idempotent: bool) -> T:
        async with self._lock:
            try:
                return await fn(self._conn)
            except DatabaseError:
                raise
            except Exception as exc:
                raise self._translate(exc) from exc

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[Any]:
        async with self._lock:
            gate = self._gate
            if gate is not None:
                await gate.acquire()
            try:
                try:
                    await self._conn.execute("BEGIN IMMEDIATE")
                except Exception as exc:
                    raise self._translate(exc) from exc
                try:
                    yield self._conn
                except BaseException:
                    await self._rollback()
                    raise
                try:
                    await self._conn.execute("COMMIT")
                except Exception as exc:
                    await self._rollback()
                    raise self._translate(exc) from exc
            finally:
                if gate is not None:
                    gate.release()

    async def _commit_runs(self, runs: list[tuple[str, list[list[Any]]]]) -> None:
        """A group-commit batch, with as few trips between the loop and aiosqlite's thread as can be:
        - BEGIN IMMEDIATE on the loop's thread when the write lock is free (with the writers' gate held
          it nearly always is: a few microseconds, no file written); SQLite busy (a writer that does
          not take the gate: an autocommit statement, another program) -> BEGIN in the thread, which
          may wait for it (busy_timeout);
        - the row statements on the loop's thread: run in the worker thread, each row traded the GIL
          with the busy event loop (perf: 8% of the process in futex wake/wait; measured at 1,400
          PUBLISH calls/s, alternating: the loop thread used 57-68% of a core instead of 60-70%).
          Inside our IMMEDIATE transaction a row statement never waits for a lock and writes no file
          (pages reach the WAL at COMMIT);
        - COMMIT (the sync to disk) in the thread, and the writers' gate released there the moment it
          returns: the other workers' writers wait for our sync only, not also for this loop to get
          round to seeing it done (docs/workers.md section 7, session 12: the gate's hold time was most
          of a busy worker's commit latency).
        The connection is shared by the two threads one at a time: every use holds self._lock."""
        async with self._lock:
            gate = self._gate
            if gate is not None:
                await gate.acquire()
            released = False
            try:
                raw = self._conn._conn   # aiosqlite names no public accessor for its sqlite3 connection
                try:
                    if not _begin_now(raw):
                        await self._conn.execute("BEGIN IMMEDIATE")
                except Exception as exc:
                    raise self._translate(exc) from exc
                try:
                    for sql, rows in runs:
                        raw.executemany(sql, rows)
                    # aiosqlite's own queue to its thread (private; untyped): one trip for both
                    released = await self._conn._execute(  # type: ignore[no-untyped-call]
                        _commit_and_release, raw, gate)
                except BaseException as exc:
                    await self._rollback()
                    if isinstance(exc, Exception):
                        raise self._translate(exc) from exc
                    raise
            finally:
                if gate is not None and not released:
                    gate.release()

    async def _rollback(self) -> None:
        try:
            await self._conn.execute("ROLLBACK")
        except Exception as exc:  # noqa: BLE001 - the error that got us here is the one that matters
            log.warning("%s: rollback failed: %s", self.url, exc)

    async def _fetch(self, conn: aiosqlite.Connection, sql: str,
                     params: Sequence[Any]) -> list[Sequence[Any]]:
        return list(await conn.execute_fetchall(sql, params))

    async def _execute(self, conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> int:
        cursor = await conn.execute(sql, params)
        count = cursor.rowcount
        await cursor.close()
        return max(count, 0)

    async def _insert(self, conn: aiosqlite.Connection, sql: str, params: Sequence[Any],
                      has_id: bool) -> int | None:
        cursor = await conn.execute(sql, params)
        rowid = cursor.lastrowid
        await cursor.close()
        return rowid if has_id else None

    async def _executemany(self, conn: aiosqlite.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await conn.executemany(sql, rows)

    async def _table_columns(self, conn: aiosqlite.Connection, name: str) -> set[str] | None:
        rows = await conn.execute_fetchall(f"PRAGMA table_info({quote(name)})")
        return {r[1] for r in rows} or None

    def _translate(self, exc: Exception) -> DatabaseError:
        if isinstance(exc, DatabaseError):
            return exc
        return DatabaseError(f"SQLite {self.path}: {exc}", _kind(exc))

    # --- change feed: in-process only (routescript.db.feed.LocalHub) ---------------------------------
    @property
    def _hub_key(self) -> str:
        # Every Database on one file shares a hub; a private :memory: database has its own.
        return self.path if self.path != ":memory:" else f":memory:{id(self)}"

    async def _listen(self, channel: str) -> None:
        LocalHub.join(self._hub_key, self.listeners)

    async def _unlisten(self, channel: str) -> None:
        if not self.listeners.channels:
            self._leave_hub()

    async def _notify(self, channel: str, payload: str) -> None:
        key = self._hub_key
        tx = self.current_transaction()
        if tx is not None:
            tx.after_commit.append(lambda: LocalHub.publish_to(key, channel, payload))
        else:
            LocalHub.publish_to(key, channel, payload)

    def notify_now(self, channel: str, payload: str) -> bool:
        if self.current_transaction() is not None:
            return False
        self._check_open()
        LocalHub.publish_to(self._hub_key, check_channel(channel), check_payload(payload))
        return True

    def _leave_hub(self) -> None:
        if self._listeners is not None:
            LocalHub.leave_key(self._hub_key, self._listeners)

    async def _close_feed(self) -> None:
        self._leave_hub()

    async def _close(self) -> None:
        _OPEN.discard(self)
        async with self._lock:
            await self._conn.close()
            if self._gate is not None:
                self._gate.close()


def _begin_now(raw: sqlite3.Connection) -> bool:
    """BEGIN IMMEDIATE on the calling (loop) thread if the write lock is free now; False (nothing begun)
    when SQLite is busy: the caller begins in the worker thread, where waiting is allowed. The busy
    handler is off meanwhile, so the loop never sleeps in it."""
    raw.execute("PRAGMA busy_timeout = 0")
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if raw.in_transaction or not ("locked" in text or "busy" in text):
            raise
        return False
    finally:
        raw.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return True


def _commit_and_release(raw: sqlite3.Connection, gate: WriterGate | None) -> bool:
    """In aiosqlite's thread: COMMIT, then the writers' gate let go at once; whether it was (a COMMIT
    that fails keeps it: the caller rolls back first; a release that fails is the caller's to retry)."""
    raw.execute("COMMIT")
    if gate is None:
        return False
    try:
        gate.release()
    except OSError:
        return False
    return True


def _kind(exc: BaseException) -> ErrorKind:
    if isinstance(exc, sqlite3.IntegrityError):
        return "constraint"
    text = str(exc).lower()
    transient = any(t in text for t in _TRANSIENT)
    if isinstance(exc, (sqlite3.OperationalError, ValueError, OSError)) and transient:
        return "connection"
    return "query"
