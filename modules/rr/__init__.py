"""rr - Record-Route and loose routing (OpenSIPS rr module), the parts a server that answers requests
itself needs.

loose_route(): for an in-dialog request whose topmost Route names us (RFC 3261 16.4), that entry is
removed and the function returns 1. When the topmost Route names someone else, $du is set to it and 1 is
returned (OpenSIPS behaviour) - forwarding it is t_relay's job, not built yet. No Route: -1.
record_route(): inserts our Record-Route (`<sip:host:port;lr>`, `;transport=tcp` on TCP) on top.
"""

from __future__ import annotations

import logging

from routescript.core.module import Arg, Module, Param, script_function
from routescript.script.context import REQUEST_ROUTE, MsgContext

log = logging.getLogger("routescript.rr")


class RrModule(Module):
    name = "rr"
    params = (
        Param("append_fromtag", int, 0, "accepted; Record-Route carries no ftag here"),
        Param("enable_double_rr", int, 1, "accepted; one socket per message here"),
        Param("add_username", int, 0, "accepted"),
        Param("enable_socket_mismatch_warning", int, 1, "accepted"),
    )

    @script_function("loose_route", routes=(REQUEST_ROUTE,))
    def loose_route(self, ctx: MsgContext) -> int:
        from routescript.sip import ParseError

        msg = ctx.msg
        if msg is None or not msg.is_request or not msg.has_header("Route"):
            return -1
        try:
            routes = msg.routes
        except ParseError as exc:
            log.error("loose_route: bad Route header: %s", exc.reason)
            return -1
        if not routes:
            return -1
        top = routes[0]
        uri = top.uri
        port = uri.port or (5061 if uri.scheme == "sips" else 5060)
        if ctx.server.is_myself(uri.host, port):
            values = msg.header_values("Route")
            msg.remove_header("Route")
            for value in reversed(values[1:]):
                msg.add_header("Route", value, first=True)
            return 1
        ctx.dst_uri = str(uri)
        return 1

    @script_function("record_route", Arg("str", "params", optional=True), routes=(REQUEST_ROUTE,))
    def record_route(self, ctx: MsgContext, params: str | None = None) -> int:
        from routescript.sip.hosts import host_for_uri

        src = ctx.source
        if src is None:
            log.error("record_route: the request did not come from a socket")
            return -1
        sock = src.socket
        uri = f"sip:{host_for_uri(sock.host)}:{sock.port};lr"
        if sock.proto == "tcp":
            uri += ";transport=tcp"
        if params:
            uri += params if params.startswith(";") else ";" + params
        ctx.msg.add_header("Record-Route", f"<{uri}>", first=True)
        return 1


MODULE = RrModule
