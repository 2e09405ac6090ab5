"""proto_ws - SIP over WebSocket (RFC 7118), OpenSIPS's proto_ws module.

    loadmodule "proto_ws.so"
    socket = ws:127.0.0.1:8080
    modparam("proto_ws", "require_origin", 1)
    modparam("proto_ws", "allowed_origins", "https://phone.example.com")   # ours

The transport itself is routescript.transport.ws (the `websockets` library's sans-IO protocol under
an asyncio adapter); this module holds its parameters, which the core hands to the transport layer
before the sockets are bound (docs/modules/proto_ws.md).
"""

from __future__ import annotations

import re
from typing import Any

from routescript.core.module import Module, Param

NO_CLIENT = ("routescript accepts WebSocket connections and never opens one (OpenSIPS's WebSocket client "
              "side is not built)")
_NO_TRACING = "no tracing: proto_hep is not built"

# RFC 6454 7.1: origin = scheme "://" host [ ":" port ] (serialized, no path); "null" for opaque ones.
_ORIGIN = re.compile(r"^(?:null|[a-zA-Z][a-zA-Z0-9+.-]*://(?:\[[0-9a-fA-F:.]+\]|[^\s/:\[\]]+)(?::\d{1,5})?)$")


def parse_origins(text: str) -> tuple[str, ...]:
    """allowed_origins: origins separated by commas or blanks; ValueError for one that is not an
    origin (a path, a wildcard)."""
    origins = tuple(o for o in re.split(r"[,\s]+", text.strip()) if o)
    for origin in origins:
        if not _ORIGIN.match(origin):
            raise ValueError(f"allowed_origins: {origin!r} is not an origin (scheme://host[:port], as "
                             "browsers send in the Origin header)")
    return origins


def check_origins(text: str) -> None:
    parse_origins(text)


def at_least(low: int) -> Any:
    def check(value: int) -> None:
        if value < low:
            raise ValueError(f"expects at least {low}, got {value}")
    return check


class ProtoWsModule(Module):
    name = "proto_ws"
    params = (
        Param("ws_port", int, 80, "default port of a ws socket line without one", later=(
            "write the port on the socket line (socket = ws:IP:PORT); " + NO_CLIENT)),
        Param("ws_max_msg_chunks", int, 4, "WebSocket frames one SIP message may arrive in",
              check=at_least(1)),
        Param("ws_send_timeout", int, 100, "ms a peer may leave our writes unread (0: no limit)",
              check=at_least(0)),
        Param("ws_handshake_timeout", int, 100, "ms from the first bytes of the upgrade request to its "
              "end (0: no limit)", check=at_least(0)),
        Param("ws_resource", str, "/", "the resource our WebSocket client asks for", later=NO_CLIENT),
        Param("require_origin", int, 1, "refuse an upgrade request without an Origin header"),
        Param("allowed_origins", str, "", "ours: the Origins accepted (empty: any)",
              check=check_origins),
        Param("trace_destination", str, "", "HEP tracing", later=_NO_TRACING),
        Param("trace_on", int, 0, "HEP tracing", later=_NO_TRACING),
        Param("trace_filter_route", str, "", "HEP tracing", later=_NO_TRACING),
    )

    def ws_options(self) -> dict[str, Any]:
        """routescript.transport.ws.WsOptions's fields (the core makes it: modules do not import
        transport)."""
        return {
            "max_msg_chunks": self.param("ws_max_msg_chunks"),
            "require_origin": bool(self.param("require_origin")),
            "allowed_origins": parse_origins(self.param("allowed_origins")),
            "handshake_timeout": self.param("ws_handshake_timeout") / 1000,
            "send_timeout": self.param("ws_send_timeout") / 1000,
        }


MODULE = ProtoWsModule
