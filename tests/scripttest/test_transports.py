"""UAs over tcp, tls and ws in the simulated network: each has one connection the server sees, and what
the server sends on it reaches the UA whatever host its Via or Contact names (a browser's .invalid);
a UA of a transport the script has no socket for, or a bad transport, is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from routescript.testing.certs import TestPki
from routescript.testing.pytest_plugin import SimulatedScript
from routescript.testing.scenario import ScenarioError, load_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WEBRTC_DBS = {"usrloc": {"db_url": "sqlite://:memory:"}, "presence": {"db_url": "sqlite://:memory:"}}
PAGE = {"uri": "sip:alice@127.0.0.1", "address": "127.0.0.1:52001", "transport": "ws",
        "contact": "sip:k2l8x7@df7jal23ls0d.invalid;transport=ws", "sent_by": "df7jal23ls0d.invalid"}

TLS_SCRIPT = """
log_level = 3
xlog_level = 3
socket = udp:127.0.0.1:5060
socket = tls:127.0.0.1:5061
loadmodule "proto_udp.so"
loadmodule "tls_mgm.so"
loadmodule "proto_tls.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "xlog.so"
modparam("tls_mgm", "server_domain", "srv")
modparam("tls_mgm", "certificate", "[srv]PKI/server.pem")
modparam("tls_mgm", "private_key", "[srv]PKI/server.pem")
route {
    xlog("L_INFO", "$rm over $proto from $si:$sp\\n");
    sl_send_reply(200, "OK");
}
"""


def test_a_browser_ua_over_ws_is_answered_and_notified_over_its_connection() -> None:
    """The page's Via and Contact name df7jal23ls0d.invalid: the 200 and the NOTIFY reach it only
    through the connection it sent on."""
    sim = SimulatedScript(EXAMPLES / "webrtc-presence.cfg", modparams=WEBRTC_DBS, uas={"page": PAGE})
    try:
        sim.send({"from": "page", "request": "SUBSCRIBE", "ruri": "sip:bob@127.0.0.1",
                  "headers": {"Event": "presence", "Expires": 600}})
        sim.expect({"reply": 200, "headers": {"Via": {"regex": r"^SIP/2.0/WS df7jal23ls0d\.invalid;.*"
                                                               r"received=127\.0\.0\.1"}}})
        sim.expect({"request": "NOTIFY", "to": "page",
                    "headers": {"Via": {"contains": "SIP/2.0/WS 127.0.0.1:8080"}}})
        assert sim.sim.network.lost == []
        page = sim.sim.uas["page"]
        assert page.contact == PAGE["contact"]
    finally:
        sim.close()


def test_tcp_ua_contact_names_its_transport_and_requests_find_its_connection() -> None:
    sim = SimulatedScript(EXAMPLES / "webrtc-presence.cfg", modparams=WEBRTC_DBS,
                          uas={"desk": {"uri": "sip:carol@127.0.0.1", "transport": "tcp"}, "page": PAGE})
    try:
        sim.send({"from": "desk", "request": "REGISTER", "ruri": "sip:127.0.0.1:5060",
                  "to": "sip:carol@127.0.0.1", "headers": {"Expires": 600}})
        contact = r"sip:carol@127\.0\.0\.1:\d+;transport=tcp"
        sim.expect({"reply": 200, "headers": {"Contact": {"regex": contact}}})
        sim.send({"from": "page", "request": "MESSAGE", "ruri": "sip:carol@127.0.0.1", "body": "hi"})
        sim.expect({"request": "MESSAGE", "to": "desk", "headers": {"Via": {"contains": "SIP/2.0/TCP"}}})
        sim.expect({"reply": 200, "to": "page"})
    finally:
        sim.close()


def test_a_tls_ua_reaches_a_tls_socket(tmp_path: Path) -> None:
    pki = TestPki.make(tmp_path)
    cfg = tmp_path / "tls.cfg"
    cfg.write_text(TLS_SCRIPT.replace("PKI/server.pem", str(pki.server)))
    sim = SimulatedScript(cfg, uas={"erin": {"transport": "tls"}})
    try:
        sim.send({"from": "erin", "request": "OPTIONS", "ruri": "sip:127.0.0.1:5061;transport=tls"})
        sim.expect({"reply": 200, "headers": {"Via": {"regex": r"^SIP/2\.0/TLS 127\.0\.0\.1:\d+;"}}})
        assert any("OPTIONS over tls from 127.0.0.1" in r.getMessage() for r in sim.sim.log_records())
    finally:
        sim.close()


def test_a_ua_over_a_transport_the_script_has_no_socket_for_fails_its_step() -> None:
    sim = SimulatedScript(EXAMPLES / "hello.cfg", uas={"page": {"transport": "ws"}})
    try:
        with pytest.raises(AssertionError, match="page sends over ws, but the script has no ws socket"):
            sim.send({"from": "page", "request": "OPTIONS", "ruri": "sip:127.0.0.1:5060"})
    finally:
        sim.close()


@pytest.mark.parametrize(("ua", "message"), [
    ("{transport: sctp}", "transport should be one of udp, tcp, tls, ws"),
    ("{transport: ws, sent_by: 'a b.invalid'}", "sent_by should be host or host:port"),
    ("{transport: ws, contact: 'k2l8x7@x.invalid'}", "contact should be a SIP URI"),
])
def test_bad_ua_transport_fields_are_file_errors(tmp_path: Path, ua: str, message: str) -> None:
    path = tmp_path / "s.test.yaml"
    path.write_text(f"script: {EXAMPLES / 'hello.cfg'}\nuas:\n  page: {ua}\nscenarios:\n  - name: a\n"
                    "    steps:\n      - send: {from: page, request: OPTIONS, ruri: 'sip:x@y'}\n")
    with pytest.raises(ScenarioError, match=message):
        load_file(str(path))
