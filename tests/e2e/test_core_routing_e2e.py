"""`routescript run` with the core routing functions, over a real UDP socket: force_rport sends the reply
to the port the request came from (not the Via's sent-by port), strip/prefix/flags reach the reply
through append_to_reply, and without force_rport the reply follows the Via (RFC 3261 18.2.2). As one
process and with two UDP worker processes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from rs_e2e import RunningServer, free_port, run_server

SCRIPT = r"""
udp_workers = WORKERS
socket = udp:127.0.0.1:PORT
log_level = 2
loadmodule "sl.so"
loadmodule "sipmsgops.so"
route {
    if ($hdr(X-Rport) == "yes") force_rport();
    setflag(SEEN); setflag(3);
    strip(2); prefix("+");
    if (isflagset(SEEN)) append_to_reply("X-Seen: $rU $mf\r\n");
    sl_send_reply(200, "OK");
}
"""


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
def running(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[RunningServer, int]]:
    port = free_port()
    cfg = tmp_path / "core.cfg"
    cfg.write_text(SCRIPT.replace("PORT", str(port)).replace("WORKERS", str(request.param)))
    with run_server(cfg, tmp_path) as server:
        yield server, port


def options(port: int, via_port: int, n: int, rport_header: str) -> bytes:
    return (f"OPTIONS sip:0049301234@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bKcore{n}\r\n"
            f"From: <sip:alice@127.0.0.1>;tag=f{n}\r\n"
            "To: <sip:bob@127.0.0.1>\r\n"
            f"Call-ID: core-{n}@test\r\n"
            "CSeq: 1 OPTIONS\r\n"
            f"X-Rport: {rport_header}\r\n"
            "Max-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def test_force_rport_and_uri_rewrites_over_udp(running: tuple[RunningServer, int]) -> None:
    _server, port = running
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ua, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as via_side:
        ua.bind(("127.0.0.1", 0))
        via_side.bind(("127.0.0.1", 0))            # the port the Via names, not the one we send from
        ua.settimeout(5)
        via_side.settimeout(5)
        via_port = via_side.getsockname()[1]
        # force_rport: the reply comes back to the sending socket, its Via stamped with rport
        ua.sendto(options(port, via_port, 1, "yes"), ("127.0.0.1", port))
        data = ua.recv(65535).decode()
        assert data.startswith("SIP/2.0 200 OK\r\n")
        assert f";rport={ua.getsockname()[1]}" in data and ";received=127.0.0.1" in data
        assert "X-Seen: +49301234 SEEN 3\r\n" in data
        # without it: to the Via's sent-by port
        ua.sendto(options(port, via_port, 2, "no"), ("127.0.0.1", port))
        data = via_side.recv(65535).decode()
        assert data.startswith("SIP/2.0 200 OK\r\n") and "Call-ID: core-2@test" in data
