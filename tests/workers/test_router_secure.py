"""WorkerDispatcher over TLS and WebSocket connections, in one process: two TransportLayers ("worker 0",
which accepts every connection, and "worker 1") with their inboxes, as tests/workers/test_router.py does
for UDP and TCP. A connection lives in the worker that accepted it and its framing and encryption
happen there: a message for worker 1 is handed over with the connection's TLS session, and what worker
1 sends to that connection (the reply, a later NOTIFY, a request by address) is written by worker 0."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from routescript.modules.proto_tls import TlsTransport
from routescript.modules.tls_mgm.contexts import TlsContexts
from routescript.modules.tls_mgm.domains import build_table
from routescript.sip.address import SocketInfo
from routescript.testing import SipTestClient
from routescript.testing.certs import TestPki
from routescript.transport import Destination, TransportLayer
from routescript.transport.ws import WsOptions
from routescript.workers.dispatch import conn_id_base, slot_tag
from routescript.workers.inbox import Inbox
from routescript.workers.router import WorkerDispatcher

from .test_router import Core


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki.make(tmp_path_factory.mktemp("pki"))


def provider(pki: TestPki) -> TlsTransport:
    """Server domain "srv" (our certificate; a client's is checked when sent) and client domain "cli"
    trusting our CA."""
    table = build_table(["srv"], ["cli"], {
        "certificate": [f"[srv]{pki.server}"], "private_key": [f"[srv]{pki.server}"],
        "ca_list": [f"[srv]{pki.ca}", f"[cli]{pki.ca}"], "require_cert": ["[srv]0"]})
    return TlsTransport(TlsContexts(table), 2.0)


@dataclass
class Workers:
    cores: list[Core]
    layers: list[TransportLayer]
    dispatchers: list[WorkerDispatcher]
    sockets: dict[str, SocketInfo]


@pytest.fixture
async def workers(pki: TestPki) -> AsyncIterator[Workers]:
    inboxes = [Inbox(0), Inbox(1)]
    cores = [Core(), Core()]
    layers = []
    for slot, core in enumerate(cores):
        layer = TransportLayer(core.on_message, conn_id_base=conn_id_base(slot), tls=provider(pki))
        layer.wss_tls = provider(pki)
        layer.ws_options = layer.wss_options = WsOptions(require_origin=False)
        core.layer = layer
        layers.append(layer)
    # worker 0 accepts every connection (tcp_workers = 1); worker 1 hands its sends for addresses to it
    sockets = {proto: await layers[0].listen(proto, "127.0.0.1", 0) for proto in ("tls", "ws", "wss")}
    layers[1].tcp_acceptor = conn_id_base(0)
    dispatchers = [WorkerDispatcher(layer, slot, inboxes) for slot, layer in enumerate(layers)]
    for dispatcher in dispatchers:
        dispatcher.attach()
    yield Workers(cores, layers, dispatchers, sockets)
    for dispatcher in dispatchers:
        dispatcher.detach()
    for layer in layers:
        await layer.close()
    for inbox in inboxes:
        inbox.close()


async def client(pki: TestPki, proto: str, port: int) -> SipTestClient:
    context = pki.client_context(pki.client) if proto in ("tls", "wss") else None
    return await SipTestClient.start(proto, ("127.0.0.1", port), tls_context=context, timeout=3)


@pytest.mark.parametrize("proto", ["tls", "ws", "wss"])
async def test_worker_1_answers_and_notifies_over_worker_0s_connection(workers: Workers, pki: TestPki,
                                                                       proto: str) -> None:
    async with await client(pki, proto, workers.sockets[proto].port) as ua:
        sub = ua.request("SUBSCRIBE", ua.aor, to_tag=slot_tag(1, 0, "abc"), headers=[("Event", "presence")])
        assert (await ua.send_request(sub)).status == 200          # worker 1's 200, written by worker 0
        _, source = workers.cores[1].received[0]
        assert workers.cores[0].received == []
        assert source.proto == proto and source.socket == workers.sockets[proto]
        assert source.conn_id == conn_id_base(0) + 1 and workers.layers[1].connection(source.conn_id) is None
        if proto == "ws":
            assert source.tls is None
        else:   # the session travelled with the message: what $tls_* and is_peer_verified read
            assert source.tls is not None and source.tls.verified and source.tls.domain == "srv"
            assert source.tls == workers.layers[0].tls_session(source.conn_id)
        # a NOTIFY of worker 1's, by the connection id the subscription keeps
        notify = ua.request("NOTIFY", ua.contact_uri, call_id="n1")
        watcher = Destination(proto, source.remote_host, source.remote_port, source.conn_id)
        await workers.layers[1].deliver(notify.to_bytes(), watcher)
        assert (await ua.expect_request("NOTIFY", call_id="n1")).method == "NOTIFY"
        # a relayed request by address only (tm to a registered Contact): through the acceptor
        again = ua.request("NOTIFY", ua.contact_uri, call_id="n2")
        workers.layers[1].send(again.to_bytes(), Destination(proto, ua.local_host, ua.local_port))
        await ua.expect_request("NOTIFY", call_id="n2")
        assert workers.dispatchers[1].counters.tcp_relayed == 3
        assert workers.dispatchers[0].counters.tcp_written == 2   # by conn_id: the reply, the NOTIFY
        assert workers.dispatchers[0].counters.tcp_fallback == 1  # by address: found in worker 0's table


async def test_an_outgoing_tls_connection_is_opened_by_the_acceptor(workers: Workers, pki: TestPki) -> None:
    """Worker 1 sends to a TLS peer nobody is connected to: worker 0 opens the TLS connection (as for TCP,
    docs/workers.md 4), with the client domain's context, and writes the request on it."""
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def phone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await got.put(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server)
    server = await asyncio.start_server(phone, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        options = b"OPTIONS sip:phone@127.0.0.1 SIP/2.0\r\n\r\n"
        workers.layers[1].send(options, Destination("tls", "127.0.0.1", port))
        async with asyncio.timeout(3):
            assert (await got.get()).startswith(b"OPTIONS ")
        opened = [c for c in workers.layers[0].connections() if c.outgoing]
        assert [c.proto for c in opened] == ["tls"] and opened[0].tls is not None
        assert workers.layers[1].connections() == []
    finally:
        server.close()


async def test_a_ws_send_for_a_closed_connection_fails_without_opening_one(workers: Workers) -> None:
    """A browser's connection gone: worker 0 cannot open a WebSocket connection, so the relayed send is
    logged and dropped (the transaction times out, as in one process)."""
    gone = conn_id_base(0) + 999
    workers.layers[1].send(b"NOTIFY", Destination("ws", "127.0.0.1", 9, gone))
    for _ in range(100):
        if workers.dispatchers[0].counters.tcp_fallback:
            break
        await asyncio.sleep(0.01)
    assert workers.dispatchers[0].counters.tcp_fallback == 1
    assert workers.layers[0].connections() == []
