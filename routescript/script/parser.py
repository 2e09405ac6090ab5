"""opensips.cfg text -> typed AST (routescript.script.ast), with messages for the script's author.

The grammar is grammar/routescript.lark (lark, LALR, contextual lexer), built once per process.
Syntax errors are collected, not just the first: a missing ';' is reported and parsing goes on as if
it were there; after any other error the parser drops back to the enclosing block and carries on, and
further errors on the same line are not reported (they are usually echoes of the first).

`include_file "x.cfg"` / `import_file "x.cfg"` are resolved here, relative to the including file's
directory, at the top level (global part, routes) and inside route blocks (statements). Nodes from an
included file carry that file's name in their positions. Choice (as Kamailio documents it; the OpenSIPS
docs are silent): import_file is include_file that tolerates a missing file (a warning, not an error).
"""

from __future__ import annotations

import functools
import os
import re
from importlib import resources
from typing import Any, cast

import lark
from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import ast
from .ast import Pos
from .context import (BRANCH_ROUTE, ERROR_ROUTE, EVENT_ROUTE, FAILURE_ROUTE, LOCAL_ROUTE, ONREPLY_ROUTE,
                      REQUEST_ROUTE, STARTUP_ROUTE, TIMER_ROUTE)
from .diagnostics import Diagnostic, ScriptError, SourceLines
from .pvparse import PVarSyntaxError, parse_pvar, parse_string, unescape

ROUTE_KINDS = {
    "route": REQUEST_ROUTE, "request_route": REQUEST_ROUTE, "onreply_route": ONREPLY_ROUTE,
    "failure_route": FAILURE_ROUTE, "branch_route": BRANCH_ROUTE, "local_route": LOCAL_ROUTE,
    "startup_route": STARTUP_ROUTE, "timer_route": TIMER_ROUTE, "event_route": EVENT_ROUTE,
    "error_route": ERROR_ROUTE,
}
# The keyword of each kind, for messages.
ROUTE_KEYWORD = {REQUEST_ROUTE: "route", ONREPLY_ROUTE: "onreply_route", FAILURE_ROUTE: "failure_route",
                 BRANCH_ROUTE: "branch_route", LOCAL_ROUTE: "local_route", STARTUP_ROUTE: "startup_route",
                 TIMER_ROUTE: "timer_route", EVENT_ROUTE: "event_route", ERROR_ROUTE: "error_route"}

MAX_ERRORS = 50
MAX_INCLUDE_DEPTH = 16
MAX_FILE_SIZE = 8 * 1024 * 1024  # bound what we read: a configuration is a few hundred KB at most

@functools.cache
def _lark() -> lark.Lark:
    """The LALR parser, built once (the grammar is compiled on first use)."""
    grammar = resources.files("routescript.grammar").joinpath("routescript.lark").read_text()
    return lark.Lark(grammar, parser="lalr", lexer="contextual", start=["start", "stmt_list"],
                     propagate_positions=True, maybe_placeholders=True)


# ---------------------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------------------

def parse_file(path: str | os.PathLike[str]) -> ast.Script:
    """Parse a configuration file (and the files it includes). Raises ScriptError, or OSError when the
    file itself cannot be read."""
    path = os.fspath(path)
    text = _read(path)
    return parse_text(text, path)


def parse_text(text: str, filename: str = "<script>") -> ast.Script:
    """Parse configuration text; `filename` names it in positions and resolves relative includes."""
    loader = _Loader()
    script = loader.load_main(text, filename)
    if loader.errors:
        raise ScriptError(sorted(loader.errors, key=_diag_key))
    return script


def _diag_key(d: Diagnostic) -> tuple[str, int, int]:
    return (d.pos.file, d.pos.line, d.pos.col)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise OSError(f"{path}: larger than {MAX_FILE_SIZE} bytes")
    return data.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------------
# loading: one _Loader per parse, shared by the main file and its includes
# ---------------------------------------------------------------------------------------------------

class _Include:
    __slots__ = ("keyword", "path", "pos")

    def __init__(self, keyword: str, path: str, pos: Pos) -> None:
        self.keyword, self.path, self.pos = keyword, path, pos


class _Loader:
    def __init__(self) -> None:
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self.sources = SourceLines()
        self.stack: list[str] = []
        self.files: list[str] = []
        self.texts: dict[str, str] = {}

    def error(self, pos: Pos, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(self.sources.diag(pos, message))

    def warn(self, pos: Pos, message: str) -> None:
        self.warnings.append(self.sources.diag(pos, message, "warning"))

    def load_main(self, text: str, filename: str) -> ast.Script:
        items = self.parse(text, filename, "start") or []
        script = ast.Script(warnings=self.warnings, files=tuple(self.files), texts=dict(self.texts))
        for item in items:
            if isinstance(item, ast.GlobalParam):
                script.globals.append(item)
            elif isinstance(item, ast.LoadModule):
                script.loadmodules.append(item)
            elif isinstance(item, ast.ModParam):
                script.modparams.append(item)
            elif isinstance(item, ast.RouteDef):
                script.routes.append(item)
        return script

    def parse(self, text: str, filename: str, start: str) -> list[Any] | None:
        self.sources.add(filename, text)
        self.texts[filename] = text
        self.files.append(filename)
        self.stack.append(filename)
        try:
            recovery = _Recovery(self, filename, text)
            try:
                tree = _lark().parse(text, start=start, on_error=recovery.on_error)
            except UnexpectedInput as exc:  # not recoverable (e.g. at end of input)
                recovery.report(exc)
                return None
            if recovery.failed:
                return None
            built: list[Any] = _Builder(self, filename).transform(tree)
            return built
        finally:
            self.stack.pop()

    def include(self, inc: _Include, start: str, base_file: str) -> list[Any]:
        base_dir = os.path.dirname(base_file) if base_file and not base_file.startswith("<") else ""
        path = inc.path if os.path.isabs(inc.path) else os.path.normpath(os.path.join(base_dir, inc.path))
        if path in self.stack:
            self.error(inc.pos, f"{inc.keyword} \"{inc.path}\": the file includes itself (through "
                                f"{' -> '.join(os.path.basename(s) for s in self.stack)})")
            return []
        if len(self.stack) >= MAX_INCLUDE_DEPTH:
            self.error(inc.pos, f"{inc.keyword} \"{inc.path}\": includes nested more than "
                                f"{MAX_INCLUDE_DEPTH} deep")
            return []
        try:
            text = _read(path)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if inc.keyword == "import_file":
                self.warn(inc.pos, f"import_file \"{inc.path}\": {reason}; skipped")
            else:
                self.error(inc.pos, f"include_file \"{inc.path}\": cannot read {path}: {reason}")
            return []
        return self.parse(text, path, start) or []


# ---------------------------------------------------------------------------------------------------
# syntax errors: messages and recovery
# ---------------------------------------------------------------------------------------------------

_PRETTY = {
    "SEMICOLON": "';'", "LPAR": "'('", "RPAR": "')'", "LBRACE": "'{'", "RBRACE": "'}'", "LSQB": "'['",
    "RSQB": "']'", "COMMA": "','", "EQUAL": "'='", "COLON": "':'", "NAME": "a name",
    "RNAME": "a route name", "STRING": "a string", "INT": "a number", "PVAR": "a pseudo-variable",
    "GWORD": "a value", "MBOOL": "yes/no", "$END": "end of file",
}


# The core keywords OpenSIPS 2.4 removed from the language (`if (uri == myself)`), with what 3.x
# scripts write instead.
_REMOVED_KEYWORDS = {
    "uri": '$ru (and is_myself("$ru") for "== myself")', "method": "$rm (or is_method())",
    "src_ip": "$si", "src_port": "$sp", "dst_ip": "$Ri", "dst_port": "$Rp",
    "from_uri": '$fu (and is_myself("$fu") for "== myself")',
    "to_uri": '$tu (and is_myself("$tu") for "== myself")', "proto": "$pr", "af": "$af",
    "status": "$rs", "myself": 'is_myself("$ru")',
}


def _pretty(tok_type: str) -> str:
    if tok_type in _PRETTY:
        return _PRETTY[tok_type]
    term = next((t for t in _lark().terminals if t.name == tok_type), None)
    if term is not None and term.pattern.type == "str":
        return f"'{term.pattern.value}'"
    return tok_type.lower()


def _show(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    value = str(tok)
    if len(value) > 30:
        value = value[:27] + "..."
    return f"'{value}'"


class _Recovery:
    def __init__(self, loader: _Loader, filename: str, text: str) -> None:
        self.loader = loader
        self.filename = filename
        self.text = text
        self.last_line = -1
        self.failed = False
        self.count = 0
        self.err_tok_line = -1

    def pos(self, line: int | None, col: int | None) -> Pos:
        return Pos(self.filename, line or 1, col or 1)

    def emit(self, pos: Pos, message: str) -> None:
        self.failed = True
        if pos.line == self.last_line:
            return  # an echo of the error just reported
        self.last_line = pos.line
        self.loader.error(pos, message)

    # lark calls this for each error; returning True resumes parsing
    def on_error(self, exc: UnexpectedInput) -> bool:
        self.count += 1
        if self.count > 4 * MAX_ERRORS:
            return False
        if isinstance(exc, UnexpectedCharacters):
            self._bad_characters(exc)
            return True
        if isinstance(exc, UnexpectedToken):
            return self._bad_token(exc)
        return False

    def report(self, exc: UnexpectedInput) -> None:
        """A final error lark could not resume from."""
        if isinstance(exc, UnexpectedToken):
            self.emit(*self._describe(exc))
        elif isinstance(exc, UnexpectedCharacters):
            self._bad_characters(exc, resume=False)
        elif isinstance(exc, UnexpectedEOF):
            self.emit(self.pos(exc.line, exc.column), "unexpected end of file")
        else:
            self.emit(self.pos(getattr(exc, "line", 1), getattr(exc, "column", 1)), str(exc))

    def _bad_characters(self, exc: UnexpectedCharacters, resume: bool = True) -> None:
        pos = self.pos(exc.line, exc.column)
        at = cast(int, exc.pos_in_stream)  # always set when the lexer raises
        ch = self.text[at] if at < len(self.text) else ""
        eol = self.text.find("\n", at)
        eol = len(self.text) if eol < 0 else eol
        skip_to = at + 1
        if ch in "\"'":
            msg = "unterminated string (a string must end on the line it starts)"
            skip_to = eol
        elif self.text.startswith("/*", at):
            msg = "unterminated comment: '/*' without '*/'"
            skip_to = len(self.text)
        elif ch == "$":
            msg = "bad pseudo-variable: expected $name, $name(key) or $(name...)"
            m = re.compile(r"\$\(?[^\s;,)]*\)?").match(self.text, at)
            skip_to = m.end() if m else skip_to
        else:
            msg = f"unexpected character {ch!r}"
        self.emit(pos, msg)
        if resume:
            state: Any = exc.interactive_parser.lexer_thread.state
            state.line_ctr.feed(self.text[state.line_ctr.char_pos:skip_to])
            if ch in "\"'":  # the statement is lost: carry on with the next one
                self._unwind(exc.interactive_parser)

    def _bad_token(self, exc: UnexpectedToken) -> bool:
        ip = exc.interactive_parser
        tok = exc.token
        text = str(tok)
        if tok.type != "$END" and tok.line == self.err_tok_line:
            # the rest of a statement already reported on this line: recover without a second message
            # (its position would be some earlier token's, e.g. "expected ';' after '{'")
            if tok.type in ("SEMICOLON", "RBRACE"):
                self._unwind(ip)
                return True
            self._unwind(ip)
            self._skip_to_statement_end(ip)
            return True
        if tok.type != "$END":
            self.err_tok_line = tok.line
        if text.startswith("/*") and tok.type != "STRING":
            self.emit(*self._describe(exc))
            return False
        if self._missing_semicolon(exc):
            pos, msg = self._describe(exc)
            self.emit(pos, msg)
            try:  # go on as if the ';' were there, lexing the token again in the new parser state
                ip.feed_token(Token("SEMICOLON", ";"))
                if tok.type == "$END":
                    ip.feed_token(tok)
                else:
                    self._rewind(ip, tok)
                return True
            except UnexpectedInput:
                pass
        else:
            pos, msg = self._describe(exc)
            self.emit(pos, msg)
            if msg.startswith("unknown route kind"):
                self._skip_block(exc)
        if tok.type == "$END":
            return False
        if self._unwind(ip):
            # a broken top-level item (modparam("m", "p", foo)): its rest is skipped to the end of the
            # line, as top-level items hold no ';' to resynchronise on
            state: Any = ip.lexer_thread.state
            eol = self.text.find("\n", state.line_ctr.char_pos)
            eol = len(self.text) if eol < 0 else eol
            if eol > state.line_ctr.char_pos:
                state.line_ctr.feed(self.text[state.line_ctr.char_pos:eol])
        return True

    def _skip_to_statement_end(self, ip: Any) -> None:
        """Skip the text up to the next ';' on the current line (or its end)."""
        state = ip.lexer_thread.state
        i = state.line_ctr.char_pos
        eol = self.text.find("\n", i)
        eol = len(self.text) if eol < 0 else eol
        semi = self.text.find(";", i, eol)
        end = semi + 1 if semi >= 0 else eol
        if end > i:
            state.line_ctr.feed(self.text[i:end])

    @staticmethod
    def _rewind(ip: Any, tok: Any) -> None:
        ctr = ip.lexer_thread.state.line_ctr
        ctr.char_pos = tok.start_pos
        ctr.line = tok.line
        ctr.column = tok.column
        ctr.line_start_pos = tok.start_pos - tok.column + 1

    @staticmethod
    def _missing_semicolon(exc: UnexpectedToken) -> bool:
        """';' is what the statement needs here (not merely an empty statement/item that would fit)."""
        expected = exc.expected
        return ("SEMICOLON" in expected and exc.token.type != "SEMICOLON" and "IF" not in expected
                and "LOADMODULE" not in expected)

    def _skip_block(self, exc: UnexpectedToken) -> None:
        """Skip the text from the bad token to the end of the `{ ... }` that follows it."""
        state: Any = exc.interactive_parser.lexer_thread.state
        i = state.line_ctr.char_pos
        start = self.text.find("{", exc.token.start_pos or 0)
        if start < 0:
            return
        depth, j, quote = 0, start, ""
        while j < len(self.text):
            c = self.text[j]
            if quote:
                if c == "\\":
                    j += 1
                elif c == quote or c == "\n":
                    quote = ""
            elif c in "\"'":
                quote = c
            elif c == "#":
                nl = self.text.find("\n", j)
                j = len(self.text) if nl < 0 else nl
                continue
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        if j + 1 > i:
            state.line_ctr.feed(self.text[i:j + 1])

    def _previous_token(self, ip: Any) -> Token | None:
        for value in reversed(ip.parser_state.value_stack):
            if isinstance(value, Token):
                return value
            if isinstance(value, Tree):
                toks: list[Token] = list(value.scan_values(lambda v: isinstance(v, Token)))
                if toks:
                    return toks[-1]
        return None

    def _call_name(self, ip: Any) -> str | None:
        """The function whose closing ')' is on top of the stack: `name(`...`)`."""
        stack = ip.parser_state.value_stack
        if not stack or not (isinstance(stack[-1], Token) and stack[-1].type == "RPAR"):
            if stack and isinstance(stack[-1], Tree) and stack[-1].data in ("call", "route_call", "modparam"):
                return {"route_call": "route", "modparam": "modparam"}.get(
                    str(stack[-1].data), str(stack[-1].children[0]))
            return None
        depth = 0
        for i in range(len(stack) - 1, -1, -1):
            v = stack[i]
            if isinstance(v, Token) and v.type == "RPAR":
                depth += 1
            elif isinstance(v, Token) and v.type == "LPAR":
                depth -= 1
                if depth == 0:
                    if i > 0 and isinstance(stack[i - 1], Token) and stack[i - 1].type in (
                            "NAME", "ROUTE", "MODPARAM", "EXIT", "DROP", "RETURN", "ASYNC", "LAUNCH",
                            "ASSERT"):
                        return str(stack[i - 1])
                    return None
        return None

    def _describe(self, exc: UnexpectedToken) -> tuple[Pos, str]:
        ip = exc.interactive_parser
        tok = exc.token
        expected = set(exc.expected)
        stack = ip.parser_state.value_stack
        prev = self._previous_token(ip)
        here = self.pos(tok.line, tok.column) if tok.type != "$END" else self._eof_pos(prev)
        if str(tok).startswith("/*") and tok.type != "STRING":
            return here, "unterminated comment: '/*' without '*/'"
        if tok.type == "$END" and "RBRACE" in expected:
            opener = next((v for v in reversed(stack) if isinstance(v, Token) and v.type == "LBRACE"), None)
            if opener is not None:
                return (self.pos(opener.line, opener.column),
                        "this '{' is never closed: missing '}' before the end of the file")
            return here, "missing '}' before the end of the file"
        if self._missing_semicolon(exc) and prev is not None:
            at = self.pos(prev.end_line, prev.end_column)
            name = self._call_name(ip)
            if name is not None:
                return at, f"expected ';' after {name}(...)"
            return at, f"expected ';' after {_show(prev)}"
        # `rute[main] {` at the top level: a NAME where a route keyword belongs
        if str(tok)[:1] in ("[", "{") and "EQUAL" in expected and prev is not None and prev.type == "NAME":
            return (self.pos(prev.line, prev.column),
                    f"unknown route kind '{prev}' (expected one of: {', '.join(sorted(ROUTE_KINDS))})")
        if (tok.type in ("STRING", "LPAR") and "EQUAL" in expected and prev is not None
                and prev.type == "NAME"):
            return (self.pos(prev.line, prev.column),
                    f"unknown keyword '{prev}': expected loadmodule, modparam, a route or 'name = value'")
        if prev is not None and prev.type == "NAME" and str(prev) in _REMOVED_KEYWORDS and (
                str(tok) in ("==", "!=", "=~", "!~", "<", ">", "<=", ">=", "=") or str(prev) == "myself"):
            return (self.pos(prev.line, prev.column),
                    (f"'{prev}' is an OpenSIPS 1.x/2.x core keyword, removed in OpenSIPS 2.4: use "
                     f"{_REMOVED_KEYWORDS[str(prev)]}"))
        if tok.type == "RBRACE" and "LOADMODULE" in expected:
            return here, "unexpected '}': no block is open here"
        if tok.type == "ELSE":
            return here, "'else' without a matching 'if' (is there a ';' after the if's '}'?)"
        names = sorted({_pretty(e) for e in expected if not e.startswith("__ANON")})
        if len(names) > 8:
            names = names[:8] + ["..."]
        what = f"unexpected {_show(tok)}"
        if prev is not None and tok.type != "$END":
            what += f" after {_show(prev)}"
        choices = " or ".join(names) if len(names) <= 2 else "one of: " + ", ".join(names)
        return here, f"{what}; expected {choices}"

    def _eof_pos(self, prev: Token | None) -> Pos:
        if prev is not None and prev.end_line is not None:
            return self.pos(prev.end_line, prev.end_column)
        lines = self.text.splitlines() or [""]
        return self.pos(len(lines), len(lines[-1]) + 1)

    def _unwind(self, ip: Any) -> bool:
        """Drop back to the innermost state that reads statements (a block) or top-level items.
        True when that is the top level."""
        ps = ip.parser_state
        states = ps.parse_conf.parse_table.states
        from lark.parsers.lalr_analysis import Shift

        def shifts(actions: Any, term: str) -> bool:
            # a state that *reads* the next item; a state that merely reduces on that lookahead (after
            # `loadmodule "x"`, say) is still in the middle of the broken item
            act = actions.get(term)
            return act is not None and act[0] is Shift

        while len(ps.state_stack) > 1:
            actions = states[ps.state_stack[-1]]
            if shifts(actions, "IF"):
                return False
            if shifts(actions, "LOADMODULE"):
                return True
            ps.state_stack.pop()
            ps.value_stack.pop()
        return True


# ---------------------------------------------------------------------------------------------------
# parse tree -> AST
# ---------------------------------------------------------------------------------------------------

_INT_RE = re.compile(r"^-?(0[xX][0-9a-fA-F]+|0[bB][01]+|0[0-7]+|[0-9]+)$")
_BOOLS = {"yes": True, "on": True, "true": True, "no": False, "off": False, "false": False}
_SOCKET_PARAMS = {"socket", "listen"}
_ADDR_RE = re.compile(r"^(?:(?P<proto>[A-Za-z][A-Za-z0-9_]*):(?=.*:|\[|[^:]*$))?"
                      r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(?P<port>[^:]+))?$")


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


class _Builder(lark.Transformer):  # type: ignore[type-arg]
    """Parse tree of one file -> AST nodes; problems go to the loader's diagnostics."""

    def __init__(self, loader: _Loader, filename: str) -> None:
        super().__init__(visit_tokens=False)
        self.loader = loader
        self.file = filename

    # -- helpers -----------------------------------------------------------------------------------
    def _pos(self, meta_or_tok: Any) -> Pos:
        line = getattr(meta_or_tok, "line", None)
        col = getattr(meta_or_tok, "column", None)
        return Pos(self.file, line or 1, col or 1)

    def _tok_pos_at(self, tok: Token) -> Any:
        line, col = tok.line or 1, tok.column or 1
        return lambda off: Pos(self.file, line, col + off)

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
        return tuple(c)

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
        return ast.Assert(c[0], _unquote(c[1]), self._pos(meta))

    # -- expressions -------------------------------------------------------------------------------
    def pvar(self, c: list[Token]) -> ast.PVar:
        return self._pvar(c[0])

    def string(self, c: list[Token]) -> ast.StrLit:
        return self._string(c[0])

    def int(self, c: list[Token]) -> ast.IntLit:
        return ast.IntLit(self._int(c[0]), self._pos(c[0]))

    @lark.v_args(meta=True)
    def null(self, meta: Any, c: list[Any]) -> ast.NullLit:
        return ast.NullLit(self._pos(meta))

    def _bin(op: str) -> Any:  # type: ignore[misc]  # noqa: N805 - runs in the class body: makes methods
        @lark.v_args(meta=True)
        def make(self: _Builder, meta: Any, c: list[Any]) -> ast.BinOp:
            return ast.BinOp(op, c[0], c[-1], self._pos(meta))
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
