"""pua over SIP: with presence_server set (another presence server: here a test client on UDP) the
publications leave as PUBLISH requests (RFC 3903): the initial one with a body, a modify with
SIP-If-Match, a 412 answered by a fresh initial PUBLISH, the removal with Expires: 0. The server runs in
this process with tm (the request sender) and the FakeDialogApi."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fake_dialog import FakeDialogApi
from test_pua_dialoginfo_module import check_rfc4235, dialog

from routescript.core.server import Server
from routescript.modules.pua_dialoginfo import _dialog
from routescript.modules.pua_dialoginfo._dialog import DlgState
from routescript.testing import SipTestClient
from routescript.testing.ports import free_port

pytestmark = pytest.mark.asyncio

CFG = """
socket = udp:127.0.0.1:{port}
loadmodule "proto_udp.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "dialog.so"
loadmodule "pua.so"
loadmodule "pua_dialoginfo.so"
modparam("pua_dialoginfo", "presence_server", "sip:ps@127.0.0.1:{ps}")
route {{
    exit;
}}
"""


async def test_publish_over_sip_with_412_recovery(tmp_path: Path, monkeypatch: Any) -> None:
    fake = FakeDialogApi()
    monkeypatch.setattr(_dialog, "bind_dialog", lambda server: fake)
    port = free_port()
    async with await SipTestClient.start("udp", ("127.0.0.1", port), user="ps") as ps:
        cfg = tmp_path / "sip.cfg"
        cfg.write_text(CFG.format(port=port, ps=ps.local_port))
        server = Server()
        server.load(str(cfg))
        await server.start()
        try:
            fake.add(dialog(sides="B"))
            fake.change("1:2", DlgState.EARLY, to_tag="tt")
            p1 = await ps.expect_request("PUBLISH")
            assert p1.ruri == "sip:bob@example.com" and p1.header("SIP-If-Match") is None
            assert p1.header("Event") == "dialog" and p1.header("Expires") == "3600"
            assert p1.header("Content-Type") == "application/dialog-info+xml"
            assert p1.header("Route") == f"<sip:ps@127.0.0.1:{ps.local_port};lr>"
            assert check_rfc4235(p1.body).get("entity") == "sip:bob@example.com"
            await ps.reply(p1, 200, headers=[("SIP-ETag", "E1"), ("Expires", "1800")])

            fake.change("1:2", DlgState.CONFIRMED)
            p2 = await ps.expect_request("PUBLISH")
            assert p2.header("SIP-If-Match") == "E1" and b"<state>confirmed</state>" in p2.body
            await ps.reply(p2, 412)
            # RFC 3903: the state published afresh, without SIP-If-Match
            p3 = await ps.expect_request("PUBLISH")
            assert p3.header("SIP-If-Match") is None and b"<state>confirmed</state>" in p3.body
            assert p3.call_id != p2.call_id
            await ps.reply(p3, 200, headers=[("SIP-ETag", "E2"), ("Expires", "1800")])

            fake.change("1:2", DlgState.DELETED)
            p4 = await ps.expect_request("PUBLISH")
            assert p4.header("SIP-If-Match") == "E2" and p4.header("Expires") == "0"
            assert b"<state>terminated</state>" in p4.body
            await ps.reply(p4, 200, headers=[("Expires", "0")])
            pua: Any = server.modules.get("pua")
            for _ in range(100):        # the 200 is handled when the transaction layer passes it on
                if not len(pua.table):
                    break
                await asyncio.sleep(0.01)
            assert len(pua.table) == 0 and pua.publisher.sent == 3 and pua.publisher.failed == 1
            assert fake.dlgs == {}
        finally:
            await server.stop()
