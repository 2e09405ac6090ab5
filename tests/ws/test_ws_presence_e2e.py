"""REGISTER, SUBSCRIBE, NOTIFY and a call over WebSocket against examples/webrtc-presence.cfg, with
Python user agents (routescript.testing's client over ws and udp)."""

from __future__ import annotations

from pathlib import Path

from ws_e2e import PAGE_ORIGIN, webrtc_server

from routescript.sip import SIPRequest, SIPResponse
from routescript.testing import SipTestClient
from routescript.testing.client import Dialog

PIDF = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">
  <tuple id="t1"><status><basic>{basic}</basic></status><note>{note}</note></tuple>
</presence>"""


async def test_register_subscribe_notify_over_ws(tmp_path: Path) -> None:
    with webrtc_server(tmp_path) as srv:
        page = await SipTestClient.start("ws", srv.ws, user="alice", ws_origin=PAGE_ORIGIN)
        phone = await SipTestClient.start("udp", srv.udp, user="bob")
        try:
            page.auto_reply["NOTIFY"] = 200
            reg = page.request("REGISTER", page.server_uri, to=page.aor,
                               headers=[("Expires", "600")])
            resp = await page.send_request(reg)
            assert resp.status == 200
            assert "transport=ws" in (resp.header("Contact") or "")
            assert reg.via.transport == "WS"

            sub = page.subscribe(phone.aor, event="presence")
            resp = await page.send_request(sub)
            assert resp.status in (200, 202)
            first = await page.expect_request("NOTIFY", call_id=sub.call_id)
            assert first.via.transport == "WS"   # the NOTIFY came over the page's WebSocket

            body = PIDF.format(entity=phone.aor, basic="open", note="On the phone")
            pub = phone.publish(phone.aor, body)
            assert (await phone.send_request(pub)).status == 200
            notify = await page.expect_request("NOTIFY", call_id=sub.call_id)
            assert b"On the phone" in notify.body
        finally:
            await page.close()
            await phone.close()
        assert "routescript started" in srv.server.log()


async def _register(client: SipTestClient) -> None:
    reg = client.request("REGISTER", client.server_uri, to=client.aor, headers=[("Expires", "600")])
    assert (await client.send_request(reg)).status == 200


def _callee_dialog(invite: SIPRequest, ok: SIPResponse) -> Dialog:
    """The callee's side of the call (RFC 3261 12.1.1): route set = Record-Route in order."""
    return Dialog(call_id=invite.call_id, local_tag=ok.to.tag or "", remote_tag=invite.from_.tag,
                  local_uri=str(invite.to.uri), remote_uri=str(invite.from_.uri),
                  remote_target=str(invite.contacts[0].uri), route_set=[str(r) for r in invite.record_routes],
                  local_cseq=100)


async def _call(caller: SipTestClient, callee: SipTestClient) -> tuple[SIPRequest, list[str]]:
    """caller calls callee through the proxy; callee answers 200; caller ACKs; callee hangs up (BYE
    back along the route set) and caller answers it. The INVITE the callee saw and its Record-Routes."""
    invite = caller.request("INVITE", callee.aor, body=b"v=0\r\n", content_type="application/sdp")
    caller.send(invite)
    seen = await callee.expect_request("INVITE", call_id=invite.call_id)
    contact = ("Contact", f"<{callee.contact_uri}>")
    rr = [("Record-Route", value) for value in seen.header_all("Record-Route")]
    ok = await callee.reply(seen, 200, headers=[contact, *rr])
    final = await caller.expect_response(invite, final=True)
    assert final.status == 200
    caller_dialog = caller.dialog(invite, final)
    caller.send(caller.request("ACK", dialog=caller_dialog, cseq=invite.cseq.number))
    await callee.expect_request("ACK", call_id=invite.call_id)
    bye = callee.request("BYE", dialog=_callee_dialog(seen, ok))
    callee.send(bye)
    got = await caller.expect_request("BYE", call_id=invite.call_id)
    await caller.reply(got, 200)
    assert (await callee.expect_response(bye, final=True)).status == 200
    return seen, [str(r) for r in seen.record_routes]


async def test_call_ws_to_udp_and_back(tmp_path: Path) -> None:
    """A page (ws) calls a phone (udp) and the phone calls the page: INVITE, 200, ACK and BYE cross
    transports through the proxy, with the double Record-Route (udp side and ws side, both r2=on)."""
    with webrtc_server(tmp_path) as srv:
        page = await SipTestClient.start("ws", srv.ws, user="alice", ws_origin=PAGE_ORIGIN)
        phone = await SipTestClient.start("udp", srv.udp, user="bob")
        try:
            await _register(page)
            await _register(phone)
            seen, routes = await _call(page, phone)
            assert seen.via.transport == "UDP"
            assert [r.count("r2=on") for r in routes] == [1, 1]
            assert "transport=ws" in routes[1] and "transport" not in routes[0].split(";lr")[0]
            seen, routes = await _call(phone, page)
            assert seen.via.transport == "WS"   # relayed over the page's own WebSocket
            assert "transport=ws" in routes[0] and len(routes) == 2
        finally:
            await page.close()
            await phone.close()
