"""Busy lamp over real UDP, the server in this process: pua_dialoginfo publishes a call's states through
pua into our own presence module in-process, and a phone subscribed to Event: dialog for bob gets the
NOTIFYs (early -> confirmed -> the dialog gone, with force_dummy_dialog a terminated dummy dialog); a
presence watcher of bob sees him "On the phone" meanwhile (mix_dialog_presence). The dialog module is the
FakeDialogApi (tests/pua/fake_dialog.py): the INVITE goes through the script (dialoginfo_set()), the
test drives its states. The coordinator adds the real-call suite once the dialog module is merged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fake_dialog import FakeDialogApi
from lxml import etree

from routescript.core.server import Server
from routescript.modules.pua_dialoginfo import _dialog
from routescript.modules.pua_dialoginfo._dialog import DlgState
from routescript.testing import SipTestClient
from routescript.testing.ports import free_port

pytestmark = pytest.mark.asyncio

CT = "application/dialog-info+xml"
NS = {"d": "urn:ietf:params:xml:ns:dialog-info", "p": "urn:ietf:params:xml:ns:pidf",
      "rpid": "urn:ietf:params:xml:ns:pidf:rpid"}

CFG = """
log_level = 2
socket = udp:127.0.0.1:{port}

loadmodule "proto_udp.so"
loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "tm.so"
loadmodule "db_sqlite.so"
loadmodule "presence.so"
loadmodule "presence_xml.so"
loadmodule "presence_dialoginfo.so"
loadmodule "dialog.so"
loadmodule "pua.so"
loadmodule "pua_dialoginfo.so"

modparam("presence", "db_url", "sqlite://{db}")
modparam("presence", "mix_dialog_presence", 1)
modparam("presence_xml", "force_active", 1)
modparam("presence_dialoginfo", "force_dummy_dialog", {dummy})
modparam("pua_dialoginfo", "caller_spec_param", "$var(caller)")

route {{
    if (is_method("PUBLISH|SUBSCRIBE")) {{
        if (!t_newtran()) {{ sl_reply_error(); exit; }}
        if (is_method("PUBLISH")) handle_publish(); else handle_subscribe();
        exit;
    }}
    if (is_method("INVITE")) {{
        $var(caller) = "\\"Alice A.\\" <sip:alice@127.0.0.1>";
        if (!dialoginfo_set()) {{ sl_send_reply(500, "No dialoginfo"); exit; }}
        sl_send_reply(180, "Ringing");
        exit;
    }}
    sl_send_reply(405, "Method Not Allowed");
}}
"""


def dialogs(body: bytes) -> list[tuple[str | None, str | None, str | None]]:
    root = etree.fromstring(body)
    assert root.tag == "{urn:ietf:params:xml:ns:dialog-info}dialog-info" and root.get("state") == "full"
    return [(d.get("id"), d.get("direction"), d.findtext("d:state", namespaces=NS))
            for d in root.findall("d:dialog", NS)]


async def run(tmp_path: Path, fake: FakeDialogApi, dummy: int) -> tuple[Server, int]:
    port = free_port()
    cfg = tmp_path / "blf.cfg"
    cfg.write_text(CFG.format(port=port, db=tmp_path / "p.sqlite", dummy=dummy))
    server = Server()
    server.load(str(cfg))
    await server.start()
    return server, port


@pytest.mark.parametrize("dummy", [0, 1])
async def test_call_states_reach_the_blf_watcher(tmp_path: Path, monkeypatch: Any, dummy: int) -> None:
    fake = FakeDialogApi()
    monkeypatch.setattr(_dialog, "bind_dialog", lambda server: fake)
    server, port = await run(tmp_path, fake, dummy)
    try:
        addr = ("127.0.0.1", port)
        async with await SipTestClient.start("udp", addr, user="dave") as dave, \
                await SipTestClient.start("udp", addr, user="erin") as erin, \
                await SipTestClient.start("udp", addr, user="alice") as alice:
            dave.auto_reply["NOTIFY"] = 200
            erin.auto_reply["NOTIFY"] = 200
            bob = f"sip:bob@127.0.0.1:{port}"
            blf = dave.subscribe(bob, event="dialog", accept=CT, expires=600)
            assert (await dave.send_request(blf)).status == 200
            first = await dave.expect_request("NOTIFY", call_id=blf.call_id)
            assert dialogs(first.body) == ([("dummy-idle", "recipient", "terminated")] if dummy else [])
            pres = erin.subscribe(bob, event="presence", expires=600)
            assert (await erin.send_request(pres)).status == 200
            await erin.expect_request("NOTIFY", call_id=pres.call_id)

            invite = alice.request("INVITE", bob)
            alice.send(invite)
            ringing = await alice.expect_response(invite)
            assert ringing.status == 180
            [dlg] = fake.dialogs()
            assert dlg.flags & _dialog.DLG_FLAG_PUA_DIALOGINFO

            fake.change(dlg.dlg_id, DlgState.EARLY, to_tag="bobtag",
                        callee_contact=f"sip:bob@127.0.0.1:{port}")
            n = await dave.expect_request("NOTIFY", call_id=blf.call_id)
            assert dialogs(n.body) == [(invite.call_id, "recipient", "early")]
            d = etree.fromstring(n.body).find("d:dialog", NS)
            assert d is not None and (d.get("call-id"), d.get("local-tag"), d.get("remote-tag")) == \
                (invite.call_id, "bobtag", invite.from_.tag)
            assert d.findtext("d:remote/d:identity", namespaces=NS) == "sip:alice@127.0.0.1"
            assert d.find("d:remote/d:identity", NS).get("display") == "Alice A."     # type: ignore[union-attr]
            p = await erin.expect_request("NOTIFY", call_id=pres.call_id)
            assert etree.fromstring(p.body).findtext("p:note", namespaces=NS) == "Proceeding"

            fake.change(dlg.dlg_id, DlgState.CONFIRMED, start=1.0)
            n = await dave.expect_request("NOTIFY", call_id=blf.call_id)
            assert dialogs(n.body) == [(invite.call_id, "recipient", "confirmed")]
            p = await erin.expect_request("NOTIFY", call_id=pres.call_id)
            assert etree.fromstring(p.body).find(".//rpid:on-the-phone", NS) is not None

            fake.change(dlg.dlg_id, DlgState.DELETED, end=2.0, end_reason="bye-caller")
            n = await dave.expect_request("NOTIFY", call_id=blf.call_id)
            assert dialogs(n.body) == ([("dummy-idle", "recipient", "terminated")] if dummy else [])
            p = await erin.expect_request("NOTIFY", call_id=pres.call_id)
            assert b"on-the-phone" not in p.body
            pua = server.modules.get("pua")
            await pua.publisher.drain()                      # type: ignore[union-attr]
            assert len(pua.table) == 0                        # type: ignore[union-attr]
            presence = server.modules.get("presence")
            assert len(presence.service.presentities) == 0     # type: ignore[union-attr]
    finally:
        await server.stop()
