"""A small blocking MI client (what `routescript mi` uses): JSON-RPC over HTTP or over the MI FIFO.

    call_http("http://127.0.0.1:8888/mi", "which")            -> the result
    call_fifo("/tmp/opensips_fifo", "log_level", {"level": 4})
    params_from_args(["level=4"]) -> {"level": 4}

Errors: MIClientError (cannot reach the server, bad reply) and MIReplyError (the server answered
with a JSON-RPC error: .code, .message, .data).
"""

from __future__ import annotations

import base64
import errno
import json
import os
import select
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

from routescript.core.chroot import outside

if TYPE_CHECKING:
    from routescript.core.module import Module
    from routescript.core.server import Server

# MI commands whose one parameter is an array: positional CLI arguments become that array
# (`routescript mi get_statistics core: shmem:`), as opensips-cli does for them.
ARRAY_PARAM_COMMANDS = {"get_statistics": "statistics", "list_statistics": "statistics",
                        "reset_statistics": "statistics"}

# bytes (STYLE 7): a subs_phtable_list of 100,000 subscriptions is about 40 MB
MAX_REPLY = 256 << 20


class MIClientError(Exception):
    """The request could not be made or its reply could not be read."""


class MIReplyError(MIClientError):
    """The server answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        detail = f" ({data if isinstance(data, str) else json.dumps(data)})" if data not in (None, "") else ""
        super().__init__(f"{code}: {message}{detail}")


def _value(text: str) -> Any:
    """A CLI value: JSON arrays/objects are decoded; everything else stays a string (OpenSIPS takes
    numeric strings for integer parameters)."""
    if text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def params_from_args(args: list[str], command: str = "") -> dict[str, Any] | list[Any] | None:
    """`name=value ...` -> named params; plain values -> positional; none -> None. Mixing is an error."""
    if not args:
        return None
    named = [a for a in args if "=" in a and a.split("=", 1)[0].isidentifier()]
    if named and len(named) != len(args):
        raise MIClientError("give either all parameters as name=value or none of them")
    if named:
        return {k: _value(v) for k, v in (a.split("=", 1) for a in args)}
    if command in ARRAY_PARAM_COMMANDS:
        return [[_value(a) for a in args]]
    return [_value(a) for a in args]


def request_text(method: str, params: dict[str, Any] | list[Any] | None, req_id: int = 1) -> str:
    req: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": req_id}
    if params is not None:
        req["params"] = params
    return json.dumps(req)


def parse_reply(text: str | bytes) -> Any:
    """The reply's result, or MIReplyError / MIClientError."""
    try:
        obj = json.loads(text)
    except ValueError:
        raise MIClientError(f"reply is not JSON: {text[:200]!r}") from None
    if not isinstance(obj, dict):
        raise MIClientError(f"unexpected reply: {str(obj)[:200]}")
    err = obj.get("error")
    if isinstance(err, dict):
        raise MIReplyError(int(err.get("code", -32603)), str(err.get("message", "")), err.get("data"))
    if "result" not in obj:
        raise MIClientError("reply has neither result nor error")
    return obj["result"]


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """`http://user:pass@host:port/mi` -> ("http://host:port/mi", "user", "pass") (percent-decoded);
    a URL without user info -> (url, None, None). urllib does not send URL credentials by itself."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    bare = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return bare, urllib.parse.unquote(user), urllib.parse.unquote(password)


def basic_authorization(user: str, password: str) -> str:
    """RFC 7617 credentials for an Authorization header."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def call_http(url: str, method: str, params: dict[str, Any] | list[Any] | None = None, *,
              timeout: float = 10.0, user: str | None = None, password: str | None = None) -> Any:
    """POST one request to mi_http. Credentials: `user`/`password`, else those in the URL."""
    url, url_user, url_password = split_credentials(url)
    if user is None:
        user, password = url_user, url_password
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers["Authorization"] = basic_authorization(user, password or "")
    body = request_text(method, params).encode()
    req = urllib.request.Request(url, body, headers, method="POST")  # noqa: S310 - as below
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the operator's mi_http URL
            data = resp.read(MAX_REPLY + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            hint = ("wrong user or password" if user is not None else
                    "this server asks for a user and password (--user, or http://user:password@host/mi)")
            raise MIClientError(f"{url}: HTTP 401 Unauthorized: {hint}") from None
        raise MIClientError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MIClientError(f"cannot reach {url}: {reason} "
                            "(is routescript running with httpd and mi_http?)") from None
    if len(data) > MAX_REPLY:
        raise MIClientError("reply too large")
    return parse_reply(data)


def call_fifo(fifo: str, method: str, params: dict[str, Any] | list[Any] | None = None, *,
              reply_dir: str = "/tmp", timeout: float = 10.0) -> Any:
    """Write `:<reply>:<request>` to `fifo`, read the reply from a FIFO made in reply_dir."""
    name = f"routescript_reply_{os.getpid()}_{time.monotonic_ns()}"
    reply_path = os.path.join(reply_dir, name)
    try:
        os.mkfifo(reply_path, 0o600)
        _let_server_write(reply_path, fifo)
    except OSError as exc:
        raise MIClientError(f"cannot create reply FIFO {reply_path}: {exc.strerror or exc}") from None
    try:
        # Open our end first, non-blocking, so the server's open for writing succeeds at once.
        rfd = os.open(reply_path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            try:
                wfd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                missing = exc.errno in (errno.ENXIO, errno.ENOENT)
                hint = " (is routescript running with mi_fifo?)" if missing else ""
                raise MIClientError(f"cannot write to {fifo}: {exc.strerror or exc}{hint}") from None
            try:
                os.set_blocking(wfd, True)
                os.write(wfd, f":{name}:{request_text(method, params)}\n".encode())
            finally:
                os.close(wfd)
            return parse_reply(_read_reply(rfd, timeout))
        finally:
            os.close(rfd)
    finally:
        try:
            os.unlink(reply_path)
        except OSError:
            pass


def _let_server_write(reply_path: str, fifo: str) -> None:
    """The server opens the reply FIFO as its own user (`user=`): root hands the FIFO to the owner of the
    server's FIFO, still 0600; anybody else can only open it for writing to all (0622, as opensips-cli's
    reply FIFO; only we can read it)."""
    try:
        owner = os.stat(fifo)
    except OSError:
        return   # no server FIFO: the open below says so
    if owner.st_uid == os.geteuid():
        return
    if os.geteuid() == 0:
        os.chown(reply_path, owner.st_uid, owner.st_gid)
    else:
        os.chmod(reply_path, 0o622)   # noqa: S103 - the server must write; only we read


def _read_reply(fd: int, timeout: float) -> bytes:
    """Read until the server closes its end (it writes one reply, then closes)."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    data = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MIClientError(f"no reply within {timeout:g} s")
        events = poller.poll(remaining * 1000)
        if not events:
            continue
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            if data:
                return bytes(data)
            # POLLHUP before any byte: a writer came and went without a reply.
            raise MIClientError("the server closed the reply FIFO without a reply")
        data += chunk
        if len(data) > MAX_REPLY:
            raise MIClientError("reply too large")


def _load_config(cfg: str) -> Server:
    from routescript.core.server import LoadError, Server

    server = Server()
    try:
        server.load(cfg)
    except LoadError as exc:
        raise MIClientError(f"{cfg}: cannot load:\n" + "\n".join(str(d) for d in exc.diagnostics)) from None
    return server


def endpoint_from_config(cfg: str) -> tuple[str, str, str]:
    """Where a configuration serves MI: ("http", url, "") when it loads httpd + mi_http (preferred),
    else ("fifo", fifo_name, reply_dir) when it loads mi_fifo (below its `chroot`, seen from outside).
    MIClientError when it serves neither."""
    server = _load_config(cfg)
    httpd, mi_http = server.modules.get("httpd"), server.modules.get("mi_http")
    if httpd is not None and mi_http is not None:
        return "http", _http_url(httpd, mi_http), ""
    fifo = server.modules.get("mi_fifo")
    if fifo is not None:
        # a chrooted server made its FIFO inside its new root, and looks for the reply FIFOs there
        jail = str(server.config.get("chroot") or "")
        reply_dir = str(fifo.param("reply_dir") or "/tmp/")
        return "fifo", outside(jail, str(fifo.param("fifo_name"))), outside(jail, reply_dir)
    raise MIClientError(f"{cfg} loads neither httpd.so + mi_http.so nor mi_fifo.so: it serves no MI")


def http_url_from_config(cfg: str) -> str:
    """http://ip:port/root from a configuration's httpd and mi_http modparams."""
    server = _load_config(cfg)
    httpd = server.modules.get("httpd")
    mi_http = server.modules.get("mi_http")
    if httpd is None or mi_http is None:
        fifo = server.modules.get("mi_fifo")
        hint = f"; it loads mi_fifo: use --fifo {fifo.param('fifo_name')}" if fifo is not None else ""
        raise MIClientError(f"{cfg} does not load httpd.so and mi_http.so{hint}")
    return _http_url(httpd, mi_http)


def _http_url(httpd: Module, mi_http: Module) -> str:
    ip = httpd.param("ip") or "127.0.0.1"
    if ip in ("0.0.0.0", "::", "*"):  # noqa: S104 - bound to every interface: reach it on loopback
        ip = "127.0.0.1"
    if ":" in ip:
        ip = f"[{ip}]"
    return f"http://{ip}:{httpd.param('port')}/{mi_http.param('root').strip('/')}"


def default_reply_dir() -> str:
    return "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
