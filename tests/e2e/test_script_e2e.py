"""`routescript run` with a script using the language broadly, over real sockets: pseudo-variables and
transformations read from the parsed request and sent back in the reply (append_to_reply), switch,
while and for loops, subst_user, a Record-Route copied into the 2xx (not ours: record_route() acts on
what is relayed, as in OpenSIPS), a timer_route ticking, a function failing on a bad header (400 with
its reason), and a clean stop on SIGINT."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from rs_e2e import RunningServer, free_port, run_server

from routescript.testing import SipTestClient

pytestmark = pytest.mark.asyncio

SCRIPT = r"""
# a script using most of the language; every value it computes goes back in a reply header
log_level = 3
xlog_level = 3
stderror_enabled = yes
socket = udp:127.0.0.1:PORT
socket = tcp:127.0.0.1:PORT

loadmodule "signaling.so"
loadmodule "sl"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "sipmsgops.so"
loadmodule "textops.so"

startup_route { xlog("L_INFO", "startup done\n"); }

timer_route[tick, 1] {
    xlog("L_INFO", "timer tick $Ts\n");
}

route {
    if (!mf_process_maxfwd_header(10)) { send_reply(483, "Too Many Hops"); exit; }
    $var(n) = 0;
    while ($var(n) < 3) { $var(n) += 1; }
    $avp(a) = "x"; $avp(a) = "y";
    $var(all) = "";
    for ($var(v) in $(avp(a)[*])) { $var(all) = $var(all) + $var(v); }
    switch ($rm) {
        case "OPTIONS":
            append_to_reply("X-Loop: $var(n) $var(all)\r\n");
            append_to_reply("X-User: $(fU{s.toupper}) $(ci{s.len}) $(ru{uri.host})\r\n");
            append_to_reply("X-Sel: $(hdr(X-List){s.select,1,,}) $(hdr(Event){param.value,id})\r\n");
            append_to_reply("X-Second: $(hdr(X-List)[1])\r\n");
            if (subst_user("/^00/+/")) append_to_reply("X-RU: $ru $rU\r\n");
            if (is_uri_user_e164("$ru") && $si == "127.0.0.1" && $proto == "udp")
                append_to_reply("X-E164: yes\r\n");
            send_reply(200, "OK");
            break;
        case "SUBSCRIBE":
            record_route();
            t_newtran();
            t_reply(202, "Accepted");
            break;
        case "PUBLISH":
            if (is_present_hf("Contact") && $ct =~ "^<sip:") sl_send_reply(200, "Contact OK");
            break;
        default:
            sl_send_reply(405, "Method Not Allowed");
    }
    exit;
}
"""


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[RunningServer, int]]:
    port = free_port()
    cfg = tmp_path / "lang.cfg"
    cfg.write_text(SCRIPT.replace("PORT", str(port)))
    with run_server(cfg, tmp_path) as server:
        yield server, port


async def test_language_over_the_wire(running: tuple[RunningServer, int]) -> None:
    server, port = running
    async with await SipTestClient.start("udp", ("127.0.0.1", port), user="alice", timeout=5) as client:
        req = client.options(f"sip:0049301234@127.0.0.1:{port}",
                             headers=[("X-List", "a,b,c"), ("X-List", "second"),
                                      ("Event", "presence;id=77")])
        resp = await client.send_request(req)
        assert (resp.status, resp.reason) == (200, "OK")
        assert resp.header("X-Loop") == "3 yx"           # $avp: newest value first
        assert resp.header("X-User") == f"ALICE {len(req.call_id)} 127.0.0.1"
        assert resp.header("X-Sel") == "b 77"
        assert resp.header("X-Second") == "second"
        assert resp.header("X-RU") == f"sip:+49301234@127.0.0.1:{port} +49301234"
        assert resp.header("X-E164") == "yes"

        sub = client.request("SUBSCRIBE", headers=[("Event", "presence"), ("Expires", "60"),
                                                   ("Record-Route", "<sip:edge.example.com;lr>")])
        resp = await client.send_request(sub)
        assert resp.status == 202
        # RFC 3261 12.1.1: the 2xx carries the Record-Route set the request came with; record_route()
        # adds ours to what is relayed only (OpenSIPS: a lump on the forwarded request)
        assert resp.header_all("Record-Route") == ["<sip:edge.example.com;lr>"]

        resp = await client.send_request(client.request("MESSAGE"))
        assert (resp.status, resp.reason) == (405, "Method Not Allowed")

        # a PUBLISH whose Contact the script reads is broken: the peer gets 400 + the reason
        resp = await client.send_request(client.request("PUBLISH", contact=False,
                                                        headers=[("Contact", "<sip:broken")]))
        assert resp.status == 400 and "Contact" in resp.reason
        resp = await client.send_request(client.request("PUBLISH"))
        assert (resp.status, resp.reason) == (200, "Contact OK")
    server.wait_for("timer tick", timeout=5)
    assert "startup done" in server.log()


async def test_sigint_stops_cleanly(running: tuple[RunningServer, int]) -> None:
    server, _port = running
    server.signal(signal.SIGINT)
    assert server.proc.wait(timeout=10) == 0
    assert "routescript stopped" in server.log()
