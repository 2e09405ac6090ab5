"""pua's table end to end, with examples/bla.cfg (pua_bla: a subscription to the phone, the phone's NOTIFYs
published in-process on the line) and `modparam("pua", "db_url", ...)`; presence grants 20 s, so pua
refreshes the publication every few seconds.

- SIGTERM and start again (1 and 2 workers, SQLite, PostgreSQL and MySQL): the publication's refresh
  after the restart uses the stored ETag (presence keeps one publication of the line, and its expiry
  moves on: a refresh with an unknown ETag would get 412 and, with no body kept, be given up); the phone's
  NOTIFY in the old dialog is answered 200, not 481, and modifies the same publication; the phone's next
  REGISTER refreshes the subscription in its old dialog; a row that expired while the server was down is
  deleted, a corrupted row is logged and skipped, never a crash.
- kill -9 of the worker holding the subscription (2 workers): the supervisor restarts that slot, which
  loads its rows; the same checks.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import TestDb
from presence_e2e import ROOT, Srv, free_port, presence_cfg
from rs_e2e import RunningServer, start
from test_pua_bla_e2e import SharedLinePhone, info

from routescript.workers.dispatch import tag_slot

pytestmark = pytest.mark.asyncio

EXAMPLE = ROOT / "examples" / "bla.cfg"
GRANT = 20   # presence's max_expires_publish: pua refreshes 10 s after each grant; the restart fits in it


def config(tmp: Path, port: int, url: str, workers: int) -> Path:
    return presence_cfg(tmp, port, db_url=url, example=EXAMPLE, name="bla.cfg", workers=workers,
                        presence={"max_expires_publish": GRANT},
                        modparams={"pua": {"db_url": url, "update_period": 1}})


def launch(cfg: Path, workdir: Path, workers: int) -> RunningServer:
    workdir.mkdir(exist_ok=True)
    server = start(cfg, workdir)
    if workers > 1:
        server.wait_for("routescript started", count=1)
        server.wait_for("loaded from table", count=workers)
    return server


class Db:
    """The test database's presentity and pua rows (tests/conftest.py's TestDb)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def line(self) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.db.rows(
            "SELECT etag, expires FROM presentity WHERE username = 'line1' AND event = 'dialog;sla'")
        return rows

    def pua(self) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.db.rows(
            "SELECT pres_uri, pres_id, etag, watcher_uri, call_id, from_tag, to_tag, expires FROM pua "
            "ORDER BY id")
        return rows

    async def until(self, what: str, check: Any, timeout: float = 8.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"never {what}: {self.line()} {self.pua()}")
            await asyncio.sleep(0.1)

    async def stored(self) -> str:
        """The publication's ETag, once the pua table holds the one presence holds (written back)."""
        def same() -> str | None:
            line, pua = self.line(), [r for r in self.pua() if not r[3]]
            return line[0][0] if len(line) == 1 and len(pua) == 1 and pua[0][2] == line[0][0] else None
        return str(await self.until("the ETag written back", same))

    async def refreshed(self, etag: str) -> None:
        """Presence still holds one publication of the line, `etag`'s (dialog;sla keeps its ETag on a
        refresh: OpenSIPS's etag_not_new), and it was refreshed: its expiry moved on."""
        [(_, before)] = self.line()

        def moved() -> bool:
            line = self.line()
            assert len(line) == 1 and line[0][0] == etag, line   # never a second publication
            return int(line[0][1]) > int(before)
        await self.until(f"{etag} refreshed", moved, timeout=GRANT + 4)


@asynccontextmanager
async def a_phone(srv: Srv) -> AsyncIterator[SharedLinePhone]:
    async with await srv.client("line1", "udp") as client:
        client.auto_reply["NOTIFY"] = 200
        phone = SharedLinePhone(client)
        await phone.register(srv)
        await phone.subscribed(srv)
        assert await phone.tell(info([("d1", "confirmed")])) == 200
        yield phone


async def after_the_restart(phone: SharedLinePhone, srv: Srv, db: Db, etag: str) -> None:
    """The loaded publication refreshed with its ETag, the old dialog's NOTIFY accepted, the
    subscription refreshed in its dialog."""
    await db.refreshed(etag)
    assert await phone.tell(info([("d1", "terminated"), ("d2", "early")])) == 200   # not 481
    await asyncio.sleep(0.3)
    assert len(db.line()) == 1                                     # a modify, not a second publication
    sub, ok = phone.sub, phone.ok
    assert sub is not None and ok is not None
    await phone.register(srv)
    refresh = await phone.client.expect_request("SUBSCRIBE", call_id=sub.call_id, timeout=5)
    assert refresh.to.tag == ok.to.tag and refresh.cseq.number > sub.cseq.number
    await phone.client.reply(refresh, 200, headers=[("Expires", "600")])


@pytest.mark.parametrize("workers", [1, 2], ids=["1worker", "2workers"])
async def test_publications_and_subscriptions_survive_a_restart(presence_db: Any, tmp_path: Path,
                                                                workers: int) -> None:
    port = free_port()
    cfg = config(tmp_path, port, presence_db.url, workers)
    db = Db(presence_db)
    server = launch(cfg, tmp_path / "run1", workers)
    try:
        srv = Srv(server, port)
        async with a_phone(srv) as phone:
            etag = await db.stored()
            server.stop()
            rows = db.pua()
            # a subscription and a publication
            assert len(rows) == 2 and {bool(r[3]) for r in rows} == {True, False}
            sub, ok = phone.sub, phone.ok
            assert sub is not None and ok is not None
            sub_row = next(r for r in rows if r[3])
            assert (sub_row[4], sub_row[5], sub_row[6]) == (sub.call_id, sub.from_.tag, ok.to.tag)
            etag = next(r[2] for r in rows if not r[3])
            # while the server is down: a row that expired, and a corrupted one
            insert = ("INSERT INTO pua (pres_uri, pres_id, event, expires, desired_expires, flag, etag) "
                      "VALUES ")
            presence_db.execute(insert + "('sip:gone@127.0.0.1', 'x', 4, 1000, 2000, 2, 'E-gone')")
            presence_db.execute(insert + "('sip:bad@127.0.0.1', 'x', 3, 2000000000, 2000000000, 2, 'E-bad')")

            server = launch(cfg, tmp_path / "run2", workers)
            srv = Srv(server, port)
            # the subscription and the publication read back once, by one worker: their owner
            assert sorted(loaded(server.log())) == [0] * (workers - 1) + [2]
            await after_the_restart(phone, srv, db, etag)
            assert "skipped: event bit 3 is not one of pua's" in server.log()
            left = {r[0] for r in db.pua()}
            assert "sip:gone@127.0.0.1" not in left and "sip:bad@127.0.0.1" in left
            assert "answered 412" not in server.log()

            # the phone ends its subscription: its rows leave the table
            assert await phone.tell(b"", "terminated;reason=noresource") == 200
            await db.until("the rows deleted", lambda: {r[0] for r in db.pua()} == {"sip:bad@127.0.0.1"})
    finally:
        server.stop()
        assert "Traceback" not in server.log()


def loaded(log: str) -> list[int]:
    """What each worker's start read back from the pua table (one line per worker start)."""
    return [int(n) for n in re.findall(r"pua: (\d+) publication\(s\) and subscription\(s\) loaded", log)]


def forked(log: str, slot: int) -> list[int]:
    return [int(pid) for pid in re.findall(rf"w{slot} forked: pid (\d+)", log)]


async def test_kill_9_of_the_worker_holding_them(tmp_path: Path) -> None:
    """On SQLite (the restart of one slot is the same on every back end; the test above runs all three)."""
    sqlite = TestDb.create("sqlite", tmp_path, "bla.sqlite")
    port = free_port()
    cfg = config(tmp_path, port, sqlite.url, 2)
    db = Db(sqlite)
    server = launch(cfg, tmp_path / "run", 2)
    try:
        srv = Srv(server, port)
        async with a_phone(srv) as phone:
            assert phone.sub is not None and phone.sub.from_.tag
            slot = tag_slot(phone.sub.from_.tag)
            assert slot in (0, 1)
            etag = await db.stored()
            [pid] = forked(server.log(), slot)
            os.kill(pid, signal.SIGKILL)
            server.wait_for(f"w{slot} forked", count=2, timeout=20)
            server.wait_for("loaded from table", count=3, timeout=20)
            assert loaded(server.log()) == [0, 0, 2]           # the restarted slot read its two rows
            await after_the_restart(phone, srv, db, etag)
    finally:
        server.stop()
        assert "Traceback" not in server.log()
