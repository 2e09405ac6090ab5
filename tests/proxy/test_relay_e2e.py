"""`routescript run` as a stateful proxy (t_relay) between Python UAs over real sockets, UDP, TCP and TLS
with 1 and 2 UDP workers, WS with 1 and WSS with 2:
a call with Record-Route (INVITE/100/180/200/ACK/BYE), CANCEL -> 487, 486 ->
failure_route -> serial fork, fr_inv_timeout -> failure_route with 408, a parallel fork (first 200 wins,
the other branch cancelled), MESSAGE stateful, OPTIONS stateless (forward()), Max-Forwards 0 -> 483,
branch_route dropping a branch, stray replies dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from proxy_e2e import Proxy, TestPki, free_port, start, target, uas, write_cfg

from routescript.sip import SIPRequest, SIPResponse, build_reply
from routescript.testing import SipTestClient

pytestmark = pytest.mark.asyncio


# (workers, transport): UDP, TCP and TLS in one process and with two workers; the WebSocket transports
# share the connection code of TCP/TLS and WS's framing is tested in one process by tests/ws: ws with
# one worker, wss with two (the suite's time stays in check: each run is a dozen calls).
RUNS = [(1, "udp"), (1, "tcp"), (1, "tls"), (1, "ws"), (2, "udp"), (2, "tcp"), (2, "tls"), (2, "wss")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "proxy" in metafunc.fixturenames:
        metafunc.parametrize(("workers", "proto"), RUNS, indirect=True, scope="module",
                             ids=[f"workers{w}-{p}" for w, p in RUNS])


@pytest.fixture(scope="module")
def workers(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture(scope="module")
def proto(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def running(workers: int, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[int, int, object, int, TestPki, dict[str, int]]]:
    tmp = tmp_path_factory.mktemp(f"proxy{workers}")
    port, tls_port, pki = free_port(), free_port(), TestPki.make(tmp)
    ws_ports = {"ws": free_port(), "wss": free_port()}
    server = start(write_cfg(tmp, port, workers, tls=(tls_port, pki), ws_ports=ws_ports), tmp)
    if workers > 1:
        server.wait_for("routescript started", count=1)
    try:
        yield port, workers, server, tls_port, pki, ws_ports
    finally:
        server.stop()


@pytest.fixture
def proxy(proto: str, running: tuple[int, int, object, int, TestPki, dict[str, int]]) -> Proxy:
    port, _workers, server, tls_port, pki, ws_ports = running
    return Proxy(server, port, proto, tls_port, pki, ws_ports)  # type: ignore[arg-type]


def reply_as(callee: SipTestClient, request: SIPRequest, status: int, tag: str,
             headers: list[tuple[str, str]] | None = None) -> SIPResponse:
    """Answer with a fixed To tag (the UAS's dialog), as a real UA does for 180 then 200."""
    response = build_reply(request, status, to_tag=tag, headers=headers or [], record_route=True)
    callee._send_response(response)
    return response


def invite_to(caller: SipTestClient, callee: SipTestClient, *, headers: list[tuple[str, str]] | None = None,
              ruri: str | None = None) -> SIPRequest:
    return caller.request("INVITE", ruri or target(callee), headers=headers or [], body=b"v=0\r\n",
                          content_type="application/sdp")


async def test_call_with_record_route_ack_and_bye(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "alice") as (caller,), uas(proxy.proto, proxy, "bob") as (callee,):
        invite = invite_to(caller, callee)
        caller.send(invite)
        trying = await caller.expect_response(invite)
        assert trying.status == 100
        got = await callee.expect_request("INVITE", call_id=invite.call_id)
        assert len(got.vias) == 2 and got.vias[1].branch == invite.via.branch   # our Via on top
        assert got.max_forwards == 69
        assert got.header_all("record-route") and str(proxy.address[1]) in got.header_all("record-route")[0]
        assert got.body == b"v=0\r\n"
        reply_as(callee, got, 180, "bobtag")
        ringing = await caller.expect_response(invite, index=1)
        assert ringing.status == 180 and len(ringing.vias) == 1
        # (with 2 workers a 200 sent right after the 180 may overtake it: each is read by any worker)
        ok = reply_as(callee, got, 200, "bobtag", [("Contact", f"<{callee.contact_uri}>")])
        final = await caller.expect_response(invite, final=True)
        assert final.status == 200 and final.to.tag == "bobtag"
        assert final.header_all("record-route") == ok.header_all("record-route") != []
        # the callee retransmits its 200 (no ACK yet): the branch is done, the 200 goes on by Via
        callee._send_response(ok)
        for _ in range(40):
            if sum(r.status == 200 for r in caller.responses_for(invite)) == 2:
                break
            await asyncio.sleep(0.05)
        assert sum(r.status == 200 for r in caller.responses_for(invite)) == 2
        # the ACK and the BYE follow the route set through the proxy
        dialog = caller.ack_2xx(invite, final)
        assert dialog.route_set
        got_ack = await callee.expect_request("ACK", call_id=invite.call_id)
        assert got_ack.to.tag == "bobtag" and len(got_ack.vias) == 2
        bye = caller.request("BYE", dialog=dialog)
        caller.send(bye)
        got_bye = await callee.expect_request("BYE", call_id=invite.call_id)
        await callee.reply(got_bye, 200)
        assert (await caller.expect_response(bye, final=True)).status == 200
        log = proxy.server.log()  # type: ignore[attr-defined]
        assert "global onreply_route 180" in log
        assert "onreply_route[seen] 180 Ringing branch 0 from alice" in log     # onreply_avp_mode 1


async def test_cancel_of_a_ringing_call_gives_487(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "carol") as (caller,), uas(proxy.proto, proxy, "dave") as (callee,):
        invite = invite_to(caller, callee)
        caller.send(invite)
        got = await callee.expect_request("INVITE", call_id=invite.call_id)
        reply_as(callee, got, 180, "davetag")
        assert (await caller.expect_response(invite, index=1)).status == 180
        cancel = caller.request("CANCEL", invite.ruri, call_id=invite.call_id, from_tag=invite.from_.tag,
                                branch=invite.via.branch, contact=False)
        caller.send(cancel)
        assert (await caller.expect_response(cancel, final=True)).status == 200
        got_cancel = await callee.expect_request("CANCEL", call_id=invite.call_id)
        assert got_cancel.via.branch == got.via.branch       # hop by hop: the branch of our INVITE
        await callee.reply(got_cancel, 200)
        reply_as(callee, got, 487, "davetag")
        final = await caller.expect_response(invite, final=True)
        assert final.status == 487
        got_ack = await callee.expect_request("ACK", call_id=invite.call_id)  # our hop-by-hop ACK
        assert got_ack.via.branch == got.via.branch
        caller.send(caller.ack(invite, final))
        await callee.expect_no_request("ACK", call_id=invite.call_id, within=0.3)   # absorbed here



async def test_486_runs_failure_route_and_serial_forks(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "erin") as (caller,), uas(proxy.proto, proxy, "fred", 2) as callees:
        busy, second = callees
        invite = invite_to(caller, busy, headers=[("X-Next", target(second))])
        caller.send(invite)
        got = await busy.expect_request("INVITE", call_id=invite.call_id)
        reply_as(busy, got, 486, "busytag")
        assert (await busy.expect_request("ACK", call_id=invite.call_id)).via.branch == got.via.branch
        got2 = await second.expect_request("INVITE", call_id=invite.call_id)
        assert got2.ruri == target(second) and got2.via.branch != got.via.branch
        # the Record-Route of the request route is on the failure route's branch too (OpenSIPS)
        assert got2.header_all("record-route") == got.header_all("record-route") != []
        reply_as(second, got2, 200, "secondtag", [("Contact", f"<{second.contact_uri}>")])
        final = await caller.expect_response(invite, final=True)
        assert final.status == 200 and final.to.tag == "secondtag"
        assert "failure_route[next] code 486 from erin" in proxy.server.log()  # type: ignore[attr-defined]


async def test_all_failed_failure_route_replies(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "gina") as (caller,), uas(proxy.proto, proxy, "hal", 2) as callees:
        busy, second = callees
        invite = invite_to(caller, busy, headers=[("X-Next", target(second))])
        caller.send(invite)
        reply_as(busy, await busy.expect_request("INVITE", call_id=invite.call_id), 486, "b1")
        reply_as(second, await second.expect_request("INVITE", call_id=invite.call_id), 603, "b2")
        final = await caller.expect_response(invite, final=True)
        assert (final.status, final.reason) == (480, "Tried Them All")


async def test_fr_inv_timeout_runs_failure_route_with_408(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "ivan") as (caller,), uas(proxy.proto, proxy, "judy", 2) as callees:
        silent, second = callees
        invite = invite_to(caller, silent, headers=[("X-Next", target(second))])
        caller.send(invite)
        got = await silent.expect_request("INVITE", call_id=invite.call_id)
        reply_as(silent, got, 180, "slow")
        # fr_inv_timeout is 3 s: then the branch is cancelled and failure_route sees a 408
        got_cancel = await silent.expect_request("CANCEL", call_id=invite.call_id, timeout=6.0)
        await silent.reply(got_cancel, 200)
        reply_as(silent, got, 487, "slow")
        got2 = await second.expect_request("INVITE", call_id=invite.call_id, timeout=3.0)
        reply_as(second, got2, 200, "second", [("Contact", f"<{second.contact_uri}>")])
        final = await caller.expect_response(invite, final=True, timeout=3.0)
        assert final.status == 200
        assert "failure_route[next] code 408" in proxy.server.log()  # type: ignore[attr-defined]


async def test_parallel_fork_first_200_wins_other_cancelled(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "kim") as (caller,), uas(proxy.proto, proxy, "leo", 2) as callees:
        first, other = callees
        invite = invite_to(caller, first, headers=[("X-Fork", target(other))])
        caller.send(invite)
        got1 = await first.expect_request("INVITE", call_id=invite.call_id)
        got2 = await other.expect_request("INVITE", call_id=invite.call_id)
        assert got1.via.branch != got2.via.branch
        reply_as(other, got2, 180, "o")
        reply_as(first, got1, 200, "f", [("Contact", f"<{first.contact_uri}>")])
        final = await caller.expect_response(invite, final=True)
        assert final.status == 200 and final.to.tag == "f"
        got_cancel = await other.expect_request("CANCEL", call_id=invite.call_id)
        await other.reply(got_cancel, 200)
        reply_as(other, got2, 487, "o")
        await other.expect_request("ACK", call_id=invite.call_id)
        await asyncio.sleep(0.2)
        assert [r.status for r in caller.responses_for(invite) if r.status >= 200] == [200]


async def test_branch_route_drop_skips_that_branch(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "mia") as (caller,), uas(proxy.proto, proxy, "ned") as (callee,):
        dropped = target(callee).replace(f"sip:{callee.user}@", "sip:dropme@")
        invite = invite_to(caller, callee, headers=[("X-Fork", dropped)])
        caller.send(invite)
        got = await callee.expect_request("INVITE", call_id=invite.call_id)
        assert got.ruri == target(callee)
        await callee.expect_no_request("INVITE", call_id=invite.call_id, within=0.5)
        reply_as(callee, got, 404, "n")
        assert (await caller.expect_response(invite, final=True)).status == 404


async def test_message_stateful_and_options_stateless(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "olga") as (caller,), uas(proxy.proto, proxy, "pete") as (callee,):
        message = caller.request("MESSAGE", target(callee), body=b"hi", content_type="text/plain")
        caller.send(message)
        got = await callee.expect_request("MESSAGE", call_id=message.call_id)
        await callee.reply(got, 200)
        assert (await caller.expect_response(message, final=True)).status == 200
        options = caller.options(target(callee), headers=[("X-Stateless", "1")])
        caller.send(options)
        got = await callee.expect_request("OPTIONS", call_id=options.call_id)
        assert got.via.branch.startswith("z9hG4bKsl")
        await callee.reply(got, 200)
        assert (await caller.expect_response(options, final=True)).status == 200


async def test_max_forwards_zero_gets_483(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "quin") as (caller,), uas(proxy.proto, proxy, "rob") as (callee,):
        message = caller.request("MESSAGE", target(callee), body=b"x", content_type="text/plain")
        message.set_header("Max-Forwards", "0")
        caller.send(message)
        assert (await caller.expect_response(message, final=True)).status == 483
        await callee.expect_no_request("MESSAGE", within=0.3)


async def test_stray_reply_is_dropped(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "sue") as (caller,):
        options = caller.options()
        stray = build_reply(options, 200)
        caller.send(stray)
        caller.send_raw(b"SIP/2.0 200 OK\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:a@b>;tag=1\r\n"
                        b"To: <sip:a@b>\r\nContent-Length: 0\r\n\r\n")            # no Via at all
        caller.send_raw(b"SIP/2.0 180 Ringing\r\nVia: garbage;;;\r\nCall-ID: y\r\nCSeq: 1 INVITE\r\n"
                        b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nContent-Length: 0\r\n\r\n")
        # the proxy still works afterwards
        message = caller.request("MESSAGE", "sip:nobody@127.0.0.1:9;transport=" + proxy.proto,
                                 body=b"x", content_type="text/plain")
        caller.send(message)
        final = await caller.expect_response(message, final=True, timeout=5.0)
        # nobody listens there: a timeout (408) or a refused connection (our 503, sent as 500: RFC 3261
        # 16.7 step 6)
        assert final.status in (408, 500)
        server = proxy.server
        await asyncio.sleep(0.1)
        log = server.log()  # type: ignore[attr-defined]
        assert "matched no transaction; dropped" in log and "Traceback" not in log


async def test_reinvite_and_bye_from_the_callee_follow_the_record_route(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "tina") as (caller,), uas(proxy.proto, proxy, "uma") as (callee,):
        invite = invite_to(caller, callee)
        caller.send(invite)
        got = await callee.expect_request("INVITE", call_id=invite.call_id)
        reply_as(callee, got, 200, "umatag", [("Contact", f"<{callee.contact_uri}>")])
        final = await caller.expect_response(invite, final=True)
        dialog = caller.ack_2xx(invite, final)
        await callee.expect_request("ACK", call_id=invite.call_id)
        # the caller re-INVITEs inside the dialog: loose_route, then t_relay
        reinvite = caller.request("INVITE", dialog=dialog, body=b"v=0\r\n", content_type="application/sdp")
        caller.send(reinvite)
        got_re = await callee.expect_request("INVITE", call_id=invite.call_id)
        assert got_re.to.tag == "umatag" and got_re.ruri == callee.contact_uri
        reply_as(callee, got_re, 200, "umatag")
        assert (await caller.expect_response(reinvite, final=True)).status == 200
        # the callee hangs up: its route set is the Record-Route of the INVITE, in order
        routes = [("Route", value) for value in got.header_all("record-route")]
        bye = callee.request("BYE", caller.contact_uri, headers=routes, call_id=invite.call_id,
                             from_=str(got.to.uri), to=str(got.from_.uri), from_tag="umatag",
                             to_tag=invite.from_.tag, cseq=1, contact=False)
        callee.send(bye)
        got_bye = await caller.expect_request("BYE", call_id=invite.call_id)
        assert len(got_bye.vias) == 2 and not got_bye.has_header("route")
        await caller.reply(got_bye, 200)
        assert (await callee.expect_response(bye, final=True)).status == 200
