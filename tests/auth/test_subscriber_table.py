"""Our subscriber table is OpenSIPS 3.4's (scripts/<db>/auth_db-create.sql): created side by side with
theirs and compared column by column (and by index), on SQLite and PostgreSQL; a table OpenSIPS created
is read and written as it is; `routescript db subscriber` writes what opensips-cli would."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from db.conftest import PG_URL, fresh_pg_schema, raw_rows, raw_sql, with_search_path
from db.opensips_sql import AUTH_DB_POSTGRES, AUTH_DB_SQLITE
from rs_e2e import routescript

from routescript.db import open_database
from routescript.db.schema import SUBSCRIBER, create_table_sql

VERSION_SQLITE = ("CREATE TABLE version (table_name CHAR(32) NOT NULL, "
                  "table_version INTEGER DEFAULT 0 NOT NULL);")


def test_sqlite_table_matches_opensips(tmp_path: Path) -> None:
    ours, theirs = sqlite3.connect(tmp_path / "ours.db"), sqlite3.connect(tmp_path / "theirs.db")
    try:
        theirs.executescript(VERSION_SQLITE + AUTH_DB_SQLITE)
        for stmt in create_table_sql(SUBSCRIBER, "sqlite"):
            ours.execute(stmt)
        for pragma in ("table_info(subscriber)", "index_list(subscriber)"):
            assert [r[1:] for r in ours.execute(f"PRAGMA {pragma}")] == [
                r[1:] for r in theirs.execute(f"PRAGMA {pragma}")], pragma
        assert list(theirs.execute("SELECT table_version FROM version")) == [(SUBSCRIBER.version,)]
    finally:
        ours.close()
        theirs.close()


async def test_postgres_table_matches_opensips() -> None:
    async with fresh_pg_schema() as mine, fresh_pg_schema() as other:
        ours, theirs = with_search_path(PG_URL, mine), with_search_path(PG_URL, other)
        await raw_sql(theirs, "CREATE TABLE version (table_name VARCHAR(32) NOT NULL, "
                              "table_version INTEGER DEFAULT 0 NOT NULL);" + AUTH_DB_POSTGRES)
        async with await open_database(ours) as db:
            await db.ensure_schema(["subscriber"])
        query = ("SELECT column_name, data_type, character_maximum_length, is_nullable, column_default "
                 "FROM information_schema.columns WHERE table_schema = current_schema() "
                 "AND table_name = 'subscriber' ORDER BY ordinal_position")
        assert await raw_rows(ours, query) == await raw_rows(theirs, query)
        idx = ("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
               "AND tablename = 'subscriber' ORDER BY 1")
        assert await raw_rows(ours, idx) == await raw_rows(theirs, idx)


async def test_cli_writes_an_opensips_created_table(tmp_path: Path) -> None:
    path = tmp_path / "opensips.db"
    conn = sqlite3.connect(path)
    conn.executescript(VERSION_SQLITE + AUTH_DB_SQLITE)
    conn.close()
    url = f"sqlite://{path}"
    done = routescript("db", "subscriber", "add", url, "1000@sip.example.org", "123456")
    assert done.returncode == 0, done.stderr
    assert "added 1000@sip.example.org" in done.stdout
    row = (await raw_rows(url, "SELECT username, domain, password, ha1, ha1_sha256, ha1_sha512t256 "
                               "FROM subscriber"))[0]
    text = b"1000:sip.example.org:123456"
    assert row == ("1000", "sip.example.org", "", hashlib.md5(text).hexdigest(),
                   hashlib.sha256(text).hexdigest(), hashlib.new("sha512_256", text).hexdigest())
    again = routescript("db", "subscriber", "add", url, "1000@sip.example.org", "x")
    assert again.returncode == 1 and "exists already" in again.stderr
    bad = routescript("db", "subscriber", "add", url, "no-domain", "x")
    assert bad.returncode == 1 and "USER@DOMAIN" in bad.stderr
    pw = routescript("db", "subscriber", "passwd", url, "1000@sip.example.org", "654321", "--plain-text")
    assert pw.returncode == 0, pw.stderr
    assert (await raw_rows(url, "SELECT password, ha1 FROM subscriber"))[0] == (
        "654321", hashlib.md5(b"1000:sip.example.org:654321").hexdigest())
    rm = routescript("db", "subscriber", "rm", url, "1000@sip.example.org")
    assert rm.returncode == 0 and await raw_rows(url, "SELECT * FROM subscriber") == []
    assert routescript("db", "subscriber", "rm", url, "1000@sip.example.org").returncode == 1
