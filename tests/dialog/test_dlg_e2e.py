"""dialog end to end: `routescript run` as a proxy with create_dialog() between Python UAs, over UDP and TCP,
with 1 and 2 UDP workers: a call (early, confirmed, BYE from either side -> gone from dlg_list), a failed
call, a cancelled one, bye-on-timeout (both sides get a BYE), a concurrent-call limit with a profile (the
3rd call of a user gets 486 from the script), a BYE for an unknown dialog, a re-INVITE with an old CSeq, calls
nobody answers (no reply at all, or ringing until fr_inv_timeout) - each checked with dlg_list after."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proxy"))
from proxy_e2e import Proxy, free_port, start, target, uas

from routescript.mi.client import MIReplyError, call_http
from routescript.sip import SIPRequest, SIPResponse, build_reply
from routescript.testing import SipTestClient

pytestmark = pytest.mark.asyncio

SCRIPT = r"""
log_level = 4
stderror_enabled = yes
udp_workers = WORKERS
socket = udp:127.0.0.1:PORT
socket = tcp:127.0.0.1:PORT

loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "sipmsgops.so"
loadmodule "textops.so"
loadmodule "dialog.so"
loadmodule "httpd.so"
loadmodule "mi_http.so"

modparam("httpd", "port", HTTPPORT)
modparam("httpd", "ip", "127.0.0.1")
modparam("tm", "fr_timeout", 2)
modparam("tm", "fr_inv_timeout", 3)
modparam("dialog", "profiles_with_value", "caller")
modparam("dialog", "default_timeout", 60)

route {
    if (has_totag()) {
        if (loose_route()) {
            if ($DLG_status != NULL) {
                $var(v) = validate_dialog();
                if ($var(v) == -1 && is_method("INVITE")) {
                    xlog("L_INFO", "bad cseq in dialog $DLG_id\n");
                    sl_send_reply(400, "Bad CSeq");
                    exit;
                }
                xlog("L_INFO", "in-dialog $rm $DLG_dir status $DLG_status\n");
            }
            t_relay();
            exit;
        }
        if (is_method("ACK")) { if (t_check_trans()) t_relay(); exit; }
        if (!match_dialog()) {
            xlog("L_INFO", "no dialog for $rm $ci\n");
            sl_send_reply(481, "Call/Transaction Does Not Exist");
            exit;
        }
        t_relay();
        exit;
    }
    if (is_method("CANCEL")) { if (t_check_trans()) t_relay(); exit; }
    if (is_method("INVITE")) {
        get_profile_size("caller", $fU, $var(calls));
        if ($var(calls) >= 2) {
            xlog("L_INFO", "limit: $fU has $var(calls) calls\n");
            sl_send_reply(486, "Busy Here");
            exit;
        }
        if (is_present_hf("X-Bye-Timeout")) {
            create_dialog("bye-on-timeout");
            $DLG_timeout = $hdr(X-Bye-Timeout);
        } else {
            create_dialog();
        }
        set_dlg_profile("caller", $fU);
        $dlg_val(who) = $fU;
        record_route();
    }
    if (!t_relay()) sl_reply_error();
}

event_route[E_DLG_STATE_CHANGED] {
    xlog("L_INFO", "E_DLG_STATE_CHANGED $param(callid) $param(old_state)->$param(new_state)\n");
}
"""


@pytest.fixture(scope="module", params=[1, 2], ids=["workers1", "workers2"])
def running(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, object]]:
    workers = request.param
    tmp = tmp_path_factory.mktemp(f"dlg{workers}")
    port, http = free_port(), free_port()
    cfg = tmp / "dlg.cfg"
    cfg.write_text(SCRIPT.replace("WORKERS", str(workers)).replace("HTTPPORT", str(http))
                   .replace("PORT", str(port)))
    server = start(cfg, tmp)
    if workers > 1:
        server.wait_for("routescript started", count=1)
    server.http = http  # type: ignore[attr-defined]
    try:
        yield port, workers, server
    finally:
        server.stop()


@pytest.fixture(params=["udp", "tcp"])
def proxy(request: pytest.FixtureRequest, running: tuple[int, int, object]) -> Proxy:
    port, _workers, server = running
    return Proxy(server, port, request.param)  # type: ignore[arg-type]


async def mi(proxy: Proxy, method: str, **params: object) -> object:
    url = f"http://127.0.0.1:{proxy.server.http}/mi"  # type: ignore[attr-defined]
    return {"result": await asyncio.to_thread(call_http, url, method, dict(params), timeout=5)}


async def dialogs_of(proxy: Proxy, call_id: str) -> list[dict[str, object]]:
    answer = await mi(proxy, "dlg_list", callid=call_id)
    assert isinstance(answer, dict) and "result" in answer, answer
    return answer["result"]["Dialogs"]  # type: ignore[no-any-return]


async def gone(proxy: Proxy, call_id: str) -> bool:
    for _ in range(40):
        if not await dialogs_of(proxy, call_id):
            return True
        await asyncio.sleep(0.05)
    return False


def reply_as(callee: SipTestClient, request: SIPRequest, status: int, tag: str,
             headers: list[tuple[str, str]] | None = None) -> SIPResponse:
    response = build_reply(request, status, to_tag=tag, headers=headers or [], record_route=True)
    callee._send_response(response)
    return response


async def established(caller: SipTestClient, callee: SipTestClient,
                      headers: list[tuple[str, str]] | None = None) -> tuple[SIPRequest, SIPRequest, object]:
    """INVITE, 180, 200, ACK through the proxy: (the INVITE, what the callee got, the caller's dialog)."""
    invite = caller.request("INVITE", target(callee), headers=headers or [], body=b"v=0\r\n",
                            content_type="application/sdp")
    caller.send(invite)
    got = await callee.expect_request("INVITE", call_id=invite.call_id)
    assert ";did=" in got.header_all("record-route")[0]
    reply_as(callee, got, 180, "calleetag")
    assert (await caller.expect_response(invite, index=1)).status in (180, 200)
    reply_as(callee, got, 200, "calleetag", [("Contact", f"<{callee.contact_uri}>")])
    final = await caller.expect_response(invite, final=True)
    assert final.status == 200
    dialog = caller.ack_2xx(invite, final)
    await callee.expect_request("ACK", call_id=invite.call_id)
    return invite, got, dialog


def callee_bye(callee: SipTestClient, caller: SipTestClient, invite: SIPRequest, got: SIPRequest,
               cseq: int = 1) -> SIPRequest:
    routes = [("Route", value) for value in got.header_all("record-route")]
    return callee.request("BYE", caller.contact_uri, headers=routes, call_id=invite.call_id,
                          from_=str(got.to.uri), to=str(got.from_.uri), from_tag="calleetag",
                          to_tag=invite.from_.tag, cseq=cseq, contact=False)


async def test_call_confirmed_then_bye_from_the_caller(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "alice") as (caller,), uas(proxy.proto, proxy, "bob") as (callee,):
        invite, _got, dialog = await established(caller, callee)
        listed = await dialogs_of(proxy, invite.call_id)
        for _ in range(20):   # the ACK is handled after it is relayed
            if listed and listed[0]["state"] == 4:
                break
            await asyncio.sleep(0.05)
            listed = await dialogs_of(proxy, invite.call_id)
        assert len(listed) == 1 and listed[0]["state"] == 4
        assert listed[0]["from_uri"] == str(invite.from_.uri)
        assert listed[0]["CALLEES"][0]["callee_tag"] == "calleetag"  # type: ignore[index]
        ctx = await mi(proxy, "dlg_list_ctx", callid=invite.call_id)
        assert {"who": "alice"} in ctx["result"]["Dialogs"][0]["context"]["values"]  # type: ignore[index]
        bye = caller.request("BYE", dialog=dialog)
        caller.send(bye)
        got_bye = await callee.expect_request("BYE", call_id=invite.call_id)
        await callee.reply(got_bye, 200)
        assert (await caller.expect_response(bye, final=True)).status == 200
        assert await gone(proxy, invite.call_id)
        log = proxy.server.log()  # type: ignore[attr-defined]
        assert "in-dialog BYE downstream status 5" in log
        for change in ("1->2", "2->3", "3->4", "4->5"):
            assert f"E_DLG_STATE_CHANGED {invite.call_id} {change}" in log


async def test_bye_from_the_callee_ends_the_dialog(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "carl") as (caller,), uas(proxy.proto, proxy, "dina") as (callee,):
        invite, got, _dialog = await established(caller, callee)
        bye = callee_bye(callee, caller, invite, got)
        callee.send(bye)
        got_bye = await caller.expect_request("BYE", call_id=invite.call_id)
        await caller.reply(got_bye, 200)
        assert (await callee.expect_response(bye, final=True)).status == 200
        assert await gone(proxy, invite.call_id)
        assert "in-dialog BYE upstream status 5" in proxy.server.log()  # type: ignore[attr-defined]


async def test_failed_and_cancelled_calls_leave_no_dialog(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "fay") as (caller,), uas(proxy.proto, proxy, "gus") as (callee,):
        invite = caller.request("INVITE", target(callee), body=b"v=0\r\n", content_type="application/sdp")
        caller.send(invite)
        got = await callee.expect_request("INVITE", call_id=invite.call_id)
        reply_as(callee, got, 180, "gustag")
        await caller.expect_response(invite, index=1)
        assert (await dialogs_of(proxy, invite.call_id))[0]["state"] == 2     # early
        reply_as(callee, got, 486, "gustag")
        assert (await caller.expect_response(invite, final=True)).status == 486
        assert await gone(proxy, invite.call_id)
        # a cancelled one
        invite = caller.request("INVITE", target(callee), body=b"v=0\r\n", content_type="application/sdp")
        caller.send(invite)
        got = await callee.expect_request("INVITE", call_id=invite.call_id)
        reply_as(callee, got, 180, "gustag")
        await caller.expect_response(invite, index=1)
        cancel = caller.request("CANCEL", invite.ruri, call_id=invite.call_id, from_tag=invite.from_.tag,
                                branch=invite.via.branch, contact=False)
        caller.send(cancel)
        got_cancel = await callee.expect_request("CANCEL", call_id=invite.call_id)
        await callee.reply(got_cancel, 200)
        reply_as(callee, got, 487, "gustag")
        assert (await caller.expect_response(invite, final=True)).status == 487
        assert await gone(proxy, invite.call_id)


async def test_unanswered_calls_end_their_dialogs(proxy: Proxy) -> None:
    """A callee that never answers (fr_timeout: 408 made by the proxy) and one that rings and never picks up
    (fr_inv_timeout: the proxy CANCELs it): both dialogs end, nothing is left in dlg_list."""
    async with uas(proxy.proto, proxy, "una") as (caller,), uas(proxy.proto, proxy, "vic") as (callee,):
        silent = caller.request("INVITE", target(callee), body=b"v=0\r\n", content_type="application/sdp")
        ringing = caller.request("INVITE", target(callee), body=b"v=0\r\n", content_type="application/sdp")
        caller.send(silent)
        caller.send(ringing)
        await callee.expect_request("INVITE", call_id=silent.call_id)
        got = await callee.expect_request("INVITE", call_id=ringing.call_id)
        reply_as(callee, got, 180, "victag")
        await caller.expect_response(ringing, index=1)
        assert (await dialogs_of(proxy, ringing.call_id))[0]["state"] == 2      # early
        assert (await caller.expect_response(silent, final=True, timeout=6)).status == 408
        cancel = await callee.expect_request("CANCEL", call_id=ringing.call_id, timeout=6)
        await callee.reply(cancel, 200)
        reply_as(callee, got, 487, "victag")
        # the caller gets the proxy's 408 (as OpenSIPS on fr_inv_timeout); the callee's 487 to our CANCEL
        # stays at the proxy
        assert (await caller.expect_response(ringing, final=True, timeout=6)).status == 408
        assert await gone(proxy, silent.call_id) and await gone(proxy, ringing.call_id)


async def test_bye_on_timeout_sends_bye_to_both_sides(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "hal") as (caller,), uas(proxy.proto, proxy, "ivy") as (callee,):
        invite, _got, _dialog = await established(caller, callee, [("X-Bye-Timeout", "1")])
        to_callee = await callee.expect_request("BYE", call_id=invite.call_id, timeout=4)
        to_caller = await caller.expect_request("BYE", call_id=invite.call_id, timeout=4)
        assert to_callee.to.tag == "calleetag" and to_callee.from_.tag == invite.from_.tag
        assert to_caller.from_.tag == "calleetag" and to_caller.to.tag == invite.from_.tag
        assert to_callee.ruri == callee.contact_uri
        await callee.reply(to_callee, 200)
        await caller.reply(to_caller, 200)
        assert await gone(proxy, invite.call_id)


async def test_third_call_of_a_user_gets_486(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "jo") as (caller,), uas(proxy.proto, proxy, "kim") as (callee,):
        first, _g1, d1 = await established(caller, callee)
        second, _g2, d2 = await established(caller, callee)
        size = await mi(proxy, "profile_get_size", profile="caller", value="jo")
        counts = size["result"]  # type: ignore[index]
        assert counts["profile"]["count"] == 2 if isinstance(counts, dict) else sum(   # type: ignore[index]
            c["profile"]["count"] for c in counts) == 2
        third = caller.request("INVITE", target(callee), body=b"v=0\r\n", content_type="application/sdp")
        caller.send(third)
        assert (await caller.expect_response(third, final=True)).status == 486
        for dialog, invite in ((d1, first), (d2, second)):
            bye = caller.request("BYE", dialog=dialog)
            caller.send(bye)
            got_bye = await callee.expect_request("BYE", call_id=invite.call_id)
            await callee.reply(got_bye, 200)
            await caller.expect_response(bye, final=True)
        # the calls ended: a new one goes through
        again, _g3, d3 = await established(caller, callee)
        bye = caller.request("BYE", dialog=d3)
        caller.send(bye)
        await callee.reply(await callee.expect_request("BYE", call_id=again.call_id), 200)


async def test_bye_for_an_unknown_dialog_and_an_old_cseq(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "lea") as (caller,), uas(proxy.proto, proxy, "max") as (callee,):
        stray = caller.request("BYE", target(callee), call_id="no-such-call", to_tag="nobody", contact=False)
        caller.send(stray)
        assert (await caller.expect_response(stray, final=True)).status == 481
        assert await dialogs_of(proxy, "no-such-call") == []
        invite, _got, dialog = await established(caller, callee)
        reinvite = caller.request("INVITE", dialog=dialog, body=b"v=0\r\n", content_type="application/sdp")
        reinvite.set_header("CSeq", f"{invite.cseq.number} INVITE")      # not above the INVITE's
        caller.send(reinvite)
        assert (await caller.expect_response(reinvite, final=True)).status == 400
        listed = await dialogs_of(proxy, invite.call_id)                # the call goes on, unharmed
        assert len(listed) == 1 and listed[0]["state"] == 4
        bye = caller.request("BYE", dialog=dialog)
        caller.send(bye)
        await callee.reply(await callee.expect_request("BYE", call_id=invite.call_id), 200)
        assert (await caller.expect_response(bye, final=True)).status == 200
        assert await gone(proxy, invite.call_id)


async def test_dlg_end_dlg_sends_bye_both_ways(proxy: Proxy) -> None:
    async with uas(proxy.proto, proxy, "pia") as (caller,), uas(proxy.proto, proxy, "quin") as (callee,):
        invite, _got, _dialog = await established(caller, callee)
        [listed] = await dialogs_of(proxy, invite.call_id)
        answer = await mi(proxy, "dlg_end_dlg", dialog_id=listed["ID"], extra_hdrs="X-Why: operator\r\n")
        assert answer["result"] == [{"ID": listed["ID"], "callid": invite.call_id}]  # type: ignore[index]
        to_callee = await callee.expect_request("BYE", call_id=invite.call_id, timeout=4)
        to_caller = await caller.expect_request("BYE", call_id=invite.call_id, timeout=4)
        await callee.reply(to_callee, 200)
        await caller.reply(to_caller, 200)
        assert to_callee.header("x-why") == "operator" and to_caller.header("x-why") == "operator"
        assert await gone(proxy, invite.call_id)
        assert (await mi(proxy, "dlg_end_dlg", dialog_id="no-such-dialog"))["result"] == []  # type: ignore[index]
        with pytest.raises(MIReplyError):
            await mi(proxy, "dlg_list", from_tag="x")
