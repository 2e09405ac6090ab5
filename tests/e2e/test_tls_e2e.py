"""`routescript run` with `socket=tls` (proto_tls + tls_mgm, certificates from trustme), driven by TLS test
clients: presence (PUBLISH, SUBSCRIBE, the NOTIFYs back over the subscriber's own TLS connection), a call
through the proxy to a UA registered over TLS (registrar + t_relay over its connection), a call relayed
from a UDP phone to a TLS one, the $tls_* variables and is_peer_verified() of the request's connection,
and a plaintext client on the TLS port closed with a log line while the server keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from rs_e2e import RunningServer, free_port, run_server

from routescript.sip import build_reply
from routescript.testing import SipTestClient, pidf
from routescript.testing.certs import TestPki

pytestmark = pytest.mark.asyncio

SCRIPT = r"""
log_level = 3
stderror_enabled = yes
socket = udp:127.0.0.1:UDPPORT
socket = tls:127.0.0.1:TLSPORT

loadmodule "proto_udp.so"
loadmodule "tls_mgm.so"
loadmodule "proto_tls.so"
loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "sipmsgops.so"
loadmodule "textops.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "db_sqlite.so"
loadmodule "presence.so"
loadmodule "presence_xml.so"

modparam("tls_mgm", "server_domain", "srv")
modparam("tls_mgm", "certificate", "[srv]PKI/server.pem")
modparam("tls_mgm", "private_key", "[srv]PKI/server.pem")
modparam("tls_mgm", "ca_list", "[srv]PKI/ca.pem")
modparam("tls_mgm", "require_cert", "[srv]0")
modparam("tls_mgm", "client_domain", "cli")
modparam("tls_mgm", "ca_list", "[cli]PKI/ca.pem")
modparam("proto_tls", "tls_handshake_timeout", 2000)
modparam("tm", "fr_timeout", 2)
modparam("presence", "db_url", "sqlite://DB")
modparam("presence", "server_address", "sip:presence@127.0.0.1:TLSPORT;transport=tls")
modparam("presence_xml", "force_active", 1)

route {
    if (!mf_process_maxfwd_header(10)) { sl_send_reply(483, "Too Many Hops"); exit; }
    if (is_method("OPTIONS") && $rU == NULL) {
        if (is_peer_verified()) $var(v) = "verified"; else $var(v) = "unverified";
        append_to_reply("X-TLS: $pr $si:$sp $var(v) $tls_peer_verified $tls_version\r\n");
        $var(peer) = $tls_peer_subject_cn + "|" + $tls_peer_san_email + "|";
        append_to_reply("X-TLS-Peer: $var(peer)$tls_peer_issuer_organization\r\n");
        append_to_reply("X-TLS-My: $tls_my_subject_cn|$tls_cipher_bits\r\n");
        sl_send_reply(200, "OK");
        exit;
    }
    if (has_totag()) {
        if (loose_route()) { t_relay(); exit; }
        if (is_method("ACK")) { if (t_check_trans()) t_relay(); exit; }
        if (is_method("SUBSCRIBE")) { route(presence); exit; }
        sl_send_reply(404, "Not here");
        exit;
    }
    if (is_method("REGISTER")) { if (!save("location")) sl_reply_error(); exit; }
    if (is_method("PUBLISH|SUBSCRIBE")) { route(presence); exit; }
    if (is_method("CANCEL")) { if (t_check_trans()) t_relay(); exit; }
    if (is_method("INVITE")) record_route();
    if (!lookup("location")) { sl_send_reply(404, "Not Found"); exit; }
    if (!t_relay()) sl_reply_error();
}

route[presence] {
    if (!t_newtran()) { sl_reply_error(); exit; }
    if (is_method("PUBLISH")) handle_publish(); else handle_subscribe();
    exit;
}
"""


@dataclass
class Srv:
    server: RunningServer
    udp_port: int
    tls_port: int
    pki: TestPki

    async def tls_client(self, user: str, cert: Path | None = None) -> SipTestClient:
        return await SipTestClient.start("tls", ("127.0.0.1", self.tls_port), user=user, timeout=4,
                                         tls_context=self.pki.client_context(cert))

    async def udp_client(self, user: str) -> SipTestClient:
        return await SipTestClient.start("udp", ("127.0.0.1", self.udp_port), user=user, timeout=4)

    def uri(self, user: str) -> str:
        return f"sip:{user}@127.0.0.1"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Srv]:
    tmp = tmp_path_factory.mktemp("tls")
    pki = TestPki.make(tmp)
    udp_port, tls_port = free_port(), free_port()
    cfg = tmp / "tls.cfg"
    cfg.write_text(SCRIPT.replace("UDPPORT", str(udp_port)).replace("TLSPORT", str(tls_port))
                   .replace("PKI", str(tmp)).replace("DB", str(tmp / "presence.sqlite")))
    with run_server(cfg, tmp) as server:
        yield Srv(server, udp_port, tls_port, pki)


@asynccontextmanager
async def registered(srv: Srv, user: str) -> AsyncIterator[SipTestClient]:
    """A UA registered over TLS: its Contact names its own address, which only its connection reaches."""
    client = await srv.tls_client(user)
    try:
        reg = client.request("REGISTER", f"sip:127.0.0.1:{srv.tls_port};transport=tls", to=client.aor,
                             headers=[("Expires", "300")])
        assert (await client.send_request(reg)).status == 200
        yield client
    finally:
        await client.close()


async def test_the_tls_variables_of_the_request_connection(srv: Srv) -> None:
    async with await srv.tls_client("alice", srv.pki.client) as alice:
        resp = await alice.send_request(alice.options(f"sip:127.0.0.1:{srv.tls_port};transport=tls"))
        assert resp.status == 200
        proto, address, verified, flag, version = resp.header("X-TLS").split()
        assert (proto, address, verified, flag) == ("tls", alice.hostport, "verified", "1")
        assert version.startswith("TLSv1.")
        assert resp.header("X-TLS-Peer") == "alice|alice@sip.test|routescript test CA"
        my_cn, bits = resp.header("X-TLS-My").split("|")
        assert my_cn == "sip.test" and int(bits) >= 128
    async with await srv.tls_client("anon") as anon:     # no client certificate: not verified
        resp = await anon.send_request(anon.options(f"sip:127.0.0.1:{srv.tls_port};transport=tls"))
        assert resp.header("X-TLS").split()[2:4] == ["unverified", "0"]
        assert resp.header("X-TLS-Peer") == "||<null>"   # nulls concatenate as ""
    async with await srv.udp_client("plain") as plain:   # not TLS at all
        resp = await plain.send_request(plain.options(f"sip:127.0.0.1:{srv.udp_port}"))
        assert resp.header("X-TLS").split()[0] == "udp" and resp.header("X-TLS").split()[2] == "unverified"


async def test_presence_over_tls_notifies_on_the_subscriber_connection(srv: Srv) -> None:
    async with await srv.tls_client("carol") as carol, await srv.tls_client("dave") as dave:
        pub = carol.publish(srv.uri("carol"), pidf(carol.aor, note="On TLS"))
        assert (await carol.send_request(pub)).status == 200
        sub = dave.subscribe(srv.uri("carol"), expires=300)
        resp = await dave.send_request(sub)
        assert resp.status == 200
        assert resp.header("Contact") == f"<sip:presence@127.0.0.1:{srv.tls_port};transport=tls>"
        notify = await dave.expect_request("NOTIFY", call_id=sub.call_id)
        await dave.reply(notify)
        # dave listens nowhere: the NOTIFY came over the connection his SUBSCRIBE opened
        assert notify.via.transport == "TLS" and notify.ruri == dave.contact_uri
        assert b"On TLS" in notify.body and notify.header("Subscription-State").startswith("active")
        # a change: the next NOTIFY, same connection, CSeq + 1
        await carol.send_request(carol.publish(srv.uri("carol"), pidf(carol.aor, note="Still TLS")))
        notify2 = await dave.expect_request("NOTIFY", call_id=sub.call_id)
        await dave.reply(notify2)
        assert b"Still TLS" in notify2.body and notify2.cseq.number == notify.cseq.number + 1


async def test_a_call_to_a_ua_registered_over_tls(srv: Srv) -> None:
    async with registered(srv, "erin") as erin, await srv.tls_client("frank") as frank:
        invite = frank.request("INVITE", srv.uri("erin"), body=b"v=0\r\n", content_type="application/sdp")
        frank.send(invite)
        got = await erin.expect_request("INVITE", call_id=invite.call_id)
        # relayed over erin's own connection, our TLS Via on top, Record-Route naming the TLS socket
        assert got.via.transport == "TLS" and got.ruri == erin.contact_uri
        assert f"127.0.0.1:{srv.tls_port}" in got.header_all("record-route")[0]
        assert "transport=tls" in got.header_all("record-route")[0]
        ok = build_reply(got, 200, to_tag="erintag", headers=[("Contact", f"<{erin.contact_uri}>")],
                         record_route=True)
        erin._send_response(ok)
        final = await frank.expect_response(invite, final=True)
        assert final.status == 200 and final.to.tag == "erintag"
        # BYE in the dialog, through the proxy (its Record-Route) back to erin's connection
        dialog = frank.dialog(invite, final)
        bye = frank.request("BYE", dialog=dialog)
        frank.send(bye)
        got_bye = await erin.expect_request("BYE", call_id=invite.call_id)
        erin._send_response(build_reply(got_bye, 200))
        assert (await frank.expect_response(bye, final=True)).status == 200


async def test_a_udp_phone_calls_a_tls_phone(srv: Srv) -> None:
    async with registered(srv, "gina") as gina, await srv.udp_client("hank") as hank:
        msg = hank.request("MESSAGE", srv.uri("gina"), body=b"hi over TLS", content_type="text/plain")
        hank.send(msg)
        got = await gina.expect_request("MESSAGE", call_id=msg.call_id)
        assert got.body == b"hi over TLS" and got.via.transport == "TLS" and got.vias[1].transport == "UDP"
        gina._send_response(build_reply(got, 200))
        assert (await hank.expect_response(msg, final=True)).status == 200


async def test_a_plaintext_client_on_the_tls_port_is_closed_and_logged(srv: Srv) -> None:
    async with await SipTestClient.start("tcp", ("127.0.0.1", srv.tls_port), user="oops") as plain:
        plain.send(plain.options())
        assert await plain.wait_closed(5.0) and not plain.responses
    for _ in range(100):
        if "does not speak TLS" in srv.server.log():
            break
        await asyncio.sleep(0.05)
    log = srv.server.log()
    assert "closing TLS connection from tls:127.0.0.1:" in log and "plaintext client on a TLS port" in log
    assert "Traceback" not in log
    # and the server still serves TLS clients
    async with await srv.tls_client("after") as after:
        assert (await after.send_request(after.options(f"sip:127.0.0.1:{srv.tls_port}"))).status == 200
