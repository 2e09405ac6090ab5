"""One behaviour suite for both backends (parametrised in conftest: sqlite, postgres)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from routescript.db import Database, DatabaseError, SchemaError, init_schema, open_database

from .conftest import raw_rows, raw_sql

PRESENTITY_KEYS = ["username", "domain", "event", "etag"]


def presentity(n: int, **over: object) -> dict[str, object]:
    row: dict[str, object] = {"username": f"user{n}", "domain": "example.com", "event": "presence",
                              "etag": f"etag{n}", "expires": 1700000000 + n, "received_time": 1699990000,
                              "body": b"<presence/>", "sender": None}
    row.update(over)
    return row


def watcher(n: int, **over: object) -> dict[str, object]:
    row: dict[str, object] = {"presentity_uri": "sip:alice@example.com", "watcher_username": f"w{n}",
                              "watcher_domain": "example.com", "to_user": "alice", "to_domain": "example.com",
                              "event": "presence", "to_tag": f"tt{n}", "from_tag": f"ft{n}",
                              "callid": f"call-{n}", "local_cseq": 1, "remote_cseq": 1,
                              "contact": f"sip:w{n}@10.0.0.1", "expires": 1700003600,
                              "socket_info": "udp:127.0.0.1:5060", "local_contact": "sip:127.0.0.1:5060"}
    row.update(over)
    return row


async def test_ensure_schema_creates_tables_and_version_rows_idempotently(db: Database) -> None:
    await db.ensure_schema()
    await db.insert("presentity", presentity(1))
    await db.ensure_schema()  # second start: nothing recreated, data kept
    versions = {r["table_name"]: r["table_version"] for r in await db.query("version")}
    assert versions == {"presentity": 5, "active_watchers": 12, "watchers": 4, "xcap": 4}
    assert await db.count("version") == 4
    await db.ensure_schema(["pua"])  # asked for by name
    assert (await db.query("version", {"table_name": "pua"}))[0]["table_version"] == 8
    assert await db.count("presentity") == 1
    assert await db.upgrade_schema(["presentity"]) == ["table presentity: version 5, up to date"]


async def test_ensure_schema_for_some_tables_only(db: Database) -> None:
    await db.ensure_schema(["presentity", "watchers"])
    assert sorted(r["table_name"] for r in await db.query("version")) == ["presentity", "watchers"]
    with pytest.raises(DatabaseError) as err:
        await db.ensure_schema(["nosuch"])
    assert not err.value.transient


async def test_incompatible_version_is_refused_with_the_command_to_run(db: Database, db_url: str) -> None:
    await db.ensure_schema()
    await db.insert("active_watchers", watcher(1))
    assert await db.update("version", {"table_name": "active_watchers"}, {"table_version": 11}) == 1
    with pytest.raises(SchemaError) as err:
        await db.ensure_schema()
    text = str(err.value)
    assert "active_watchers" in text and "version 11" in text and "needs version 12" in text
    assert f"routescript db init {db.url}" in text
    assert err.value.kind == "schema" and not err.value.transient
    # nothing was changed by the refusal; init upgrades in place and keeps the rows
    assert (await db.query("version", {"table_name": "active_watchers"}))[0]["table_version"] == 11
    actions = await init_schema(db_url)
    assert "upgraded table active_watchers: version 11 -> 12" in actions
    await db.ensure_schema()
    assert await db.count("active_watchers") == 1


async def test_newer_version_is_refused_even_by_init(db: Database, db_url: str) -> None:
    await db.ensure_schema(["presentity"])
    await db.update("version", {"table_name": "presentity"}, {"table_version": 99})
    with pytest.raises(SchemaError, match="newer"):
        await init_schema(db_url, ["presentity"])
    assert (await db.query("version", {"table_name": "presentity"}))[0]["table_version"] == 99


async def test_upgrade_adds_missing_column_and_keeps_rows(db_url: str) -> None:
    # an OpenSIPS 3.1-era active_watchers: version 11, no sharing_tag column
    async with await open_database(db_url) as db:
        await db.ensure_schema(["watchers"])  # creates the version table
    char = "CHAR" if db_url.startswith("sqlite") else "VARCHAR"
    await raw_sql(db_url, f"""
        CREATE TABLE active_watchers (id INTEGER PRIMARY KEY NOT NULL, presentity_uri {char}(255) NOT NULL,
          watcher_username {char}(64) NOT NULL, watcher_domain {char}(64) NOT NULL,
          to_user {char}(64) NOT NULL,
          to_domain {char}(64) NOT NULL, event {char}(64) DEFAULT 'presence' NOT NULL, event_id {char}(64),
          to_tag {char}(64) NOT NULL, from_tag {char}(64) NOT NULL, callid {char}(64) NOT NULL,
          local_cseq INTEGER NOT NULL, remote_cseq INTEGER NOT NULL, contact {char}(255) NOT NULL,
          record_route TEXT, expires INTEGER NOT NULL, status INTEGER DEFAULT 2 NOT NULL, reason {char}(64),
          version INTEGER DEFAULT 0 NOT NULL, socket_info {char}(64) NOT NULL,
          local_contact {char}(255) NOT NULL);
        INSERT INTO version (table_name, table_version) VALUES ('active_watchers', 11);
        INSERT INTO active_watchers (id, presentity_uri, watcher_username, watcher_domain, to_user, to_domain,
          to_tag, from_tag, callid, local_cseq, remote_cseq, contact, expires, socket_info, local_contact)
          VALUES (7, 'sip:a@x', 'b', 'x', 'a', 'x', 't', 'f', 'c', 1, 2, 'sip:b@y', 100, 'udp:1.2.3.4:5060',
                  'sip:1.2.3.4');
    """)  # noqa: S608 - test DDL; only a column type name is substituted
    async with await open_database(db_url) as db:
        with pytest.raises(SchemaError, match="missing columns: sharing_tag"):
            await db.ensure_schema(["active_watchers"])
    assert await init_schema(db_url, ["active_watchers"]) == [
        "upgraded table active_watchers: version 11 -> 12, added sharing_tag"]
    async with await open_database(db_url) as db:
        await db.ensure_schema(["active_watchers"])
        rows = await db.query("active_watchers")
        assert len(rows) == 1 and rows[0]["id"] == 7 and rows[0]["sharing_tag"] is None
        assert rows[0]["status"] == 2 and rows[0]["remote_cseq"] == 2


async def test_crud_with_operators(db: Database) -> None:
    await db.ensure_schema(["presentity"])
    ids = [await db.insert("presentity", presentity(n)) for n in range(5)]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == 5
    expired = await db.query("presentity", {"expires": ("<", 1700000002)}, columns=["username"],
                             order_by="username")
    assert [r["username"] for r in expired] == ["user0", "user1"]
    assert await db.count("presentity", {"expires": (">=", 1700000002), "domain": "example.com"}) == 3
    picked = await db.query("presentity", {"username": ("in", ["user1", "user3", "nobody"])},
                            order_by="-expires", columns=["username", "expires"])
    assert picked == [{"username": "user3", "expires": 1700000003},
                      {"username": "user1", "expires": 1700000001}]
    assert await db.query("presentity", {"username": ("in", [])}) == []
    assert await db.count("presentity", {"username": ("not in", ["user0"])}) == 4
    assert await db.count("presentity", {"sender": None}) == 5
    assert await db.count("presentity", {"sender": ("!=", None)}) == 0
    assert await db.count("presentity", {"etag": ("<>", "etag0")}) == 4
    top = await db.query("presentity", order_by=["-expires"], limit=2, columns=["username"])
    assert [r["username"] for r in top] == ["user4", "user3"]
    full = (await db.query("presentity", {"username": "user0"}))[0]
    assert full["id"] == ids[0] and full["body"] == b"<presence/>" and full["extra_hdrs"] is None
    assert set(full) == set(db.table("presentity").column_names)

    changed = await db.update("presentity", {"expires": ("<=", 1700000001)},
                              {"expires": 5, "sender": "sip:x@y"})
    assert changed == 2
    assert await db.count("presentity", {"expires": 5, "sender": "sip:x@y"}) == 2
    assert await db.update("presentity", {"username": "nobody"}, {"expires": 1}) == 0
    assert await db.delete("presentity", {"expires": ("<", 10)}) == 2
    assert await db.count("presentity") == 3
    assert await db.delete("presentity", {}) == 3
    assert await db.count("presentity") == 0


async def test_insert_many_is_atomic(db: Database) -> None:
    await db.ensure_schema(["presentity"])
    assert await db.insert_many("presentity", [presentity(n) for n in range(50)]) == 50
    assert await db.insert_many("presentity", []) == 0
    with pytest.raises(DatabaseError) as err:  # the third row repeats a unique key: nothing is inserted
        await db.insert_many("presentity", [presentity(100), presentity(101), presentity(1)])
    assert err.value.kind == "constraint"
    assert await db.count("presentity") == 50
    with pytest.raises(DatabaseError):
        await db.insert_many("presentity", [presentity(200), {"username": "x"}])


async def test_transaction_commits_together_and_rolls_back_on_exception(db: Database) -> None:
    await db.ensure_schema(["presentity"])
    async with db.transaction():
        await db.insert("presentity", presentity(1))
        await db.insert("presentity", presentity(2))
        assert await db.count("presentity") == 2  # reads inside see the transaction's writes
    assert await db.count("presentity") == 2

    with pytest.raises(RuntimeError):  # noqa: PT012 - the transaction that raises is what is tested
        async with db.transaction():
            await db.insert("presentity", presentity(3))
            await db.delete("presentity", {"username": "user1"})
            raise RuntimeError("handler failed")
    assert sorted(r["username"] for r in await db.query("presentity")) == ["user1", "user2"]

    # a nested block is a savepoint: its failure undoes only its own writes
    async with db.transaction():
        await db.insert("presentity", presentity(4))
        with pytest.raises(ValueError):  # noqa: PT012 - the transaction that raises is what is tested
            async with db.transaction():
                await db.insert("presentity", presentity(5))
                raise ValueError
        await db.insert("presentity", presentity(6))
    assert sorted(r["username"] for r in await db.query("presentity")) == ["user1", "user2", "user4", "user6"]


async def test_other_tasks_do_not_join_a_transaction(db: Database) -> None:
    await db.ensure_schema(["presentity"])
    outside: asyncio.Task[int | None] | None = None
    with pytest.raises(RuntimeError):  # noqa: PT012 - the transaction that raises is what is tested
        async with db.transaction():
            await db.insert("presentity", presentity(1))
            # a task from another context (e.g. a timer) writes on its own, not inside this transaction
            outside = asyncio.create_task(db.insert("presentity", presentity(2)),
                                          context=contextvars.Context())
            await asyncio.sleep(0)
            raise RuntimeError
    assert outside is not None
    await outside
    assert [r["username"] for r in await db.query("presentity")] == ["user2"]


async def test_tasks_started_inside_a_transaction_join_it(db: Database) -> None:
    await db.ensure_schema(["presentity"])
    with pytest.raises(RuntimeError):  # noqa: PT012 - the transaction that raises is what is tested
        async with db.transaction():
            await asyncio.gather(*(db.insert("presentity", presentity(n)) for n in range(10)))
            assert await db.count("presentity") == 10
            raise RuntimeError
    assert await db.count("presentity") == 0


async def test_a_task_outliving_its_transaction_runs_on_its_own(db: Database) -> None:
    await db.ensure_schema(["presentity"])
    go = asyncio.Event()

    async def later() -> None:
        await go.wait()
        await db.insert("presentity", presentity(2))

    with pytest.raises(RuntimeError):  # noqa: PT012 - the transaction that raises is what is tested
        async with db.transaction():
            await db.insert("presentity", presentity(1))
            task = asyncio.create_task(later())  # inherits the transaction's context
            raise RuntimeError
    go.set()
    await task
    async with db.transaction():  # and it did not disturb later transactions
        await db.insert("presentity", presentity(3))
    assert sorted(r["username"] for r in await db.query("presentity")) == ["user2", "user3"]


async def test_upsert_replaces_by_unique_key(db: Database) -> None:
    await db.ensure_schema(["presentity", "watchers"])
    await db.upsert("presentity", presentity(1, expires=100), PRESENTITY_KEYS)
    await db.upsert("presentity", presentity(1, expires=200, body=b"new"), PRESENTITY_KEYS)
    rows = await db.query("presentity")
    assert len(rows) == 1 and rows[0]["expires"] == 200 and rows[0]["body"] == b"new"
    # only the columns given are replaced (the row must still be complete enough to insert)
    await db.upsert("presentity", {**presentity(1, expires=300), "body": b"new"}, PRESENTITY_KEYS)
    await db.upsert("presentity", {k: v for k, v in presentity(1, expires=400).items() if k != "body"},
                    PRESENTITY_KEYS)
    rows = await db.query("presentity")
    assert [(r["expires"], r["body"]) for r in rows] == [(400, b"new")]
    wrow = {"presentity_uri": "sip:a@x", "watcher_username": "b", "watcher_domain": "x", "event": "presence",
            "status": 1, "inserted_time": 10}
    await db.upsert("watchers", wrow, ["presentity_uri", "watcher_username", "watcher_domain", "event"])
    await db.upsert("watchers", {**wrow, "status": 3, "reason": "rejected"},
                    ["watcher_domain", "watcher_username", "presentity_uri", "event"])  # any key order
    assert [(r["status"], r["reason"]) for r in await db.query("watchers")] == [(3, "rejected")]
    with pytest.raises(DatabaseError, match="not a unique key"):
        await db.upsert("presentity", presentity(2), ["username"])
    with pytest.raises(DatabaseError, match="must contain its keys"):
        await db.upsert("presentity", {"username": "u", "domain": "d"}, PRESENTITY_KEYS)


async def test_bodies_are_binary_and_unicode_safe(db: Database, db_url: str) -> None:
    await db.ensure_schema(["presentity", "xcap"])
    every_byte = bytes(range(256)) * 4
    await db.insert("presentity", presentity(1, body=every_byte, extra_hdrs=b"X-A: 1\r\n"))
    text = "<note xml:lang='de'>Grüße 👋 ☎ \u2028</note>"
    await db.insert("presentity", presentity(2, username="jürgen", body=text, sender="sip:ça@exämple.com"))
    one = (await db.query("presentity", {"username": "user1"}))[0]
    assert one["body"] == every_byte and one["extra_hdrs"] == b"X-A: 1\r\n"
    two = (await db.query("presentity", {"username": "jürgen"}))[0]
    assert two["body"] == text.encode("utf-8") and two["sender"] == "sip:ça@exämple.com"
    # a value that looks like SQL is stored as it is
    evil = "x'); DROP TABLE presentity; --"
    await db.insert("presentity", presentity(3, etag=evil))
    assert await db.count("presentity", {"etag": evil}) == 1
    assert (await raw_rows(db_url, "SELECT COUNT(*) FROM presentity"))[0][0] == 3
    await db.insert("xcap", {"username": "a", "domain": "x", "doc": "<ruleset/>", "doc_type": 2, "etag": "e",
                             "source": 1, "doc_uri": "/pres-rules", "port": 0})
    assert (await db.query("xcap", columns=["doc"]))[0]["doc"] == b"<ruleset/>"


async def test_names_are_checked_against_the_schema(db: Database) -> None:
    await db.ensure_schema(["presentity"])
    bad_calls = [
        db.query("presentity; DROP TABLE presentity"),
        db.query("presentity", {"username = 'a' OR 1=1 --": "x"}),
        db.query("presentity", columns=["*"]),
        db.query("presentity", order_by="expires; DROP TABLE presentity"),
        db.query("presentity", {"expires": ("; DROP", 1)}),
        db.query("presentity", {"expires": (">", None)}),
        db.query("presentity", limit=-1),
        db.insert("presentity", {"nosuch": 1}),
        db.insert("presentity", presentity(1, expires="soon")),
        db.insert("presentity", {}),
        db.update("presentity", None, {"expires": 1}),  # type: ignore[arg-type]
        db.count("watchers_x"),
    ]
    for call in bad_calls:
        with pytest.raises(DatabaseError) as err:
            await call
        assert err.value.kind == "query" and not err.value.transient
    assert await db.count("presentity") == 0


async def test_constraint_errors_are_not_transient(db: Database) -> None:
    await db.ensure_schema(["presentity"])
    await db.insert("presentity", presentity(1))
    with pytest.raises(DatabaseError) as dup:
        await db.insert("presentity", presentity(1))
    assert dup.value.kind == "constraint" and not dup.value.transient
    with pytest.raises(DatabaseError) as null:
        await db.insert("presentity", presentity(2, etag=None))
    assert null.value.kind == "constraint"


async def test_many_concurrent_writers_through_one_database(db: Database) -> None:
    await db.ensure_schema(["presentity", "active_watchers"])

    async def batch(k: int) -> None:
        async with db.transaction():
            for n in range(5):
                await db.insert("active_watchers", watcher(1000 + k * 5 + n))

    results = await asyncio.gather(*(db.insert("presentity", presentity(n)) for n in range(200)),
                                   *(batch(k) for k in range(10)),
                                   *(db.count("presentity") for _ in range(20)))
    assert len(set(results[:200])) == 200
    assert await db.count("presentity") == 200
    assert await db.count("active_watchers") == 50


async def test_renamed_tables(db_url: str) -> None:
    async with await open_database(db_url, table_names={"presentity": "my_presentity"}) as db:
        await db.ensure_schema(["presentity"])
        await db.insert("presentity", presentity(1))
        assert await db.count("version", {"table_name": "my_presentity"}) == 1
    assert (await raw_rows(db_url, "SELECT username FROM my_presentity")) == [("user1",)]
    for bad in ({"presentity": "x; DROP TABLE version"}, {"nosuch": "t"}):
        with pytest.raises(DatabaseError) as err:
            await open_database(db_url, table_names=bad)
        assert err.value.kind == "config"


async def test_closed_database_refuses_calls(db_url: str) -> None:
    db = await open_database(db_url)
    await db.close()
    await db.close()
    with pytest.raises(DatabaseError) as err:
        await db.count("presentity")
    assert "closed" in str(err.value)


async def test_queries_are_planned_per_shape_and_bind_like_the_built_ones(db: Database) -> None:
    """query() keeps the SQL of a plain shape (table, equality columns, columns, order, limit) and only
    binds its values: the same rows as built SQL; a NULL or operator condition of a planned shape is
    built (IS NULL, IN), a wrong type refused, a bool bound as an int."""
    await db.ensure_schema(["presentity"])
    for n in range(4):
        await db.insert("presentity", presentity(n, sender="sip:s@x" if n == 2 else None))
    got = [await db.query("presentity", {"username": f"user{n}", "event": "presence"}, columns=["etag"])
           for n in range(4)]
    assert got == [[{"etag": f"etag{n}"}] for n in range(4)] and len(db._read_plans) == 1
    assert await db.query("presentity", {"username": "nobody", "event": "presence"}, columns=["etag"]) == []
    assert [r["username"] for r in await db.query("presentity", {"sender": "sip:s@x"})] == ["user2"]
    by_sender = [r["username"] for r in await db.query("presentity", {"sender": None}, order_by="username")]
    assert by_sender == ["user0", "user1", "user3"]          # the shape planned above, NULL built
    both = await db.query("presentity", {"username": ("in", ["user0", "user3"]), "event": "presence"},
                          columns=["etag"])
    assert sorted(r["etag"] for r in both) == ["etag0", "etag3"]
    with pytest.raises(DatabaseError, match=r"presentity\.username expects str, got int"):
        await db.query("presentity", {"username": 5, "event": "presence"}, columns=["etag"])
    await db.insert("presentity", presentity(9, expires=1))
    assert [r["username"] for r in await db.query("presentity", {"expires": True})] == ["user9"]
    planned = len(db._read_plans)
    await db.query("presentity", {"expires": True})
    assert len(db._read_plans) == planned
