"""The dialog module on its table, SQLite and PostgreSQL: a table OpenSIPS created is used as it is, a
confirmed dialog is written (db_mode 1), read back by a new module (DLGCB_LOADED), its end deletes the
row; db_mode 3 writes only at stop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from db.opensips_db import opensips_database
from db.opensips_sql import POSTGRES as OPENSIPS_POSTGRES
from db.opensips_sql import SQLITE as OPENSIPS_SQLITE

from routescript.core.server import Server
from routescript.db import open_database
from routescript.modules.dialog import DlgState, bind_dialog
from routescript.modules.dialog.core import DlgEvent
from routescript.modules.dialog.module import DialogModule

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["sqlite", "postgres"])
async def opensips_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database with OpenSIPS 3.4's tables, made by its own CREATE scripts."""
    script = {"sqlite": OPENSIPS_SQLITE, "postgres": OPENSIPS_POSTGRES}[request.param]
    async with opensips_database(request.param, tmp_path, script) as url:
        yield url


def module(tmp_path: Path, url: str, mode: int = 1) -> DialogModule:
    path = tmp_path / "s.cfg"
    path.write_text('loadmodule "sl.so"\nloadmodule "tm.so"\nloadmodule "dialog.so"\n'
                    f'modparam("dialog", "db_mode", {mode})\nmodparam("dialog", "db_url", "{url}")\n'
                    'modparam("dialog", "profiles_with_value", "caller")\nroute { exit; }\n')
    server = Server()
    server.load(str(path))
    found = server.modules.get("dialog")
    assert isinstance(found, DialogModule)
    return found


async def attach(mod: DialogModule, url: str) -> Any:
    mod.writer.db = await open_database(url)
    await mod.writer.db.ensure_schema(["dialog"])     # OpenSIPS's table: accepted as it is
    return mod.writer.db


def confirmed(mod: DialogModule) -> Any:
    dlg = mod.table.create(call_id="call-1", from_uri="sip:a@x", from_tag="ft", to_uri="sip:b@x",
                           req_uri="sip:b@x", from_header="<sip:a@x>;tag=ft", to_header="<sip:b@x>",
                           now=mod.clock(), timeout=600)
    dlg.to_tag, dlg.callee_contact, dlg.caller_contact = "tt", "sip:b@10.0.0.2", "sip:a@10.0.0.1"
    mod.table.link(dlg, "caller", "alice")
    mod.values.store(dlg, "k", "v|#")
    mod.changed(mod.table.event(dlg, DlgEvent.RPL2XX, mod.clock()), None)
    return dlg


async def test_real_time_rows_and_reload(opensips_db: str, tmp_path: Path) -> None:
    first = module(tmp_path, opensips_db)
    db = await attach(first, opensips_db)
    try:
        dlg = confirmed(first)
        await first.writer.flush()
        [row] = await db.query("dialog")
        assert row["dlg_id"] == dlg.db_id and row["state"] == 3 and row["to_tag"] == "tt"
        second = module(tmp_path, opensips_db)
        second.writer.db = db
        loaded: list[Any] = []
        api = bind_dialog(second.server)
        assert api is not None
        api.on_loaded(loaded.append)
        await second._load()
        [info] = loaded
        assert info.dlg_id == dlg.dlg_id and info.state is DlgState.CONFIRMED_NA
        assert info.values == {"k": "v|#"}
        assert second.profiles.size("caller", "alice") == 1
        back = second.table.get(dlg.dlg_id)
        assert back is not None
        second.changed(second.table.event(back, DlgEvent.BYE, second.clock(), reason="bye-caller"), None)
        await second.writer.flush()
        assert await db.query("dialog") == []
    finally:
        await db.close()


async def test_shutdown_mode_writes_at_stop(opensips_db: str, tmp_path: Path) -> None:
    mod = module(tmp_path, opensips_db, mode=3)
    db = await attach(mod, opensips_db)
    try:
        confirmed(mod)
        assert await db.query("dialog") == []          # nothing before the stop
        await mod.stop()
        assert len(await db.query("dialog")) == 1
    finally:
        await db.close()
