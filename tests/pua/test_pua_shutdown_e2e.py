"""examples/blf.cfg stopped (SIGTERM) in the middle of a call whose states pua_dialoginfo publishes to the in-
process presence, with the loadmodule lines as the example has them (presence before pua) and with pua loaded
before presence (as many OpenSIPS scripts do): the server stops cleanly (exit 0, no error, warning or
traceback in its log, within the shutdown bound) and what presence acknowledged is in its table - the
confirmed call while it is up; once the BYE went through, not the confirmed call any more (the terminated
publication, under way at the SIGTERM or just done, reaches presence's store before presence closes it). On a
machine this fast the PUBLISH is stored within milliseconds of the BYE, before the stop reaches the modules,
so this suite guards the whole path rather than the race itself: tests/pua/test_pua_stop_order.py holds
publications under way at the stop, deterministically (it failed before the stop order followed the modules'
needs: with pua loaded first, presence closed first and pua's drain waited on a closed store until
shutdown_timeout). UDP and TCP, 1 and 2 workers."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registrar"))
from rs_e2e import free_port, routescript, start
from test_example_blf_e2e import EXAMPLE, answered, call, dialog_states, notified, watch_line
from test_example_registrar_presence_e2e import DOMAIN, PASSWORD, phones, register

pytestmark = pytest.mark.asyncio

PUA_LINES = ('loadmodule "pua.so"              # publications the server makes itself\n'
             'loadmodule "pua_dialoginfo.so"   # ... of the dialogs\' states\n')
PROBLEM = re.compile(r"\b(ERROR|WARNING|CRITICAL):|Traceback")


def blf_cfg(tmp_path: Path, port: int, db: Path, *, workers: int, pua_first: bool) -> Path:
    text = (EXAMPLE.read_text().replace("127.0.0.1:5060", f"127.0.0.1:{port}")
            .replace("/tmp/routescript-blf.sqlite", str(db)))
    assert PUA_LINES in text and text.index('loadmodule "presence.so"') < text.index(PUA_LINES)
    if pua_first:   # pua and pua_dialoginfo right after dialog, before presence
        text = text.replace(PUA_LINES, "").replace('loadmodule "presence.so"',
                                                   PUA_LINES + 'loadmodule "presence.so"')
        assert text.index(PUA_LINES) < text.index('loadmodule "presence.so"')
    if workers > 1:
        text = f"udp_workers = {workers}\n" + text
    cfg = tmp_path / "blf.cfg"
    cfg.write_text(text)
    return cfg


def bob_dialog_bodies(db: Path) -> list[bytes]:
    with sqlite3.connect(db) as con:
        return [bytes(b) for (b,) in con.execute(
            "SELECT body FROM presentity WHERE username = 'bob' AND event = 'dialog'")]


@pytest.mark.parametrize(("proto", "workers", "pua_first", "hang_up"), [
    ("udp", 1, True, True), ("tcp", 2, True, True), ("udp", 2, False, False)],
    ids=["udp-1worker-pua-first-bye", "tcp-2workers-pua-first-bye", "udp-2workers-example-order-mid-call"])
async def test_sigterm_in_the_middle_of_a_call_stops_cleanly_and_keeps_what_was_acknowledged(
        tmp_path: Path, proto: str, workers: int, pua_first: bool, hang_up: bool) -> None:
    db = tmp_path / "blf.sqlite"
    for user in ("alice", "bob", "carol"):
        added = routescript("db", "subscriber", "add", f"sqlite://{db}", f"{user}@{DOMAIN}", PASSWORD)
        assert added.returncode == 0, added.stderr
    port = free_port()
    server = start(blf_cfg(tmp_path, port, db, workers=workers, pua_first=pua_first), tmp_path)
    if workers > 1:
        server.wait_for("routescript started", count=1)
    where = (proto, port, server)
    try:
        async with phones(where, "alice") as (alice,), phones(where, "bob") as (bob,), \
                phones(where, "carol") as (carol,):
            carol.auto_reply["NOTIFY"] = 200
            assert (await register(bob)).status == 200
            blf = await watch_line(carol, f"sip:bob@{DOMAIN}")
            invite, _ = await call(alice, f"sip:bob@{DOMAIN}")
            got = await bob.expect_request("INVITE", call_id=invite.call_id)
            dialog = await answered(alice, bob, invite, got)
            await notified(carol, blf.call_id, "confirmed")          # presence acknowledged it
            if hang_up:
                alice.send(alice.request("BYE", dialog=dialog))
                # the proxy relayed the BYE: the dialog ended and its terminated PUBLISH is under way
                await bob.expect_request("BYE", call_id=invite.call_id, timeout=5)
            began = time.monotonic()
            code = await asyncio.to_thread(server.stop)
            took = time.monotonic() - began
            assert code == 0 and took < 5, f"exit code {code} after {took:.1f} s:\n{server.log()}"
    finally:
        server.stop()
    log = server.log()
    assert "routescript stopped" in log and not PROBLEM.findall(log), log
    states = [dialog_states(b) for b in bob_dialog_bodies(db)]
    if hang_up:
        assert ["confirmed"] not in states      # the call's end reached the table before the stop
    else:
        assert states == [["confirmed"]]        # the call that was up is there for the next start
