"""A coroutine driven by hand from a loop callback, before it becomes a task (an eager dispatcher runs
each message that way up to its first real wait), may call the database: asyncpg's timeout scopes need
a task, and the PostgreSQL backend gives them one (routescript.db.postgres._in_task)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from routescript.db import open_database


async def run_outside_a_task(coro: Any) -> Any:
    """Step `coro` once from a plain loop callback (no current task), then finish it as a task."""
    loop = asyncio.get_running_loop()
    first: asyncio.Future[Any] = loop.create_future()

    def step() -> None:
        assert asyncio.current_task() is None
        try:
            first.set_result(("wait", coro.send(None)))
        except StopIteration as stop:
            first.set_result(("done", stop.value))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            first.set_exception(exc)

    loop.call_soon(step)
    kind, value = await first
    if kind == "done":
        return value

    async def resume(fut: Any) -> Any:
        for _ in range(1000):
            if fut is not None:
                fut._asyncio_future_blocking = False   # as Task.__step does with a yielded future
                await fut
            try:
                fut = coro.send(None)
            except StopIteration as stop:
                return stop.value
        raise AssertionError("did not finish")

    return await resume(value)


async def test_in_task_gives_asyncpg_timeouts_a_task() -> None:
    from routescript.db.postgres import _in_task

    async def scoped() -> str:
        async with asyncio.timeout(5):   # what asyncpg does around connect/reset/cancel
            await asyncio.sleep(0)
        return "ok"

    async def wrapped() -> str:
        return await _in_task(scoped())

    with pytest.raises(RuntimeError, match="inside a task"):
        await run_outside_a_task(scoped())
    assert await run_outside_a_task(wrapped()) == "ok"


async def test_database_calls_from_outside_a_task(db_url: str) -> None:
    db = await open_database(db_url)
    try:
        await db.ensure_schema(["presentity"])
        pool = getattr(db, "_pool", None)
        if pool is not None:   # a server: the first call then opens a new connection (a timeout scope)
            await (pool.expire_connections() if hasattr(pool, "expire_connections") else pool.clear())

        async def handler() -> list[Any]:
            await db.insert("presentity", {"username": "u", "domain": "d", "event": "presence", "etag": "e",
                                           "expires": 10, "received_time": 1, "body": b"x"})
            async with db.transaction():
                await db.update("presentity", {"etag": "e"}, {"expires": 20})
            return await db.query("presentity", columns=["expires"])

        assert await run_outside_a_task(handler()) == [{"expires": 20}]
    finally:
        await db.close()
