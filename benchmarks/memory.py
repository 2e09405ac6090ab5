"""Memory: VmRSS of the server holding many publications and subscriptions.

A small asyncio client (a few UDP sockets on 127.0.0.1) PUBLISHes presentities memuser1..N (Expires 3600),
then SUBSCRIBEs watcher i to memuser i (Expires 3600) and answers every NOTIFY with 200. At each
checkpoint the server's VmRSS is read; KiB per publication / per subscription = RSS growth / count.
A bounded window of requests is in flight; each is retransmitted (500 ms, doubling) up to 6 times. A 503
with Retry-After (the server's queue_delay_limit, when the window outruns a slow machine) is honoured: the
request is sent again after that many seconds, so every item is stored before RSS is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
import time
from dataclasses import dataclass, field

from benchmarks.procstat import rss_kib
from benchmarks.sipprun import log

SOCKETS = 4
RETRANS = 6
RETRIES_AFTER_503 = 5


@dataclass
class MemPoint:
    publications: int
    subscriptions: int
    rss_kib: int


@dataclass
class MemoryResult:
    baseline_kib: int = 0
    points: list[MemPoint] = field(default_factory=list)
    failed: int = 0
    notifies: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def per_item(self) -> list[tuple[int, float | None, float | None]]:
        """(count, KiB per publication, KiB per subscription) at each count, from the baseline."""
        out = []
        prev_rss = self.baseline_kib
        prev_n = 0
        pts = self.points
        for i in range(0, len(pts) - 1, 2):
            pub, sub = pts[i], pts[i + 1]
            dn = pub.publications - prev_n
            kp = (pub.rss_kib - prev_rss) / dn if dn else None
            ks = (sub.rss_kib - pub.rss_kib) / dn if dn else None
            out.append((pub.publications, kp, ks))
            prev_rss, prev_n = sub.rss_kib, pub.publications
        return out


class _Client(asyncio.DatagramProtocol):
    def __init__(self, owner: MemClient) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.owner.received(self, data, addr)


def _header(head: list[bytes], name: bytes) -> bytes | None:
    for line in head:
        i = line.find(b":")
        if i > 0 and line[:i].strip().lower() == name:
            return line[i + 1:].strip()
    return None


def _retry_after(head: list[bytes]) -> float:
    """Retry-After's seconds (RFC 3261 20.33: delta-seconds, then optional comment and parameters)."""
    value = _header(head, b"retry-after") or b""
    digits = value.split(b";", 1)[0].split(b"(", 1)[0].strip()
    return float(digits) if digits.isdigit() else 0.0


class MemClient:
    """Request/response matching by Call-ID + CSeq; NOTIFYs answered 200 by copying the headers."""

    def __init__(self, port: int, window: int) -> None:
        self.port = port
        self.window = window
        self.pending: dict[bytes, asyncio.Future[tuple[int, float]]] = {}   # -> (status, Retry-After)
        self.protos: list[_Client] = []
        self.notifies = 0
        self.last_notify = time.monotonic()
        self.failed = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(SOCKETS):
            _, proto = await loop.create_datagram_endpoint(lambda: _Client(self), local_addr=("127.0.0.1", 0))
            self.protos.append(proto)

    def close(self) -> None:
        for p in self.protos:
            if p.transport:
                p.transport.close()

    def received(self, proto: _Client, data: bytes, addr: tuple[str, int]) -> None:
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        if data.startswith(b"SIP/2.0 "):
            try:
                status = int(head[0].split()[1])
            except (IndexError, ValueError):
                return
            if status < 200:
                return
            key = (_header(head, b"call-id") or b"") + b"|" + (_header(head, b"cseq") or b"")
            fut = self.pending.get(key)
            if fut and not fut.done():
                fut.set_result((status, _retry_after(head) if status == 503 else 0.0))
            return
        if data.startswith(b"NOTIFY "):
            self.notifies += 1
            self.last_notify = time.monotonic()
            out = [b"SIP/2.0 200 OK"]
            for line in head[1:]:
                i = line.find(b":")
                name = line[:i].strip().lower() if i > 0 else b""
                if name in (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"):
                    out.append(line)
            out.append(b"Content-Length: 0\r\n\r\n")
            assert proto.transport is not None
            proto.transport.sendto(b"\r\n".join(out), addr)

    async def request(self, proto: _Client, call_id: str, cseq: str, data: bytes) -> int | None:
        """The final status of `data`, sent again after a 503's Retry-After (the server refused it
        statelessly, so the same bytes are a new request to it); None when it was never answered."""
        for _ in range(RETRIES_AFTER_503):
            answer = await self._transaction(proto, f"{call_id}|{cseq}".encode(), data)
            if answer is None:
                return None
            status, retry_after = answer
            if status != 503 or not retry_after:
                return status
            await asyncio.sleep(retry_after)
        return 503

    async def _transaction(self, proto: _Client, key: bytes, data: bytes) -> tuple[int, float] | None:
        fut: asyncio.Future[tuple[int, float]] = asyncio.get_running_loop().create_future()
        self.pending[key] = fut
        assert proto.transport is not None
        try:
            t = 0.5
            for _ in range(RETRANS):
                proto.transport.sendto(data, ("127.0.0.1", self.port))
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), t)
                except TimeoutError:
                    t = min(t * 2, 4.0)
            self.failed += 1
            return None
        finally:
            del self.pending[key]

    async def run_all(self, make: Iterable[tuple[str, str, bytes]], total: int) -> None:
        sem = asyncio.Semaphore(self.window)
        tasks: set[asyncio.Task[None]] = set()

        async def one(i: int, call_id: str, cseq: str, data: bytes) -> None:
            try:
                status = await self.request(self.protos[i % SOCKETS], call_id, cseq, data)
                if status is not None and status >= 300:
                    self.failed += 1
            finally:
                sem.release()

        for i, (call_id, cseq, data) in enumerate(make):
            await sem.acquire()
            t = asyncio.ensure_future(one(i, call_id, cseq, data))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def quiet(self, seconds: float, limit: float) -> None:
        """Wait until no NOTIFY came for `seconds` (at most `limit` seconds)."""
        end = time.monotonic() + limit
        while time.monotonic() < end and time.monotonic() - self.last_notify < seconds:
            await asyncio.sleep(0.1)


PIDF = ('<?xml version="1.0" encoding="UTF-8"?>\r\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'entity="sip:{u}@127.0.0.1"><tuple id="t{n}"><status><basic>open</basic></status>'
        '<note>Online</note></tuple></presence>\r\n')


def publish(n: int, port: int, lport: int, tag: str) -> tuple[str, str, bytes]:
    u = f"memuser{n}"
    body = PIDF.format(u=u, n=n).encode()
    cid = f"mp{n}-{tag}@bench"
    msg = (f"PUBLISH sip:{u}@127.0.0.1:{port} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bKmp{n}{tag}\r\nMax-Forwards: 70\r\n"
           f"From: <sip:{u}@127.0.0.1>;tag=p{n}\r\nTo: <sip:{u}@127.0.0.1>\r\nCall-ID: {cid}\r\n"
           "CSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 3600\r\nContent-Type: application/pidf+xml\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return cid, "1 PUBLISH", msg


def subscribe(n: int, port: int, lport: int, tag: str) -> tuple[str, str, bytes]:
    u = f"memuser{n}"
    cid = f"ms{n}-{tag}@bench"
    msg = (f"SUBSCRIBE sip:{u}@127.0.0.1:{port} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bKms{n}{tag}\r\nMax-Forwards: 70\r\n"
           f"From: <sip:memwatcher{n}@127.0.0.1>;tag=s{n}\r\nTo: <sip:{u}@127.0.0.1>\r\nCall-ID: {cid}\r\n"
           f"CSeq: 1 SUBSCRIBE\r\nContact: <sip:memwatcher{n}@127.0.0.1:{lport}>\r\nEvent: presence\r\n"
           "Accept: application/pidf+xml\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n").encode()
    return cid, "1 SUBSCRIBE", msg


async def _measure(port: int, pid: int, counts: tuple[int, ...], window: int,
                   budget_s: float) -> MemoryResult:
    res = MemoryResult()
    client = MemClient(port, window)
    await client.open()
    t0 = time.monotonic()
    tag = f"{int(t0 * 1000) % 100000}"
    try:
        lports = [p.transport.get_extra_info("sockname")[1] for p in client.protos if p.transport]

        def gen(kind, lo: int, hi: int):  # type: ignore[no-untyped-def]
            # the request for item i goes out of socket i % SOCKETS, whose port its Via/Contact name
            return (kind(i, port, lports[i % SOCKETS], tag) for i in range(lo, hi))

        # warm-up on other users so code paths, caches and the db connection are in place
        await client.run_all(gen(lambda i, p, lp, t: publish(10_000_000 + i, p, lp, t), 0, 200), 200)
        await client.run_all(gen(lambda i, p, lp, t: subscribe(10_000_000 + i, p, lp, t), 0, 200), 200)
        await client.quiet(1.0, 10)
        res.baseline_kib = rss_kib(pid)
        log(f"  memory: baseline RSS {res.baseline_kib} KiB")
        done = 0
        for n in counts:
            if time.monotonic() - t0 > budget_s:
                res.notes.append(f"time budget {budget_s:.0f}s reached before {n:,}")
                break
            t = time.monotonic()
            await client.run_all(gen(publish, done, n), n - done)
            await asyncio.sleep(0.5)
            res.points.append(MemPoint(n, done, rss_kib(pid)))
            tp = time.monotonic() - t
            t = time.monotonic()
            await client.run_all(gen(subscribe, done, n), n - done)
            await client.quiet(1.0, 30)
            res.points.append(MemPoint(n, n, rss_kib(pid)))
            ts = time.monotonic() - t
            log(f"  memory: {n:,} publications RSS {res.points[-2].rss_kib} KiB ({(n - done) / tp:.0f}/s), "
                f"+{n:,} subscriptions RSS {res.points[-1].rss_kib} KiB ({(n - done) / ts:.0f}/s), "
                f"failed={client.failed} notifies={client.notifies}")
            done = n
    finally:
        client.close()
    res.failed, res.notifies, res.seconds = client.failed, client.notifies, time.monotonic() - t0
    return res


def measure_memory(port: int, pid: int, counts: tuple[int, ...], window: int,
                   budget_s: float) -> MemoryResult:
    return asyncio.run(_measure(port, pid, counts, window, budget_s))
