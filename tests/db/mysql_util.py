"""MySQL/MariaDB for the tests: 127.0.0.1:3306, user root without a password (override with
ROUTESCRIPT_TEST_MYSQL=mysql://user:pass@host:port/db). Each test gets a database of its own, dropped
afterwards. When the server does not answer, the MySQL tests skip and say why (an external service
missing on a user's machine; CI's .ci/run starts it, so there they run)."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from routescript.db import parse_url

MYSQL_URL = os.environ.get("ROUTESCRIPT_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")


async def connect(url: str = MYSQL_URL) -> Any:
    """A plain asyncmy connection (autocommit, ANSI_QUOTES as the back end's sessions)."""
    import asyncmy

    target = parse_url(url)
    return await asyncmy.connect(host=target.host, port=target.port, user=target.user,
                                 password=target.password, db=target.database, autocommit=True,
                                 charset="utf8mb4", connect_timeout=5,
                                 init_command="SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')")


async def admin() -> Any:
    try:
        return await connect()
    except Exception as exc:  # noqa: BLE001 - a missing server is a skip, with the reason
        pytest.skip(f"MySQL/MariaDB not reachable at {MYSQL_URL} ({exc}); start it (.ci/run does) or set "
                    "ROUTESCRIPT_TEST_MYSQL")


def database_url(name: str) -> str:
    base, _, _ = MYSQL_URL.rpartition("/")
    return f"{base}/{name}"


@asynccontextmanager
async def fresh_mysql_db() -> AsyncIterator[str]:
    """The URL of a fresh, empty database; dropped (with everything in it) afterwards."""
    name = "rs_test_" + uuid.uuid4().hex[:16]
    conn = await admin()
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        yield database_url(name)
    finally:
        async with conn.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()


async def create_database() -> str:
    """A fresh database's URL (for synchronous fixtures, through their run_sync); drop_database drops it."""
    name = "rs_test_" + uuid.uuid4().hex[:16]
    conn = await admin()
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    finally:
        conn.close()
    return database_url(name)


async def drop_database(url: str) -> None:
    conn = await connect()
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS {parse_url(url).database}")
    finally:
        conn.close()


_STATEMENT_END = re.compile(r";\s*(?:\n|$)")


async def mysql_script(url: str, script: str) -> None:
    """Run a script of statements (each ending with ';' at the end of a line), as the mysql client would."""
    conn = await connect(url)
    try:
        async with conn.cursor() as cur:
            for stmt in _STATEMENT_END.split(script):
                if stmt.strip():
                    await cur.execute(stmt)
    finally:
        conn.close()


async def mysql_rows(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    conn = await connect(url)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql, tuple(params) if params else None)
            return [tuple(r) for r in await cur.fetchall()]
    finally:
        conn.close()
