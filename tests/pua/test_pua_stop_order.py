"""The server's stop with publications of pua under way to the in-process presence module: modules stop in
the reverse order of what they need (Module.depends and Module.uses, ModuleSet.start_order), so pua
drains its PUBLISHes into presence before presence closes its store, whatever the loadmodule order; and
a late caller of either module once it stops is refused at once (logged), never left waiting."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from routescript.core.server import Server
from routescript.modules.presence import bind_presence
from routescript.modules.pua import bind_pua

SCRIPT = """
log_level = 3
socket = udp:127.0.0.1:0
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "signaling.so"
MODULES
modparam("presence", "db_url", "sqlite://DB")
route { exit; }
"""
PUA_FIRST = 'loadmodule "pua.so"\nloadmodule "presence.so"\nloadmodule "presence_dialoginfo.so"'
PRESENCE_FIRST = 'loadmodule "presence.so"\nloadmodule "presence_dialoginfo.so"\nloadmodule "pua.so"'
CT = "application/dialog-info+xml"


def body(user: str) -> bytes:
    return (f'<?xml version="1.0"?>\n<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" '
            f'state="full" entity="sip:{user}@127.0.0.1"><dialog id="c-{user}"><state>confirmed</state>'
            f'</dialog></dialog-info>').encode()


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def problems(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]


@pytest.fixture
async def started(tmp_path: Path,
                  request: pytest.FixtureRequest) -> AsyncIterator[tuple[Server, Path, Collect]]:
    db = tmp_path / "p.sqlite"
    cfg = tmp_path / "s.cfg"
    cfg.write_text(SCRIPT.replace("MODULES", request.param).replace("DB", str(db)))
    server = Server()
    server.load(str(cfg))
    await server.start()
    seen = Collect()
    logging.getLogger("routescript").addHandler(seen)
    try:
        yield server, db, seen
    finally:
        logging.getLogger("routescript").removeHandler(seen)
        await server.stop()


def presentities(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as con:
        return sorted(con.execute("SELECT username, event FROM presentity"))


@pytest.mark.parametrize("started", [PUA_FIRST, PRESENCE_FIRST],
                         ids=["pua-loaded-first", "presence-loaded-first"], indirect=True)
async def test_publications_under_way_at_stop_are_stored_and_the_stop_is_clean(
        started: tuple[Server, Path, Collect]) -> None:
    """Before the fix, with pua loaded first, presence closed first: pua's drain then waited on a closed
    store until shutdown_timeout (an error line, the publications lost)."""
    server, db, seen = started
    pua = bind_pua(server)
    assert pua is not None
    for user in ("bob", "carol", "dave"):
        assert pua.publish(f"sip:{user}@127.0.0.1", "dialog", body(user), expires=600, content_type=CT)
    began = time.monotonic()
    assert await server.stop()                       # clean: within shutdown_timeout
    assert time.monotonic() - began < 3
    assert presentities(db) == [("bob", "dialog"), ("carol", "dialog"), ("dave", "dialog")]
    assert seen.problems() == []


def test_start_order_puts_what_a_module_needs_first(tmp_path: Path) -> None:
    cfg = tmp_path / "s.cfg"
    modules = ('loadmodule "pua.so"\nloadmodule "acc.so"\nloadmodule "dialog.so"\n'
               + PUA_FIRST.split("\n", 1)[1])
    cfg.write_text(SCRIPT.replace("MODULES", modules).replace("DB", str(tmp_path / "p.sqlite")))
    server = Server()
    server.load(str(cfg))
    order = server.modules.start_order()
    assert list(server.modules.instances)[3:] == ["pua", "acc", "dialog", "presence", "presence_dialoginfo"]
    # pua after presence (uses), acc after dialog (uses); the rest keeps its load order
    assert order == ["sl", "tm", "signaling", "dialog", "acc", "presence", "pua", "presence_dialoginfo"]


@pytest.mark.parametrize("started", [PRESENCE_FIRST], ids=["presence-loaded-first"], indirect=True)
async def test_after_stop_pua_and_presence_refuse_at_once(started: tuple[Server, Path, Collect]) -> None:
    server, db, seen = started
    pua, presence = bind_pua(server), bind_presence(server)
    assert pua is not None and presence is not None
    assert await server.stop()
    assert not pua.publish("sip:erin@127.0.0.1", "dialog", body("erin"), expires=600, content_type=CT)
    answer = await asyncio.wait_for(presence.publish("sip:erin@127.0.0.1", "dialog", body("erin"),
                                                     expires=600, content_type=CT), 2)
    assert answer is None and presentities(db) == []
    assert seen.problems() == [
        "pua: stopping: publication (dialog) for sip:erin@127.0.0.1 not sent",
        "presence: stopping: in-process PUBLISH (dialog) for sip:erin@127.0.0.1 refused"]
