"""proto_wss - SIP over secure WebSocket (RFC 7118 over TLS), OpenSIPS's proto_wss module.

    loadmodule "tls_mgm.so"
    loadmodule "proto_wss.so"
    socket = wss:127.0.0.1:8443
    modparam("tls_mgm", "server_domain", "web")
    modparam("tls_mgm", "certificate", "[web]/etc/routescript/web.pem")
    modparam("tls_mgm", "private_key", "[web]/etc/routescript/web.key")

The transport is routescript.transport.ws (the WebSocket session of proto_ws) over a TlsStream with the
SSL contexts of tls_mgm, matched to the socket as for proto_tls (server_domain, SNI). This module holds
the parameters, which the core hands to the transport layer before the sockets are bound
(docs/modules/proto_wss.md).
"""

from __future__ import annotations

from typing import Any

from routescript.core.module import ConfigError, Module, Param
from routescript.modules.proto_tls import TlsTransport
from routescript.modules.proto_ws import NO_CLIENT, at_least, check_origins, parse_origins

_NO_TRACING = "no tracing: proto_hep is not built"
_REUSE = ("0 only: we never open WebSocket connections, and an accepted one is reused by its id "
          "(cert_check_on_conn_reusage applies to connections OpenSIPS opens as a client)")


def _positive(value: int) -> None:
    if value <= 0:
        raise ValueError(f"must be a positive number of milliseconds, got {value}")


class ProtoWssModule(Module):
    name = "proto_wss"
    depends = ("tls_mgm",)
    params = (
        Param("wss_port", int, 443, "default port of a wss socket line without one", later=(
            "write the port on the socket line (socket = wss:IP:PORT); " + NO_CLIENT)),
        Param("wss_max_msg_chunks", int, 4, "WebSocket frames one SIP message may arrive in",
              check=at_least(1)),
        Param("wss_resource", str, "/", "the resource our WebSocket client asks for", later=NO_CLIENT),
        Param("wss_send_timeout", int, 100, "ms a peer may leave our writes unread (0: no limit)",
              check=at_least(0)),
        Param("wss_handshake_timeout", int, 100, "ms from the first bytes of the upgrade request to its "
              "end (0: no limit)", check=at_least(0)),
        Param("wss_tls_handshake_timeout", int, 100, "ms the TLS handshake may take from the accept",
              check=_positive),
        Param("require_origin", int, 1, "refuse an upgrade request without an Origin header"),
        Param("allowed_origins", str, "", "ours: the Origins accepted (empty: any)", check=check_origins),
        Param("cert_check_on_conn_reusage", int, 0, "0 only", later=_REUSE),
        Param("trace_destination", str, "", "HEP tracing", later=_NO_TRACING),
        Param("trace_on", int, 0, "HEP tracing", later=_NO_TRACING),
        Param("trace_filter_route", str, "", "HEP tracing", later=_NO_TRACING),
    )

    def wss_options(self) -> dict[str, Any]:
        """routescript.transport.ws.WsOptions's fields for wss listeners (the core makes it: modules do
        not import transport)."""
        return {
            "max_msg_chunks": self.param("wss_max_msg_chunks"),
            "require_origin": bool(self.param("require_origin")),
            "allowed_origins": parse_origins(self.param("allowed_origins")),
            "handshake_timeout": self.param("wss_handshake_timeout") / 1000,
            "send_timeout": self.param("wss_send_timeout") / 1000,
            "tls_handshake_timeout": self.param("wss_tls_handshake_timeout") / 1000,
        }

    def tls_transport(self) -> TlsTransport:
        """The SSL contexts of wss listeners: tls_mgm's, matched per socket as for proto_tls."""
        tls_mgm = self.server.modules.get("tls_mgm")
        if tls_mgm is None:   # `depends` makes this a load error first
            raise ConfigError("proto_wss needs tls_mgm")
        timeout = self.param("wss_tls_handshake_timeout") / 1000.0
        return TlsTransport(tls_mgm.contexts, timeout)  # type: ignore[attr-defined]


MODULE = ProtoWssModule
