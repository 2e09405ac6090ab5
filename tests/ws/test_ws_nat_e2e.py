"""A page-like WebSocket client that writes a made-up `xyz.invalid` host in its Via and Contact, as JsSIP
and SIP.js do, against examples/webrtc-presence.cfg: nathelper's fix_nated_register/fix_nated_contact
make calls both ways and NOTIFYs reach it (before nathelper, in-dialog requests towards it got 478)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from ws_e2e import PAGE_ORIGIN, WebrtcServer, call, register, webrtc_server

from routescript.testing import SipTestClient

INVALID = "df7jal23ls0d.invalid"


@asynccontextmanager
async def page_and_phone(srv: WebrtcServer) -> AsyncIterator[tuple[SipTestClient, SipTestClient]]:
    """alice, a page over WebSocket writing INVALID in Via and Contact, and bob, a phone over UDP."""
    page = await SipTestClient.start("ws", srv.ws, user="alice", ws_origin=PAGE_ORIGIN)
    page.sent_by_host = INVALID
    phone = await SipTestClient.start("udp", srv.udp, user="bob")
    try:
        yield page, phone
    finally:
        await page.close()
        await phone.close()


def _page_address(page: SipTestClient) -> str:
    return f"sip:alice@127.0.0.1:{page.local_port};transport=ws"


async def test_invalid_contact_page_calls_phone_and_phone_hangs_up(tmp_path: Path) -> None:
    with webrtc_server(tmp_path) as srv:
        async with page_and_phone(srv) as (page, phone):
            ok = await register(page)
            # the binding keeps the Contact the page wrote (JsSIP looks for it in the 200), with the
            # source address fix_nated_register() gave the registrar as its received
            assert f"alice@{INVALID};transport=ws" in (ok.header("Contact") or "")
            assert f'received="sip:127.0.0.1:{page.local_port};transport=ws"' in (ok.header("Contact") or "")
            await register(phone)
            out = await call(page, phone)   # the phone's BYE goes to the page's Contact
            assert str(out.invite.contacts[0].uri) == _page_address(page)
            assert out.bye.ruri == _page_address(page)
            assert out.bye.via.transport == "WS"


async def test_phone_calls_invalid_contact_page_ack_and_bye_both_ways(tmp_path: Path) -> None:
    with webrtc_server(tmp_path) as srv:
        async with page_and_phone(srv) as (page, phone):
            await register(page)
            await register(phone)
            # the page's 200 names xyz.invalid: onreply_route[nat] rewrites it, so the phone's ACK
            # (and, in the first call, the page's BYE back) and its BYE find the page
            out = await call(phone, page)
            assert out.invite.ruri == f"sip:alice@{INVALID};transport=ws"   # its binding, as it wrote it
            assert str(out.ok.contacts[0].uri) == _page_address(page)
            assert out.ack.ruri == _page_address(page)
            again = await call(phone, page, caller_hangs_up=True)
            assert again.bye.ruri == _page_address(page) and again.bye.via.transport == "WS"


async def test_notify_reaches_invalid_contact_watcher(tmp_path: Path) -> None:
    with webrtc_server(tmp_path) as srv:
        async with page_and_phone(srv) as (page, phone):
            page.auto_reply["NOTIFY"] = 200
            sub = page.subscribe(phone.aor, event="presence")
            assert (await page.send_request(sub)).status in (200, 202)
            first = await page.expect_request("NOTIFY", call_id=sub.call_id)
            assert first.ruri == _page_address(page)
            # the subscription stored with the page's address: what a NOTIFY uses once the subscription
            # is read back from the database, not only the connection it came on
            with sqlite3.connect(tmp_path / "webrtc.sqlite") as db:
                rows = db.execute("select contact from active_watchers where callid = ?",
                                  (sub.call_id,)).fetchall()
            assert rows == [(_page_address(page),)]
            pub = phone.publish(phone.aor, b'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:'
                                b'ns:pidf" entity="' + phone.aor.encode() + b'"><tuple id="t"><status>'
                                b'<basic>open</basic></status></tuple></presence>')
            assert (await phone.send_request(pub)).status == 200
            notify = await page.expect_request("NOTIFY", call_id=sub.call_id)
            assert b"<basic>open</basic>" in notify.body and notify.via.transport == "WS"
