"""presence_xml over `routescript run examples/presence.cfg`: several devices aggregated into one PIDF,
no publication -> no body (or a closed PIDF with notify_offline_body), presence.winfo full and partial
watcher lists with a growing version."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from lxml import etree
from presence_e2e import Srv, free_port, presence_cfg, run_server

from routescript.testing import pidf

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio
NS = {"p": "urn:ietf:params:xml:ns:pidf", "w": "urn:ietf:params:xml:ns:watcherinfo"}


def _srv(tmp_path_factory: pytest.TempPathFactory, name: str, db: TestDb,
         **presence: object) -> Iterator[Srv]:
    tmp = tmp_path_factory.mktemp(name)
    port = free_port()
    with run_server(presence_cfg(tmp, port, db_url=db.url, presence=presence or None), tmp) as server:
        yield Srv(server, port)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, presence_dbs: Callable[[], TestDb]) -> Iterator[Srv]:
    yield from _srv(tmp_path_factory, "xml", presence_dbs())


@pytest.fixture(scope="module")
def srv_offline(tmp_path_factory: pytest.TempPathFactory,
                presence_dbs: Callable[[], TestDb]) -> Iterator[Srv]:
    yield from _srv(tmp_path_factory, "offline", presence_dbs(), notify_offline_body=1)


def tuples(body: bytes) -> dict[str, str]:
    root = etree.fromstring(body)
    return {t.get("id"): t.findtext("p:status/p:basic", namespaces=NS) for t in root.findall("p:tuple", NS)}


async def test_two_devices_one_aggregated_pidf(srv: Srv) -> None:
    async with await srv.client("amy") as desk, await srv.client("amy") as mobile, \
            await srv.client("ben") as ben, await srv.client("cat", "tcp") as cat:
        ben.auto_reply["NOTIFY"] = 200
        cat.auto_reply["NOTIFY"] = 200
        r1 = await desk.send_request(desk.publish(srv.uri("amy"), pidf(desk.aor, tuple_id="desk")))
        r2 = await mobile.send_request(mobile.publish(srv.uri("amy"),
                                                      pidf(mobile.aor, "closed", tuple_id="mob")))
        assert r1.status == r2.status == 200
        subs = []
        for w in (ben, cat):
            sub = w.subscribe(srv.uri("amy"))
            assert (await w.send_request(sub)).status == 200
            n = await w.expect_request("NOTIFY", call_id=sub.call_id)
            assert tuples(n.body) == {"desk": "open", "mob": "closed"}
            subs.append(sub)
        # the mobile goes away: both watchers get the same document, the removed tuple closed
        await mobile.send_request(mobile.publish(srv.uri("amy"), None, expires=0, etag=r2.header("SIP-ETag")))
        bodies = []
        for w, sub in zip((ben, cat), subs, strict=True):
            n = await w.expect_request("NOTIFY", call_id=sub.call_id)
            bodies.append(n.body)
        assert bodies[0] == bodies[1]
        assert tuples(bodies[0]) == {"desk": "open", "mob": "closed"}
        # the desk changes: only its tuple is left
        await desk.send_request(desk.publish(srv.uri("amy"), pidf(desk.aor, "closed", tuple_id="desk"),
                                             etag=r1.header("SIP-ETag")))
        n = await ben.expect_request("NOTIFY", call_id=subs[0].call_id)
        assert tuples(n.body) == {"desk": "closed"}


async def test_no_publication_no_body(srv: Srv) -> None:
    async with await srv.client("dan") as dan:
        dan.auto_reply["NOTIFY"] = 200
        sub = dan.subscribe(srv.uri("eve"))
        await dan.send_request(sub)
        n = await dan.expect_request("NOTIFY", call_id=sub.call_id)
        assert n.body == b"" and n.header("Content-Type") is None


async def test_notify_offline_body_closed_pidf(srv_offline: Srv) -> None:
    srv = srv_offline
    async with await srv.client("dan") as dan:
        dan.auto_reply["NOTIFY"] = 200
        sub = dan.subscribe(srv.uri("eve"))
        await dan.send_request(sub)
        n = await dan.expect_request("NOTIFY", call_id=sub.call_id)
        assert n.header("Content-Type") == "application/pidf+xml"
        root = etree.fromstring(n.body)
        assert root.get("entity") == "sip:eve@127.0.0.1"
        assert set(tuples(n.body).values()) == {"closed"}


def winfo(body: bytes) -> tuple[str, str, list[tuple[str, str, str]]]:
    root = etree.fromstring(body)
    wl = root.find("w:watcher-list", NS)
    assert wl is not None and wl.get("package") == "presence"
    watchers = [(w.get("id"), w.get("status"), (w.text or "").strip()) for w in wl.findall("w:watcher", NS)]
    return root.get("version"), root.get("state"), watchers


async def test_winfo_full_partial_version(srv: Srv) -> None:
    async with await srv.client("fay") as fay, await srv.client("gil") as gil, await srv.client("hub") as hub:
        gil.auto_reply["NOTIFY"] = 200
        hub.auto_reply["NOTIFY"] = 200
        fay.auto_reply["NOTIFY"] = 200
        s_gil = gil.subscribe(srv.uri("fay"))
        await gil.send_request(s_gil)
        # fay subscribes to her own watcher list: the full list, version 0
        ws = fay.subscribe(srv.uri("fay"), event="presence.winfo", accept="application/watcherinfo+xml")
        resp = await fay.send_request(ws)
        assert resp.status == 200
        n = await fay.expect_request("NOTIFY", call_id=ws.call_id)
        assert n.header("Content-Type") == "application/watcherinfo+xml"
        assert n.header("Event") == "presence.winfo"
        assert winfo(n.body) == ("0", "full", [(s_gil.call_id, "active", gil.aor)])
        # a new watcher: partial, only him, version 1
        s_hub = hub.subscribe(srv.uri("fay"))
        resp_hub = await hub.send_request(s_hub)
        n = await fay.expect_request("NOTIFY", call_id=ws.call_id)
        assert winfo(n.body) == ("1", "partial", [(s_hub.call_id, "active", hub.aor)])
        # a watcher leaves: the full list again, version 2
        await hub.send_request(hub.subscribe(event="presence", expires=0, dialog=hub.dialog(s_hub, resp_hub)))
        n = await fay.expect_request("NOTIFY", call_id=ws.call_id)
        version, state, watchers = winfo(n.body)
        assert (version, state) == ("2", "full")
        assert (s_gil.call_id, "active", gil.aor) in watchers
        assert all(w[0] != s_hub.call_id or w[1] == "terminated" for w in watchers)
        # a watcher whose NOTIFY gets 481 is gone too
        gil.auto_reply["NOTIFY"] = 481
        await fay.send_request(fay.publish(srv.uri("fay"), pidf(fay.aor)))
        n = await fay.expect_request("NOTIFY", call_id=ws.call_id)
        version, state, watchers = winfo(n.body)
        assert (version, state) == ("3", "full")
        assert all(w[0] != s_gil.call_id or w[1] == "terminated" for w in watchers)


RULES = b"""<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns="urn:ietf:params:xml:ns:pres-rules" xmlns:cr="urn:ietf:params:xml:ns:common-policy">
  <cr:rule id="friends"><cr:conditions><cr:identity><cr:one id="sip:pal@127.0.0.1"/></cr:identity>
    </cr:conditions>
    <cr:actions><sub-handling>allow</sub-handling></cr:actions></cr:rule>
  <cr:rule id="foes"><cr:conditions><cr:identity><cr:one id="sip:foe@127.0.0.1"/></cr:identity>
    </cr:conditions>
    <cr:actions><sub-handling>block</sub-handling></cr:actions></cr:rule>
</cr:ruleset>"""


async def test_pres_rules_from_the_xcap_table(tmp_path: Path, presence_db: TestDb) -> None:
    """force_active 0 without handle_subscribe("1") (domain localhost): pres-rules in the xcap table
    (OpenSIPS 3.x form: xcap.so with integrated_xcap_server) decide - allow 200 + body, block
    terminated;reason=rejected, no rule pending 202."""
    port = free_port()
    cfg = presence_cfg(tmp_path, port, db_url=presence_db.url)   # the example loads xcap.so
    with run_server(cfg, tmp_path) as server:
        presence_db.execute("INSERT INTO xcap (username, domain, doc, doc_type, etag, source, doc_uri, port) "
                            "VALUES ('ivy', 'localhost', ?, 2, 'e1', 1, "
                            "'/pres-rules/users/sip:ivy@localhost/index', 0)", RULES)
        srv = Srv(server, port)
        uri = f"sip:ivy@localhost:{port}"
        async with await srv.client("ivy") as ivy:
            await ivy.send_request(ivy.publish(uri, pidf("sip:ivy@localhost", note="ruled")))
            for user, status, state, body in (("pal", 200, "active;expires=600", True),
                                              ("foe", 200, "terminated;reason=rejected", False),
                                              ("nobody", 202, "pending;expires=600", False)):
                async with await srv.client(user) as w:
                    sub = w.subscribe(uri, expires=600)
                    resp = await w.send_request(sub)
                    n = await w.expect_request("NOTIFY", call_id=sub.call_id)
                    await w.reply(n)
                    assert (user, resp.status, n.header("Subscription-State")) == (user, status, state)
                    assert (b"<note>ruled</note>" in n.body) is body
