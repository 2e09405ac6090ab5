"""mi_http - MI as JSON-RPC 2.0 over HTTP POST (OpenSIPS mi_http module).

    loadmodule "httpd.so"
    loadmodule "mi_http.so"
    modparam("httpd", "port", 8888)
    modparam("mi_http", "root", "mi")        # POST http://<ip>:<port>/mi

As OpenSIPS's mi_json_answer_to_connection: a method other than POST gets 405, an empty body 400,
a notification (no "id") 202 with no body; every JSON-RPC reply, errors included, is HTTP 200 with
Content-Type application/json. pretty_printing = 1 indents the JSON.

enable_kill (ours, default 0): whether the `kill` MI command may stop the server over HTTP.

HTTP basic authentication (ours; OpenSIPS's mi_http has none and leaves access control to httpd's
`ip` and the network). With at least one user configured, every request must carry the
credentials of one of them, else 401 with `WWW-Authenticate: Basic realm="<auth_realm>"`:

    modparam("mi_http", "auth_user", "admin:$scrypt$n=16384,r=8,p=1$SALT$KEY")   # may repeat
    modparam("mi_http", "auth_users_file", "/etc/routescript/mi_http.users")   # name:hash lines
    modparam("mi_http", "auth_realm", "routescript MI")                        # the default

`routescript hash-password [USER]` makes the hash. Passwords are checked with scrypt in a worker
thread (tens of ms each, never on the event loop), at most MAX_VERIFYING at once (more: 503 with
Retry-After); a name/password pair already verified is remembered (a keyed digest of it, at most
VERIFIED_CACHE pairs), so a client sending its credentials with every request costs one derivation.
Clients: `routescript mi --user NAME` (password from --password-file or a prompt) or a URL
`http://NAME:PASSWORD@host:port/mi` (curl, aiohttp and our client take that form).

At start, MI served beyond loopback (httpd's ip is not a loopback address) with no user configured
logs a warning naming the address.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import os
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from routescript.core.module import ConfigError, Module, Param
from routescript.modules.httpd import bind_httpd

if TYPE_CHECKING:
    from routescript.core.host import ModuleHost

log = logging.getLogger("routescript.mi_http")

_TRACE_LATER = "MI tracing needs proto_hep, which routescript does not have"

MAX_VERIFYING = 4        # password checks running at once (each a scrypt in a thread); more get 503
VERIFIED_CACHE = 64      # name/password pairs remembered as verified
MAX_USERS_FILE = 1 << 20  # bytes of auth_users_file
FAILURE_LOG_INTERVAL = 10.0  # seconds between two log lines about refused credentials


def is_loopback(host: str) -> bool:
    """Whether `host` (httpd's ip; "" means every address) reaches only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # "" (every address) or a name: may be reachable from elsewhere


class MiHttpModule(Module):
    name = "mi_http"
    runs_in = "supervisor"   # one MI listener per server: the supervisor answers or forwards it
    depends = ("httpd",)
    params = (
        Param("root", str, "mi", "the HTTP root path MI is served under"),
        Param("pretty_printing", int, 0, "indent the JSON replies"),
        Param("enable_kill", int, 0, "allow the `kill` MI command over HTTP"),
        Param("auth_user", str, None, "name:$scrypt$... - a user allowed to call MI", multi=True),
        Param("auth_users_file", str, None, "a file of name:$scrypt$... lines (basic auth users)"),
        Param("auth_realm", str, "routescript MI", "the realm of the basic auth challenge"),
        Param("trace_destination", str, None, later=_TRACE_LATER),
        Param("trace_bwlist", str, None, later=_TRACE_LATER),
    )

    def __init__(self, server: ModuleHost, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self.registry: Any = None
        from routescript.mi.auth import Users

        self.users = Users()
        self._verifying = 0
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._cache_key = os.urandom(32)  # the cache holds keyed digests, never passwords
        self._refused = 0
        self._refused_logged_at = -FAILURE_LOG_INTERVAL

    def check(self) -> None:
        root = (self.param("root") or "").strip("/")
        if not root or "/" in root:
            raise ConfigError(f"modparam(\"mi_http\", \"root\"): bad root \"{self.param('root')}\"")
        self._load_users()

    def _load_users(self) -> None:
        from routescript.mi.auth import AuthConfigError

        realm = self.param("auth_realm") or ""
        if not realm or '"' in realm or "\\" in realm or not realm.isprintable():
            raise ConfigError(f"modparam(\"mi_http\", \"auth_realm\"): bad realm \"{realm}\"")
        entries = self.param("auth_user") or []
        try:
            for entry in entries if isinstance(entries, list) else [entries]:
                self.users.add_entry(entry, 'modparam("mi_http", "auth_user")')
            path = self.param("auth_users_file")
            if path:
                try:
                    with open(path, encoding="utf-8") as f:
                        text = f.read(MAX_USERS_FILE + 1)
                except OSError as exc:
                    raise AuthConfigError(f"modparam(\"mi_http\", \"auth_users_file\"): cannot read {path}: "
                                          f"{exc.strerror or exc}") from None
                if len(text) > MAX_USERS_FILE:
                    raise AuthConfigError(f"{path}: larger than {MAX_USERS_FILE} bytes")
                self.users.add_file_text(text, path)
                if not self.users:
                    raise AuthConfigError(f"{path}: no user in it (MI would be open to everyone)")
        except AuthConfigError as exc:
            raise ConfigError(str(exc)) from None

    async def start(self) -> None:
        from routescript.mi import mi_registry

        httpd = bind_httpd(self.server)
        if httpd is None:  # depends= makes the loader refuse this already
            raise ConfigError("mi_http needs the httpd module")
        self.registry = mi_registry(self.server)
        httpd.register_httpdcb(self.name, self.param("root"), self.handle)
        host = httpd.host or httpd.param("ip") or ""
        if not self.users and not is_loopback(host):
            port = httpd.port or httpd.param("port")
            shown = host if host not in ("", "0.0.0.0", "::") else f"{host or '*'} (every address)"  # noqa: S104
            log.warning("MI is served over HTTP on %s port %s, beyond loopback, without authentication: "
                        "whoever reaches it can list every subscription and run every MI command. Set "
                        "modparam(\"mi_http\", \"auth_user\", ...) (see `routescript hash-password`) or "
                        "modparam(\"httpd\", \"ip\", \"127.0.0.1\")", shown, port)

    async def stop(self) -> None:
        httpd = bind_httpd(self.server)
        if httpd is not None:
            httpd.unregister_httpdcb(self.param("root"))

    async def handle(self, request: Any) -> Any:
        """One HTTP request -> its HTTP response."""
        from aiohttp import web

        from routescript.mi.jsonrpc import handle_payload

        if self.users:
            refused = await self._authenticate(request)
            if refused is not None:
                return refused
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


    # ---------------------------------------------------------------- basic authentication
    async def _authenticate(self, request: Any) -> Any:
        """None when the request carries a configured user's credentials, else the response to send."""
        from aiohttp import web

        from routescript.mi.auth import parse_basic

        challenge = {"WWW-Authenticate": f'Basic realm="{self.param("auth_realm")}", charset="UTF-8"'}
        creds = parse_basic(request.headers.get("Authorization"))
        if creds is None:
            return web.Response(status=401, text="401 Unauthorized\n", headers=challenge)
        name, password = creds
        digest = hmac.new(self._cache_key, f"{name}\0{password}".encode(), hashlib.sha256).digest()
        if digest in self._verified:
            self._verified.move_to_end(digest)
            return None
        if self._verifying >= MAX_VERIFYING:
            log.warning("mi_http: %d password checks already running; 503 to %s", self._verifying,
                        request.remote)
            return web.Response(status=503, text="503 Service Unavailable\n", headers={"Retry-After": "1"})
        self._verifying += 1
        try:
            ok = await asyncio.to_thread(self.users.check, name, password)
        finally:
            self._verifying -= 1
        if not ok:
            self._log_refusal(name, request.remote)
            return web.Response(status=401, text="401 Unauthorized\n", headers=challenge)
        self._verified[digest] = None
        if len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return None

    def _log_refusal(self, name: str, remote: str | None) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged_at >= FAILURE_LOG_INTERVAL:
            log.warning("mi_http: refused credentials of user \"%s\" from %s (%d refusals since the last "
                        "line)", name[:64], remote, self._refused)
            self._refused, self._refused_logged_at = 0, now


MODULE = MiHttpModule
