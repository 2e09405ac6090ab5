"""SQLite specifics: URL mapping, file creation and settings, and databases OpenSIPS created."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from routescript.db import (
    DEFAULT_TABLES,
    DatabaseError,
    SchemaError,
    create_table_sql,
    init_schema,
    open_database,
    parse_url,
)
from routescript.db.schema import SCHEMA

from .opensips_sql import ACC_SQLITE, AUTH_DB_SQLITE
from .opensips_sql import SQLITE as OPENSIPS_SQLITE
from .test_db_behaviour import presentity, watcher


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:///var/lib/opensips/opensips.db", "/var/lib/opensips/opensips.db"),
    # OpenSIPS strips "sqlite:/" and opens the rest: two slashes also give an absolute path
    ("sqlite://var/lib/opensips/opensips.db", "/var/lib/opensips/opensips.db"),
    ("sqlite:////srv//x/../db.sqlite", "/srv/db.sqlite"),
    ("SQLITE:///a.db", "/a.db"),
    ("sqlite://:memory:", ":memory:"),
])
def test_sqlite_urls_map_as_in_opensips(url: str, path: str) -> None:
    target = parse_url(url)
    assert target.backend == "sqlite" and target.path == path


@pytest.mark.parametrize("url", ["", "sqlite:/x.db", "sqlite://", "sqlite:///dir/", "mysql://u@h/", "mysql://u@h/db?x=1",
                                 "/var/db.sqlite", "postgres://"])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(DatabaseError) as err:
        parse_url(url)
    assert err.value.kind == "config" and not err.value.transient


def test_postgres_url_password_is_redacted() -> None:
    target = parse_url("postgres://opensips:s3cret@db.example:5433/opensips")
    assert target.backend == "postgres" and target.dsn.endswith("s3cret@db.example:5433/opensips")
    assert "s3cret" not in target.redacted and target.redacted == "postgres://opensips:***@db.example:5433/opensips"
    assert parse_url("postgresql://u@h/d").redacted == "postgresql://u@h/d"


async def test_file_and_parent_directories_are_created_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "presence.sqlite"
    async with await open_database(f"sqlite://{path}") as db:
        await db.ensure_schema()
        await db.insert("presentity", presentity(1))
    assert path.is_file()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT username FROM presentity").fetchall() == [("user1",)]
    finally:
        conn.close()


async def test_unopenable_file_is_a_transient_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DatabaseError) as err:
        await open_database(f"sqlite://{blocker}/db.sqlite")
    assert err.value.transient


async def test_in_memory_database() -> None:
    async with await open_database("sqlite://:memory:") as db:
        await db.ensure_schema(["watchers"])
        assert await db.count("watchers") == 0


async def test_opens_a_database_opensips_created(tmp_path: Path) -> None:
    path = tmp_path / "opensips.db"
    conn = sqlite3.connect(path)
    conn.executescript(OPENSIPS_SQLITE)
    # rows as OpenSIPS (or an admin with the sqlite3 shell) wrote them: the body stored as TEXT
    conn.execute("INSERT INTO presentity (username, domain, event, etag, expires, received_time, body) "
                 "VALUES ('alice', 'example.com', 'presence', 'a.1', 1700000000, 1699999000, '<presence/>')")
    conn.execute("INSERT INTO watchers (presentity_uri, watcher_username, watcher_domain, status, "
                 "inserted_time) VALUES ('sip:alice@example.com', 'bob', 'example.com', 1, 5)")
    conn.commit()
    conn.close()

    url = f"sqlite://{path}"
    async with await open_database(url) as db:
        await db.ensure_schema([*DEFAULT_TABLES, "pua"])  # the 3.4 tables and versions: accepted unchanged
        assert await db.count("version") == 7   # presence's 5, usrloc's location and dialog's
        row = (await db.query("presentity", {"username": "alice"}))[0]
        assert row["body"] == b"<presence/>" and row["sender"] is None
        # upsert goes through OpenSIPS's own unique constraints (named differently from ours)
        await db.upsert("active_watchers", watcher(1), ["presentity_uri", "callid", "to_tag", "from_tag"])
        await db.upsert("active_watchers", watcher(1, remote_cseq=9),
                        ["presentity_uri", "callid", "to_tag", "from_tag"])
        assert [r["remote_cseq"] for r in await db.query("active_watchers")] == [9]
        await db.update("watchers", {"watcher_username": "bob"}, {"status": 2})
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT status FROM watchers").fetchall() == [(2,)]
        assert conn.execute("SELECT status, event FROM active_watchers").fetchall() == [(2, "presence")]
    finally:
        conn.close()


async def test_opensips_database_of_an_older_release_is_upgraded_by_init(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = OPENSIPS_SQLITE.replace("('active_watchers','12')", "('active_watchers','11')").replace(
        "    sharing_tag CHAR(32) DEFAULT NULL,\n", "")
    conn = sqlite3.connect(path)
    conn.executescript(old)
    conn.close()
    url = f"sqlite://{path}"
    async with await open_database(url) as db:
        with pytest.raises(SchemaError) as err:
            await db.ensure_schema()
        assert f"routescript db init {url}" in str(err.value)
        await db.insert("active_watchers", dict(watcher(1)))
    actions = await init_schema(url)
    assert "upgraded table active_watchers: version 11 -> 12, added sharing_tag" in actions
    async with await open_database(url) as db:
        await db.ensure_schema()
        assert (await db.query("active_watchers"))[0]["sharing_tag"] is None


def test_generated_sqlite_ddl_matches_opensips_columns(tmp_path: Path) -> None:
    ours = sqlite3.connect(tmp_path / "ours.db")
    theirs = sqlite3.connect(tmp_path / "theirs.db")
    try:
        theirs.executescript(OPENSIPS_SQLITE + AUTH_DB_SQLITE + ACC_SQLITE)
        for table in SCHEMA.values():
            if table.name == "rs_nodes":  # ours, not OpenSIPS's (clustering)
                continue
            for stmt in create_table_sql(table, "sqlite"):
                ours.execute(stmt)
            info = f"PRAGMA table_info({table.name})"
            # name, declared type, not null, default, primary key - the same column for column
            assert [r[1:] for r in ours.execute(info)] == [r[1:] for r in theirs.execute(info)], table.name
    finally:
        ours.close()
        theirs.close()


async def test_waits_for_another_process_holding_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with await open_database(f"sqlite://{path}") as db:
        await db.ensure_schema(["presentity"])
        other = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO presentity (username, domain, event, etag, expires, received_time) "
                      "VALUES ('other', 'x', 'presence', 'o', 1, 1)")
        release = threading.Timer(0.2, lambda: other.execute("COMMIT"))
        release.start()
        try:
            await db.insert("presentity", presentity(1))  # waits (busy_timeout), does not fail
        finally:
            release.join()
            other.close()
        assert await db.count("presentity") == 2


async def test_many_concurrent_transactions_never_see_database_is_locked(tmp_path: Path) -> None:
    async with await open_database(f"sqlite://{tmp_path}/c.db") as db:
        await db.ensure_schema(["presentity"])

        async def publish(n: int) -> None:
            async with db.transaction():
                await db.delete("presentity", {"username": f"user{n}"})
                await db.insert("presentity", presentity(n))

        await asyncio.gather(*(publish(n % 40) for n in range(400)))
        assert await db.count("presentity") == 40
