"""The server's transport made from the core parameters (TCP bounds, keepalive, the WebSocket and TLS
modules' options), on listen= sockets it binds or on sockets a supervisor bound (a worker adopts them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from routescript.transport import TransportLayer
from routescript.transport.keepalive import KeepAlive
from routescript.transport.ws import WsOptions

from .loading import Diagnostic, LoadError

if TYPE_CHECKING:
    import socket

    from routescript.transport.layer import OnMessage

    from .close_stack import CloseStack
    from .lifecycle import StartingServer

# What makes the server's transport: CountingTransportLayer's signature (counters, on_message, **bounds).
TransportFactory = Callable[..., TransportLayer]


class TransportSetup:
    """Makes server.transport, its messages going straight to `on_message` (the dispatcher)."""

    def __init__(self, server: StartingServer, on_message: OnMessage) -> None:
        self._server = server
        self._on_message = on_message

    def make(self, conn_id_base: int = 0, make: TransportFactory | None = None) -> TransportLayer:
        """The transport with the core parameters' bounds (a worker's: its connection ids above
        `conn_id_base`, global across workers). `make`: another CountingTransportLayer class (or a
        factory with its arguments), a simulated network's."""
        from .counting import CountingTransportLayer

        server = self._server
        cfg = server.config
        transport = (make or CountingTransportLayer)(
            server.counters, self._on_message,
            tcp_idle_timeout=float(cfg.get("tcp_connection_lifetime")),
            max_tcp_connections=int(cfg.get("tcp_max_connections")),
            max_tcp_connections_per_ip=int(cfg.get("tcp_max_connections_per_ip")),
            tcp_trusted_sources=cfg.tcp_trusted_sources,
            tcp_max_msg_time=float(cfg.get("tcp_max_msg_time")),
            tcp_connect_timeout=cfg.tcp_connect_timeout,
            udp_buffer=int(cfg.get("maxbuffer")), conn_id_base=conn_id_base, tls=self._tls_provider())
        if cfg.get("tcp_keepalive"):
            transport.tcp_keepalive = KeepAlive(cfg.get("tcp_keepidle"), cfg.get("tcp_keepinterval"),
                                                cfg.get("tcp_keepcount"))
        proto_ws = server.modules.get("proto_ws")
        # proto_ws and proto_wss are found by name, as tm: the core does not import modules/
        if proto_ws is not None and hasattr(proto_ws, "ws_options"):
            transport.ws_options = WsOptions(**proto_ws.ws_options())
        proto_wss = server.modules.get("proto_wss")
        if proto_wss is not None and hasattr(proto_wss, "wss_options") and \
                hasattr(proto_wss, "tls_transport"):
            transport.wss_options = WsOptions(**proto_wss.wss_options())
            transport.wss_tls = proto_wss.tls_transport()
        server.transport = transport
        return transport

    def _tls_provider(self) -> Any:
        """proto_tls's TLS provider (tls_mgm's contexts) when it is loaded, else None (no TLS). Found by
        name: the core does not import modules/, so it asks for proto_tls's one hook."""
        proto_tls = self._server.modules.get("proto_tls")
        if proto_tls is not None and hasattr(proto_tls, "tls_transport"):
            return proto_tls.tls_transport()
        return None

    async def adopt_sockets(self, closing: CloseStack, sockets: Sequence[tuple[socket.socket, bool, str]], *,
                            conn_id_base: int = 0) -> TransportLayer:
        """A worker's transport on the sockets its supervisor bound (each with whether it reads it, and
        the transport it serves)."""
        transport = self.make(conn_id_base)
        closing.push("the SIP sockets", transport.close)
        for sock, read, proto in sockets:
            self._server.sockets.append(await transport.adopt(sock, read=read, proto=proto))
        return transport

    async def bind_sockets(self, closing: CloseStack, make: TransportFactory | None = None) -> TransportLayer:
        """The transport (its messages go straight to the dispatcher) and every listen= socket."""
        server = self._server
        cfg = server.config
        transport = self.make(make=make)
        closing.push("the SIP sockets", transport.close)
        for spec in cfg.listen_specs():
            try:
                info = await transport.bind(spec.proto, spec.host, spec.port)
            except OSError as exc:
                raise LoadError([Diagnostic(f"cannot listen on {spec.name}: {exc.strerror or exc}",
                                            spec.pos)]) from None
            server.sockets.append(info)
        return transport
