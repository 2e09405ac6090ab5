"""proto_tls - SIP over TLS (RFC 3261 26.2): `socket=tls:IP:PORT` listeners and TLS connections to sips: and
;transport=tls destinations, on the transport layer's TCP connections with the SSL contexts of tls_mgm
(docs/modules/proto_tls.md)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from routescript.core.module import ConfigError, Module, Param
from routescript.sip.address import Destination, SocketInfo

_TRACE = "TLS tracing (proto_hep) is not implemented"
_REUSE = "connections are reused by address (cert_check_on_conn_reusage is not implemented)"
_PORT = ("the default port of tls sockets and sips:/;transport=tls destinations is 5061 (RFC 3261 19.1.2); "
         "another tls_port is not implemented: write the port in the socket= line / URI")


def _positive(value: Any) -> None:
    if int(value) <= 0:
        raise ValueError(f"must be a positive number of milliseconds, got {value}")


@dataclass(frozen=True, slots=True)
class TlsTransport:
    """What the transport layer asks of TLS (routescript.transport.tls.TlsProvider): tls_mgm's contexts
    and proto_tls's handshake timeout."""

    contexts: Any   # modules/tls_mgm/contexts.py TlsContexts
    handshake_timeout: float

    def server_context(self, socket: SocketInfo) -> ssl.SSLContext:
        return self.contexts.server_context(socket)  # type: ignore[no-any-return]

    def client_context(self, dest: Destination, server_name: str | None = None) -> ssl.SSLContext:
        return self.contexts.client_context(dest, server_name)  # type: ignore[no-any-return]


class ProtoTlsModule(Module):
    name = "proto_tls"
    depends = ("tls_mgm",)
    params = (
        Param("tls_port", int, 5061, "default TLS port", later=_PORT),
        Param("tls_handshake_timeout", int, 100, "ms a handshake may take (accept and connect)",
              check=_positive),
        Param("tls_send_timeout", int, 100, "accepted; writes are buffered and bounded by the write buffer",
              check=_positive),
        Param("tls_max_msg_chunks", int, 4, "accepted; a message must arrive whole within tcp_max_msg_time"),
        Param("tls_crlf_pingpong", int, 1, "CRLF keep-alives are answered (1 only)",
              later="CRLF keep-alives are always answered (RFC 5626 3.5.1)"),
        Param("tls_crlf_drop", int, 0, "0 only", later="single CRLFs between messages are always ignored"),
        Param("tls_async", int, 1, "accepted; all I/O is asynchronous here"),
        Param("tls_async_max_postponed_chunks", int, 32, "accepted; writes are bounded by the write buffer"),
        Param("cert_check_on_conn_reusage", int, 0, "0 only", later=_REUSE),
        Param("trace_destination", str, "", "not implemented", later=_TRACE),
        Param("trace_on", int, 0, "not implemented", later=_TRACE),
        Param("trace_filter_route", str, "", "not implemented", later=_TRACE),
    )

    def tls_transport(self) -> TlsTransport:
        """The TLS provider of the transport layer (the core asks for it when it makes the transport)."""
        tls_mgm = self.server.modules.get("tls_mgm")
        if tls_mgm is None:   # `depends` makes this a load error first
            raise ConfigError("proto_tls needs tls_mgm")
        return TlsTransport(tls_mgm.contexts, self.param("tls_handshake_timeout") / 1000.0)  # type: ignore[attr-defined]


MODULE = ProtoTlsModule
