"""Parse tree of one file -> typed AST nodes (routescript.script.ast); problems go to the loader's
diagnostics, include_file/import_file statements come out as _Include markers the loader resolves."""

from __future__ import annotations

import re
from typing import Any, Protocol

import lark
from lark import Token

from . import ast
from .pos import Pos
from .context import (BRANCH_ROUTE, EVENT_ROUTE, FAILURE_ROUTE, LOCAL_ROUTE, ONREPLY_ROUTE, REQUEST_ROUTE,
                      STARTUP_ROUTE, TIMER_ROUTE, ERROR_ROUTE)
from .grammar import ROUTE_KINDS
from .ipmatch import parse_network
from .pvparse import PVarSyntaxError, parse_pvar, parse_string, unescape



class _Include:
    __slots__ = ("keyword", "path", "pos")

    def __init__(self, keyword: str, path: str, pos: Pos) -> None:
        self.keyword, self.path, self.pos = keyword, path, pos



class TreeLoader(Protocol):
    """What the tree builder asks of the parser's loader: to record an error, and to parse an include
    (its statements, in place of the include line)."""

    def error(self, pos: Pos, message: str) -> None: ...
    def warn(self, pos: Pos, message: str) -> None: ...
    def include(self, inc: _Include, start: str, base_file: str) -> list[Any]: ...


_INT_RE = re.compile(r"^-?(0[xX][0-9a-fA-F]+|0[bB][01]+|0[0-7]+|[0-9]+)$")
_BOOLS = {"yes": True, "on": True, "true": True, "no": False, "off": False, "false": False}
_SOCKET_PARAMS = {"socket", "listen"}
_ADDR_RE = re.compile(r"^(?:(?P<proto>[A-Za-z][A-Za-z0-9_]*):(?=.*:|\[|[^:]*$))?"
                      r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(?P<port>[^:]+))?$")


# lang2x: the OpenSIPS 1.x/2.x core keywords of conditions, the pseudo-variable each reads (the 2.x
# meaning, see compile_legacy.py) and what an OpenSIPS 3.x script writes instead.
_KEYWORD_PVAR = {
    "method": "rm", "uri": "ru", "status": "rs", "from_uri": "fu", "to_uri": "tu", "src_ip": "si",
    "dst_ip": "Ri", "src_port": "sp", "dst_port": "Rp", "proto": "pr", "af": "af", "msg:len": "ml",
}
_KEYWORD_REPLACEMENT = {
    "method": "$rm (or is_method())", "uri": "$ru", "status": "$rs", "from_uri": "$fu", "to_uri": "$tu",
    "src_ip": "$si", "dst_ip": "$Ri", "src_port": "$sp", "dst_port": "$Rp", "proto": "$pr", "af": "$af",
    "msg:len": "$ml (max_len is 65535)",
}
_BARE_WARNING = ("'{kw}' without parentheses around its condition is OpenSIPS 2.x syntax, refused since "
                 "OpenSIPS 3.1: write {kw} (...) (accepted here)")


def _keyword_warning(construct: str, replacement: str) -> str:
    return (f"'{construct}' is an OpenSIPS 1.x/2.x core keyword, removed in OpenSIPS 2.4: use {replacement} "
            f"(accepted here with its 2.x meaning)")


def parse_int(text: str) -> int:
    """OpenSIPS number literals: decimal, 0x hex, 0b binary, leading-zero octal (fifo_mode 0666)."""
    t = text.strip()
    neg = t.startswith("-")
    if neg:
        t = t[1:]
    if len(t) > 1 and t[0] == "0" and t[1] in "xX":
        v = int(t, 16)
    elif len(t) > 1 and t[0] == "0" and t[1] in "bB":
        v = int(t, 2)
    elif len(t) > 1 and t[0] == "0":
        v = int(t, 8)
    else:
        v = int(t, 10)
    return -v if neg else v


def _unquote(tok: Token) -> str:
    return unescape(str(tok)[1:-1])


# Operators OpenSIPS puts on one precedence level and evaluates left to right (cfg.y `%left OR AND`, `%left
# BOR BAND BXOR BLSHIFT BRSHIFT`, `%left PLUS MINUS SLASH MULT MODULO`), ranked as C (and most languages)
# would bind them. `a L b O c` is `(a L b) O c` in OpenSIPS; where C binds O tighter (a higher rank) a
# reader expects `a L (b O c)`: the tree builder warns there, at each such place.
_C_RANK = {"||": 1, "&&": 2,
           "|": 11, "^": 12, "&": 13, "<<": 14, ">>": 14,
           "+": 21, "-": 21, "*": 22, "/": 22, "%": 22}


def _precedence_warning(first: str, then: str) -> str:
    return (f"'{first}' then '{then}' without parentheses: OpenSIPS evaluates them left to right, as "
            f"(a {first} b) {then} c, not a {first} (b {then} c); add parentheses to say which you mean")


class _Builder(lark.Transformer):  # type: ignore[type-arg]
    """Parse tree of one file -> AST nodes; problems go to the loader's diagnostics."""

    def __init__(self, loader: TreeLoader, filename: str) -> None:
        super().__init__(visit_tokens=False)
        self.loader = loader
        self.file = filename
        self._warned: set[str] = set()  # the 2.x construct kinds already warned about in this file
        # expressions written in parentheses (by id; the node kept alive with it): grouped by hand
        self._parenthesized: dict[int, object] = {}

    def _warn_once(self, kind: str, pos: Pos, message: str) -> None:
        """A migration warning, once per construct kind and file (a script uses `method == ...` dozens
        of times: one line tells its author what to change)."""
        if kind not in self._warned:
            self._warned.add(kind)
            self.loader.warn(pos, message)

    # -- helpers -----------------------------------------------------------------------------------
    def _pos(self, meta_or_tok: Any) -> Pos:
        line = getattr(meta_or_tok, "line", None)
        col = getattr(meta_or_tok, "column", None)
        return Pos(self.file, line or 1, col or 1)

    def _tok_pos_at(self, tok: Token) -> Any:
        line, col = tok.line or 1, tok.column or 1
        text = str(tok)
        if "\n" not in text:
            return lambda off: Pos(self.file, line, col + off)

        def at(off: int) -> Pos:  # a string that spans lines: count the newlines before the offset
            nl = text.rfind("\n", 0, off)
            if nl < 0:
                return Pos(self.file, line, col + off)
            return Pos(self.file, line + text.count("\n", 0, off), off - nl)
        return at

    def _pvar(self, tok: Token) -> ast.PVar:
        text = str(tok)
        try:
            pv, end = parse_pvar(text, 0, self._tok_pos_at(tok))
            if end != len(text):
                raise PVarSyntaxError(end, f"unexpected '{text[end:]}' after {text[:end]}")
            return pv
        except PVarSyntaxError as exc:
            self.loader.error(self._tok_pos_at(tok)(exc.offset), f"bad pseudo-variable {text}: {exc.message}")
            return ast.PVar("", None, None, (), text, self._pos(tok))

    def _string(self, tok: Token) -> ast.StrLit:
        try:
            return parse_string(str(tok), self._pos(tok), self._tok_pos_at(tok))
        except PVarSyntaxError as exc:
            self.loader.error(self._tok_pos_at(tok)(exc.offset + 1),
                              f"bad pseudo-variable in string: {exc.message}")
            value = _unquote(tok)
            return ast.StrLit(value, (value,), self._pos(tok))

    def _int(self, tok: Token, negative: bool = False) -> int:
        try:
            v = parse_int(str(tok))
        except ValueError:
            self.loader.error(self._pos(tok), f"bad number '{tok}'")
            v = 0
        return -v if negative else v

    def _expand(self, items: list[Any], start: str) -> list[Any]:
        out: list[Any] = []
        for item in items:
            if isinstance(item, _Include):
                out.extend(self.loader.include(item, start, self.file))
            elif item is not None:
                out.append(item)
        return out

    # -- top level ---------------------------------------------------------------------------------
    def start(self, children: list[Any]) -> list[Any]:
        return self._expand(children, "start")

    def stmt_list(self, children: list[Any]) -> list[Any]:
        return self._expand(children, "stmt_list")

    @lark.v_args(meta=True)
    def include(self, meta: Any, children: list[Any]) -> _Include:
        kw, path = children
        return _Include(str(kw), _unquote(path), self._pos(meta))

    @lark.v_args(meta=True)
    def global_param(self, meta: Any, children: list[Any]) -> ast.GlobalParam | None:
        name_tok, (kind, value_tok), *trailers = children
        name = str(name_tok)
        pos = self._pos(meta)
        quoted = kind == "string"
        text = _unquote(value_tok) if quoted else str(value_tok)
        value: ast.GlobalValue
        is_socket = name in _SOCKET_PARAMS or (not quoted and ":" in text and name != "mpath")
        if trailers and not is_socket:
            self.loader.error(self._pos(trailers[0][2]), f"'{trailers[0][0]}' only follows a socket address")
        if is_socket:
            sock = self._socket(text, self._pos(value_tok), trailers)
            value = sock if sock is not None else text
        elif quoted:
            value = text
        elif _INT_RE.match(text):
            value = self._int(value_tok)
        elif text.lower() in _BOOLS:
            value = _BOOLS[text.lower()]
        else:
            value = text
        return ast.GlobalParam(name, value, pos, quoted)

    def _socket(self, text: str, pos: Pos, trailers: list[Any]) -> ast.SocketSpec | None:
        m = _ADDR_RE.match(text.strip())
        if not m:
            self.loader.error(pos, f"bad socket address \"{text}\" (expected proto:host:port)")
            return None
        port = None
        if m.group("port") is not None:
            try:
                port = int(m.group("port"))
                if not 0 <= port <= 65535:
                    raise ValueError
            except ValueError:
                self.loader.error(pos, f"bad port '{m.group('port')}' in \"{text}\"")
                return None
        host = m.group("host")
        if host.startswith("["):
            host = host[1:-1]
        advertised = workers = tag = None
        flags: list[str] = []
        for kind, arg, tok in trailers:
            if kind == "as":
                advertised = arg
            elif kind == "use_workers":
                try:
                    workers = int(arg)
                except ValueError:
                    self.loader.error(self._pos(tok), f"use_workers expects a number, got '{arg}'")
            elif kind == "tag":
                tag = arg
            else:
                flags.append(kind)
        return ast.SocketSpec(m.group("proto"), host, port, advertised, workers, tag, tuple(flags),
                              text.strip())

    def gv_string(self, children: list[Token]) -> tuple[str, Token]:
        return ("string", children[0])

    def gv_word(self, children: list[Token]) -> tuple[str, Token]:
        return ("word", children[0])

    def tr_as(self, c: list[Token]) -> tuple[str, str, Token]:
        return ("as", str(c[0]), c[0])

    def tr_workers(self, c: list[Token]) -> tuple[str, str, Token]:
        return ("use_workers", str(c[0]), c[0])

    def tr_tag(self, c: list[Token]) -> tuple[str, str, Token]:
        return ("tag", str(c[0]), c[0])

    @lark.v_args(meta=True)
    def tr_anycast(self, meta: Any, c: list[Any]) -> tuple[str, str, Any]:
        return ("anycast", "", meta)

    @lark.v_args(meta=True)
    def tr_reuse_port(self, meta: Any, c: list[Any]) -> tuple[str, str, Any]:
        return ("reuse_port", "", meta)

    @lark.v_args(meta=True)
    def tr_frag(self, meta: Any, c: list[Any]) -> tuple[str, str, Any]:
        return ("frag", "", meta)

    @lark.v_args(meta=True)
    def loadmodule(self, meta: Any, children: list[Token]) -> ast.LoadModule:
        return ast.LoadModule(_unquote(children[0]), self._pos(meta))

    @lark.v_args(meta=True)
    def modparam(self, meta: Any, children: list[Any]) -> ast.ModParam:
        mod, param, value = children
        return ast.ModParam(_unquote(mod), _unquote(param), value, self._pos(meta))

    def mv_string(self, c: list[Token]) -> str:
        return _unquote(c[0])

    def mv_int(self, c: list[Token]) -> int:
        return self._int(c[0])

    def mv_neg_int(self, c: list[Token]) -> int:
        return self._int(c[0], negative=True)

    def mv_bool(self, c: list[Token]) -> int:
        return 1 if str(c[0]) in ("yes", "true", "on", "enable") else 0

    # -- routes ------------------------------------------------------------------------------------
    def route_kw(self, c: list[Token]) -> Token:
        return c[0]

    def include_kw(self, c: list[Token]) -> Token:
        return c[0]

    def rname(self, c: list[Token]) -> Token:
        return c[0]

    def route_label(self, c: list[Token]) -> list[Token]:
        return c

    @lark.v_args(meta=True)
    def route_def(self, meta: Any, children: list[Any]) -> ast.RouteDef | None:
        kw, label, body = children
        kind = ROUTE_KINDS[str(kw)]
        pos = self._pos(meta)
        label = label or []
        words = [(_unquote(t) if t.type == "STRING" else str(t), t) for t in label]
        name: str | None = words[0][0] if words else None
        params: list[int | str] = []
        kw_s = str(kw)
        if kind in (REQUEST_ROUTE, ONREPLY_ROUTE) and name in ("0", "main") and kind == REQUEST_ROUTE:
            name = None
        if kind == ONREPLY_ROUTE and name == "0":
            name = None
        if kind in (FAILURE_ROUTE, BRANCH_ROUTE, EVENT_ROUTE, TIMER_ROUTE) and name is None:
            interval = " with an interval: timer_route[name, 60]" if kind == TIMER_ROUTE else ""
            self.loader.error(pos, f"{kw_s} needs a name: {kw_s}[name]{interval}")
            return None
        if kind in (STARTUP_ROUTE, LOCAL_ROUTE, ERROR_ROUTE) and name is not None:
            self.loader.error(self._pos(label[0]), f"{kw_s} takes no name")
            return None
        rest = words[1:]
        if kind == TIMER_ROUTE:
            if len(rest) != 1 or not _INT_RE.match(rest[0][0]):
                self.loader.error(pos, f"timer_route[{name}, ...] needs the interval in seconds: "
                                       f"timer_route[{name}, 60]")
                return None
            params.append(self._int(rest[0][1]))
        elif kind == EVENT_ROUTE:
            for word, tok in rest:
                if word not in ("sync", "async"):
                    self.loader.error(self._pos(tok), f"event_route[{name}, ...]: expected 'sync' or "
                                                      f"'async', got '{word}'")
                else:
                    params.append(word)
        elif rest:
            self.loader.error(self._pos(rest[0][1]), f"{kw_s}[{name}] takes only a name")
        return ast.RouteDef(kind, name, tuple(params), body, pos)

    # -- statements --------------------------------------------------------------------------------
    @lark.v_args(meta=True)
    def block(self, meta: Any, children: list[Any]) -> ast.Block:
        return ast.Block(tuple(self._expand(children, "stmt_list")), self._pos(meta))

    def empty(self, children: list[Any]) -> None:
        return None

    def _body(self, stmt: Any, meta: Any) -> Any:
        return stmt if stmt is not None else ast.Block((), self._pos(meta))

    @lark.v_args(meta=True)
    def if_stmt(self, meta: Any, c: list[Any]) -> ast.If:
        cond, then, orelse = c
        return ast.If(cond, self._body(then, meta), orelse, self._pos(meta))

    @lark.v_args(meta=True)
    def while_stmt(self, meta: Any, c: list[Any]) -> ast.While:
        return ast.While(c[0], self._body(c[1], meta), self._pos(meta))

    # lang2x: `if exp stm` / `while exp stm`, the condition without parentheses (OpenSIPS 2.x and 3.0;
    # 3.1 requires them). Same statement, plus a migration warning.
    @lark.v_args(meta=True)
    def if_bare(self, meta: Any, c: list[Any]) -> ast.If:
        self._warn_once("if", self._pos(meta), _BARE_WARNING.format(kw="if"))
        cond, then, orelse = c
        return ast.If(cond, self._body(then, meta), orelse, self._pos(meta))

    @lark.v_args(meta=True)
    def while_bare(self, meta: Any, c: list[Any]) -> ast.While:
        self._warn_once("while", self._pos(meta), _BARE_WARNING.format(kw="while"))
        return ast.While(c[0], self._body(c[1], meta), self._pos(meta))

    @lark.v_args(meta=True)
    def for_stmt(self, meta: Any, c: list[Any]) -> ast.ForEach:
        return ast.ForEach(self._pvar(c[0]), self._pvar(c[1]), self._body(c[2], meta), self._pos(meta))

    @lark.v_args(meta=True)
    def switch_stmt(self, meta: Any, c: list[Any]) -> ast.Switch:
        return ast.Switch(c[0], tuple(c[1:]), self._pos(meta))

    @lark.v_args(meta=True)
    def case(self, meta: Any, c: list[Any]) -> ast.Case:
        return ast.Case(c[0], tuple(self._expand(c[1:], "stmt_list")), self._pos(meta))

    @lark.v_args(meta=True)
    def default(self, meta: Any, c: list[Any]) -> ast.Case:
        return ast.Case(None, tuple(self._expand(c, "stmt_list")), self._pos(meta), is_default=True)

    def cv_string(self, c: list[Token]) -> str:
        return _unquote(c[0])

    def cv_int(self, c: list[Token]) -> int:
        return self._int(c[0])

    def cv_neg_int(self, c: list[Token]) -> int:
        return self._int(c[0], negative=True)

    @lark.v_args(meta=True)
    def assign(self, meta: Any, c: list[Any]) -> ast.Assign:
        return ast.Assign(self._pvar(c[0]), str(c[1]), c[2], self._pos(meta))

    def assign_op(self, c: list[Token]) -> Token:
        return c[0]

    @lark.v_args(meta=True)
    def call(self, meta: Any, c: list[Any]) -> ast.Call:
        name, args = c
        return ast.Call(str(name), args, self._pos(meta))

    def arglist(self, c: list[Any]) -> tuple[Any, ...]:
        if len(c) == 1 and c[0] is None:
            return ()
        # An address as a whole argument is a bare word, its text (OpenSIPS: `forward(127.0.0.1, 9)`)
        return tuple(ast.Ident(a.text, a.pos) if isinstance(a, ast.IpLit) else a for a in c)

    def empty_arg(self, c: list[Any]) -> None:
        return None

    @lark.v_args(meta=True)
    def ident_arg(self, meta: Any, c: list[Token]) -> ast.Ident:
        return ast.Ident(str(c[0]), self._pos(meta))

    @lark.v_args(meta=True)
    def route_call(self, meta: Any, c: list[Any]) -> ast.RouteCall:
        name = _unquote(c[0]) if c[0].type == "STRING" else str(c[0])
        return ast.RouteCall(name, tuple(c[1:]), self._pos(meta))

    @lark.v_args(meta=True)
    def return_stmt(self, meta: Any, c: list[Any]) -> ast.Return:
        return ast.Return(c[0] if c else None, self._pos(meta))

    @lark.v_args(meta=True)
    def exit_stmt(self, meta: Any, c: list[Any]) -> ast.Exit:
        return ast.Exit(self._pos(meta))

    @lark.v_args(meta=True)
    def drop_stmt(self, meta: Any, c: list[Any]) -> ast.Drop:
        return ast.Drop(self._pos(meta))

    @lark.v_args(meta=True)
    def break_stmt(self, meta: Any, c: list[Any]) -> ast.Break:
        return ast.Break(self._pos(meta))

    @lark.v_args(meta=True)
    def async_stmt(self, meta: Any, c: list[Any]) -> ast.Async:
        route = _unquote(c[1]) if c[1].type == "STRING" else str(c[1])
        return ast.Async(c[0], route, self._pos(meta))

    @lark.v_args(meta=True)
    def launch_stmt(self, meta: Any, c: list[Any]) -> ast.Launch:
        routes = tuple(_unquote(t) if t.type == "STRING" else str(t) for t in c[1:])
        return ast.Launch(c[0], routes, self._pos(meta))

    @lark.v_args(meta=True)
    def assert_stmt(self, meta: Any, c: list[Any]) -> ast.Assert:
        message = _unquote(c[1]) if c[1] is not None else None  # assert(expr): master's form
        return ast.Assert(c[0], message, self._pos(meta))

    # -- expressions -------------------------------------------------------------------------------
    def pvar(self, c: list[Token]) -> ast.PVar:
        return self._pvar(c[0])

    def string(self, c: list[Token]) -> ast.StrLit:
        return self._string(c[0])

    def int(self, c: list[Token]) -> ast.IntLit:
        return ast.IntLit(self._int(c[0]), self._pos(c[0]))

    def ip_literal(self, c: list[Token]) -> ast.IpLit | ast.NullLit:
        """values: an IP address or network ($si == 10.0.0.0/8), parsed once here (ipmatch)."""
        text = str(c[0])
        try:
            return ast.IpLit(parse_network(text), text, self._pos(c[0]))
        except ValueError as exc:
            self.loader.error(self._pos(c[0]), f"bad IP address or network '{text}': {exc}")
            return ast.NullLit(self._pos(c[0]))

    @lark.v_args(meta=True)
    def null(self, meta: Any, c: list[Any]) -> ast.NullLit:
        return ast.NullLit(self._pos(meta))

    def paren(self, c: list[Any]) -> Any:
        """`( expr )`: the expression itself, remembered as grouped by hand (no precedence warning)."""
        self._parenthesized[id(c[0])] = c[0]
        return c[0]

    def _bin(op: str) -> Any:  # type: ignore[misc]  # noqa: N805 - runs in the class body: makes methods
        @lark.v_args(meta=True)
        def make(self: _Builder, meta: Any, c: list[Any]) -> ast.BinOp:
            left = c[0]
            if isinstance(left, ast.BinOp) and _C_RANK.get(op, 0) > _C_RANK.get(left.op, 99) \
                    and id(left) not in self._parenthesized:
                self.loader.warn(self._pos(meta), _precedence_warning(left.op, op))
            return ast.BinOp(op, left, c[-1], self._pos(meta))
        return make

    or_op = _bin("||")
    and_op = _bin("&&")
    bit_or = _bin("|")
    bit_xor = _bin("^")
    bit_and = _bin("&")
    lshift = _bin("<<")
    rshift = _bin(">>")
    add = _bin("+")
    sub = _bin("-")
    mul = _bin("*")
    div = _bin("/")
    mod = _bin("%")

    @lark.v_args(meta=True)
    def compare(self, meta: Any, c: list[Any]) -> ast.BinOp:
        return ast.BinOp(str(c[1]), c[0], c[2], self._pos(meta))

    def cmp_op(self, c: list[Token]) -> Token:
        return c[0]

    # -- lang2x: OpenSIPS 1.x/2.x core keywords in conditions (removed in 2.4) ----------------------------
    # Kept as written (ast.CoreTest / ast.Myself); compile_legacy.py gives them the 2.x meaning. Each
    # kind is warned about once per file with its 3.x replacement.
    @lark.v_args(meta=True)
    def core_test(self, meta: Any, c: list[Any]) -> ast.CoreTest | ast.Myself:
        kw_tok, op, (value, quoted) = c
        kw, pos = str(kw_tok), self._pos(meta)
        if not quoted and value == "myself":
            self._myself_op(str(op), pos)
            return self._myself(kw, str(op) == "!=", pos)
        self._warn_once(kw, pos, _keyword_warning(kw, _KEYWORD_REPLACEMENT[kw]))
        return ast.CoreTest(kw, str(op), value, quoted, pos)

    @lark.v_args(meta=True)
    def core_myself_first(self, meta: Any, c: list[Any]) -> ast.Myself:
        _, op, kw_tok = c
        return self._myself(str(kw_tok), str(op) == "!=", self._pos(meta))

    @lark.v_args(meta=True)
    def myself_test(self, meta: Any, c: list[Any]) -> ast.Myself:
        subject, op, _ = c
        pos = self._pos(meta)
        self._myself_op(str(op), pos)
        shown = subject.text if isinstance(subject, ast.PVar) else "..."
        self._warn_once("myself", pos, _keyword_warning("myself", f'is_myself("{shown}")'))
        return ast.Myself(subject, str(op) == "!=", pos)

    def _myself_op(self, op: str, pos: Pos) -> None:
        if op not in ("==", "!="):  # 2.x cfg.y: `equalop MYSELF` only
            self.loader.error(pos, f"'{op} myself': myself compares with == or != only")

    def _myself(self, kw: str, negated: bool, pos: Pos) -> ast.Myself:
        pv = _KEYWORD_PVAR.get(kw, "")
        self._warn_once(f"{kw} == myself", pos, _keyword_warning(f"{kw} == myself", f'is_myself("${pv}")'))
        return ast.Myself(kw, negated, pos)

    def core_op(self, c: list[Token]) -> Token:
        return c[0]

    def myself_op(self, c: list[Token]) -> Token:
        return c[0]

    def core_value(self, c: list[Token]) -> tuple[str, bool]:
        tok = c[0]
        return (_unquote(tok), True) if tok.type == "STRING" else (str(tok), False)

    @lark.v_args(meta=True)
    def not_op(self, meta: Any, c: list[Any]) -> ast.UnaryOp:
        return ast.UnaryOp("!", c[-1], self._pos(meta))

    @lark.v_args(meta=True)
    def bit_not(self, meta: Any, c: list[Any]) -> ast.UnaryOp:
        return ast.UnaryOp("~", c[-1], self._pos(meta))

    @lark.v_args(meta=True)
    def neg(self, meta: Any, c: list[Any]) -> Any:
        operand = c[-1]
        if isinstance(operand, ast.IntLit):  # -1 is a literal, not an operation
            return ast.IntLit(-operand.value, self._pos(meta))
        return ast.UnaryOp("-", operand, self._pos(meta))
