"""The presence service in memory: real SIP parsing, real SQLite storage, a fake server and clock."""

import asyncio

import pytest

from routescript.db import open_database
from routescript.modules.presence.events import EventRegistry
from routescript.modules.presence.service import PresenceService, PresenceSettings
from routescript.modules.presence.storage import PresenceStore
from routescript.sip import parse_message
from routescript.testing.presence_doubles import (SOCK, ManualClock, PresenceCtx, PresenceServer,
                                                  presence_registry, sip_request)
from routescript.transport.address import SocketInfo, Source

PIDF = (b'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:carol@127.0.0.1">'
        b'<tuple id="t1"><status><basic>open</basic></status></tuple></presence>')


def publish(cseq=1, expires=600, etag=None, body=PIDF, branch="b1"):
    extra = f"\nSIP-If-Match: {etag}" if etag else ""
    ctype = "\nContent-Type: application/pidf+xml" if body else ""
    return sip_request(f"""
PUBLISH sip:carol@127.0.0.1:5070 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:45145;branch=z9hG4bK{branch}{cseq}
From: <sip:carol@127.0.0.1>;tag=p1
To: <sip:carol@127.0.0.1>
Call-ID: pub-1
CSeq: {cseq} PUBLISH
Event: presence
Expires: {expires}{extra}{ctype}""", body)


def subscribe(cseq=1, expires=600, to_tag=None, event="presence", callid="sub-1", user="dave"):
    tag = f";tag={to_tag}" if to_tag else ""
    return sip_request(f"""
SUBSCRIBE sip:carol@127.0.0.1:5070 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:48261;branch=z9hG4bKs{callid}{cseq}
From: <sip:{user}@127.0.0.1>;tag=ye3j
To: <sip:carol@127.0.0.1>{tag}
Call-ID: {callid}
CSeq: {cseq} SUBSCRIBE
Contact: <sip:{user}@127.0.0.1:48261>
Event: {event}
Expires: {expires}""")


SRC = Source("udp", SOCK, "127.0.0.1", 48261)


@pytest.fixture
async def env(presence_db):
    db = await open_database(presence_db.url)     # SQLite and PostgreSQL (tests/conftest.py)
    await db.ensure_schema(["presentity", "active_watchers", "watchers"])
    server, clock = PresenceServer(), ManualClock()
    svc = PresenceService(server, presence_registry(),
                          PresenceSettings(server_address="sip:presence@127.0.0.1:5070"),
                          store=PresenceStore(db), clock=clock)
    yield svc, server, clock, db
    await svc.sender.close()
    await db.close()


async def settle(svc):
    for _ in range(20):
        await asyncio.sleep(0)
    await svc.sender.drain(1)


async def test_publish_stored_before_reply_then_subscribe_gets_notify(env):
    svc, server, _clock, db = env
    assert await svc.handle_publish(PresenceCtx(publish(), SRC)) == 1
    ok = server.replies[-1]
    assert ok.status == 200 and ok.header("Expires") == "600" and ok.header("SIP-ETag")
    rows = await db.query("presentity")
    assert [(r["username"], r["etag"]) for r in rows] == [("carol", ok.header("SIP-ETag"))]

    assert await svc.handle_subscribe(PresenceCtx(subscribe(), SRC)) == 1
    sub_ok = server.replies[-1]
    assert (sub_ok.status, sub_ok.header("Expires"), sub_ok.header("Contact")) == \
        (200, "600", "<sip:presence@127.0.0.1:5070>")
    await settle(svc)
    notify, dest = server.transactions.sent[-1], server.transactions.destinations[-1]
    assert notify.method == "NOTIFY" and notify.ruri == "sip:dave@127.0.0.1:48261"
    assert notify.header("Subscription-State") == "active;expires=600"
    assert notify.cseq.number == 1 and b"<basic>open</basic>" in notify.body
    assert notify.from_.tag == "313b-sub-1" and notify.via.branch.startswith("z9hG4bK")
    assert (dest.host, dest.port, dest.proto) == ("127.0.0.1", 48261, "udp")


async def test_pending_without_force_active_then_refresh_and_unsubscribe(env):
    base, server, clock, _db = env
    # the packages without force_active: a service built with them (its parts share the registry)
    svc = PresenceService(server, presence_registry(force_active=0),
                          base.settings, store=base.store, clock=clock)
    await svc.handle_subscribe(PresenceCtx(subscribe(), SRC))
    assert server.replies[-1].status == 202
    await settle(svc)
    first = server.transactions.sent[-1]
    assert first.header("Subscription-State") == "pending;expires=600" and first.body == b""
    clock.now += 10
    await svc.handle_subscribe(PresenceCtx(subscribe(cseq=2, expires=120, to_tag="313b-sub-1"), SRC))
    assert server.replies[-1].status == 202
    await svc.handle_subscribe(PresenceCtx(subscribe(cseq=3, expires=0, to_tag="313b-sub-1"), SRC))
    await settle(svc)
    cseqs = [n.cseq.number for n in server.transactions.sent]
    assert cseqs == [1, 2, 3]
    assert server.transactions.sent[-1].header("Subscription-State") == "terminated;reason=timeout"
    await svc.handle_subscribe(PresenceCtx(subscribe(cseq=4, to_tag="313b-sub-1"), SRC))
    assert (server.replies[-1].status, server.replies[-1].reason) == (481, "Subscription does not exist")
    await svc.sender.close()


async def test_bad_event_and_no_body(env):
    svc, server, _, _ = env
    await svc.handle_subscribe(PresenceCtx(subscribe(event="foo"), SRC))
    r = server.replies[-1]
    assert r.status == 489 and r.header("Allow-Events") == "dialog;sla, presence.winfo, presence"
    await svc.handle_publish(PresenceCtx(publish(body=b""), SRC))
    assert (server.replies[-1].status, server.replies[-1].reason) == (400, "Bad request")
    await svc.handle_publish(PresenceCtx(publish(body=b"<not-xml"), SRC))
    assert server.replies[-1].status == 415


async def test_modify_notifies_refresh_does_not_remove_shows_closed(env):
    svc, server, _clock, db = env
    await svc.handle_subscribe(PresenceCtx(subscribe(), SRC))
    await svc.handle_publish(PresenceCtx(publish(), SRC))
    etag = server.replies[-1].header("SIP-ETag")
    await settle(svc)
    n = len(server.transactions.sent)
    await svc.handle_publish(PresenceCtx(publish(cseq=2, etag=etag, body=b""), SRC))
    etag2 = server.replies[-1].header("SIP-ETag")
    await settle(svc)
    assert etag2 != etag and len(server.transactions.sent) == n          # refresh: no NOTIFY
    await svc.handle_publish(PresenceCtx(publish(cseq=3, etag=etag, body=b""), SRC))
    assert server.replies[-1].status == 412
    await svc.handle_publish(PresenceCtx(publish(cseq=4, etag=etag2, expires=0, body=b""), SRC))
    assert (server.replies[-1].header("Expires"), server.replies[-1].header("SIP-ETag")) == ("0", etag2)
    await settle(svc)
    last = server.transactions.sent[-1]
    assert b"closed" in last.body and await db.query("presentity") == []


async def test_sender_uri_skips_that_watcher(env):
    svc, server, _, _ = env
    await svc.handle_subscribe(PresenceCtx(subscribe(), SRC))
    await svc.handle_subscribe(PresenceCtx(subscribe(callid="sub-2", user="erin"), SRC))
    await settle(svc)
    n = len(server.transactions.sent)
    await svc.handle_publish(PresenceCtx(publish(), SRC), "sip:dave@127.0.0.1:48261")
    await settle(svc)
    assert [m.ruri for m in server.transactions.sent[n:]] == ["sip:erin@127.0.0.1:48261"]
    await svc.handle_publish(PresenceCtx(publish(branch="x"), SRC), "<sip:dave@127.0.0.1>")
    assert server.replies[-1].status == 400


async def test_notify_481_ends_subscription_and_expiry_and_db_sync_and_reload(env):
    svc, server, clock, db = env
    await svc.handle_publish(PresenceCtx(publish(), SRC))
    await svc.handle_subscribe(PresenceCtx(subscribe(expires=5), SRC))
    await svc.handle_subscribe(PresenceCtx(subscribe(callid="sub-2", user="erin"), SRC))
    await settle(svc)
    await svc.sync_db()
    assert len(await db.query("active_watchers")) == 2
    # a restart: a new service reloads publications and subscriptions
    fresh = PresenceService(server, svc.events, svc.settings, store=svc.store, clock=clock)
    assert await fresh.load() == (1, 2)
    await fresh.sender.close()
    clock.now += 6
    await svc.clean()
    await settle(svc)
    assert server.transactions.sent[-1].header("Subscription-State") == "terminated;reason=timeout"
    assert len(svc.subscriptions) == 1
    server.transactions.answer = 481
    await svc.handle_publish(PresenceCtx(publish(branch="z"), SRC))
    await settle(svc)
    assert len(svc.subscriptions) == 0
    await svc.sync_db()
    assert await db.query("active_watchers") == []


async def test_winfo_lists_watchers(env):
    svc, server, _, _ = env
    await svc.handle_subscribe(PresenceCtx(subscribe(), SRC))
    ctx = PresenceCtx(subscribe(event="presence.winfo", callid="w-1", user="carol"), SRC)
    await svc.handle_subscribe(ctx)
    await settle(svc)
    winfo = server.transactions.sent[-1]
    assert winfo.header("Content-Type") == "application/watcherinfo+xml"
    assert b'state="full"' in winfo.body and b'id="sub-1"' in winfo.body and b'version="0"' in winfo.body
    await svc.handle_subscribe(PresenceCtx(subscribe(callid="sub-3", user="erin"), SRC))
    await settle(svc)
    partial = [m for m in server.transactions.sent if m.call_id == "w-1"][-1]
    assert b'state="partial"' in partial.body and b"erin" in partial.body and b'version="1"' in partial.body


async def test_watcher_ended_by_notify_481_updates_winfo(env):
    svc, server, _, _ = env
    ctx = PresenceCtx(subscribe(event="presence.winfo", callid="w-1", user="carol"), SRC)
    await svc.handle_subscribe(ctx)
    await settle(svc)
    server.transactions.answer_for["sub-1"] = 481   # dave's first NOTIFY is refused: he is gone
    await svc.handle_subscribe(PresenceCtx(subscribe(), SRC))
    await settle(svc)
    winfo = [m for m in server.transactions.sent if m.call_id == "w-1"]
    assert len(svc.subscriptions.watchers("sip:carol@127.0.0.1", "presence")) == 0
    assert b'state="full"' in winfo[-1].body and b'version="2"' in winfo[-1].body
    assert b'id="sub-1"' not in winfo[-1].body


async def test_notify_over_the_subscribe_transport_when_contact_names_none(env):
    """A watcher that subscribed over TCP with a Contact lacking ;transport= gets its NOTIFY over TCP, on
    the connection it used (SIPp and many phones); UDP stays UDP."""
    svc, server, _, _ = env
    tcp_sock = SocketInfo("tcp", "127.0.0.1", 5070)
    src = Source("tcp", tcp_sock, "127.0.0.1", 48261, 7)
    await svc.handle_subscribe(PresenceCtx(subscribe(), src))
    await settle(svc)
    notify, dest = server.transactions.sent[-1], server.transactions.destinations[-1]
    assert (dest.proto, dest.conn_id, dest.port) == ("tcp", 7, 48261)
    assert notify.via.transport == "TCP"


async def test_publish_not_committed_is_refused_and_not_kept(env):
    """Group commit: a batch that fails answers its PUBLISHes 503 + Retry-After (database lost) or 500,
    and memory keeps only what the database holds."""
    from routescript.db import DatabaseError

    svc, server, _clock, db = env
    real = db.write_batch

    async def lost(writes):
        raise DatabaseError("connection lost", "connection")

    db.write_batch = lost
    assert await svc.handle_publish(PresenceCtx(publish(), SRC)) == -1
    assert (server.replies[-1].status, server.replies[-1].header("Retry-After")) == (503, "5")
    assert not svc.contains_presence("sip:carol@127.0.0.1")

    async def broken(writes):
        raise DatabaseError("disk says no", "query")

    db.write_batch = broken
    assert await svc.handle_publish(PresenceCtx(publish(branch="b2"), SRC)) == -1
    assert server.replies[-1].status == 500 and not svc.contains_presence("sip:carol@127.0.0.1")
    db.write_batch = real
    assert await svc.handle_publish(PresenceCtx(publish(branch="b3"), SRC)) == 1
    assert svc.contains_presence("sip:carol@127.0.0.1") and len(await db.query("presentity")) == 1


async def test_concurrent_publishes_share_a_commit_and_each_is_stored(env):
    svc, server, _clock, db = env
    msgs = [parse_message(publish(branch=f"c{i}").to_bytes().replace(b"carol@", f"user{i}@".encode()))
            for i in range(8)]
    results = await asyncio.gather(*(svc.handle_publish(PresenceCtx(m, SRC)) for m in msgs))
    assert results == [1] * 8 and [r.status for r in server.replies] == [200] * 8
    assert svc.store.committer.batches == 1 and svc.store.committer.callers == 8
    assert len(await db.query("presentity")) == 8


def pidf(basic: str, note: str = "") -> bytes:
    return (b'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
            b'entity="sip:carol@127.0.0.1"><tuple id="t1"><status><basic>' + basic.encode()
            + b'</basic></status></tuple>'
            + (b"<note>" + note.encode() + b"</note>" if note else b"") + b"</presence>")


async def test_cached_body_never_outlives_a_modify_expiry_or_removal(env):
    """The shared body is cached per presentity; after each change every watcher gets the new state."""
    svc, server, clock, _db = env
    await svc.handle_publish(PresenceCtx(publish(body=pidf("open", "first")), SRC))
    etag = server.replies[-1].header("SIP-ETag")
    await svc.handle_subscribe(PresenceCtx(subscribe(), SRC))
    ctx = PresenceCtx(subscribe(callid="sub-2", user="erin"), SRC)
    await svc.handle_subscribe(ctx)   # served from the cache
    await settle(svc)
    assert svc.bodies.hits >= 1
    assert all(b"first" in m.body for m in server.transactions.sent)
    for step, (basic, note) in enumerate([("closed", "second"), ("open", "third"), ("open", "fourth")]):
        n = len(server.transactions.sent)
        await svc.handle_publish(PresenceCtx(publish(cseq=2 + step, etag=etag, body=pidf(basic, note)), SRC))
        etag = server.replies[-1].header("SIP-ETag")
        await settle(svc)
        sent = server.transactions.sent[n:]
        state = f"<basic>{basic}</basic>".encode()
        assert len(sent) == 2 + step and all(state in m.body and note.encode() in m.body for m in sent)
        # a new watcher (body from the cache) sees the same, never an older note
        await svc.handle_subscribe(PresenceCtx(subscribe(callid=f"late-{step}", user=f"late{step}"), SRC))
        await settle(svc)
        late = server.transactions.sent[-1]
        assert note.encode() in late.body and b"first" not in late.body
    # expiry: the publication is gone, so a new watcher gets no stale state
    clock.now += 700
    await svc.clean()
    await settle(svc)
    await svc.handle_subscribe(PresenceCtx(subscribe(callid="after-expiry", user="zed"), SRC))
    await settle(svc)
    assert b"fourth" not in server.transactions.sent[-1].body


@pytest.mark.parametrize("backend", ["postgres", "mysql"], indirect=True)
async def test_a_row_the_database_refuses_never_blocks_the_periodic_save(env, caplog):
    """One change PostgreSQL refuses (a Contact longer than VARCHAR(255): refused at arrival now, put in
    memory by hand here, standing for whatever a database may refuse) costs that row only: the others
    are saved, the bad one is logged with its Call-ID."""
    from dataclasses import replace

    svc, _server, clock, db = env
    await svc.handle_subscribe(PresenceCtx(subscribe(), SRC))
    await svc.handle_subscribe(PresenceCtx(subscribe(callid="sub-2", user="erin"), SRC))
    await settle(svc)
    await svc.sync_db()
    bad = svc.subscriptions.get(("sub-1", "313b-sub-1", "ye3j"))
    svc.subscriptions.update(replace(bad, contact="sip:" + "x" * 300 + "@127.0.0.1"))
    clock.now += 10
    await svc.handle_subscribe(PresenceCtx(subscribe(cseq=2, expires=120, to_tag="313b-sub-2", callid="sub-2",
                                             user="erin"), SRC))
    await svc.sync_db()
    rows = {r["callid"]: r for r in await db.query("active_watchers")}
    assert int(rows["sub-2"]["expires"]) == int(clock.now + 120)
    assert rows["sub-1"]["contact"] == "sip:dave@127.0.0.1:48261"
    assert "subscription sub-1 to sip:carol@127.0.0.1 not saved" in caplog.text


async def test_an_unsubscribe_waiting_for_its_commit_goes_on_from_a_notify_sent_meanwhile(env):
    """An unsubscribe's row is deleted before its 200, outside the presentity's lock: a PUBLISH may notify
    the dialog meanwhile, and the final NOTIFY then takes the next CSeq, not the one it had decided on."""
    svc, server, _clock, db = env
    await svc.handle_subscribe(PresenceCtx(subscribe(), SRC))
    await settle(svc)
    gate = asyncio.Event()
    delete = svc.store.delete_subscription

    async def slow_delete(sub):
        await gate.wait()
        await delete(sub)

    svc.store.delete_subscription = slow_delete
    unsubscribe = PresenceCtx(subscribe(cseq=2, expires=0, to_tag="313b-sub-1"), SRC)
    bye = asyncio.create_task(svc.handle_subscribe(unsubscribe))
    for _ in range(50):
        if svc.persistence.storing:
            break
        await asyncio.sleep(0)
    assert svc.persistence.storing and await svc.handle_publish(PresenceCtx(publish(), SRC)) == 1
    await settle(svc)
    gate.set()
    assert await bye == 1
    await settle(svc)
    sent = [(n.cseq.number, n.header("Subscription-State")) for n in server.transactions.sent]
    assert sent == [(1, "active;expires=600"), (2, "active;expires=600"), (3, "terminated;reason=timeout")]
    assert [r.status for r in server.replies] == [200, 200, 200]
    assert await db.query("active_watchers") == []


ALLOW_ALL = (b'<cr:ruleset xmlns="urn:ietf:params:xml:ns:pres-rules" '
             b'xmlns:cr="urn:ietf:params:xml:ns:common-policy"><cr:rule id="all"><cr:conditions/>'
             b'<cr:actions><sub-handling>allow</sub-handling></cr:actions><cr:transformations>'
             b'<provide-services><all-services/></provide-services><provide-all-attributes/>'
             b'</cr:transformations></cr:rule></cr:ruleset>')


def counting_rules(reg: EventRegistry, doc: bytes | None) -> list[tuple[str, str]]:
    """The presence package's get_rules_doc replaced by one answering `doc` and noting each read."""
    reads: list[tuple[str, str]] = []

    def get_rules_doc(user, domain):
        reads.append((user, domain))
        return doc
    object.__setattr__(reg.contains_event("presence"), "get_rules_doc", get_rules_doc)
    return reads


async def test_rules_document_read_only_when_the_decision_or_the_body_needs_it(env):
    """Issue 18 item 4: handle_subscribe("1") decides without the rules and its bodies are not filtered
    by them - no read, neither for its first NOTIFY nor in a fan-out to it; a watcher the rules judge
    costs one read per SUBSCRIBE (its authorization and its first NOTIFY's body share it), and a
    fan-out reads the document once for all the watchers it filters."""
    base, server, clock, _db = env
    reg = presence_registry(force_active=0)
    reads = counting_rules(reg, ALLOW_ALL)
    svc = PresenceService(server, reg, base.settings, store=base.store, clock=clock)
    assert await svc.handle_publish(PresenceCtx(publish(), SRC)) == 1
    etag = server.replies[-1].header("SIP-ETag")
    assert await svc.handle_subscribe(PresenceCtx(subscribe(), SRC), force_active=True) == 1
    await settle(svc)
    assert server.replies[-1].status == 200
    assert b"<basic>open</basic>" in server.transactions.sent[-1].body
    assert await svc.handle_publish(PresenceCtx(publish(cseq=2, etag=etag, body=pidf("closed")), SRC)) == 1
    etag = server.replies[-1].header("SIP-ETag")
    await settle(svc)
    assert b"<basic>closed</basic>" in server.transactions.sent[-1].body
    assert reads == []   # forced: neither the decision nor the bodies read the rules

    assert await svc.handle_subscribe(PresenceCtx(subscribe(callid="sub-2", user="erin"), SRC)) == 1
    await settle(svc)
    assert server.replies[-1].status == 200   # allowed by the document
    assert b"<basic>closed</basic>" in server.transactions.sent[-1].body
    assert reads == [("carol", "127.0.0.1")]   # one read: the authorization and the first NOTIFY
    assert await svc.handle_publish(PresenceCtx(publish(cseq=3, etag=etag, body=pidf("open")), SRC)) == 1
    await settle(svc)
    assert [n.header("Call-ID") for n in server.transactions.sent[-2:]] == ["sub-1", "sub-2"]
    assert reads == [("carol", "127.0.0.1")] * 2   # the fan-out: once, for the one filtered watcher
    await svc.sender.close()


async def test_in_dialog_subscribe_reads_only_what_it_may_change(env):
    """Issue 18 item 3: a refresh of a dialog the table holds takes the dialog's identities from the
    table - its From, To and Request-URI are not parsed - and its Contact is parsed only when it is not
    the stored target as written; a new target is followed by the next NOTIFY."""
    svc, server, clock, _db = env
    assert await svc.handle_subscribe(PresenceCtx(subscribe(), SRC)) == 1
    clock.now += 10
    refresh = subscribe(cseq=2, expires=300, to_tag="313b-sub-1")
    assert await svc.handle_subscribe(PresenceCtx(refresh, SRC)) == 1
    assert (server.replies[-1].status, server.replies[-1].header("Expires")) == (200, "300")
    assert not {"from", "to", "uri", "contacts"} & set(refresh._cache)
    moved = parse_message(bytes(subscribe(cseq=3, expires=300, to_tag="313b-sub-1")).replace(
        b"<sip:dave@127.0.0.1:48261>", b"<sip:dave@127.0.0.1:5999>"))
    assert await svc.handle_subscribe(PresenceCtx(moved, SRC)) == 1
    await settle(svc)
    notify, dest = server.transactions.sent[-1], server.transactions.destinations[-1]
    assert notify.ruri == "sip:dave@127.0.0.1:5999" and dest.port == 5999
    assert notify.header("Subscription-State") == "active;expires=300"
    unknown = subscribe(cseq=4, to_tag="no-such-tag")
    assert await svc.handle_subscribe(PresenceCtx(unknown, SRC)) == -1
    assert (server.replies[-1].status, server.replies[-1].reason) == (481, "Subscription does not exist")


async def test_publish_writes_use_the_request_uri_user_and_domain(env, monkeypatch):
    """Issue 18 item 7 (presence half): a PUBLISH's rows are written with the user and domain read once
    from its Request-URI - the presentity URI is not split again per write, or for E_PRESENCE_PUBLISH."""
    from routescript.modules.presence import publish as publish_module
    from routescript.modules.presence import storage

    def no_split(uri):
        raise AssertionError(f"split_pres_uri({uri!r}) on the PUBLISH path")
    monkeypatch.setattr(storage, "split_pres_uri", no_split)
    assert not hasattr(publish_module, "split_pres_uri")
    svc, server, _clock, db = env
    assert await svc.handle_publish(PresenceCtx(publish(), SRC)) == 1
    etag = server.replies[-1].header("SIP-ETag")
    assert await svc.handle_publish(PresenceCtx(publish(cseq=2, etag=etag, body=pidf("closed")), SRC)) == 1
    new_etag = server.replies[-1].header("SIP-ETag")
    assert [(r["username"], r["domain"], r["etag"]) for r in await db.query("presentity")] == \
        [("carol", "127.0.0.1", new_etag)]
    assert await svc.handle_publish(PresenceCtx(publish(cseq=3, etag=new_etag, expires=0), SRC)) == 1
    assert server.replies[-1].status == 200
    assert await db.query("presentity") == []   # inserted, replaced, then deleted by (user, domain)


async def test_a_dialogs_notifies_reuse_its_head_and_hop_until_its_target_moves(env):
    """Issue 18 item 9: where a dialog's NOTIFYs go is worked out for its first NOTIFY and reused by the
    next ones (each change of the presentity); a refresh with a new Contact is followed at once."""
    svc, server, _clock, _db = env
    hops: list[str] = []
    find = server.requests.hop_in_dialog

    def counted(request, **kw):
        hops.append(request.ruri)
        return find(request, **kw)
    server.requests.hop_in_dialog = counted
    assert await svc.handle_publish(PresenceCtx(publish(), SRC)) == 1
    etag = server.replies[-1].header("SIP-ETag")
    assert await svc.handle_subscribe(PresenceCtx(subscribe(), SRC)) == 1
    await settle(svc)
    for cseq, basic in ((2, "closed"), (3, "open")):
        ctx = PresenceCtx(publish(cseq=cseq, etag=etag, body=pidf(basic)), SRC)
        assert await svc.handle_publish(ctx) == 1
        etag = server.replies[-1].header("SIP-ETag")
        await settle(svc)
    assert [n.cseq.number for n in server.transactions.sent] == [1, 2, 3]
    assert hops == ["sip:dave@127.0.0.1:48261"]   # three NOTIFYs, one hop
    moved = parse_message(bytes(subscribe(cseq=2, to_tag="313b-sub-1")).replace(
        b"<sip:dave@127.0.0.1:48261>", b"<sip:dave@127.0.0.1:5999>"))
    assert await svc.handle_subscribe(PresenceCtx(moved, SRC)) == 1
    await settle(svc)
    notify, dest = server.transactions.sent[-1], server.transactions.destinations[-1]
    assert (notify.ruri, dest.port, notify.cseq.number) == ("sip:dave@127.0.0.1:5999", 5999, 4)
    assert hops == ["sip:dave@127.0.0.1:48261", "sip:dave@127.0.0.1:5999"]


async def test_the_first_notify_finds_its_hop_from_the_contact_the_subscribe_parsed(env, monkeypatch):
    """Issue 18 item 3: an initial SUBSCRIBE's Contact is parsed once, with its facts; its first NOTIFY's
    destination comes from that parse (the core's request sender does not parse the target again)."""
    from routescript.core import requests as requests_module

    def no_parse(text):
        raise AssertionError(f"Contact parsed again: {text}")
    monkeypatch.setattr(requests_module, "parse_uri", no_parse)
    svc, server, _clock, _db = env
    assert await svc.handle_subscribe(PresenceCtx(subscribe(callid="sub-p"), SRC)) == 1
    await settle(svc)
    notify, dest = server.transactions.sent[-1], server.transactions.destinations[-1]
    assert (notify.ruri, dest.host, dest.port, dest.proto) == ("sip:dave@127.0.0.1:48261", "127.0.0.1", 48261,
                                                               "udp")


async def test_a_fan_out_reads_the_clock_once_per_change_not_per_watcher(env):
    """Issue 18 ("work done once per change instead of once per watcher"): the time the NOTIFYs' expires
    count from is read once per change (again only after the loop ran); every watcher is still told."""
    svc, server, clock, _db = env
    reads = []

    class CountingClock:
        def __call__(self):
            reads.append(1)
            return clock.now
    counting = CountingClock()
    svc = PresenceService(server, presence_registry(), svc.settings, store=svc.store, clock=counting)
    assert await svc.handle_publish(PresenceCtx(publish(), SRC)) == 1
    etag = server.replies[-1].header("SIP-ETag")
    per_change = []
    for watchers in (1, 3):
        for n in range(len(svc.subscriptions), watchers):
            ctx = PresenceCtx(subscribe(callid=f"fan-{n}", user=f"w{n}"), SRC)
            assert await svc.handle_subscribe(ctx) == 1
        await settle(svc)
        reads.clear()
        sent = len(server.transactions.sent)
        cseq = 2 if watchers == 1 else 3
        ctx = PresenceCtx(publish(cseq=cseq, etag=etag, body=pidf("closed")), SRC)
        assert await svc.handle_publish(ctx) == 1
        etag = server.replies[-1].header("SIP-ETag")
        await settle(svc)
        assert len(server.transactions.sent) - sent == watchers
        per_change.append(len(reads))
    assert per_change[0] == per_change[1]
    await svc.sender.close()


async def test_a_flush_cancelled_midway_leaves_its_changes_for_the_final_flush(env):
    """The module's stop cancels the db_update_period timer, maybe in the middle of a flush: what that
    flush had taken must be written by the final flush at stop, or a restarted node goes on from an
    older NOTIFY CSeq (a CSeq the watcher has seen already)."""
    svc, _server, _clock, db = env
    assert await svc.handle_subscribe(PresenceCtx(subscribe(), SRC)) == 1
    await settle(svc)
    store = svc.store
    real = store.sync_subscriptions
    entered = asyncio.Event()

    async def stuck(*changes):
        entered.set()
        await asyncio.Event().wait()   # the commit never comes back: the timer is cancelled meanwhile

    store.sync_subscriptions = stuck
    flush = asyncio.create_task(svc.sync_db())
    await entered.wait()
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    store.sync_subscriptions = real
    await svc.sync_db()                 # the final flush at stop
    rows = await db.query("active_watchers")
    assert [(r["callid"], int(r["local_cseq"])) for r in rows] == [("sub-1", 1)]
