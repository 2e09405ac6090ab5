"""presence's in-process entry point for pua (PresenceService.publish_local): the same decision, storage
and NOTIFYs as a PUBLISH request, answered with what the reply would say; and mix_dialog_presence (a
presence watcher sees "on the phone" while the user's dialog publication is live)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from lxml import etree

from routescript.db import open_database
from routescript.modules.presence.mixing import dialog_presence_body, live_dialog_state
from routescript.modules.presence.service import PresenceService, PresenceSettings
from routescript.modules.presence.storage import PresenceStore
from routescript.modules.presence_dialoginfo import dialog_event
from routescript.modules.pua_dialoginfo.xml import Party, build_dialoginfo
from routescript.sip import parse_message
from routescript.testing.presence_doubles import (SOCK, ManualClock, PresenceCtx, PresenceServer,
                                                  presence_registry)
from routescript.transport.address import Source

SRC = Source("udp", SOCK, "127.0.0.1", 48261)
CT = "application/dialog-info+xml"
NS = {"p": "urn:ietf:params:xml:ns:pidf", "dm": "urn:ietf:params:xml:ns:pidf:data-model",
      "rpid": "urn:ietf:params:xml:ns:pidf:rpid", "d": "urn:ietf:params:xml:ns:dialog-info"}


def subscribe(event: str, callid: str) -> Any:
    text = f"""SUBSCRIBE sip:bob@127.0.0.1:5070 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:48261;branch=z9hG4bKs{callid}
From: <sip:dave@127.0.0.1>;tag=ye3j
To: <sip:bob@127.0.0.1>
Call-ID: {callid}
CSeq: 1 SUBSCRIBE
Contact: <sip:dave@127.0.0.1:48261>
Event: {event}
Expires: 600
Content-Length: 0

"""
    return parse_message(text.replace("\n", "\r\n").encode())


def dialog_doc(state: str) -> bytes:
    return build_dialoginfo(state, Party("sip:bob@127.0.0.1"), Party("sip:alice@127.0.0.1"), call_id="c1",
                            initiator=False, local_tag="tb", remote_tag="ta")


async def make(presence_db: Any, *, mix: bool) -> tuple[PresenceService, PresenceServer, Any]:
    db = await open_database(presence_db.url)
    await db.ensure_schema(["presentity", "active_watchers", "watchers"])
    server = PresenceServer(tag_prefix="t-")
    svc = PresenceService(server, presence_registry(extra=[dialog_event()]),
                          PresenceSettings(mix_dialog_presence=mix), store=PresenceStore(db),
                          clock=ManualClock())
    return svc, server, db


async def settle(svc: PresenceService) -> None:
    for _ in range(20):
        await asyncio.sleep(0)
    await svc.sender.drain(1)


def notifies(server: PresenceServer, call_id: str) -> list[Any]:
    return [m for m in server.transactions.sent if m.call_id == call_id]


async def test_publish_local_runs_the_publish_path(presence_db: Any) -> None:
    svc, server, db = await make(presence_db, mix=False)
    try:
        assert await svc.handle_subscribe(PresenceCtx(subscribe("dialog", "w1"), SRC)) == 1
        await settle(svc)
        r = await svc.publish_local("sip:bob@127.0.0.1:5070;transport=udp", "dialog", dialog_doc("early"),
                                    expires=600)
        assert r.status == 200 and r.etag and r.expires == 600
        assert [(row["username"], row["domain"], row["etag"]) for row in await db.query("presentity")] == \
            [("bob", "127.0.0.1", r.etag)]
        await settle(svc)
        last = etree.fromstring(notifies(server, "w1")[-1].body)
        assert last.findtext("d:dialog/d:state", namespaces=NS) == "early"
        # modify with the ETag, refresh without a body, unknown ETag 412, removal
        m = await svc.publish_local("sip:bob@127.0.0.1", "dialog", dialog_doc("confirmed"), etag=r.etag,
                                    expires=600)
        assert m.status == 200 and m.etag and m.etag != r.etag
        await settle(svc)
        assert etree.fromstring(notifies(server, "w1")[-1].body).findtext(
            "d:dialog/d:state", namespaces=NS) == "confirmed"
        f = await svc.publish_local("sip:bob@127.0.0.1", "dialog", None, etag=m.etag, expires=300)
        assert f.status == 200 and f.expires == 300
        bad = await svc.publish_local("sip:bob@127.0.0.1", "dialog", None, etag="nope", expires=300)
        assert (bad.status, bad.reason, bad.etag) == (412, "Conditional request failed", None)
        gone = await svc.publish_local("sip:bob@127.0.0.1", "dialog", dialog_doc("terminated"), etag=f.etag,
                                       expires=0)
        assert gone.status == 200 and gone.expires == 0
        assert await db.query("presentity") == []
        await settle(svc)
        assert etree.fromstring(notifies(server, "w1")[-1].body).find("d:dialog", NS) is None
        # no SIP reply was ever sent for these
        assert [resp.status for resp in server.replies] == [200]       # the SUBSCRIBE's
        # errors: an unknown event, a presentity that is no URI, a body the package refuses
        assert (await svc.publish_local("sip:bob@127.0.0.1", "nosuch", b"x")).status == 489
        assert (await svc.publish_local("not a uri", "dialog", b"x")).status == 400
        assert (await svc.publish_local("sip:bob@127.0.0.1", "dialog", b"<oops")).status == 415
    finally:
        await svc.sender.close()
        await db.close()


def test_mixing_document_as_opensips() -> None:
    assert live_dialog_state([]) is None
    assert live_dialog_state([dialog_doc("terminated"), b"<not xml"]) is None
    assert live_dialog_state([dialog_doc("trying")]) == "early"
    assert live_dialog_state([dialog_doc("early"), dialog_doc("confirmed")]) == "confirmed"
    body = dialog_presence_body("sip:bob@127.0.0.1", [dialog_doc("confirmed")])
    assert body is not None
    root = etree.fromstring(body)
    assert root.tag == "{urn:ietf:params:xml:ns:pidf}presence" and root.get("entity") == "sip:bob@127.0.0.1"
    assert root.find("p:tuple", NS).get("id") == "tuple_mixingid"                      # type: ignore[union-attr]
    assert root.findtext("p:tuple/p:status/p:basic", namespaces=NS) == "open"
    assert root.findtext("p:note", namespaces=NS) == "On the phone"
    person = root.find("dm:person", NS)
    assert person is not None and person.get("id") == "pers_mixingid"
    assert person.find("rpid:activities/rpid:on-the-phone", NS) is not None
    assert person.findtext("dm:note", namespaces=NS) == "On the phone"
    early = etree.fromstring(dialog_presence_body("sip:bob@127.0.0.1", [dialog_doc("early")]) or b"")
    assert early.findtext("p:note", namespaces=NS) == "Proceeding"


@pytest.mark.parametrize("mix", [True, False])
async def test_mix_dialog_presence(presence_db: Any, mix: bool) -> None:
    svc, server, db = await make(presence_db, mix=mix)
    try:
        assert await svc.handle_subscribe(PresenceCtx(subscribe("presence", "p1"), SRC)) == 1
        await settle(svc)
        first = notifies(server, "p1")
        r = await svc.publish_local("sip:bob@127.0.0.1", "dialog", dialog_doc("confirmed"), expires=600)
        assert r.status == 200
        await settle(svc)
        sent = notifies(server, "p1")
        if not mix:
            assert len(sent) == len(first)      # a dialog change is no presence change
            return
        assert len(sent) == len(first) + 1
        on_phone = etree.fromstring(sent[-1].body)
        assert on_phone.findtext("p:note", namespaces=NS) == "On the phone"
        assert on_phone.find(".//rpid:on-the-phone", NS) is not None
        # the call ends: the presence watcher is told again, without the on-the-phone state
        await svc.publish_local("sip:bob@127.0.0.1", "dialog", dialog_doc("terminated"), etag=r.etag,
                                expires=0)
        await settle(svc)
        after = notifies(server, "p1")[-1]
        assert after is not sent[-1] and b"on-the-phone" not in after.body
        assert etree.fromstring(after.body).findtext("p:tuple/p:status/p:basic", namespaces=NS) == "closed"
    finally:
        await svc.sender.close()
        await db.close()
