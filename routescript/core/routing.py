"""Core routing functions of the OpenSIPS script (core_cmds.c, OpenSIPS 3.4): Request-URI rewriting
(strip, prefix, strip_tail, seturi & co., revert_uri), $du as functions, force_rport, force_send_socket
and log - and the registration of all core routing functions, with the flag ones (flag_functions.py)
and the branch ones (branch_functions.py).

They only change the MsgContext and its request; tm's sender reads ctx.msg's Request-URI, ctx.dst_uri,
ctx.send_socket and ctx.branches when it relays. Every one may be called in any route (ALL_ROUTES in
OpenSIPS); a function that needs a request returns -1 on a reply or where there is no message.
docs/core-functions.md lists them with where we differ.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import socket as _socket
from collections.abc import Sequence
from typing import Any

from routescript.script.context import MsgContext
from routescript.script.pv_message import (
    get_ouri,
    set_duri,
    set_ruri,
    set_ruri_host,
    set_ruri_port,
    set_ruri_user,
)
from routescript.script.registry import ArgSpec, FunctionSpec, PVarSpec, Registry, function
from routescript.sip import Destination, ParseError, SIPRequest, SocketInfo
from routescript.sip.hosts import bare_host, is_ip, normalize_host

from .branch_functions import branch_functions, branch_pvars
from .config import L_DBG, ListenSpec
from .flag_functions import flag_functions, flag_pvars
from .functions import xlog_level_of
from .log import py_level

log = logging.getLogger("routescript.core")
script_log = logging.getLogger("routescript.script")



# --- Request-URI user: strip, prefix, strip_tail (OpenSIPS rewrite_ruri) ---------------------------------

def _ruri_user(ctx: MsgContext, what: str) -> str:
    msg = ctx.msg
    if not isinstance(msg, SIPRequest):
        raise ValueError(f"{what}: there is no request to change")
    return msg.uri.user or ""


def _check_count(n: Any) -> int:
    if int(n) < 0:
        raise ValueError(f"a count of characters cannot be negative ({n})")
    return int(n)


def strip(ctx: MsgContext, n: int) -> int:
    """Remove the first n characters of the Request-URI user; more than it has removes it (with a
    warning, as OpenSIPS)."""
    user = _ruri_user(ctx, "strip")
    if n > len(user):
        log.warning("strip(%d): the user part %r is shorter: removed", n, user)
    set_ruri_user(ctx, None, None, user[n:] or None)
    return 1


def strip_tail(ctx: MsgContext, n: int) -> int:
    user = _ruri_user(ctx, "strip_tail")
    if n > len(user):
        log.warning("strip_tail(%d): the user part %r is shorter: removed", n, user)
    set_ruri_user(ctx, None, None, user[:len(user) - n] if n < len(user) else None)
    return 1


def prefix(ctx: MsgContext, text: str) -> int:
    user = _ruri_user(ctx, "prefix")
    set_ruri_user(ctx, None, None, text + user if text + user else None)
    return 1


# --- Request-URI parts and $du: seturi, sethost, sethostport, setuser, setuserpass, setport, revert_uri,
# setdsturi, resetdsturi, isdsturiset (OpenSIPS 3.4 core_cmds.c; the 2.x spellings registered as aliases)

def seturi(ctx: MsgContext, uri: str) -> int:
    set_ruri(ctx, None, None, uri)
    return 1


def sethost(ctx: MsgContext, host: str) -> int:
    set_ruri_host(ctx, None, None, host)
    return 1


def sethostport(ctx: MsgContext, hostport: str) -> int:
    """host[:port]: the port is removed when none is given (OpenSIPS RW_RURI_HOSTPORT)."""
    text = hostport.strip()
    host, port = text, None
    if text.startswith("["):                       # [v6]:port
        end = text.find("]")
        host, rest = text[:end + 1], text[end + 1:]
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    set_ruri_host(ctx, None, None, host)
    set_ruri_port(ctx, None, None, port)
    return 1


def setuser(ctx: MsgContext, user: str) -> int:
    set_ruri_user(ctx, None, None, user or None)
    return 1


def setuserpass(ctx: MsgContext, userpass: str) -> int:
    """user[:password]."""
    msg = ctx.msg
    if not isinstance(msg, SIPRequest):
        raise ValueError("setuserpass: there is no request to change")
    user, _, password = userpass.partition(":")
    if password and any(c in password for c in "@: \t<>\r\n"):
        raise ValueError(f"setuserpass: bad password {password!r}")
    set_ruri_user(ctx, None, None, user or None)
    if user:
        msg.ruri = str(dataclasses.replace(msg.uri, password=password or None))
    return 1


def setport(ctx: MsgContext, port: str) -> int:
    set_ruri_port(ctx, None, None, port)
    return 1


def revert_uri(ctx: MsgContext) -> int:
    """Back to the Request-URI the request arrived with ($ou)."""
    original = get_ouri(ctx, None, None)
    msg = ctx.msg
    if original is not None and isinstance(msg, SIPRequest) and msg.ruri != original:
        msg.ruri = original
    return 1


def setdsturi(ctx: MsgContext, uri: str) -> int:
    set_duri(ctx, None, None, uri)
    return 1


def resetdsturi(ctx: MsgContext) -> int:
    ctx.dst_uri = None
    return 1


def isdsturiset(ctx: MsgContext) -> int:
    return 1 if ctx.dst_uri else -1


# --- force_rport -------------------------------------------------------------------------------------

def force_rport(ctx: MsgContext) -> int:
    """Answer the sender at the port the request came from, as if its Via had a bare `rport` (RFC 3581):
    the top Via gets received= and rport=<source port> (the relayed request carries them), and the
    replies made after this call - the stateless ones and those of a transaction created after it -
    go to the source address and port. A TCP request is answered on its connection anyway."""
    msg, src = ctx.msg, ctx.source
    if msg is None or not msg.is_request or src is None:
        return -1
    try:
        via = msg.via
    except ParseError as exc:
        raise ValueError(f"bad Via: {exc.reason}") from None
    host = bare_host(src.remote_host)
    if via.rport != src.remote_port or via.received is None:
        msg.set_top_via(via.with_param("received", host).with_param("rport", str(src.remote_port)))
    if not src.reliable:
        ctx.source = dataclasses.replace(
            src, reply_to=Destination(src.proto, host, src.remote_port, socket=src.socket))
    return 1


# --- force_send_socket ---------------------------------------------------------------------------------

# [proto:]host[:port] - OpenSIPS parse_phostport; host an IPv4, a name or "[" IPv6 "]"
_PHOSTPORT = re.compile(r"^(?:(?P<proto>udp|tcp|tls|sctp|ws|wss):)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+)"
                        r"(?::(?P<port>\d{1,5}))?$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True, slots=True)
class SocketWanted:
    """force_send_socket's argument, parsed: proto and port None when not written (any will do)."""

    proto: str | None
    host: str           # normalised; the addresses a name resolved to are in `addresses`
    port: int | None
    addresses: frozenset[str]
    text: str

    def matches(self, proto: str, host: str, port: int) -> bool:
        if self.proto is not None and proto != self.proto:
            return False
        if self.port is not None and port != self.port:
            return False
        return normalize_host(host) in self.addresses


def parse_send_socket(text: Any) -> SocketWanted:
    raw = str(text).strip()
    m = _PHOSTPORT.match(raw)
    if m is None:
        raise ValueError(f"bad socket {raw!r} (expected [proto:]host[:port])")
    proto = m.group("proto").lower() if m.group("proto") else None
    host = bare_host(m.group("host"))
    port = int(m.group("port")) if m.group("port") else None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"socket {raw!r}: port {port} out of range")
    addresses = {normalize_host(host)}
    if not is_ip(host):
        # OpenSIPS resolves the name when the script is loaded (fixup_f_send_sock): so do we, once
        try:
            addresses |= {normalize_host(str(info[4][0])) for info in _socket.getaddrinfo(host, None)}
        except OSError:
            raise ValueError(f"socket {raw!r}: cannot resolve {host!r}") from None
    return SocketWanted(proto, normalize_host(host), port, frozenset(addresses), raw)


def _send_socket_fixup(listen: Sequence[ListenSpec] | None) -> Any:
    def fixup(text: Any) -> SocketWanted:
        wanted = parse_send_socket(text)
        if listen is not None and not any(wanted.matches(s.proto, s.host, s.port) for s in listen):
            names = ", ".join(s.name for s in listen) or "none"
            raise ValueError(f"we do not listen on {wanted.text} (our sockets: {names})")
        return wanted
    return fixup


def force_send_socket(ctx: MsgContext, wanted: Any) -> int:
    """The socket relayed requests leave by (ctx.send_socket): one of ours, checked at load time when
    the argument is written out, here when it is computed."""
    if not isinstance(wanted, SocketWanted):
        wanted = parse_send_socket(wanted)
    server = ctx.server
    sockets: Sequence[SocketInfo] = server.sockets if server is not None else ()
    # without a protocol UDP sockets first, then the others (OpenSIPS find_si)
    for sock in sorted(sockets, key=lambda s: s.proto != "udp") if wanted.proto is None else sockets:
        if wanted.matches(sock.proto, sock.host, sock.port):
            ctx.send_socket = sock
            return 1
    raise ValueError(f"we do not listen on {wanted.text}")


# --- log ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class _LogFirst:
    """log()'s first argument: the text of log(text), or the level of log(level, text)."""

    text: str
    level: int | None      # None: not a level (then it can only be the text)


def _log_first_fixup(value: Any) -> _LogFirst:
    text = str(value)
    level = xlog_level_of(text.strip(), default=_NOT_A_LEVEL)
    return _LogFirst(text, None if level == _NOT_A_LEVEL else level)


_NOT_A_LEVEL = 999


def log_(ctx: MsgContext, first: _LogFirst, text: str | None = None) -> int:
    """log([level,] text): the text as written, no pseudo-variables (OpenSIPS LOG_T); level L_DBG (4)
    by default, a number or an L_* name."""
    if text is None:
        level, text = L_DBG, first.text
    elif first.level is None:
        raise ValueError(f"bad log level {first.text!r} (a number -3..4 or L_ALERT..L_DBG)")
    else:
        level = first.level
    script_log.log(py_level(level), "%s", text.rstrip("\r\n"))
    return 1


# --- registration ----------------------------------------------------------------------------------------

def routing_functions(registry: Registry, listen: Sequence[ListenSpec] | None = None) -> list[FunctionSpec]:
    """Every core routing function, the flag ones bound to this configuration's flag names, and
    force_send_socket to its sockets (`listen`: the socket= lines, for its load-time check; None:
    checked when called)."""
    uri_setters = [
        (("seturi", "rewriteuri"), seturi, "uri"),
        (("sethost", "rewritehost", "seth"), sethost, "host"),
        (("sethostport", "rewritehostport", "sethp"), sethostport, "hostport"),
        (("setuser", "rewriteuser", "setu"), setuser, "user"),
        (("setuserpass", "rewriteuserpass", "setup"), setuserpass, "userpass"),
        (("setport", "rewriteport", "setp"), setport, "port"),
        (("setdsturi", "setduri"), setdsturi, "uri"),
    ]
    no_args = [(("revert_uri",), revert_uri), (("resetdsturi", "resetduri"), resetdsturi),
               (("isdsturiset", "isduriset"), isdsturiset), (("force_rport",), force_rport)]
    specs = [function(name, impl, ArgSpec("str", name=arg)) for names, impl, arg in uri_setters
             for name in names]
    specs += [function(name, impl) for names, impl in no_args for name in names]
    return specs + flag_functions(registry) + branch_functions() + [
        function("strip", strip, ArgSpec("int", name="n", fixup=_check_count)),
        function("strip_tail", strip_tail, ArgSpec("int", name="n", fixup=_check_count)),
        function("prefix", prefix, ArgSpec("str", name="prefix")),
        function("force_send_socket", force_send_socket,
                 ArgSpec("str", name="socket", fixup=_send_socket_fixup(listen))),
        function("log", log_, ArgSpec("str", name="level_or_text", fixup=_log_first_fixup, static=True),
                 ArgSpec("str", optional=True, name="text", static=True)),
    ]


def routing_pvars(registry: Registry) -> list[PVarSpec]:
    """$mf, $bf and $branch(...)."""
    return flag_pvars(registry) + branch_pvars(registry)
