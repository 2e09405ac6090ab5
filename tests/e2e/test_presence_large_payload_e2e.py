"""Large and hostile payloads (issue 15) against `routescript run examples/presence.cfg`: a NOTIFY too large
for a UDP datagram, the bound on what the publications of one presentity may hold together, and the
event loop staying responsive while a maximal body is built and sent to many watchers."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from presence_e2e import RunningServer, Srv, free_port, presence_cfg, run_server, start

from routescript.sip import MAX_UDP_PAYLOAD, SIPRequest, build_reply, parse_message
from routescript.testing import SipTestClient, pidf
from routescript.transport.framing import Ping, StreamFramer

pytestmark = pytest.mark.asyncio

HERE = Path(__file__).resolve().parent
LIMIT = 61440          # max_aggregated_body_size's default (docs/modules/presence.md)


def big_pidf(aor: str, tuple_id: str, size: int, basic: str = "open") -> bytes:
    """A PIDF document of exactly `size` bytes (a long note)."""
    body = pidf(aor, basic, note="", tuple_id=tuple_id)
    body = pidf(aor, basic, note="n" * (size - len(body)), tuple_id=tuple_id)
    assert len(body) == size
    return body


class TcpWatcherPort:
    """A TCP listener on a UDP watcher's own port number (a phone listening on both, as RFC 3261 18.1.1
    expects of a UA): collects the requests sent to it and answers each 200 on its connection."""

    def __init__(self) -> None:
        self.requests: list[SIPRequest] = []
        self.arrived = asyncio.Event()
        self.server: asyncio.Server | None = None
        self._served: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._served.add(task)
        self._writers.append(writer)
        framer = StreamFramer(1 << 20)
        while data := await reader.read(65536):
            for item in framer.feed(data):
                if isinstance(item, Ping):
                    continue
                request = parse_message(item, max_size=1 << 20)
                assert isinstance(request, SIPRequest)
                self.requests.append(request)
                writer.write(build_reply(request, 200).to_bytes())
                self.arrived.set()
        writer.close()

    async def expect(self, timeout: float = 5.0) -> SIPRequest:
        deadline = time.monotonic() + timeout
        while not self.requests:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), max(0.01, deadline - time.monotonic()))
        return self.requests.pop(0)

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._served:
            await asyncio.wait(self._served, timeout=2)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def stop_within(server: RunningServer, seconds: float) -> int:
    """SIGTERM, and the exit code once the process has exited - which must take under `seconds`."""
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    try:
        code = server.proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=5)
        raise AssertionError(f"SIGTERM did not stop the server within {seconds}s:\n{server.log()[-3000:]}") \
            from None
    assert time.monotonic() - started < seconds
    return code


async def test_notify_too_large_for_udp_goes_over_tcp_or_ends_the_subscription(tmp_path: Path) -> None:
    """A presentity whose state makes a NOTIFY over 65,507 bytes (limit raised for it): a UDP watcher
    that also listens on TCP gets it over TCP (Via TCP) and its subscription goes on; a UDP-only watcher
    is told terminated;reason=probation without a body and its subscription is gone; a watcher of
    another presentity is served throughout, retransmissions included (the timers kept running);
    SIGTERM afterwards stops the server at once. Before the fix the NOTIFY was retransmitted in vain,
    building its local 408 raised ParseError "Message Too Large" in the timer path, that dialog never
    got another NOTIFY, and every later timer was dead."""
    port = free_port()
    cfg = presence_cfg(tmp_path, port, presence={"max_aggregated_body_size": 4 * LIMIT}, tm={"fr_timeout": 2})
    server = start(cfg, tmp_path)
    srv = Srv(server, port)
    tcp_port = TcpWatcherPort()
    clients: list[SipTestClient] = []
    try:
        ann = await srv.client("ann")          # UDP, and TCP on the same port
        bob = await srv.client("bob")          # UDP only
        carl = await srv.client("carl")        # watches another presentity
        big = await srv.client("big", "tcp")   # publishes over TCP (its PUBLISHes are about 40 KB)
        clients += [ann, bob, carl, big]
        await tcp_port.start(ann.local_port)
        ann.auto_reply["NOTIFY"] = bob.auto_reply["NOTIFY"] = 200
        subs = {}
        for watcher, user in ((ann, "big"), (bob, "big"), (carl, "small")):
            sub = watcher.subscribe(srv.uri(user), expires=600)
            resp = await watcher.send_request(sub)
            assert resp.status == 200
            first = await watcher.expect_request("NOTIFY", call_id=sub.call_id)
            if watcher is carl:
                await carl.reply(first)
            subs[watcher.user] = (sub, resp)

        etags = []
        for i in range(2):
            resp = await big.send_request(big.publish(srv.uri("big"), big_pidf(big.aor, f"t{i}", 40000)))
            assert resp.status == 200
            etags.append(resp.header("SIP-ETag"))

        # ann: the NOTIFY that no datagram can carry came over TCP, with a TCP Via (RFC 3261 18.1.1)
        over_tcp = await tcp_port.expect()
        assert over_tcp.call_id == subs["ann"][0].call_id and over_tcp.header("CSeq") == "3 NOTIFY"
        assert len(over_tcp.to_bytes()) > MAX_UDP_PAYLOAD and over_tcp.via.transport == "TCP"
        assert (over_tcp.header("Subscription-State") or "").startswith("active;")
        # bob: no TCP at his address - the subscription ends, and he is told so in a datagram
        # (CSeq 3 was the NOTIFY that could not be sent)
        ended = await bob.expect_request("NOTIFY", call_id=subs["bob"][0].call_id, timeout=5,
                                         where=lambda n: n.header("CSeq") == "4 NOTIFY")
        assert ended.header("Subscription-State") == "terminated;reason=probation" and ended.body == b""
        refresh = bob.subscribe(srv.uri("big"), dialog=bob.dialog(*subs["bob"]), expires=600)
        assert (await bob.send_request(refresh)).status == 481
        server.wait_for("ended: its state does not fit in a NOTIFY the watcher can receive", timeout=5)

        # carl, another presentity: his NOTIFY left unanswered is retransmitted (Timer E still runs)
        resp = await big.send_request(big.publish(srv.uri("small"), pidf(big.aor, note="small")))
        assert resp.status == 200
        n = await carl.expect_request("NOTIFY", call_id=subs["carl"][0].call_id)
        await asyncio.sleep(0.7)   # T1 = 0.5 s: one retransmission is due by now
        assert carl.retransmissions.get((n.via.branch, "NOTIFY"), 0) >= 1
        await carl.reply(n)

        # ann's subscription goes on: the state made small again comes in a datagram
        resp = await big.send_request(big.publish(srv.uri("big"), None, expires=0, etag=etags[1]))
        assert resp.status == 200
        small = await ann.expect_request("NOTIFY", call_id=subs["ann"][0].call_id, timeout=5,
                                         where=lambda n: n.header("CSeq") == "4 NOTIFY")
        assert small.via.transport == "UDP" and b"t0" in small.body
        assert len(small.to_bytes()) < MAX_UDP_PAYLOAD

        assert stop_within(server, 5.0) == 0
        assert "Traceback" not in server.log()
    finally:
        for client in clients:
            await client.close()
        await tcp_port.close()
        server.stop()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Srv]:
    tmp = tmp_path_factory.mktemp("limit")
    port = free_port()
    with run_server(presence_cfg(tmp, port), tmp) as server:   # max_aggregated_body_size: the default
        yield Srv(server, port)


async def test_publish_beyond_max_aggregated_body_size_gets_413(srv: Srv) -> None:
    """The bodies of one presentity's publications may total max_aggregated_body_size: an initial or a
    modifying PUBLISH beyond is answered 413 (Retry-After: when the first other publication expires),
    nothing changes, and one line is logged with its Call-ID; a body alone over the limit gets 413
    without Retry-After. Before the fix every one of them was stored."""
    async with await srv.client("dora", "tcp") as dora:
        uri = srv.uri("dora")
        etags = []
        for i, expires in enumerate((300, 600)):
            body = big_pidf(dora.aor, f"t{i}", 25000)
            resp = await dora.send_request(dora.publish(uri, body, expires=expires))
            assert resp.status == 200
            etags.append(resp.header("SIP-ETag"))

        third = dora.publish(uri, big_pidf(dora.aor, "t2", 25000), expires=600)
        resp = await dora.send_request(third)
        assert (resp.status, resp.reason) == (413, "Presentity State Too Large")
        assert 290 <= int(resp.header("Retry-After") or 0) <= 300
        srv.server.wait_for(f"PUBLISH {third.call_id} for sip:dora@127.0.0.1 (presence) refused 413")

        # a modify may grow a publication up to the limit, not beyond; a refused one changes nothing
        room = LIMIT - 25000
        resp = await dora.send_request(dora.publish(uri, big_pidf(dora.aor, "t0", room + 1), etag=etags[0]))
        assert resp.status == 413
        resp = await dora.send_request(dora.publish(uri, big_pidf(dora.aor, "t0", room), etag=etags[0]))
        assert resp.status == 200
        etags[0] = resp.header("SIP-ETag")

        async with await srv.client("eve", "tcp") as eve:
            # one body over the limit: 413, no Retry-After (waiting will not help)
            resp = await eve.send_request(eve.publish(srv.uri("eve"), big_pidf(eve.aor, "t0", LIMIT + 500)))
            assert resp.status == 413 and resp.header("Retry-After") is None
            # a watcher of dora sees both publications (about 60 KB) in one NOTIFY
            eve.auto_reply["NOTIFY"] = 200
            sub = eve.subscribe(uri)
            assert (await eve.send_request(sub)).status == 200
            n = await eve.expect_request("NOTIFY", call_id=sub.call_id)
            assert b'id="t0"' in n.body and b'id="t1"' in n.body and b'id="t2"' not in n.body
            assert len(n.to_bytes()) < MAX_UDP_PAYLOAD


# Loop responsiveness: how long an OPTIONS waits for its 200 while one change goes to many watchers.
WATCHERS = 300
PUBLICATIONS = 64          # over AGGREGATE_ON_LOOP_MAX: aggregated in a worker thread
CHANGES = 4
MAX_OPTIONS_WAIT = 0.100   # seconds; see the test's docstring


async def test_maximal_body_to_many_watchers_keeps_the_loop_responsive(tmp_path: Path) -> None:
    """A presentity at max_aggregated_body_size (64 publications, about 55 KB aggregated) changes four
    times with 300 watchers (16 MB of NOTIFYs per change) while a separate process sends an OPTIONS every
    2 ms and times its 200. Measured on the 2-core VM under the other engineers' load: before the fix
    four waits of 190-410 ms (each change's aggregation and fan-out in one turn of the loop); with the
    aggregation in a worker thread and the fan-out yielding every 2 ms, at most 30-50 ms, the machine's
    own noise. The bound is 100 ms for all waits but one (a single noise spike)."""
    port = free_port()
    cfg = presence_cfg(tmp_path, port)
    cfg.write_text(cfg.read_text().replace("log_level = 3", "log_level = 2").replace("xlog_level = 3",
                                                                                      "xlog_level = 2"))
    clients: list[SipTestClient] = []
    with run_server(cfg, tmp_path) as server:
        srv = Srv(server, port)
        try:
            pub = await srv.client("max", "tcp")
            clients.append(pub)
            uri = srv.uri("max")
            size = LIMIT // PUBLICATIONS
            etags = []
            for i in range(PUBLICATIONS):
                resp = await pub.send_request(pub.publish(uri, big_pidf(pub.aor, f"t{i}", size)), timeout=10)
                assert resp.status == 200
                etags.append(resp.header("SIP-ETag"))
            for i in range(WATCHERS):
                watcher = await srv.client(f"w{i}")
                watcher.auto_reply["NOTIFY"] = 200
                clients.append(watcher)
                sub = watcher.subscribe(uri)
                assert (await watcher.send_request(sub, timeout=10)).status == 200
                first = await watcher.expect_request("NOTIFY", call_id=sub.call_id, timeout=10)
                assert len(first.body) > 45000
            prober = subprocess.Popen(  # noqa: ASYNC220 - started once; its output is read in a thread
                [sys.executable, str(HERE / "options_prober.py"), "127.0.0.1", str(port),
                 str(CHANGES * 1.5 + 1)], stdout=subprocess.PIPE, text=True)
            try:
                assert prober.stdout is not None and prober.stdout.readline().strip() == "ready"
                await asyncio.sleep(0.5)
                for change in range(CHANGES):
                    basic = "closed" if change % 2 == 0 else "open"
                    resp = await pub.send_request(pub.publish(uri, big_pidf(pub.aor, "t0", size, basic),
                                                              etag=etags[0]), timeout=10)
                    assert resp.status == 200
                    etags[0] = resp.header("SIP-ETag")
                    for watcher in clients[1:]:
                        n = await watcher.expect_request("NOTIFY", timeout=10)
                        assert f"<basic>{basic}</basic>".encode() in n.body
                    await asyncio.sleep(0.5)
                out, _ = await asyncio.get_running_loop().run_in_executor(None, prober.communicate)
            finally:
                if prober.poll() is None:
                    prober.kill()
            waits = json.loads(out)
            print("OPTIONS waits during the fan-outs (ms):", waits)
            assert waits["count"] > 100
            # A loop blocked by a change shows as one long wait per change (CHANGES of them); one wait
            # over the bound is allowed as the machine's own noise (the server not scheduled for a while).
            assert sum(w >= MAX_OPTIONS_WAIT * 1000 for w in waits["longest"]) <= 1, waits
        finally:
            for client in clients:
                await client.close()
