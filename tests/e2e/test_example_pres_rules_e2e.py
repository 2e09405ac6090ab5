"""The documented pres-rules flow on examples/presence.cfg as it ships (only its ports and database moved):
watchers of sip:alice@example.com are pending while alice has no rules; examples/load-pres-rules.py with
examples/pres-rules.xml and --mi (the command in the example's comments and in docs/modules/xcap.md)
stores the rules and has the running server judge the watchers again; each gets what its rule says."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from presence_e2e import ROOT, Srv, free_port, presence_cfg, run_server

from routescript.testing import SipTestClient, pidf

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio
ALICE = "sip:alice@example.com"


async def watcher(srv: Srv, user: str, domain: str) -> SipTestClient:
    client = await SipTestClient.start("udp", ("127.0.0.1", srv.port), user=user, domain=domain, timeout=3)
    client.auto_reply["NOTIFY"] = 200
    return client


async def test_load_pres_rules_as_documented_decides_watchers(tmp_path: Path, presence_db: TestDb) -> None:
    port, http_port = free_port(), free_port()
    cfg = presence_cfg(tmp_path, port, db_url=presence_db.url, http_port=http_port)
    with run_server(cfg, tmp_path) as server:
        srv = Srv(server, port)
        uri = f"sip:alice@example.com:{port}"
        clients = {name: await watcher(srv, *name.split("@"))
                   for name in ("alice@example.com", "carol@example.com", "intern@example.com",
                                "eve@example.net", "spam@example.net")}
        try:
            alice = clients.pop("alice@example.com")
            resp = await alice.send_request(alice.publish(uri, pidf(ALICE, note="in the office")))
            assert resp.status == 200
            # no rules yet: every watcher is pending (202, a pending NOTIFY without state)
            subs = {}
            for name, w in clients.items():
                sub = w.subscribe(uri, expires=600)
                resp = await w.send_request(sub)
                n = await w.expect_request("NOTIFY", call_id=sub.call_id)
                assert (name, resp.status, n.header("Subscription-State"), n.body) == \
                    (name, 202, "pending;expires=600", b"")
                subs[name] = sub
            # the documented command, run from a checkout with the installed interpreter
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "examples/load-pres-rules.py", presence_db.url, ALICE,
                 "examples/pres-rules.xml", "--mi", f"http://127.0.0.1:{http_port}/mi"],
                cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "watchers refreshed" in done.stdout

            async def notified(name: str) -> tuple[str, bool]:
                n = await clients[name].expect_request("NOTIFY", call_id=subs[name].call_id)
                return n.header("Subscription-State") or "", b"in the office" in n.body

            # colleagues (example.com) allowed: active with the state
            state, shown = await notified("carol@example.com")
            assert state.startswith("active;expires=") and shown
            # example.net blocked: terminated;reason=rejected, nothing shown
            assert await notified("eve@example.net") == ("terminated;reason=rejected", False)
            # the spammer is polite-blocked: active, but never any state
            state, shown = await notified("spam@example.net")
            assert state.startswith("active;expires=") and not shown
            # the intern is excepted from the colleagues and no other rule applies: still pending, not told
            await clients["intern@example.com"].expect_no_request(
                "NOTIFY", call_id=subs["intern@example.com"].call_id, within=0.5)
            # a colleague subscribing now is allowed at once
            async with await watcher(srv, "dan", "example.com") as dan:
                sub = dan.subscribe(uri, expires=600)
                resp = await dan.send_request(sub)
                n = await dan.expect_request("NOTIFY", call_id=sub.call_id)
                assert (resp.status, n.header("Subscription-State")) == (200, "active;expires=600")
                assert b"in the office" in n.body
            await alice.close()
        finally:
            for w in clients.values():
                await w.close()
