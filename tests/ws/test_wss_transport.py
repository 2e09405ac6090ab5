"""The wss listener of the TransportLayer over real loopback sockets: SIP over a WebSocket over TLS (tls_mgm's
contexts, as for proto_tls), requests of ours on the connection, the session's facts, and a plaintext
client, a stalled handshake or a client that does not trust us: each a log line and a closed connection,
no traceback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest
from conftest import StubCore, no_tracebacks  # tests/transport/conftest.py's, through tests/ws/conftest.py
from conftest import wait_logged as wait_closing

from routescript.modules.proto_tls import TlsTransport
from routescript.modules.tls_mgm.contexts import TlsContexts
from routescript.modules.tls_mgm.domains import build_table
from routescript.sip import Destination
from routescript.testing import SipTestClient
from routescript.testing.certs import TestPki
from routescript.transport import TransportError, TransportLayer
from routescript.transport.ws import WsOptions

TLS_HANDSHAKE_TIMEOUT = 0.5   # seconds: the stalled-handshake test waits for it


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki.make(tmp_path_factory.mktemp("pki"))


def provider(pki: TestPki, require_cert: int = 0) -> TlsTransport:
    """A server domain "srv" with our certificate, the client's certificate optional (require_cert 0)."""
    table = build_table(["srv"], [], {
        "certificate": [f"[srv]{pki.server}"], "private_key": [f"[srv]{pki.server}"],
        "ca_list": [f"[srv]{pki.ca}"], "require_cert": [f"[srv]{require_cert}"]})
    return TlsTransport(TlsContexts(table), TLS_HANDSHAKE_TIMEOUT)


@pytest.fixture
async def wss_core(pki: TestPki) -> AsyncIterator[StubCore]:
    stub = StubCore()
    stub.layer = TransportLayer(stub.on_message, max_message_size=4096, tcp_idle_timeout=30.0)
    stub.layer.wss_tls = provider(pki)
    stub.layer.wss_options = WsOptions(require_origin=False, handshake_timeout=0.5,
                                       tls_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
    yield stub
    await stub.layer.close()


async def wss_client(pki: TestPki, port: int, **kw: object) -> SipTestClient:
    return await SipTestClient.start("wss", ("127.0.0.1", port), tls_context=pki.client_context(pki.client),
                                     **kw)  # type: ignore[arg-type]


async def wait_logged(caplog: pytest.LogCaptureFixture, text: str) -> str:
    return await wait_closing(caplog, text, among="closing WSS connection")


async def test_sip_over_wss_in_and_out_with_the_session_facts(wss_core: StubCore, pki: TestPki) -> None:
    info = await wss_core.layer.listen("wss", "127.0.0.1", 0)
    assert info.name == f"wss:127.0.0.1:{info.port}"
    async with await wss_client(pki, info.port) as ua:
        req = ua.options()
        assert req.via.transport == "WSS" and ua.contact_uri.endswith(";transport=wss")
        assert (await ua.send_request(req)).status == 200
        _msg, source = wss_core.received[0]
        assert source.proto == "wss" and source.socket == info and source.conn_id is not None
        session = wss_core.layer.tls_session(source.conn_id)
        assert session is not None and session.server_side and session.domain == "srv"
        assert session.version.startswith("TLSv1") and session.peer_cert is not None and session.verified
        # a request of ours reaches the peer by its connection id (a NOTIFY), and by its address
        notify = ua.request("NOTIFY", ua.contact_uri, call_id="n1")
        wss_core.layer.send(notify.to_bytes(), Destination("wss", "x.invalid", 5060, source.conn_id))
        assert (await ua.expect_request("NOTIFY", call_id="n1")).method == "NOTIFY"
        again = ua.request("NOTIFY", ua.contact_uri, call_id="n2")
        await wss_core.layer.deliver(again.to_bytes(), Destination("wss", ua.local_host, ua.local_port))
        await ua.expect_request("NOTIFY", call_id="n2")
    with pytest.raises(TransportError, match="no open WebSocket connection"):
        wss_core.layer.send(b"x", Destination("wss", "127.0.0.1", 9))


async def test_wss_needs_the_tls_contexts() -> None:
    layer = TransportLayer(lambda msg, source: None)
    try:
        with pytest.raises(OSError, match="proto_wss and tls_mgm"):
            await layer.listen("wss", "127.0.0.1", 0)
    finally:
        await layer.close()


async def test_plaintext_on_the_wss_port(wss_core: StubCore, caplog: pytest.LogCaptureFixture) -> None:
    """A ws:// client (or curl without https) on the wss port: one line saying so, the connection
    closed, nothing read."""
    info = await wss_core.layer.listen("wss", "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", info.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    try:
        answer = await asyncio.wait_for(reader.read(-1), 3.0)
    finally:
        writer.close()
    assert not answer.startswith(b"HTTP")
    line = await wait_logged(caplog, "does not speak TLS")
    assert "wss:127.0.0.1:" in line and "plaintext client" in line
    assert wss_core.received == []
    no_tracebacks(caplog)


async def test_a_stalled_tls_handshake_is_cut_off(wss_core: StubCore,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    info = await wss_core.layer.listen("wss", "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", info.port)
    try:
        assert await asyncio.wait_for(reader.read(-1), 3.0) == b""
    finally:
        writer.close()
    assert "tls_handshake_timeout" in await wait_logged(caplog, "no handshake within 500 ms")
    assert wss_core.layer.tcp_connections == 0
    no_tracebacks(caplog)


async def test_an_expired_client_certificate_is_refused(wss_core: StubCore, pki: TestPki,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """require_cert 1: the client's certificate is checked; an expired one ends the handshake (TLS 1.3:
    after the client finished, so the client sees its connection closed unanswered)."""
    wss_core.layer.wss_tls = provider(pki, require_cert=1)
    info = await wss_core.layer.listen("wss", "127.0.0.1", 0)
    with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
        await SipTestClient.start("wss", ("127.0.0.1", info.port),
                                  tls_context=pki.client_context(pki.expired))
    assert "certificate has expired" in await wait_logged(caplog, "certificate")
    assert wss_core.received == []
    no_tracebacks(caplog)


async def test_a_client_that_gives_up_during_the_handshake(wss_core: StubCore, pki: TestPki,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A client that does not trust our certificate closes during the handshake: the connection is
    gone from the table, nothing read, no traceback."""
    info = await wss_core.layer.listen("wss", "127.0.0.1", 0)
    stranger = ssl.create_default_context()   # the system's CAs: not our test CA
    stranger.check_hostname = False
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await SipTestClient.start("wss", ("127.0.0.1", info.port), tls_context=stranger)
    for _ in range(100):
        if wss_core.layer.tcp_connections == 0:
            break
        await asyncio.sleep(0.02)
    assert wss_core.layer.tcp_connections == 0 and wss_core.received == []
    no_tracebacks(caplog)
    assert not [r for r in caplog.records if "connection lost" in r.getMessage()]
