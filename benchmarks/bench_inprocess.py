"""Main-thread cost of the presence scenarios, in-process, by hand (not collected by pytest):

    .venv/bin/python -m benchmarks.bench_inprocess [publish|subscribe|fanout|all] [--calls N] [--count]

A real Server on examples/presence.cfg (a temporary SQLite file, the real group commit and its thread),
but no SIPp and no kernel: datagrams are handed to its UDP endpoint and what it sends is caught, the
watchers' 200s to NOTIFYs are handed back the same way. It prints the event-loop thread's CPU time per
call (per NOTIFY for fan-out) - the figure the SIPp rates divide into, without SIPp's share of the two
cores and the noise of a busy neighbour. `--count` prints Python function calls per call instead
(cProfile; slower, but the same on every run: what a change to the hot path saves). `--areas` adds, from
the same profile, the share of the event-loop time by package (routescript/sip, modules/presence,
asyncio, C functions such as sendto or lxml's parser, ...): where a call's time goes.

  publish    initial PUBLISH (PIDF) + modify PUBLISH with SIP-If-Match, 40 calls at a time
  subscribe  SUBSCRIBE -> 200 + NOTIFY -> 200, unSUBSCRIBE -> 200 + NOTIFY -> 200, on 200 presentities
  fanout     500 watchers of one presentity, modify PUBLISHes: each one NOTIFY per watcher
  relay      examples/proxy.cfg: full calls from a fake caller through t_relay to a fake callee
             (INVITE/100/180/200/ACK/BYE/200, Record-Route honoured), 40 calls at a time
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from benchmarks.servers import bench_config
from routescript.core.server import Server, install_event_loop_policy, tune_collector
from routescript.testing.ports import free_port

CLIENT = ("127.0.0.1", 6000)
CALLEE = ("127.0.0.1", 6001)        # the relay scenario's callee (its caller is CLIENT)
PIDF = ('<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'entity="sip:user{n}@127.0.0.1">\n<tuple id="t{n}">\n<status><basic>{basic}</basic></status>\n'
        '<note>{note}</note>\n</tuple>\n</presence>\n')
_CALL_ID = re.compile(rb"^Call-ID: *([^\r\n]+)", re.I | re.M)
_ETAG = re.compile(rb"^SIP-ETag: *([^\r\n]+)", re.I | re.M)
_TO_TAG = re.compile(rb"^To:[^\r\n]*;tag=([^;\r\n]+)", re.I | re.M)
_KEPT = (b"via", b"from", b"to", b"call-id", b"cseq")


def publish(n: int, cseq: int, etag: str | None = None) -> bytes:
    body = PIDF.format(n=n, basic="open" if cseq % 2 else "closed", note=f"note {cseq}").encode()
    head = (f"PUBLISH sip:user{n}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-p{n}-{cseq}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:user{n}@127.0.0.1>;tag=p{n}\r\nTo: <sip:user{n}@127.0.0.1>\r\n"
            f"Call-ID: pub-{n}@bench\r\nCSeq: {cseq} PUBLISH\r\nEvent: presence\r\nExpires: 3600\r\n"
            + (f"SIP-If-Match: {etag}\r\n" if etag else "")
            + f"Content-Type: application/pidf+xml\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def subscribe(n: int, cseq: int, presentity: int, to_tag: str | None = None) -> bytes:
    to = f"<sip:user{presentity}@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    return (f"SUBSCRIBE sip:user{presentity}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-s{n}-{cseq}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:watcher{n}@127.0.0.1>;tag=w{n}\r\nTo: {to}\r\nCall-ID: sub-{n}@bench\r\n"
            f"CSeq: {cseq} SUBSCRIBE\r\nContact: <sip:watcher{n}@127.0.0.1:6000>\r\nEvent: presence\r\n"
            f"Accept: application/pidf+xml\r\nExpires: {600 if cseq == 1 else 0}\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def ok_for(notify: bytes) -> bytes:
    """The watcher's 200 to a NOTIFY: its Via, From, To, Call-ID and CSeq copied."""
    lines = notify.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    kept = [line for line in lines if line.split(b":", 1)[0].strip().lower() in _KEPT]
    return b"SIP/2.0 200 OK\r\n" + b"\r\n".join(kept) + b"\r\nContent-Length: 0\r\n\r\n"


class Bench:
    """The server and a fake peer on its UDP endpoint: `inject(data)`, `await reply_to(call_id)`,
    NOTIFYs answered 200 at once (and counted)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.endpoint = next(iter(server.transport._udp.values()))
        self.loop = asyncio.get_running_loop()
        self.replies: dict[bytes, asyncio.Future[bytes]] = {}
        self.notifies: dict[bytes, asyncio.Future[bytes]] = {}
        self.notified = 0
        self.endpoint.sendto = self._sent

    def _sent(self, data: bytes, host: str, port: int) -> None:
        m = _CALL_ID.search(data)
        call_id = m.group(1) if m else b""
        if data.startswith(b"NOTIFY"):
            self.notified += 1
            self.loop.call_soon(self.inject, ok_for(data))
            waiting = self.notifies.pop(call_id, None)
        else:
            waiting = self.replies.pop(call_id, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(data)

    def inject(self, data: bytes) -> None:
        self.endpoint.datagram_received(data, CLIENT)

    def expect(self, table: dict[bytes, asyncio.Future[bytes]], call_id: str) -> asyncio.Future[bytes]:
        fut = self.loop.create_future()
        table[call_id.encode()] = fut
        return fut

    async def request(self, data: bytes, call_id: str, *, notify: bool = False) -> bytes:
        reply = self.expect(self.replies, call_id)
        notified = self.expect(self.notifies, call_id) if notify else None
        self.inject(data)
        answer = await reply
        status = answer.split(b" ", 2)[1]
        if status not in (b"200", b"202"):
            raise RuntimeError(f"{call_id}: {answer[:80]!r}")
        if notified is not None:
            await notified
        return answer


async def publish_call(b: Bench, n: int) -> None:
    first = await b.request(publish(n, 1), f"pub-{n}@bench")
    etag = _ETAG.search(first)
    assert etag is not None
    await b.request(publish(n, 2, etag.group(1).decode()), f"pub-{n}@bench")


async def subscribe_call(b: Bench, n: int) -> None:
    presentity = 1 + n % 200
    first = await b.request(subscribe(n, 1, presentity), f"sub-{n}@bench", notify=True)
    tag = _TO_TAG.search(first)
    assert tag is not None
    await b.request(subscribe(n, 2, presentity, tag.group(1).decode()), f"sub-{n}@bench", notify=True)


SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
_HEADER = re.compile(rb"^([A-Za-z-]+):[ \t]*([^\r\n]*)", re.M)
_CSEQ_METHOD = re.compile(rb"^CSeq: *\d+ +([A-Z]+)", re.I | re.M)


def call_request(method: str, n: int, cseq: int, *, ruri: str = "sip:bob@127.0.0.1:6001",
                 to_tag: str | None = None, routes: tuple[str, ...] = (), body: str = "") -> bytes:
    """The relay scenario caller's request of call n (INVITE without a To tag; ACK and BYE in the dialog,
    along the route set)."""
    to = "<sip:bob@127.0.0.1:6001>" + (f";tag={to_tag}" if to_tag else "")
    route = "".join(f"Route: {r}\r\n" for r in routes)
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    via = f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-c{n}-{cseq}{method[0]}"
    return (f"{method} {ruri} SIP/2.0\r\n{via}\r\n"
            f"{route}Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=c{n}\r\nTo: {to}\r\n"
            f"Call-ID: call-{n}@bench\r\nCSeq: {cseq} {method}\r\nContact: <sip:caller@127.0.0.1:6000>\r\n"
            f"{ctype}Content-Length: {len(body)}\r\n\r\n{body}").encode()


def callee_reply(request: bytes, status: str, *, record_route: bool) -> bytes:
    """The callee's reply: Vias, From, To (with its tag), Call-ID, CSeq copied; Record-Route copied back
    on a dialog-forming reply (RFC 3261 12.1.1); its Contact."""
    out = [b"SIP/2.0 " + status.encode()]
    for m in _HEADER.finditer(request.split(b"\r\n\r\n", 1)[0]):
        name = m.group(1).lower()
        if name in (b"via", b"from", b"call-id", b"cseq") or (record_route and name == b"record-route"):
            out.append(m.group(0))
        elif name == b"to":
            out.append(m.group(0) if b"tag=" in m.group(0) else m.group(0) + b";tag=callee")
    out.append(b"Contact: <sip:callee@127.0.0.1:6001>\r\nContent-Length: 0\r\n\r\n")
    return b"\r\n".join(out)


class ProxyPeers:
    """A caller (CLIENT) and a callee (CALLEE) on the server's UDP endpoint: the callee answers INVITE
    180 + 200 and BYE 200 at once; `final(call_id, method)` is the caller's final reply, `acked(call_id)`
    the callee's ACK."""

    def __init__(self, server: Server) -> None:
        self.endpoint = next(iter(server.transport._udp.values()))
        self.loop = asyncio.get_running_loop()
        self.waiting: dict[tuple[bytes, bytes], asyncio.Future[bytes]] = {}
        self.endpoint.sendto = self._sent

    def _sent(self, data: bytes, host: str, port: int) -> None:
        m = _CALL_ID.search(data)
        call_id = m.group(1) if m else b""
        if port == CALLEE[1]:
            method = data.split(b" ", 1)[0]
            if method == b"INVITE":
                self.loop.call_soon(self.inject, callee_reply(data, "180 Ringing", record_route=True), CALLEE)
                self.loop.call_soon(self.inject, callee_reply(data, "200 OK", record_route=True), CALLEE)
            elif method == b"BYE":
                self.loop.call_soon(self.inject, callee_reply(data, "200 OK", record_route=False), CALLEE)
            self._resolve((call_id, b"callee " + method), data)
        elif data.startswith(b"SIP/2.0 ") and data[8:9] != b"1":
            cseq = _CSEQ_METHOD.search(data)
            self._resolve((call_id, cseq.group(1) if cseq else b""), data)

    def _resolve(self, key: tuple[bytes, bytes], data: bytes) -> None:
        waiting = self.waiting.pop(key, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(data)

    def inject(self, data: bytes, source: tuple[str, int] = CLIENT) -> None:
        self.endpoint.datagram_received(data, source)

    def expect(self, call_id: str, what: str) -> asyncio.Future[bytes]:
        fut = self.loop.create_future()
        self.waiting[(call_id.encode(), what.encode())] = fut
        return fut


async def relay_call(p: ProxyPeers, n: int, make: Callable[..., bytes] = call_request) -> None:
    """One full call through the proxy; the ACK and BYE go along the Record-Route of the 200. `make`
    writes the caller's requests (call_request's signature)."""
    call_id = f"call-{n}@bench"
    answered = p.expect(call_id, "INVITE")
    p.inject(make("INVITE", n, 1, body=SDP))
    ok = await answered
    if not ok.startswith(b"SIP/2.0 200"):
        raise RuntimeError(f"{call_id}: {ok[:80]!r}")
    routes = tuple(m.group(2).decode() for m in _HEADER.finditer(ok.split(b"\r\n\r\n", 1)[0])
                   if m.group(1).lower() == b"record-route")
    if not routes:
        raise RuntimeError(f"{call_id}: 200 without Record-Route")
    dialog = {"ruri": "sip:callee@127.0.0.1:6001", "to_tag": "callee", "routes": routes}
    acked = p.expect(call_id, "callee ACK")
    p.inject(make("ACK", n, 1, **dialog))
    await acked
    done = p.expect(call_id, "BYE")
    p.inject(make("BYE", n, 2, **dialog))
    bye = await done
    if not bye.startswith(b"SIP/2.0 200"):
        raise RuntimeError(f"{call_id}: BYE got {bye[:80]!r}")


async def measure(b: Any, calls: int, one: Callable[[Any, int], Awaitable[None]],
                  prof: cProfile.Profile | None, window: int = 40) -> float:
    await asyncio.gather(*(one(b, n) for n in range(1, 201)))   # warm: caches, first rows
    if prof is not None:
        prof.enable()
    start = time.thread_time()
    for base in range(1000, 1000 + calls, window):
        await asyncio.gather(*(one(b, n) for n in range(base, base + window)))
    spent = time.thread_time() - start
    if prof is not None:
        prof.disable()
    return spent


def area_of(key: tuple[str, int, str]) -> str:
    """The package a profiled function belongs to: `routescript/sip`, `modules/presence`, `stdlib/asyncio`,
    `lxml`, or for a C function (cProfile files them under "~") what it does."""
    filename, _, name = key
    if filename == "~":
        for word, area in (("lxml", "C: lxml"), ("sqlite", "C: sqlite3"), ("send", "C: socket send"),
                           ("recv", "C: socket receive")):
            if word in name:
                return area
        return "C: builtins (str, bytes, dict, re, ...)"
    if filename.startswith("<"):     # code compiled from a string: the route script's own functions
        return "compiled route script"
    parts = Path(filename).parts
    for root in ("routescript", "modules", "benchmarks"):
        if root in parts:
            i = len(parts) - 1 - parts[::-1].index(root)
            return "/".join(parts[i:i + 2]).removesuffix(".py")
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    lib = next((i for i, part in enumerate(parts) if part.startswith("python3")), len(parts) - 2)
    return "stdlib/" + parts[min(lib + 1, len(parts) - 1)].removesuffix(".py")


def areas(prof: cProfile.Profile, top: int = 14) -> str:
    """Own time (tottime) of the profile by area, largest first, as percentages of the total."""
    totals: dict[str, float] = {}
    for key, (_, _, own, _, _) in pstats.Stats(prof).stats.items():  # type: ignore[attr-defined]
        area = area_of(key)
        totals[area] = totals.get(area, 0.0) + own
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
    return "\n".join(f"    {share / whole * 100:5.1f}%  {area}" for area, share in ranked)


async def run_scenario(name: str, calls: int, count: bool, by_area: bool = False) -> str:
    prof = cProfile.Profile() if count or by_area else None
    spent, n, unit = await run_measured(name, calls, prof)
    if prof is not None:
        # Every function object counted on its own: pstats merges functions that share (file, line,
        # name) - code made by exec() all reads "<string>:1" - and so undercounted them.
        total = sum(entry.callcount for entry in prof.getstats())
        line = f"{name:10} {total / n:8.0f} Python calls per {unit}"
        return line + "\n" + areas(prof) if by_area else line
    return f"{name:10} {spent / n * 1e6:8.1f} us of event-loop CPU per {unit}"


async def run_measured(name: str, calls: int, prof: cProfile.Profile | None) -> tuple[float, int, str]:
    """One scenario on a fresh server, `prof` (if any) enabled around the measured calls only:
    the event-loop CPU time spent, the number of calls (fan-out: NOTIFYs) and their unit."""
    with tempfile.TemporaryDirectory(prefix="bench-inprocess-") as tmp:
        example = "proxy.cfg" if name == "relay" else "presence.cfg"
        async with serving(example, Path(tmp)) as server:
            if name == "relay":
                spent = await measure(ProxyPeers(server), calls, relay_call, prof)
                return spent, calls, "call"
            b = Bench(server)
            if name == "publish":
                spent = await measure(b, calls, publish_call, prof)
                unit, n = "call", calls
            elif name == "subscribe":
                await asyncio.gather(*(publish_call(b, i) for i in range(1, 201)))
                spent = await measure(b, calls, subscribe_call, prof)
                unit, n = "call", calls
            else:
                spent, n = await fanout(b, calls, prof)
                unit = "NOTIFY"
    return spent, n, unit


@asynccontextmanager
async def serving(example: str, workdir: Path) -> AsyncIterator[Server]:
    """A started Server on a bench copy of `example` (a name in examples/ or a path), stopped after."""
    cfg = bench_config(example, workdir, free_port(), log_level=1)
    # The cost of a call, not overload control: on a busy machine the warm-up burst would wait past
    # queue_delay_limit and be answered 503, which the scenarios treat as a failure.
    cfg.write_text(cfg.read_text() + "\nqueue_delay_limit = 0\n")
    server = Server()
    server.load(str(cfg))
    gc.collect()
    gc.freeze()
    tune_collector()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        gc.unfreeze()


async def fanout(b: Bench, publishes: int, prof: cProfile.Profile | None,
                 watchers: int = 500) -> tuple[float, int]:
    first = await b.request(publish(1, 1), "pub-1@bench")
    etag_m = _ETAG.search(first)
    assert etag_m is not None
    etag = etag_m.group(1).decode()
    for base in range(0, watchers, 50):   # 50 at a time: all at once would wait past queue_delay_limit
        await asyncio.gather(*(b.request(subscribe(100_000 + i, 1, 1), f"sub-{100_000 + i}@bench",
                                         notify=True) for i in range(base, min(base + 50, watchers))))
    publishes = max(1, publishes // watchers)
    if prof is not None:
        prof.enable()
    start, before = time.thread_time(), b.notified
    for i in range(publishes):
        answer = await b.request(publish(1, 2 + i, etag), "pub-1@bench")
        etag_m = _ETAG.search(answer)
        assert etag_m is not None
        etag = etag_m.group(1).decode()
        while b.notified - before < (i + 1) * watchers:
            await asyncio.sleep(0.001)
    spent = time.thread_time() - start
    if prof is not None:
        prof.disable()
    return spent, b.notified - before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("scenario", nargs="?", default="all",
                        choices=("publish", "subscribe", "fanout", "relay", "all"))
    parser.add_argument("--calls", type=int, default=10_000, help="calls (fan-out: NOTIFYs) to measure")
    parser.add_argument("--count", action="store_true", help="Python function calls instead of CPU time")
    parser.add_argument("--areas", action="store_true",
                        help="with the call count, the share of the profiled time by package")
    args = parser.parse_args(argv)
    install_event_loop_policy()
    names = ("publish", "subscribe", "fanout", "relay") if args.scenario == "all" else (args.scenario,)
    for name in names:
        print(asyncio.run(run_scenario(name, args.calls, args.count, args.areas)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
