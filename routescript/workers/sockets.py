"""The SIP sockets a supervisor binds once, before forking, for every worker to inherit
(docs/workers.md, section 1, "Sockets": one fd per `socket=`, not SO_REUSEPORT)."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from routescript.core.config import ListenSpec
from routescript.core.loading import Diagnostic, LoadError
from routescript.sip import SocketInfo
from routescript.sip.hosts import bare_host
from routescript.transport.probe import share_drain

from .plan import WorkerPlan

TCP_BACKLOG = 1024


@dataclass(slots=True)
class BoundSocket:
    spec: ListenSpec
    sock: socket.socket
    readers: int   # workers 0..readers-1 read it

    @property
    def name(self) -> str:
        """proto:host:port with the real port (port 0 in the script picks a free one)."""
        return f"{self.spec.proto}:{self.spec.host}:{self.sock.getsockname()[1]}"


class WorkerSockets:
    """Every SIP socket of the plan, bound in the supervisor; closed there only when the server stops
    (a restarted worker inherits them again)."""

    def __init__(self, bound: list[BoundSocket]) -> None:
        self.bound = bound

    @classmethod
    def bind(cls, plan: WorkerPlan) -> WorkerSockets:
        """Bind every socket of `plan`; LoadError naming the socket (and closing the others) when one
        cannot be bound, as `routescript run` reports it without workers."""
        bound: list[BoundSocket] = []
        try:
            for readers in plan.readers:
                bound.append(BoundSocket(readers.spec, _bind(readers.spec), readers.workers))
                sock = bound[-1].sock
                if sock.type == socket.SOCK_DGRAM:   # its workers' queue probes share what they read back
                    share_drain(bare_host(str(sock.getsockname()[0])), int(sock.getsockname()[1]))
        except OSError as exc:
            for b in bound:
                b.sock.close()
            spec = plan.readers[len(bound)].spec
            raise LoadError([Diagnostic(f"cannot listen on {spec.name}: {exc.strerror or exc}",
                                        spec.pos)]) from None
        return cls(bound)

    def of(self, slot: int) -> list[tuple[socket.socket, bool, str]]:
        """What worker `slot` adopts: every socket (it sends from any), each with whether it reads it and
        the transport it serves (udp, tcp, tls, ws, wss: a listening stream socket does not say)."""
        return [(b.sock, slot < b.readers, b.spec.proto) for b in self.bound]

    def infos(self) -> list[SocketInfo]:
        """Every socket as a worker names it when it adopts it (transport.adopt: the bound address)."""
        return [SocketInfo(b.spec.proto, bare_host(str(address[0])), int(address[1]))
                for b in self.bound for address in [b.sock.getsockname()]]

    def names_read_by(self, slot: int) -> list[str]:
        return [b.name for b in self.bound if slot < b.readers]

    def close(self) -> None:
        for b in self.bound:
            b.sock.close()


def _bind(spec: ListenSpec) -> socket.socket:
    """A bound UDP socket or a listening TCP socket for `spec` (every address the name resolves to is
    tried, as the single-process transport does)."""
    kind = socket.SOCK_DGRAM if spec.proto == "udp" else socket.SOCK_STREAM
    error: OSError | None = None
    for family, type_, proto, _name, addr in socket.getaddrinfo(spec.host, spec.port, type=kind):
        sock = socket.socket(family, type_, proto)
        try:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            if kind == socket.SOCK_STREAM:
                sock.listen(TCP_BACKLOG)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError(f"cannot resolve {spec.host}")
