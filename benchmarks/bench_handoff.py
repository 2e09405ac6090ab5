"""The dispatcher's own cost per message read by a worker, in one process (not collected by pytest):

    .venv/bin/python -m benchmarks.bench_handoff [--count] [--rounds N]

Two WorkerDispatchers (slots 0 and 1) over real inbox socketpairs; the layers' `receive` is replaced by
a no-op, so what is measured is only what workers add to one process's path, for the six datagrams a
proxy reads per call (examples/proxy.cfg under benchmarks/sipp/proxy_uac.xml and proxy_uas.xml: INVITE,
180, 200, ACK, BYE, 200 to BYE, shaped as SIPp sends them):

  kept     the reader owns it: peek, owner, our inbox checked (causal order), receive
  reader   another worker owns it: peek, owner, Handoff encoded and sent to its inbox
  owner    the owner's inbox read and decoded, up to its receive (one Handoff per wake-up)

`--count` prints Python function calls per message (cProfile: the same on every run); without it,
microseconds of CPU per message (process_time, the least of 9 runs: noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable

from routescript.sip import parse_message
from routescript.sip.peek import keys_from_message
from routescript.sip.address import SocketInfo, Source
from routescript.transport import TransportLayer
from routescript.workers.dispatch import owner_slot, slot_branch
from routescript.workers.inbox import Inbox
from routescript.workers.router import WorkerDispatcher

LISTEN = SocketInfo("udp", "127.0.0.1", 5060)
CALLER = Source("udp", LISTEN, "127.0.0.1", 5061)
CALLEE = Source("udp", LISTEN, "127.0.0.1", 5062)
SDP = ("v=0\r\no=caller 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def call_messages(n: int) -> list[tuple[str, bytes, Source]]:
    """The six datagrams the proxy reads for call n, as SIPp sends them (our branch in the responses'
    top Via, our Record-Route in the in-dialog requests)."""
    call_id = f"{n}-4242@127.0.0.1"
    tag = f";tag=4242SIPpTag00{n}"
    callee_tag = f";tag=4242SIPpTag01{n}"
    rr = "Record-Route: <sip:127.0.0.1:5060;lr>\r\n"
    ours = slot_branch(n % 2)
    proxy_via = f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={ours}\r\n"
    caller_via = ("Via: SIP/2.0/UDP 127.0.0.1:5061;received=127.0.0.1;rport=5061;"
                  f"branch=z9hG4bK-4242-{n}-0\r\n")

    def request(method: str, cseq: int, to_tag: str, ruri: str, extra: str = "", body: str = "") -> bytes:
        return (f"{method} {ruri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-{n}-{cseq}{method[0]}\r\n{extra}"
                f"From: <sip:caller@127.0.0.1:5061>{tag}\r\nTo: <sip:bob@127.0.0.1:5062>{to_tag}\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:caller@127.0.0.1:5061>\r\n"
                f"Max-Forwards: 70\r\nUser-Agent: sipp-bench\r\n"
                + ("Content-Type: application/sdp\r\n" if body else "")
                + f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    def response(status: str, cseq: str, to_tag: str, body: str = "") -> bytes:
        return (f"SIP/2.0 {status}\r\n{proxy_via}{caller_via}"
                f"From: <sip:caller@127.0.0.1:5061>{tag}\r\nTo: <sip:bob@127.0.0.1:5062>{to_tag}\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {cseq}\r\n{rr if 'INVITE' in cseq else ''}"
                f"Contact: <sip:callee@127.0.0.1:5062>\r\n"
                + ("Content-Type: application/sdp\r\n" if body else "")
                + f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    route = "Route: <sip:127.0.0.1:5060;lr>\r\n"
    return [
        ("INVITE", request("INVITE", 1, "", "sip:bob@127.0.0.1:5062", body=SDP), CALLER),
        ("180", response("180 Ringing", "1 INVITE", callee_tag), CALLEE),
        ("200/INVITE", response("200 OK", "1 INVITE", callee_tag, SDP), CALLEE),
        ("ACK", request("ACK", 1, callee_tag, "sip:callee@127.0.0.1:5062", route), CALLER),
        ("BYE", request("BYE", 2, callee_tag, "sip:callee@127.0.0.1:5062", route), CALLER),
        ("200/BYE", response("200 OK", "2 BYE", callee_tag), CALLEE),
    ]


class Pair:
    """Two dispatchers on real inboxes; their layers' receive does nothing."""

    def __init__(self) -> None:
        self.inboxes = [Inbox(0), Inbox(1)]
        self.received = 0
        self.dispatchers = []
        for slot in (0, 1):
            layer = TransportLayer(lambda m, s: None)
            layer.receive = self._receive   # type: ignore[method-assign]
            self.dispatchers.append(WorkerDispatcher(layer, slot, self.inboxes))

    def _receive(self, data: bytes, source: Source, reply: Callable[[bytes], None]) -> None:
        self.received += 1

    def drain(self) -> None:
        """Read every inbox empty (read_ready takes at most 64 a time)."""
        for dispatcher in self.dispatchers:
            reader = dispatcher._reader
            before = -1
            while reader.received != before:
                before = reader.received
                reader.read_ready()

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.close()


def owner_of(data: bytes) -> int:
    slot = owner_slot(keys_from_message(parse_message(data)), 2)
    return 0 if slot is None else slot


def run(pair: Pair, messages: list[tuple[str, bytes, Source]], path: str) -> None:
    """Each message once along `path` ("hop": handed off by its reader, then read by its owner)."""
    reply = _no_reply
    dispatchers = pair.dispatchers
    for _, data, source in messages:
        owner = owner_of_cache[data]
        if path == "kept":
            dispatchers[owner].on_received(data, source, reply)
        else:
            dispatchers[1 - owner].on_received(data, source, reply)
            if path == "hop":
                dispatchers[owner]._reader.read_ready()


def _no_reply(out: bytes) -> None:
    pass


owner_of_cache: dict[bytes, int] = {}


def measure(pair: Pair, messages: list[tuple[str, bytes, Source]], path: str, count: bool) -> float:
    """Calls (count) or microseconds of CPU per message along `path` ("owner": hop minus reader)."""
    if path == "owner":
        return measure(pair, messages, "hop", count) - measure(pair, messages, "reader", count)

    def once() -> float:
        prof = cProfile.Profile() if count else None
        start = time.process_time()
        if prof is not None:
            prof.enable()
        run(pair, messages, path)
        elapsed = (time.process_time() - start) * 1e6 / len(messages)
        if prof is not None:
            prof.disable()
        if path == "reader":   # what was handed off is read back outside the measure
            pair.drain()
        if prof is not None:
            return pstats.Stats(prof).total_calls / len(messages)   # type: ignore[attr-defined, no-any-return]
        return elapsed
    if count:
        return once()
    return min(once() for _ in range(9))   # the least disturbed run: the machine is shared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", action="store_true", help="Python calls per message instead of CPU time")
    parser.add_argument("--calls", type=int, default=100, help="calls per run (6 datagrams each)")
    args = parser.parse_args(argv)
    messages = [m for n in range(args.calls) for m in call_messages(n)]
    for _, data, _source in messages:
        owner_of_cache[data] = owner_of(data)
    pair = Pair()
    try:
        for path in ("kept", "reader", "owner"):
            measure(pair, messages, path, False)   # warm
        unit = "Python calls" if args.count else "us CPU"
        for path in ("kept", "reader", "owner"):
            print(f"{path:7} {measure(pair, messages, path, args.count):7.1f} {unit} per message")
        for kind in ("INVITE", "180", "200/INVITE", "ACK", "BYE", "200/BYE"):
            subset = [m for m in messages if m[0] == kind]
            row = "  ".join(f"{path} {measure(pair, subset, path, args.count):5.1f}"
                            for path in ("kept", "reader", "owner"))
            print(f"  {kind:10} {row}")
    finally:
        pair.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
