"""Presence authorization (presence_xml force_active 0, pres-rules in the xcap table) over `routescript run
examples/presence.cfg` (it loads xcap and mi_http): allow / block / polite-block / confirm / no rule as
measured, the decision kept in the watchers table and reused, pending watchers in presence.winfo, what a
pending or blocked watcher hears of a PUBLISH (nothing), a blocked watcher in presence.winfo, MI
refreshWatchers type 0 after a rules change (pending -> active with body + partial winfo, -> block
rejected, no rule any more -> deactivated and the row deleted), handle_subscribe("1") over the rules,
enable_sphere_check, and waiting_subs_daysno. Presentities at "localhost" go through the rules (the
example forces active only for 127.0.0.1 users)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from lxml import etree
from presence_e2e import RunningServer, free_port, presence_cfg, run_server
from presence_e2e import Srv as PresenceSrv

from routescript.mi.client import MIReplyError, call_http
from routescript.testing import SipTestClient, pidf

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio
NS = {"w": "urn:ietf:params:xml:ns:watcherinfo"}

def rules(**who: str) -> bytes:
    """A pres-rules document: one rule per watcher user (at 127.0.0.1) with its sub-handling; a value
    "allow@work" adds a sphere condition."""
    out = [('<?xml version="1.0" encoding="UTF-8"?>\n<cr:ruleset xmlns="urn:ietf:params:xml:ns:pres-rules" '
            'xmlns:cr="urn:ietf:params:xml:ns:common-policy">')]
    for user, handling in who.items():
        action, _, sphere = handling.partition("@")
        cond = f'<cr:sphere value="{sphere}"/>' if sphere else ""
        out.append(f'<cr:rule id="r-{user}"><cr:conditions><cr:identity><cr:one id="sip:{user}@127.0.0.1"/>'
                   f"</cr:identity>{cond}</cr:conditions><cr:actions><sub-handling>{action}</sub-handling>"
                   "</cr:actions></cr:rule>")
    out.append("</cr:ruleset>")
    return "".join(out).encode()


def sphere_pidf(entity: str, sphere: str) -> bytes:
    return (f'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
            'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
            'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" '
            f'entity="{entity}"><tuple id="t1"><status><basic>open</basic></status>'
            f'<note>at {sphere}</note></tuple>'
            f'<dm:person id="p1"><rpid:sphere><rpid:{sphere}/></rpid:sphere></dm:person></presence>').encode()


class Srv(PresenceSrv):
    domain = "localhost"
    answer_notify = True

    def __init__(self, server: RunningServer, port: int, http_port: int, db: TestDb) -> None:
        super().__init__(server, port)
        self.db = db
        self.url = f"http://127.0.0.1:{http_port}/mi"

    def set_rules(self, user: str, doc: bytes, domain: str = "localhost") -> None:
        """What an XCAP server does: store the pres-rules document in the xcap table (doc_type 2)."""
        self.db.execute("DELETE FROM xcap WHERE username = ? AND domain = ? AND doc_type = 2", user, domain)
        self.db.execute("INSERT INTO xcap (username, domain, doc, doc_type, etag, source, doc_uri, port) "
                        "VALUES (?, ?, ?, 2, ?, 1, ?, 0)",
                        user, domain, doc, f"e{time.monotonic_ns()}",
                        f"/pres-rules/users/sip:{user}@{domain}/index")

    def watchers(self, pres_uri: str) -> dict[str, tuple[int, str | None]]:
        rows = self.db.rows("SELECT watcher_username, status, reason FROM watchers WHERE presentity_uri = ?",
                            pres_uri)
        return {u: (s, r) for u, s, r in rows}

    async def mi(self, method: str, params: Any) -> Any:
        return await asyncio.to_thread(call_http, self.url, method, params, timeout=5)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, module_presence_db: TestDb) -> Iterator[Srv]:
    tmp = tmp_path_factory.mktemp("auth")
    port, http_port = free_port(), free_port()
    db = module_presence_db
    # the example as it is (xcap and mi_http included), shorter timers
    cfg = presence_cfg(tmp, port, db_url=db.url, presence={"clean_period": 1, "enable_sphere_check": 1,
                                                   "waiting_subs_daysno": 3}, http_port=http_port)
    with run_server(cfg, tmp) as server:
        yield Srv(server, port, http_port, db)


async def subscribe(w: SipTestClient, uri: str, event: str = "presence"):  # type: ignore[no-untyped-def]
    accept = "application/watcherinfo+xml" if event == "presence.winfo" else None
    sub = w.subscribe(uri, event=event, expires=600, accept=accept)
    resp = await w.send_request(sub)
    n = await w.expect_request("NOTIFY", call_id=sub.call_id)
    return sub, resp, n


async def test_outcomes_by_rule_and_the_kept_decision(srv: Srv) -> None:
    srv.set_rules("ivy", rules(pal="allow", foe="block", shy="polite-block", ask="confirm"))
    async with await srv.client("ivy") as ivy:
        await ivy.send_request(ivy.publish(srv.uri("ivy"), pidf("sip:ivy@localhost", note="ruled")))
        for user, status, state, body in (("pal", 200, "active;expires=600", True),
                                          ("foe", 200, "terminated;reason=rejected", False),
                                          ("shy", 200, "active;expires=600", False),
                                          ("ask", 202, "pending;expires=600", False),
                                          ("nobody", 202, "pending;expires=600", False)):
            async with await srv.client(user) as w:
                _sub, resp, n = await subscribe(w, srv.uri("ivy"))
                assert (user, resp.status, n.header("Subscription-State")) == (user, status, state)
                assert (user, b"<note>ruled</note>" in n.body) == (user, body)
    assert srv.watchers("sip:ivy@localhost") == {"pal": (1, None), "foe": (3, "rejected"), "shy": (1, None),
                                                 "ask": (2, None), "nobody": (2, None)}
    # the rules change but nobody says so: the kept decision still holds for a new subscription
    srv.set_rules("ivy", rules(foe="allow"))
    async with await srv.client("foe") as foe:
        _sub, resp, n = await subscribe(foe, srv.uri("ivy"))
        assert n.header("Subscription-State") == "terminated;reason=rejected"


async def test_a_pending_watcher_gets_no_notify_when_the_presentity_publishes(srv: Srv) -> None:
    """OPENSIPS-BEHAVIOUR (authorization): a pending watcher hears nothing of a PUBLISH - no NOTIFY at all,
    not even a body-less pending one - while an allowed watcher of the same presentity gets the change."""
    srv.set_rules("una", rules(pal="allow"))
    async with await srv.client("una") as una, await srv.client("pal") as pal, \
            await srv.client("ask") as ask:
        s_pal, r_pal, _n = await subscribe(pal, srv.uri("una"))
        assert r_pal.status == 200
        s_ask, r_ask, n = await subscribe(ask, srv.uri("una"))
        assert r_ask.status == 202 and n.header("Subscription-State") == "pending;expires=600"
        etag = None
        for note in ("first", "second"):   # an initial PUBLISH and a modify
            r = await una.send_request(una.publish(srv.uri("una"), pidf("sip:una@localhost", note=note),
                                                   etag=etag))
            assert r.status == 200
            etag = r.header("SIP-ETag")
            n = await pal.expect_request("NOTIFY", call_id=s_pal.call_id)
            assert f"<note>{note}</note>".encode() in n.body
            # pal's NOTIFY and ask's would leave together: ask's would be here by now
            await ask.expect_no_request("NOTIFY", call_id=s_ask.call_id, within=0.5)
        r = await una.send_request(una.publish(srv.uri("una"), None, expires=0, etag=etag))
        assert r.status == 200
        await pal.expect_request("NOTIFY", call_id=s_pal.call_id)
        await ask.expect_no_request("NOTIFY", call_id=s_ask.call_id, within=0.5)


async def test_winfo_lists_a_blocked_watcher_as_terminated(srv: Srv) -> None:
    """OPENSIPS-BEHAVIOUR (presence.winfo): a watcher the rules block stays in the list with
    status="terminated" (id: its subscription's Call-ID) until its subscription expires; the winfo
    subscriber hears of it at once (a partial document) and in every full list after."""
    srv.set_rules("vic", rules(pal="allow", foe="block"))
    async with await srv.client("vic") as vic, await srv.client("pal") as pal, \
            await srv.client("foe") as foe:
        s_w, _r, n = await subscribe(vic, srv.uri("vic"), "presence.winfo")
        assert n.header("Subscription-State") == "active;expires=600"
        s_pal, _r, _n = await subscribe(pal, srv.uri("vic"))
        n = await vic.expect_request("NOTIFY", call_id=s_w.call_id)   # pal: a partial document
        s_foe, r_foe, n_foe = await subscribe(foe, srv.uri("vic"))
        assert r_foe.status == 200 and n_foe.header("Subscription-State") == "terminated;reason=rejected"
        n = await vic.expect_request("NOTIFY", call_id=s_w.call_id)
        root = etree.fromstring(n.body)
        assert root.get("state") == "partial"
        listed = [(w.get("id"), w.get("status"), w.get("event"), w.text.strip())
                  for w in root.iterfind(".//w:watcher", NS)]
        assert listed == [(s_foe.call_id, "terminated", "subscribe", foe.aor)]
        # a new winfo subscription (full list) shows both
        async with await srv.client("vic") as vic2:
            _s, _r, n = await subscribe(vic2, srv.uri("vic"), "presence.winfo")
            root = etree.fromstring(n.body)
            assert root.get("state") == "full"
            listed = sorted((w.get("id"), w.get("status"), w.text.strip())
                            for w in root.iterfind(".//w:watcher", NS))
            assert listed == sorted([(s_pal.call_id, "active", pal.aor),
                                     (s_foe.call_id, "terminated", foe.aor)])
        # the blocked dialog is over: a refresh of it is 481, and vic's PUBLISH tells foe nothing
        resp = await foe.send_request(foe.subscribe(dialog=foe.dialog(s_foe, r_foe)))
        assert resp.status == 481
        await vic.send_request(vic.publish(srv.uri("vic"), pidf("sip:vic@localhost", note="hi")))
        await pal.expect_request("NOTIFY", call_id=s_pal.call_id)
        await foe.expect_no_request("NOTIFY", call_id=s_foe.call_id, within=0.5)


async def test_a_blocked_watcher_leaves_winfo_at_its_expiry_without_a_second_notify(srv: Srv) -> None:
    srv.set_rules("wes", rules(foe="block"))
    async with await srv.client("wes") as wes, await srv.client("foe") as foe:
        s_w, _r, _n = await subscribe(wes, srv.uri("wes"), "presence.winfo")
        sub = foe.subscribe(srv.uri("wes"), expires=2)
        assert (await foe.send_request(sub)).status == 200
        n = await foe.expect_request("NOTIFY", call_id=sub.call_id)
        assert n.header("Subscription-State") == "terminated;reason=rejected"
        n = await wes.expect_request("NOTIFY", call_id=s_w.call_id)
        listed = [w.get("status") for w in etree.fromstring(n.body).iterfind(".//w:watcher", NS)]
        assert listed == ["terminated"]
        # expiry (clean_period 1): the list is sent again, without foe; foe is not told twice
        n = await wes.expect_request("NOTIFY", call_id=s_w.call_id, timeout=5)
        root = etree.fromstring(n.body)
        assert root.get("state") == "full" and root.findall(".//w:watcher", NS) == []
        await foe.expect_no_request("NOTIFY", call_id=sub.call_id, within=0.5)


async def test_handle_subscribe_1_forces_active_over_the_rules(srv: Srv) -> None:
    srv.set_rules("jay", rules(foe="block"), domain="127.0.0.1")
    async with await srv.client("jay") as jay, await srv.client("foe") as foe:
        await jay.send_request(jay.publish(srv.uri("jay", "127.0.0.1"),
                                           pidf("sip:jay@127.0.0.1", note="forced")))
        _sub, resp, n = await subscribe(foe, srv.uri("jay", "127.0.0.1"))
        assert resp.status == 200 and n.header("Subscription-State") == "active;expires=600"
        assert b"<note>forced</note>" in n.body


async def test_refresh_watchers_after_a_rules_change(srv: Srv) -> None:
    srv.set_rules("kim", rules(pal="allow", ex="allow"))
    async with await srv.client("kim") as kim, await srv.client("pal") as pal, await srv.client("ex") as ex, \
            await srv.client("foe") as foe:
        await kim.send_request(kim.publish(srv.uri("kim"), pidf("sip:kim@localhost", note="kim here")))
        s_pal, r_pal, n = await subscribe(pal, srv.uri("kim"))
        assert n.header("Subscription-State").startswith("active")
        s_ex, _r, n = await subscribe(ex, srv.uri("kim"))
        assert n.header("Subscription-State").startswith("active")
        s_foe, r_foe, n = await subscribe(foe, srv.uri("kim"))
        assert r_foe.status == 202 and n.header("Subscription-State").startswith("pending") and n.body == b""
        # the pending watcher is visible to the presentity through presence.winfo
        s_w, _r, n = await subscribe(kim, srv.uri("kim"), "presence.winfo")
        root = etree.fromstring(n.body)
        listed = {w.text.strip(): w.get("status") for w in root.iterfind(".//w:watcher", NS)}
        assert listed == {pal.aor: "active", ex.aor: "active", foe.aor: "pending"}
        # new rules: foe allowed, pal blocked, ex no longer mentioned
        srv.set_rules("kim", rules(foe="allow", pal="block"))
        assert await srv.mi("refreshWatchers", ["sip:kim@localhost", "presence", 0]) in ("OK", None, {})
        n = await foe.expect_request("NOTIFY", call_id=s_foe.call_id)
        assert n.header("Subscription-State").startswith("active;expires=") and b"kim here" in n.body
        n = await kim.expect_request("NOTIFY", call_id=s_w.call_id)
        root = etree.fromstring(n.body)
        assert root.get("state") == "partial"
        listed = [(w.text.strip(), w.get("status")) for w in root.iterfind(".//w:watcher", NS)]
        assert listed == [(foe.aor, "active")]
        n = await pal.expect_request("NOTIFY", call_id=s_pal.call_id)
        assert n.header("Subscription-State") == "terminated;reason=rejected" and n.body == b""
        n = await ex.expect_request("NOTIFY", call_id=s_ex.call_id)
        assert n.header("Subscription-State") == "terminated;reason=deactivated" and n.body == b""
        # the subscriptions that ended are gone; the kept decisions follow the rules
        resp = await pal.send_request(pal.subscribe(dialog=pal.dialog(s_pal, r_pal)))
        assert resp.status == 481
        assert srv.watchers("sip:kim@localhost") == {"pal": (3, "rejected"), "foe": (1, None)}
        # foe's subscription is active now: a refresh gets 200 (not 202) and the body
        resp = await foe.send_request(foe.subscribe(dialog=foe.dialog(s_foe, r_foe)))
        assert resp.status == 200


async def test_refresh_watchers_without_rules_document_is_an_error(srv: Srv) -> None:
    with pytest.raises(MIReplyError):
        await srv.mi("refreshWatchers", ["sip:norules@localhost", "presence", 0])


async def test_sphere_conditions_follow_the_published_sphere(srv: Srv) -> None:
    srv.set_rules("liz", rules(bob="allow@work"))
    async with await srv.client("liz") as liz, await srv.client("bob") as bob:
        r = await liz.send_request(liz.publish(srv.uri("liz"), sphere_pidf("sip:liz@localhost", "work")))
        assert r.status == 200
        sub, resp, n = await subscribe(bob, srv.uri("liz"))
        assert resp.status == 200 and n.header("Subscription-State").startswith("active")
        assert b"at work" in n.body
        # liz goes home: the work-only rule no longer applies - bob is deactivated, no body leaks
        await liz.send_request(liz.publish(srv.uri("liz"), sphere_pidf("sip:liz@localhost", "home"),
                                           etag=r.header("SIP-ETag")))
        n = await bob.expect_request("NOTIFY", call_id=sub.call_id)
        assert n.header("Subscription-State") == "terminated;reason=deactivated" and b"at home" not in n.body
        await bob.expect_no_request("NOTIFY", call_id=sub.call_id, within=0.3)


async def test_waiting_subs_daysno_forgets_old_pending_watchers(srv: Srv) -> None:
    async with await srv.client("zed") as zed:
        _s, resp, _n = await subscribe(zed, srv.uri("max"))
        assert resp.status == 202
    old = int(time.time()) - 4 * 86400
    for user, status in (("old", 2), ("oldok", 1)):
        srv.db.execute("INSERT INTO watchers (presentity_uri, watcher_username, watcher_domain, event, "
                       "status, reason, inserted_time) "
                       "VALUES ('sip:max@localhost', ?, '127.0.0.1', 'presence', ?, NULL, ?)",
                       user, status, old)
    for _ in range(50):  # the server's clean-up timer runs in the child: poll the table, up to 5 s
        if "old" not in srv.watchers("sip:max@localhost"):
            break
        await asyncio.sleep(0.1)
    # a 4-day-old pending decision is gone (3 days kept); a fresh pending one and an allowed one stay
    assert srv.watchers("sip:max@localhost") == {"zed": (2, None), "oldok": (1, None)}


async def test_load_pres_rules_script_stores_and_refreshes(srv: Srv, tmp_path: Path) -> None:
    """examples/load-pres-rules.py: the documented way to load rules into a running server."""
    import subprocess
    import sys

    from presence_e2e import ROOT

    script = ROOT / "examples" / "load-pres-rules.py"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b"<not-rules/>")
    done = await asyncio.to_thread(subprocess.run, [sys.executable, str(script), srv.db.url,
                                                    "sip:pat@localhost", str(bad)],
                                   capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 2 and "ruleset" in done.stderr
    good = tmp_path / "rules.xml"
    good.write_bytes(rules(pal="allow"))
    async with await srv.client("pat") as pat, await srv.client("pal") as pal:
        await pat.send_request(pat.publish(srv.uri("pat"), pidf("sip:pat@localhost", note="pat")))
        sub, resp, n = await subscribe(pal, srv.uri("pat"))
        assert resp.status == 202 and n.header("Subscription-State").startswith("pending")
        done = await asyncio.to_thread(subprocess.run, [sys.executable, str(script), srv.db.url,
                                                        "sip:pat@localhost", str(good), "--mi", srv.url],
                                       capture_output=True, text=True, timeout=30, env=env)
        assert done.returncode == 0, done.stderr
        n = await pal.expect_request("NOTIFY", call_id=sub.call_id)
        assert n.header("Subscription-State").startswith("active;") and b"<note>pat</note>" in n.body


async def test_clean_period_forgets_the_allowed_decision_of_ended_subscriptions(srv: Srv) -> None:
    """Issue 15: after every subscription of a watcher to a presentity has ended (expired, unsubscribed),
    clean_period deletes its allowed row of the watchers table; blocked and pending rows stay, and so
    does the row of a watcher with a subscription still running."""
    srv.set_rules("wes", rules(pal="allow", two="allow", bye="allow", foe="block"))

    async def sub_for(w: SipTestClient, expires: int) -> tuple[Any, Any]:
        sub = w.subscribe(srv.uri("wes"), expires=expires)
        resp = await w.send_request(sub)
        return sub, resp

    async with await srv.client("pal") as pal, await srv.client("two") as two, \
            await srv.client("bye") as bye, await srv.client("foe") as foe, await srv.client("ask") as ask:
        assert (await sub_for(pal, 2))[1].status == 200
        assert (await sub_for(two, 2))[1].status == 200      # this one ends...
        assert (await sub_for(two, 600))[1].status == 200    # ...this one runs on
        s_bye, r_bye = await sub_for(bye, 600)
        assert r_bye.status == 200
        assert (await sub_for(foe, 600))[1].status == 200    # refused: terminated;reason=rejected
        assert (await sub_for(ask, 2))[1].status == 202      # no rule: pending
        assert srv.watchers("sip:wes@localhost") == {"pal": (1, None), "two": (1, None), "bye": (1, None),
                                                     "foe": (3, "rejected"), "ask": (2, None)}
        unsub = bye.subscribe(expires=0, dialog=bye.dialog(s_bye, r_bye))
        assert (await bye.send_request(unsub)).status == 200
        # expiry after 2 s, found by the next clean run (clean_period 1 s): polled, up to 8 s
        want = {"two": (1, None), "foe": (3, "rejected"), "ask": (2, None)}
        for _ in range(80):
            if srv.watchers("sip:wes@localhost") == want:
                break
            await asyncio.sleep(0.1)
        assert srv.watchers("sip:wes@localhost") == want
