"""Fixtures for the storage tests: one behaviour suite runs on SQLite (a file under tmp_path), on
PostgreSQL (127.0.0.1:5432, database `test`, each test in a fresh schema that is dropped afterwards) and on
MySQL/MariaDB (127.0.0.1:3306, user root, each test in a fresh database that is dropped afterwards; the
MySQL tests skip, saying why, when that server does not answer - CI starts it; override it with
ROUTESCRIPT_TEST_MYSQL=mysql://user:pass@host:port/db, the db being only the admin connection's).

PostgreSQL must be running: a test that needs it fails (never skips) when it cannot connect - CI runs it.
Override the server with ROUTESCRIPT_TEST_PG=postgres://user@host:port/db.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from routescript.db import Database, open_database, parse_url

from .mysql_util import fresh_mysql_db, mysql_rows, mysql_script

PG_URL = os.environ.get("ROUTESCRIPT_TEST_PG", "postgres://postgres@127.0.0.1:5432/test")


async def pg_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_URL, timeout=5)
    except Exception as exc:  # noqa: BLE001 - not a skip: CI has PostgreSQL, a missing server is a failure
        pytest.fail(f"PostgreSQL not reachable at {PG_URL} ({exc}); start it or set ROUTESCRIPT_TEST_PG")


def with_search_path(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@asynccontextmanager
async def fresh_pg_schema() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL schema; dropped (with everything in it) afterwards."""
    name = "rs_test_" + uuid.uuid4().hex[:16]
    admin = await pg_admin()
    try:
        await admin.execute(f"CREATE SCHEMA {name}")
        yield name
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        await admin.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema of its own."""
    async with fresh_pg_schema() as schema:
        yield with_search_path(PG_URL, schema)


@pytest.fixture
async def mysql_url() -> AsyncIterator[str]:
    """A MySQL URL of a fresh database of its own."""
    async with fresh_mysql_db() as url:
        yield url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await open_database(db_url)
    try:
        yield database
    finally:
        await database.close()


async def raw_sql(url: str, script: str) -> None:
    """Run SQL straight on the database behind `url`, as another program (OpenSIPS, psql) would."""
    target = parse_url(url)
    if target.backend == "sqlite":
        conn = sqlite3.connect(target.path)
        try:
            conn.executescript(script)
        finally:
            conn.close()
    elif target.backend == "mysql":
        await mysql_script(url, script)
    else:
        conn = await asyncpg.connect(target.dsn)
        try:
            await conn.execute(script)
        finally:
            await conn.close()


async def raw_rows(url: str, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    target = parse_url(url)
    if target.backend == "sqlite":
        conn = sqlite3.connect(target.path)
        try:
            return list(conn.execute(sql))
        finally:
            conn.close()
    if target.backend == "mysql":
        return await mysql_rows(url, sql)
    conn = await asyncpg.connect(target.dsn)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()
