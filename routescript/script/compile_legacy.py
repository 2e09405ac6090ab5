"""OpenSIPS 1.x/2.x core-keyword conditions (ast.CoreTest, ast.Myself) -> Python source text.

OpenSIPS 2.4 removed these from the language; scripts written for 2.x still use them, so they run with
the meaning OpenSIPS 2.2 gave them (cfg.y exp_cond, route.c eval_elem), and the parser warns once per
kind and file with the 3.x replacement (parse_tree.py):

- method, uri, status, from_uri, to_uri read $rm, $ru, $rs, $fu, $tu. `==`/`!=` compare with the literal
  case-insensitively (2.x comp_strval uses strncasecmp), `=~`/`!~` search a case-insensitive regex. A
  missing value makes every test false (2.x: an error, so false). `status` is $rs (2.x's lexer made it
  a synonym of `uri` that reads the status code of a reply).
- src_ip, dst_ip read $si, $Ri: `==`/`!=` against an address or network (10.0.0.0/8, ::1, [::1]), parsed
  once here; `=~`/`!~` search the address text. Choice: a host name is refused (2.x resolved it, and
  reverse-resolved the address, on every message: no DNS in the per-message path here).
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
from typing import Any, Protocol

from . import ast
from .parse_tree import parse_int
from .pos import Pos
from .runtime import to_str

MAX_LEN = 65535  # OpenSIPS 2.x BUF_SIZE, what `msg:len > max_len` compares with

_STRING_KEYWORDS = {"method": "rm", "uri": "ru", "status": "rs", "from_uri": "fu", "to_uri": "tu"}
_ADDRESS_KEYWORDS = {"src_ip": "si", "dst_ip": "Ri"}
_NUMBER_KEYWORDS = {"src_port": "sp", "dst_port": "Rp", "msg:len": "ml"}
_MYSELF_SUBJECTS = {**_STRING_KEYWORDS, **_ADDRESS_KEYWORDS}
_PROTOCOLS = {p: p for p in ("udp", "tcp", "tls", "sctp", "ws", "wss")}  # 2.x parse_proto
_FAMILIES = {"inet": "inet", "inet6": "inet6", "2": "inet", "10": "inet6"}  # AF_INET, AF_INET6 on Linux
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
    """`src_ip == 10.0.0.0/8`: the network is parsed once, at load; each message parses only its address."""

    __slots__ = ("network",)

    def __init__(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        self.network = network

    def __call__(self, value: Any) -> bool:
        if value is None:
            return False
        try:
            return ipaddress.ip_address(to_str(value)) in self.network
        except ValueError:
            return False


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
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise _fail(gen, e.pos, f"'{e.keyword} {e.op} {e.value}': expected an IP address or network "
                                f"(10.0.0.1, 10.0.0.0/8, ::1); routescript does not resolve host names "
                                f"in conditions") from None
    test = f"{gen.bind(InNetwork(network), '_n')}({value})"
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
