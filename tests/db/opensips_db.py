"""A database as an OpenSIPS installation left it: OpenSIPS's own CREATE scripts run on a fresh SQLite
file, PostgreSQL schema or MySQL database - for the tests that check such a database is used as it is."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from db.conftest import PG_URL, fresh_pg_schema, with_search_path
from db.mysql_util import fresh_mysql_db, mysql_script


@asynccontextmanager
async def opensips_database(kind: str, tmp_path: Path, script: str) -> AsyncIterator[str]:
    """The db_url of a fresh `kind` ("sqlite", "postgres" or "mysql") database made by `script` (that
    back end's OpenSIPS SQL); dropped when the block ends."""
    if kind == "sqlite":
        path = tmp_path / "opensips.sqlite"
        conn = sqlite3.connect(path)
        conn.executescript(script)
        conn.close()
        yield f"sqlite://{path}"
    elif kind == "mysql":
        async with fresh_mysql_db() as url:
            await mysql_script(url, script)
            yield url
    else:
        async with fresh_pg_schema() as schema:
            conn = await asyncpg.connect(PG_URL)
            try:
                await conn.execute(f"SET search_path TO {schema}; " + script)
            finally:
                await conn.close()
            yield with_search_path(PG_URL, schema)
