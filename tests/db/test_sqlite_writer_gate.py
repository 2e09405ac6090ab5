"""The writers' gate on a SQLite file (routescript/db/sqlite_gate.py): our writers in several processes
wait for each other at an flock, woken the moment the holder commits, and never meet SQLite's sleeping
busy handler. Two Database objects on one file stand for two worker processes: each has its own open
file description, so their flocks exclude each other exactly as two processes' do."""

from __future__ import annotations

import asyncio
from pathlib import Path

from routescript.db import init_schema, open_database

from .test_db_behaviour import presentity


async def test_a_second_writer_waits_at_the_gate_not_in_sqlites_busy_handler(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'shared.sqlite'}"
    await init_schema(url)
    first, second = await open_database(url), await open_database(url)
    release = asyncio.Event()
    try:
        # With no busy timeout, a second writer that reached BEGIN IMMEDIATE while the first holds the
        # write lock fails at once ("database is locked"): only the gate can make it wait instead.
        await second._conn.execute("PRAGMA busy_timeout = 0")   # type: ignore[attr-defined]
        ticks = 0
        holding = asyncio.Event()

        async def hold_a_transaction() -> None:
            async with first.transaction():
                await first.insert("presentity", presentity(1, etag="a1"))
                holding.set()
                await release.wait()

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        holder = asyncio.create_task(hold_a_transaction())
        ticker = asyncio.create_task(tick())
        await holding.wait()

        async def write_second() -> None:
            async with second.transaction():
                await second.insert("presentity", presentity(2, etag="b1"))

        waiter = asyncio.create_task(write_second())
        await asyncio.sleep(0.1)
        assert not waiter.done()           # waiting at the gate...
        assert ticks >= 10                 # ...without blocking the event loop
        release.set()
        await asyncio.wait_for(holder, 5)
        await asyncio.wait_for(waiter, 5)  # and through as soon as the first committed
        ticker.cancel()
        rows = await second.query("presentity", columns=["etag"], order_by=["etag"])
        assert [r["etag"] for r in rows] == ["a1", "b1"]
    finally:
        release.set()   # a failed assertion must not leave the first transaction open (close waits)
        await first.close()
        await second.close()


async def test_an_uncontended_gate_is_taken_without_a_thread(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'alone.sqlite'}"
    await init_schema(url)
    db = await open_database(url)
    try:
        loop = asyncio.get_running_loop()
        used: list[object] = []
        real = loop.run_in_executor
        loop.run_in_executor = lambda *a: used.append(a) or real(*a)   # type: ignore[method-assign]
        try:
            async with db.transaction():
                await db.insert("presentity", presentity(3, etag="c1"))
        finally:
            loop.run_in_executor = real   # type: ignore[method-assign]
        assert used == []
        assert (tmp_path / "alone.sqlite-rswrite").exists()
    finally:
        await db.close()


async def test_a_writer_cancelled_while_waiting_at_the_gate_does_not_keep_it(tmp_path: Path) -> None:
    """A transaction cancelled while its gate waited in the executor (a stop cancelling a commit): the
    thread still takes the lock when the holder lets go; it must let it go again, or the next writer
    (and the executor's join at exit) waits for ever."""
    from routescript.db.sqlite_gate import WriterGate

    path = str(tmp_path / "shared.sqlite")
    holder, cancelled, later = WriterGate(path), WriterGate(path), WriterGate(path)
    try:
        await holder.acquire()
        waiting = asyncio.create_task(cancelled.acquire())
        await asyncio.sleep(0.05)          # in the executor now, blocked in flock
        waiting.cancel()
        try:
            await waiting
        except asyncio.CancelledError:
            pass
        holder.release()
        await asyncio.wait_for(later.acquire(), 2)   # the cancelled waiter took it and let it go
        later.release()
    finally:
        for gate in (holder, cancelled, later):
            gate.close()   # before the fix: drops the lock the orphaned flock took, so the thread ends


async def test_a_batch_waits_in_the_thread_for_a_writer_that_does_not_take_the_gate(tmp_path: Path) -> None:
    """A group-commit batch begins on the loop's thread only when SQLite's write lock is free: another
    program's transaction (no gate) makes it begin in aiosqlite's thread, which waits (busy_timeout)
    while the loop runs, and commits once the lock is let go (never 'database is locked')."""
    import sqlite3

    from routescript.db import Write

    path = tmp_path / "shared.sqlite"
    await init_schema(f"sqlite://{path}")
    db = await open_database(f"sqlite://{path}")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE presentity SET etag = etag")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        ticker = asyncio.create_task(tick())
        batch = asyncio.create_task(db.write_batch([Write("insert", "presentity", presentity(4, etag="d1"))]))
        await asyncio.sleep(0.2)
        assert not batch.done()            # waiting for the other program's lock...
        assert ticks >= 20                 # ...in the thread, the loop free
        other.execute("COMMIT")
        await asyncio.wait_for(batch, 5)
        ticker.cancel()
        rows = await db.query("presentity", columns=["etag"])
        assert [r["etag"] for r in rows] == ["d1"]
    finally:
        other.close()
        await db.close()


async def test_a_batch_lets_the_gate_go_in_the_thread_that_committed(tmp_path: Path) -> None:
    """The gate is released in aiosqlite's thread right after COMMIT, not once the loop sees the COMMIT
    done: the other workers' writers wait for the sync only, not for a busy loop's next turn."""
    import threading

    from routescript.db import Write

    url = f"sqlite://{tmp_path / 'shared.sqlite'}"
    await init_schema(url)
    db = await open_database(url)
    try:
        gate = db._gate   # type: ignore[attr-defined]
        released_in: list[str] = []
        real = gate.release
        gate.release = lambda: released_in.append(threading.current_thread().name) or real()
        await db.write_batch([Write("insert", "presentity", presentity(5, etag="e1"))])
        assert len(released_in) == 1 and released_in[0] != threading.main_thread().name
        # the gate is free: another writer takes it without waiting
        other = type(gate)(gate.path.removesuffix("-rswrite"))
        try:
            await asyncio.wait_for(other.acquire(), 1)
            other.release()
        finally:
            other.close()
    finally:
        await db.close()
