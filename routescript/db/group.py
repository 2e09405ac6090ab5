"""Group commit: writes that arrive together share one transaction, and so one sync to disk.

A PUBLISH is answered only once its row is committed (RFC 3903: the SIP-ETag must survive a restart);
so are a new subscription and an unsubscribe (their active_watchers row inserted or deleted).
With SQLite in WAL + synchronous=FULL each commit costs a sync; one commit per PUBLISH caps the rate at
the disk's sync rate. `GroupCommitter.write(writes)` queues a caller's writes and returns when the
transaction holding them has committed (or raises its error): callers that arrive in the same event
loop turn - or while the previous batch is committing - go in the next batch. Nothing is acknowledged
before its commit; at low load a batch is one caller, flushed at the next loop turn (no added delay).

`write(writes, on_commit=cb)`: cb() is called synchronously right after the transaction holding the
writes has committed, before any caller of the batch resumes (a caller's task resumes at a later loop
turn, behind whatever the loop has queued meanwhile): what must follow the commit at once - a
change-feed announcement to the other workers - goes from there.

Errors: a batch that fails because the database is unreachable (DatabaseError.transient) fails every
caller in it with that error. Any other failure (one bad row) is retried caller by caller, each in its
own transaction, so one caller's bad row never fails the others. A caller's writes are atomic together.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Sequence

from routescript.db.base import Database, Write
from routescript.db.errors import DatabaseError

log = logging.getLogger("routescript.db")

MAX_BATCH_WRITES = 1000    # bound: writes in one transaction (a longer batch delays its first caller)
MAX_PENDING = 20_000       # bound: callers waiting for a commit; beyond, DatabaseError (transient)

# a caller's writes, the future its write() awaits, its on_commit
_Caller = tuple[Sequence[Write], "asyncio.Future[None]", Callable[[], None] | None]


class GroupCommitter:
    """Batches the writes of concurrent callers into shared transactions on one Database.

    `window`: seconds the first caller of an idle committer waits for others to join (0: the callers
    ready in the same event-loop turn; while a batch commits the next one gathers anyway)."""

    def __init__(self, db: Database, *, window: float = 0.0, max_batch: int = MAX_BATCH_WRITES,
                 max_pending: int = MAX_PENDING) -> None:
        self.db = db
        self.window = window
        self.max_batch = max(1, max_batch)
        self.max_pending = max_pending
        self._pending: list[_Caller] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0     # statistics: transactions committed, callers served
        self.callers = 0

    async def write(self, writes: Sequence[Write], on_commit: Callable[[], None] | None = None) -> None:
        """Store `writes` (all or none); returns once they are committed, raises DatabaseError if not.
        `on_commit`: called once they are committed, before any caller resumes (never when they are
        not; its exception is logged). Inside the caller's own transaction on this database they
        simply join it (on_commit then runs at that transaction's commit)."""
        if not writes:
            return
        tx = self.db.current_transaction()
        if tx is not None:
            await self.db.write_batch(writes)
            if on_commit is not None:
                tx.after_commit.append(on_commit)
            return
        if len(self._pending) >= self.max_pending:
            log.warning("%s: %d writers waiting for a commit; refusing more", self.db.url, len(self._pending))
            raise DatabaseError(f"{self.db.url}: too many writes waiting for a commit", "connection")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((writes, fut, on_commit))
        if self._flusher is None:
            # A fresh context: the flusher must not join a transaction its first caller's task is in.
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(),
                                                                   context=contextvars.Context())
        await fut

    async def drain(self) -> None:
        """Wait until every queued write has been committed or failed (shutdown)."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush_loop(self) -> None:
        try:
            await asyncio.sleep(self.window)   # let the callers ready in this turn join
            while self._pending:
                batch = self._take()
                await self._commit(batch)
        finally:
            self._flusher = None
            stranded, self._pending = self._pending, []   # only when cancelled: nobody waits forever
            _settle(stranded, DatabaseError(f"{self.db.url}: group commit stopped", "connection"))

    def _take(self) -> list[_Caller]:
        n = count = 0
        for writes, _, _ in self._pending:
            if n and count + len(writes) > self.max_batch:
                break
            count += len(writes)
            n += 1
        batch, self._pending = self._pending[:n], self._pending[n:]
        return batch

    async def _commit(self, batch: list[_Caller]) -> None:
        # A cancelled caller's writes still go: what it asked for is committed, or not, as one.
        live = batch
        try:
            await self.db.write_batch([w for writes, _, _ in live for w in writes])
        except asyncio.CancelledError:
            _settle(live, DatabaseError(f"{self.db.url}: group commit stopped", "connection"))
            raise
        except Exception as exc:  # noqa: BLE001 - whatever failed, every caller gets an answer
            if len(live) == 1 or getattr(exc, "transient", False):
                _settle(live, exc)
                return
            log.warning("%s: a batch of %d writers failed (%s); retried one by one", self.db.url, len(live),
                        exc)
            for caller in live:
                try:
                    await self.db.write_batch(caller[0])
                except Exception as one:  # noqa: BLE001 - this caller's answer
                    _settle([caller], one)
                else:
                    _committed([caller])
                    _settle([caller], None)
            return
        self.batches += 1
        self.callers += len(live)
        _committed(live)
        _settle(live, None)



def _committed(batch: list[_Caller]) -> None:
    for _, _, on_commit in batch:
        if on_commit is not None:
            try:
                on_commit()
            except Exception:
                log.exception("an after-commit action failed (the writes are committed)")


def _settle(batch: list[_Caller], exc: BaseException | None) -> None:
    for _, fut, _ in batch:
        if fut.done():
            continue   # the caller was cancelled; what it wrote is committed (or not) all the same
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)
