"""The storage interface both backends share (the OpenSIPS db API, in Python).

Everything here is backend-neutral: checking names against the schema, building SQL, transactions (through a
context variable, so every call made inside `async with db.transaction():` - by that task or the tasks it
starts - joins it), schema creation and upgrade. A backend supplies the few primitives at the bottom.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Self, TypeVar

from routescript.db import _sql
from routescript.db._plan import NotPlain, StatementPlan
from routescript.db.errors import DatabaseError, SchemaError
from routescript.db.metrics import QUERY_METRICS
from routescript.db.feed import FeedCallback, Listeners, ReconnectCallback, check_channel, check_payload
from routescript.db.schema import (
    DEFAULT_TABLES,
    IDENTIFIER,
    SCHEMA,
    VERSION,
    Column,
    Dialect,
    Table,
    add_column_sql,
    create_table_sql,
)

log = logging.getLogger("routescript.db")

T = TypeVar("T")
Row = dict[str, Any]
MAX_WRITE_PLANS = 256  # bound: write shapes whose SQL text is kept


class Transaction:
    """An open transaction: the connection it runs on and a lock so its statements go one at a time."""

    __slots__ = ("active", "after_commit", "conn", "db", "depth", "lock")

    def __init__(self, db: Database, conn: Any) -> None:
        self.db = db
        self.conn = conn
        self.lock = asyncio.Lock()
        self.depth = 0
        self.active = True  # False once it ended: a task it started that outlives it runs on its own
        # Run once the transaction has committed (the SQLite change feed sends its announcements then).
        self.after_commit: list[Callable[[], None]] = []


@dataclass(frozen=True, slots=True)
class Write:
    """One row change for `Database.write_batch` / `GroupCommitter`: insert `values`, upsert `values`
    on the unique key `keys`, update the rows matching `where` with `values`, or delete them."""

    op: Literal["insert", "upsert", "update", "delete"]
    table: str
    values: Mapping[str, Any] = field(default_factory=dict)
    where: Mapping[str, Any] | None = None
    keys: tuple[str, ...] = ()


# The transactions open in the current task context (innermost last), across every Database.
_ACTIVE: ContextVar[tuple[Transaction, ...]] = ContextVar("routescript_db_transactions", default=())


class Database(abc.ABC):
    """A database holding OpenSIPS tables. Get one from `open_database(url)`; close it with `close()`.

    Table and column names are the OpenSIPS ones (see `routescript.db.schema.SCHEMA`); any other name is a
    DatabaseError, so no identifier from outside ever reaches SQL text. Values are always bound parameters.
    Conditions (`where`) map a column to a value (equality; None means IS NULL) or to `(operator, value)`
    with operator one of = != <> < <= > >= in, "not in" (in/not in take a list).
    """

    dialect: Dialect

    def __init__(self, url: str, table_names: Mapping[str, str] | None = None) -> None:
        self.url = url  # redacted: safe to log
        self._names = resolve_table_names(table_names)
        self._declared: dict[str, Table] = {}   # declare_table()'s, by the name they are used under
        self._closed = False
        self._listeners: Listeners | None = None
        # write_batch's SQL per write shape (see _write_sql); bounded, the shapes are few
        self._plans: dict[tuple[Any, ...], StatementPlan] = {}
        self._read_plans: dict[tuple[Any, ...], StatementPlan] = {}   # query()'s, the same way

    # --- rows ---------------------------------------------------------------------------------------

    async def insert(self, table: str, row: Mapping[str, Any]) -> int | None:
        """Insert one row; returns its `id` when the table has one."""
        t, name = self._table(table)
        cols, vals = _sql.row_values(t, row)
        sql = _sql.insert(t, name, self.dialect, cols)
        return await self._run(lambda conn: self._insert(conn, sql, vals, t.has_id))

    async def insert_many(self, table: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert rows (all with the same columns) atomically, in one transaction; returns how many."""
        t, name = self._table(table)
        rows = list(rows)
        if not rows:
            return 0
        keys = list(rows[0]) if isinstance(rows[0], Mapping) else []
        values = []
        for row in rows:
            if not isinstance(row, Mapping) or list(row) != keys:
                raise DatabaseError(f"insert_many into '{t.name}': every row must have the columns {keys}")
            values.append(_sql.row_values(t, row)[1])
        cols = [_sql.column(t, k) for k in keys]
        sql = _sql.insert(t, name, self.dialect, cols).removesuffix(' RETURNING "id"')
        async with self.transaction():
            await self._run(lambda conn: self._executemany(conn, sql, values))
        return len(values)

    async def update(self, table: str, where: Mapping[str, Any], values: Mapping[str, Any]) -> int:
        """Set `values` on the rows matching `where` ({} = every row); returns how many rows matched."""
        t, name = self._table(table)
        sql, params = _sql.update(t, name, self.dialect, where, values)
        return await self._run(lambda conn: self._execute(conn, sql, params))

    async def delete(self, table: str, where: Mapping[str, Any]) -> int:
        """Delete the rows matching `where` ({} = every row); returns how many."""
        t, name = self._table(table)
        sql, params = _sql.delete(t, name, self.dialect, where)
        return await self._run(lambda conn: self._execute(conn, sql, params))

    async def upsert(self, table: str, row: Mapping[str, Any], keys: Sequence[str]) -> None:
        """Insert `row`, or replace the columns it gives in the row with the same `keys` (a unique key)."""
        t, name = self._table(table)
        cols, vals = _sql.row_values(t, row)
        sql = _sql.upsert(t, name, self.dialect, cols, keys)
        await self._run(lambda conn: self._execute(conn, sql, vals))

    async def query(self, table: str, where: Mapping[str, Any] | None = None,
                    columns: Sequence[str] | None = None, order_by: str | Sequence[str] | None = None,
                    limit: int | None = None) -> list[Row]:
        """Rows matching `where` as dicts (all schema columns unless `columns`); `order_by` is a column or a
        list of them, "-column" for descending. Blob columns are bytes, whatever wrote them."""
        sql, params, cols = self._select_sql(table, where, columns, order_by, limit)
        # a partial, not a lambda: no Python frame of its own on the way to the backend (as write_batch)
        raw = await self._run(functools.partial(self._fetch, sql=sql, params=params), idempotent=True)
        return [_row(cols, r) for r in raw]

    def _select_sql(self, table: str, where: Mapping[str, Any] | None, columns: Sequence[str] | None,
                    order_by: str | Sequence[str] | None,
                    limit: int | None) -> tuple[str, list[Any], Sequence[Column]]:
        """query()'s SQL, parameters and result columns: from the shape's plan when it has one (its
        values only bound, routescript.db._plan), else built."""
        plan = self._read_plan(table, where, columns, order_by, limit)
        if plan is not None:
            try:
                return plan.sql, plan.bind({}, where), plan.result_cols
            except NotPlain:
                pass
        t, name = self._table(table)
        return _sql.select(t, name, self.dialect, where, columns, order_by, limit)

    def _read_plan(self, table: str, where: Mapping[str, Any] | None, columns: Sequence[str] | None,
                   order_by: str | Sequence[str] | None, limit: int | None) -> StatementPlan | None:
        """The plan of a query's shape (table, condition columns, columns, order, limit), made on its first
        plain use (equality conditions with values, as for writes); None for a query that is not plain."""
        if not ((where is None or type(where) is dict) and (columns is None or type(columns) in (tuple, list))
                and (order_by is None or type(order_by) is str) and (limit is None or type(limit) is int)):
            return None
        key = (table, tuple(where) if where else (), None if columns is None else tuple(columns),
               order_by, limit)
        try:
            plan = self._read_plans.get(key)
        except TypeError:   # a column "name" that is no string: refused by the build
            return None
        if plan is not None:
            return plan
        if where and any(v is None or isinstance(v, tuple) for v in where.values()):
            return None   # IS NULL or an operator
        t, name = self._table(table)
        sql, _, cols = _sql.select(t, name, self.dialect, where, columns, order_by, limit)
        plan = StatementPlan(sql, t, (), tuple(_sql.column(t, n) for n in (where or {})), tuple(cols))
        if len(self._read_plans) >= MAX_WRITE_PLANS:
            self._read_plans.clear()
        self._read_plans[key] = plan
        return plan

    async def count(self, table: str, where: Mapping[str, Any] | None = None) -> int:
        """How many rows match `where`."""
        t, name = self._table(table)
        sql, params = _sql.count(t, name, self.dialect, where)
        raw = await self._run(lambda conn: self._fetch(conn, sql, params), idempotent=True)
        return int(raw[0][0])

    async def claim(self, table: str, where: Mapping[str, Any], values: Mapping[str, Any], *,
                    limit: int | None = None, order_by: str | Sequence[str] | None = None) -> list[Row]:
        """Take rows for this caller: set `values` on at most `limit` rows matching `where` and return
        them as they are after the change (`order_by` picks which rows when there are more than `limit`;
        they come back in no particular order). Rows another caller is claiming at the same moment are
        skipped, not waited for (PostgreSQL: UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)),
        so two nodes claiming at once never get the same row. SQLite: one statement under the write lock.
        Inside `transaction()` the rows stay locked until it ends."""
        t, name = self._table(table)
        sql, params, cols = _sql.claim(t, name, self.dialect, where, values, limit, order_by)
        raw = await self._run(lambda conn: self._fetch(conn, sql, params))
        return [_row(cols, r) for r in raw]

    async def claim_delete(self, table: str, where: Mapping[str, Any], *, limit: int | None = None,
                           order_by: str | Sequence[str] | None = None) -> list[Row]:
        """Delete at most `limit` rows matching `where` and return them; rows being claimed or deleted by
        another caller at that moment are skipped (FOR UPDATE SKIP LOCKED), so each row is returned to
        exactly one caller - the one that should announce its removal."""
        t, name = self._table(table)
        sql, params, cols = _sql.claim(t, name, self.dialect, where, None, limit, order_by)
        raw = await self._run(lambda conn: self._fetch(conn, sql, params))
        return [_row(cols, r) for r in raw]

    async def write_batch(self, writes: Sequence[Write]) -> None:
        """Apply `writes` in order, in one transaction (joining the caller's when there is one): all of
        them or none. Consecutive writes with the same SQL go as one executemany, so a batch of N
        similar rows costs a few round trips and (SQLite) one sync at commit. Row counts are not
        reported (an update matching nothing is no error)."""
        if not writes:
            return
        runs: list[tuple[str, list[list[Any]]]] = []
        for w in writes:
            sql, params = self._write_sql(w)
            if runs and runs[-1][0] == sql:
                runs[-1][1].append(params)
            else:
                runs.append((sql, [params]))
        self._check_open()
        if self.current_transaction() is None:
            await self._commit_runs(runs)
            return
        for sql, rows in runs:
            await self._run(functools.partial(self._executemany, sql=sql, rows=rows))

    async def _commit_runs(self, runs: list[tuple[str, list[list[Any]]]]) -> None:
        """Run each (sql, rows) as an executemany, in one new transaction. A backend may do it in fewer
        round trips (SQLite: one call into its thread)."""
        async with self.transaction():
            for sql, rows in runs:
                await self._run(functools.partial(self._executemany, sql=sql, rows=rows))

    def _write_sql(self, w: Write) -> tuple[str, list[Any]]:
        """The SQL and parameters of one write. The SQL text of a write's shape (operation, table, the
        columns it sets and, for plain equality conditions, the columns it matches) is planned once and
        kept (routescript.db._plan): a PUBLISH's writes then only bind their values."""
        values, where = w.values, w.where
        if type(values) is not dict or (where is not None and type(where) is not dict):
            return self._build_write_sql(w)   # an unusual mapping (or a wrong type: its error is built there)
        key = (w.op, w.table, tuple(values), tuple(where) if where is not None else None, w.keys)
        plan = self._plans.get(key)
        if plan is None:
            if where is not None and any(v is None or isinstance(v, tuple) for v in where.values()):
                return self._build_write_sql(w)   # IS NULL or an operator: not a plain shape
            plan = self._plan(w)
            if len(self._plans) >= MAX_WRITE_PLANS:
                self._plans.clear()
            self._plans[key] = plan
        try:
            return plan.sql, plan.bind(values, where)
        except NotPlain:
            return self._build_write_sql(w)

    def _plan(self, w: Write) -> StatementPlan:
        """Plan `w`'s shape (equality conditions only): its SQL, the columns its parameters bind in order."""
        t, _ = self._table(w.table)
        sql, _ = self._build_write_sql(w)
        value_cols = tuple(_sql.column(t, n) for n in w.values) if w.op != "delete" else ()
        where_cols = tuple(_sql.column(t, n) for n in (w.where or {})) if w.op in ("update", "delete") else ()
        return StatementPlan(sql, t, value_cols, where_cols)

    def _build_write_sql(self, w: Write) -> tuple[str, list[Any]]:
        t, name = self._table(w.table)
        if w.op == "insert" or w.op == "upsert":
            cols, vals = _sql.row_values(t, w.values)
            if w.op == "upsert":
                return _sql.upsert(t, name, self.dialect, cols, w.keys), vals
            return _sql.insert(t, name, self.dialect, cols).removesuffix(' RETURNING "id"'), vals
        if w.where is None:
            raise DatabaseError(f"{w.op} on '{t.name}' without a condition")
        if w.op == "update":
            return _sql.update(t, name, self.dialect, w.where, w.values)
        if w.op == "delete":
            return _sql.delete(t, name, self.dialect, w.where)
        raise DatabaseError(f"unknown write {w.op!r}")

    # --- change feed (routescript.db.feed) ----------------------------------------------------------

    async def listen(self, channel: str, callback: FeedCallback, *,
                     on_reconnect: ReconnectCallback | None = None) -> None:
        """Call `callback(channel, payload)` for every announcement on `channel` (the ones this database
        sends included). `on_reconnect()` is called after the listening connection was lost and is back:
        announcements sent in between were missed, re-read the tables. A callback may be a coroutine
        function (it then runs as a task). Raises DatabaseError (transient) when the database cannot be
        reached now; nothing stays registered then."""
        self._check_open()
        check_channel(channel)
        if not self.listeners.add(channel, callback, on_reconnect):
            return  # the channel is listened to already
        try:
            await self._listen(channel)
        except BaseException:
            self.listeners.remove(channel, callback, on_reconnect)
            raise

    async def unlisten(self, channel: str, callback: FeedCallback | None = None, *,
                       on_reconnect: ReconnectCallback | None = None) -> None:
        """Stop calling `callback` (None: every callback of the channel) and `on_reconnect`."""
        check_channel(channel)
        if self.listeners.remove(channel, callback, on_reconnect):
            await self._unlisten(channel)

    async def notify(self, channel: str, payload: str) -> None:
        """Announce `payload` (text shorter than 8000 bytes) to every listener of `channel`. Inside
        `transaction()` it is sent at commit, never when the transaction rolls back."""
        self._check_open()
        await self._notify(check_channel(channel), check_payload(payload))

    def notify_now(self, channel: str, payload: str) -> bool:
        """Announce `payload` at once, in this call, when the backend's feed can without I/O (SQLite:
        this process's hub and the workers' relay) and no transaction is open; False, nothing sent,
        when it cannot (then `await notify()`). For an announcement that must leave at a commit
        (GroupCommitter's on_commit)."""
        return False

    @property
    def listeners(self) -> Listeners:
        if self._listeners is None:
            self._listeners = Listeners(self.url)
        return self._listeners

    # --- transactions -------------------------------------------------------------------------------

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """`async with db.transaction():` - every call on this database inside the block (from this task and
        tasks it starts) commits together, or not at all when the block raises. Nested blocks are savepoints.
        Other tasks' calls wait until the block ends (SQLite) or use other connections (PostgreSQL); do not
        await, inside the block, a task that was started before it and uses this database."""
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Transaction]:
        self._check_open()
        outer = self.current_transaction()
        if outer is not None:
            outer.depth += 1
            savepoint = f"rs_sp_{outer.depth}"
            await self._statement(f"SAVEPOINT {savepoint}")
            mark = len(outer.after_commit)
            try:
                yield outer
            except BaseException:
                del outer.after_commit[mark:]  # what the savepoint announced is rolled back with it
                try:
                    await self._statement(f"ROLLBACK TO SAVEPOINT {savepoint}")
                    await self._statement(f"RELEASE SAVEPOINT {savepoint}")
                except DatabaseError as exc:  # the connection is gone: the outer transaction fails anyway
                    log.warning("%s: rollback to savepoint failed: %s", self.url, exc)
                raise
            else:
                await self._statement(f"RELEASE SAVEPOINT {savepoint}")
            finally:
                outer.depth -= 1
            return
        async with self._begin() as conn:
            tx = Transaction(self, conn)
            token = _ACTIVE.set(_ACTIVE.get() + (tx,))
            try:
                yield tx
            finally:
                tx.active = False
                _ACTIVE.reset(token)
        for action in tx.after_commit:  # reached only when the block and the COMMIT succeeded
            try:
                action()
            except Exception:
                log.exception("%s: after-commit action failed", self.url)

    def current_transaction(self) -> Transaction | None:
        """The transaction on this database the current task is inside, if any (group commits join it)."""
        for tx in reversed(_ACTIVE.get()):
            if tx.db is self and tx.active:
                return tx
        return None

    async def _run(self, fn: Callable[[Any], Awaitable[T]], *, idempotent: bool = False) -> T:
        """Run one statement (inside the task's transaction when there is one), counted in QUERY_METRICS:
        its time, and whether it failed (a DatabaseError: the back end refused it, or is away)."""
        started = time.perf_counter()
        try:
            result = await self._run_statement(fn, idempotent)
        except Exception:   # a cancelled statement (a stop, a timeout of the caller's) is not counted
            QUERY_METRICS.observe(time.perf_counter() - started, failed=True)
            raise
        QUERY_METRICS.observe(time.perf_counter() - started, failed=False)
        return result

    async def _run_statement(self, fn: Callable[[Any], Awaitable[T]], idempotent: bool) -> T:
        self._check_open()
        tx = self.current_transaction()
        if tx is None:
            return await self._run_standalone(fn, idempotent)
        async with tx.lock:
            try:
                return await fn(tx.conn)
            except DatabaseError:
                raise
            except Exception as exc:
                err = self._translate(exc)
                if err.transient:
                    await self._connection_failed(exc)
                raise err from exc

    async def _connection_failed(self, cause: BaseException) -> None:  # noqa: B027 - optional hook
        """A statement inside a transaction failed with a transient error, `cause` (a backend may start
        its back-off: MySQL does not for a lock conflict, which is the transaction's, not the link's)."""

    # --- schema -------------------------------------------------------------------------------------

    def table(self, name: str) -> Table:
        """The schema of an OpenSIPS table this database knows."""
        return self._table(name)[0]

    async def ensure_schema(self, tables: Iterable[str] | None = None) -> None:
        """Create the missing tables (with their `version` rows); check the existing ones.

        A table with another version (or missing columns) raises SchemaError naming the command that
        upgrades it (`routescript db init URL`); nothing is changed then. Default: every presence table."""
        await self._sync_schema(tables, upgrade=False)

    async def upgrade_schema(self, tables: Iterable[str] | None = None) -> list[str]:
        """Create missing tables and bring older ones up to date by adding their missing columns (rows are
        kept, nothing is dropped). Returns what was done, one line per table."""
        return await self._sync_schema(tables, upgrade=True)

    async def _sync_schema(self, tables: Iterable[str] | None, upgrade: bool) -> list[str]:
        logical = list(DEFAULT_TABLES if tables is None else tables)
        for name in logical:
            self._table(name)
        actions: list[str] = []
        problems: list[str] = []
        async with self.transaction():
            await self._lock_schema()
            vname = self._names["version"]
            if await self._columns(vname) is None:
                await self._create(VERSION, vname)
                actions.append(f"created table {vname}")
            for lname in logical:
                t, name = self._table(lname)
                have_cols = await self._columns(name)
                if have_cols is None:
                    await self._create(t, name)
                    await self._set_version(name, t.version)
                    actions.append(f"created table {name} (version {t.version})")
                    continue
                rows = await self.query("version", where={"table_name": name}, columns=["table_version"])
                have = _as_int(rows[0]["table_version"]) if rows else None
                missing = [c for c in t.columns if c.name not in have_cols]
                if have == t.version and not missing:
                    actions.append(f"table {name}: version {have}, up to date")
                    continue
                problem = self._version_problem(t, name, have, missing, upgrade)
                if problem:
                    problems.append(problem)
                    continue
                for col in missing:
                    await self._statement(add_column_sql(name, col, self.dialect))
                await self._set_version(name, t.version)
                added = f", added {', '.join(c.name for c in missing)}" if missing else ""
                actions.append(f"upgraded table {name}: version {have if have is not None else 'none'} "
                               f"-> {t.version}{added}")
            if problems:
                raise SchemaError(f"database {self.url}: " + "; ".join(problems))
        for line in actions:
            if not line.endswith("up to date"):
                log.info("%s: %s", self.url, line)
        return actions

    def _version_problem(self, t: Table, name: str, have: int | None, missing: list[Column],
                         upgrade: bool) -> str | None:
        shown = "no version row" if have is None else f"version {have}"
        lacking = f" (missing columns: {', '.join(c.name for c in missing)})" if missing else ""
        if have is not None and have > t.version:
            return (f"table '{name}' has version {have}, newer than the {t.version} routescript supports; "
                    f"use a database made for OpenSIPS 3.4 / this routescript")
        if not upgrade:
            return (f"table '{name}' has {shown}, routescript needs version {t.version}{lacking}; "
                    f"run `routescript db init {self.url}` to create/upgrade the tables (rows are kept)")
        stuck = [c.name for c in missing if not c.nullable and c.default is None]
        if stuck:
            return (f"table '{name}' lacks NOT NULL columns {', '.join(stuck)} that cannot be added to "
                    f"existing rows; migrate it by hand (e.g. with OpenSIPS's opensips-cli)")
        return None

    async def _lock_schema(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Inside the schema transaction: keep other servers out until it ends (several nodes starting
        at once on an empty database must not all create the tables). SQLite's BEGIN IMMEDIATE does it."""

    async def _create(self, t: Table, name: str) -> None:
        for stmt in create_table_sql(t, self.dialect, name):
            await self._statement(stmt)

    async def _statement(self, sql: str) -> None:
        """A statement without parameters (DDL, savepoints); its SQL comes from this package only."""
        await self._run(lambda conn: self._execute(conn, sql, []))

    async def _columns(self, name: str) -> set[str] | None:
        return await self._run(lambda conn: self._table_columns(conn, name))

    async def _set_version(self, name: str, version: int) -> None:
        await self.delete("version", {"table_name": name})
        await self.insert("version", {"table_name": name, "table_version": version})

    # --- lifetime -----------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connections; later calls raise DatabaseError. Safe to call twice."""
        if not self._closed:
            self._closed = True
            try:
                await self._close_feed()
            finally:
                if self._listeners is not None:
                    await self._listeners.close()
                await self._close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise DatabaseError(f"database {self.url} is closed", "connection")

    def declare_table(self, name: str, like: str, extra: Sequence[Column] = ()) -> Table:
        """Make `name` a table of this handle shaped as the OpenSIPS table `like` plus `extra` columns:
        acc writes to any table do_accounting() names, with the extra_fields columns the operator added
        (OpenSIPS asks for them to be added by hand). `name` may be `like` itself (its columns extended);
        its SQL name is then the one the handle maps `like` to. Declaring it again replaces it."""
        base = SCHEMA.get(like)
        if base is None or like == "version":
            raise DatabaseError(f"declare_table {name!r}: unknown table {like!r}", "config")
        if not isinstance(name, str) or not IDENTIFIER.match(name):
            raise DatabaseError(f"bad table name {name!r}", "config")
        if name != like and name in SCHEMA:
            raise DatabaseError(f"declare_table {name!r}: the name of another OpenSIPS table", "config")
        for col in extra:
            if not IDENTIFIER.match(col.name) or col.name in base.by_name:
                raise DatabaseError(f"table {name!r}: bad or duplicate extra column {col.name!r}", "config")
        table = Table(name, base.version, base.columns + tuple(extra), base.unique, base.indexes)
        self._declared[name] = table
        self._plans.clear()           # write and read shapes of the old declaration
        self._read_plans.clear()
        return table

    async def missing_columns(self, table: str) -> list[str] | None:
        """The columns of `table`'s schema its database table lacks; None when the table is not there."""
        t, name = self._table(table)
        have = await self._columns(name)
        return None if have is None else [c for c in t.column_names if c not in have]

    def _table(self, name: str) -> tuple[Table, str]:
        declared = self._declared.get(name) if isinstance(name, str) else None
        if declared is not None:
            return declared, self._names.get(name, name)
        t = SCHEMA.get(name) if isinstance(name, str) else None
        if t is None:
            raise DatabaseError(f"unknown table {name!r} (known: {', '.join(SCHEMA)})")
        return t, self._names[name]

    # --- what a backend provides --------------------------------------------------------------------

    @abc.abstractmethod
    async def _run_standalone(self, fn: Callable[[Any], Awaitable[T]], idempotent: bool) -> T:
        """Run fn(conn) outside any transaction (autocommit), translating driver errors."""

    @abc.abstractmethod
    def _begin(self) -> AbstractAsyncContextManager[Any]:
        """Open a transaction and yield its connection; commit on exit, roll back when the block raises."""

    @abc.abstractmethod
    async def _fetch(self, conn: Any, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]: ...

    @abc.abstractmethod
    async def _execute(self, conn: Any, sql: str, params: Sequence[Any]) -> int:
        """Run a statement; the number of rows it touched."""

    @abc.abstractmethod
    async def _insert(self, conn: Any, sql: str, params: Sequence[Any], has_id: bool) -> int | None: ...

    @abc.abstractmethod
    async def _executemany(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @abc.abstractmethod
    async def _table_columns(self, conn: Any, name: str) -> set[str] | None:
        """The column names of a table, None when it does not exist."""

    @abc.abstractmethod
    def _translate(self, exc: Exception) -> DatabaseError: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...

    @abc.abstractmethod
    async def _listen(self, channel: str) -> None:
        """Start receiving `channel` into self.listeners (raise DatabaseError when unreachable now)."""

    @abc.abstractmethod
    async def _unlisten(self, channel: str) -> None: ...

    @abc.abstractmethod
    async def _notify(self, channel: str, payload: str) -> None: ...

    @abc.abstractmethod
    async def _close_feed(self) -> None: ...


def resolve_table_names(table_names: Mapping[str, str] | None) -> dict[str, str]:
    """OpenSIPS table name -> the name used in this database (tables renamed by modparam)."""
    names = {name: name for name in SCHEMA}
    for logical, actual in (table_names or {}).items():
        if logical not in SCHEMA:
            raise DatabaseError(f"unknown table '{logical}'", "config")
        if not isinstance(actual, str) or not IDENTIFIER.match(actual):
            raise DatabaseError(f"bad table name {actual!r} for '{logical}'", "config")
        names[logical] = actual
    return names


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):  # a hand-edited version row: treated as missing
        return None


def _datetime(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:   # a hand-edited value: treated as unknown
        return None


def _row(cols: Sequence[Column], raw: Sequence[Any]) -> Row:
    out: Row = {}
    for col, value in zip(cols, raw, strict=True):
        if col.kind == "blob" and value is not None and not isinstance(value, bytes):
            # OpenSIPS may have stored a body as TEXT in SQLite; blobs always come back as bytes.
            out[col.name] = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        elif col.kind == "datetime" and isinstance(value, str):
            # SQLite keeps DATETIME as text: back to the datetime PostgreSQL returns
            out[col.name] = _datetime(value)
        else:
            out[col.name] = value
    return out
