"""The pua table (modules/pua/rows.py, store.py): rows from publications and subscriptions and back, the
owner rule for workers, corrupted rows logged and skipped; the write-back on SQLite, PostgreSQL and MySQL
(update in place, delete of the forgotten, expired rows removed, each worker its own rows, an OpenSIPS
row read as OpenSIPS writes it); a publication read back takes its publisher's ETag and, without a body,
is forgotten on a 412."""

from __future__ import annotations

import logging
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from db.opensips_db import opensips_database
from db.opensips_sql import MYSQL as OPENSIPS_MYSQL
from db.opensips_sql import POSTGRES as OPENSIPS_POSTGRES
from db.opensips_sql import SQLITE as OPENSIPS_SQLITE

from routescript.db import open_database
from routescript.modules.pua.rows import (CRC_FORM, BadRow, publication_of, row_of_publication,
                                          row_of_subscription, row_owner, subscription_of)
from routescript.modules.pua.store import LOADED_CSEQ_GAP, PuaStore
from routescript.modules.pua.subscriptions import SubKey, SubRecord, SubTable
from routescript.modules.pua.table import Op, PubKey, PubRecord, PubTable
from routescript.workers.dispatch import slot_tag

NOW = 1_800_000_000.0
LINE = "sip:line1@example.com"
PHONE = "sip:line1@10.0.0.7:5062"


def publication(**kw: Any) -> PubRecord:
    args: dict[str, Any] = {"key": PubKey(LINE, "dialog;sla", PHONE), "body": b"<d/>",
                            "content_type": "application/dialog-info+xml", "desired_at": NOW + 600,
                            "etag": "E1", "expires_at": NOW + 300, "granted": 300,
                            "sender": ("Sender", PHONE), "follows": ("c1", slot_tag(1, 3, "x"))}
    args.update(kw)
    return PubRecord(**args)


def subscription(**kw: Any) -> SubRecord:
    args: dict[str, Any] = {"key": SubKey(PHONE, LINE, "dialog;sla"), "to_uri": LINE,
                            "contact": "sip:bla@192.0.2.1", "call_id": "c1", "from_tag": slot_tag(1, 3, "x"),
                            "desired_at": NOW + 600, "cseq": 4, "to_tag": "ph1",
                            "remote_target": PHONE + ";x=1", "route_set": ("<sip:p2;lr>", "<sip:p1;lr>"),
                            "expires_at": NOW + 300, "granted": 300}
    args.update(kw)
    return SubRecord(**args)


# --- rows ---------------------------------------------------------------------------------------------

def test_a_publication_row_and_back() -> None:
    rec = publication(outbound_proxy="sip:ps.example.com")
    row = row_of_publication(rec)
    assert row["event"] == 4 and row["flag"] == 2                       # dialog;sla, BLA_PUBLISH
    assert row["expires"] == int(NOW + 300) and row["desired_expires"] == int(NOW + 600)
    assert row["watcher_uri"] is None and row["etag"] == "E1" and row["pres_id"] == PHONE
    assert row["extra_headers"] == f"Route: <sip:ps.example.com;lr>\r\nSender: <{PHONE}>\r\n"
    assert (row["call_id"], row["from_tag"]) == ("c1", slot_tag(1, 3, "x"))
    back = publication_of(row, NOW + 10)
    assert back.key == rec.key and back.etag == "E1" and back.expires_at == NOW + 300
    assert back.desired_at == NOW + 600 and back.outbound_proxy == "sip:ps.example.com"
    assert back.sender == ("Sender", PHONE) and back.follows == rec.follows
    assert back.body == b"" and back.loaded and back.granted == 290     # no body kept (OpenSIPS's table)
    dialog = row_of_publication(publication(key=PubKey("sip:bob@x", "dialog", "12:34/A"), sender=None))
    assert (dialog["event"], dialog["flag"], dialog["extra_headers"]) == (64, 1024, None)


def test_a_subscription_row_and_back() -> None:
    rec = subscription()
    row = row_of_subscription(rec)
    assert (row["event"], row["flag"], row["watcher_uri"], row["pres_id"]) == (4, 4, LINE, "")
    assert row["record_route"] == "<sip:p2;lr>,<sip:p1;lr>" and row["remote_contact"] == PHONE + ";x=1"
    back = subscription_of(row, NOW)
    assert back.key == rec.key and back.to_tag == "ph1" and back.cseq == 4 and back.route_set == rec.route_set
    assert back.remote_target == rec.remote_target and back.contact == rec.contact
    assert (back.call_id, back.from_tag, back.expires_at) == ("c1", rec.from_tag, NOW + 300)


def test_what_does_not_fit_the_table_is_refused_and_a_long_call_id_kept_as_its_crc() -> None:
    with pytest.raises(BadRow, match="etag"):
        row_of_publication(publication(etag="E" * 65))
    with pytest.raises(BadRow, match="event"):
        row_of_publication(publication(key=PubKey(LINE, "x-unknown", "")))
    long_id = "a" * 100 + "@host"
    row = row_of_publication(publication(follows=(long_id, "")))
    assert row["call_id"] == f"{CRC_FORM}{zlib.crc32(long_id.encode()):08x}"
    for n in (2, 3, 5):   # the owner is the same as the full Call-ID's
        assert row_owner(row["call_id"], None, n) == row_owner(long_id, None, n)


def test_the_owner_of_a_row() -> None:
    assert row_owner("c1", slot_tag(1, 2, "x"), 1) == 0                # one process holds everything
    assert row_owner("c1", slot_tag(1, 2, "x"), 2) == 1                # our tag's worker (NOTIFYs go there)
    assert row_owner("c1", slot_tag(3, 2, "x"), 2) == zlib.crc32(b"c1") % 2   # no such worker: the Call-ID's
    assert row_owner("c1", "", 4) == zlib.crc32(b"c1") % 4             # pua_dialoginfo: the call's worker
    assert row_owner(None, None, 4) == 0                               # a row naming no dialog: worker 0


@pytest.mark.parametrize("column,value,why", [
    ("event", 3, "event bit 3"),
    ("event", "dialog", "not a number"),
    ("etag", None, "no etag"),
    ("pres_uri", "", "no pres_uri"),
    ("expires", None, "expires is not a number"),
    ("extra_headers", "garbage without colon", "no header"),
    ("pres_id", b"\xff\xfe", "UTF-8"),
])
def test_a_corrupted_publication_row(column: str, value: Any, why: str) -> None:
    row = row_of_publication(publication())
    row[column] = value
    with pytest.raises(BadRow, match=why):
        publication_of(row, NOW)


@pytest.mark.parametrize("column,value,why", [
    ("cseq", "x", "cseq"), ("cseq", -1, "negative"), ("call_id", None, "no call_id"),
    ("to_tag", "", "no to_tag"), ("contact", None, "no contact"),
])
def test_a_corrupted_subscription_row(column: str, value: Any, why: str) -> None:
    row = row_of_subscription(subscription())
    row[column] = value
    with pytest.raises(BadRow, match=why):
        subscription_of(row, NOW)


# --- the table back in memory ---------------------------------------------------------------------------

def test_a_publication_read_back_takes_its_publishers_etag_and_without_a_body_is_forgotten_on_412() -> None:
    table = PubTable()
    assert table.restore(publication(etag="OLD", body=b""))
    assert not table.restore(publication())                      # held already: the table's row is older
    # pua_dialoginfo republishes with the ETag it kept in the dialog (written at every change)
    send = table.publish(PubKey(LINE, "dialog;sla", PHONE), b"<new/>", NOW, expires=600, etag="KEPT")
    assert send is not None and send.op is Op.MODIFY and send.etag == "KEPT"
    table.response(send, 200, NOW, etag="E2", expires=300)
    rec = table.get(PubKey(LINE, "dialog;sla", PHONE))
    assert rec is not None and not rec.loaded and rec.follows == ("c1", slot_tag(1, 3, "x"))
    # answered once: an ETag passed now is older than the record's own
    again = table.publish(rec.key, b"<n2/>", NOW, expires=600, etag="KEPT")
    assert again is not None and again.etag == "E2"

    other = PubTable()
    other.restore(publication(body=b""))
    [refresh] = other.due(NOW + 300 - 10)
    assert refresh.op is Op.REFRESH and refresh.etag == "E1" and refresh.body is None
    assert other.response(refresh, 412, NOW + 291) is None      # no body to publish afresh: forgotten
    assert len(other) == 0


# --- the store on the three back ends --------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


async def fresh(db: Any, clock: Clock, slot: int = 0, n: int = 1) -> tuple[PuaStore, PubTable, SubTable]:
    store = PuaStore(db, "pua", slot=slot, n_total=n, clock=clock, update_period=30)
    pubs, subs = PubTable(), SubTable()
    await store.load(pubs, subs)
    return store, pubs, subs


async def test_write_back_and_read_back(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    db = await open_database(db_url)
    try:
        await db.ensure_schema(["pua"])
        store, pubs, subs = await fresh(db, clock)
        pubs.restore(publication())
        subs.restore(subscription())
        unconfirmed = pubs.publish(PubKey("sip:new@x", "dialog", "9/A"), b"<d/>", NOW, expires=60)
        assert unconfirmed is not None
        assert await store.write_back(pubs, subs) == 2         # the unconfirmed one is not written
        assert await store.write_back(pubs, subs) == 0         # nothing changed: nothing written
        [pub_row] = await db.query("pua", {"watcher_uri": None})
        assert pub_row["etag"] == "E1" and pub_row["event"] == 4

        # a refresh's new ETag: the same row updated, not a second one
        [refresh] = pubs.due(NOW + 290)
        pubs.response(refresh, 200, NOW + 290, etag="E2", expires=300)
        assert await store.write_back(pubs, subs) == 1
        rows = await db.query("pua", {"watcher_uri": None})
        assert [(r["id"], r["etag"], r["expires"]) for r in rows] == [(pub_row["id"], "E2", int(NOW + 590))]

        # a 412 to a refresh: published afresh, its row kept (not deleted) until the new ETag is written
        [again] = pubs.due(NOW + 590 - 10)
        fresh_send = pubs.response(again, 412, NOW + 580)
        assert fresh_send is not None and fresh_send.op is Op.INITIAL
        assert await store.write_back(pubs, subs) == 0
        pubs.response(fresh_send, 200, NOW + 580, etag="E3", expires=300)
        assert await store.write_back(pubs, subs) == 1
        assert [r["etag"] for r in await db.query("pua", {"watcher_uri": None})] == ["E3"]
        # a restart: both read back, with the ETag and the dialog
        clock.now = NOW + 200
        _, pubs2, subs2 = await fresh(db, clock)
        rec = pubs2.get(PubKey(LINE, "dialog;sla", PHONE))
        assert rec is not None and rec.etag == "E3" and rec.loaded
        assert subs2.notify("c1", slot_tag(1, 3, "x"), "ph1") == SubKey(PHONE, LINE, "dialog;sla")
        # its next SUBSCRIBE's CSeq above any sent since the last write (a kill -9 loses up to a period)
        assert [s.cseq for s in subs2] == [4 + LOADED_CSEQ_GAP]

        # forgotten (unsubscribed): its row deleted
        subs.notify("c1", slot_tag(1, 3, "x"), "ph1", terminated=True)
        assert await store.write_back(pubs, subs) == 1
        assert [r for r in await db.query("pua") if r["watcher_uri"]] == []

        # expired while down: deleted at the first write; a corrupted row logged, skipped, left there
        await db.insert("pua", {**row_of_publication(publication(key=PubKey(LINE, "dialog;sla", "old"))),
                                "expires": int(NOW) - 5})
        await db.insert("pua", {**row_of_subscription(subscription(call_id="c9")), "cseq": -3})
        clock.now = NOW + 400
        with caplog.at_level(logging.ERROR, "routescript.pua"):
            store3, pubs3, subs3 = await fresh(db, clock)
        assert "skipped: cseq -3 is negative" in caplog.text
        assert [r.key.id for r in pubs3] == [PHONE] and len(subs3) == 0 and store3.skipped == 1
        await store3.write_back(pubs3, subs3)
        assert sorted(r["pres_id"] or r["call_id"] for r in await db.query("pua")) == ["c9", PHONE]
    finally:
        await db.close()


async def test_each_worker_its_own_rows_and_worker_0_removes_the_stale(db_url: str) -> None:
    clock = Clock()
    db = await open_database(db_url)
    try:
        await db.ensure_schema(["pua"])
        writer, pubs, subs = await fresh(db, clock)
        for slot in (0, 1):
            tag = slot_tag(slot, 1, "t")
            subs.restore(subscription(key=SubKey(f"sip:phone{slot}@10.0.0.9", LINE, "dialog;sla"),
                                      call_id=f"c{slot}", from_tag=tag))
            pubs.restore(publication(key=PubKey(LINE, "dialog;sla", f"sip:phone{slot}@10.0.0.9"),
                                     follows=(f"c{slot}", tag)))
        calls = {zlib.crc32(c.encode()) % 2: c for c in ("call-a", "call-b", "call-c", "call-d")}
        for slot, call_id in calls.items():
            pubs.restore(publication(key=PubKey("sip:bob@x", "dialog", f"{slot}/A"), follows=(call_id, "")))
        await writer.write_back(pubs, subs)
        for slot in (0, 1):
            _, mine, my_subs = await fresh(db, clock, slot, 2)
            assert sorted(r.key.id for r in mine) == sorted([f"sip:phone{slot}@10.0.0.9", f"{slot}/A"])
            assert [r.key.pres_uri for r in my_subs] == [f"sip:phone{slot}@10.0.0.9"]

        # rows nobody rewrote for long (their worker was killed before forgetting them): worker 1 removes
        # its own (expired when it reads them), worker 0 every one
        clock.now = NOW + 300 + 130
        w1, p1, s1 = await fresh(db, clock, 1, 2)
        await w1.write_back(p1, s1)
        left = await db.query("pua")
        assert len(left) == 3 and {row_owner(r["call_id"], r["from_tag"], 2) for r in left} == {0}
        w0 = PuaStore(db, "pua", slot=0, n_total=2, clock=clock, update_period=30)
        await w0.write_back(PubTable(), SubTable())
        assert await db.count("pua") == 0
    finally:
        await db.close()


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
async def opensips_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database with OpenSIPS 3.4's tables, made by its own CREATE scripts (pua version 8 among them)."""
    scripts = {"sqlite": OPENSIPS_SQLITE, "postgres": OPENSIPS_POSTGRES, "mysql": OPENSIPS_MYSQL}
    script = scripts[request.param]
    async with opensips_database(request.param, tmp_path, script) as url:
        yield url


async def test_opensips_own_table_is_used_as_it_is(opensips_db: str) -> None:
    clock = Clock()
    db = await open_database(opensips_db)
    try:
        await db.ensure_schema(["pua"])                 # accepted: version 8, every column there
        store, pubs, subs = await fresh(db, clock)
        pubs.restore(publication(outbound_proxy="sip:ps.example.com"))
        subs.restore(subscription())
        assert await store.write_back(pubs, subs) == 2
        _, pubs2, subs2 = await fresh(db, clock)
        assert [(r.key, r.etag, r.sender, r.outbound_proxy) for r in pubs2] == \
            [(PubKey(LINE, "dialog;sla", PHONE), "E1", ("Sender", PHONE), "sip:ps.example.com")]
        assert [(r.key, r.to_tag, r.route_set) for r in subs2] == \
            [(SubKey(PHONE, LINE, "dialog;sla"), "ph1", ("<sip:p2;lr>", "<sip:p1;lr>"))]
    finally:
        await db.close()


async def test_a_row_as_opensips_writes_it(db_url: str) -> None:
    """OpenSIPS's pua_bla publication: empty strings for the subscription columns, desired_expires 0
    (refreshed for ever), its Sender in extra_headers; read by worker 0 (it names no dialog)."""
    clock = Clock()
    db = await open_database(db_url)
    try:
        await db.ensure_schema(["pua"])
        await db.insert("pua", {"pres_uri": LINE, "pres_id": PHONE, "event": 4, "expires": int(NOW) + 100,
                                "desired_expires": 0, "flag": 2, "etag": "a.1234", "tuple_id": "",
                                "watcher_uri": "", "to_uri": "", "call_id": "", "to_tag": "", "from_tag": "",
                                "cseq": 0, "record_route": "", "contact": "", "remote_contact": "",
                                "version": 0, "extra_headers": f"Sender: {PHONE}\r\n"})
        _, pubs, subs = await fresh(db, clock, 0, 2)
        [rec] = list(pubs)
        assert rec.etag == "a.1234" and rec.sender == ("Sender", PHONE) and rec.desired_at == NOW + 100 + 3600
        assert rec.follows is None and len(subs) == 0
        _, others, _ = await fresh(db, clock, 1, 2)
        assert len(others) == 0
    finally:
        await db.close()


# --- the module's parameters --------------------------------------------------------------------------

def load_pua(tmp_path: Any, lines: str) -> Any:
    from routescript.core.server import Server

    path = tmp_path / "pua.cfg"
    path.write_text(f'{lines}\nloadmodule "pua.so"\n' + "route { exit; }\n")
    server = Server()
    server.load(str(path))
    return server


def test_db_url_from_db_default_url(tmp_path: Any) -> None:
    """As OpenSIPS's init_db_url: the script's db_default_url is pua's db_url when it sets none."""
    server = load_pua(tmp_path, f'db_default_url = "sqlite://{tmp_path}/d.sqlite"')
    assert server.modules.get("pua").param("db_url") == f"sqlite://{tmp_path}/d.sqlite"


async def test_db_table_is_honoured_and_a_failed_write_is_logged(tmp_path: Any,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite://{tmp_path}/t.sqlite"
    server = load_pua(tmp_path, f'modparam("pua", "db_url", "{url}")\nmodparam("pua", "db_table", "my_pua")')
    pua = server.modules.get("pua")
    try:
        await pua._open_table()
        pua.table.restore(publication())
        await pua.write_back()
        db = await server.database(url)
        assert [r["etag"] for r in await db.query("my_pua")] == ["E1"]
        assert await db.missing_columns("pua") is None            # no table under OpenSIPS's name
    finally:
        await server.databases.close_all()
    pua.table.restore(publication(key=PubKey(LINE, "dialog;sla", "second")))
    with caplog.at_level(logging.ERROR, "routescript.pua"):
        await pua.write_back()                                     # the database is gone: logged, no raise
    assert "pua table my_pua: not written (retried in 30 s)" in caplog.text


async def test_a_publication_read_back_answered_412_is_forgotten_with_a_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    from routescript.modules.pua.publisher import Publisher

    class Compositor:   # lost its state while we were down
        async def publish(self, *args: Any, **kw: Any) -> Any:
            return type("Answer", (), {"status": 412, "etag": None, "expires": None})()

    clock = Clock()
    table = PubTable()
    table.restore(publication(body=b""))
    publisher = Publisher(table, clock=clock, local=lambda proxy: Compositor(), send_sip=None)
    clock.now = NOW + 295
    with caplog.at_level(logging.WARNING, "routescript.pua"):
        publisher._tick()
        await publisher.drain()
    assert len(table) == 0
    assert "answered 412 and its body is not known (read from the pua table): forgotten" in caplog.text
