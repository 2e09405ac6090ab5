"""SUBSCRIBE / NOTIFY (RFC 6665, RFC 3856) against `routescript run examples/presence.cfg`, over UDP and
TCP (the dialog life cycle over TLS, WS and WSS too): dialog creation, 200/202, fetch, refresh,
unsubscribe, 481, 489, capped Expires, NOTIFY headers, route set, CSeq, UDP retransmission, TCP
connection reuse, 481/408 answers ending the subscription."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from presence_e2e import (ALL_PROTOS, SecureListeners, Srv, free_port, presence_cfg, run_server,  # noqa: F401
                          workers)

from routescript.testing import pidf

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio


def _server(tmp_path_factory: pytest.TempPathFactory, name: str, db: TestDb, n_workers: int,
            **presence: object) -> Iterator[Srv]:
    tmp = tmp_path_factory.mktemp(name)
    port = free_port()
    secure = SecureListeners.make(tmp)
    cfg = presence_cfg(tmp, port, db_url=db.url, presence={"max_expires_subscribe": 900, **presence},
                       tm={"fr_timeout": 1}, workers=n_workers, secure=secure)
    with run_server(cfg, tmp) as server:
        yield Srv(server, port, secure)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, presence_dbs: Callable[[], TestDb],
        workers: int) -> Iterator[Srv]:  # noqa: F811 - the fixture
    yield from _server(tmp_path_factory, "subscribe", presence_dbs(), workers)


@pytest.fixture(scope="module")
def srv_keep(tmp_path_factory: pytest.TempPathFactory, presence_dbs: Callable[[], TestDb],
             workers: int) -> Iterator[Srv]:  # noqa: F811 - the fixture
    yield from _server(tmp_path_factory, "keep", presence_dbs(), workers, end_sub_on_timeout=0)


@pytest.mark.parametrize("proto", ALL_PROTOS)
async def test_subscribe_dialog_life_cycle(srv: Srv, proto: str) -> None:
    """Over every transport; over tls, ws and wss the NOTIFYs come back on bob's connection, written by
    the worker that accepted it whichever worker owns the subscription."""
    user = f"alice{proto}"
    async with await srv.client(user, proto) as alice, await srv.client(f"bob{proto}", proto) as bob:
        pub = alice.publish(srv.uri(user), pidf(alice.aor, note="Here"))
        assert (await alice.send_request(pub)).status == 200
        sub = bob.subscribe(srv.uri(user), expires=600, accept="application/pidf+xml")
        resp = await bob.send_request(sub)
        suffix = "" if proto == "udp" else f";transport={proto}"
        assert (resp.status, resp.reason, resp.header("Expires")) == (200, "OK", "600")
        assert resp.to.tag and resp.header("Contact") == f"<sip:presence@127.0.0.1:{srv.port}{suffix}>"
        # first NOTIFY at once; over TCP it comes back on bob's connection (nobody listens on his port)
        n = await bob.expect_request("NOTIFY", call_id=sub.call_id)
        await bob.reply(n)
        assert n.ruri == bob.contact_uri
        assert n.from_.tag == resp.to.tag and n.to.tag == sub.from_.tag
        assert str(n.from_.uri) == f"sip:{user}@127.0.0.1" and str(n.to.uri) == bob.aor
        assert n.header("Event") == "presence" and n.header("CSeq") == "1 NOTIFY"
        assert n.header("Contact") == f"<sip:presence@127.0.0.1:{srv.port}{suffix}>"
        assert n.header("Subscription-State") == "active;expires=600"
        assert n.via.transport == proto.upper() and b"<note>Here</note>" in n.body
        dialog = bob.dialog(sub, resp)

        # refresh in the dialog: 200 + NOTIFY with the new expiry, CSeq + 1
        ref = bob.subscribe(event="presence", expires=120, dialog=dialog)
        resp = await bob.send_request(ref)
        assert (resp.status, resp.header("Expires")) == (200, "120")
        n = await bob.expect_request("NOTIFY", call_id=sub.call_id)
        await bob.reply(n)
        assert n.header("CSeq") == "2 NOTIFY" and n.header("Subscription-State") == "active;expires=120"

        # a change: NOTIFY CSeq 3
        await alice.send_request(alice.publish(srv.uri(user), pidf(alice.aor, note="Gone out")))
        n = await bob.expect_request("NOTIFY", call_id=sub.call_id)
        await bob.reply(n)
        assert n.header("CSeq") == "3 NOTIFY" and b"Gone out" in n.body

        # unsubscribe: 200 + NOTIFY terminated;reason=timeout, no body; then the dialog is gone (481)
        resp = await bob.send_request(bob.subscribe(event="presence", expires=0, dialog=dialog))
        assert (resp.status, resp.header("Expires")) == (200, "0")
        n = await bob.expect_request("NOTIFY", call_id=sub.call_id)
        await bob.reply(n)
        assert n.header("Subscription-State") == "terminated;reason=timeout"
        assert n.header("CSeq") == "4 NOTIFY"
        assert n.body == b"" and n.header("Content-Type") is None
        resp = await bob.send_request(bob.subscribe(event="presence", expires=60, dialog=dialog))
        assert (resp.status, resp.reason) == (481, "Subscription does not exist")


async def test_pending_202_without_force_active(srv: Srv) -> None:
    """The script calls handle_subscribe("1") only for @127.0.0.1; another domain goes through the rules
    (none: pending)."""
    async with await srv.client("zed") as zed, await srv.client("yan") as yan:
        await zed.send_request(zed.publish(srv.uri("zed", "localhost"), pidf("sip:zed@localhost")))
        sub = yan.subscribe(srv.uri("zed", "localhost"), expires=300)
        resp = await yan.send_request(sub)
        assert (resp.status, resp.reason) == (202, "Accepted")
        n = await yan.expect_request("NOTIFY", call_id=sub.call_id)
        await yan.reply(n)
        assert n.header("Subscription-State") == "pending;expires=300" and n.body == b""


async def test_fetch_one_terminated_notify_with_state(srv: Srv) -> None:
    async with await srv.client("fred") as fred, await srv.client("gus") as gus:
        await fred.send_request(fred.publish(srv.uri("fred"), pidf(fred.aor, note="fetched")))
        sub = gus.subscribe(srv.uri("fred"), expires=0)
        resp = await gus.send_request(sub)
        assert (resp.status, resp.header("Expires")) == (200, "0")
        n = await gus.expect_request("NOTIFY", call_id=sub.call_id)
        await gus.reply(n)
        assert n.header("Subscription-State") == "terminated;reason=timeout" and b"fetched" in n.body
        await fred.send_request(fred.publish(srv.uri("fred"), pidf(fred.aor, note="later")))
        await gus.expect_no_request("NOTIFY", within=0.3)
        refresh = gus.subscribe(event="presence", expires=60, dialog=gus.dialog(sub, resp))
        resp = await gus.send_request(refresh)
        assert resp.status == 481


async def test_errors_481_489_and_capped_expires(srv: Srv) -> None:
    async with await srv.client("hal") as hal:
        req = hal.subscribe(srv.uri("ida"), expires=60, to_tag="no-such-dialog")
        resp = await hal.send_request(req)
        assert (resp.status, resp.reason) == (481, "Subscription does not exist")
        for event in ("foo", None):
            resp = await hal.send_request(hal.subscribe(srv.uri("ida"), event=event, expires=60))
            assert (resp.status, resp.reason) == (489, "Bad Event")
            assert resp.header("Allow-Events") == "dialog;sla, presence.winfo, presence"
        hal.auto_reply["NOTIFY"] = 200
        sub = hal.subscribe(srv.uri("ida"), expires=7200)
        resp = await hal.send_request(sub)
        assert (resp.status, resp.header("Expires")) == (200, "900")
        n = await hal.expect_request("NOTIFY", call_id=sub.call_id)
        assert n.header("Subscription-State") == "active;expires=900" and n.body == b""


async def test_two_watchers_and_route_set(srv: Srv) -> None:
    """Two watchers of one presentity both hear a change; the second came through a (fake) proxy whose
    Record-Route becomes the NOTIFY's Route (the proxy is the watcher's own socket here)."""
    async with await srv.client("kay") as kay, await srv.client("lou") as lou, \
            await srv.client("max") as mx:
        lou.auto_reply["NOTIFY"] = 200
        mx.auto_reply["NOTIFY"] = 200
        s1 = lou.subscribe(srv.uri("kay"))
        assert (await lou.send_request(s1)).status == 200
        rr = f"<sip:{mx.hostport};lr>"
        s2 = mx.subscribe(srv.uri("kay"), headers=[("Record-Route", rr)])
        assert (await mx.send_request(s2)).status == 200
        first = await mx.expect_request("NOTIFY", call_id=s2.call_id)
        assert first.header_all("Route") == [rr] and first.ruri == mx.contact_uri
        await lou.expect_request("NOTIFY", call_id=s1.call_id)
        await kay.send_request(kay.publish(srv.uri("kay"), pidf(kay.aor, note="both")))
        for client, sub in ((lou, s1), (mx, s2)):
            n = await client.expect_request("NOTIFY", call_id=sub.call_id)
            assert b"<note>both</note>" in n.body and n.header("CSeq") == "2 NOTIFY"


async def test_udp_notify_retransmitted_until_answered(srv: Srv) -> None:
    async with await srv.client("ned") as ned:
        sub = ned.subscribe(srv.uri("oz"))
        assert (await ned.send_request(sub)).status == 200
        n = await ned.expect_request("NOTIFY", call_id=sub.call_id)
        key = (n.via.branch, "NOTIFY")
        for _ in range(100):            # T1 = 0.5 s: the first retransmission comes after half a second
            if ned.retransmissions.get(key):
                break
            await asyncio.sleep(0.02)
        assert ned.retransmissions.get(key, 0) >= 1
        await ned.reply(n)


async def test_notify_answered_481_ends_subscription(srv: Srv) -> None:
    async with await srv.client("pia") as pia, await srv.client("quo") as quo:
        sub = quo.subscribe(srv.uri("pia"))
        resp = await quo.send_request(sub)
        n = await quo.expect_request("NOTIFY", call_id=sub.call_id)
        await quo.reply(n, 481)
        await asyncio.sleep(0.2)
        await pia.send_request(pia.publish(srv.uri("pia"), pidf(pia.aor)))
        await quo.expect_no_request("NOTIFY", call_id=sub.call_id, within=0.3)
        refresh = quo.subscribe(event="presence", expires=60, dialog=quo.dialog(sub, resp))
        resp = await quo.send_request(refresh)
        assert resp.status == 481


async def test_notify_timeout_ends_subscription(srv: Srv) -> None:
    """Nobody answers the NOTIFY: Timer F (tm fr_timeout = 1 s) gives 408, end_sub_on_timeout = 1 ends it."""
    async with await srv.client("rex") as rex:
        sub = rex.subscribe(srv.uri("sam"))
        resp = await rex.send_request(sub)
        await rex.expect_request("NOTIFY", call_id=sub.call_id)
        await asyncio.sleep(1.4)
        refresh = rex.subscribe(event="presence", expires=60, dialog=rex.dialog(sub, resp))
        resp = await rex.send_request(refresh)
        assert resp.status == 481


async def test_notify_timeout_keeps_subscription_when_disabled(srv_keep: Srv) -> None:
    srv = srv_keep
    async with await srv.client("tom") as tom:
        sub = tom.subscribe(srv.uri("uma"))
        resp = await tom.send_request(sub)
        await tom.expect_request("NOTIFY", call_id=sub.call_id)
        await asyncio.sleep(1.4)
        tom.auto_reply["NOTIFY"] = 200
        refresh = tom.subscribe(event="presence", expires=60, dialog=tom.dialog(sub, resp))
        resp = await tom.send_request(refresh)
        assert resp.status == 200
        n = await tom.expect_request("NOTIFY", call_id=sub.call_id)
        assert n.header("CSeq") == "2 NOTIFY"
