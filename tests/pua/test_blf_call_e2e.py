"""Busy lamp with real calls: `routescript run` as a proxy with the dialog module, pua and pua_dialoginfo
publishing into its own presence in-process, and a phone subscribed to Event: dialog for the callee over
UDP: INVITE / 180 / 200 / ACK / BYE through the proxy make the watcher see early -> confirmed -> the
dialog gone (with force_dummy_dialog: a terminated dummy); a presence watcher of the callee sees
"On the phone" meanwhile (mix_dialog_presence). 1 and 2 UDP workers, UDP calls."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proxy"))
from proxy_e2e import Proxy, free_port, start, target, uas

from routescript.sip import SIPRequest, SIPResponse, build_reply
from routescript.testing import SipTestClient

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio

CT = "application/dialog-info+xml"
NS = {"d": "urn:ietf:params:xml:ns:dialog-info", "p": "urn:ietf:params:xml:ns:pidf",
      "rpid": "urn:ietf:params:xml:ns:pidf:rpid"}

SCRIPT = r"""
log_level = 3
stderror_enabled = yes
udp_workers = WORKERS
socket = udp:127.0.0.1:PORT

loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "sipmsgops.so"
loadmodule "dialog.so"
loadmodule "DBMOD"
loadmodule "presence.so"
loadmodule "presence_xml.so"
loadmodule "presence_dialoginfo.so"
loadmodule "pua.so"
loadmodule "pua_dialoginfo.so"

modparam("tm", "fr_timeout", 2)
modparam("tm", "fr_inv_timeout", 5)
modparam("presence", "db_url", "DBURL")
modparam("presence", "mix_dialog_presence", 1)
modparam("presence", "clean_period", 5)
modparam("presence_xml", "force_active", 1)
modparam("presence_dialoginfo", "force_dummy_dialog", 1)

route {
    if (has_totag()) {
        if (loose_route()) { t_relay(); exit; }
        if (is_method("ACK")) { if (t_check_trans()) t_relay(); exit; }
        if (is_method("SUBSCRIBE")) { route(presence); exit; }
        sl_send_reply(404, "Not here");
        exit;
    }
    if (is_method("PUBLISH|SUBSCRIBE")) { route(presence); exit; }
    if (is_method("CANCEL")) { if (t_check_trans()) t_relay(); exit; }
    if (is_method("INVITE")) {
        create_dialog();
        dialoginfo_set();
        record_route();
    }
    if (!t_relay()) sl_reply_error();
}

route[presence] {
    if (!t_newtran()) { sl_reply_error(); exit; }
    if (is_method("PUBLISH")) handle_publish(); else handle_subscribe();
}
"""


@pytest.fixture(scope="module", params=[1, 2], ids=["workers1", "workers2"])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            module_presence_db: TestDb) -> Iterator[Proxy]:
    workers = request.param
    tmp = tmp_path_factory.mktemp(f"blf{workers}")
    port = free_port()
    url = module_presence_db.url
    dbmod = "db_postgres.so" if url.startswith("postgres") else "db_sqlite.so"
    cfg = tmp / "blf.cfg"
    cfg.write_text(SCRIPT.replace("WORKERS", str(workers)).replace("PORT", str(port))
                   .replace("DBURL", url).replace("DBMOD", dbmod))
    server = start(cfg, tmp)
    if workers > 1:
        server.wait_for("routescript started", count=1)
    try:
        yield Proxy(server, port, "udp")
    finally:
        server.stop()


def reply_as(callee: SipTestClient, request: SIPRequest, status: int, tag: str,
             headers: list[tuple[str, str]] | None = None) -> SIPResponse:
    response = build_reply(request, status, to_tag=tag, headers=headers or [], record_route=True)
    callee._send_response(response)
    return response


def states(body: bytes) -> list[tuple[str | None, str | None]]:
    root = etree.fromstring(body)
    assert root.get("state") == "full"
    return [(d.get("direction"), d.findtext("d:state", namespaces=NS)) for d in root.findall("d:dialog", NS)]


async def next_states(watcher: SipTestClient, call_id: str,
                      want: list[tuple[str | None, str | None]]) -> bytes:
    """NOTIFYs until one carries `want` (the proxy may send an intermediate state first)."""
    for _ in range(6):
        n = await watcher.expect_request("NOTIFY", call_id=call_id, timeout=5)
        if states(n.body) == want:
            return bytes(n.body)
    raise AssertionError(f"no NOTIFY with {want}")


async def test_a_call_through_the_proxy_lights_the_lamp(running: Proxy) -> None:
    proxy = running
    async with uas("udp", proxy, "alice") as (caller,), uas("udp", proxy, "bob") as (callee,), \
            uas("udp", proxy, "dave") as (dave,), uas("udp", proxy, "erin") as (erin,):
        dave.auto_reply["NOTIFY"] = 200
        erin.auto_reply["NOTIFY"] = 200
        bob = f"sip:{callee.user}@127.0.0.1:{proxy.port}"
        blf = dave.subscribe(bob, event="dialog", accept=CT, expires=600)
        assert (await dave.send_request(blf)).status == 200
        first = await dave.expect_request("NOTIFY", call_id=blf.call_id, timeout=5)
        assert states(first.body) == [("recipient", "terminated")]           # the dummy: idle
        pres = erin.subscribe(bob, event="presence", expires=600)
        assert (await erin.send_request(pres)).status == 200
        await erin.expect_request("NOTIFY", call_id=pres.call_id, timeout=5)

        invite = caller.request("INVITE", target(callee), body=b"v=0\r\n", content_type="application/sdp")
        caller.send(invite)
        got = await callee.expect_request("INVITE", call_id=invite.call_id)
        reply_as(callee, got, 180, "bobtag")
        await next_states(dave, blf.call_id, [("recipient", "early")])
        reply_as(callee, got, 200, "bobtag", [("Contact", f"<{callee.contact_uri}>")])
        final = await caller.expect_response(invite, final=True)
        assert final.status == 200
        dialog = caller.ack_2xx(invite, final)
        body = await next_states(dave, blf.call_id, [("recipient", "confirmed")])
        d = etree.fromstring(body).find("d:dialog", NS)
        assert d is not None and d.get("call-id") == invite.call_id and d.get("local-tag") == "bobtag"
        assert d.get("remote-tag") == invite.from_.tag
        for _ in range(6):
            p = await erin.expect_request("NOTIFY", call_id=pres.call_id, timeout=5)
            if etree.fromstring(p.body).findtext("p:note", namespaces=NS) == "On the phone":
                break
        else:
            raise AssertionError("the presence watcher never saw On the phone")
        assert etree.fromstring(p.body).find(".//rpid:on-the-phone", NS) is not None

        bye = caller.request("BYE", dialog=dialog)
        caller.send(bye)
        got_bye = await callee.expect_request("BYE", call_id=invite.call_id)
        await callee.reply(got_bye, 200)
        assert (await caller.expect_response(bye, final=True)).status == 200
        await next_states(dave, blf.call_id, [("recipient", "terminated")])
        for _ in range(6):
            p = await erin.expect_request("NOTIFY", call_id=pres.call_id, timeout=5)
            if b"on-the-phone" not in p.body:
                break
        else:
            raise AssertionError("the presence watcher still sees On the phone")
