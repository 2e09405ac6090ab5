"""acc end to end: `routescript run` as registrar and proxy (save, lookup, t_relay, dialogs), over UDP and
TCP, with 1 and 2 UDP workers, accounting to the log and to SQLite. Bob's phone registers; Alice calls
him: answered, held 2.5 s, hung up by BYE -> one CDR (acc row with duration 3 - OpenSIPS rounds up - and
"ACC: call ended" line, with the extra fields); refused with 486 and cancelled -> missed_calls rows and
"ACC: call missed" lines; rung and never answered (tm's fr_inv_timeout: a local 408) -> a missed_calls row
with OpenSIPS's values for it, also when failure_route then sends it to voicemail, which answers (OpenSIPS
reports at TMCB_ON_FAILURE, before failure_route); a MESSAGE answered 200 -> "transaction answered" (plain
accounting); a MESSAGE refused 403 with the "failed" flag -> a row of do_accounting's own table;
drop_accounting() -> no record; no such user -> acc_log_request's and acc_db_request's records."""

from __future__ import annotations

import asyncio
import datetime
import math
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proxy"))
from proxy_e2e import Proxy, free_port, start

from routescript.sip import SIPRequest, build_reply
from routescript.testing import SipTestClient

pytestmark = pytest.mark.asyncio

SCRIPT = r"""
log_level = 3
stderror_enabled = yes
udp_workers = WORKERS
socket = udp:127.0.0.1:PORT
socket = tcp:127.0.0.1:PORT

loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "sipmsgops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "dialog.so"
loadmodule "acc.so"

modparam("tm", "fr_inv_timeout", 1)
modparam("acc", "db_url", "sqlite://DB")
modparam("acc", "extra_fields", "db: caller->src_user; callee->dst_user")
modparam("acc", "extra_fields", "log: caller; callee")

route {
    if (has_totag()) {
        if (loose_route()) { t_relay(); exit; }
        if (is_method("ACK")) { if (t_check_trans()) t_relay(); exit; }
        sl_send_reply(404, "Not here");
        exit;
    }
    if (is_method("CANCEL")) { if (t_check_trans()) t_relay(); exit; }
    if (is_method("REGISTER")) { save("location"); exit; }
    $acc_extra(caller) = $fU;
    $acc_extra(callee) = $tU;
    if (!lookup("location")) {
        acc_log_request("404 Not Found");
        acc_db_request("404", "missed_calls");
        send_reply(404, "Not Found");
        exit;
    }
    if (is_method("INVITE")) {
        record_route();
        do_accounting("log|db", "cdr|missed");
        if (is_present_hf("X-Voicemail")) t_on_failure("voicemail");
    } else if ($hdr(X-Acc) == "failed") {
        do_accounting("log|db", "failed", "msg_acc");
    } else if ($hdr(X-Acc) == "drop") {
        do_accounting("log|db");
        drop_accounting();
    } else {
        do_accounting("log|db");
    }
    if (!t_relay()) sl_reply_error();
}

failure_route[voicemail] {
    if (t_check_status("408")) {
        $ru = $hdr(X-Voicemail);
        t_relay();
    }
}
"""


@pytest.fixture(scope="module", params=[("udp", 1), ("tcp", 1), ("udp", 2), ("tcp", 2)],
                ids=["udp-1worker", "tcp-1worker", "udp-2workers", "tcp-2workers"])
def proxy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    proto, workers = request.param
    tmp = tmp_path_factory.mktemp(f"acc-{proto}{workers}")
    port = free_port()
    cfg = tmp / "acc.cfg"
    cfg.write_text(SCRIPT.replace("WORKERS", str(workers)).replace("PORT", str(port))
                   .replace("DB", str(tmp / "acc.sqlite")))
    server = start(cfg, tmp)
    if workers > 1:
        server.wait_for("routescript started", count=1)
    server.db = tmp / "acc.sqlite"  # type: ignore[attr-defined]
    try:
        yield Proxy(server, port, proto)
    finally:
        server.stop()
        assert "Traceback" not in server.log()


async def rows(proxy: Proxy, sql: str, *params: str, want: int = 1) -> list[tuple[object, ...]]:
    """The rows of `sql` once there are `want` of them (acc writes right after the reply; a table named
    by do_accounting() is made on its first row)."""
    found: list[tuple[object, ...]] = []
    for _ in range(60):
        with sqlite3.connect(proxy.server.db, timeout=5) as con:  # type: ignore[attr-defined]
            try:
                found = list(con.execute(sql, params))
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
        if len(found) >= want:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{sql}: {found}")


async def log_line(proxy: Proxy, text: str) -> str:
    for _ in range(60):
        for line in proxy.server.log().splitlines():
            if text in line:
                return line
        await asyncio.sleep(0.05)
    raise AssertionError(f"no log line with {text!r}")


async def phone(proxy: Proxy, user: str) -> SipTestClient:
    client = await SipTestClient.start(proxy.proto, proxy.address, user=user, timeout=4.0)
    reg = client.request("REGISTER", f"sip:{client.domain}", to=client.aor, headers=[("Expires", "300")])
    assert (await client.send_request(reg)).status == 200
    return client


async def invite(alice: SipTestClient, bob: SipTestClient) -> tuple[SIPRequest, SIPRequest]:
    inv = alice.request("INVITE", bob.aor, body=b"v=0\r\n", content_type="application/sdp")
    alice.send(inv)
    got = await bob.expect_request("INVITE", call_id=inv.call_id)
    bob.send(build_reply(got, 180, to_tag="bobtag", record_route=True))
    assert (await alice.expect_response(inv, index=1)).status in (100, 180)
    return inv, got


async def test_answered_call_gives_one_cdr_with_its_duration(proxy: Proxy) -> None:
    alice, bob = await phone(proxy, "alice"), await phone(proxy, "bob")
    try:
        inv, got = await invite(alice, bob)
        bob.send(build_reply(got, 200, to_tag="bobtag", headers=[("Contact", f"<{bob.contact_uri}>")],
                             body=b"v=0\r\n", content_type="application/sdp", record_route=True))
        final = await alice.expect_response(inv, final=True)
        dialog = alice.dialog(inv, final)
        ack = alice.request("ACK", dialog=dialog)
        ack.set_header("CSeq", f"{inv.cseq.number} ACK")
        alice.send(ack)
        await bob.expect_request("ACK", call_id=inv.call_id)
        await asyncio.sleep(2.5)                    # the call is up
        bye = alice.request("BYE", dialog=dialog)
        alice.send(bye)
        await bob.reply(await bob.expect_request("BYE", call_id=inv.call_id), 200)
        assert (await alice.expect_response(bye, final=True)).status == 200

        [row] = await rows(proxy, "SELECT method, from_tag, to_tag, sip_code, sip_reason, duration, "
                                  "ms_duration, setuptime, created IS NOT NULL, src_user, dst_user, time "
                                  "FROM acc WHERE callid = ?", inv.call_id)
        method, from_tag, to_tag, code, reason, duration, ms, setup, created, src, dst, _time = row
        assert (method, from_tag, to_tag, code, reason) == ("INVITE", inv.from_.tag, "bobtag", "200", "OK")
        # held 2.5 s: 3 s as OpenSIPS counts (ceil of ms_duration); a slow machine may add a few hundred ms.
        # setuptime is whole seconds apart (answer second - INVITE second): 0, or 1 across a second's edge
        assert 2500 <= ms < 3900 and duration == math.ceil(ms / 1000)  # type: ignore[operator]
        assert setup in (0, 1) and created
        assert (src, dst) == ("alice", "bob")
        line = await log_line(proxy, "ACC: call ended: created=")
        assert f"call_id={inv.call_id}" in line and f";duration={duration};ms_duration={ms};" in line
        assert line.endswith(";caller=alice;callee=bob")
        assert ";method=INVITE;from_tag=" in line and ";code=200;reason=OK" in line
        await asyncio.sleep(0.2)   # no second record for the call (the 200 of the INVITE is in the CDR)
        assert len(await rows(proxy, "SELECT id FROM acc WHERE callid = ?", inv.call_id)) == 1
        assert "ACC: transaction answered" not in "\n".join(
            ln for ln in proxy.server.log().splitlines() if inv.call_id in ln)
    finally:
        await alice.close()
        await bob.close()


async def test_refused_and_cancelled_calls_are_missed_calls(proxy: Proxy) -> None:
    alice, bob = await phone(proxy, "carol"), await phone(proxy, "dave")
    try:
        inv, got = await invite(alice, bob)
        bob.send(build_reply(got, 486, to_tag="bobtag"))
        assert (await alice.expect_response(inv, final=True)).status == 486
        [row] = await rows(proxy, "SELECT method, to_tag, sip_code, sip_reason, setuptime, "
                                  "created IS NOT NULL FROM missed_calls WHERE callid = ?", inv.call_id)
        assert row[:4] == ("INVITE", "bobtag", "486", "Busy Here") and row[4] in (0, 1) and row[5] == 1
        line = await log_line(proxy, f"call_id={inv.call_id};code=486")
        assert "ACC: call missed: timestamp=" in line and ";caller=carol;callee=dave" in line

        inv2, got2 = await invite(alice, bob)
        cancel = alice.request("CANCEL", inv2.ruri, call_id=inv2.call_id, from_tag=inv2.from_.tag,
                               branch=inv2.via.branch, contact=False)
        alice.send(cancel)
        await bob.reply(await bob.expect_request("CANCEL", call_id=inv2.call_id), 200)
        bob.send(build_reply(got2, 487, to_tag="bobtag"))
        assert (await alice.expect_response(inv2, final=True)).status == 487
        [row] = await rows(proxy, "SELECT sip_code FROM missed_calls WHERE callid = ?", inv2.call_id)
        assert row == ("487",)
        # neither failed call is in acc (no "failed" flag), nor written twice
        assert not (await rows(proxy, "SELECT id FROM acc WHERE callid IN (?, ?)", inv.call_id, inv2.call_id,
                               want=0))
    finally:
        await alice.close()
        await bob.close()


async def test_a_call_rung_and_never_answered_is_a_missed_call(proxy: Proxy) -> None:
    """Bob's phone rings and nobody answers: tm's fr_inv_timeout (1 s here) cancels the branch and sends
    Alice its own 408. The missed call carries what OpenSIPS records for that local reply (acc's
    env_set_code_status/get_rpl_to on a FAKED_REPLY): code 408, reason "Request Timeout" (error_text), the
    request's To - no tag: the call never had a callee -, its From tag and Call-ID."""
    alice, bob = await phone(proxy, "gina"), await phone(proxy, "hank")
    try:
        inv, got = await invite(alice, bob)
        before = time.time()
        cancel = await bob.expect_request("CANCEL", call_id=inv.call_id, timeout=3.0)
        await bob.reply(cancel, 200)                          # a phone that behaves: 200, then 487
        bob.send(build_reply(got, 487, to_tag="bobtag"))
        final = await alice.expect_response(inv, final=True, timeout=3.0)
        assert (final.status, final.reason) == (408, "Request Timeout")
        [row] = await rows(proxy, "SELECT method, from_tag, to_tag, sip_code, sip_reason, time, setuptime, "
                                  "created IS NOT NULL, src_user, dst_user FROM missed_calls "
                                  "WHERE callid = ?", inv.call_id)
        method, from_tag, to_tag, code, reason, when, setup, created, src, dst = row
        assert (method, from_tag, to_tag, code, reason) == ("INVITE", inv.from_.tag, "", "408",
                                                            "Request Timeout")
        assert (src, dst, created) == ("gina", "hank", 1) and setup in (1, 2, 3)
        stamp = datetime.datetime.fromisoformat(str(when)).replace(tzinfo=datetime.UTC).timestamp()
        assert before - 2 <= stamp <= time.time() + 1
        line = await log_line(proxy, f"call_id={inv.call_id};code=408")
        assert "ACC: call missed: timestamp=" in line
        assert ";reason=Request Timeout;caller=gina;callee=hank" in line
        assert f";method=INVITE;from_tag={inv.from_.tag};to_tag=;" in line
        await asyncio.sleep(0.3)      # Bob's late 487 is absorbed: still one missed call, nothing in acc
        assert len(await rows(proxy, "SELECT id FROM missed_calls WHERE callid = ?", inv.call_id)) == 1
        assert not await rows(proxy, "SELECT id FROM acc WHERE callid = ?", inv.call_id, want=0)
    finally:
        await alice.close()
        await bob.close()


async def test_a_call_unanswered_then_answered_by_voicemail_is_still_a_missed_call(proxy: Proxy) -> None:
    """No answer within fr_inv_timeout: failure_route relays the call to voicemail, which answers. The
    caller is answered, yet the callee missed the call: a missed_calls row with the timeout (408, no To
    tag), as OpenSIPS's on_missed at TMCB_ON_FAILURE writes it - before, routescript reported a missed
    call only when a failure went upstream, so this call was not one. The CDR is the voicemail's."""
    alice, bob, vm = await phone(proxy, "kate"), await phone(proxy, "liam"), await phone(proxy, "vmbox")
    try:
        inv = alice.request("INVITE", bob.aor, body=b"v=0\r\n", content_type="application/sdp",
                            headers=[("X-Voicemail", vm.contact_uri)])
        alice.send(inv)
        got = await bob.expect_request("INVITE", call_id=inv.call_id)
        bob.send(build_reply(got, 180, to_tag="liamtag", record_route=True))
        cancel = await bob.expect_request("CANCEL", call_id=inv.call_id, timeout=3.0)
        await bob.reply(cancel, 200)
        bob.send(build_reply(got, 487, to_tag="liamtag"))
        to_vm = await vm.expect_request("INVITE", call_id=inv.call_id, timeout=3.0)
        vm.send(build_reply(to_vm, 200, to_tag="vmtag", headers=[("Contact", f"<{vm.contact_uri}>")],
                            body=b"v=0\r\n", content_type="application/sdp", record_route=True))
        final = await alice.expect_response(inv, final=True, timeout=3.0)
        assert final.status == 200
        dialog = alice.dialog(inv, final)
        ack = alice.request("ACK", dialog=dialog)
        ack.set_header("CSeq", f"{inv.cseq.number} ACK")
        alice.send(ack)
        await vm.expect_request("ACK", call_id=inv.call_id)
        bye = alice.request("BYE", dialog=dialog)
        alice.send(bye)
        await vm.reply(await vm.expect_request("BYE", call_id=inv.call_id), 200)
        assert (await alice.expect_response(bye, final=True)).status == 200

        [row] = await rows(proxy, "SELECT from_tag, to_tag, sip_code, sip_reason, dst_user FROM missed_calls "
                                  "WHERE callid = ?", inv.call_id)
        assert row == (inv.from_.tag, "", "408", "Request Timeout", "liam")
        [cdr] = await rows(proxy, "SELECT to_tag, sip_code FROM acc WHERE callid = ?", inv.call_id)
        assert cdr == ("vmtag", "200")
        await asyncio.sleep(0.2)
        assert len(await rows(proxy, "SELECT id FROM missed_calls WHERE callid = ?", inv.call_id)) == 1
    finally:
        for client in (alice, bob, vm):
            await client.close()


async def test_a_message_answered_is_one_transaction_record(proxy: Proxy) -> None:
    alice, bob = await phone(proxy, "erin"), await phone(proxy, "fred")
    try:
        msg = alice.request("MESSAGE", bob.aor, body=b"hi", content_type="text/plain")
        alice.send(msg)
        await bob.reply(await bob.expect_request("MESSAGE", call_id=msg.call_id), 200)
        assert (await alice.expect_response(msg, final=True)).status == 200
        [row] = await rows(proxy, "SELECT method, sip_code, duration, setuptime, created, src_user FROM acc "
                                  "WHERE callid = ?", msg.call_id)
        assert row == ("MESSAGE", "200", 0, 0, None, "erin")
        line = await log_line(proxy, f"call_id={msg.call_id}")
        assert line.split("ACC: ", 1)[1].startswith("transaction answered: timestamp=")
        assert ";created=0;setuptime=0;method=MESSAGE;" in line
    finally:
        await alice.close()
        await bob.close()


async def test_failed_flag_table_argument_drop_and_request_records(proxy: Proxy) -> None:
    alice, bob = await phone(proxy, "ivan"), await phone(proxy, "jane")
    try:
        # "failed" with a table of its own: the 403 is a row of msg_acc (made with the extra columns)
        msg = alice.request("MESSAGE", bob.aor, body=b"hi", content_type="text/plain",
                            headers=[("X-Acc", "failed")])
        alice.send(msg)
        got = await bob.expect_request("MESSAGE", call_id=msg.call_id)
        bob.send(build_reply(got, 403, "Not Yours", to_tag="janetag"))
        assert (await alice.expect_response(msg, final=True)).status == 403
        [row] = await rows(proxy, "SELECT method, to_tag, sip_code, sip_reason, src_user, dst_user "
                                  "FROM msg_acc WHERE callid = ?", msg.call_id)
        assert row == ("MESSAGE", "janetag", "403", "Not Yours", "ivan", "jane")
        line = await log_line(proxy, f"call_id={msg.call_id}")
        assert "ACC: transaction answered: " in line
        assert line.endswith(";code=403;reason=Not Yours;caller=ivan;callee=jane")

        # drop_accounting() after do_accounting(): the 200 is not accounted
        dropped = alice.request("MESSAGE", bob.aor, body=b"hi", content_type="text/plain",
                                headers=[("X-Acc", "drop")])
        alice.send(dropped)
        await bob.reply(await bob.expect_request("MESSAGE", call_id=dropped.call_id), 200)
        assert (await alice.expect_response(dropped, final=True)).status == 200

        # no such user: acc_log_request("404 Not Found") and acc_db_request("404", "missed_calls")
        lost = alice.request("MESSAGE", "sip:nobody@127.0.0.1", body=b"hi", content_type="text/plain")
        assert (await alice.send_request(lost)).status == 404
        line = await log_line(proxy, f"call_id={lost.call_id}")
        assert "ACC: request accounted: timestamp=" in line
        assert ";code=404;reason=Not Found;caller=ivan" in line
        [row] = await rows(proxy, "SELECT method, sip_code, sip_reason, src_user, dst_user "
                                  "FROM missed_calls WHERE callid = ?", lost.call_id)
        assert row == ("MESSAGE", "404", "Not Found", "ivan", "nobody")   # the code's SIP phrase

        await asyncio.sleep(0.2)
        assert not await rows(proxy, "SELECT id FROM acc WHERE callid IN (?, ?, ?)", msg.call_id,
                              dropped.call_id, lost.call_id, want=0)
        assert dropped.call_id not in proxy.server.log()
    finally:
        await alice.close()
        await bob.close()
