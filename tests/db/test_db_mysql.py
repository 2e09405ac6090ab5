"""MySQL/MariaDB specifics: URLs, the driver check, an OpenSIPS-created database, the generated DDL against
OpenSIPS's scripts/mysql, lost connections and back-off, SKIP LOCKED claims, the polled change feed, and
concurrent PUBLISHes of one presentity (no deadlock, no duplicate key)."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest

from routescript.db import (DEFAULT_TABLES, Database, DatabaseError, GroupCommitter, Write, init_schema,
                            open_database, parse_url)
from routescript.db.url import check_db_url

from .mysql_util import fresh_mysql_db, mysql_rows, mysql_script
from .opensips_sql import ACC_MYSQL, AUTH_DB_MYSQL
from .opensips_sql import MYSQL as OPENSIPS_MYSQL
from .pg_proxy import TcpProxy
from .test_db_behaviour import presentity, watcher
from .test_db_feed import Inbox, channel, wait_until

ALL_TABLES = [*DEFAULT_TABLES, "location", "subscriber", "acc", "missed_calls"]


def test_mysql_urls_as_opensips_writes_them() -> None:
    t = parse_url("mysql://opensips:s3cr%40t@db.example.com/opensips")
    assert (t.backend, t.host, t.port, t.user, t.password, t.database) == (
        "mysql", "db.example.com", 3306, "opensips", "s3cr@t", "opensips")
    assert t.redacted == "mysql://opensips:***@db.example.com/opensips"
    assert parse_url("mysql://root@127.0.0.1:3307/x").port == 3307
    for bad in ("mysql://", "mysql://h", "mysql://h/", "mysql://h:99999/db", "mysql://h/db?ssl=1"):
        with pytest.raises(DatabaseError) as err:
            parse_url(bad)
        assert err.value.kind == "config"


def test_a_missing_driver_is_a_load_time_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("asyncmy", "asyncpg") else real(name, *a))
    with pytest.raises(ValueError, match=r"pip install 'routescript\[mysql\]'"):
        check_db_url("mysql://root@127.0.0.1/opensips")
    with pytest.raises(ValueError, match=r"pip install 'routescript\[postgres\]'"):
        check_db_url("postgres://u@h/db")
    check_db_url("sqlite:///tmp/x.db")   # the embedded default needs no driver


async def test_a_missing_driver_refuses_open(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "asyncmy" else real(name, *a))
    with pytest.raises(DatabaseError, match=r"routescript\[mysql\]") as err:
        await open_database("mysql://root@127.0.0.1/opensips")
    assert err.value.kind == "config"


async def test_opens_a_database_opensips_created(mysql_url: str) -> None:
    await mysql_script(mysql_url, OPENSIPS_MYSQL + AUTH_DB_MYSQL + ACC_MYSQL)
    await mysql_script(mysql_url, "INSERT INTO presentity (username, domain, event, etag, expires, "
                                  "received_time, body) VALUES ('alice', 'example.com', 'presence', 'a.1', "
                                  "1700000000, 1, '<p>');")
    async with await open_database(mysql_url) as db:
        actions = await db.upgrade_schema([*ALL_TABLES, "pua"])   # pua was not there: only it is created
        assert actions[-1] == "created table pua (version 8)"
        assert all(a.endswith("up to date") for a in actions[:-1]), actions
        await db.ensure_schema(ALL_TABLES)
        assert (await db.query("presentity"))[0]["body"] == b"<p>"
        new_id = await db.insert("presentity", presentity(1))
        assert isinstance(new_id, int) and new_id >= 2
        await db.upsert("presentity", presentity(1, expires=5), ["username", "domain", "event", "etag"])
        assert (await db.query("presentity", {"id": new_id}))[0]["expires"] == 5
        await db.insert("subscriber", {"username": "bob", "domain": "example.com", "ha1": "x" * 32})
        assert (await db.query("subscriber", columns=["email_address", "rpid"])) == [
            {"email_address": "", "rpid": None}]


async def _columns(url: str) -> dict[str, list[tuple[Any, ...]]]:
    db = parse_url(url).database
    cols = await mysql_rows(url, "SELECT table_name, column_name, column_type, is_nullable, column_default, "
                                 "column_key, extra FROM information_schema.columns WHERE table_schema = %s "
                                 "ORDER BY table_name, ordinal_position", [db])
    idx = await mysql_rows(url, "SELECT table_name, index_name, non_unique, column_name, seq_in_index "
                                "FROM information_schema.statistics WHERE table_schema = %s "
                                "ORDER BY table_name, index_name, seq_in_index", [db])
    engines = await mysql_rows(url, "SELECT table_name, engine FROM information_schema.tables "
                                    "WHERE table_schema = %s ORDER BY table_name", [db])
    versions = await mysql_rows(url, "SELECT table_name, table_version FROM version ORDER BY table_name")
    return {"columns": cols, "indexes": idx, "engines": engines, "versions": versions}


async def test_generated_mysql_ddl_matches_opensips(mysql_url: str) -> None:
    await mysql_script(mysql_url, OPENSIPS_MYSQL + AUTH_DB_MYSQL + ACC_MYSQL)
    theirs = await _columns(mysql_url)
    async with fresh_mysql_db() as ours_url:
        await init_schema(ours_url, ALL_TABLES)
        ours = await _columns(ours_url)
    for part in ("columns", "indexes", "engines", "versions"):
        assert ours[part] == theirs[part], part


async def test_unreachable_server_is_a_transient_error() -> None:
    with pytest.raises(DatabaseError) as err:
        await open_database("mysql://root@127.0.0.1:1/test")
    assert err.value.transient


def proxied(url: str, proxy: TcpProxy) -> str:
    t = parse_url(url)
    return url.replace(f"{t.host}:{t.port}", f"127.0.0.1:{proxy.port}", 1)


async def test_lost_connection_fails_fast_then_reconnects_after_backoff(mysql_url: str) -> None:
    t = parse_url(mysql_url)
    proxy = TcpProxy((t.host, t.port))
    await proxy.start()
    now = [1000.0]
    db = await open_database(proxied(mysql_url, proxy), clock=lambda: now[0])
    try:
        await db.ensure_schema(["presentity"])
        await db.insert("presentity", presentity(1))
        await proxy.stop()
        with pytest.raises(DatabaseError) as err:
            await db.insert("presentity", presentity(2))
        assert err.value.transient
        with pytest.raises(DatabaseError, match="next attempt in"):   # fails fast during the back-off
            await db.count("presentity")
        await proxy.start()
        now[0] += 1.0
        assert await db.count("presentity") == 1   # reconnected
        async with db.transaction():
            await db.insert("presentity", presentity(3))
        assert await db.count("presentity") == 2
    finally:
        await db.close()
        await proxy.stop()


async def test_a_lock_wait_inside_a_transaction_is_transient_without_backoff(mysql_url: str) -> None:
    async with await open_database(mysql_url) as a, await open_database(mysql_url) as b:
        await a.ensure_schema(["presentity"])
        await a.insert("presentity", presentity(1))
        async with a.transaction():
            await a.update("presentity", {"username": "user1"}, {"expires": 1})
            async def waiting_update() -> None:
                async with b.transaction():
                    await b._statement("SET SESSION innodb_lock_wait_timeout = 1")
                    await b.update("presentity", {"username": "user1"}, {"expires": 2})
            with pytest.raises(DatabaseError) as err:
                await waiting_update()
        assert err.value.transient
        assert await b.count("presentity") == 1   # no back-off started: the server is fine


async def test_concurrent_claims_skip_locked_rows_instead_of_waiting(mysql_url: str) -> None:
    async with await open_database(mysql_url) as a, await open_database(mysql_url) as b:
        await a.ensure_schema(["active_watchers"])
        await a.insert_many("active_watchers", [watcher(n, sharing_tag="dead") for n in range(6)])
        async with a.transaction():
            first = await a.claim("active_watchers", {"sharing_tag": "dead"}, {"sharing_tag": "a"}, limit=4,
                                  order_by="id")
            second = await asyncio.wait_for(
                b.claim("active_watchers", {"sharing_tag": "dead"}, {"sharing_tag": "b"}), 2)
        assert len(first) == 4 and len(second) == 2
        assert {r["sharing_tag"] for r in first} == {"a"}
        assert not {r["id"] for r in first} & {r["id"] for r in second}
        gone = await a.claim_delete("active_watchers", {"sharing_tag": "b"})
        assert sorted(r["id"] for r in gone) == sorted(r["id"] for r in second)
        assert await a.count("active_watchers") == 4


async def test_racing_claims_split_the_rows(mysql_url: str) -> None:
    dbs = [await open_database(mysql_url) for _ in range(4)]
    try:
        await dbs[0].ensure_schema(["active_watchers"])
        await dbs[0].insert_many("active_watchers", [watcher(n, sharing_tag="dead") for n in range(200)])

        async def drain(db: Database, me: str) -> list[int]:
            got: list[int] = []
            for _ in range(200):
                rows = await db.claim("active_watchers", {"sharing_tag": "dead"}, {"sharing_tag": me},
                                      limit=7)
                if not rows:
                    return got
                got += [r["id"] for r in rows]
            raise AssertionError("never drained")

        results = await asyncio.gather(*(drain(db, f"n{i}") for i, db in enumerate(dbs)))
        claimed = [i for r in results for i in r]
        assert len(claimed) == 200 and len(set(claimed)) == 200
    finally:
        for db in dbs:
            await db.close()


# --- the polled change feed --------------------------------------------------------------------------

async def test_an_announcement_of_a_slow_transaction_is_not_skipped(mysql_url: str) -> None:
    """Ids are taken at INSERT: the slow transaction's id is below one committed after it was taken."""
    async with await open_database(mysql_url) as a, await open_database(mysql_url) as b:
        chan = channel()
        box = Inbox()
        await a.listen(chan, box)
        async with b.transaction():
            await b.notify(chan, "slow")        # takes an id first
            await a.notify(chan, "fast")        # a later id, committed at once
            assert await box.wait_for(1) == ["fast"]
            await asyncio.sleep(0.3)            # polled past it meanwhile
        assert await box.wait_for(2) == ["fast", "slow"]
        assert a.poller.gaps == {}              # type: ignore[attr-defined]


async def test_rolled_back_announcements_are_never_delivered(mysql_url: str) -> None:
    async with await open_database(mysql_url) as db:
        chan = channel()
        box = Inbox()
        await db.listen(chan, box)
        async def rolled_back() -> None:
            async with db.transaction():
                await db.notify(chan, "no")
                raise RuntimeError
        with pytest.raises(RuntimeError):
            await rolled_back()
        await db.notify(chan, "yes")
        assert await box.wait_for(1) == ["yes"]
        await asyncio.sleep(0.3)
        assert [p for _, p in box.items] == ["yes"]


async def test_feed_connection_comes_back_and_calls_on_reconnect(mysql_url: str) -> None:
    t = parse_url(mysql_url)
    proxy = TcpProxy((t.host, t.port))
    await proxy.start()
    db = await open_database(proxied(mysql_url, proxy))
    direct = await open_database(mysql_url)
    try:
        db.poller.first_delay = 0.02                        # type: ignore[attr-defined]
        chan = channel()
        box, resynced = Inbox(), asyncio.Event()
        await db.listen(chan, box, on_reconnect=resynced.set)
        await direct.notify(chan, "before")
        assert await box.wait_for(1) == ["before"]
        await proxy.stop()
        await wait_until(lambda: not db.poller.connected)   # type: ignore[attr-defined]
        await direct.notify(chan, "missed")                 # skipped on return, as on PostgreSQL
        await proxy.start()
        await asyncio.wait_for(resynced.wait(), 5)          # the owner is told to resync instead
        assert db.poller.reconnects == 1                    # type: ignore[attr-defined]
        await direct.notify(chan, "after")
        assert await box.wait_for(2, timeout=3) == ["before", "after"]
    finally:
        await db.close()
        await direct.close()
        await proxy.stop()


async def test_listen_on_an_unreachable_server_fails_and_registers_nothing(mysql_url: str) -> None:
    t = parse_url(mysql_url)
    proxy = TcpProxy((t.host, t.port))
    await proxy.start()
    db = await open_database(proxied(mysql_url, proxy))
    try:
        await proxy.stop()
        with pytest.raises(DatabaseError) as err:
            await db.listen(channel(), Inbox())
        assert err.value.transient
        assert db.listeners.channels == []
    finally:
        await db.close()


# --- OpenSIPS's MySQL pain: concurrent PUBLISHes of one presentity ------------------------------------

async def test_concurrent_publishes_of_one_presentity_never_deadlock_nor_duplicate(mysql_url: str) -> None:
    """Many devices of one user refreshing, replacing and removing their states at once, on several
    databases (nodes), with the writes a PUBLISH makes (modules/presence/storage.py: insert, update and
    delete through the group commit, i.e. write_batch; upserts alone): every write succeeds, and no
    deadlock (1213) nor duplicate key (1062) ever reaches a caller. InnoDB may still pick a group commit
    as a deadlock victim: it is run again (counted in deadlock_retries)."""
    nodes = [await open_database(mysql_url) for _ in range(4)]
    committers = [GroupCommitter(db) for db in nodes]
    try:
        await nodes[0].ensure_schema(["presentity"])
        keys = ("username", "domain", "event", "etag")

        def key(etag: str) -> dict[str, object]:
            return {"username": "alice", "domain": "example.com", "event": "presence", "etag": etag}

        async def device(n: int) -> None:
            db, committer = nodes[n % 4], committers[n % 4]
            etag = f"d{n}.0"
            await committer.write([Write("insert", "presentity", presentity(0, username="alice", etag=etag))])
            for i in range(1, 15):   # refreshes: a new etag each time (RFC 3903), then a modify
                new = f"d{n}.{i}"
                await committer.write([Write("update", "presentity", {"etag": new, "expires": 100 + i},
                                             where=key(etag))])
                etag = new
                await db.upsert("presentity", {**key(etag), "expires": 300, "received_time": 1,
                                               "body": b"<presence/>"}, keys)
                await committer.write([Write("delete", "presentity", where=key(etag)),
                                       Write("insert", "presentity",
                                             presentity(0, username="alice", etag=etag + "x"))])
                await committer.write([Write("update", "presentity", {"etag": etag}, where=key(etag + "x"))])

        await asyncio.gather(*(device(i) for i in range(12)))
        assert await nodes[0].count("presentity", {"username": "alice"}) == 12
        retried = sum(db.deadlock_retries for db in nodes)   # type: ignore[attr-defined]
        print(f"deadlocks retried: {retried}")
    finally:
        for db in nodes:
            await db.close()


async def test_db_init_cli_creates_the_tables(mysql_url: str) -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "routescript", "db", "init", mysql_url]
    done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=60,
                                   check=False)
    assert done.returncode == 0, done.stderr
    assert "created table presentity (version 5)" in done.stdout + done.stderr
    rows = await mysql_rows(mysql_url, "SELECT table_name, table_version FROM version ORDER BY table_name")
    assert ("presentity", 5) in rows and ("active_watchers", 12) in rows
