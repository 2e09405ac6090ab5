"""httpd - the HTTP server other modules hang their pages on (OpenSIPS httpd module).

    loadmodule "httpd.so"
    modparam("httpd", "ip", "127.0.0.1")    # the default: loopback only
    modparam("httpd", "port", 8888)         # default 8888

Default address: OpenSIPS's httpd binds every address when `ip` is unset (its default is ""); ours
is 127.0.0.1. What hangs on httpd here is MI (mi_http: every subscription's Call-ID, tags and
Contact, `kill`, `reload_routes`) and prometheus, none of which has its own access control in
OpenSIPS; an address that a configuration did not ask for should not expose them. Set `ip` to "" (or
"0.0.0.0" / "::") to serve every address as OpenSIPS does; mi_http then logs a warning unless it
has users for basic authentication (docs/modules/mi_http.md).

Modules register a root path, as OpenSIPS's `register_httpdcb(module, root, ...)`: a request for
`/<root>` or `/<root>/...` goes to that module's handler (`mi_http` takes `/mi`, `prometheus`
`/metrics`); other paths get 404. The listener is an aiohttp server on the server's event loop,
opened in start() and closed in stop(); nothing listens unless this module is loaded.

OpenSIPS refuses ports below 1024; so do we, except port 0, which picks a free port (for tests; the
real one is logged and kept in `.port`). buf_size / post_buf_size / receive_buf_size are libmicrohttpd
buffer sizes in OpenSIPS; we accept them, and a request body is bounded by MAX_BODY instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from routescript.core.module import ConfigError, Module, Param, mi_command

if TYPE_CHECKING:
    from routescript.core.host import ModuleHost

log = logging.getLogger("routescript.httpd")

Handler = Callable[[Any], Awaitable[Any]]  # aiohttp.web.Request -> aiohttp.web.StreamResponse

MAX_BODY = 1 << 20  # bytes of one request body (STYLE 7)


def _check_port(value: int) -> None:
    if value != 0 and not 1024 <= value <= 65535:
        raise ValueError(f"port {value} is not accepted (1024..65535, or 0 for any free port)")


def bind_httpd(server: ModuleHost) -> HttpdModule | None:
    """The httpd module instance of a server (what mi_http and prometheus register their roots with),
    or None when it is not loaded."""
    found = server.modules.get("httpd")
    return found if isinstance(found, HttpdModule) else None


class HttpdModule(Module):
    name = "httpd"
    runs_in = "supervisor"   # one HTTP listener per server, for mi_http and prometheus (docs/workers.md)
    params = (
        Param("ip", str, "127.0.0.1", "address to listen on; empty: all addresses (OpenSIPS's default)"),
        Param("port", int, 8888, "TCP port to listen on", check=_check_port),
        Param("buf_size", int, 0, "accepted for compatibility (libmicrohttpd reply buffer)"),
        Param("post_buf_size", int, 1024, "accepted for compatibility (libmicrohttpd POST buffer)"),
        Param("receive_buf_size", int, 1024, "accepted for compatibility"),
    )

    def __init__(self, server: ModuleHost, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._roots: dict[str, tuple[str, Handler]] = {}
        self._runner: Any = None
        self.host: str = ""
        self.port: int = 0

    def check(self) -> None:
        ip = self.param("ip")
        if ip and any(c.isspace() for c in ip):
            raise ConfigError(f"modparam(\"httpd\", \"ip\"): bad address \"{ip}\"")

    # ---------------------------------------------------------------- OpenSIPS httpd API
    def register_httpdcb(self, module: str, root: str, handler: Handler) -> None:
        """Send requests for `/root` and `/root/...` to `handler(request)`. A root taken twice is a
        configuration error (OpenSIPS refuses it at start-up too)."""
        root = root.strip("/")
        if not root or "/" in root:
            raise ConfigError(f"module {module}: bad http root \"{root}\"")
        if root in self._roots and self._roots[root][0] != module:
            raise ConfigError(f"module {module}: http root \"/{root}\" already taken by "
                              f"{self._roots[root][0]}")
        self._roots[root] = (module, handler)

    def unregister_httpdcb(self, root: str) -> None:
        self._roots.pop(root.strip("/"), None)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        from aiohttp import web

        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host = self.param("ip") or None  # None: every address, as OpenSIPS with ip unset
        site = web.TCPSite(runner, host, self.param("port"), reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"httpd: cannot listen on {self.param('ip') or '*'}:{self.param('port')}: "
                              f"{exc.strerror or exc}") from None
        self._runner = runner
        addrs = runner.addresses
        self.host, self.port = (addrs[0][0], addrs[0][1]) if addrs else (host or "", self.param("port"))
        log.info("httpd listening on http://%s:%d/", self.host if ":" not in self.host else f"[{self.host}]",
                 self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @property
    def url(self) -> str:
        """http://host:port (the real port once started)."""
        host = self.host or self.param("ip") or "127.0.0.1"
        if host in ("0.0.0.0", "::"):  # noqa: S104 - bound to every interface: reach it on loopback
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port or self.param('port')}"

    async def _dispatch(self, request: Any) -> Any:
        from aiohttp import web

        root = request.path.lstrip("/").split("/", 1)[0]
        entry = self._roots.get(root)
        if entry is None:
            return web.Response(status=404, text="Not Found\n")
        return await entry[1](request)

    # ---------------------------------------------------------------- MI
    @mi_command("httpd_list_root_path", workers="supervisor", doc="lists all the registered http root paths")
    def mi_list_root_path(self) -> dict[str, Any]:
        return {"Roots": [{"http_root": root, "module": mod} for root, (mod, _h) in self._roots.items()]}


MODULE = HttpdModule
