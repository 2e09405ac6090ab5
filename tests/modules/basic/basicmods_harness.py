"""A server without sockets for the basic modules' tests: real modules, real TransactionLayer, and a
transport that records what would be sent."""

from __future__ import annotations

from typing import Any

from routescript.core.loader import LoadModule, ModParam, apply_modparams, instantiate, load_modules
from routescript.core.server import Server
from routescript.script.context import MsgContext
from routescript.sip import parse_message
from routescript.transaction import TransactionLayer
from routescript.transport.address import Destination, SocketInfo, Source

SOCK = SocketInfo("udp", "127.0.0.1", 5060)
SRC = Source("udp", SOCK, "127.0.0.1", 40000)


class RecordingTransport:
    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.sent: list[tuple[bytes, Any]] = []

    def send_reply(self, response: Any, source: Any, dest: Any = None) -> None:
        self.replies.append(response)

    def send(self, data: bytes, dest: Any) -> None:
        self.sent.append((data, dest))

    def reply_destination(self, response: Any, source: Any) -> Destination:
        return Destination(source.proto, source.remote_host, source.remote_port, source.conn_id,
                           source.socket)

    async def deliver(self, data: bytes, dest: Any) -> None:
        self.sent.append((data, dest))

    async def close(self) -> None:
        pass


class Harness:
    def __init__(self, modules: list[str], modparams: list[tuple[str, str, Any]] = ()) -> None:  # type: ignore[assignment]
        self.server = Server()
        classes = load_modules([LoadModule(m, m + ".so") for m in modules])
        values = apply_modparams(classes, [ModParam(m, p, v) for m, p, v in modparams])
        self.server.modules = instantiate(classes, values, self.server)
        self.transport = RecordingTransport()
        self.server.transport = self.transport
        self.server.transactions = TransactionLayer(self.transport)
        self.server.sockets = [SOCK]
        self.functions = {f.name: f for m in self.server.modules.instances.values() for f in m.functions()}

    def ctx(self, raw: bytes | str) -> MsgContext:
        if isinstance(raw, str):
            raw = raw.replace("\n", "\r\n").encode()
        return MsgContext(msg=parse_message(raw), source=SRC, server=self.server)

    def call(self, ctx: MsgContext, name: str, *args: Any) -> Any:
        spec = self.functions[name]
        fixed = []
        for arg, aspec in zip(args, spec.args, strict=False):
            fixed.append(aspec.fixup(arg) if aspec.fixup is not None and arg is not None else arg)
        return spec.impl(ctx, *fixed)


def request(method: str = "OPTIONS", *, extra: str = "", to_tag: str = "", body: str = "",
            branch: str = "z9hG4bKtest1", ruri: str = "sip:bob@127.0.0.1") -> str:
    tt = f";tag={to_tag}" if to_tag else ""
    return (f"{method} {ruri} SIP/2.0\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:40000;branch={branch}\n"
            "From: <sip:alice@127.0.0.1>;tag=a1\n"
            f"To: <sip:bob@127.0.0.1>{tt}\n"
            "Call-ID: call-1@test\n"
            f"CSeq: 1 {method}\n"
            f"{extra}"
            f"Content-Length: {len(body)}\n\n{body}")

