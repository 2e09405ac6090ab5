"""The presence MI commands against `routescript run` (examples/presence.cfg + httpd, mi_http, mi_fifo and an
event_route[E_PRESENCE_EXPOSED] that xlogs), driven over JSON-RPC on HTTP and over the MI FIFO while SIP
clients publish and subscribe: the listings of captures 09/23/24, the errors, pres_expose raising one event
per stored publication, refreshWatchers after the presentity table was edited by hand, cleanup."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from presence_e2e import RunningServer, free_port, presence_cfg, run_server
from presence_e2e import Srv as PresenceSrv

from routescript.mi.client import MIReplyError, call_fifo, call_http
from routescript.testing import SipTestClient, pidf

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio
TIMEOUT = 5.0

# the example loads xcap, httpd and mi_http already
MI_MODULES = """loadmodule "mi_fifo.so"
modparam("mi_fifo", "fifo_name", "{fifo}")
modparam("mi_fifo", "reply_dir", "{reply_dir}/")
"""

# pres-rules (RFC 5025) for refresh type 0: pal allowed
RULES = b"""<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns="urn:ietf:params:xml:ns:pres-rules" xmlns:cr="urn:ietf:params:xml:ns:common-policy">
  <cr:rule id="friends"><cr:conditions><cr:identity><cr:one id="sip:pal@127.0.0.1"/></cr:identity>
    </cr:conditions><cr:actions><sub-handling>allow</sub-handling></cr:actions></cr:rule>
</cr:ruleset>"""

EXPOSED_LINE = ("EXPOSED user=$param(user) domain=$param(domain) event=$param(event) etag=$param(etag) "
                "old_etag=[$param(old_etag)] expires=$param(expires) body=$(param(body){s.len})\\n")
EXPOSED_ROUTE = f"""
event_route[E_PRESENCE_EXPOSED] {{
    xlog("L_INFO", "{EXPOSED_LINE}");
}}
"""


class Srv(PresenceSrv):
    answer_notify = True

    def __init__(self, server: RunningServer, port: int, http_port: int, fifo: Path, db: TestDb) -> None:
        super().__init__(server, port)
        self.db, self.fifo = db, fifo
        self.url = f"http://127.0.0.1:{http_port}/mi"

    async def http(self, method: str, params: Any = None) -> Any:
        return await asyncio.wait_for(asyncio.to_thread(call_http, self.url, method, params, timeout=TIMEOUT),
                                      TIMEOUT + 1)

    async def fifo_call(self, method: str, params: Any = None) -> Any:
        return await asyncio.wait_for(asyncio.to_thread(call_fifo, str(self.fifo), method, params,
                                                        reply_dir=str(self.fifo.parent), timeout=TIMEOUT),
                                      TIMEOUT + 1)

    async def http_error(self, method: str, params: Any = None) -> MIReplyError:
        with pytest.raises(MIReplyError) as err:
            await self.http(method, params)
        return err.value

    def sql(self, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.db.rows(query, *args)

    def exposed(self, since: int) -> list[str]:
        return re.findall(r"EXPOSED (.*)", self.server.log()[since:])


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, module_presence_db: TestDb) -> Iterator[Srv]:
    tmp = tmp_path_factory.mktemp("presence_mi")
    port, http_port = free_port(), free_port()
    cfg = presence_cfg(tmp, port, db_url=module_presence_db.url, http_port=http_port)
    text = cfg.read_text()
    mods = MI_MODULES.format(fifo=tmp / "rs_fifo", reply_dir=tmp)
    text = text.replace('loadmodule "presence_xml.so"\n', 'loadmodule "presence_xml.so"\n' + mods, 1)
    # E_PRESENCE_PUBLISH shows old_etag too; E_PRESENCE_EXPOSED is logged one line per event
    text = text.replace("etag=$param(etag)\\n", "etag=$param(etag) old_etag=[$param(old_etag)]\\n", 1)
    cfg.write_text(text + EXPOSED_ROUTE)
    with run_server(cfg, tmp) as server:
        yield Srv(server, port, http_port, tmp / "rs_fifo", module_presence_db)


async def publish(srv: Srv, client: SipTestClient, user: str, note: str, etag: str | None = None) -> str:
    resp = await client.send_request(client.publish(srv.uri(user), pidf(f"sip:{user}@127.0.0.1", note=note),
                                                    expires=600, etag=etag))
    assert resp.status == 200
    return str(resp.header("SIP-ETag"))


async def subscribe(srv: Srv, watcher: SipTestClient, user: str) -> Any:
    sub = watcher.subscribe(srv.uri(user), expires=600)
    assert (await watcher.send_request(sub)).status == 200
    await watcher.expect_request("NOTIFY", call_id=sub.call_id)
    return sub


# Runs first (file order): the tables are still empty.
async def test_listings_over_http_as_captured(srv: Srv) -> None:
    names = await srv.http("which")
    for name in ("refreshWatchers", "refresh_watchers", "presence:refresh_watchers", "cleanup",
                 "presence:cleanup", "pres_phtable_list", "presence:phtable_list", "subs_phtable_list",
                 "presence:subs_phtable_list", "pres_expose", "presence:expose"):
        assert name in names
    assert await srv.http("pres_phtable_list") == []
    assert await srv.http("subs_phtable_list") == []

    async with await srv.client("alice") as alice, await srv.client("carol") as carol, \
            await srv.client("bob") as bob, await srv.client("dave") as dave:
        etag_a = await publish(srv, alice, "alice", "a")
        etag_c = await publish(srv, carol, "carol", "c")
        for _ in range(2):   # two refreshes: etag_count 3 (capture 09)
            resp = await carol.send_request(carol.publish(srv.uri("carol"), None, expires=600, etag=etag_c))
            assert resp.status == 200
            etag_c = str(resp.header("SIP-ETag"))
        sub_b = await subscribe(srv, bob, "alice")
        subscribed_at = time.time()
        sub_d = await subscribe(srv, dave, "carol")

        phtable = await srv.http("pres_phtable_list")
        assert phtable == [
            {"pres_uri": "sip:alice@127.0.0.1", "event": 1, "etag_count": 1, "etag": etag_a},
            {"pres_uri": "sip:carol@127.0.0.1", "event": 1, "etag_count": 3, "etag": etag_c},
        ]
        assert [list(r) for r in phtable] == [["pres_uri", "event", "etag_count", "etag"]] * 2
        assert await srv.http("presence:phtable_list") == phtable

        subs = await srv.http("subs_phtable_list")
        assert [list(r) for r in subs] == [[
            "pres_uri", "event", "expires", "db_flag", "version", "to_user", "to_domain", "to_tag",
            "from_user", "from_domain", "from_tag", "contact", "callid", "local_cseq", "remote_cseq"]] * 2
        bobs = subs[0]
        assert bobs["pres_uri"] == "sip:alice@127.0.0.1" and bobs["event"] == "presence"
        assert (bobs["to_user"], bobs["to_domain"], bobs["from_user"], bobs["from_domain"]) == \
            ("alice", "127.0.0.1", "bob", "127.0.0.1")
        assert (bobs["callid"], bobs["from_tag"], bobs["contact"]) == \
            (sub_b.call_id, sub_b.from_.tag, bob.contact_uri)
        assert bobs["to_tag"] and (bobs["version"], bobs["local_cseq"], bobs["remote_cseq"]) == (1, 1, 1)
        assert isinstance(bobs["db_flag"], int)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", bobs["expires"])
        shown = time.mktime(time.strptime(bobs["expires"], "%Y-%m-%d %H:%M:%S"))
        assert abs(shown - (subscribed_at + 600)) <= 3        # local time of the expiry

        only_dave = await srv.http("subs_phtable_list", {"from": "sip:dave*", "to": "sip:carol*"})
        assert [r["callid"] for r in only_dave] == [sub_d.call_id]
        assert await srv.http("presence:subs_phtable_list", {"from": "sip:nobody*", "to": "*"}) == []

        err = await srv.http_error("subs_phtable_list", ["sip:nobody*"])
        assert (err.code, err.message) == (-32602, "Invalid params")
        assert err.data == "Too few or too many parameters"
        err = await srv.http_error("no_such_command")
        assert (err.code, err.message) == (-32601, "Method not found")
        err = await srv.http_error("pres_phtable_list", {"x": 1})
        assert err.code == -32602


async def test_fifo_gives_the_same_answers(srv: Srv) -> None:
    async with await srv.client("fred") as fred:
        await publish(srv, fred, "fred", "on the fifo")
        assert await srv.fifo_call("pres_phtable_list") == await srv.http("pres_phtable_list")
        assert await srv.fifo_call("subs_phtable_list") == await srv.http("subs_phtable_list")
        assert await srv.fifo_call("refreshWatchers", ["sip:fred@127.0.0.1", "presence", "1"]) == "OK"
        with pytest.raises(MIReplyError) as err:
            await srv.fifo_call("pres_expose", ["presence", "a", "b"])
        assert err.value.code == -32602
        # the rest of the presence commands over the FIFO too
        assert await srv.fifo_call("subs_phtable_list", {"from": "*", "to": "*"}) == \
            await srv.http("subs_phtable_list", {"from": "*", "to": "*"})
        assert await srv.fifo_call("pres_expose", ["presence", "^fred"]) == "OK"
        srv.server.wait_for("EXPOSED user=fred", timeout=TIMEOUT)
        assert await srv.fifo_call("cleanup") == "OK"
        assert await srv.fifo_call("presence:phtable_list") == await srv.http("pres_phtable_list")


async def test_pres_expose_one_event_per_publication(srv: Srv) -> None:
    async with await srv.client("expo1") as e1, await srv.client("expo2") as e2, \
            await srv.client("other") as o:
        etag1 = await publish(srv, e1, "expo1", "one")
        await publish(srv, e2, "expo2", "two")
        await publish(srv, o, "other", "not me")

        mark = len(srv.server.log())
        assert await srv.http("pres_expose", {"event": "presence", "filter": "^expo"}) == "OK"
        lines = srv.exposed(mark)      # the event routes ran before the reply was sent
        users = sorted(line.split()[0] for line in lines)
        assert users == ["user=expo1", "user=expo2"]
        one = next(line for line in lines if line.startswith("user=expo1 "))
        assert f"domain=127.0.0.1 event=presence etag={etag1} old_etag=[] expires=" in one
        expires = int(re.search(r"expires=(\d+)", one).group(1))  # type: ignore[union-attr]
        assert abs(expires - (time.time() + 600)) <= 3           # the stored (absolute) expiry, as OpenSIPS
        assert f"body={len(pidf('sip:expo1@127.0.0.1', note='one'))}" in one

        # no filter: every stored presence publication, once each
        stored = [r for r in await srv.http("pres_phtable_list") if r["event"] == 1]
        mark = len(srv.server.log())
        assert await srv.http("presence:expose", ["presence"]) == "OK"
        lines = srv.exposed(mark)
        assert len(lines) == len(stored)
        assert sorted(re.search(r"etag=(\S+)", line).group(1) for line in lines) == \
            sorted(r["etag"] for r in stored)  # type: ignore[union-attr]

        mark = len(srv.server.log())
        assert await srv.http("pres_expose", ["presence", "^nobody$"]) == "OK"
        assert await srv.http("pres_expose", ["dialog;sla"]) == "OK"
        assert srv.exposed(mark) == []
        err = await srv.http_error("pres_expose", ["no-such-event"])
        assert (err.code, err.message) == (404, "unknown event")
        err = await srv.http_error("pres_expose", ["presence", "(unclosed"])
        assert err.code == 400


async def test_refresh_watchers_after_editing_the_database(srv: Srv) -> None:
    async with await srv.client("rick") as rick, await srv.client("wanda") as wanda:
        await publish(srv, rick, "rick", "before")
        sub = await subscribe(srv, wanda, "rick")
        edited = pidf("sip:rick@127.0.0.1", note="edited in the table")
        srv.sql("UPDATE presentity SET body = ? WHERE username = 'rick'", (edited,))

        assert await srv.http("refreshWatchers", ["sip:rick@127.0.0.1", "presence", 1]) == "OK"
        notify = await wanda.expect_request("NOTIFY", call_id=sub.call_id)
        assert b"<note>edited in the table</note>" in notify.body and notify.cseq.number == 2
        assert notify.header("Subscription-State").startswith("active;expires=")

        # the 4.x name, named parameters, a numeric string; nothing changed: the same state again
        named = {"presentity_uri": f"sip:rick@127.0.0.1:{srv.port}", "event": "presence", "refresh_type": "7"}
        assert await srv.http("presence:refresh_watchers", named) == "OK"
        again = await wanda.expect_request("NOTIFY", call_id=sub.call_id)
        assert b"edited in the table" in again.body and again.cseq.number == 3

        # nobody watches that presentity: "OK" and nothing sent
        assert await srv.http("refresh_watchers", ["sip:nobody@127.0.0.1", "presence", 1]) == "OK"
        await wanda.expect_no_request("NOTIFY", call_id=sub.call_id, within=0.3)

        err = await srv.http_error("refreshWatchers", ["sip:rick@127.0.0.1", "presence", "soon"])
        assert (err.code, err.data) == (-32602, "Bad type for parameter 'refresh_type'")
        err = await srv.http_error("refreshWatchers", ["sip:rick@127.0.0.1", "presence"])
        assert (err.code, err.data) == (-32602, "Too few or too many parameters")
        err = await srv.http_error("refreshWatchers", ["sip:rick@127.0.0.1", "no-such-event", 1])
        assert (err.code, err.message) == (-32000, "Wrong event parameter")
        err = await srv.http_error("refreshWatchers", ["", "presence", 1])
        assert (err.code, err.message) == (404, "Empty presentity URI")


async def test_cleanup_removes_expired_rows(srv: Srv) -> None:
    async with await srv.client("lena") as lena:
        await publish(srv, lena, "lena", "live")
        old = int(time.time()) - 100
        srv.sql("INSERT INTO presentity (username, domain, event, etag, expires, received_time, body, "
                "extra_hdrs) VALUES ('ghost', '127.0.0.1', 'presence', 'ghost-etag', ?, ?, ?, ?)",
                (old, old - 100, b"", b""))
        assert await srv.http("cleanup") == "OK"
        assert srv.sql("SELECT etag FROM presentity WHERE username = 'ghost'") == []
        assert len(srv.sql("SELECT etag FROM presentity WHERE username = 'lena'")) == 1
        assert await srv.http("presence:cleanup") == "OK"
        err = await srv.http_error("cleanup", ["now"])
        assert err.code == -32602


async def test_publish_event_carries_old_etag(srv: Srv) -> None:
    async with await srv.client("olga") as olga:
        first = await publish(srv, olga, "olga", "one")
        second = await publish(srv, olga, "olga", "two", etag=first)
        srv.server.wait_for(f"etag={first} old_etag=[]", timeout=3)
        srv.server.wait_for(f"etag={second} old_etag=[{first}]", timeout=3)


async def test_refresh_watchers_after_a_rules_change(srv: Srv) -> None:
    """Refresh type 0: ivy@localhost (no handle_subscribe("1") for that domain) has no pres-rules, so pal
    waits pending; ivy's rules appear in the xcap table; refreshWatchers makes pal active with the state."""
    uri = f"sip:ivy@localhost:{srv.port}"
    async with await srv.client("ivy") as ivy, await srv.client("pal") as pal:
        resp = await ivy.send_request(ivy.publish(uri, pidf("sip:ivy@localhost", note="ruled"), expires=600))
        assert resp.status == 200
        sub = pal.subscribe(uri, expires=600)
        assert (await pal.send_request(sub)).status == 202
        pending = await pal.expect_request("NOTIFY", call_id=sub.call_id)
        assert pending.header("Subscription-State").startswith("pending") and pending.body == b""

        err = await srv.http_error("refreshWatchers", ["sip:ivy@localhost", "presence", 0])
        assert err.code == -32000 and "no rules document" in err.message    # OpenSIPS: no rules doc -> error
        srv.sql("INSERT INTO xcap (username, domain, doc, doc_type, etag, source, doc_uri, port) VALUES "
                "('ivy', 'localhost', ?, 2, 'e1', 1, '/pres-rules/users/sip:ivy@localhost/index', 0)",
                (RULES,))
        assert await srv.http("refreshWatchers", ["sip:ivy@localhost", "presence", 0]) == "OK"
        active = await pal.expect_request("NOTIFY", call_id=sub.call_id)
        assert active.header("Subscription-State").startswith("active;expires=")
        assert b"<note>ruled</note>" in active.body
        assert [r["callid"] for r in await srv.http("subs_phtable_list", {"from": "sip:pal@*", "to": "*"})] \
            == [sub.call_id]

        err = await srv.http_error("refreshWatchers", ["sip:ivy@localhost", "presence.winfo", 0])
        assert err.code == -32000 and "does not require authorization" in err.message


async def test_presence_statistics_count_the_traffic(srv: Srv) -> None:
    async def stats() -> dict[str, int]:
        return dict(await srv.http("get_statistics", {"statistics": ["presence:"]}))

    before = await stats()
    async with await srv.client("statsman") as pub, await srv.client("statswatch") as watcher:
        await publish(srv, pub, "statsman", "counted")
        bad = await pub.send_request(pub.publish(srv.uri("statsman"), None, expires=600, etag="no-such-etag"))
        assert bad.status == 412
        await subscribe(srv, watcher, "statsman")
        for _ in range(50):      # the NOTIFY counts once its 200 is back at the server
            after = await stats()
            if after["presence:sent_notifies"] > before["presence:sent_notifies"]:
                break
            await asyncio.sleep(0.05)
    assert after["presence:accepted_publishes"] == before["presence:accepted_publishes"] + 1
    assert after["presence:rejected_publishes"] == before["presence:rejected_publishes"] + 1
    assert after["presence:published_presentities"] == before["presence:published_presentities"] + 1
    assert after["presence:active_subscriptions"] == before["presence:active_subscriptions"] + 1
    assert after["presence:sent_notifies"] >= before["presence:sent_notifies"] + 1
    assert after["presence:failed_notifies"] == before["presence:failed_notifies"]
