"""Script overhead, by hand (not collected by pytest):

    .venv/bin/python benchmarks/bench_script.py [seconds]

Two loops over the same pre-built datagrams (OPTIONS and SUBSCRIBE alternating, each with its own
Call-ID, tags and branch), on one core, in-process (no sockets):

  bare SIP layer   parse_message -> build_reply(200) -> to_bytes
  script           parse_message -> MsgContext -> the compiled 30-statement route below (real modules:
                   maxfwd, sipmsgops, textops, rr, sl, signaling) -> its sl_send_reply/send_reply builds
                   the reply through the core (Server.make_reply: to-tag, Server:) -> to_bytes

Prints messages per second for both and the script's cost per message.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from routescript.core.loader import LoadModule, apply_modparams, build_registry, instantiate, load_modules
from routescript.core.server import Server
from routescript.script import compile_script, parse_text
from routescript.script.context import MsgContext
from routescript.sip import build_reply, parse_message
from routescript.transport.address import SocketInfo, Source

# 30 statements, the kind a presence front end runs for every request.
ROUTE = r"""
route {
    if (!mf_process_maxfwd_header(10)) {                 # 1
        sl_send_reply(483, "Too Many Hops");             # 2
        exit;                                            # 3
    }
    $var(start) = $Ts;                                   # 4
    $var(ua) = $(ua{s.tolower});                         # 5
    if ($var(ua) =~ "friendly-scanner|sipvicious") {     # 6
        drop;                                            # 7
    }
    if (has_totag()) {                                   # 8
        if (loose_route()) {                             # 9
            xlog("L_DBG", "in-dialog $rm\n");            # 10
        }
    }
    $var(user) = $(fu{uri.user});                        # 11
    $var(domain) = $fd;                                  # 12
    if ($var(user) == NULL || $var(domain) == "") {      # 13
        sl_send_reply(400, "Bad From");                  # 14
        exit;                                            # 15
    }
    if (!is_myself("$rd")) {                             # 16
        sl_send_reply(403, "Relay Forbidden");           # 17
        exit;                                            # 18
    }
    $avp(src) = $si + ":" + $sp;                         # 19
    $var(n) = $(ci{s.len}) % 7;                          # 20
    if (is_present_hf("Event")) {                        # 21
        $var(event) = $(hdr(Event){s.select,0,;});       # 22
    } else {
        $var(event) = "none";                            # 23
    }
    xlog("L_DBG", "$rm from $var(user)@$var(domain) event $var(event)\n");   # 24
    switch ($rm) {                                       # 25
        case "OPTIONS":
            sl_send_reply(200, "OK");                    # 26
            exit;                                        # 27
        case "SUBSCRIBE":
            if ($var(event) != "presence") { send_reply(489, "Bad Event"); exit; }   # 28
            send_reply(200, "OK");                       # 29
            exit;
    }
    sl_send_reply(405, "Method Not Allowed");            # 30
}
"""

HEAD = (
    "{method} sip:alice@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{n:08x}a7f3;rport\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Bob Watcher" <sip:bob@example.com>;tag={n:x}1928301774\r\n'
    "To: <sip:alice@127.0.0.1>\r\n"
    "Call-ID: a84b4c76e66710{n:08x}@pc33.example.com\r\n"
    "CSeq: 314159 {method}\r\n"
    "Contact: <sip:bob@192.0.2.10:5060;transport=udp>\r\n"
    "{event}"
    "User-Agent: ExamplePhone/5.2.1 (Linux; build 20240101)\r\n"
    "Expires: 3600\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


def datagrams(count: int) -> list[bytes]:
    out = []
    for n in range(count):
        if n % 2:
            out.append(HEAD.format(method="SUBSCRIBE", n=n, event="Event: presence\r\n").encode())
        else:
            out.append(HEAD.format(method="OPTIONS", n=n, event="").encode())
    return out


class _Capture:
    """The transport the core replies through: keeps the serialised reply."""

    def __init__(self) -> None:
        self.last = b""

    def send_reply(self, response: Any, source: Any) -> None:
        self.last = response.to_bytes()


def _server() -> tuple[Server, _Capture, Any]:
    server = Server()
    mods = ["maxfwd", "sipmsgops", "textops", "rr", "sl", "signaling"]
    classes = load_modules([LoadModule(m, m + ".so") for m in mods])
    server.modules = instantiate(classes, apply_modparams(classes, []), server)
    server.sockets = [SocketInfo("udp", "127.0.0.1", 5060)]
    server.config.values["server_header"] = "Server: routescript"
    capture = _Capture()
    server.transport = capture
    script = compile_script(parse_text(ROUTE, "bench.cfg"), build_registry(server.modules))
    return server, capture, script


def bench_bare(data: list[bytes], seconds: float) -> float:
    n, i, end = 0, 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        for _ in range(200):
            msg = parse_message(data[i])
            build_reply(msg, 200, "OK", to_tag="rs.1").to_bytes()
            i = (i + 1) % len(data)
        n += 200
    return n / (time.perf_counter() - start)


async def bench_script(data: list[bytes], seconds: float) -> float:
    server, capture, script = _server()
    route = script.get("request")
    source = Source("udp", server.sockets[0], "192.0.2.10", 5060)
    # the route must really answer: OPTIONS 200, SUBSCRIBE 200
    for raw in data[:2]:
        ctx = MsgContext(msg=parse_message(raw), source=source, server=server)
        assert await route(ctx) == 0 and ctx.failure is None, ctx.failure
        assert capture.last.startswith(b"SIP/2.0 200 OK"), capture.last[:40]
    n, i, end = 0, 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        for _ in range(200):
            ctx = MsgContext(msg=parse_message(data[i]), source=source, server=server)
            await route(ctx)
            i = (i + 1) % len(data)
        n += 200
    return n / (time.perf_counter() - start)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    data = datagrams(20000)
    bare = bench_bare(data, seconds)
    scripted = asyncio.run(bench_script(data, seconds))
    print(f"bare SIP layer (parse + 200 reply):          {bare:10.0f} msgs/s")
    print(f"30-statement route (parse + script + reply): {scripted:10.0f} msgs/s")
    print(f"script overhead: {1e6 / scripted - 1e6 / bare:.1f} us per message")


if __name__ == "__main__":
    main()
