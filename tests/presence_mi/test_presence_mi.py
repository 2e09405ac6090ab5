"""The presence MI commands in memory: the real PresenceModule and PresenceService on a real SQLite file,
a fake server and clock, dispatched through the real MI registry (parameter recipes, errors)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from routescript.core.module import MIError
from routescript.db import open_database
from routescript.mi.jsonrpc import JSONRPCError
from routescript.mi.registry import MIRegistry
from routescript.modules.presence import PresenceModule
from routescript.modules.presence.events import PresenceEvent
from routescript.modules.presence.mi import (etag_count, expose_matches, from_to_match, next_hop,
                                             normalise_pres_uri, phtable_record, shtable_record)
from routescript.modules.presence.presentity import Publication
from routescript.modules.presence.service import PresenceService, PresenceSettings
from routescript.modules.presence.storage import PresenceStore
from routescript.modules.presence.subscription import Subscription, SubState
from routescript.modules.presence_xml import PresenceXmlModule
from routescript.testing.presence_doubles import SOCK, ManualClock, PresenceCtx, PresenceServer, sip_request
from routescript.transport.address import Source

SRC = Source("udp", SOCK, "127.0.0.1", 48261)
NOW = 1_800_000_000.0


def pidf(user: str, note: str) -> bytes:
    return (f'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
            f'entity="sip:{user}@127.0.0.1"><tuple id="t1"><status><basic>open</basic></status>'
            f'<note>{note}</note></tuple></presence>').encode()


class FakeBus:
    def __init__(self) -> None:
        self.raised: list[tuple[str, dict[str, Any]]] = []

    def wanted(self, name: str) -> bool:
        return True   # record every event raised

    async def raise_event(self, name: str, params: dict[str, Any]) -> None:
        self.raised.append((name, params))

    def raise_event_nowait(self, name: str, params: dict[str, Any]) -> None:
        self.raised.append((name, params))


def publish(user: str, body: bytes | None, *, etag: str | None = None, expires: int = 600, n: int = 1) -> Any:
    extra = f"\nSIP-If-Match: {etag}" if etag else ""
    ctype = "\nContent-Type: application/pidf+xml" if body else ""
    return sip_request(f"""
PUBLISH sip:{user}@127.0.0.1:5070 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:45145;branch=z9hG4bKp{user}{n}
From: <sip:{user}@127.0.0.1>;tag=p1
To: <sip:{user}@127.0.0.1>
Call-ID: pub-{user}
CSeq: {n} PUBLISH
Event: presence
Expires: {expires}{extra}{ctype}""", body or b"")


def subscribe(to: str, watcher: str, callid: str) -> Any:
    return sip_request(f"""
SUBSCRIBE sip:{to}@127.0.0.1:5070 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:48261;branch=z9hG4bKs{callid}
From: <sip:{watcher}@127.0.0.1>;tag=ft-{callid}
To: <sip:{to}@127.0.0.1>
Call-ID: {callid}
CSeq: 1 SUBSCRIBE
Contact: <sip:{watcher}@127.0.0.1:48261>
Record-Route: <sip:proxy.example.com;lr>
Event: presence
Expires: 600""")


class Env:
    def __init__(self, module: PresenceModule, svc: PresenceService, server: PresenceServer,
                 clock: ManualClock, db: Any, mi: MIRegistry) -> None:
        self.module, self.svc, self.server, self.clock, self.db, self.mi = module, svc, server, clock, db, mi

    async def call(self, name: str, params: Any = None) -> Any:
        return await self.mi.dispatch(name, params)

    async def settle(self) -> None:
        for _ in range(10):
            await asyncio.sleep(0)
        await self.svc.sender.drain(1)

    async def publish(self, user: str, note: str, **kw: Any) -> str:
        assert await self.svc.handle_publish(PresenceCtx(publish(user, pidf(user, note), **kw), SRC)) == 1
        return str(self.server.replies[-1].header("SIP-ETag"))

    async def subscribe(self, to: str, watcher: str, callid: str) -> None:
        assert await self.svc.handle_subscribe(PresenceCtx(subscribe(to, watcher, callid), SRC), True) == 1


def params(**over: Any) -> dict[str, Any]:
    return {p.name: p.default for p in PresenceModule.params} | over


@pytest.fixture
async def env(presence_db: Any) -> Any:
    db = await open_database(presence_db.url)     # SQLite and PostgreSQL (tests/conftest.py)
    await db.ensure_schema(["presentity", "active_watchers", "watchers"])
    server, clock = PresenceServer(events=FakeBus()), ManualClock(NOW)
    module = PresenceModule(server, params(db_url=presence_db.url))
    xml_params = {p.name: p.default for p in PresenceXmlModule.params} | {"force_active": 1}
    xml = PresenceXmlModule(object(), xml_params)
    for ev in xml.make_events():
        module.add_event(ev)
    module.add_event(PresenceEvent("message-summary", "application/simple-message-summary"))
    module.add_event(PresenceEvent("dialog", "application/dialog-info+xml"))
    settings = PresenceSettings(server_address="sip:presence@127.0.0.1:5070")
    svc = PresenceService(server, module.registry, settings, store=PresenceStore(db), clock=clock)
    module.service = svc
    mi = MIRegistry(server)
    mi.add_all(module.mi_commands())
    yield Env(module, svc, server, clock, db, mi)
    await svc.sender.close()
    await db.close()


# ------------------------------------------------------------------------- names and recipes

def test_names_and_aliases(env: Env) -> None:
    names = env.mi.names()
    for name in ("refreshWatchers", "refresh_watchers", "presence:refresh_watchers", "cleanup",
                 "presence:cleanup", "pres_phtable_list", "presence:phtable_list", "subs_phtable_list",
                 "presence:subs_phtable_list", "pres_expose", "presence:expose"):
        assert name in names
    assert env.mi.recipes("subs_phtable_list") == ((), ("from", "to"))
    assert env.mi.recipes("pres_expose") == (("event",), ("event", "filter"))
    assert env.mi.recipes("refreshWatchers") == (("presentity_uri", "event", "refresh_type"),)
    assert env.mi.recipes("cleanup") == ((),)


def test_library_mode_exports_no_commands() -> None:
    module = PresenceModule(PresenceServer(events=FakeBus()), params())
    assert module.mi_commands() == []


async def test_not_running_is_a_command_error(tmp_path: Path) -> None:
    module = PresenceModule(PresenceServer(events=FakeBus()), params(db_url=f"sqlite:///{tmp_path}/x.sqlite"))
    mi = MIRegistry(None)
    mi.add_all(module.mi_commands())
    with pytest.raises(JSONRPCError) as err:
        await mi.dispatch("pres_phtable_list")
    assert err.value.code == -32000 and "not running" in err.value.message


# ------------------------------------------------------------------------- pres_phtable_list

async def test_phtable_empty_then_records(env: Env) -> None:
    assert await env.call("pres_phtable_list") == []
    etag_a = await env.publish("alice", "a")
    etag_c = await env.publish("carol", "c1")
    etag_c = await env.publish("carol", "", etag=etag_c, n=2)           # refresh: new etag, generation 1
    env.svc.presentities.load(Publication("sip:frank@127.0.0.1", "message-summary", "a.1.2.7.0", NOW + 60,
                                          b"Messages-Waiting: yes\r\n", "application/simple-message-summary",
                                          NOW))
    env.svc.presentities.load(Publication("sip:gina@127.0.0.1", "dialog", "a.1.2.9.0", NOW + 60, b"<x/>",
                                          "application/dialog-info+xml", NOW))
    out = await env.call("pres_phtable_list")
    assert out == [
        {"pres_uri": "sip:alice@127.0.0.1", "event": 1, "etag_count": 1, "etag": etag_a},
        {"pres_uri": "sip:carol@127.0.0.1", "event": 1, "etag_count": 2, "etag": etag_c},
        {"pres_uri": "sip:frank@127.0.0.1", "event": 6, "etag_count": 1, "etag": "a.1.2.7.0"},
        {"pres_uri": "sip:gina@127.0.0.1", "event": 5, "etag_count": 1, "etag": "a.1.2.9.0"},
    ]
    assert list(out[0]) == ["pres_uri", "event", "etag_count", "etag"]
    assert await env.call("presence:phtable_list") == out
    with pytest.raises(JSONRPCError) as err:
        await env.call("pres_phtable_list", ["x"])
    assert (err.value.code, err.value.data) == (-32602, "Too few or too many parameters")


def test_etag_count_from_text_of_a_loaded_row() -> None:
    pub = Publication("sip:c@h", "presence", "a.1795671994.15324.3.2", NOW, b"", "x", NOW)
    assert etag_count(pub) == 3 and phtable_record(pub)["etag_count"] == 3
    opaque = Publication("sip:c@h", "presence", "opaque-etag", NOW, b"", "x", NOW, generation=4)
    assert etag_count(opaque) == 5


# ------------------------------------------------------------------------- subs_phtable_list

def sub(pres: str, watcher: str, *, rr: tuple[str, ...] = ()) -> Subscription:
    return Subscription(f"sip:{pres}@127.0.0.1", "presence", pres, "127.0.0.1", watcher, "127.0.0.1",
                        f"cid-{watcher}", "313b-x", "ft", f"sip:{watcher}@127.0.0.1:50944", NOW + 600,
                        SubState.ACTIVE, None, None, 1, 1, rr, 1, key=(f"cid-{watcher}", "313b-x", "ft"))


def test_shtable_record_fields_order_and_types() -> None:
    rec = shtable_record(sub("alice", "bob"))
    assert list(rec) == ["pres_uri", "event", "expires", "db_flag", "version", "to_user", "to_domain",
                         "to_tag", "from_user", "from_domain", "from_tag", "contact", "callid", "local_cseq",
                         "remote_cseq"]
    assert rec["expires"] == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(NOW + 600)))
    assert isinstance(rec["db_flag"], int) and isinstance(rec["version"], int) and rec["event"] == "presence"
    routed = shtable_record(sub("alice", "bob", rr=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")))
    assert list(routed)[12:14] == ["next_hop", "callid"] and routed["next_hop"] == "sip:p1.example.com;lr"
    assert next_hop(()) is None


def test_from_to_wildcards() -> None:
    s = sub("carol", "dave")
    assert from_to_match(s, "sip:dave*", "sip:carol*")
    assert from_to_match(s, "*", "*")
    assert not from_to_match(s, "sip:Dave*", "*")            # fnmatch(3) without FNM_CASEFOLD
    assert not from_to_match(s, "sip:dave*", "sip:alice*")
    assert from_to_match(s, "sip:d?ve@127.0.0.[0-9]", "sip:[!x]arol@*")


async def test_subs_phtable_list_and_filters(env: Env) -> None:
    assert await env.call("subs_phtable_list") == []
    await env.subscribe("alice", "bob", "sub-1")
    await env.subscribe("carol", "dave", "sub-2")
    await env.settle()
    out = await env.call("subs_phtable_list")
    assert [(r["pres_uri"], r["from_user"], r["callid"]) for r in out] == [
        ("sip:alice@127.0.0.1", "bob", "sub-1"), ("sip:carol@127.0.0.1", "dave", "sub-2")]
    first = out[0]
    assert (first["event"], first["to_tag"], first["from_tag"]) == ("presence", "313b-sub-1", "ft-sub-1")
    assert first["contact"] == "sip:bob@127.0.0.1:48261" and first["next_hop"] == "sip:proxy.example.com;lr"
    assert (first["local_cseq"], first["remote_cseq"], first["version"]) == (1, 1, 1)
    # UPDATEDB_FLAG: the row was stored before the 200, the first NOTIFY's CSeq waits for the next sync
    assert first["db_flag"] == 2
    await env.svc.sync_db()
    assert (await env.call("subs_phtable_list"))[0]["db_flag"] == 1
    filtered = await env.call("subs_phtable_list", {"from": "sip:dave*", "to": "sip:carol*"})
    assert [r["callid"] for r in filtered] == ["sub-2"]
    assert await env.call("presence:subs_phtable_list", {"from": "sip:nobody*", "to": "*"}) == []
    assert len(await env.call("subs_phtable_list", ["*", "*"])) == 2


@pytest.mark.parametrize("bad, data", [
    (["sip:nobody*"], "Too few or too many parameters"),
    ({"from": "sip:dave*"}, "Too few or too many parameters"),
    ({"from": "a", "too": "b"}, "Named parameters do not match"),
])
async def test_subs_phtable_list_bad_params(env: Env, bad: Any, data: str) -> None:
    with pytest.raises(JSONRPCError) as err:
        await env.call("subs_phtable_list", bad)
    assert (err.value.code, err.value.data) == (-32602, data)


async def test_subs_phtable_list_wildcard_bound(env: Env) -> None:
    with pytest.raises(JSONRPCError) as err:
        await env.call("subs_phtable_list", {"from": "x" * 300, "to": "*"})
    assert (err.value.code, err.value.message) == (400, "Wildcard too long")


# ------------------------------------------------------------------------- refreshWatchers

async def test_refresh_published_rereads_database_and_notifies(env: Env) -> None:
    etag = await env.publish("carol", "before")
    await env.subscribe("carol", "dave", "sub-2")
    await env.subscribe("carol", "erin", "sub-3")
    await env.settle()
    sent = len(env.server.transactions.sent)
    await env.db.update("presentity", {"etag": etag}, {"body": pidf("carol", "edited in the db")})
    assert await env.call("refreshWatchers", ["sip:carol@127.0.0.1", "presence", 1]) == "OK"
    await env.settle()
    new = env.server.transactions.sent[sent:]
    assert sorted(n.ruri for n in new) == ["sip:dave@127.0.0.1:48261", "sip:erin@127.0.0.1:48261"]
    assert all(b"edited in the db" in n.body and n.cseq.number == 2 for n in new)
    # the table in memory follows the database: a later SUBSCRIBE sees the new body, same etag
    assert [p.etag for p in env.svc.presentities.publications("sip:carol@127.0.0.1", "presence")] == [etag]
    # a row deleted from the database: watchers are told nothing is published any more
    await env.db.delete("presentity", {"etag": etag})
    assert await env.call("refresh_watchers", {"presentity_uri": "sip:carol@127.0.0.1:5070;transport=udp",
                                               "event": "presence", "refresh_type": "2"}) == "OK"
    await env.settle()
    last = env.server.transactions.sent[-2:]
    assert all(b"edited" not in n.body for n in last)
    assert env.svc.presentities.publications("sip:carol@127.0.0.1", "presence") == []


async def test_refresh_unknown_presentity_is_ok_and_sends_nothing(env: Env) -> None:
    assert await env.call("presence:refresh_watchers", ["sip:nobody@127.0.0.1", "presence", 1]) == "OK"
    await env.settle()
    assert env.server.transactions.sent == []


@pytest.mark.parametrize("args, code, message", [
    (["", "presence", 1], 404, "Empty presentity URI"),
    (["sip:carol@127.0.0.1", "", 1], 400, "Empty event parameter"),
    (["sip:carol@127.0.0.1", "no-such-event", 1], -32000, "Wrong event parameter"),
    (["not a uri", "presence", 1], 400, "Bad presentity URI"),
    (["sip:carol@127.0.0.1", "message-summary", 0], -32000,
     "event message-summary does not require authorization"),
])
async def test_refresh_errors(env: Env, args: list[Any], code: int, message: str) -> None:
    with pytest.raises(JSONRPCError) as err:
        await env.call("refreshWatchers", args)
    assert (err.value.code, err.value.message) == (code, message)


async def test_refresh_bad_params(env: Env) -> None:
    with pytest.raises(JSONRPCError) as err:
        await env.call("refreshWatchers", ["sip:carol@127.0.0.1", "presence", "one"])
    assert (err.value.code, err.value.data) == (-32602, "Bad type for parameter 'refresh_type'")
    with pytest.raises(JSONRPCError) as err:
        await env.call("refreshWatchers", ["sip:carol@127.0.0.1", "presence"])
    assert err.value.data == "Too few or too many parameters"


async def test_refresh_rules_delegates(env: Env) -> None:
    calls: list[tuple[str, str]] = []

    async def refresh_watchers_rules(pres_uri: str, event: Any) -> None:
        if pres_uri == "sip:norules@127.0.0.1":
            raise MIError("No rules document", 404)
        calls.append((pres_uri, event))

    env.module.refresh_watchers_rules = refresh_watchers_rules  # type: ignore[attr-defined]
    # presence needs authorization when presence_xml's force_active is 0
    ev = env.module.contains_event("presence")
    assert ev is not None
    object.__setattr__(ev, "get_rules_doc", lambda user, domain: None)
    assert await env.call("refreshWatchers", ["sip:carol@127.0.0.1", "presence", 0]) == "OK"
    assert calls == [("sip:carol@127.0.0.1", "presence")]
    with pytest.raises(JSONRPCError) as err:
        await env.call("refreshWatchers", ["sip:norules@127.0.0.1", "presence", 0])
    assert (err.value.code, err.value.message) == (404, "No rules document")


# ------------------------------------------------------------------------- cleanup

async def test_cleanup_expires_now(env: Env) -> None:
    await env.publish("carol", "x", expires=30)
    await env.subscribe("carol", "dave", "sub-2")
    await env.settle()
    await env.svc.sync_db()
    # a row nobody holds in memory (another server's), long expired
    await env.db.insert("presentity", {"username": "ghost", "domain": "127.0.0.1", "event": "presence",
                                       "etag": "g1", "expires": int(NOW) - 100,
                                       "received_time": int(NOW) - 200, "body": b"", "extra_hdrs": b"",
                                       "sender": None})
    assert await env.call("cleanup") == "OK"
    assert len(await env.db.query("presentity")) == 1                 # carol's is still live
    assert len(env.svc.subscriptions) == 1
    env.clock.now += 31
    sent = len(env.server.transactions.sent)
    assert await env.call("presence:cleanup") == "OK"
    await env.settle()
    assert await env.db.query("presentity") == []
    assert len(env.svc.presentities) == 0
    notify = env.server.transactions.sent[sent]
    assert b"closed" in notify.body                                   # dave told carol went away
    env.clock.now += 600
    assert await env.call("cleanup") == "OK"
    await env.settle()
    assert len(env.svc.subscriptions) == 0 and await env.db.query("active_watchers") == []
    assert env.server.transactions.sent[-1].header("Subscription-State") == "terminated;reason=timeout"


# ------------------------------------------------------------------------- pres_expose

def test_expose_filter_matches_user_or_uri() -> None:
    import re

    row = {"username": "alice", "domain": "10.0.5.7"}
    assert expose_matches(row, None)
    assert expose_matches(row, re.compile("^al", re.I))
    assert expose_matches(row, re.compile(r"^sip:al.*@10\.0\.5\."))
    assert expose_matches(row, re.compile("ALICE", re.I)) and not expose_matches(row, re.compile("^bob"))


async def test_expose_one_event_per_publication(env: Env) -> None:
    assert await env.call("pres_expose", ["presence"]) == "OK"
    assert env.server.events.raised == []                            # empty table: nothing raised
    etag_a = await env.publish("alice", "a")
    old = await env.publish("carol", "c")
    etag_c = await env.publish("carol", "c2", etag=old, n=2)
    env.server.events.raised.clear()
    assert await env.call("pres_expose", {"event": "presence"}) == "OK"
    raised = env.server.events.raised
    assert [n for n, _ in raised] == ["E_PRESENCE_EXPOSED"] * 2
    by_user = {p["user"]: p for _, p in raised}
    assert set(by_user) == {"alice", "carol"}
    assert by_user["carol"] == {"user": "carol", "domain": "127.0.0.1", "event": "presence",
                                "expires": int(NOW) + 600, "etag": etag_c, "old_etag": "",
                                "body": pidf("carol", "c2").decode()}
    assert list(by_user["alice"]) == ["user", "domain", "event", "expires", "etag", "old_etag", "body"]
    assert by_user["alice"]["etag"] == etag_a
    raised.clear()
    assert await env.call("presence:expose", ["presence", "^car"]) == "OK"
    assert [p["user"] for _, p in raised] == ["carol"]
    raised.clear()
    assert await env.call("pres_expose", {"event": "presence", "filter": "nobody"}) == "OK"
    assert await env.call("pres_expose", ["dialog"]) == "OK"
    assert raised == []
    env.clock.now += 601                                             # expired rows are not exposed
    assert await env.call("pres_expose", ["presence"]) == "OK" and raised == []


@pytest.mark.parametrize("args, code, message", [
    (["no-such"], 404, "unknown event"),
    ([""], 404, "Invalid event"),
    (["presence", "(unclosed"], 400, None),
])
async def test_expose_errors(env: Env, args: list[str], code: int, message: str | None) -> None:
    with pytest.raises(JSONRPCError) as err:
        await env.call("pres_expose", args)
    assert err.value.code == code
    assert message is None or err.value.message == message


# ------------------------------------------------------------------------- E_PRESENCE_PUBLISH old_etag

async def test_publish_event_carries_old_etag(env: Env) -> None:
    first = await env.publish("carol", "a")
    second = await env.publish("carol", "b", etag=first, n=2)
    events = [p for n, p in env.server.events.raised if n == "E_PRESENCE_PUBLISH"]
    assert [(p["etag"], p["old_etag"]) for p in events] == [(first, ""), (second, first)]
    assert list(events[0]) == ["user", "domain", "event", "expires", "etag", "old_etag", "body"]


def test_normalise_pres_uri() -> None:
    assert normalise_pres_uri("sip:alice@example.com:5080;transport=tcp") == "sip:alice@example.com"
    assert normalise_pres_uri("<sip:alice@example.com>") == "sip:alice@example.com"
    with pytest.raises(MIError):
        normalise_pres_uri("alice")


async def test_cluster_commands_need_clustering(env: Env) -> None:
    for method, params in (("pres_cluster_nodes", None), ("presence:cluster_takeover", ["node2"])):
        with pytest.raises(JSONRPCError) as err:
            await env.mi.dispatch(method, params)
        assert err.value.code == 400 and "cluster_id" in err.value.message
