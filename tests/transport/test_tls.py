"""TLS listeners and connections over real loopback sockets: the handshake on accept and on connect with
tls_mgm's contexts, the session's facts, SNI choosing the server domain, connection reuse for replies
and requests, and every way a handshake fails - each a log line and a closed connection, no traceback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from routescript.modules.proto_tls import TlsTransport
from routescript.modules.tls_mgm.contexts import TlsContexts
from routescript.modules.tls_mgm.domains import build_table
from routescript.sip import build_request, generate_branch, parse_uri
from routescript.testing import SipTestClient
from routescript.testing.certs import TestPki
from routescript.transport import Destination, TransportError, TransportLayer

from .conftest import StubCore, no_tracebacks
from .conftest import wait_logged as wait_closing

HANDSHAKE_TIMEOUT = 0.5   # seconds: short, the stalled-handshake test waits for it


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki.make(tmp_path_factory.mktemp("pki"))


def provider(pki: TestPki, **settings: list[str]) -> TlsTransport:
    """A server domain "srv" with our certificate (verify_cert 1, require_cert 0 unless overridden) and a
    client domain "cli" trusting our CA, plus `settings` ([dom]value lists)."""
    base: dict[str, list[str]] = {
        "certificate": [f"[srv]{pki.server}"], "private_key": [f"[srv]{pki.server}"],
        "ca_list": [f"[srv]{pki.ca}", f"[cli]{pki.ca}"], "require_cert": ["[srv]0"]}
    servers = ["srv"]
    for name, values in settings.items():
        if name == "server_domain":
            servers += values
        else:
            base[name] = base.get(name, []) + values
    table = build_table(servers, ["cli"], base)
    return TlsTransport(TlsContexts(table), HANDSHAKE_TIMEOUT)


@pytest.fixture
async def tls_core(pki: TestPki) -> AsyncIterator[StubCore]:
    stub = StubCore()
    stub.layer = TransportLayer(stub.on_message, max_message_size=4096, tcp_idle_timeout=30.0,
                                tls=provider(pki))
    yield stub
    await stub.layer.close()


async def tls_client(pki: TestPki, port: int, cert: Path | None = None, **kw: object) -> SipTestClient:
    return await SipTestClient.start("tls", ("127.0.0.1", port), tls_context=pki.client_context(cert),
                                     **kw)  # type: ignore[arg-type]


async def wait_logged(caplog: pytest.LogCaptureFixture, text: str) -> str:
    return await wait_closing(caplog, text, among="closing TLS connection")


async def refused(pki: TestPki, port: int, cert: Path | None, **kw: object) -> bool:
    """True when the server refuses the handshake: at once, or (TLS 1.3, where the client's certificate
    is checked after the client finished) by closing the connection unanswered."""
    try:
        client = await tls_client(pki, port, cert, **kw)
    except (ssl.SSLError, ConnectionError):
        return True
    try:
        client.send(client.options())
        return await client.wait_closed(3.0) and not client.responses
    finally:
        await client.close()


async def test_request_and_reply_over_tls_with_the_session_facts(tls_core: StubCore, pki: TestPki) -> None:
    info = await tls_core.layer.listen("tls", "127.0.0.1", 0)
    assert info.proto == "tls" and info.name == f"tls:127.0.0.1:{info.port}"
    async with await tls_client(pki, info.port, pki.client) as client:
        req = client.options()
        assert req.via.transport == "TLS" and client.contact_uri.endswith(";transport=tls")
        resp = await client.send_request(req)
        assert resp.status == 200
        msg, source = tls_core.received[0]
        assert (source.proto, source.socket, source.remote_port) == ("tls", info, client.local_port)
        assert msg.via.received == "127.0.0.1" and msg.via.rport == client.local_port
        session = tls_core.layer.tls_session(source.conn_id)
        assert session is not None and session.server_side and session.domain == "srv"
        assert session.version.startswith("TLSv1.") and session.cipher and session.bits >= 128
        assert session.peer_cert is not None and session.verified


async def test_without_a_client_certificate_the_peer_is_not_verified(tls_core: StubCore,
                                                                     pki: TestPki) -> None:
    info = await tls_core.layer.listen("tls", "127.0.0.1", 0)
    async with await tls_client(pki, info.port) as client:
        assert (await client.send_request(client.options())).status == 200
        session = tls_core.layer.tls_session(tls_core.received[0][1].conn_id)
        assert session is not None and session.peer_cert is None and not session.verified


async def test_a_request_to_the_client_goes_back_on_its_connection(tls_core: StubCore,
                                                                   pki: TestPki) -> None:
    """RFC 5923 / 3261 18: a NOTIFY to a client that connected to us reuses its connection (found by
    the Contact's address; the client listens nowhere)."""
    info = await tls_core.layer.listen("tls", "127.0.0.1", 0)
    async with await tls_client(pki, info.port) as client:
        assert (await client.send_request(client.options())).status == 200
        notify = build_request("NOTIFY", client.contact_uri, [
            ("Via", f"SIP/2.0/TLS 127.0.0.1:{info.port};branch={generate_branch()}"),
            ("From", "<sip:p@x>;tag=1"), ("To", "<sip:t@x>;tag=2"), ("Call-ID", "n-tls"),
            ("CSeq", "1 NOTIFY")])
        dest = tls_core.layer.destination_for(parse_uri(client.contact_uri))
        assert (dest.proto, dest.port) == ("tls", client.local_port)
        await tls_core.layer.deliver(notify.to_bytes(), dest)
        got = await client.expect_request("NOTIFY")
        assert got.call_id == "n-tls" and tls_core.layer.tcp_connections == 1


async def test_we_open_tls_connections_with_the_client_domain(pki: TestPki) -> None:
    """A request to a sips:/;transport=tls destination nobody is connected to opens a TLS connection,
    verifying the server's certificate with the client domain's CAs; the answer comes back on it."""
    far, near = StubCore(), StubCore()
    far.layer = TransportLayer(far.on_message, tls=provider(pki))
    near.layer = TransportLayer(near.on_message, tls=provider(pki))
    try:
        far_info = await far.layer.listen("tls", "127.0.0.1", 0)
        near_info = await near.layer.listen("tls", "127.0.0.1", 0)
        options = build_request("OPTIONS", f"sips:far@127.0.0.1:{far_info.port}", [
            ("Via", f"SIP/2.0/TLS 127.0.0.1:{near_info.port};branch={generate_branch()}"),
            ("From", "<sip:n@x>;tag=1"), ("To", "<sip:f@x>"), ("Call-ID", "c-tls"), ("CSeq", "1 OPTIONS")])
        dest = near.layer.destination_for(parse_uri(f"sips:far@127.0.0.1:{far_info.port}"))
        assert dest.proto == "tls"
        await near.layer.deliver(options.to_bytes(), dest)
        await far.wait_for(1)
        await near.wait_for(1)   # the 200 came back on the connection near opened
        reply, source = near.received[0]
        assert reply.status == 200 and source.proto == "tls"
        session = near.layer.tls_session(source.conn_id)
        assert session is not None and not session.server_side and session.domain == "cli"
        assert session.verified   # the server's certificate, checked against the client domain's CA
    finally:
        await far.layer.close()
        await near.layer.close()


async def test_a_server_certificate_we_do_not_trust_fails_the_send(pki: TestPki,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    far = StubCore()
    far.layer = TransportLayer(far.on_message, tls=provider(pki))
    # the client domain trusts only the rogue CA
    table = build_table([], ["cli"], {"ca_list": [f"[cli]{pki.rogue}"]})
    near = TransportLayer(lambda m, s: None, tls=TlsTransport(TlsContexts(table), HANDSHAKE_TIMEOUT))
    try:
        far_info = await far.layer.listen("tls", "127.0.0.1", 0)
        with pytest.raises(TransportError, match="certificate"):
            await near.deliver(b"OPTIONS sip:x SIP/2.0\r\n\r\n",
                               Destination("tls", "127.0.0.1", far_info.port))
        assert any("cannot open a TLS connection" in r.getMessage() for r in caplog.records)
        no_tracebacks(caplog)
    finally:
        await far.layer.close()
        await near.close()


async def test_a_plaintext_sip_client_on_the_tls_port_is_closed_and_logged(
        tls_core: StubCore, caplog: pytest.LogCaptureFixture) -> None:
    info = await tls_core.layer.listen("tls", "127.0.0.1", 0)
    async with await SipTestClient.start("tcp", ("127.0.0.1", info.port)) as plain:
        plain.send(plain.options())
        assert await plain.wait_closed(3.0)
    line = await wait_logged(caplog, "does not speak TLS")
    assert "plaintext client" in line and str(info.port) not in line.split("from")[0]
    assert tls_core.received == [] and tls_core.layer.tcp_connections == 0
    no_tracebacks(caplog)


async def test_a_stalled_handshake_is_closed_within_the_timeout(tls_core: StubCore,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    info = await tls_core.layer.listen("tls", "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", info.port)
    try:
        # closed by the server after HANDSHAKE_TIMEOUT (bounded wait: a few times the timeout)
        assert await asyncio.wait_for(reader.read(), HANDSHAKE_TIMEOUT * 6) == b""
    finally:
        writer.close()
    line = await wait_logged(caplog, "no handshake within")
    assert "500 ms (tls_handshake_timeout)" in line
    assert tls_core.layer.tcp_connections == 0
    no_tracebacks(caplog)


@pytest.mark.parametrize(("cert", "why"), [("expired", "certificate has expired"),
                                           ("rogue", "certificate")])
async def test_a_client_certificate_that_fails_verification_is_refused(
        pki: TestPki, caplog: pytest.LogCaptureFixture, cert: str, why: str) -> None:
    stub = StubCore()
    stub.layer = TransportLayer(stub.on_message, tls=provider(pki, require_cert=["[srv]1"]))
    try:
        info = await stub.layer.listen("tls", "127.0.0.1", 0)
        assert await refused(pki, info.port, getattr(pki, cert))
        line = await wait_logged(caplog, "certificate")
        assert why in line
        assert stub.received == []
        no_tracebacks(caplog)
    finally:
        await stub.layer.close()


async def test_require_cert_refuses_a_client_without_one(pki: TestPki,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    stub = StubCore()
    stub.layer = TransportLayer(stub.on_message, tls=provider(pki, require_cert=["[srv]1"]))
    try:
        info = await stub.layer.listen("tls", "127.0.0.1", 0)
        assert await refused(pki, info.port, None)
        await wait_logged(caplog, "certificate")
        assert stub.received == []
    finally:
        await stub.layer.close()


async def test_sni_chooses_the_server_domain(pki: TestPki) -> None:
    """match_sip_domain: a client asking for other.test is served by domain "other"; without SNI by
    "srv" (match_sip_domain none); an unknown name is refused."""
    settings = {"server_domain": ["other"], "certificate": [f"[other]{pki.server}"],
                "private_key": [f"[other]{pki.server}"],
                "match_sip_domain": ["[other]other.test", "[srv]none"]}
    stub = StubCore()
    stub.layer = TransportLayer(stub.on_message, tls=provider(pki, **settings))
    try:
        info = await stub.layer.listen("tls", "127.0.0.1", 0)
        for name, domain in ((None, "srv"), ("other.test", "other")):
            async with await tls_client(pki, info.port, server_name=name) as client:
                assert (await client.send_request(client.options())).status == 200
                session = stub.layer.tls_session(stub.received[-1][1].conn_id)
                assert session is not None and session.domain == domain
        assert await refused(pki, info.port, None, server_name="unknown.test")
    finally:
        await stub.layer.close()


async def test_tls_without_a_provider_is_refused() -> None:
    layer = TransportLayer(lambda m, s: None)
    try:
        with pytest.raises(OSError, match="proto_tls"):
            await layer.listen("tls", "127.0.0.1", 0)
        with pytest.raises(TransportError, match="proto_tls"):
            layer.destination_for(parse_uri("sips:a@127.0.0.1"))
    finally:
        await layer.close()


async def test_tls_and_tcp_connections_to_one_address_are_kept_apart(tls_core: StubCore,
                                                                     pki: TestPki) -> None:
    tcp = await tls_core.layer.listen("tcp", "127.0.0.1", 0)
    tls = await tls_core.layer.listen("tls", "127.0.0.1", 0)
    async with await tls_client(pki, tls.port) as secure, \
            await SipTestClient.start("tcp", ("127.0.0.1", tcp.port)) as plain:
        assert (await secure.send_request(secure.options())).status == 200
        assert (await plain.send_request(plain.options())).status == 200
        protos = sorted(source.proto for _, source in tls_core.received)
        assert protos == ["tcp", "tls"]
        # a TCP destination at the TLS client's address is no TLS connection
        assert tls_core.layer.socket_for(Destination("tls", "127.0.0.1", 1)) == tls
        assert tls_core.layer.socket_for(Destination("tcp", "127.0.0.1", 1)) == tcp

