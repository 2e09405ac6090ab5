"""Core routing functions of the OpenSIPS script (core_cmds.c, OpenSIPS 3.4): flags and branch flags,
Request-URI rewriting (strip, prefix, strip_tail), force_rport, force_send_socket, log, append_branch,
and the pseudo-variables they go with ($mf, $bf, $branch(...)).

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

from routescript.script.context import Branch, MsgContext
from routescript.script.flags import FlagNames
from routescript.script.pv_message import set_ruri_user
from routescript.script.registry import ArgSpec, FunctionSpec, PVarSpec, Registry, function
from routescript.sip import Destination, ParseError, SIPRequest, SocketInfo
from routescript.sip.hosts import bare_host, is_ip, normalize_host

from .config import L_DBG, ListenSpec
from .functions import xlog_level_of
from .log import py_level

log = logging.getLogger("routescript.core")
script_log = logging.getLogger("routescript.script")

# OpenSIPS MAX_BRANCHES default (the `max_branches` of 3.x): branches one request may fork to, the
# request URI included.
MAX_BRANCHES = 12


# --- flags ---------------------------------------------------------------------------------------------

def _flag_fixup(names: FlagNames) -> Any:
    return names.mask


def setflag(ctx: MsgContext, mask: int) -> int:
    ctx.flags |= mask
    return 1


def resetflag(ctx: MsgContext, mask: int) -> int:
    ctx.flags &= ~mask
    return 1


def isflagset(ctx: MsgContext, mask: int) -> int:
    return 1 if ctx.flags & mask else -1


class _BranchFlagArgs:
    """setbflag & co. take (flag[, branch]) in OpenSIPS 3 and ([branch,] flag) in 2.x. The 2.x form is
    recognised at load time when its second argument is a flag name (setbflag(1, NAT)); two numbers
    read as the 3.x order (flag, branch), as OpenSIPS 3.4 reads them."""

    def __init__(self, names: FlagNames) -> None:
        self.names = names

    def first(self, value: Any) -> tuple[int, str]:
        """(mask, the text written): a 2.x branch index is the text."""
        return self.names.mask(value), str(value).strip()

    def second(self, value: Any) -> Any:
        text = str(value).strip()
        if text.lstrip("-").isdigit():
            return int(text)        # the 3.x branch index
        return _Flag2x(self.names.mask(text))


@dataclasses.dataclass(frozen=True, slots=True)
class _Flag2x:
    mask: int


def _branch_flag_target(ctx: MsgContext, first: tuple[int, str], second: Any) -> tuple[int, int]:
    """(mask, branch index) from the two arguments as _BranchFlagArgs fixed them."""
    mask, text = first
    if isinstance(second, _Flag2x):       # 2.x: ([branch,] flag)
        return second.mask, int(text)
    return mask, 0 if second is None else int(second)


def _bflags_get(ctx: MsgContext, idx: int) -> int | None:
    if idx == 0:
        return ctx.bflags
    branches = ctx.branches
    if branches is None or not 0 < idx <= len(branches):
        return None
    return branches[idx - 1].flags


def _bflags_set(ctx: MsgContext, idx: int, value: int) -> None:
    if idx == 0:
        ctx.bflags = value
    else:
        assert ctx.branches is not None
        ctx.branches[idx - 1].flags = value


def setbflag(ctx: MsgContext, first: tuple[int, str], second: Any = None) -> int:
    mask, idx = _branch_flag_target(ctx, first, second)
    flags = _bflags_get(ctx, idx)
    if flags is None:
        raise ValueError(f"there is no branch {idx}")
    _bflags_set(ctx, idx, flags | mask)
    return 1


def resetbflag(ctx: MsgContext, first: tuple[int, str], second: Any = None) -> int:
    mask, idx = _branch_flag_target(ctx, first, second)
    flags = _bflags_get(ctx, idx)
    if flags is None:
        raise ValueError(f"there is no branch {idx}")
    _bflags_set(ctx, idx, flags & ~mask)
    return 1


def isbflagset(ctx: MsgContext, first: tuple[int, str], second: Any = None) -> int:
    mask, idx = _branch_flag_target(ctx, first, second)
    flags = _bflags_get(ctx, idx)
    return 1 if flags is not None and flags & mask else -1


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
        h = normalize_host(host)
        return h in self.addresses or h in ("0.0.0.0", "::")   # noqa: S104 - a wildcard socket sends from any


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
    for sock in sockets:
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


# --- append_branch -----------------------------------------------------------------------------------

def _q_fixup(value: Any) -> float | None:
    """A q-value (RFC 3261 20.10: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ))."""
    if value is None:
        return None
    text = str(value).strip()
    if not re.fullmatch(r"0(\.\d{0,3})?|1(\.0{0,3})?", text):
        raise ValueError(f"bad q value {text!r} (0 to 1, three decimals at most)")
    return float(text)


def append_branch(ctx: MsgContext, uri: Any = None, q: Any = None) -> int:
    """append_branch([uri[, q]]): one more destination for t_relay to fork to.

    Without a URI the current request (its URI, $du, branch flags, forced socket) becomes the new
    branch and those are reset on the request, as OpenSIPS does; with one, the new branch takes the
    URI and the request's $du, branch flags and forced socket."""
    from routescript.sip import parse_uri

    msg = ctx.msg
    if not isinstance(msg, SIPRequest):
        raise ValueError("append_branch: there is no request")
    branches = ctx.branches
    if branches is not None and len(branches) + 1 >= MAX_BRANCHES:
        raise ValueError(f"append_branch: {MAX_BRANCHES} branches already (the most a request forks to)")
    if q is not None and not isinstance(q, float):
        q = _q_fixup(q)
    if uri is None:
        branch = Branch(msg.ruri, ctx.dst_uri, None, q, ctx.bflags, ctx.send_socket)
        ctx.dst_uri, ctx.bflags, ctx.send_socket = None, 0, None
    else:
        text = str(uri).strip()
        try:
            parse_uri(text)
        except ParseError:
            raise ValueError(f"append_branch: not a valid URI: {text!r}") from None
        branch = Branch(text, ctx.dst_uri, None, q, ctx.bflags, ctx.send_socket)
    if branches is None:
        ctx.branches = [branch]
    else:
        branches.append(branch)
    return 1


# --- pseudo-variables: $mf $bf $branch(...) -----------------------------------------------------------

_BRANCH_FIELDS = ("uri", "duri", "q", "path", "flags", "socket")


def _branch_field(names: FlagNames, branch: Branch, field: str) -> Any:
    if field == "uri":
        return branch.uri
    if field == "duri":
        return branch.dst_uri
    if field == "q":
        return None if branch.q is None else f"{branch.q:g}"   # "0.5", "1" (OpenSIPS q2str)
    if field == "path":
        return branch.path
    if field == "flags":
        return names.names(branch.flags)
    sock = branch.socket
    return None if sock is None else str(sock)


def _check_branch_field(key: str) -> None:
    if key not in _BRANCH_FIELDS:
        raise ValueError(f"$branch({key}): unknown field (one of {', '.join(_BRANCH_FIELDS)})")


def routing_pvars(registry: Registry) -> list[PVarSpec]:
    msg_flags, branch_flags = registry.msg_flags, registry.branch_flags

    def get_mf(ctx: MsgContext, key: Any, index: Any) -> str:
        return msg_flags.names(ctx.flags)

    def get_bf(ctx: MsgContext, key: Any, index: Any) -> str:
        return branch_flags.names(ctx.bflags)

    def get_branch(ctx: MsgContext, key: Any, index: Any) -> Any:
        """$branch(field)[i]: the i-th appended branch (0: the first; the request URI is not one)."""
        branches = ctx.branches or []
        field = key or "uri"
        if index == "*":
            values = [_branch_field(branch_flags, b, field) for b in branches]
            return ", ".join(str(v) for v in values if v is not None) or None
        i = 0 if index is None else int(index)
        if not -len(branches) <= i < len(branches):
            return None
        return _branch_field(branch_flags, branches[i], field)

    return [
        PVarSpec("mf", get_mf),
        PVarSpec("bf", get_bf),
        PVarSpec("branch", get_branch, key="optional", check_key=_check_branch_field),
    ]


# --- registration ----------------------------------------------------------------------------------------

def routing_functions(registry: Registry, listen: Sequence[ListenSpec] | None = None) -> list[FunctionSpec]:
    """The functions above, bound to this configuration's flag names and sockets (`listen`: the
    socket= lines, for force_send_socket's load-time check; None: checked when called)."""
    mflag = _flag_fixup(registry.msg_flags)
    bargs = _BranchFlagArgs(registry.branch_flags)

    def flag_arg() -> ArgSpec:
        return ArgSpec("str", name="flag", fixup=mflag, static=True)

    def bflag_args() -> tuple[ArgSpec, ArgSpec]:
        return (ArgSpec("str", name="flag", fixup=bargs.first, static=True),
                ArgSpec("str", optional=True, name="branch_idx", fixup=bargs.second, static=True))

    return [
        function("setflag", setflag, flag_arg()),
        function("resetflag", resetflag, flag_arg()),
        function("isflagset", isflagset, flag_arg()),
        function("setbflag", setbflag, *bflag_args()),
        function("resetbflag", resetbflag, *bflag_args()),
        function("isbflagset", isbflagset, *bflag_args()),
        function("strip", strip, ArgSpec("int", name="n", fixup=_check_count)),
        function("strip_tail", strip_tail, ArgSpec("int", name="n", fixup=_check_count)),
        function("prefix", prefix, ArgSpec("str", name="prefix")),
        function("force_rport", force_rport),
        function("force_send_socket", force_send_socket,
                 ArgSpec("str", name="socket", fixup=_send_socket_fixup(listen))),
        function("log", log_, ArgSpec("str", name="level_or_text", fixup=_log_first_fixup, static=True),
                 ArgSpec("str", optional=True, name="text", static=True)),
        function("append_branch", append_branch, ArgSpec("str", optional=True, name="uri"),
                 ArgSpec("str", optional=True, name="q", fixup=_q_fixup)),
    ]

