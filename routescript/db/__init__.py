"""routescript.db - the storage layer: OpenSIPS tables behind one small async interface, on SQLite or
PostgreSQL or MySQL/MariaDB. It knows rows and tables, never SIP messages or modules.

    db = await open_database("sqlite:///var/lib/routescript/presence.sqlite")
    await db.ensure_schema()
    async with db.transaction():
        await db.delete("presentity", {"expires": ("<", now)})
        await db.insert("presentity", {...})
    rows = await db.query("active_watchers", {"presentity_uri": uri}, order_by="id")
    await db.close()

Change feed and row claiming, for several servers sharing one database (docs/cluster.md):
    await db.listen("rs_presence_1", on_announce, on_reconnect=resync)   # on_announce(channel, payload)
    await db.notify("rs_presence_1", "sip:alice@example.com presence")   # at commit inside a transaction
    rows = await db.claim("active_watchers", {"sharing_tag": "dead"}, {"sharing_tag": "me"}, limit=500)

URLs are read as OpenSIPS reads its db_url (see routescript.db.url). Every failure is a DatabaseError whose
`transient` flag tells "retry later" (503) from "bad query/data" (500).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping

from routescript.db.base import Database, Row, Transaction, Write, resolve_table_names
from routescript.db.errors import DatabaseError, SchemaError
from routescript.db.feed import MAX_PAYLOAD
from routescript.db.group import GroupCommitter
from routescript.db.schema import DEFAULT_TABLES, SCHEMA, Column, Table, create_table_sql
from routescript.db.url import DbUrl, check_driver, parse_url

__all__ = [
    "DEFAULT_TABLES",
    "MAX_PAYLOAD",
    "SCHEMA",
    "Column",
    "Database",
    "DatabaseError",
    "DbUrl",
    "GroupCommitter",
    "Row",
    "SchemaError",
    "Table",
    "Transaction",
    "Write",
    "abandon_open_connections",
    "create_table_sql",
    "init_schema",
    "open_database",
    "parse_url",
]


async def open_database(url: str, *, table_names: Mapping[str, str] | None = None,
                        clock: Callable[[], float] = time.monotonic) -> Database:
    """Connect to `url` (sqlite://..., postgres://..., postgresql://..., mysql://...).

    SQLite: the file and its parent directory are created when missing. PostgreSQL, MySQL: a pool of
    connections.
    table_names: actual names for tables renamed in the script (e.g. modparam presentity_table), mapped
    from the OpenSIPS name. clock: monotonic seconds, for the PostgreSQL reconnect back-off (tests inject it).
    Raises DatabaseError (kind "config" for a bad URL, "connection" when the database cannot be reached).
    """
    target = parse_url(url)
    check_driver(target)
    resolve_table_names(table_names)  # refuse bad names before connecting
    if target.backend == "sqlite":
        from routescript.db.sqlite import SqliteDatabase
        return await SqliteDatabase.open(target.redacted, target.path, table_names)
    if target.backend == "mysql":
        from routescript.db.mysql import MysqlDatabase
        return await MysqlDatabase.open(target, table_names, clock)
    from routescript.db.postgres import PostgresDatabase
    return await PostgresDatabase.open(target.redacted, target.dsn, table_names, clock)


def abandon_open_connections() -> list[str]:
    """After a stop gave up on a close: the SQLite connections still open are closed without waiting, so
    that their threads end (sqlite.py). Nothing is imported here: no SQLite database opened, none open."""
    sqlite = sys.modules.get("routescript.db.sqlite")
    return sqlite.abandon_open_connections() if sqlite is not None else []


async def init_schema(url: str, tables: Iterable[str] | None = None, *,
                      table_names: Mapping[str, str] | None = None) -> list[str]:
    """`routescript db init URL`: create the missing tables and upgrade older ones in place (columns added,
    version rows set; no row and no table is ever dropped). Returns one line per table saying what was done.
    Raises SchemaError when a table cannot be upgraded automatically (then nothing was changed)."""
    db = await open_database(url, table_names=table_names)
    try:
        return await db.upgrade_schema(tables)
    finally:
        await db.close()
