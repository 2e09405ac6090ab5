"""The rows acc writes, off the message path: a reply hook or a dialog callback puts a row here and goes
on; one task writes what is queued in one transaction (runs of one table as one executemany).

OpenSIPS inserts from the callback itself (blocking that process). We never block the loop: a row is
written a few milliseconds after its reply went out. Bounded: over MAX_PENDING rows waiting (the database
is down or too slow) a new row is logged and dropped. A lost connection keeps the rows and retries every
RETRY seconds; a row the database refuses (a value its column cannot take) is logged and dropped alone.

Tables: "acc" and "missed_calls" (by their modparam names) and any table do_accounting() names, shaped
as acc (or missed_calls) plus the db extra_fields columns. Each is checked the first time it is used
(created when missing, with the extra columns); a table lacking extra columns is refused with the
ALTER TABLE to run, as OpenSIPS asks the operator to add them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from routescript.db import Column, Database, DatabaseError, Write
from routescript.db.schema import column_sql

log = logging.getLogger("routescript.acc")

MAX_PENDING = 50_000    # rows waiting for the database
MAX_TABLES = 64         # distinct table names do_accounting() may write to
RETRY = 1.0             # seconds between attempts while the database is unreachable
CLOSE_WAIT = 5.0        # seconds stop() waits for a write under way


class TableError(Exception):
    """A table acc cannot write to (its message says why and what to do)."""


@dataclass(slots=True)
class Tables:
    """Which tables are ready, refused, or not looked at yet (their shape: "acc" or "missed_calls")."""

    extra: tuple[Column, ...]
    ready: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)

    async def prepare(self, db: Database, name: str, like: str) -> None:
        """Declare `name` on the handle and make sure it can take our rows; TableError when not."""
        if name in self.ready:
            return
        if name in self.refused:
            raise TableError(self.refused[name])
        if len(self.ready) + len(self.refused) >= MAX_TABLES:
            raise TableError(f"more than {MAX_TABLES} accounting tables in use: {name!r} not written")
        try:
            db.declare_table(name, like, self.extra)
            missing = await db.missing_columns(name)
            lacking = [c for c in self.extra if missing and c.name in missing]
            if lacking:
                alter = "; ".join(f"ALTER TABLE {name} ADD COLUMN {column_sql(c, db.dialect)}"
                                  for c in lacking)
                raise TableError(f"table {name!r} lacks the extra_fields column(s) "
                                 f"{', '.join(c.name for c in lacking)}: add them ({alter})")
            await db.ensure_schema([name])
        except DatabaseError as exc:
            if exc.transient:
                raise
            self.refused[name] = f"table {name!r}: {exc}"
            raise TableError(self.refused[name]) from None
        except TableError as exc:
            self.refused[name] = str(exc)
            raise
        self.ready.add(name)


@dataclass(frozen=True, slots=True)
class Pending:
    table: str
    like: str          # "acc" or "missed_calls"
    values: dict[str, Any]


class AccWriter:
    """Queue of rows and the task writing them. `open_db` gives the database (opened on first use)."""

    def __init__(self, open_db: Callable[[], Awaitable[Database]], extra: Sequence[Column],
                 *, max_pending: int = MAX_PENDING) -> None:
        self._open_db = open_db
        self.tables = Tables(tuple(extra))
        self._queue: list[Pending] = []
        self._max = max_pending
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0
        self.written = 0

    def put(self, table: str, like: str, values: dict[str, Any]) -> None:
        if len(self._queue) >= self._max:
            self.dropped += 1
            log.error("acc: %d rows wait for the database: a %s row (Call-ID %s) is dropped",
                      len(self._queue), table, values.get("callid"))
            return
        self._queue.append(Pending(table, like, values))
        if self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return    # no loop (a unit test): flush() writes it
            self._task = loop.create_task(self._drain())

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def prepare(self, table: str, like: str) -> None:
        """At start: the module's own tables, so a wrong one stops the start with its reason."""
        await self.tables.prepare(await self._open_db(), table, like)

    async def _drain(self) -> None:
        try:
            while self._queue:
                if not await self.flush():
                    if self._closing:
                        return
                    await asyncio.sleep(RETRY)
        except Exception:
            log.exception("acc: writing rows failed; %d row(s) kept for the next one", len(self._queue))
        finally:
            self._task = None

    async def flush(self) -> bool:
        """Write what is queued; False when the database is unreachable (the rows are kept)."""
        batch, self._queue = self._queue, []
        if not batch:
            return True
        try:
            db = await self._open_db()
            writes: list[Write] = []
            for item in batch:
                try:
                    await self.tables.prepare(db, item.table, item.like)
                except TableError as exc:
                    log.error("acc: %s row (Call-ID %s) not written: %s", item.table,
                              item.values.get("callid"), exc)
                    continue
                writes.append(Write("insert", item.table, _fit(db, item.table, item.values)))
            if writes:
                await self._write(db, writes)
        except DatabaseError as exc:
            if not exc.transient:
                raise
            log.warning("acc: database unreachable (%s): %d row(s) kept, retried in %.0f s", exc, len(batch),
                        RETRY)
            self._queue[:0] = batch
            return False
        return True

    async def _write(self, db: Database, writes: list[Write]) -> None:
        try:
            await db.write_batch(writes)
            self.written += len(writes)
            return
        except DatabaseError as exc:
            if exc.transient:
                raise
            log.debug("acc: batch of %d refused (%s): writing row by row", len(writes), exc)
        for write in writes:     # find the bad one(s): the others are written
            try:
                await db.write_batch([write])
                self.written += 1
            except DatabaseError as exc:
                if exc.transient:
                    raise
                log.error("acc: %s row (Call-ID %s) refused by the database: %s", write.table,
                          write.values.get("callid"), exc)

    async def close(self) -> None:
        """At stop: what is queued is written (one attempt)."""
        self._closing = True
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), CLOSE_WAIT)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._queue:
            try:
                await self.flush()
            except DatabaseError as exc:
                log.error("acc: %d row(s) not written at stop: %s", len(self._queue), exc)
        if self._queue:
            log.error("acc: %d row(s) not written at stop (database unreachable)", len(self._queue))


def _fit(db: Database, table: str, values: dict[str, Any]) -> dict[str, Any]:
    """Strings cut to their column's size: OpenSIPS's insert of a 70-character Call-ID fails on
    PostgreSQL and strict MySQL and the record is lost; a cut Call-ID still finds the call."""
    schema = db.table(table)
    out = dict(values)
    for name, value in values.items():
        col = schema.by_name.get(name)
        if isinstance(value, str) and col is not None and col.kind == "str" and col.size \
                and len(value) > col.size:
            out[name] = value[:col.size]
    return out
