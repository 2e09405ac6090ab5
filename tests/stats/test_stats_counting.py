"""The core, sl and tm statistics counting real traffic against a running Server over UDP loopback, read
back through MI (get_statistics over mi_http) as OpenSIPS prints them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from routescript.core.server import Server
from routescript.mi.client import call_http
from routescript.sip import build_request, generate_branch, generate_tag
from routescript.transport import Destination
from routescript.testing.client import SipTestClient

CFG = """
log_level = 1
socket = udp:127.0.0.1:0
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "sipmsgops.so"
loadmodule "httpd.so"
loadmodule "mi_http.so"
modparam("httpd", "ip", "127.0.0.1")
modparam("httpd", "port", 0)
route {
    if (is_method("ACK")) { exit; }
    if (is_method("OPTIONS")) { sl_send_reply(200, "OK"); exit; }
    if (is_method("MESSAGE") && $rU == "relay") { t_relay(); exit; }
    if (is_method("MESSAGE")) { t_reply(202, "Accepted"); exit; }
    if (is_method("INVITE")) { sl_send_reply(486, "Busy Here"); exit; }
    if (is_method("INFO")) { $var(u) = $fU; sl_send_reply(200, "OK"); exit; }
    sl_send_reply(501, "Not Implemented");
}
"""

N = 20
TIMEOUT = 5.0


@pytest.fixture
async def server(tmp_path: Path) -> Any:
    cfg = tmp_path / "stats.cfg"
    cfg.write_text(CFG)
    srv = Server()
    srv.load(str(cfg))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def udp_addr(server: Server) -> tuple[str, int]:
    sock = server.sockets[0]
    return sock.host, sock.port


async def stats(server: Server, *names: str) -> dict[str, int]:
    url = server.modules.get("httpd").url + "/mi"  # type: ignore[union-attr]
    result = await asyncio.wait_for(asyncio.to_thread(call_http, url, "get_statistics", [list(names)]),
                                    TIMEOUT)
    assert isinstance(result, dict)
    return result


async def test_options_counted(server: Server) -> None:
    async with await SipTestClient.start("udp", udp_addr(server), timeout=TIMEOUT) as ua:
        for _ in range(N):
            assert (await ua.send_request(ua.options())).status == 200
    got = await stats(server, "core:", "sl:")
    assert got["core:rcv_requests"] >= N and got["core:rcv_replies"] == 0
    assert got["sl:2xx_replies"] == N and got["sl:sent_replies"] == N and got["sl:sent_err_replies"] == 0
    assert got["core:unsupported_methods"] == 0 and got["core:err_requests"] == 0
    assert abs(got["core:timestamp"] - time.time()) < 5
    # reset_statistics zeroes a counter, leaves a function (timestamp) alone
    url = server.modules.get("httpd").url + "/mi"  # type: ignore[union-attr]
    names = [["rcv_requests", "timestamp"]]
    assert await asyncio.to_thread(call_http, url, "reset_statistics", names) == "OK"
    again = await stats(server, "rcv_requests", "timestamp", "2xx_replies")
    assert again["core:rcv_requests"] == 0  # MI calls are not SIP traffic
    assert again["core:timestamp"] > 0 and again["sl:2xx_replies"] == N


async def test_reply_classes_ack_and_unsupported(server: Server) -> None:
    async with await SipTestClient.start("udp", udp_addr(server), timeout=TIMEOUT) as ua:
        invite = ua.request("INVITE")
        busy = await ua.send_request(invite)
        assert busy.status == 486
        ua.send(ua.ack(invite, busy))
        assert (await ua.send_request(ua.request("FOO"))).status == 501
        assert (await ua.send_request(ua.request("FOO"))).status == 501
        # the ACK has no reply: wait until the core has counted it
        for _ in range(200):
            if server.counters.received_ACKs:
                break
            await asyncio.sleep(0.005)
    got = await stats(server, "all")
    assert got["sl:4xx_replies"] == 1 and got["sl:5xx_replies"] == 2 and got["sl:sent_replies"] == 3
    assert got["sl:received_ACKs"] == 1
    assert got["core:unsupported_methods"] == 2 and got["core:rcv_requests"] == 4


async def test_tm_transactions(server: Server) -> None:
    async with await SipTestClient.start("udp", udp_addr(server), timeout=TIMEOUT) as ua:
        for _ in range(3):
            assert (await ua.send_request(ua.request("MESSAGE"))).status == 202
        # a client transaction of ours (NOTIFY) the test client answers: UAC + received_replies
        ua.auto_reply["NOTIFY"] = 200
        notify = build_request("NOTIFY", ua.contact_uri, [
            ("Via", (f"SIP/2.0/UDP {server.sockets[0].host}:{server.sockets[0].port};"
                     f"branch={generate_branch()}")),
            ("Max-Forwards", "70"), ("From", f"<sip:srv@127.0.0.1>;tag={generate_tag()}"),
            ("To", f"<{ua.aor}>;tag={generate_tag()}"), ("Call-ID", "stats-notify-1"), ("CSeq", "1 NOTIFY"),
            ("Event", "presence"), ("Subscription-State", "active;expires=60")])
        resp = await asyncio.wait_for(server.transactions.request(
            notify, Destination("udp", ua.local_host, ua.local_port)), TIMEOUT)
        assert resp.status == 200
    got = await stats(server, "tm:")
    assert got["tm:UAS_transactions"] == 3 and got["tm:local_replies"] == 3
    assert got["tm:UAC_transactions"] == 1 and got["tm:received_replies"] == 1
    assert got["tm:2xx_transactions"] == 4  # three MESSAGEs answered 202, one NOTIFY answered 200
    # the three MESSAGE transactions wait out Timer J in the completed table; the NOTIFY's in Timer K
    assert server.transactions.completed == 3
    assert got["tm:inuse_transactions"] == server.transactions.pending + 3
    assert (await stats(server, "rcv_replies")) == {"core:rcv_replies": 1}  # the NOTIFY's 200


async def test_malformed_and_bad_header(server: Server) -> None:
    async with await SipTestClient.start("udp", udp_addr(server), timeout=TIMEOUT) as ua:
        # no From/To...
        ua.send_raw(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1\r\n\r\n")
        ua.send_raw(b"SIP/2.0 200 OK\r\nVia: nothing\r\n\r\n")
        info = ua.request("INFO", from_="this is not a uri")
        resp = await ua.send_request(info)
        assert resp.status == 400
        for _ in range(200):
            if server.counters.err_requests and server.counters.err_replies:
                break
            await asyncio.sleep(0.005)
    got = await stats(server, "err_requests", "err_replies", "bad_msg_hdr", "bad_URIs_rcvd",
                      "sent_err_replies")
    assert got["core:err_requests"] == 1 and got["core:err_replies"] == 1
    assert got["core:bad_msg_hdr"] + got["core:bad_URIs_rcvd"] == 1
    assert got["sl:sent_err_replies"] == 1  # the 400 the core sent for the bad From


async def test_module_statistics_api(server: Server) -> None:
    """What a module does (docs/internals.md "statistics"): a function statistic and a counter."""
    table = {"a": 1, "b": 2}
    server.statistics.register("presence", "published_presentities", func=lambda: len(table))
    notifies = server.statistics.register("presence", "sent_notifies")
    notifies.inc(4)
    got = await stats(server, "presence:")
    assert got == {"presence:published_presentities": 2, "presence:sent_notifies": 4}
    table["c"] = 3
    assert (await stats(server, "published_presentities")) == {"presence:published_presentities": 3}


async def test_tm_relayed_and_local_replies_apart(server: Server) -> None:
    """A reply tm forwards from a branch is a relayed_replies, one made here (t_reply) a local_replies
    (OpenSIPS's stats_trans_rpl: FAKED_REPLY or not); relayed ones were counted as local before."""
    async with await SipTestClient.start("udp", udp_addr(server), timeout=TIMEOUT) as ua:
        ua.auto_reply["MESSAGE"] = 200              # the callee of the relayed MESSAGE: this client itself
        relayed = ua.request("MESSAGE", f"sip:relay@{ua.local_host}:{ua.local_port}")
        assert (await ua.send_request(relayed)).status == 200
        assert (await ua.send_request(ua.request("MESSAGE"))).status == 202
    got = await stats(server, "tm:")
    assert got["tm:relayed_replies"] == 1 and got["tm:local_replies"] == 1
