"""The change feed (listen/notify) and row claiming, on both backends (parametrised in conftest), and the
PostgreSQL specifics: the LISTEN connection coming back after a cut, claims racing on locked rows."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import asyncpg
import pytest

from routescript.db import MAX_PAYLOAD, Database, DatabaseError, open_database, parse_url

from .pg_proxy import TcpProxy, pg_host_port, proxied
from .test_db_behaviour import presentity, watcher


def channel() -> str:
    # PostgreSQL channels are per database, not per schema: every test uses its own.
    return "rs_test_" + uuid.uuid4().hex[:12]


class Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.arrived = asyncio.Event()

    def __call__(self, chan: str, payload: str) -> None:
        self.items.append((chan, payload))
        self.arrived.set()

    async def wait_for(self, n: int, timeout: float = 2.0) -> list[str]:
        async def enough() -> None:
            while len(self.items) < n:
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(enough(), timeout)
        return [p for _, p in self.items]


async def settle(db: Database) -> None:
    """Let announcements already sent arrive: a round trip through the feed itself."""
    marker = channel()
    box = Inbox()
    await db.listen(marker, box)
    await db.notify(marker, "m")
    await box.wait_for(1)
    await db.unlisten(marker)


async def test_announcements_reach_every_listener_of_the_database(db: Database, db_url: str) -> None:
    chan = channel()
    mine, theirs = Inbox(), Inbox()
    async with await open_database(db_url) as other:   # another Database on the same data
        await db.listen(chan, mine)
        await other.listen(chan, theirs)
        await db.notify(chan, "sip:alice@example.com presence")
        await other.notify(chan, "sip:bob@example.com dialog ünïcode")
        expected = ["sip:alice@example.com presence", "sip:bob@example.com dialog ünïcode"]
        assert await mine.wait_for(2) == expected      # the sender's own listener included, in order
        assert await theirs.wait_for(2) == expected
        assert {c for c, _ in mine.items} == {chan}


async def test_announcement_inside_a_transaction_is_sent_at_commit_only(db: Database) -> None:
    await db.ensure_schema(["presentity"])
    chan = channel()
    box = Inbox()
    await db.listen(chan, box)
    async with db.transaction():
        await db.insert("presentity", presentity(1))
        await db.notify(chan, "committed")
        await asyncio.sleep(0.05)
        assert box.items == []                          # not before the commit
    with pytest.raises(RuntimeError):  # noqa: PT012 - the transaction that raises is what is tested
        async with db.transaction():
            await db.notify(chan, "rolled back")
            raise RuntimeError("abort")
    async with db.transaction():
        with pytest.raises(RuntimeError):  # noqa: PT012 - the transaction that raises is what is tested
            async with db.transaction():                # a savepoint
                await db.notify(chan, "savepoint rolled back")
                raise RuntimeError("abort inner")
        await db.notify(chan, "outer committed")
    await db.notify(chan, "last")
    assert await box.wait_for(3) == ["committed", "outer committed", "last"]
    await settle(db)
    assert len(box.items) == 3


async def test_notify_now_sends_in_the_call_where_the_feed_needs_no_io(db: Database) -> None:
    """SQLite: announced in the call, outside a transaction only (inside, the commit sends it);
    PostgreSQL: never (its NOTIFY is a round trip), the caller awaits notify() instead."""
    chan = channel()
    box = Inbox()
    await db.listen(chan, box)
    sqlite = db.dialect == "sqlite"
    async with db.transaction():
        assert not db.notify_now(chan, "inside")
    assert db.notify_now(chan, "now") is sqlite
    if sqlite:
        with pytest.raises(DatabaseError):
            db.notify_now("Bad Channel", "x")      # checked as notify() checks it
        assert await box.wait_for(1) == ["now"]
    await settle(db)
    assert [p for _, p in box.items] == (["now"] if sqlite else [])


async def test_unlisten_stops_delivery_and_callbacks_may_be_async_or_fail(db: Database) -> None:
    chan = channel()
    box, seen = Inbox(), asyncio.Event()

    def broken(_c: str, _p: str) -> None:
        raise ValueError("a bug in one listener")

    async def slow(_c: str, p: str) -> None:
        await asyncio.sleep(0)
        if p == "one":
            seen.set()

    await db.listen(chan, broken)
    await db.listen(chan, slow)
    await db.listen(chan, box)
    await db.notify(chan, "one")
    assert await box.wait_for(1) == ["one"]             # the broken callback stopped nothing
    await asyncio.wait_for(seen.wait(), 2)
    await db.unlisten(chan, box)
    await db.notify(chan, "two")
    await settle(db)
    assert [p for _, p in box.items] == ["one"]
    await db.unlisten(chan)                             # every callback left
    assert chan not in db.listeners.channels


async def test_payload_and_channel_are_bounded(db: Database) -> None:
    chan = channel()
    await db.notify(chan, "x" * MAX_PAYLOAD)            # at the limit: fine (nobody listens)
    for bad_payload in ("x" * (MAX_PAYLOAD + 1), "é" * (MAX_PAYLOAD // 2 + 1), "a\x00b", b"bytes"):
        with pytest.raises(DatabaseError) as err:
            await db.notify(chan, bad_payload)  # type: ignore[arg-type]
        assert err.value.kind == "query"
    for bad_channel in ("Upper", "has space", "x" * 64, "", "1abc", 'quote"'):
        with pytest.raises(DatabaseError):
            await db.notify(bad_channel, "p")
        with pytest.raises(DatabaseError):
            await db.listen(bad_channel, Inbox())
    assert db.listeners.channels == []


async def test_claim_sets_values_and_returns_the_rows_after_the_change(db: Database) -> None:
    await db.ensure_schema(["active_watchers"])
    await db.insert_many("active_watchers", [watcher(n, sharing_tag="dead") for n in range(5)])
    await db.insert("active_watchers", watcher(9, sharing_tag="alive"))
    got = await db.claim("active_watchers", {"sharing_tag": "dead"}, {"sharing_tag": "me"}, limit=2,
                         order_by="callid")
    assert sorted(r["callid"] for r in got) == ["call-0", "call-1"]   # order_by picks which rows
    assert all(r["sharing_tag"] == "me" and r["watcher_username"].startswith("w") for r in got)
    rest = await db.claim("active_watchers", {"sharing_tag": "dead"}, {"sharing_tag": "me"})
    assert sorted(r["callid"] for r in rest) == ["call-2", "call-3", "call-4"]
    assert await db.claim("active_watchers", {"sharing_tag": "dead"}, {"sharing_tag": "me"}) == []
    assert await db.count("active_watchers", {"sharing_tag": "me"}) == 5
    assert await db.count("active_watchers", {"sharing_tag": "alive"}) == 1
    with pytest.raises(DatabaseError):
        await db.claim("active_watchers", None, {"sharing_tag": "me"})  # type: ignore[arg-type]
    with pytest.raises(DatabaseError):
        await db.claim("active_watchers", {}, {"no_such_column": 1})


async def test_claim_delete_returns_each_row_once(db: Database) -> None:
    await db.ensure_schema(["presentity"])
    await db.insert_many("presentity", [presentity(n, expires=100 + n) for n in range(4)])
    one = await db.claim_delete("presentity", {"expires": ("<=", 102)}, order_by="-expires", limit=1)
    assert [r["username"] for r in one] == ["user2"]                # order_by picks which rows
    gone = one + await db.claim_delete("presentity", {"expires": ("<=", 102)})
    assert sorted(r["username"] for r in gone) == ["user0", "user1", "user2"]
    assert gone[0]["body"] == b"<presence/>"
    assert await db.claim_delete("presentity", {"expires": ("<=", 102)}) == []
    assert [r["username"] for r in await db.query("presentity")] == ["user3"]


async def test_rs_nodes_is_created_only_when_asked_for(db: Database) -> None:
    await db.ensure_schema()
    assert await db.count("version", {"table_name": "rs_nodes"}) == 0
    with pytest.raises(DatabaseError):
        await db.count("rs_nodes")
    await db.ensure_schema(["rs_nodes"])
    await db.insert("rs_nodes", {"cluster_id": 1, "node_id": "n1", "beat": 5, "last_seen": 1, "started": 1})
    row = (await db.query("rs_nodes"))[0]
    assert row["state"] == "active" and row["adopted_by"] is None
    with pytest.raises(DatabaseError) as dup:
        await db.insert("rs_nodes", {"cluster_id": 1, "node_id": "n1"})
    assert dup.value.kind == "constraint"


async def test_a_table_without_its_version_row_is_refused_at_start(db: Database, db_url: str) -> None:
    await db.ensure_schema(["presentity"])
    await db.delete("version", {"table_name": "presentity"})
    with pytest.raises(DatabaseError) as err:
        await db.ensure_schema(["presentity"])
    assert "no version row" in str(err.value) and f"routescript db init {db.url}" in str(err.value)


# --- PostgreSQL only ----------------------------------------------------------------------------------

async def test_concurrent_claims_skip_locked_rows_instead_of_waiting(pg_url: str) -> None:
    async with await open_database(pg_url) as a, await open_database(pg_url) as b:
        await a.ensure_schema(["active_watchers"])
        await a.insert_many("active_watchers", [watcher(n, sharing_tag="dead") for n in range(6)])
        async with a.transaction():
            first = await a.claim("active_watchers", {"sharing_tag": "dead"}, {"sharing_tag": "a"}, limit=4)
            # a's rows stay locked until it commits: b gets the others at once, never a's
            second = await asyncio.wait_for(
                b.claim("active_watchers", {"sharing_tag": "dead"}, {"sharing_tag": "b"}), 2)
        assert len(first) == 4 and len(second) == 2
        assert not {r["id"] for r in first} & {r["id"] for r in second}
        assert await a.count("active_watchers", {"sharing_tag": "a"}) == 4
        assert await b.count("active_watchers", {"sharing_tag": "b"}) == 2


async def test_racing_claims_split_the_rows(pg_url: str) -> None:
    dbs = [await open_database(pg_url) for _ in range(4)]
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
        assert len(claimed) == 200 and len(set(claimed)) == 200   # every row once, none twice
    finally:
        for db in dbs:
            await db.close()


async def test_listen_on_an_unreachable_server_fails_and_registers_nothing(pg_url: str) -> None:
    proxy = TcpProxy(pg_host_port())
    await proxy.start()
    db = await open_database(proxied(pg_url, proxy))
    try:
        await proxy.stop()
        with pytest.raises(DatabaseError) as err:
            await db.listen(channel(), Inbox())
        assert err.value.transient
        assert db.listeners.channels == []
    finally:
        await db.close()


async def test_listen_connection_comes_back_relistens_and_calls_on_reconnect(pg_url: str) -> None:
    proxy = TcpProxy(pg_host_port())
    await proxy.start()
    db = await open_database(proxied(pg_url, proxy))
    direct = await open_database(pg_url)       # a node whose connection is never cut
    try:
        db.listener.first_delay = 0.02                      # type: ignore[attr-defined]
        db.listener.keepalive = 0.2                         # type: ignore[attr-defined]
        chan = channel()
        box, resynced = Inbox(), asyncio.Event()
        await db.listen(chan, box, on_reconnect=resynced.set)
        await direct.notify(chan, "before")
        assert await box.wait_for(1) == ["before"]

        await proxy.stop()                                  # the database goes away
        await wait_until(lambda: not db.listener.connected)  # type: ignore[attr-defined]
        await direct.notify(chan, "missed")                 # sent while we were cut off: lost for us
        await asyncio.sleep(0.1)
        await proxy.start()                                 # back on the same port
        await asyncio.wait_for(resynced.wait(), 5)          # the owner is told to resync
        assert db.listener.reconnects == 1                  # type: ignore[attr-defined]
        await direct.notify(chan, "after")
        assert await box.wait_for(2) == ["before", "after"]
    finally:
        await db.close()
        await direct.close()
        await proxy.stop()


async def test_keepalive_notices_a_connection_the_server_killed(pg_url: str) -> None:
    db = await open_database(pg_url)
    admin = await asyncpg.connect(parse_url(pg_url).dsn)
    try:
        db.listener.first_delay = 0.02                      # type: ignore[attr-defined]
        chan = channel()
        box, resynced = Inbox(), asyncio.Event()
        await db.listen(chan, box, on_reconnect=resynced.set)
        pid = db.listener.conn.get_server_pid()             # type: ignore[attr-defined]
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        await asyncio.wait_for(resynced.wait(), 5)
        await db.notify(chan, "still here")
        assert await box.wait_for(1) == ["still here"]
    finally:
        await admin.close()
        await db.close()


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not cond():  # noqa: ASYNC110 - any condition; bounded by wait_for
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)
