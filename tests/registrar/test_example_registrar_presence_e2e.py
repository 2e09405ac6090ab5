"""examples/registrar-presence.cfg as users run it: `routescript run` over real sockets, UDP and TCP, 1 and 2
UDP workers, subscribers written by `routescript db subscriber add`. REGISTER with digest (missing
credentials, wrong password, replayed nonce, malformed header, 423), a call to a user with two phones
(407 first; both ring, the first answer wins, the other is cancelled; BYE through the record-route), a
call to a registered-nowhere user (404), a MESSAGE to a registered user, PUBLISH and SUBSCRIBE
authenticated and handled by presence, and a binding that expires.

The copy differs from the example in its port, its database file and min_expires (2 instead of 60), so
a binding can expire within the test."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from rs_e2e import RunningServer, free_port, routescript, start

from routescript.sip import SIPRequest, SIPResponse, build_reply
from routescript.testing import SipTestClient
from routescript.testing.digest import authorization, challenge_params
from routescript.testing.pidf import pidf

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "registrar-presence.cfg"
DOMAIN = "127.0.0.1"
PASSWORD = "s3cret-Pa55"
USERS = ("alice", "bob", "carol", "dave")


@pytest.fixture(scope="module", params=[("udp", 1), ("tcp", 1), ("udp", 2)],
                ids=["udp-1worker", "tcp-1worker", "udp-2workers"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, RunningServer]]:
    proto, workers = request.param
    tmp = tmp_path_factory.mktemp(f"regpres-{proto}{workers}")
    db = tmp / "registrar.sqlite"
    for user in USERS:
        added = routescript("db", "subscriber", "add", f"sqlite://{db}", f"{user}@{DOMAIN}", PASSWORD)
        assert added.returncode == 0, added.stderr
    port = free_port()
    text = (EXAMPLE.read_text().replace("127.0.0.1:5060", f"127.0.0.1:{port}")
            .replace("/tmp/routescript-registrar.sqlite", str(db))
            .replace('modparam("registrar", "min_expires", 60)', 'modparam("registrar", "min_expires", 2)'))
    if workers > 1:
        text = f"udp_workers = {workers}\n" + text
    cfg = tmp / "registrar-presence.cfg"
    cfg.write_text(text)
    running = start(cfg, tmp)
    try:
        yield proto, port, running
    finally:
        running.stop()
        log = running.log()
        assert "Traceback" not in log
        assert PASSWORD not in log


@asynccontextmanager
async def phones(server: tuple[str, int, RunningServer], user: str,
                 count: int = 1) -> AsyncIterator[list[SipTestClient]]:
    proto, port, _ = server
    clients = [await SipTestClient.start(proto, ("127.0.0.1", port), user=user, domain=DOMAIN, timeout=4.0)
               for _ in range(count)]
    try:
        yield clients
    finally:
        for c in clients:
            await c.close()


def register_request(phone: SipTestClient, *, expires: int = 300, cseq: int = 1, call_id: str | None = None,
                     auth: str | None = None) -> SIPRequest:
    headers = [("Contact", f"<{phone.contact_uri}>"), ("Expires", str(expires))]
    if auth is not None:
        headers.append(("Authorization", auth))
    return phone.request("REGISTER", f"sip:{DOMAIN}", to=phone.aor, contact=False, cseq=cseq, call_id=call_id,
                         headers=headers)


async def sent_with_credentials(phone: SipTestClient, make: Any,
                                password: str = PASSWORD) -> tuple[SIPRequest, SIPResponse]:
    """Send make(None, 1, None); answer a 401/407 once with make((header, credentials), 2, Call-ID).
    The last request sent and its final response."""
    first: SIPRequest = make(None, 1, None)
    resp = await phone.send_request(first)
    if resp.status not in (401, 407):
        return first, resp
    name = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
    auth = authorization(resp.header(name), phone.user, password, first.method, first.ruri)
    second = make((name, auth), 2, first.call_id)
    return second, await phone.send_request(second)


async def with_credentials(phone: SipTestClient, make: Any, password: str = PASSWORD) -> SIPResponse:
    return (await sent_with_credentials(phone, make, password))[1]


async def register(phone: SipTestClient, *, expires: int = 300, password: str = PASSWORD) -> SIPResponse:
    def make(cred: tuple[str, str] | None, cseq: int, call_id: str | None) -> SIPRequest:
        return register_request(phone, expires=expires, cseq=cseq, call_id=call_id,
                                auth=cred[1] if cred else None)
    return await with_credentials(phone, make, password)


def request_with(phone: SipTestClient, method: str, uri: str, **kw: Any) -> Any:
    """make() for with_credentials: `method` to `uri`, the credentials as Authorization (401) or
    Proxy-Authorization (407)."""
    def make(cred: tuple[str, str] | None, cseq: int, call_id: str | None) -> SIPRequest:
        headers = list(kw.pop("headers", []))
        if cred is not None:
            headers.append(("Authorization" if cred[0] == "WWW-Authenticate" else "Proxy-Authorization",
                            cred[1]))
        if method == "PUBLISH":
            return phone.publish(uri, kw.get("body"), headers=headers, cseq=cseq, call_id=call_id)
        if method == "SUBSCRIBE":
            return phone.subscribe(uri, headers=headers, cseq=cseq, call_id=call_id)
        return phone.request(method, uri, headers=headers, cseq=cseq, call_id=call_id,
                             body=kw.get("body", b""), content_type=kw.get("content_type"))
    return make


async def test_register_with_digest(server: tuple[str, int, RunningServer]) -> None:
    async with phones(server, "alice") as (phone,):
        bare = await phone.send_request(register_request(phone))
        assert bare.status == 401
        challenge = bare.header("WWW-Authenticate")
        assert challenge_params(challenge)["realm"] == DOMAIN
        # wrong password: challenged again, not stale
        wrong = await register(phone, password="guess")
        assert wrong.status == 401 and "stale" not in wrong.header("WWW-Authenticate")
        # the right one: 200 listing the binding with its expires
        first = register_request(phone)
        challenged = await phone.send_request(first)
        auth = authorization(challenged.header("WWW-Authenticate"), "alice", PASSWORD, "REGISTER",
                             first.ruri)
        ok = await phone.send_request(register_request(phone, cseq=2, call_id=first.call_id, auth=auth))
        assert ok.status == 200
        assert any(phone.contact_uri in c and "expires=" in c for c in ok.header_all("Contact"))
        # the same credentials again (a replay in a new transaction): stale
        replay = await phone.send_request(register_request(phone, cseq=3, call_id=first.call_id, auth=auth))
        assert replay.status == 401 and "stale=true" in replay.header("WWW-Authenticate")
        # malformed credentials: 400
        bad = register_request(phone, auth='Digest username="alice", nonce="x')
        assert (await phone.send_request(bad)).status == 400
        # below min_expires: 423 with Min-Expires
        brief = await register(phone, expires=1)
        assert brief.status == 423 and brief.header("Min-Expires") == "2"
        # Expires 0 removes it: the 200 lists no binding of this phone
        removed = await register(phone, expires=0)
        assert removed.status == 200
        assert not any(phone.contact_uri in c for c in removed.header_all("Contact"))


async def test_call_to_two_phones_then_bye(server: tuple[str, int, RunningServer]) -> None:
    async with phones(server, "alice") as (caller,), phones(server, "bob", 2) as bobs:
        for phone in bobs:
            assert (await register(phone)).status == 200
        make = request_with(caller, "INVITE", f"sip:bob@{DOMAIN}", body=b"v=0\r\n",
                            content_type="application/sdp")
        first = make(None, 1, None)
        challenged = await caller.send_request(first)
        assert challenged.status == 407
        auth = authorization(challenged.header("Proxy-Authenticate"), "alice", PASSWORD, "INVITE", first.ruri)
        invite = make(("Proxy-Authenticate", auth), 2, first.call_id)
        caller.send(invite)
        got = [await p.expect_request("INVITE", call_id=invite.call_id) for p in bobs]
        assert all(g.header("Proxy-Authorization") is None for g in got)   # consume_credentials()
        for i, phone in enumerate(bobs):   # a UAS copies the Record-Route into its replies (RFC 3261 12.1.1)
            phone.send(build_reply(got[i], 180, to_tag=f"b{i}", record_route=True))
        bobs[1].send(build_reply(got[1], 200, to_tag="b1", headers=[("Contact", f"<{bobs[1].contact_uri}>")],
                                 body=b"v=0\r\n", content_type="application/sdp", record_route=True))
        final = await caller.expect_response(invite, final=True)
        assert final.status == 200 and final.to.tag == "b1"
        cancel = await bobs[0].expect_request("CANCEL", call_id=invite.call_id)
        bobs[0].send(build_reply(cancel, 200, to_tag="b0"))
        bobs[0].send(build_reply(got[0], 487, to_tag="b0"))
        dialog = caller.ack_2xx(invite, final)
        assert dialog.route_set   # record_route(): the ACK and the BYE come back through us
        await bobs[1].expect_request("ACK", call_id=invite.call_id)
        # the BYE follows the Record-Route through the proxy to the phone that answered
        bye = caller.request("BYE", dialog=dialog)
        caller.send(bye)
        got_bye = await bobs[1].expect_request("BYE", call_id=invite.call_id)
        bobs[1].send(build_reply(got_bye, 200))
        assert (await caller.expect_response(bye, final=True)).status == 200


async def test_unregistered_user_gets_404_and_strangers_cannot_relay(
        server: tuple[str, int, RunningServer]) -> None:
    async with phones(server, "alice") as (caller,):
        resp = await with_credentials(caller, request_with(caller, "INVITE", f"sip:carol@{DOMAIN}"))
        assert resp.status == 404
        wrong = await with_credentials(caller, request_with(caller, "MESSAGE", f"sip:bob@{DOMAIN}",
                                                            body=b"x", content_type="text/plain"),
                                       password="guess")
        assert wrong.status == 407   # challenged again: nothing relayed


async def test_message_to_a_registered_user_and_a_binding_that_expires(
        server: tuple[str, int, RunningServer]) -> None:
    async with phones(server, "alice") as (caller,), phones(server, "dave") as (dave,):
        assert (await register(dave, expires=2)).status == 200
        make = request_with(caller, "MESSAGE", f"sip:dave@{DOMAIN}", body=b"hello",
                            content_type="text/plain")
        pending = asyncio.ensure_future(with_credentials(caller, make))
        got = await dave.expect_request("MESSAGE")
        assert got.body == b"hello"
        dave.send(build_reply(got, 200, to_tag="d1"))
        assert (await pending).status == 200
        await asyncio.sleep(3.0)   # past the binding's expiry
        gone = await with_credentials(caller, request_with(caller, "MESSAGE", f"sip:dave@{DOMAIN}", body=b"x",
                                                           content_type="text/plain"))
        assert gone.status == 404


async def test_publish_and_subscribe_are_authenticated_then_handled_by_presence(
        server: tuple[str, int, RunningServer]) -> None:
    async with phones(server, "alice") as (alice,), phones(server, "bob") as (bob,):
        bob.auto_reply["NOTIFY"] = 200
        aor = f"sip:alice@{DOMAIN}"
        unauthenticated = await alice.send_request(alice.publish(aor, pidf(aor)))
        assert unauthenticated.status == 401
        body = pidf(f"sip:alice@{DOMAIN}", "open", note="at my desk")
        published = await with_credentials(alice, request_with(alice, "PUBLISH", aor, body=body))
        assert published.status == 200 and published.header("SIP-ETag")
        sub, subscribed = await sent_with_credentials(bob, request_with(bob, "SUBSCRIBE", aor))
        assert subscribed.status == 200
        notify = await bob.expect_request("NOTIFY", call_id=subscribed.call_id)
        assert b"at my desk" in notify.body and b"<basic>open</basic>" in notify.body
        # a refresh inside the subscription is not challenged again
        refresh = bob.subscribe(dialog=bob.dialog(sub, subscribed), expires=600)
        assert (await bob.send_request(refresh)).status == 200
