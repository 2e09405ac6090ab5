"""examples/blf.cfg as a small office runs it: `routescript run` over real sockets, UDP and TCP (every phone,
the call included), 1 and 2 workers, subscribers from `routescript db subscriber add`. Bob's desk phone
registers; Carol's phone watches Bob's line (Event: dialog, authenticated) and sees early -> confirmed ->
idle when Alice calls Bob (407 first; 180, 200, ACK, BYE through the proxy); Dave watches Bob's presence
and sees "On the phone" during the call; Alice's third call while two are up gets 486 from the dialog
profile. Accounting: the answered call is one CDR in the acc table (and an "ACC: call ended" line), the
call Bob refused one row of missed_calls (and an "ACC: call missed" line)."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registrar"))
from rs_e2e import RunningServer, free_port, routescript, start
from test_example_registrar_presence_e2e import (
    DOMAIN,
    PASSWORD,
    phones,
    register,
    request_with,
    sent_with_credentials,
)

from routescript.sip import SIPRequest, build_reply
from routescript.testing import SipTestClient
from routescript.testing.digest import authorization

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "blf.cfg"
NS = {"d": "urn:ietf:params:xml:ns:dialog-info", "p": "urn:ietf:params:xml:ns:pidf",
      "rpid": "urn:ietf:params:xml:ns:pidf:rpid"}


@pytest.fixture(scope="module", params=[("udp", 1), ("tcp", 1), ("udp", 2), ("tcp", 2)],
                ids=["udp-1worker", "tcp-1worker", "udp-2workers", "tcp-2workers"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, RunningServer]]:
    proto, workers = request.param
    tmp = tmp_path_factory.mktemp(f"blf-{proto}{workers}")
    db = tmp / "blf.sqlite"
    for user in ("alice", "bob", "carol", "dave"):
        added = routescript("db", "subscriber", "add", f"sqlite://{db}", f"{user}@{DOMAIN}", PASSWORD)
        assert added.returncode == 0, added.stderr
    port = free_port()
    text = (EXAMPLE.read_text().replace("127.0.0.1:5060", f"127.0.0.1:{port}")
            .replace("/tmp/routescript-blf.sqlite", str(db)))
    if workers > 1:
        text = f"udp_workers = {workers}\n" + text
    cfg = tmp / "blf.cfg"
    cfg.write_text(text)
    running = start(cfg, tmp)
    try:
        yield proto, port, running
    finally:
        running.stop()
        assert "Traceback" not in running.log()


def dialog_states(body: bytes) -> list[str | None]:
    root = etree.fromstring(body)
    return [d.findtext("d:state", namespaces=NS) for d in root.findall("d:dialog", NS)]


async def notified(watcher: SipTestClient, call_id: str, state: str) -> bytes:
    """NOTIFYs until one shows a dialog in `state` (the proxy may publish a state in between)."""
    for _ in range(8):
        n = await watcher.expect_request("NOTIFY", call_id=call_id, timeout=5)
        if dialog_states(n.body) == [state]:
            return bytes(n.body)
    raise AssertionError(f"no NOTIFY with a dialog {state}")


async def watch_line(watcher: SipTestClient, uri: str) -> SIPRequest:
    """A BLF key on `uri`: an authenticated `Event: dialog` SUBSCRIBE, accepted, whose first NOTIFY shows
    the line idle (force_dummy_dialog: a terminated dummy dialog, not an empty document)."""
    def blf_subscribe(cred: tuple[str, str] | None, cseq: int, call_id: str | None) -> SIPRequest:
        headers = [("Accept", "application/dialog-info+xml")]
        if cred is not None:
            headers.append(("Authorization", cred[1]))
        return watcher.subscribe(uri, event="dialog", headers=headers, cseq=cseq, call_id=call_id)

    blf, ok = await sent_with_credentials(watcher, blf_subscribe)
    assert ok.status == 200
    idle = await watcher.expect_request("NOTIFY", call_id=blf.call_id, timeout=5)
    assert dialog_states(idle.body) == ["terminated"]
    return blf


async def answered(caller: SipTestClient, callee: SipTestClient, invite: SIPRequest, got: SIPRequest) -> Any:
    """The callee's 200 (record-routed) to the INVITE it `got`, and the caller's ACK: the caller's dialog."""
    callee.send(build_reply(got, 200, to_tag="bob1", headers=[("Contact", f"<{callee.contact_uri}>")],
                            body=b"v=0\r\n", content_type="application/sdp", record_route=True))
    final = await caller.expect_response(invite, final=True)
    assert final.status == 200
    dialog = caller.ack_2xx(invite, final)
    return dialog


async def call(caller: SipTestClient, uri: str) -> tuple[SIPRequest, int]:
    """An authenticated INVITE sent (407 answered); the request and the status of the 407 round."""
    make = request_with(caller, "INVITE", uri, body=b"v=0\r\n", content_type="application/sdp")
    first = make(None, 1, None)
    challenged = await caller.send_request(first)
    auth = authorization(challenged.header("Proxy-Authenticate"), caller.user, PASSWORD, "INVITE", first.ruri)
    invite = make(("Proxy-Authenticate", auth), 2, first.call_id)
    caller.send(invite)
    return invite, challenged.status


async def test_a_call_lights_bobs_lamp_and_the_third_call_is_busy(
        server: tuple[str, int, RunningServer]) -> None:
    bob_uri = f"sip:bob@{DOMAIN}"
    async with phones(server, "alice") as (alice,), phones(server, "bob") as (bob,), \
            phones(server, "carol") as (carol,), phones(server, "dave") as (dave,):
        carol.auto_reply["NOTIFY"] = 200
        dave.auto_reply["NOTIFY"] = 200
        assert (await register(bob)).status == 200
        blf = await watch_line(carol, bob_uri)
        pres, ok = await sent_with_credentials(dave, request_with(dave, "SUBSCRIBE", bob_uri))
        assert ok.status == 200
        await dave.expect_request("NOTIFY", call_id=pres.call_id, timeout=5)

        invite, challenged = await call(alice, bob_uri)
        assert challenged == 407
        got = await bob.expect_request("INVITE", call_id=invite.call_id)
        bob.send(build_reply(got, 180, to_tag="bob1", record_route=True))
        await notified(carol, blf.call_id, "early")
        dialog = await answered(alice, bob, invite, got)
        await notified(carol, blf.call_id, "confirmed")
        for _ in range(8):
            p = await dave.expect_request("NOTIFY", call_id=pres.call_id, timeout=5)
            if etree.fromstring(p.body).find(".//rpid:on-the-phone", NS) is not None:
                break
        else:
            raise AssertionError("Bob's presence watcher never saw him on the phone")

        # a second call of Alice's is allowed (not answered: it stays early), a third is refused
        second, _ = await call(alice, bob_uri)
        got2 = await bob.expect_request("INVITE", call_id=second.call_id)
        bob.send(build_reply(got2, 180, to_tag="bob2", record_route=True))
        third, _ = await call(alice, bob_uri)
        busy = await alice.expect_response(third, final=True)
        assert busy.status == 486
        bob.send(build_reply(got2, 486, to_tag="bob2"))
        assert (await alice.expect_response(second, final=True)).status == 486
        alice.send(alice.ack(second, alice.responses_for(second)[-1]))

        bye = alice.request("BYE", dialog=dialog)
        alice.send(bye)
        got_bye = await bob.expect_request("BYE", call_id=invite.call_id)
        bob.send(build_reply(got_bye, 200))
        assert (await alice.expect_response(bye, final=True)).status == 200
        await notified(carol, blf.call_id, "terminated")

        db = server[2].cfg.parent / "blf.sqlite"
        cdr = await row_of(db, "SELECT sip_code, to_tag, duration, ms_duration FROM acc WHERE callid = ?",
                           invite.call_id)
        assert cdr[:2] == ("200", "bob1") and cdr[2] == math.ceil(int(cdr[3]) / 1000)  # type: ignore[call-overload]
        missed = await row_of(db, "SELECT sip_code FROM missed_calls WHERE callid = ?", second.call_id)
        assert missed == ("486",)
        log = server[2].log()
        assert f"call_id={invite.call_id};code=200;reason=OK;caller=alice;callee=bob" in log
        assert "ACC: call missed: " in log and f"call_id={second.call_id};code=486" in log


async def row_of(db: object, sql: str, *params: str) -> tuple[object, ...]:
    """The one row of `sql` once acc has written it (right after the reply or the BYE)."""
    for _ in range(60):
        with sqlite3.connect(str(db), timeout=5) as con:
            found = list(con.execute(sql, params))
        if found:
            return tuple(found[0])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no row: {sql} {params}")
