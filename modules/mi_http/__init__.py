"""mi_http - MI as JSON-RPC 2.0 over HTTP POST (OpenSIPS mi_http module).

    loadmodule "httpd.so"
    loadmodule "mi_http.so"
    modparam("httpd", "port", 8888)
    modparam("mi_http", "root", "mi")        # POST http://<ip>:<port>/mi

As OpenSIPS's mi_json_answer_to_connection: a method other than POST gets 405, an empty body 400,
a notification (no "id") 202 with no body; every JSON-RPC reply, errors included, is HTTP 200 with
Content-Type application/json. pretty_printing = 1 indents the JSON.

enable_kill (ours, default 0): whether the `kill` MI command may stop the server over HTTP.
"""

from __future__ import annotations

import logging
from typing import Any

from routescript.core.module import ConfigError, Module, Param

log = logging.getLogger("routescript.mi_http")

_TRACE_LATER = "MI tracing needs proto_hep, which routescript does not have"


class MiHttpModule(Module):
    name = "mi_http"
    depends = ("httpd",)
    params = (
        Param("root", str, "mi", "the HTTP root path MI is served under"),
        Param("pretty_printing", int, 0, "indent the JSON replies"),
        Param("enable_kill", int, 0, "allow the `kill` MI command over HTTP"),
        Param("trace_destination", str, None, later=_TRACE_LATER),
        Param("trace_bwlist", str, None, later=_TRACE_LATER),
    )

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.registry: Any = None

    def check(self) -> None:
        root = (self.param("root") or "").strip("/")
        if not root or "/" in root:
            raise ConfigError(f"modparam(\"mi_http\", \"root\"): bad root \"{self.param('root')}\"")

    async def start(self) -> None:
        from routescript.mi import mi_registry

        httpd = self.server.modules.get("httpd")
        if httpd is None:  # depends= makes the loader refuse this already
            raise ConfigError("mi_http needs the httpd module")
        self.registry = mi_registry(self.server)
        httpd.register_httpdcb(self.name, self.param("root"), self.handle)

    async def stop(self) -> None:
        httpd = self.server.modules.get("httpd")
        if httpd is not None:
            httpd.unregister_httpdcb(self.param("root"))

    async def handle(self, request: Any) -> Any:
        """One HTTP request -> its HTTP response."""
        from aiohttp import web

        from routescript.mi.jsonrpc import handle_payload

        if request.method != "POST":
            return web.Response(status=405, text="405 Method Not Allowed\n", headers={"Allow": "POST"})
        body = await request.read()
        if not body:
            return web.Response(status=400, text="400 Bad Request\n")
        allow_kill = bool(self.param("enable_kill"))

        async def dispatch(name: str, params: Any) -> Any:
            return await self.registry.dispatch(name, params, allow_kill=allow_kill)

        reply = await handle_payload(body, dispatch, pretty=bool(self.param("pretty_printing")))
        if reply is None:
            return web.Response(status=202)
        # OpenSIPS sends exactly "application/json" (no charset parameter); the body is UTF-8.
        return web.Response(status=200, body=reply.encode("utf-8"),
                            headers={"Content-Type": "application/json"})


MODULE = MiHttpModule
