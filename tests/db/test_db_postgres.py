"""PostgreSQL specifics: an OpenSIPS-created schema, the generated DDL, lost connections and back-off."""

from __future__ import annotations

import socket

import asyncpg
import pytest

from routescript.db import DEFAULT_TABLES, DatabaseError, open_database
from routescript.db.postgres import Backoff

from .conftest import PG_URL, fresh_pg_schema, raw_rows, raw_sql, with_search_path
from .opensips_sql import ACC_POSTGRES
from .opensips_sql import POSTGRES as OPENSIPS_POSTGRES
from .pg_proxy import TcpProxy, pg_host_port, proxied
from .test_db_behaviour import presentity


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_a_cap_and_resets() -> None:
    clock = FakeClock()
    b = Backoff(clock, first=0.5, cap=4.0)
    b.check("u")  # nothing failed yet
    delays = []
    for _ in range(6):
        b.failed()
        delays.append(b.delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    with pytest.raises(DatabaseError) as err:
        b.check("u")
    assert err.value.transient and "next attempt in 4.0 s" in str(err.value)
    clock.now += 4.0
    b.check("u")
    b.succeeded()
    b.failed()
    assert b.delay == 0.5


async def test_opens_a_schema_opensips_created(pg_url: str) -> None:
    await raw_sql(pg_url, OPENSIPS_POSTGRES)
    await raw_sql(pg_url, "INSERT INTO presentity (username, domain, event, etag, expires, received_time, "
                          "body) VALUES ('alice', 'example.com', 'presence', 'a.1', 1700000000, 1, "
                          "'\\x3c703e')")
    async with await open_database(pg_url) as db:
        actions = await db.upgrade_schema([*DEFAULT_TABLES, "pua"])  # pua was not there: only it is created
        assert actions[-1] == "created table pua (version 8)"
        assert all(a.endswith("up to date") for a in actions[:-1])
        await db.ensure_schema()
        assert (await db.query("presentity"))[0]["body"] == b"<p>"
        new_id = await db.insert("presentity", presentity(1))
        assert isinstance(new_id, int) and new_id >= 2


async def test_generated_postgres_ddl_matches_opensips(pg_url: str) -> None:
    async with fresh_pg_schema() as theirs_schema:
        theirs = with_search_path(PG_URL, theirs_schema)
        await raw_sql(theirs, OPENSIPS_POSTGRES + ACC_POSTGRES)
        async with await open_database(pg_url) as db:
            await db.ensure_schema()  # the default tables: all but pua
            await db.ensure_schema(["location"])   # usrloc's, created on its first use
            await db.ensure_schema(["dialog"])     # dialog's (db_mode 1-3), likewise
            await db.ensure_schema(["acc", "missed_calls"])   # acc's, when it has a db_url
        query = ("SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, "
                 "column_default FROM information_schema.columns WHERE table_schema = current_schema() "
                 "AND table_name <> 'pua' ORDER BY table_name, ordinal_position")
        assert await raw_rows(pg_url, query) == await raw_rows(theirs, query)
        seq = ("SELECT sequencename, max_value, cycle FROM pg_sequences WHERE schemaname = current_schema() "
               "ORDER BY 1")
        ours_seq = [r for r in await raw_rows(pg_url, seq) if not r[0].startswith("pua")]
        assert ours_seq == await raw_rows(theirs, seq)
        assert all(r[1] == 2147483647 and r[2] for r in ours_seq)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_unreachable_server_is_a_transient_error() -> None:
    with pytest.raises(DatabaseError) as err:
        await open_database(f"postgres://postgres@127.0.0.1:{_closed_port()}/test")
    assert err.value.transient and "***" not in str(err.value)


async def test_lost_connection_fails_fast_then_reconnects_after_backoff(pg_url: str) -> None:
    proxy = TcpProxy(pg_host_port())
    await proxy.start()
    clock = FakeClock()
    schema_url = proxied(pg_url, proxy)
    db = await open_database(schema_url, clock=clock)
    try:
        await db.ensure_schema(["presentity"])
        await db.insert("presentity", presentity(1))

        # the server drops our connections but is back at once: a read is retried on a fresh connection
        await proxy.drop_connections()
        assert await db.count("presentity") == 1

        # the server is gone: the call fails as "retry later", and so does every call until the back-off ends
        await proxy.stop()
        with pytest.raises(DatabaseError) as lost:
            await db.insert("presentity", presentity(2))
        assert lost.value.transient
        await proxy.start()  # same port again
        with pytest.raises(DatabaseError) as early:
            await db.count("presentity")
        assert early.value.transient and "next attempt" in str(early.value)
        with pytest.raises(DatabaseError, match="next attempt"):
            async with db.transaction():
                pass

        clock.now += 1.0  # past the first back-off delay: reconnects
        await db.insert("presentity", presentity(3))
        assert sorted(r["username"] for r in await db.query("presentity")) == ["user1", "user3"]
    finally:
        await db.close()
        await proxy.stop()


async def test_terminated_backend_inside_a_transaction_is_transient(pg_url: str) -> None:
    async with await open_database(pg_url) as db:
        await db.ensure_schema(["presentity"])
        admin = await asyncpg.connect(PG_URL)
        try:
            with pytest.raises(DatabaseError) as err:  # noqa: PT012 - the raising transaction is tested
                async with db.transaction():
                    await db.insert("presentity", presentity(1))
                    pid = (await raw_pid(db))
                    await admin.execute("SELECT pg_terminate_backend($1)", pid)
                    await db.insert("presentity", presentity(2))
            assert err.value.transient
        finally:
            await admin.close()
        assert db.backoff.retry_at is not None  # type: ignore[attr-defined]


async def raw_pid(db: object) -> int:
    """The server process id of the connection the current transaction runs on."""
    tx = db.current_transaction()  # type: ignore[attr-defined]
    return int(tx.conn.get_server_pid())
