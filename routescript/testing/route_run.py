"""Run a route of a small script over one parsed request, in process: the script compiled by the real
loader (`Server().load`), the request built from a few fields. What the routing and rr unit tests use;
a user can test a route of their own the same way."""

from __future__ import annotations

from pathlib import Path

from routescript.core.server import Server
from routescript.script.context import REQUEST_ROUTE, MsgContext
from routescript.sip import SIPRequest, SocketInfo, Source, parse_message

UDP_SOCK = SocketInfo("udp", "127.0.0.1", 5070)
TCP_SOCK = SocketInfo("tcp", "127.0.0.1", 5070)
SOCKETS = "socket = udp:127.0.0.1:5070\nsocket = tcp:127.0.0.1:5070\n"


def load(tmp_path: Path, text: str, *, sockets: str = SOCKETS, name: str = "t.cfg") -> Server:
    """A Server with `text` loaded (after the socket lines), its sockets set as start() would."""
    path = tmp_path / name
    path.write_text(sockets + text)
    server = Server()
    server.load(str(path))
    server.sockets = [UDP_SOCK, TCP_SOCK]
    return server


def request(method: str = "INVITE", *, ruri: str = "sip:0049301234@127.0.0.1:5070", extra: str = "",
            to_tag: str = "", from_tag: str = "a1", via: str = "SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKt1"
            ) -> SIPRequest:
    tt = f";tag={to_tag}" if to_tag else ""
    raw = (f"{method} {ruri} SIP/2.0\r\n"
           f"Via: {via}\r\n"
           f"From: <sip:alice@10.0.0.5>;tag={from_tag}\r\n"
           f"To: <sip:bob@example.com>{tt}\r\n"
           "Call-ID: c1@test\r\n"
           f"CSeq: 1 {method}\r\n"
           "Max-Forwards: 70\r\n"
           f"{extra}"
           "Content-Length: 0\r\n\r\n").encode()
    msg = parse_message(raw)
    assert isinstance(msg, SIPRequest)
    return msg


def source(sock: SocketInfo = UDP_SOCK, host: str = "10.0.0.5", port: int = 40000) -> Source:
    return Source(sock.proto, sock, host, port, 7 if sock.proto == "tcp" else None)


async def run(server: Server, msg: SIPRequest, src: Source | None = None, route: str = REQUEST_ROUTE,
              name: str | None = None) -> MsgContext:
    ctx = MsgContext(msg=msg, source=src or source(), server=server, route_type=route)
    assert server.script is not None
    await server.script.run(route, name, ctx)
    return ctx
