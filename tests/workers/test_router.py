"""WorkerDispatcher in one process: two TransportLayers ("worker 0" and "worker 1") sharing one UDP
socket as forked workers share the inherited one, each with its own inbox (real socketpairs), and real
loopback peers. Worker 0 reads everything; the rules send each message to its owner."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from routescript.sip import SIPRequest, SIPResponse, build_reply, parse_message
from routescript.sip.address import SocketInfo, Source
from routescript.transaction.layer import TransactionLayer
from routescript.transport import Destination, TransportError, TransportLayer
from routescript.transport.udp import UdpEndpoint
from routescript.workers.dispatch import SlotTable, conn_id_base, slot_branch, slot_tag
from routescript.workers.inbox import Inbox, InboxFull
from routescript.workers.messages import Announce, Resync, SendFailed, TcpSend, decode
from routescript.workers.router import WorkerDispatcher


@dataclass
class Core:
    """Records what reaches on_message; answers requests 200 through its own layer."""

    layer: Any = None
    received: list[tuple[Any, Source]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def on_message(self, msg: Any, source: Source) -> None:
        self.received.append((msg, source))
        self.arrived.set()
        if msg.is_request and msg.method != "ACK":
            self.layer.send_reply(build_reply(msg, 200), source)

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(2):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()


@dataclass
class Workers:
    cores: list[Core]
    layers: list[TransportLayer]
    dispatchers: list[WorkerDispatcher]
    inboxes: list[Inbox]
    udp: SocketInfo
    tcp: SocketInfo


def share_udp_sockets(reader: TransportLayer, other: TransportLayer) -> None:
    """What a forked worker has: the same bound UDP socket, to send from (test only: reaches into the
    layers' tables; the supervisor's adoption of inherited sockets does this for real)."""
    for info, endpoint in reader._udp.items():
        shared = UdpEndpoint(other, endpoint.sock)
        shared.info = info
        other._udp[info] = shared


@pytest.fixture
async def workers() -> AsyncIterator[Workers]:
    inboxes = [Inbox(0), Inbox(1, buffer_size=64 * 1024)]
    cores = [Core(), Core()]
    layers = [TransportLayer(core.on_message, conn_id_base=conn_id_base(slot))
              for slot, core in enumerate(cores)]
    for core, layer in zip(cores, layers, strict=True):
        core.layer = layer
    udp = await layers[0].listen("udp", "127.0.0.1", 0)
    tcp = await layers[0].listen("tcp", "127.0.0.1", 0)
    share_udp_sockets(layers[0], layers[1])
    dispatchers = [WorkerDispatcher(layer, slot, inboxes) for slot, layer in enumerate(layers)]
    for dispatcher in dispatchers:
        dispatcher.attach()
    yield Workers(cores, layers, dispatchers, inboxes, udp, tcp)
    for dispatcher in dispatchers:
        dispatcher.detach()
    layers[1]._udp.clear()   # the shared socket is worker 0's to close
    for layer in layers:
        await layer.close()
    for inbox in inboxes:
        inbox.close()


def request(method: str, *, to_tag: str | None = None, call_id: str = "c-1", proto: str = "UDP",
            port: int = 5999, cseq_method: str | None = None, to: str = "<sip:alice@example.com>") -> bytes:
    tag = f";tag={to_tag}" if to_tag else ""
    return (f"{method} sip:alice@example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/{proto} 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\n"
            f"From: <sip:bob@example.com>;tag=b1\r\nTo: {to}{tag}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 2 {cseq_method or method}\r\nEvent: presence\r\nMax-Forwards: 70\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


@pytest.fixture
async def peer() -> AsyncIterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


async def receive(sock: socket.socket) -> tuple[Any, Any]:
    """The next datagram the peer gets, parsed, and where it came from (add_reader: uvloop has no
    sock_recvfrom)."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[tuple[bytes, Any]] = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: got.done() or got.set_result(sock.recvfrom(70000)))
    try:
        async with asyncio.timeout(2):
            data, addr = await got
    finally:
        loop.remove_reader(sock.fileno())
    return parse_message(data), addr


async def test_udp_request_for_worker_1_reaches_it_with_the_same_source(workers: Workers,
                                                                       peer: socket.socket) -> None:
    port = peer.getsockname()[1]
    peer.sendto(request("SUBSCRIBE", to_tag=slot_tag(1, 0, "abc"), port=port),
                ("127.0.0.1", workers.udp.port))
    await workers.cores[1].wait_for(1)
    msg, source = workers.cores[1].received[0]
    assert source == Source("udp", workers.udp, "127.0.0.1", port)
    assert msg.method == "SUBSCRIBE"
    reply, addr = await receive(peer)   # worker 1 answered from the shared socket
    assert reply.status == 200 and addr == ("127.0.0.1", workers.udp.port)
    assert workers.cores[0].received == []
    assert workers.dispatchers[0].counters.handed_off == 1
    assert workers.dispatchers[1].counters.received == 1


async def test_a_message_for_the_reader_stays_with_it(workers: Workers, peer: socket.socket) -> None:
    port = peer.getsockname()[1]
    peer.sendto(request("BYE", to_tag=slot_tag(0, 0, "abc"), port=port), ("127.0.0.1", workers.udp.port))
    reply, _ = await receive(peer)
    assert reply.status == 200
    assert len(workers.cores[0].received) == 1 and workers.cores[1].received == []
    assert workers.dispatchers[0].counters.handed_off == 0


async def test_a_response_to_worker_1s_branch_reaches_worker_1(workers: Workers, peer: socket.socket) -> None:
    response = (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:{workers.udp.port};branch={slot_branch(1)}\r\n"
                "From: <sip:alice@example.com>;tag=1.0.x\r\nTo: <sip:bob@example.com>;tag=b2\r\n"
                "Call-ID: n-1\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n").encode()
    peer.sendto(response, ("127.0.0.1", workers.udp.port))
    await workers.cores[1].wait_for(1)
    assert workers.cores[1].received[0][0].status == 200
    assert workers.cores[0].received == []


async def test_when_the_peek_abstains_the_full_parse_decides(workers: Workers, peer: socket.socket) -> None:
    folded = request("SUBSCRIBE", to=f"<sip:alice@example.com>\r\n ;tag={slot_tag(1, 0, 'abc')}",
                     port=peer.getsockname()[1])
    peer.sendto(folded, ("127.0.0.1", workers.udp.port))
    await workers.cores[1].wait_for(1)
    assert workers.cores[0].received == []


async def test_a_handed_off_message_that_does_not_parse_is_answered_400_by_its_owner(
        workers: Workers, peer: socket.socket) -> None:
    # The peek reads its keys, the parser refuses it (CSeq names another method): worker 1 answers.
    bad = request("SUBSCRIBE", to_tag=slot_tag(1, 0, "abc"), cseq_method="NOTIFY", port=peer.getsockname()[1])
    peer.sendto(bad, ("127.0.0.1", workers.udp.port))
    reply, addr = await receive(peer)
    assert reply.status == 400 and addr == ("127.0.0.1", workers.udp.port)
    assert workers.dispatchers[1].counters.received == 1
    assert workers.cores[0].received == workers.cores[1].received == []


async def test_tcp_reply_from_worker_1_is_written_by_worker_0(workers: Workers) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", workers.tcp.port)
    try:
        writer.write(request("SUBSCRIBE", to_tag=slot_tag(1, 0, "abc"), proto="TCP"))
        await workers.cores[1].wait_for(1)
        _, source = workers.cores[1].received[0]
        assert source.proto == "tcp" and source.socket == workers.tcp
        assert source.conn_id == conn_id_base(0) + 1              # worker 0's connection, global id
        assert workers.layers[1].connection(source.conn_id) is None
        async with asyncio.timeout(2):
            head = await reader.readuntil(b"\r\n\r\n")
        assert parse_message(head).status == 200
        assert workers.dispatchers[1].counters.tcp_relayed == 1
        assert workers.dispatchers[0].counters.tcp_written == 1
        # A later request to that watcher (a NOTIFY) from worker 1 goes the same way.
        watcher = Destination("tcp", source.remote_host, source.remote_port, source.conn_id)
        await workers.layers[1].deliver(b"NOTIFY sip:bob@127.0.0.1 SIP/2.0\r\n\r\n", watcher)
        async with asyncio.timeout(2):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"NOTIFY ")
        assert workers.dispatchers[0].counters.tcp_written == 2
    finally:
        writer.close()


async def test_relayed_send_for_a_closed_connection_goes_over_a_new_one(workers: Workers) -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def watcher(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await got.put(await reader.readexactly(6))
        writer.close()

    server = await asyncio.start_server(watcher, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gone = conn_id_base(0) + 999   # worker 0 holds no such connection (any more)
        workers.layers[1].send(b"NOTIFY", Destination("tcp", "127.0.0.1", port, gone))
        async with asyncio.timeout(2):
            assert await got.get() == b"NOTIFY"
        assert workers.dispatchers[0].counters.tcp_fallback == 1
    finally:
        server.close()


async def test_full_inbox_request_answered_503_ack_dropped(workers: Workers, peer: socket.socket) -> None:
    workers.dispatchers[1].detach()   # worker 1 stops reading: its inbox fills
    while True:
        try:
            workers.inboxes[1].send(Resync("filler"))
        except InboxFull:
            break
    port = peer.getsockname()[1]
    peer.sendto(request("SUBSCRIBE", to_tag=slot_tag(1, 0, "abc"), port=port),
                ("127.0.0.1", workers.udp.port))
    reply, _ = await receive(peer)
    assert reply.status == 503 and reply.header("Retry-After") == "5"
    peer.sendto(request("ACK", to_tag=slot_tag(1, 0, "abc"), port=port), ("127.0.0.1", workers.udp.port))
    # Worker 0 reads the peer's datagrams in order: once this one is answered, the ACK was handled.
    peer.sendto(request("OPTIONS", to_tag=slot_tag(0, 0, "abc"), port=port), ("127.0.0.1", workers.udp.port))
    reply, _ = await receive(peer)
    assert reply.status == 200
    assert workers.dispatchers[0].counters.busy_answered == 1
    assert workers.dispatchers[0].counters.dropped == 1
    assert [msg.method for msg, _ in workers.cores[0].received] == ["OPTIONS"]
    with pytest.raises(TransportError, match="worker 1"):   # a send to worker 1's connection fails now
        workers.dispatchers[0].relay_tcp(b"x", Destination("tcp", "127.0.0.1", 1, conn_id_base(1) + 1))


async def test_a_dropped_response_is_logged_with_its_call_id(workers: Workers,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """The peek reads only a response's branch; the drop's log line still names its Call-ID."""
    workers.dispatchers[1].detach()
    while True:
        try:
            workers.inboxes[1].send(Resync("filler"))
        except InboxFull:
            break
    response = (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={slot_branch(1)}\r\n"
                "From: <sip:bob@example.com>;tag=b1\r\nTo: <sip:alice@example.com>;tag=a1\r\n"
                "Call-ID: dropped-1\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n").encode()
    source = Source("udp", workers.udp, "127.0.0.1", 5999)
    workers.dispatchers[0].on_received(response, source, lambda out: None)
    assert workers.dispatchers[0].counters.dropped == 1
    assert "dropped a response from udp:127.0.0.1:5999 (Call-ID dropped-1)" in caplog.text


async def test_feed_messages_reach_their_callbacks(workers: Workers) -> None:
    got: asyncio.Queue[Announce] = asyncio.Queue()
    workers.dispatchers[1].on_announce = got.put_nowait
    workers.inboxes[1].send(Resync("no receiver yet"))   # read first: counted as unhandled
    assert workers.dispatchers[0].broadcast(Announce("db", "presentity", "sip:alice@example.com")) == []
    async with asyncio.timeout(2):
        assert await got.get() == Announce("db", "presentity", "sip:alice@example.com")
    assert workers.dispatchers[1].counters.unhandled == 1


def test_relay_leaves_this_workers_connections_to_the_layer() -> None:
    inboxes = [Inbox(0), Inbox(1)]
    try:
        dispatcher = WorkerDispatcher(TransportLayer(lambda m, s: None), 0, inboxes)
        assert not dispatcher.relay_tcp(b"x", Destination("tcp", "h", 1, conn_id_base(0) + 5))
        assert not dispatcher.relay_tcp(b"x", Destination("tcp", "h", 1, conn_id_base(7) + 5))   # no slot 7
        assert not dispatcher.relay_tcp(b"x", Destination("tcp", "h", 1))
        assert dispatcher.relay_tcp(b"x", Destination("tcp", "h", 1, conn_id_base(1) + 5))
        assert decode(inboxes[1].receive_end.recv(100)) == TcpSend(conn_id_base(1) + 5, b"x", "h", 1)
    finally:
        for inbox in inboxes:
            inbox.close()


def test_dispatcher_refuses_a_slot_it_has_no_inbox_for() -> None:
    inbox = Inbox(0)
    try:
        with pytest.raises(ValueError, match="slot 2"):
            WorkerDispatcher(TransportLayer(lambda m, s: None), 2, [inbox])
    finally:
        inbox.close()


async def test_a_source_that_cannot_be_handed_over_is_handled_by_its_reader(
        workers: Workers, caplog: pytest.LogCaptureFixture) -> None:
    response = (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch={slot_branch(1)}\r\n"
                "From: <sip:a@b>;tag=1.0.x\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: n-2\r\nCSeq: 1 NOTIFY\r\n\r\n")
    odd = Source("udp", workers.udp, "h" * 300, 5060)   # a host no Handoff can carry: our bug, logged
    workers.dispatchers[0].on_received(response.encode(), odd, lambda out: None)
    assert [source for _, source in workers.cores[0].received] == [odd]
    assert "cannot hand a message" in caplog.text
    assert workers.dispatchers[0].counters.handed_off == 0


def test_slot_table_updates_keep_the_newest() -> None:
    inboxes = [Inbox(0), Inbox(1)]
    try:
        dispatcher = WorkerDispatcher(TransportLayer(lambda m, s: None), 0, inboxes)
        dispatcher.set_slot_table(SlotTable(2, (0, 0)))
        dispatcher.set_slot_table(SlotTable(1, (0, 1)))     # late, older: ignored (logged)
        assert dispatcher.slot_table == SlotTable(2, (0, 0))
        # slot 1 adopted by worker 0: a send to worker 1's old connection falls back here
        assert not dispatcher.relay_tcp(b"x", Destination("tcp", "h", 1, conn_id_base(1) + 5))
        with pytest.raises(ValueError, match="3 slots for 2 workers"):
            dispatcher.set_slot_table(SlotTable(3, (0, 1, 2)))
    finally:
        for inbox in inboxes:
            inbox.close()


async def test_the_inbox_is_read_before_a_message_this_worker_handles(workers: Workers) -> None:
    """Causal order: an announcement queued in our inbox before a message was read (the PUBLISH sent
    after the announced change's 200) is handled first, whichever fd the loop would have served first."""
    order: list[str] = []
    dispatcher = workers.dispatchers[0]
    dispatcher.on_announce = lambda message: order.append(f"announce {message.payload}")
    workers.layers[0].receive = lambda data, source, reply: order.append("receive")  # type: ignore[method-assign]
    workers.dispatchers[1].broadcast(Announce("db", "presentity", "v2"))
    source = Source("udp", workers.udp, "127.0.0.1", 5999)
    dispatcher.on_received(request("SUBSCRIBE", to_tag=slot_tag(0, 0, "abc")), source, lambda out: None)
    assert order == ["announce v2", "receive"]


async def test_worker_1_reaches_a_peer_connected_to_worker_0_by_its_address(workers: Workers) -> None:
    """A relayed request (tm) to a TCP UA has only its address: worker 1 has no connection to it, so the
    bytes go through worker 0 (tcp_acceptor), which writes them on the UA's own connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", workers.tcp.port)
    try:
        writer.write(request("SUBSCRIBE", to_tag=slot_tag(0, 0, "abc"), proto="TCP"))
        await workers.cores[0].wait_for(1)
        _, source = workers.cores[0].received[0]
        async with asyncio.timeout(2):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"SIP/2.0 200")   # its reply
        workers.layers[1].tcp_acceptor = conn_id_base(0)
        peer = Destination("tcp", source.remote_host, source.remote_port)   # no conn_id: an address
        workers.layers[1].send(b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\n\r\n", peer)
        async with asyncio.timeout(2):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"INVITE ")
        assert workers.dispatchers[1].counters.tcp_relayed == 1
        assert workers.dispatchers[0].counters.tcp_fallback == 1      # found by address in worker 0
    finally:
        writer.close()


def refused_port() -> int:
    """A loopback TCP port nobody listens on (bound, then closed: connecting to it is refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


async def final_of_notify(transactions: TransactionLayer, dest: Destination) -> tuple[int, float]:
    """Send a NOTIFY in a client transaction to `dest`: its final status and how long it took."""
    loop = asyncio.get_running_loop()
    final: asyncio.Future[int] = loop.create_future()
    req = parse_message(request("NOTIFY", to_tag="w1", proto="TCP", call_id="refused"))
    assert isinstance(req, SIPRequest)

    def on_final(resp: SIPResponse) -> None:
        if not final.done():
            final.set_result(resp.status)
    started = loop.time()
    transactions.send_request(req, dest, on_final)
    async with asyncio.timeout(5):
        status = await final
    return status, loop.time() - started


async def test_a_relayed_request_refused_by_worker_0_is_the_transport_error_of_worker_1s_transaction(
        workers: Workers) -> None:
    """Worker 1's NOTIFY to a TCP address it has no connection to goes out through worker 0, whose
    connect is refused: worker 0 reports it (SendFailed, keyed by the branch) and worker 1's client
    transaction ends at once with the local 503 a failed first send gives in one process - not 408
    after Timer F (32 s here)."""
    dest = Destination("tcp", "127.0.0.1", refused_port())
    alone = TransactionLayer(TransportLayer(lambda m, s: None))   # one process: the same send
    try:
        one_status, one_took = await final_of_notify(alone, dest)
    finally:
        await alone.close()
        await alone.transport.close()  # type: ignore[attr-defined]
    transactions = TransactionLayer(workers.layers[1])
    workers.layers[1].tcp_acceptor = conn_id_base(0)
    workers.dispatchers[1].on_send_failed = lambda report: transactions.send_failed(
        report.branch, report.method, Destination(report.proto, report.remote_host, report.remote_port),
        report.reason)
    try:
        status, took = await final_of_notify(transactions, dest)
    finally:
        await transactions.close()
    assert (status, one_status) == (503, 503)
    assert took < 1.0 and one_took < 1.0
    assert workers.dispatchers[1].counters.tcp_relayed == 1
    assert workers.dispatchers[0].counters.tcp_failed == 1
    assert workers.dispatchers[1].counters.send_failed == 1


async def test_a_failed_send_nobody_awaits_is_logged_not_reported(workers: Workers) -> None:
    """A relayed send with no transaction waiting on it (a response, an ACK: `send`, not `deliver`) is
    only logged by the holder when its connect fails, as one process logs it: no SendFailed goes back."""
    dest = Destination("tcp", "127.0.0.1", refused_port())
    workers.layers[1].tcp_acceptor = conn_id_base(0)
    reports: list[SendFailed] = []

    def report(failed: SendFailed) -> bool:
        reports.append(failed)
        return True
    workers.dispatchers[1].on_send_failed = report
    workers.layers[1].send(request("ACK", to_tag="w1", proto="TCP"), dest)
    await asyncio.sleep(0.3)
    assert workers.dispatchers[0].counters.tcp_fallback == 1
    assert workers.dispatchers[1].counters.send_failed == 0 and reports == []


async def test_a_report_for_a_transaction_that_is_gone_is_dropped(workers: Workers) -> None:
    """A SendFailed whose branch matches no live client transaction (answered or timed out meanwhile)
    changes nothing and says so (False)."""
    transactions = TransactionLayer(workers.layers[1])
    try:
        assert not transactions.send_failed("z9hG4bK-none", "NOTIFY", Destination("tcp", "127.0.0.1", 1), "x")
    finally:
        await transactions.close()
