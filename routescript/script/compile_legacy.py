"""OpenSIPS 1.x/2.x core-keyword conditions (ast.CoreTest, ast.Myself) -> Python source text.

OpenSIPS 2.4 removed these from the language; scripts written for 2.x still use them, so they run with
the meaning OpenSIPS 2.2 gave them (cfg.y exp_cond, route.c eval_elem), and the parser warns once per
kind and file with the 3.x replacement (parse_tree.py):

- method, uri, status, from_uri, to_uri read $rm, $ru, $rs, $fu, $tu. `==`/`!=` compare with the literal
  case-insensitively (2.x comp_strval uses strncasecmp), `=~`/`!~` search a case-insensitive regex. A
  missing value makes every test false (2.x: an error, so false). `status` is $rs (2.x's lexer made it
  a synonym of `uri` that reads the status code of a reply).
- src_ip, dst_ip read $si, $Ri: `==`/`!=` against an address or network (10.0.0.0/8, ::1, [::1]), parsed
  once here; `=~`/`!~` search the address text. Choice: a host name (`src_ip == backup.example.com`) is
  resolved once, at load, where 2.x resolved it on every message (no DNS in the per-message path); a
  name that does not resolve matches nothing, as in 2.x. 2.x's optional reverse DNS is not done.
- src_port, dst_port, msg:len read $sp, $Rp, $ml and compare as numbers; `max_len` is 65535 (2.x
  BUF_SIZE).
- proto compares $pr with udp/tcp/tls/sctp/ws/wss; af compares $af with INET/INET6 (or 2/10, the C
  constants 2.x's lexer turned them into).
- `X == myself` (and `myself == X`, `X != myself`) is is_myself(X): the R-URI, From or To URI (a URI
  without a port means 5060) or the address (any port), through the registered is_myself function.
Operators 2.x could not evaluate (`method < "X"`, `proto =~ "u"`) are load-time errors here.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any, Protocol

from . import ast
from .parse_tree import parse_int
from .pos import Pos
from .runtime import to_str

MAX_LEN = 65535  # OpenSIPS 2.x BUF_SIZE, what `msg:len > max_len` compares with

_STRING_KEYWORDS = {"method": "rm", "uri": "ru", "status": "rs", "from_uri": "fu", "to_uri": "tu"}
_ADDRESS_KEYWORDS = {"src_ip": "si", "dst_ip": "Ri"}
_NUMBER_KEYWORDS = {"src_port": "sp", "dst_port": "Rp", "msg:len": "ml"}
# 2.x cfg.y: `uri_type equalop MYSELF` (uri, status, from_uri, to_uri), SRCIP and DSTIP; not method
_MYSELF_SUBJECTS = {"uri": "ru", "status": "rs", "from_uri": "fu", "to_uri": "tu", **_ADDRESS_KEYWORDS}
_PROTOCOLS = {p: p for p in ("udp", "tcp", "tls", "sctp", "ws", "wss")}  # 2.x parse_proto
_FAMILIES = {"inet": "inet", "inet6": "inet6", "2": "inet", "10": "inet6"}  # AF_INET, AF_INET6 on Linux
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_NUMBER_OPS = {"==": "_rt.eq", "!=": "_rt.ne", "<": "_rt.lt", ">": "_rt.gt", "<=": "_rt.le", ">=": "_rt.ge"}


class Failed(Exception):
    """A test that could not be compiled (already reported)."""


class LegacyGen(Protocol):
    """What these tests need of the expression generator (compile_expr._ExprGen)."""

    def pvar_get(self, pv: ast.PVar) -> str: ...
    def bind(self, obj: Any, prefix: str = "_k") -> str: ...
    def error(self, pos: Pos, message: str) -> None: ...
    def call(self, c: ast.Call) -> str: ...
    def regex(self, e: Any) -> str: ...


# ---- run time: what the generated code calls --------------------------------------------------------

def same_text(value: Any, folded: str) -> bool:
    """2.x `==` on a string keyword: case-insensitive; a missing value is false."""
    return value is not None and to_str(value).lower() == folded


def other_text(value: Any, folded: str) -> bool:
    """2.x `!=` on a string keyword: case-insensitive; a missing value is false (2.x: an error)."""
    return value is not None and to_str(value).lower() != folded


def searched(value: Any, rx: re.Pattern[str]) -> bool:
    return value is not None and rx.search(to_str(value)) is not None


def not_searched(value: Any, rx: re.Pattern[str]) -> bool:
    return value is not None and rx.search(to_str(value)) is None


class InNetwork:
    """`src_ip == 10.0.0.0/8`: the networks are parsed once, at load; each message parses only its address.
    No network at all (a host name that did not resolve) matches nothing."""

    __slots__ = ("networks",)

    def __init__(self, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> None:
        self.networks = networks

    def __call__(self, value: Any) -> bool:
        if value is None:
            return False
        try:
            address = ipaddress.ip_address(to_str(value))
        except ValueError:
            return False
        return any(address in net for net in self.networks)


def resolve_host(name: str) -> tuple[str, ...]:
    """The addresses of a host name (load time only); none when it does not resolve."""
    try:
        infos = socket.getaddrinfo(name, None)
    except (OSError, UnicodeError):
        return ()
    return tuple(sorted({str(info[4][0]) for info in infos}))


# ---- load time ----------------------------------------------------------------------------------------

def condition(gen: LegacyGen, e: ast.CoreTest | ast.Myself) -> str:
    """Python source text of a bool. Raises Failed after reporting a problem."""
    if isinstance(e, ast.Myself):
        return _myself(gen, e)
    kw = e.keyword
    if kw in _STRING_KEYWORDS:
        return _string_test(gen, e, _STRING_KEYWORDS[kw])
    if kw in _ADDRESS_KEYWORDS:
        return _address_test(gen, e, _ADDRESS_KEYWORDS[kw])
    if kw in _NUMBER_KEYWORDS:
        return _number_test(gen, e, _NUMBER_KEYWORDS[kw])
    if kw == "proto":
        return _choice_test(gen, e, "pr", _PROTOCOLS, "a protocol (udp, tcp, tls, sctp, ws, wss)")
    if kw == "af":
        return _choice_test(gen, e, "af", _FAMILIES, "INET or INET6")
    gen.error(e.pos, f"unknown core keyword '{kw}'")
    raise Failed


def _pv(name: str, pos: Pos) -> ast.PVar:
    return ast.PVar(name, None, None, (), "$" + name, pos)


def _fail(gen: LegacyGen, pos: Pos, message: str) -> Failed:
    gen.error(pos, message)
    return Failed()


def _string_test(gen: LegacyGen, e: ast.CoreTest, pv: str) -> str:
    value = gen.pvar_get(_pv(pv, e.pos))
    if e.op in ("==", "!="):
        fn = gen.bind(same_text if e.op == "==" else other_text, "_l")
        return f"{fn}({value}, {e.value.lower()!r})"
    if e.op in ("=~", "!~"):
        rx = gen.regex(ast.StrLit(e.value, (e.value,), e.pos))
        fn = gen.bind(searched if e.op == "=~" else not_searched, "_l")
        return f"{fn}({value}, {rx})"
    raise _fail(gen, e.pos, f"'{e.keyword} {e.op}': {e.keyword} compares with ==, !=, =~ or !~")


def _address_test(gen: LegacyGen, e: ast.CoreTest, pv: str) -> str:
    value = gen.pvar_get(_pv(pv, e.pos))
    if e.op in ("=~", "!~"):
        rx = gen.regex(ast.StrLit(e.value, (e.value,), e.pos))
        fn = gen.bind(searched if e.op == "=~" else not_searched, "_l")
        return f"{fn}({value}, {rx})"
    if e.op not in ("==", "!="):
        raise _fail(gen, e.pos, f"'{e.keyword} {e.op}': {e.keyword} compares with ==, !=, =~ or !~")
    text = e.value[1:-1] if e.value.startswith("[") and e.value.endswith("]") else e.value
    try:
        networks: tuple[Any, ...] = (ipaddress.ip_network(text, strict=False),)
    except ValueError:
        if not _HOST_NAME.fullmatch(text):
            raise _fail(gen, e.pos, f"'{e.keyword} {e.op} {e.value}': expected an IP address, a network "
                                    f"(10.0.0.0/8, ::1) or a host name") from None
        # 2.x resolved the name on every message; here once, at load (no DNS in the per-message path)
        networks = tuple(ipaddress.ip_network(a.partition("%")[0]) for a in resolve_host(text))
    test = f"{gen.bind(InNetwork(networks), '_n')}({value})"
    return test if e.op == "==" else f"(not {test})"


def _number_test(gen: LegacyGen, e: ast.CoreTest, pv: str) -> str:
    if e.op not in _NUMBER_OPS:
        raise _fail(gen, e.pos, f"'{e.keyword} {e.op}': {e.keyword} compares with a number "
                                f"(==, !=, <, >, <=, >=)")
    if e.keyword == "msg:len" and not e.quoted and e.value == "max_len":
        number = MAX_LEN
    else:
        try:
            number = parse_int(e.value) if not e.quoted else int(e.value)
        except ValueError:
            raise _fail(gen, e.pos, f"'{e.keyword} {e.op} {e.value}': expected a number"
                                    + (" or max_len" if e.keyword == "msg:len" else "")) from None
    return f"{_NUMBER_OPS[e.op]}({gen.pvar_get(_pv(pv, e.pos))}, {number!r})"


def _choice_test(gen: LegacyGen, e: ast.CoreTest, pv: str, names: dict[str, str], what: str) -> str:
    if e.op not in ("==", "!="):
        raise _fail(gen, e.pos, f"'{e.keyword} {e.op}': {e.keyword} compares with == or !=")
    folded = names.get(e.value.lower())
    if folded is None:
        raise _fail(gen, e.pos, f"'{e.keyword} {e.op} {e.value}': expected {what}")
    fn = gen.bind(same_text if e.op == "==" else other_text, "_l")
    return f"{fn}({gen.pvar_get(_pv(pv, e.pos))}, {folded!r})"


def _myself(gen: LegacyGen, e: ast.Myself) -> str:
    subject: ast.Expr
    if isinstance(e.subject, str):
        pv = _MYSELF_SUBJECTS.get(e.subject)
        if pv is None:
            raise _fail(gen, e.pos, f"'{e.subject} == myself': myself compares with uri, from_uri, to_uri, "
                                    f"src_ip, dst_ip or a variable")
        subject = _pv(pv, e.pos)
    else:
        subject = e.subject
    code = gen.call(ast.Call("is_myself", (subject,), e.pos))
    return f"(not ({code} > 0))" if e.negated else f"({code} > 0)"
