"""What a peer sends and the server stores or writes into a body, validated at input, over
`routescript run examples/presence.cfg` (SQLite and PostgreSQL):

- a Call-ID with a control character (the 200,000-datagram fuzz of issue 15 found NUL and \\x01 accepted,
  and every later watcherinfo document of that presentity failing in lxml), a tag or an event id that is
  no token: 400 at the SIP layer, and the presentity's watcher-info subscriber keeps getting its bodies;
- a subscription row holding such a character anyway (an old or shared database): the watcherinfo body is
  still built, the value %-escaped;
- a PIDF with two tuples of one id, or a tuple outside the PIDF namespace (RFC 3863 4.1): 400 with a
  reason phrase saying what is wrong, and no watcher hears of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from lxml import etree
from presence_e2e import Srv, free_port, presence_cfg, run_server, start

from routescript.testing import SipTestClient, pidf

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio
NS = {"p": "urn:ietf:params:xml:ns:pidf", "w": "urn:ietf:params:xml:ns:watcherinfo"}
Watchers = list[tuple[str, str, str]]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, presence_dbs: Callable[[], TestDb]) -> Iterator[Srv]:
    tmp = tmp_path_factory.mktemp("validate")
    port = free_port()
    with run_server(presence_cfg(tmp, port, db_url=presence_dbs().url), tmp) as server:
        yield Srv(server, port)


def winfo(body: bytes) -> tuple[str, str, Watchers]:
    root = etree.fromstring(body)
    wl = root.find("w:watcher-list", NS)
    assert wl is not None
    watchers = [(w.get("id"), w.get("status"), (w.text or "").strip()) for w in wl.findall("w:watcher", NS)]
    return root.get("version"), root.get("state"), watchers


async def unparsable_reply(client: SipTestClient, within: float = 3.0) -> bytes:
    """The answer to a request whose Call-ID the test client itself cannot parse back (it copies the bad
    Call-ID): it lands in `client.garbage`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not client.garbage:
        if loop.time() > deadline:
            raise AssertionError(f"no unparsable reply within {within}s; parsed: {client.responses[-1:]}")
        await asyncio.sleep(0.02)
    return client.garbage.pop(0)


async def winfo_subscriber(srv: Srv, client: SipTestClient, user: str) -> tuple[str, Watchers]:
    """`client` subscribes to `user`'s watcher list; its first NOTIFY's (call id, watchers)."""
    ws = client.subscribe(srv.uri(user), event="presence.winfo", accept="application/watcherinfo+xml")
    assert (await client.send_request(ws)).status == 200
    n = await client.expect_request("NOTIFY", call_id=ws.call_id)
    return ws.call_id, winfo(n.body)[2]


@pytest.mark.parametrize("bad", ["\x00", "\x01", "\x1b", "\x7f"])
async def test_call_id_with_control_character_is_400_and_winfo_goes_on(srv: Srv, bad: str) -> None:
    user = f"kim{ord(bad)}"
    async with await srv.client(user) as kim, await srv.client("lou") as lou, await srv.client("max") as mx:
        for c in (kim, lou, mx):
            c.auto_reply["NOTIFY"] = 200
        ws, watchers = await winfo_subscriber(srv, kim, user)
        assert watchers == []
        # the fuzz's datagram: a SUBSCRIBE whose Call-ID holds a control character
        lou.send(lou.subscribe(srv.uri(user), call_id=f"fuzz{bad}callid"))
        answer = await unparsable_reply(lou)
        assert answer.startswith(b"SIP/2.0 400 Bad Call-ID header\r\n")
        await kim.expect_no_request("NOTIFY", call_id=ws, within=0.3)
        # the watcher list goes on: a new watcher (partial), then that watcher leaving (the full list)
        sub = mx.subscribe(srv.uri(user))
        resp = await mx.send_request(sub)
        assert resp.status == 200
        n = await kim.expect_request("NOTIFY", call_id=ws)
        assert winfo(n.body) == ("1", "partial", [(sub.call_id, "active", mx.aor)])
        await mx.send_request(mx.subscribe(event="presence", expires=0, dialog=mx.dialog(sub, resp)))
        n = await kim.expect_request("NOTIFY", call_id=ws)
        version, state, _ = winfo(n.body)
        assert (version, state) == ("2", "full")
    assert "Traceback" not in srv.server.log()


@pytest.mark.parametrize(
    ("header", "value"),
    [("From", '<sip:lou@127.0.0.1>;tag="a b"'), ("From", '<sip:lou@127.0.0.1>;tag="x;y=1"'),
     ("From", "<sip:lou@127.0.0.1>;tag"), ("Event", 'presence;id="1;q=2"'), ("Event", 'presence;id="a b"')],
)
async def test_tag_or_event_id_that_is_no_token_is_400(srv: Srv, header: str, value: str) -> None:
    # tag-param = "tag" EQUAL token (RFC 3261 25.1), "id" EQUAL token (RFC 6665 8.2.1): both are stored
    # and written back as they are in every NOTIFY of the dialog.
    async with await srv.client("lou") as lou:
        lou.auto_reply["NOTIFY"] = 200
        sub = lou.subscribe(srv.uri("ned"))
        sub.set_header(header, value)
        resp = await lou.send_request(sub)
        assert resp.status == 400
        await lou.expect_no_request("NOTIFY", call_id=sub.call_id, within=0.3)


async def test_stored_watcher_with_control_character_still_gets_a_winfo_body(tmp_path: Path,
                                                                             presence_db: TestDb) -> None:
    """A subscription row written by something else holds a control character in its Call-ID: after a
    restart the watcher-info subscriber gets its full list anyway, that id %-escaped."""
    port = free_port()
    cfg = presence_cfg(tmp_path, port, db_url=presence_db.url)
    server = start(cfg, tmp_path)
    srv = Srv(server, port)
    try:
        async with await srv.client("ola") as ola, await srv.client("pia") as pia:
            pia.auto_reply["NOTIFY"] = 200
            ola.auto_reply["NOTIFY"] = 200
            sub = pia.subscribe(srv.uri("ola"))
            assert (await pia.send_request(sub)).status == 200
            await pia.expect_request("NOTIFY", call_id=sub.call_id)
            assert server.stop() == 0   # a clean stop writes the subscription
            presence_db.execute("UPDATE active_watchers SET callid = ? WHERE callid = ?", "old\x01row",
                                sub.call_id)
            assert presence_db.rows("SELECT callid FROM active_watchers") == [("old\x01row",)]
            server = start(presence_cfg(tmp_path, port, db_url=presence_db.url, name="again.cfg"), tmp_path)
            server.wait_for("0 publications and 1 subscriptions loaded")
            _, watchers = await winfo_subscriber(srv, ola, "ola")
            assert watchers == [("old%01row", "active", pia.aor)]
            assert "holds characters XML cannot carry" in server.log()
            assert "Traceback" not in server.log()
    finally:
        server.stop()


_PIDF_OPEN = b'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:rex@127.0.0.1" '
_OPEN_TUPLE = b'<tuple id="t1"><status><basic>open</basic></status></tuple>'

BROKEN_PIDF = {
    "duplicate tuple id": (
        _PIDF_OPEN + b">" + _OPEN_TUPLE + b'<tuple id="t1"><status><basic>closed</basic></status></tuple>'
        + b"</presence>",
        "Duplicate id in PIDF document"),
    "tuple id reused by a person": (
        _PIDF_OPEN + b'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model">' + _OPEN_TUPLE
        + b'<dm:person id="t1"/></presence>',
        "Duplicate id in PIDF document"),
    "tuple in a foreign namespace": (
        _PIDF_OPEN + b'xmlns:x="urn:example:x">' + _OPEN_TUPLE
        + b'<x:tuple id="t2"><x:status><x:basic>closed</x:basic></x:status></x:tuple></presence>',
        "PIDF tuple outside the PIDF namespace"),
    "tuple in no namespace": (
        b'<?xml version="1.0"?><p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" entity="sip:rex@127.0.0.1">'
        + _OPEN_TUPLE + b"</p:presence>",
        "PIDF tuple outside the PIDF namespace"),
}

RPID_PIDF = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
    b'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" '
    b'entity="sip:rex@127.0.0.1"><tuple id="desk"><status><basic>open</basic></status></tuple>'
    b'<tuple id="soft"><status><basic>closed</basic></status></tuple>'
    b'<dm:person id="rex"><rpid:activities><rpid:busy/></rpid:activities></dm:person>'
    b'<dm:device id="dev"><dm:deviceID>urn:uuid:1</dm:deviceID></dm:device></presence>'
)


@pytest.mark.parametrize("what", sorted(BROKEN_PIDF))
async def test_publish_breaking_rfc3863_structure_is_400(srv: Srv, what: str) -> None:
    body, reason = BROKEN_PIDF[what]
    async with await srv.client("rex") as rex, await srv.client("sam") as sam:
        sam.auto_reply["NOTIFY"] = 200
        sub = sam.subscribe(srv.uri("rex"))
        subscribed = await sam.send_request(sub)
        assert subscribed.status == 200
        await sam.expect_request("NOTIFY", call_id=sub.call_id)
        resp = await rex.send_request(rex.publish(srv.uri("rex"), body))
        assert (resp.status, resp.reason) == (400, reason)
        await sam.expect_no_request("NOTIFY", call_id=sub.call_id, within=0.3)
        # a valid document with RPID/data-model extensions is still taken and relayed
        resp = await rex.send_request(rex.publish(srv.uri("rex"), RPID_PIDF, expires=60))
        assert resp.status == 200
        n = await sam.expect_request("NOTIFY", call_id=sub.call_id)
        root = etree.fromstring(n.body)
        assert [t.get("id") for t in root.findall("p:tuple", NS)] == ["desk", "soft"]
        await rex.send_request(rex.publish(srv.uri("rex"), None, expires=0, etag=resp.header("SIP-ETag")))
        await sam.expect_request("NOTIFY", call_id=sub.call_id)
        await sam.send_request(sam.subscribe(event="presence", expires=0, dialog=sam.dialog(sub, subscribed)))
    assert "Traceback" not in srv.server.log()


async def test_plain_pidf_still_accepted(srv: Srv) -> None:
    async with await srv.client("tom") as tom:
        resp = await tom.send_request(tom.publish(srv.uri("tom"), pidf(tom.aor, tuple_id="only"), expires=60))
        assert resp.status == 200
