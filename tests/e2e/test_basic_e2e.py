"""`routescript run` over real sockets: the hello example over UDP and TCP, malformed input, a script
touching a bad header, retransmissions absorbed by t_newtran's transaction, clean stop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from rs_e2e import ROOT, RunningServer, free_port, run_server

from routescript.testing import SipTestClient

pytestmark = pytest.mark.asyncio


@pytest.fixture
def hello(tmp_path: Path) -> Iterator[tuple[RunningServer, int]]:
    port = free_port()
    text = (ROOT / "examples" / "hello.cfg").read_text().replace(":5060", f":{port}")
    cfg = tmp_path / "hello.cfg"
    cfg.write_text(text)
    with run_server(cfg, tmp_path) as server:
        yield server, port


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_hello_options_200_invite_405(hello: tuple[RunningServer, int], proto: str) -> None:
    server, port = hello
    async with await SipTestClient.start(proto, ("127.0.0.1", port), timeout=5) as client:
        opt = client.options()
        resp = await client.send_request(opt)
        assert (resp.status, resp.reason) == (200, "OK")
        assert resp.header("Server") == "routescript hello"
        assert resp.to.tag
        inv = client.request("INVITE")
        resp = await client.send_request(inv)
        assert (resp.status, resp.reason) == (405, "Method Not Allowed")
    assert f"[{opt.call_id}] OPTIONS from" in server.log()   # xlog line prefixed with the Call-ID


async def test_malformed_datagram_gets_400_with_reason(hello: tuple[RunningServer, int]) -> None:
    _server, port = hello
    async with await SipTestClient.start("udp", ("127.0.0.1", port), timeout=5) as client:
        good = client.options()
        raw = good.to_bytes().replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS")
        client.send_raw(raw)
        # the 400 copies the broken CSeq line, so the client keeps it as unparsable bytes
        for _ in range(250):
            if client.garbage:
                break
            await asyncio.sleep(0.02)
        status_line = client.garbage[0].split(b"\r\n", 1)[0]
        assert status_line.startswith(b"SIP/2.0 400 ") and b"CSeq" in status_line
        assert b"Call-ID: " + good.call_id.encode() in client.garbage[0]
        client.send_raw(b"\x00\x01 not sip at all")           # nothing to answer: dropped, server lives
        resp = await client.send_request(client.options())
        assert resp.status == 200


async def test_bad_header_touched_by_script_and_retransmission(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "tm.cfg"
    cfg.write_text(f"""
socket = udp:127.0.0.1:{port}
log_level = 2
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
route {{
    if (is_method("REGISTER")) {{
        xlog("L_NOTICE", "contact is $ct\\n");
        sl_send_reply(200, "OK");
        exit;
    }}
    t_newtran();
    xlog("L_NOTICE", "SCRIPT RUN $ci\\n");
    t_reply(200, "Done");
}}
""")
    server = RunningServer(cfg, tmp_path)
    try:
        server.wait_for("routescript started")
        async with await SipTestClient.start("udp", ("127.0.0.1", port), timeout=5) as client:
            reg = client.request("REGISTER", headers=[("Contact", "<sip:broken")])
            resp = await client.send_request(reg)
            assert resp.status == 400 and "Contact" in resp.reason
            sub = client.request("MESSAGE")
            first = await client.send_request(sub)
            assert (first.status, first.reason) == (200, "Done")
            client.send(sub)                                   # the same request again (same branch)
            second = await client.expect_response(sub, index=1)
            assert second.to_bytes() == first.to_bytes()
            await asyncio.sleep(0.2)
            assert server.log().count(f"SCRIPT RUN {sub.call_id}") == 1
    finally:
        assert server.stop() == 0
    assert "stopped" in server.log()
