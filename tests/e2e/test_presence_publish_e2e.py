"""PUBLISH (RFC 3903) against `routescript run examples/presence.cfg`, over UDP and TCP (the life cycle
over TLS, WS and WSS too): store, refresh,
modify, remove, 412, 400, 489, default and capped Expires, bad bodies, retransmissions, concurrency,
Sender, E_PRESENCE_PUBLISH."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from presence_e2e import (ALL_PROTOS, RunningServer, SecureListeners, free_port, presence_cfg,  # noqa: F401
                          run_server, workers)
from presence_e2e import Srv as PresenceSrv

from routescript.testing import SipTestClient, pidf

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio
# presence_xml registers all three (OpenSIPS add_events.c)
ALLOW_EVENTS = "dialog;sla, presence.winfo, presence"


class Srv(PresenceSrv):
    def __init__(self, server: RunningServer, port: int, db: TestDb, secure: SecureListeners) -> None:
        super().__init__(server, port, secure)
        self.db = db

    def rows(self, user: str) -> list[tuple[str, int, bytes]]:
        return self.db.rows("SELECT etag, expires, body FROM presentity WHERE username = ? ORDER BY id", user)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, presence_dbs: Callable[[], TestDb],
        workers: int) -> Iterator[Srv]:  # noqa: F811 - the fixture
    tmp = tmp_path_factory.mktemp("publish")
    port = free_port()
    db = presence_dbs()
    secure = SecureListeners.make(tmp)
    cfg = presence_cfg(tmp, port, db_url=db.url, presence={"max_expires_publish": 900}, workers=workers,
                       secure=secure)
    with run_server(cfg, tmp) as server:
        yield Srv(server, port, db, secure)


async def subscribe(srv: Srv, watcher: SipTestClient, user: str):
    """An active subscription of `watcher` to `user`; returns (request, dialog) after the first NOTIFY."""
    sub = watcher.subscribe(srv.uri(user), expires=600)
    resp = await watcher.send_request(sub)
    assert resp.status == 200
    first = await watcher.expect_request("NOTIFY", call_id=sub.call_id)
    return sub, first


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_server_address_is_the_contact_of_the_200_to_publish(srv: Srv, proto: str) -> None:
    """The presence documentation: server_address is the Contact of "200OK replies to Subscribe and
    Publish" (the example sets it); on TCP with ;transport=tcp, as the 200 to SUBSCRIBE."""
    suffix = ";transport=tcp" if proto == "tcp" else ""
    async with await srv.client(f"cora{proto}", proto) as cora:
        resp = await cora.send_request(cora.publish(srv.uri(f"cora{proto}"), pidf(cora.aor), expires=60))
        assert resp.status == 200
        assert resp.header("Contact") == f"<sip:presence@127.0.0.1:{srv.port}{suffix}>"
        # a refresh and a removal are 200s to PUBLISH too
        resp = await cora.send_request(cora.publish(srv.uri(f"cora{proto}"), None, expires=0,
                                                    etag=resp.header("SIP-ETag")))
        assert resp.status == 200
        assert resp.header("Contact") == f"<sip:presence@127.0.0.1:{srv.port}{suffix}>"


@pytest.mark.parametrize("proto", ALL_PROTOS)
async def test_publish_life_cycle(srv: Srv, proto: str) -> None:
    user = f"carol{proto}"
    async with await srv.client(user, proto) as carol, await srv.client(f"dave{proto}", proto) as dave:
        dave.auto_reply["NOTIFY"] = 200
        sub, first = await subscribe(srv, dave, user)
        assert first.body == b""                        # nothing published yet: no body

        # initial: stored before the 200, which carries SIP-ETag and Expires
        resp = await carol.send_request(carol.publish(srv.uri(user), pidf(carol.aor, note="Online"),
                                                      expires=300))
        assert (resp.status, resp.header("Expires")) == (200, "300")
        etag1 = resp.header("SIP-ETag")
        assert etag1 and [r[0] for r in srv.rows(user)] == [etag1]
        n = await dave.expect_request("NOTIFY", call_id=sub.call_id)
        assert b"<note>Online</note>" in n.body and n.header("CSeq") == "2 NOTIFY"

        # refresh: new etag, the old one is gone (412), no NOTIFY
        resp = await carol.send_request(carol.publish(srv.uri(user), None, expires=300, etag=etag1))
        etag2 = resp.header("SIP-ETag")
        assert resp.status == 200 and etag2 and etag2 != etag1
        assert [r[0] for r in srv.rows(user)] == [etag2]
        await dave.expect_no_request("NOTIFY", call_id=sub.call_id, within=0.3)
        resp = await carol.send_request(carol.publish(srv.uri(user), None, expires=300, etag=etag1))
        assert (resp.status, resp.reason) == (412, "Conditional request failed")

        # modify: body replaced, watchers notified
        resp = await carol.send_request(carol.publish(srv.uri(user), pidf(carol.aor, "closed", note="Away"),
                                                      expires=300, etag=etag2))
        etag3 = resp.header("SIP-ETag")
        assert resp.status == 200 and etag3 not in (etag1, etag2)
        n = await dave.expect_request("NOTIFY", call_id=sub.call_id)
        assert b"<note>Away</note>" in n.body and b"Online" not in n.body
        assert b"Away" in srv.rows(user)[0][2]

        # remove: 200 Expires 0 echoing the etag, row deleted, watcher told the device is closed
        resp = await carol.send_request(carol.publish(srv.uri(user), None, expires=0, etag=etag3))
        assert (resp.status, resp.header("Expires"), resp.header("SIP-ETag")) == (200, "0", etag3)
        assert srv.rows(user) == []
        n = await dave.expect_request("NOTIFY", call_id=sub.call_id)
        assert b"<basic>closed</basic>" in n.body and b"open" not in n.body
        assert n.header("Subscription-State").startswith("active;expires=")


async def test_errors_400_412_489(srv: Srv) -> None:
    async with await srv.client("erin") as erin:
        uri = srv.uri("erin")
        resp = await erin.send_request(erin.publish(uri, None, expires=600))
        assert (resp.status, resp.reason) == (400, "Bad request")
        resp = await erin.send_request(erin.publish(uri, None, expires=600, etag="a.1.2.3.4"))
        assert (resp.status, resp.reason) == (412, "Conditional request failed")
        for event in ("foo", None):
            req = erin.publish(uri, pidf(erin.aor), expires=600, event=event or "presence")
            if event is None:
                req.remove_header("Event")
            resp = await erin.send_request(req)
            assert (resp.status, resp.reason) == (489, "Bad Event")
            assert resp.header("Allow-Events") == ALLOW_EVENTS
        assert srv.rows("erin") == []


async def test_expires_default_and_capped(srv: Srv) -> None:
    async with await srv.client("hank") as hank:
        resp = await hank.send_request(hank.publish(srv.uri("hank"), pidf(hank.aor), expires=None))
        assert (resp.status, resp.header("Expires")) == (200, "900")   # 3600 default, capped at 900
        resp = await hank.send_request(hank.publish(srv.uri("hank"), pidf(hank.aor), expires=7200))
        assert (resp.status, resp.header("Expires")) == (200, "900")
        resp = await hank.send_request(hank.publish(srv.uri("hank"), pidf(hank.aor), expires=60))
        assert (resp.status, resp.header("Expires")) == (200, "60")
        assert len(srv.rows("hank")) == 3


@pytest.mark.parametrize("body,ctype,status", [
    (b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:x@y'><tuple", "application/pidf+xml", 415),
    (b'<!DOCTYPE presence [<!ENTITY x "y">]><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:x@y"/>',
     "application/pidf+xml", 415),
    # well-formed but not PIDF: 400 (OpenSIPS stores it and leaves it out of every NOTIFY - our choice)
    (b"<notpidf/>", "application/pidf+xml", 400),
])
async def test_bad_body_refused_nothing_stored(srv: Srv, body: bytes, ctype: str, status: int) -> None:
    async with await srv.client("ivan") as ivan, await srv.client("judy") as judy:
        judy.auto_reply["NOTIFY"] = 200
        sub, _ = await subscribe(srv, judy, "ivan")
        resp = await ivan.send_request(ivan.publish(srv.uri("ivan"), body, content_type=ctype))
        assert resp.status == status and resp.header("SIP-ETag") is None
        assert srv.rows("ivan") == []
        await judy.expect_no_request("NOTIFY", call_id=sub.call_id, within=0.2)


# UDP only: over TCP a client never retransmits, and RFC 3261 17.2.2 ends a non-INVITE server
# transaction at once (Timer J = 0) on a reliable transport, so a later copy is a new request.
@pytest.mark.parametrize("proto", ["udp"])
async def test_retransmission_absorbed(srv: Srv, proto: str) -> None:
    user = f"kim{proto}"
    async with await srv.client(user, proto) as kim, await srv.client("leo") as leo:
        leo.auto_reply["NOTIFY"] = 200
        sub, _ = await subscribe(srv, leo, user)
        pub = kim.publish(srv.uri(user), pidf(kim.aor), expires=600)
        first = await kim.send_request(pub)
        kim.send(pub)                                   # the same request again (same branch)
        for _ in range(100):
            if len(kim.responses_for(pub)) >= 2:
                break
            await asyncio.sleep(0.02)
        again = kim.responses_for(pub)[1]
        assert again.status == 200 and again.header("SIP-ETag") == first.header("SIP-ETag")
        assert again.to.tag == first.to.tag
        assert len(srv.rows(user)) == 1
        await leo.expect_request("NOTIFY", call_id=sub.call_id)
        await leo.expect_no_request("NOTIFY", call_id=sub.call_id, within=0.3)


async def test_concurrent_modifies_serialised(srv: Srv) -> None:
    """Eight modifies race on one etag: exactly one wins; the stored and notified state is the winner's."""
    async with await srv.client("mia") as mia, await srv.client("ned") as ned:
        ned.auto_reply["NOTIFY"] = 200
        sub, _ = await subscribe(srv, ned, "mia")
        resp = await mia.send_request(mia.publish(srv.uri("mia"), pidf(mia.aor, note="start"), expires=600))
        etag = resp.header("SIP-ETag")
        await ned.expect_request("NOTIFY", call_id=sub.call_id)
        reqs = [mia.publish(srv.uri("mia"), pidf(mia.aor, note=f"n{i}"), expires=600, etag=etag)
                for i in range(8)]
        for r in reqs:
            mia.send(r)
        answers = [await mia.expect_response(r, final=True) for r in reqs]
        winners = [i for i, a in enumerate(answers) if a.status == 200]
        assert len(winners) == 1 and all(a.status == 412 for a in answers if a.status != 200)
        note = f"<note>n{winners[0]}</note>".encode()
        rows = srv.rows("mia")
        assert len(rows) == 1 and note in rows[0][2]
        n = await ned.expect_request("NOTIFY", call_id=sub.call_id)
        assert note in n.body
        # and a burst of new publications from 6 devices all end up aggregated, NOTIFYs in CSeq order
        for i in range(6):
            mia.send(mia.publish(srv.uri("mia"), pidf(mia.aor, note=f"dev{i}", tuple_id=f"d{i}"),
                                 expires=600))
        cseqs, last = [], b""
        for _ in range(6):
            n = await ned.expect_request("NOTIFY", call_id=sub.call_id)
            cseqs.append(n.cseq.number)
            last = n.body
        assert cseqs == sorted(cseqs) and len(set(cseqs)) == 6
        assert all(f"<note>dev{i}</note>".encode() in last for i in range(6))
        assert len(srv.rows("mia")) == 7


async def test_sender_watcher_not_notified(srv: Srv) -> None:
    async with await srv.client("olga") as olga, await srv.client("pam") as pam, \
            await srv.client("quinn") as quinn:
        pam.auto_reply["NOTIFY"] = 200
        quinn.auto_reply["NOTIFY"] = 200
        sub_p, _ = await subscribe(srv, pam, "olga")
        sub_q, _ = await subscribe(srv, quinn, "olga")
        pub = olga.publish(srv.uri("olga"), pidf(olga.aor), expires=600,
                           headers=[("Sender", pam.contact_uri)])
        assert (await olga.send_request(pub)).status == 200
        await quinn.expect_request("NOTIFY", call_id=sub_q.call_id)
        await pam.expect_no_request("NOTIFY", call_id=sub_p.call_id, within=0.3)
        # a Sender that is not a bare SIP URI is refused (OPENSIPS-BEHAVIOUR)
        pub = olga.publish(srv.uri("olga"), pidf(olga.aor), expires=600,
                           headers=[("Sender", f"<{pam.contact_uri}>")])
        assert (await olga.send_request(pub)).status == 400


async def test_publish_event_route_logs(srv: Srv) -> None:
    async with await srv.client("rita") as rita:
        resp = await rita.send_request(rita.publish(srv.uri("rita"), pidf(rita.aor), expires=77))
        etag = resp.header("SIP-ETag")
        srv.server.wait_for(f"PUBLISH accepted: rita@127.0.0.1 event=presence expires=77 etag={etag}",
                            timeout=3)
