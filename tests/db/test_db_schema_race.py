"""Several servers starting at once on an empty database: each creates the schema, none fails (PostgreSQL:
an advisory lock serialises them; SQLite: BEGIN IMMEDIATE)."""

from __future__ import annotations

import asyncio

from routescript.db import open_database


async def test_concurrent_ensure_schema(db_url: str) -> None:
    dbs = [await open_database(db_url) for _ in range(4)]
    try:
        tables = ["presentity", "active_watchers", "watchers", "rs_nodes"]
        results = await asyncio.gather(*(d.ensure_schema(tables) for d in dbs), return_exceptions=True)
        assert results == [None] * 4
        versions = await dbs[0].query("version", order_by="table_name")
        assert [(r["table_name"], r["table_version"]) for r in versions] == [
            ("active_watchers", 12), ("presentity", 5), ("rs_nodes", 1), ("watchers", 4)]
    finally:
        for d in dbs:
            await d.close()
