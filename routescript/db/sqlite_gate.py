"""A fair, waking write lock shared by the processes that write one SQLite file.

SQLite serialises writers with a file lock and a busy handler that SLEEPS between retries (1, 2, 5,
10 ... 100 ms). Two worker processes committing to one file in turn (docs/workers.md) met that
handler at every commit: the one that found the lock taken slept, its sibling took the lock again
meanwhile, and a worker waited for its own COMMIT for 500 ms at a time (measured: PUBLISH at 2,400
calls/s on 2 workers, 2-18% of the calls answered 503 "overloaded" while each worker sat 30% idle;
two servers on two files passed 3,600). The gate is an flock(2) on a file beside the database,
taken before BEGIN IMMEDIATE and released after COMMIT/ROLLBACK: a waiter is woken by the kernel the
moment the holder lets go, so our own writers never meet SQLite's busy handler. Other programs (an
sqlite3 shell, OpenSIPS) still meet it, as before.

Why a file of its own and not flock on the database: SQLite locks the database and its -shm with
fcntl(2) locks; on NFS flock is emulated with those and would conflict with them.
"""

from __future__ import annotations

import asyncio
import fcntl
import os


class WriterGate:
    """flock(2) on `<database>-rswrite`: `await acquire()` (never blocks the loop: an uncontended lock is
    taken at once, a contended one is waited for in the default executor's thread), `release()`."""

    def __init__(self, db_path: str) -> None:
        self.path = f"{db_path}-rswrite"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    async def acquire(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            taking = asyncio.get_running_loop().run_in_executor(None, fcntl.flock, self._fd, fcntl.LOCK_EX)
            try:
                await asyncio.shield(taking)
            except asyncio.CancelledError:
                # the thread goes on waiting and takes the lock for nobody: let it go once taken, or
                # every later acquire (ours, the other processes') would wait for ever - a stop that
                # cancelled a commit waiting here would then hang in the executor's join at exit
                taking.add_done_callback(self._release_unwanted)
                raise

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _release_unwanted(self, taking: asyncio.Future[None]) -> None:
        if not taking.cancelled() and taking.exception() is None and self._fd >= 0:
            self.release()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
