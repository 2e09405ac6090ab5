"""REGISTER, SUBSCRIBE, NOTIFY and a call over WebSocket against examples/webrtc-presence.cfg, with
Python user agents (routescript.testing's client over ws and udp)."""

from __future__ import annotations

from pathlib import Path

from ws_e2e import PAGE_ORIGIN, call, register, webrtc_server

from routescript.testing import SipTestClient

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


async def test_call_ws_to_udp_and_back(tmp_path: Path) -> None:
    """A page (ws) calls a phone (udp) and the phone calls the page: INVITE, 200, ACK and BYE cross
    transports through the proxy, with the double Record-Route (udp side and ws side, both r2=on)."""
    with webrtc_server(tmp_path) as srv:
        page = await SipTestClient.start("ws", srv.ws, user="alice", ws_origin=PAGE_ORIGIN)
        phone = await SipTestClient.start("udp", srv.udp, user="bob")
        try:
            await register(page)
            await register(phone)
            out = await call(page, phone)
            assert out.invite.via.transport == "UDP"
            assert [r.count("r2=on") for r in out.routes] == [1, 1]
            assert "transport=ws" in out.routes[1] and "transport" not in out.routes[0].split(";lr")[0]
            back = await call(phone, page)
            assert back.invite.via.transport == "WS"   # relayed over the page's own WebSocket
            assert "transport=ws" in back.routes[0] and len(back.routes) == 2
        finally:
            await page.close()
            await phone.close()
