"""examples/blf.cfg restarted in the middle of a call (dialog db_mode 1, presence, usrloc and pua in the
database), over UDP and TCP with 1 and 2 workers: Carol watches Bob's line; Alice calls Bob
(confirmed); the server restarts; dlg_list shows the call again, Carol's subscription is still served, and
when Alice hangs up through the proxy Carol sees Bob's lamp go idle (terminated) and the dialog leaves
dlg_list and the table. The pua table holds both sides' publications across the restart, and presence keeps
one of Bob's lamp. Over TCP the restart breaks every phone's connection: each opens a new one from its own
SIP port (as a phone with a fixed local port does), and the server reaches Bob and Carol on them. The first
run's stop logs no error and no traceback.

Over TCP with 2 workers the restarted server re-publishes the call's state at start, before the phones
can reconnect: Carol's NOTIFY goes out from the worker holding her subscription through worker 0 (the TCP
acceptor), whose connection attempt is refused. Worker 0 reports the failure back (SendFailed,
docs/workers.md 4), so the NOTIFY's transaction ends with the transport error's 503 as in one process and
the subscription stays (before, it ran to its timeout, answered itself 408 and presence ended it)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registrar"))
from rs_e2e import RunningServer, free_port, routescript, start
from test_example_blf_e2e import EXAMPLE, answered, call, notified, watch_line
from test_example_registrar_presence_e2e import DOMAIN, PASSWORD, phones, register

from routescript.mi.client import call_http
from routescript.sip import build_reply

pytestmark = pytest.mark.asyncio

MI = ('loadmodule "httpd.so"\nloadmodule "mi_http.so"\n'
      'modparam("httpd", "ip", "127.0.0.1")\nmodparam("httpd", "port", HTTPPORT)\n')


def launch(cfg: Path, workdir: Path, workers: int) -> RunningServer:
    workdir.mkdir(exist_ok=True)
    server = start(cfg, workdir)
    if workers > 1:
        server.wait_for("routescript started", count=1)
    return server


async def dlg_list(http: int, call_id: str) -> list[dict[str, object]]:
    answer = await asyncio.to_thread(call_http, f"http://127.0.0.1:{http}/mi", "dlg_list",
                                     {"callid": call_id}, timeout=5)
    return answer["Dialogs"]  # type: ignore[no-any-return,index]


def dialog_rows(db: Path, call_id: str) -> list[tuple[int]]:
    return rows(db, "SELECT state FROM dialog WHERE callid = ?", call_id)


def rows(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


@pytest.mark.parametrize(("proto", "workers"), [("udp", 1), ("udp", 2), ("tcp", 1), ("tcp", 2)],
                         ids=["udp-1worker", "udp-2workers", "tcp-1worker", "tcp-2workers"])
async def test_the_lamp_goes_idle_after_a_restart_in_the_middle_of_a_call(tmp_path: Path, proto: str,
                                                                           workers: int) -> None:
    db = tmp_path / "blf.sqlite"
    for user in ("alice", "bob", "carol"):
        added = routescript("db", "subscriber", "add", f"sqlite://{db}", f"{user}@{DOMAIN}", PASSWORD)
        assert added.returncode == 0, added.stderr
    port, http = free_port(), free_port()
    text = (EXAMPLE.read_text().replace("127.0.0.1:5060", f"127.0.0.1:{port}")
            .replace("/tmp/routescript-blf.sqlite", str(db))
            .replace('loadmodule "pua_dialoginfo.so"', 'loadmodule "pua_dialoginfo.so"\n'
                     + MI.replace("HTTPPORT", str(http))))
    assert 'modparam("dialog", "db_mode", 1)' in text
    if workers > 1:
        text = f"udp_workers = {workers}\n" + text
    cfg = tmp_path / "blf.cfg"
    cfg.write_text(text)
    server = launch(cfg, tmp_path / "run1", workers)
    where = (proto, port, server)
    bob_uri = f"sip:bob@{DOMAIN}"
    try:
        async with phones(where, "alice") as (alice,), phones(where, "bob") as (bob,), \
                phones(where, "carol") as (carol,):
            carol.auto_reply["NOTIFY"] = 200
            assert (await register(bob)).status == 200
            blf = await watch_line(carol, bob_uri)

            invite, _ = await call(alice, bob_uri)
            got = await bob.expect_request("INVITE", call_id=invite.call_id)
            dialog = await answered(alice, bob, invite, got)
            await notified(carol, blf.call_id, "confirmed")
            for _ in range(40):
                if dialog_rows(db, invite.call_id) == [(4,)]:
                    break
                await asyncio.sleep(0.05)
            assert dialog_rows(db, invite.call_id) == [(4,)]          # confirmed, in the table

            bobs_lamp = "SELECT etag FROM presentity WHERE username = 'bob' AND event = 'dialog'"
            [(etag,)] = rows(db, bobs_lamp)
            assert server.stop() == 0
            assert not re.findall(r"\b(ERROR|CRITICAL):|Traceback", server.log()), server.log()
            # the pua table: both sides' publications, with their ETags, naming the call they follow
            kept = rows(db, "SELECT pres_uri, pres_id, etag, call_id FROM pua WHERE event = 64")
            assert sorted((p[1][-1], p[3]) for p in kept) == [("A", invite.call_id), ("B", invite.call_id)]
            assert etag in {p[2] for p in kept}
            server = launch(cfg, tmp_path / "run2", workers)
            for phone in (alice, bob, carol):
                await phone.reconnect()      # TCP: the restart broke the connections (UDP: nothing)
            listed = await dlg_list(http, invite.call_id)
            assert len(listed) == 1 and listed[0]["state"] == 4
            await asyncio.sleep(0.5)
            assert len(rows(db, bobs_lamp)) == 1     # republished as a modify of its ETag, not twice

            bye = alice.request("BYE", dialog=dialog)
            alice.send(bye)
            got_bye = await bob.expect_request("BYE", call_id=invite.call_id, timeout=5)
            bob.send(build_reply(got_bye, 200))
            assert (await alice.expect_response(bye, final=True)).status == 200
            await notified(carol, blf.call_id, "terminated")
            for _ in range(40):
                if not await dlg_list(http, invite.call_id) and not dialog_rows(db, invite.call_id):
                    break
                await asyncio.sleep(0.05)
            assert await dlg_list(http, invite.call_id) == [] and dialog_rows(db, invite.call_id) == []
    finally:
        server.stop()
        assert "Traceback" not in server.log()
