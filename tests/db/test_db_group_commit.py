"""Group commit (routescript.db.GroupCommitter) and Database.write_batch, on SQLite and PostgreSQL."""

import asyncio

import pytest

from routescript.db import Database, DatabaseError, GroupCommitter, Write, open_database


@pytest.fixture
async def db(db):   # the storage fixture with the presence tables made
    await db.ensure_schema(["presentity"])
    return db


def pres_row(user: str, etag: str = "e1", body: bytes = b"<x/>") -> dict:
    return {"username": user, "domain": "example.com", "event": "presence", "etag": etag, "expires": 100,
            "received_time": 1, "body": body, "extra_hdrs": b"", "sender": None}


def insert(user: str, etag: str = "e1") -> Write:
    return Write("insert", "presentity", pres_row(user, etag))


async def users(db: Database) -> list[str]:
    return [r["username"] for r in await db.query("presentity", order_by="username")]


async def test_write_batch_applies_mixed_writes_in_order(db):
    await db.write_batch([insert("a"), insert("b"), insert("c"),
                          Write("update", "presentity", {"etag": "e2"}, {"username": "b"}),
                          Write("delete", "presentity", where={"username": "c"}),
                          Write("upsert", "presentity", pres_row("a", "e1", b"<y/>"),
                                keys=("username", "domain", "event", "etag"))])
    rows = {r["username"]: r for r in await db.query("presentity")}
    assert sorted(rows) == ["a", "b"]
    assert rows["b"]["etag"] == "e2" and rows["a"]["body"] == b"<y/>"


async def test_write_batch_refuses_update_without_condition(db):
    with pytest.raises(DatabaseError):
        await db.write_batch([Write("update", "presentity", {"etag": "x"})])


async def test_concurrent_writers_share_one_transaction(db):
    gc = GroupCommitter(db)
    await asyncio.gather(*(gc.write([insert(f"u{i:02d}")]) for i in range(20)))
    assert (gc.batches, gc.callers) == (1, 20)
    assert await users(db) == [f"u{i:02d}" for i in range(20)]


async def test_writer_returns_only_after_the_commit(db, db_url):
    gc = GroupCommitter(db)
    gate = asyncio.Event()
    real = db.write_batch

    async def slow(writes):
        await gate.wait()
        await real(writes)

    db.write_batch = slow   # type: ignore[method-assign]
    task = asyncio.create_task(gc.write([insert("alice")]))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()          # no answer while the transaction has not committed
    gate.set()
    await task
    other = await open_database(db_url)   # another connection sees it: committed, not just written
    try:
        assert await users(other) == ["alice"]
    finally:
        await other.close()


async def test_a_bad_row_fails_only_its_writer(db):
    await db.insert("presentity", pres_row("dup"))
    gc = GroupCommitter(db)
    results = await asyncio.gather(gc.write([insert("ok1")]), gc.write([insert("dup")]),
                                   gc.write([insert("ok2"), insert("ok3")]), return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], DatabaseError) and results[1].kind == "constraint"
    assert await users(db) == ["dup", "ok1", "ok2", "ok3"]


async def test_a_writers_rows_are_atomic(db):
    await db.insert("presentity", pres_row("dup"))
    gc = GroupCommitter(db)
    with pytest.raises(DatabaseError):
        await gc.write([insert("first"), insert("dup")])
    assert await users(db) == ["dup"]


async def test_lost_database_fails_every_writer_of_the_batch(db):
    gc = GroupCommitter(db)

    async def lost(writes):
        raise DatabaseError("connection lost", "connection")

    db.write_batch = lost   # type: ignore[method-assign]
    results = await asyncio.gather(*(gc.write([insert(f"u{i}")]) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, DatabaseError) and r.transient for r in results)
    assert gc.batches == 0
    del db.write_batch
    assert await users(db) == []


async def test_inside_a_transaction_the_write_joins_it(db):
    gc = GroupCommitter(db)

    async def aborted() -> None:
        async with db.transaction():
            await gc.write([insert("rolled-back")])
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        await aborted()
    assert await users(db) == []
    assert gc.batches == 0


async def test_batches_are_bounded_and_pending_writers_refused(db):
    gc = GroupCommitter(db, max_batch=4, max_pending=6)
    writes = [asyncio.ensure_future(gc.write([insert(f"u{i}")])) for i in range(6)]
    await asyncio.sleep(0)
    with pytest.raises(DatabaseError) as refused:
        await gc.write([insert("one-too-many")])
    assert refused.value.transient
    await asyncio.gather(*writes)
    assert (gc.batches, gc.callers) == (2, 6)
    await gc.drain()
    assert len(await users(db)) == 6


async def test_write_sql_is_planned_once_per_shape_and_values_still_checked(db):
    """write_batch keeps the SQL of a write shape (op, table, columns, equality columns); each write's
    values are still bound and coerced - a wrong type is refused with the planned shape too."""
    await db.write_batch([insert(f"p{i}", f"e{i}") for i in range(5)])
    await db.write_batch([Write("update", "presentity", {"etag": f"n{i}"}, {"username": f"p{i}"})
                          for i in range(5)])
    plans = dict(db._plans)
    assert len(plans) == 2
    await db.write_batch([Write("update", "presentity", {"etag": "z"}, {"username": "p1"})])
    assert db._plans.keys() == plans.keys()
    assert {r["username"]: r["etag"] for r in await db.query("presentity")} == {
        "p0": "n0", "p1": "z", "p2": "n2", "p3": "n3", "p4": "n4"}
    with pytest.raises(DatabaseError, match="expects int"):
        await db.write_batch([Write("update", "presentity", {"expires": "soon"}, {"username": "p1"})])
    # conditions other than plain equality (operators, NULL) are built each time, never planned
    await db.write_batch([Write("delete", "presentity", where={"username": ("in", ["p3", "p4"])}),
                          Write("update", "presentity", {"etag": "q"}, {"sender": None})])
    assert db._plans.keys() == plans.keys()   # a refused write plans nothing; the last two are not planned
    assert await users(db) == ["p0", "p1", "p2"]
    assert {r["etag"] for r in await db.query("presentity")} == {"q"}


async def test_planned_writes_bind_odd_values_as_the_unplanned_path_does(db):
    """A planned shape binds exact types as they are and the odd value through the column's coercion:
    bool -> int, bytearray/memoryview -> bytes, str into a blob -> its UTF-8 bytes, None -> NULL; a wrong
    type is refused; a NULL or operator condition of a planned shape is built (IS NULL), not bound."""
    await db.write_batch([insert(f"p{i}") for i in range(3)])   # plans the insert shape
    odd = {**pres_row("q0"), "expires": True, "body": bytearray(b"<b/>"), "extra_hdrs": "h\u00e9"}
    await db.write_batch([Write("insert", "presentity", odd),
                          Write("insert", "presentity", {**pres_row("q1"), "body": memoryview(b"<m/>")})])
    rows = {r["username"]: r for r in await db.query("presentity")}
    q0 = rows["q0"]
    assert (q0["expires"], q0["body"], q0["extra_hdrs"]) == (1, b"<b/>", "h\u00e9".encode())
    assert rows["q1"]["body"] == b"<m/>" and rows["q1"]["sender"] is None
    with pytest.raises(DatabaseError, match=r"presentity\.username expects str, got int"):
        await db.write_batch([Write("insert", "presentity", {**pres_row("x"), "username": 7})])
    shape = {"etag": "n"}
    await db.write_batch([Write("update", "presentity", shape, {"username": "p0"})])   # plans the update
    with pytest.raises(DatabaseError, match=r"presentity\.username expects str, got bytes"):
        await db.write_batch([Write("update", "presentity", shape, {"username": b"p1"})])
    await db.write_batch([Write("update", "presentity", {"etag": "null-sender"}, {"sender": None}),
                          Write("update", "presentity", {"etag": "in"}, {"username": ("in", ["p1", "p2"])})])
    etags = {r["username"]: r["etag"] for r in await db.query("presentity")}
    assert etags == {"p0": "null-sender", "p1": "in", "p2": "in", "q0": "null-sender", "q1": "null-sender"}


async def test_a_failing_batch_leaves_nothing_behind(db):
    """One bad row fails the batch as a whole (SQLite runs it in one call into its thread)."""
    await db.write_batch([insert("keep")])
    with pytest.raises(DatabaseError):
        await db.write_batch([insert("gone"), insert("keep")])   # the second breaks the unique key
    assert await users(db) == ["keep"]
    await db.write_batch([insert("after")])                        # the connection is usable again
    assert await users(db) == ["after", "keep"]


async def test_on_commit_runs_at_the_commit_before_any_writer_resumes(db):
    """Each writer's on_commit is called once its writes are committed and before any writer of the
    batch goes on; a writer whose writes failed gets no call."""
    await db.insert("presentity", pres_row("dup"))
    gc = GroupCommitter(db)
    events: list[str] = []

    async def writer(user: str) -> None:
        try:
            await gc.write([insert(user)], on_commit=lambda: events.append(f"committed {user}"))
        except DatabaseError:
            events.append(f"failed {user}")
        else:
            events.append(f"resumed {user}")

    await asyncio.gather(writer("a"), writer("b"))
    assert events == ["committed a", "committed b", "resumed a", "resumed b"]
    events.clear()
    await asyncio.gather(writer("c"), writer("dup"))   # a bad row: retried one by one
    assert sorted(events) == ["committed c", "failed dup", "resumed c"]
    assert events.index("committed c") < events.index("resumed c")


async def test_on_commit_inside_the_callers_transaction_waits_for_its_commit(db):
    gc = GroupCommitter(db)
    events: list[str] = []
    async with db.transaction():
        await gc.write([insert("a")], on_commit=lambda: events.append("committed"))
        assert events == []
    assert events == ["committed"]


async def test_a_failing_on_commit_is_logged_and_the_writes_stand(db, caplog):
    gc = GroupCommitter(db)

    def broken() -> None:
        raise RuntimeError("boom")

    await gc.write([insert("a")], on_commit=broken)
    assert await users(db) == ["a"]
    assert "after-commit action failed" in caplog.text
