"""acc's tables on SQLite, PostgreSQL and MySQL/MariaDB: tables made by OpenSIPS's acc-create.sql are written
as they are (a CDR row, a missed call), a table lacking an extra_fields column is refused with the ALTER
TABLE to run (and used once it is run), a table do_accounting() names is created with the extra columns,
and a Call-ID longer than the column is cut rather than the record lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from conftest import TestDb
from db.conftest import raw_sql
from db.opensips_sql import ACC_MYSQL, ACC_POSTGRES, ACC_SQLITE

from routescript.db import Column, Database, open_database
from routescript.modules.acc import records
from routescript.modules.acc.records import Core, Record
from routescript.modules.acc.writer import AccWriter, TableError

pytestmark = pytest.mark.asyncio

OPENSIPS = {"sqlite": ACC_SQLITE, "postgres": ACC_POSTGRES, "mysql": ACC_MYSQL}
EXTRA = (("caller", "src_user"),)
CDR = Record(Core("INVITE", "ft", "tt", "call-1", "200", "OK"), 1700000010.0, context=True,
             created=1700000000.0, start=1700000001.0, end=1700000004.5, extras={"caller": "alice"})


def utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


@pytest.fixture
async def opensips_db(presence_db: TestDb) -> AsyncIterator[tuple[TestDb, Database]]:
    """The back end's database with OpenSIPS's acc and missed_calls tables, made by its own script."""
    db = await open_database(presence_db.url)
    try:
        await db.ensure_schema([])          # the version table the script writes into
        await raw_sql(presence_db.url, OPENSIPS[presence_db.backend])
        yield presence_db, db
    finally:
        await db.close()


def writer(db: Database, extra: bool = False) -> AccWriter:
    async def get() -> Database:
        return db
    columns = [Column("src_user", "text", nullable=True, null_default=True)] if extra else []
    return AccWriter(get, columns)


async def test_cdr_and_missed_call_rows_in_opensips_tables(opensips_db: tuple[TestDb, Database]) -> None:
    test_db, db = opensips_db
    w = writer(db)
    await w.prepare("acc", "acc")
    await w.prepare("missed_calls", "missed_calls")
    w.put("acc", "acc", records.row(CDR, (), cdr=True))
    missed = Record(Core("INVITE", "ft2", "tt2", "call-2", "486", "Busy Here"), 1700000020.0, context=True,
                    created=1700000018.0)
    w.put("missed_calls", "missed_calls", records.row(missed, (), missed=True))
    assert await w.flush()
    assert test_db.rows("SELECT method, from_tag, to_tag, callid, sip_code, sip_reason, time, duration, "
                        "ms_duration, setuptime, created FROM acc") == [
        ("INVITE", "ft", "tt", "call-1", "200", "OK", *_dt(test_db, 1700000001), 4, 3500, 1,
         *_dt(test_db, 1700000000))]
    assert test_db.rows("SELECT callid, sip_code, sip_reason, time, setuptime, created "
                        "FROM missed_calls") == [
        ("call-2", "486", "Busy Here", *_dt(test_db, 1700000020), 2, *_dt(test_db, 1700000018))]
    assert w.written == 2


def _dt(test_db: TestDb, ts: int) -> tuple[object]:
    """A DATETIME as the back end's driver returns it (SQLite: its text)."""
    value = utc(ts)
    return (value.strftime("%Y-%m-%d %H:%M:%S"),) if test_db.backend == "sqlite" else (value,)


async def test_a_missing_extra_column_is_refused_with_the_alter_to_run(
        opensips_db: tuple[TestDb, Database]) -> None:
    test_db, db = opensips_db
    w = writer(db, extra=True)
    with pytest.raises(TableError, match="lacks the extra_fields column") as info:
        await w.prepare("acc", "acc")
    alter = str(info.value).split("(ALTER", 1)[1].rstrip(")")
    test_db.execute("ALTER" + alter)
    fresh = writer(db, extra=True)        # a restart after the operator added it
    await fresh.prepare("acc", "acc")
    fresh.put("acc", "acc", records.row(CDR, EXTRA, cdr=True))
    assert await fresh.flush()
    assert test_db.rows("SELECT callid, src_user FROM acc") == [("call-1", "alice")]


async def test_a_named_table_is_created_and_a_long_call_id_cut(presence_db: TestDb) -> None:
    db = await open_database(presence_db.url)
    try:
        w = writer(db, extra=True)
        long_id = "x" * 80 + "@host"
        rec = Record(Core("MESSAGE", "f", "t", long_id, "200", "OK"), 1700000000.0, extras={"caller": "bob"})
        w.put("my_acc", "acc", records.row(rec, EXTRA))
        assert await w.flush()
        assert presence_db.rows("SELECT callid, src_user, sip_code FROM my_acc") == [("x" * 64, "bob", "200")]
        assert "my_acc" in presence_db.tables()
    finally:
        await db.close()
