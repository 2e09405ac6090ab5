"""dialog persistence end to end (db_mode 1 with 1 and 2 UDP workers, db_mode 2 - delayed - with one; SQLite):
a call survives a restart of the proxy in its middle (the dialog is back in dlg_list, the BYE through the
proxy ends it and deletes its row), and corrupted rows in the table (a CSeq that is no number, values and
profiles that are no name#type#value list, an impossible state, bytes that are no UTF-8) are each logged and
skipped at start, never a crash, and never listed by dlg_list."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proxy"))
from proxy_e2e import Proxy, free_port, start, uas
from test_dlg_e2e import SCRIPT, dialogs_of, established, gone, mi

pytestmark = pytest.mark.asyncio

BROKEN = [(4294967297, "broken-cseq", "caller_cseq", "abc"),
          (4294967298, "broken-vars", "vars", b"who#1#nina"),           # no "|" after the value
          (4294967299, "broken-profiles", "profiles", b"caller#nina|"),  # no type field
          (4294967300, "broken-state", "state", 9),
          (4294967301, "broken-bytes", "vars", b"\xff\xfe#1#x|")]


def rows(path: Path) -> list[tuple[int, str, int]]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute("SELECT dlg_id, callid, state FROM dialog ORDER BY dlg_id"))
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


async def wait_rows(path: Path, call_id: str, state: int | None) -> bool:
    for _ in range(60):
        mine = [r for r in rows(path) if r[1] == call_id]
        if (state is None and not mine) or (state is not None and mine and mine[0][2] == state):
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize(("workers", "db_mode"), [(1, 1), (2, 1), (1, 2)],
                         ids=["workers1", "workers2", "workers1-delayed"])
async def test_a_call_survives_a_restart_and_a_corrupted_row_is_skipped(tmp_path: Path, workers: int,
                                                                        db_mode: int) -> None:
    port, http = free_port(), free_port()
    db = tmp_path / "dialog.sqlite"
    cfg = tmp_path / "dlg.cfg"
    script = SCRIPT.replace('modparam("dialog", "default_timeout", 60)',
                            'modparam("dialog", "default_timeout", 60)\n'
                            f'modparam("dialog", "db_mode", {db_mode})\n'
                            f'modparam("dialog", "db_url", "sqlite://{db}")')
    cfg.write_text(script.replace("WORKERS", str(workers)).replace("HTTPPORT", str(http))
                   .replace("PORT", str(port)))
    server = start(cfg, tmp_path)
    if workers > 1:
        server.wait_for("routescript started", count=1)
    server.http = http  # type: ignore[attr-defined]
    proxy = Proxy(server, port, "udp")
    try:
        async with uas("udp", proxy, "nina") as (caller,), uas("udp", proxy, "otto") as (callee,):
            invite, _got, dialog = await established(caller, callee)
            if db_mode == 2:    # delayed: written every db_update_period (60 s) - and at the stop
                await asyncio.sleep(0.3)
                assert [r for r in rows(db) if r[1] == invite.call_id] == []
            else:
                assert await wait_rows(db, invite.call_id, 4)
            # rows no dialog can come from, as a broken import or a hand edit would leave: a CSeq that is
            # no number, values and profiles that are no name#type#value list, an impossible state
            conn = sqlite3.connect(db)
            for dlg_id, call_id, column, value in BROKEN:
                conn.execute("INSERT INTO dialog (dlg_id, callid, from_uri, from_tag, to_uri, to_tag, "
                             "caller_cseq, callee_cseq, caller_ping_cseq, callee_ping_cseq, caller_sock, "
                             "callee_sock, state, start_time, timeout) VALUES (?, ?, "
                             "'sip:a@x', 'f', 'sip:b@x', 't', '1', '1', 0, 0, '', '', 4, 1, 99999999999)",
                             (dlg_id, call_id))
                conn.execute(f"UPDATE dialog SET {column} = ? WHERE dlg_id = ?",  # noqa: S608 - BROKEN's names
                             (value, dlg_id))
            conn.commit()
            conn.close()
            server.stop()
            server = start(cfg, tmp_path)
            if workers > 1:
                server.wait_for("routescript started", count=1)
            server.http = http  # type: ignore[attr-defined]
            proxy = Proxy(server, port, "udp")
            listed: list[dict[str, object]] = []
            for _ in range(40):
                listed = await dialogs_of(proxy, invite.call_id)
                if listed:
                    break
                await asyncio.sleep(0.05)
            assert len(listed) == 1 and listed[0]["state"] == 4
            assert listed[0]["CALLEES"][0]["callee_contact"] == callee.contact_uri  # type: ignore[index]
            for dlg_id, call_id, _column, _value in BROKEN:
                assert f"row dlg_id={dlg_id} (Call-ID {call_id}) skipped" in server.log()
                assert await dialogs_of(proxy, call_id) == []
            answer = await mi(proxy, "dlg_list")
            assert [d["callid"] for d in answer["result"]["Dialogs"]] == [invite.call_id]  # type: ignore[index]
            bye = caller.request("BYE", dialog=dialog)
            caller.send(bye)
            got_bye = await callee.expect_request("BYE", call_id=invite.call_id)
            await callee.reply(got_bye, 200)
            assert (await caller.expect_response(bye, final=True)).status == 200
            assert await gone(proxy, invite.call_id)
            if db_mode == 2:    # the call's end reaches the table at the next period or at the stop
                server.stop()
            assert await wait_rows(db, invite.call_id, None)
            assert "in-dialog BYE downstream status 5" in server.log()
    finally:
        server.stop()
