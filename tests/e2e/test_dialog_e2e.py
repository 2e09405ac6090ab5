"""Event: dialog (RFC 4235, presence_dialoginfo) over `routescript run examples/bla.cfg` (which loads it):
captures 18a/18b, several publications aggregated into one dialog-info document, a per-watcher version
growing with each NOTIFY, the full state after every SUBSCRIBE, an empty document when nothing is
published, bodies checked at PUBLISH."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from lxml import etree
from presence_e2e import ROOT, Srv, free_port, presence_cfg, run_server

from routescript.testing import SipTestClient

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio

EXAMPLE = ROOT / "examples" / "bla.cfg"
CTYPE = "application/dialog-info+xml"
NS = {"d": "urn:ietf:params:xml:ns:dialog-info"}

# capture 18a, as published
GINA = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" entity="sip:gina@127.0.0.1">
  <dialog id="d1" call-id="c1" local-tag="lt1" remote-tag="rt1" direction="initiator">
    <state>confirmed</state>
  </dialog>
</dialog-info>"""


def doc(entity: str, dialog_id: str, state: str = "early") -> bytes:
    return ('<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="3" state="full" '
            f'entity="{entity}">'
            f'<dialog id="{dialog_id}"><state>{state}</state></dialog></dialog-info>').encode()


def parsed(body: bytes) -> tuple[str | None, str | None, str | None, list[tuple[str, str]]]:
    root = etree.fromstring(body)
    assert root.tag == "{urn:ietf:params:xml:ns:dialog-info}dialog-info"
    return (root.get("version"), root.get("state"), root.get("entity"),
            [(d.get("id"), d.findtext("d:state", namespaces=NS)) for d in root.findall("d:dialog", NS)])


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, module_presence_db: TestDb) -> Iterator[Srv]:
    tmp = tmp_path_factory.mktemp("dialog")
    port = free_port()
    cfg = presence_cfg(tmp, port, db_url=module_presence_db.url, example=EXAMPLE, name="dialog.cfg")
    with run_server(cfg, tmp) as server:
        yield Srv(server, port)


def publish(c: SipTestClient, uri: str, body: bytes | None, expires: int = 600, **kw: object):  # type: ignore[no-untyped-def]
    return c.publish(uri, body, event="dialog", content_type=CTYPE, expires=expires, **kw)


async def test_publish_then_subscribe_as_captured(srv: Srv) -> None:
    async with await srv.client("gina") as gina, await srv.client("bob") as bob:
        r = await gina.send_request(publish(gina, srv.uri("gina"), GINA))
        assert r.status == 200 and r.header("SIP-ETag") and r.header("Expires") == "600"
        sub = bob.subscribe(srv.uri("gina"), event="dialog", accept=CTYPE, expires=600)
        resp = await bob.send_request(sub)
        assert resp.status == 200
        n = await bob.expect_request("NOTIFY", call_id=sub.call_id)
        await bob.reply(n)
        assert n.header("Event") == "dialog" and n.header("Content-Type") == CTYPE
        assert n.header("Subscription-State") == "active;expires=600"
        assert parsed(n.body) == ("0", "full", "sip:gina@127.0.0.1", [("d1", "confirmed")])
        d = etree.fromstring(n.body).find("d:dialog", NS)
        assert d is not None
        assert (d.get("call-id"), d.get("local-tag"), d.get("remote-tag"), d.get("direction")) == \
            ("c1", "lt1", "rt1", "initiator")


async def test_aggregation_and_per_watcher_version(srv: Srv) -> None:
    async with await srv.client("hugo") as desk, await srv.client("hugo") as mobile, \
            await srv.client("ann") as ann, await srv.client("ben") as ben:
        ann.auto_reply["NOTIFY"] = 200
        ben.auto_reply["NOTIFY"] = 200
        s_ann = ann.subscribe(srv.uri("hugo"), event="dialog", accept=CTYPE)
        r_ann = await ann.send_request(s_ann)
        n = await ann.expect_request("NOTIFY", call_id=s_ann.call_id)
        # nothing published: the empty full document, version 0 (measured)
        assert parsed(n.body) == ("0", "full", "sip:hugo@127.0.0.1", [])
        r1 = await desk.send_request(publish(desk, srv.uri("hugo"), doc("sip:hugo@127.0.0.1", "a", "early")))
        n = await ann.expect_request("NOTIFY", call_id=s_ann.call_id)
        assert parsed(n.body)[0] == "1" and parsed(n.body)[3] == [("a", "early")]
        # a second watcher arrives later: its own version starts at 0
        s_ben = ben.subscribe(srv.uri("hugo"), event="dialog", accept=CTYPE)
        await ben.send_request(s_ben)
        n = await ben.expect_request("NOTIFY", call_id=s_ben.call_id)
        assert parsed(n.body)[0] == "0" and parsed(n.body)[3] == [("a", "early")]
        # a second device: one document with both publications' dialogs
        r2 = await mobile.send_request(publish(mobile, srv.uri("hugo"),
                                               doc("sip:hugo@127.0.0.1", "b", "confirmed")))
        assert r2.status == 200
        n_ann = await ann.expect_request("NOTIFY", call_id=s_ann.call_id)
        n_ben = await ben.expect_request("NOTIFY", call_id=s_ben.call_id)
        assert parsed(n_ann.body) == ("2", "full", "sip:hugo@127.0.0.1", [("a", "early"), ("b", "confirmed")])
        assert parsed(n_ben.body) == ("1", "full", "sip:hugo@127.0.0.1", [("a", "early"), ("b", "confirmed")])
        # a refresh SUBSCRIBE gets the full state again, version 3
        await ann.send_request(ann.subscribe(event="dialog", dialog=ann.dialog(s_ann, r_ann)))
        n = await ann.expect_request("NOTIFY", call_id=s_ann.call_id)
        assert parsed(n.body) == ("3", "full", "sip:hugo@127.0.0.1", [("a", "early"), ("b", "confirmed")])
        # the desk's publication goes away: its dialog leaves the document
        await desk.send_request(publish(desk, srv.uri("hugo"), None, expires=0, etag=r1.header("SIP-ETag")))
        n = await ann.expect_request("NOTIFY", call_id=s_ann.call_id)
        assert parsed(n.body) == ("4", "full", "sip:hugo@127.0.0.1", [("b", "confirmed")])


@pytest.mark.parametrize("body,status", [
    (b"<dialog-info", 415),                                              # not XML
    (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:x@y"/>', 400),  # not dialog-info
    ((b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="sip:x@y">'
      b"<dialog><state>early</state></dialog></dialog-info>"), 400),     # a dialog without id
])
async def test_bad_bodies_refused(srv: Srv, body: bytes, status: int) -> None:
    async with await srv.client("ida") as ida:
        r = await ida.send_request(publish(ida, srv.uri("ida"), body))
        assert r.status == status
