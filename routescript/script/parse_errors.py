"""Syntax errors: lark's exceptions -> messages for the script's author, and recovery so parsing goes on.

How it reads like a good compiler's (rustc and clang are the models):
  - the first error is at its real cause and names what is there: `unexpected character '`'`, not
    `expected ';' after '{'` (a missing ';' is only reported where a ';' would make the next token fit);
  - a missing ';' is reported and parsing continues as if it were there;
  - after any other error the parser drops back to the innermost block (or the top level) and skips the
    broken statement: to its ';', to the block's '}', or over the `{ ... }` (and `else` branches) it
    opened, so the rest of the route is still read as statements of that route. At the top level it
    skips to the next line that starts a top-level item (loadmodule, modparam, a route, `name =`);
  - an error met before the parser has read any token since the last recovery is a consequence of that
    recovery (a cascade) and is not reported, nor is a second error on the line of the previous one;
    the loader drops exact duplicates.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any, Protocol, cast

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .pos import Pos
from .grammar import MAX_ERRORS, ROUTE_KINDS, _lark



class ErrorSink(Protocol):
    """Where the error reporter puts its diagnostics (the parser's loader)."""

    def error(self, pos: Pos, message: str) -> None: ...

_PRETTY = {
    "SEMICOLON": "';'", "LPAR": "'('", "RPAR": "')'", "LBRACE": "'{'", "RBRACE": "'}'", "LSQB": "'['",
    "RSQB": "']'", "COMMA": "','", "EQUAL": "'='", "COLON": "':'", "NAME": "a name",
    "RNAME": "a route name", "STRING": "a string", "INT": "a number", "PVAR": "a pseudo-variable",
    "GWORD": "a value", "MBOOL": "yes/no", "$END": "end of file",
}


_ELSE = re.compile(r"else\b")

# Words that begin a statement: met at the top level they mean a route was closed too early.
_STATEMENT_WORDS = {"if", "else", "switch", "while", "for", "return", "exit", "drop", "break", "async",
                    "launch", "assert", "case", "default"}

# The route keywords' terminals (grammar: route_kw)
_ROUTE_TOKENS = {k.upper() for k in ROUTE_KINDS}

# A line that starts a top-level item: where recovery at the top level resumes.
_TOP_START = re.compile(
    r"[ \t]*(?:(?:loadmodule|modparam|include_file|import_file)\b"
    r"|(?:" + "|".join(sorted(ROUTE_KINDS)) + r")[ \t]*(?:[\[{]|$)"
    r"|[A-Za-z_][A-Za-z0-9_]*[ \t]*=(?!=))", re.M)


@functools.cache
def _terminal_patterns() -> tuple[tuple[str, re.Pattern[str]], ...]:
    """Each terminal of the grammar with its compiled pattern: what text a parser state could lex."""
    return tuple((t.name, re.compile(t.pattern.to_regexp())) for t in _lark().terminals)


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


def _is_stray(tok: Token, expected: set[str]) -> bool:
    """A token only the catch-all global-value terminal matched, starting with a character no rule of
    the language starts with (a backtick, '@', '\\'): report the character itself."""
    return tok.type == "GWORD" and "GWORD" not in expected and not (tok[:1].isalnum() or tok[:1] in "_$-.[:*")


class _Recovery:
    def __init__(self, loader: ErrorSink, filename: str, text: str) -> None:
        self.loader = loader
        self.filename = filename
        self.text = text
        self.last_line = -1
        self.failed = False
        self.count = 0
        self.resumed_at = -1     # where parsing resumed after the last skip (cascade detection)
        self.final_reported = False

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
        if self.final_reported:
            return
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
            msg = "unterminated string: no closing quote before the end of the file"  # strings may span lines
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
            ip = exc.interactive_parser
            self._move_to(ip, skip_to)
            if ch in "\"'":  # the statement is lost: carry on with the next one
                self._unwind(ip)

    def _bad_token(self, exc: UnexpectedToken) -> bool:
        ip = exc.interactive_parser
        tok = exc.token
        expected = set(exc.expected)
        if str(tok).startswith("/*") and tok.type != "STRING":
            self.emit(*self._describe(exc))
            self.final_reported = True
            return False
        if _is_stray(tok, expected):
            self.emit(self.pos(tok.line, tok.column), f"unexpected character {tok[0]!r}")
            self._move_to(ip, cast(int, tok.start_pos) + 1)  # skip the character, lex the rest again
            return True
        if self._route_inside_block(exc):
            return True
        if self._missing_semicolon(exc):
            self.emit(*self._describe(exc, missing_semicolon=True))
            try:  # go on as if the ';' were there, lexing the token again in the new parser state
                ip.feed_token(Token("SEMICOLON", ";"))
                if tok.type == "$END":
                    ip.feed_token(tok)
                else:
                    self._move_to(ip, cast(int, tok.start_pos))
                return True
            except UnexpectedInput:
                pass
        if self._is_cascade(ip):
            self.failed = True
        else:
            self.emit(*self._describe(exc))
        if tok.type == "$END":
            self.final_reported = True
            return False
        self._resync(ip, tok)
        return True

    def _route_inside_block(self, exc: UnexpectedToken) -> bool:
        """`failure_route[1] {` (or loadmodule, modparam) met inside a block: a '}' is missing above it.
        Reported at the keyword; parsing goes on as if every open block were closed there."""
        tok = exc.token
        starts_route = tok.type in _ROUTE_TOKENS and re.compile(r"\s*[\[{]").match(
            self.text, cast(int, tok.end_pos))
        if not (starts_route or tok.type in ("LOADMODULE", "MODPARAM")) or "LOADMODULE" in exc.expected:
            return False
        ip = exc.interactive_parser
        opener = self._unclosed_brace(ip.parser_state.value_stack, cast(int, tok.start_pos))
        if opener is None:
            return False
        self.emit(self.pos(tok.line, tok.column),
                  f"a '}}' is missing before '{tok}' (the '{{' on line {opener.line} is never closed)")
        probe = ip.copy()  # type: ignore[no-untyped-call]
        try:
            for _ in range(len(probe.parser_state.value_stack) + 1):
                if "LOADMODULE" in probe.choices():
                    break
                probe.feed_token(Token("RBRACE", "}"))
            else:
                return False
        except UnexpectedInput:
            return False
        ip.parser_state.state_stack[:] = probe.parser_state.state_stack
        ip.parser_state.value_stack[:] = probe.parser_state.value_stack
        self._move_to(ip, cast(int, tok.start_pos))
        return True

    def _unclosed_brace(self, stack: list[Any], end: int) -> Pos | None:
        """The '{' that lacks its '}' when the parser finds one missing at `end`. The parser only knows
        the braces still open (the route's, when an inner block took its '}'); the indentation tells which
        the author left open: the first `{ ... }` pair up to `end` whose '}' starts a line indented less
        than the line of its '{' (rustc and clang use the same hint). Else the innermost open '{'."""
        opened = [v for v in stack if isinstance(v, Token) and v.type == "LBRACE"]
        if not opened:
            return None
        innermost = opened[-1]
        text, i, pending = self.text, cast(int, opened[0].start_pos), []
        while i < end:
            atom_end = self._skip_atom(i)
            if atom_end is not None:
                i = atom_end
                continue
            if text[i] == "{":
                pending.append(i)
            elif text[i] == "}" and pending:
                start = pending.pop()
                if self._starts_line(i) and self._indent(i) < self._indent(start):
                    return self._pos_at(start)
            i += 1
        return self.pos(innermost.line, innermost.column)

    def _starts_line(self, at: int) -> bool:
        line_start = self.text.rfind("\n", 0, at) + 1
        return not self.text[line_start:at].strip()

    def _indent(self, at: int) -> int:
        line_start = self.text.rfind("\n", 0, at) + 1
        line = self.text[line_start:at + 1].expandtabs(8)
        return len(line) - len(line.lstrip())

    def _pos_at(self, at: int) -> Pos:
        line_start = self.text.rfind("\n", 0, at) + 1
        return self.pos(self.text.count("\n", 0, at) + 1, at - line_start + 1)

    def _is_cascade(self, ip: Any) -> bool:
        """No token read since the last recovery: this error follows from where that one resumed."""
        if self.resumed_at < 0:
            return False
        prev = self._previous_token(ip)
        return prev is None or prev.start_pos is None or prev.start_pos < self.resumed_at

    # ---- recovery ------------------------------------------------------------------------------

    def _resync(self, ip: Any, tok: Token) -> None:
        """Drop the broken statement (or top-level item) and resume after it."""
        top, open_braces = self._unwind(ip)
        start = cast(int, tok.start_pos)
        end = self._skip_top(start, open_braces) if top else self._skip_statement(start, open_braces)
        if end <= start and start == self.resumed_at:
            end = start + max(len(str(tok)), 1)  # resumed here already: never loop on one token
        self._move_to(ip, end)
        self.resumed_at = end

    def _skip_space(self, i: int) -> int:
        """The next position after blanks and comments."""
        text, n = self.text, len(self.text)
        while i < n:
            if text[i] in " \t\r\n\f":
                i += 1
            elif text[i] == "#" or text.startswith("//", i):
                nl = text.find("\n", i)
                i = n if nl < 0 else nl
            elif text.startswith("/*", i):
                end = text.find("*/", i + 2)
                i = n if end < 0 else end + 2
            else:
                break
        return i

    def _skip_atom(self, i: int) -> int | None:
        """The end of a string or comment starting at i (None when none starts there)."""
        text, n = self.text, len(self.text)
        c = text[i]
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:   # strings may span lines (cfg.lex keeps the newline)
                j += 2 if text[j] == "\\" else 1
            return min(j + 1, n)
        if c == "#" or text.startswith("//", i) or text.startswith("/*", i):
            return self._skip_space(i)
        return None

    def _code(self, i: int) -> Iterator[tuple[int, str]]:
        """The characters from i on that are code, with their index (strings and comments skipped)."""
        text, n = self.text, len(self.text)
        while i < n:
            atom_end = self._skip_atom(i)
            if atom_end is not None:
                i = atom_end
                continue
            yield i, text[i]
            i += 1

    def _skip_statement(self, start: int, depth: int) -> int:
        """From a broken statement's bad token: past its ';', or past the `{ ... }` it opened (and any
        `else` branches), or up to the '}' that closes the enclosing block. `depth` counts the braces the
        statement had opened before the bad token."""
        for i, c in self._code(start):
            if c == "{":
                depth += 1
            elif c == "}":
                if depth == 0:
                    return i  # the enclosing block's own '}'
                depth -= 1
                if depth == 0 and not _ELSE.match(self.text, self._skip_space(i + 1)):
                    return i + 1   # an `else` goes on: its branch is part of the statement
            elif c == ";" and depth == 0:
                return i + 1
        return len(self.text)

    def _skip_top(self, start: int, depth: int) -> int:
        """From a broken top-level item: to the next line that starts a top-level item outside any
        braces (statements met on the way are part of the same mistake, a route closed too early)."""
        for i, c in self._code(start):
            if c == "{":
                depth += 1
            elif c == "}":
                depth = max(depth - 1, 0)
            elif c == "\n" and depth == 0 and _TOP_START.match(self.text, i + 1):
                return i + 1
        return len(self.text)

    def _move_to(self, ip: Any, at: int) -> None:
        """Make the lexer go on from text position `at`."""
        ctr = ip.lexer_thread.state.line_ctr
        line_start = self.text.rfind("\n", 0, at) + 1
        ctr.char_pos = at
        ctr.line = self.text.count("\n", 0, at) + 1
        ctr.column = at - line_start + 1
        ctr.line_start_pos = line_start

    def _missing_semicolon(self, exc: UnexpectedToken) -> bool:
        """A ';' is missing: the statement could end here, and the token would fit after a ';'."""
        if "SEMICOLON" not in exc.expected or exc.token.type == "SEMICOLON":
            return False
        ip = exc.interactive_parser
        if self._previous_token(ip) is None:
            return False
        probe = ip.copy(deepcopy_values=False)  # type: ignore[no-untyped-call]
        try:
            probe.feed_token(Token("SEMICOLON", ";"))
        except UnexpectedInput:
            return False
        if "LOADMODULE" in probe.choices():
            return False  # a top-level item: OpenSIPS needs no ';' there, the item itself is broken
        accepts = probe.accepts()
        tok = exc.token
        if tok.type == "$END":
            return "$END" in accepts
        at = cast(int, tok.start_pos)
        return any(rx.match(self.text, at) for name, rx in _terminal_patterns() if name in accepts)

    def _unwind(self, ip: Any) -> tuple[bool, int]:
        """Drop back to the innermost state that reads the statements of a block (or of an included
        file), or the top-level items. Returns (at the top level, '{' dropped on the way)."""
        ps = ip.parser_state
        states = ps.parse_conf.parse_table.states
        from lark.parsers.lalr_analysis import Shift

        def shifts(actions: Any, term: str) -> bool:
            # a state that *reads* the next item; a state that merely reduces on that lookahead (after
            # `loadmodule "x"`, say) is still in the middle of the broken item
            act = actions.get(term)
            return act is not None and act[0] is Shift

        opened = 0
        while len(ps.state_stack) > 1:
            actions = states[ps.state_stack[-1]]
            # a block reads statements until its '}' (an included file: until its end); the state after
            # `if (...)` reads one statement and is not a place to resume
            if shifts(actions, "IF") and ("RBRACE" in actions or "$END" in actions):
                return False, opened
            if shifts(actions, "LOADMODULE"):
                return True, opened
            ps.state_stack.pop()
            value = ps.value_stack.pop()
            if isinstance(value, Token) and value.type == "LBRACE":
                opened += 1
            elif isinstance(value, Token) and value.type == "RBRACE":
                opened = max(opened - 1, 0)
        return True, opened

    # ---- messages ------------------------------------------------------------------------------

    def _previous_token(self, ip: Any) -> Token | None:
        for value in reversed(ip.parser_state.value_stack):
            if isinstance(value, Token):
                return value
            if isinstance(value, Tree):
                toks: list[Token] = list(value.scan_values(lambda v: isinstance(v, Token)))
                meta = value.meta
                if toks and not meta.empty and meta.end_line is not None:
                    # at the tree's real end, past its filtered tokens (a call's ')'): since `if exp stm`
                    # (lang2x) a call may be reduced before the error shows, on the statement after it
                    last = toks[-1]
                    return Token(last.type, last.value, last.start_pos, last.line, last.column,
                                 meta.end_line, meta.end_column, meta.end_pos)
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

    def _describe(self, exc: UnexpectedToken, missing_semicolon: bool = False) -> tuple[Pos, str]:
        ip = exc.interactive_parser
        tok = exc.token
        expected = set(exc.expected)
        stack = ip.parser_state.value_stack
        prev = self._previous_token(ip)
        here = self.pos(tok.line, tok.column) if tok.type != "$END" else self._eof_pos(prev)
        if str(tok).startswith("/*") and tok.type != "STRING":
            return here, "unterminated comment: '/*' without '*/'"
        if tok.type == "$END" and "RBRACE" in expected:
            opener = self._unclosed_brace(stack, len(self.text))
            if opener is not None:
                return opener, "this '{' is never closed: missing '}' before the end of the file"
            return here, "missing '}' before the end of the file"
        if missing_semicolon and prev is not None:
            at = self.pos(prev.end_line, prev.end_column)
            name = self._call_name(ip)
            if name is not None:
                return at, f"expected ';' after {name}(...)"
            return at, f"expected ';' after {_show(prev)}"
        # `rute[main] {` at the top level: a NAME where a route keyword belongs
        if str(tok)[:1] in ("[", "{") and "EQUAL" in expected and prev is not None and prev.type == "NAME":
            return (self.pos(prev.line, prev.column),
                    f"unknown route kind '{prev}' (expected one of: {', '.join(sorted(ROUTE_KINDS))})")
        if tok.type == "ELSE":
            return here, "'else' without a matching 'if' (is there a ';' after the if's '}'?)"
        if "EQUAL" in expected and prev is not None and prev.type == "NAME" and (
                str(prev) in _STATEMENT_WORDS or (tok.type == "LPAR" and _looks_like_call(prev))):
            # `if (...)` or `t_relay();` where top-level items belong: the route ended above
            return self.pos(prev.line, prev.column), self._outside_route(ip, str(prev))
        if "LOADMODULE" in expected and (tok.type == "PVAR" or str(tok).lower() in _STATEMENT_WORDS):
            return here, self._outside_route(ip, str(tok))
        if (tok.type in ("STRING", "LPAR") and "EQUAL" in expected and prev is not None
                and prev.type == "NAME"):
            return (self.pos(prev.line, prev.column),
                    f"unknown keyword '{prev}': expected loadmodule, modparam, a route or 'name = value'")
        if tok.type == "RBRACE" and "LOADMODULE" in expected:
            return here, "unexpected '}': no block is open here"
        what = f"unexpected {_show(tok)}"
        if prev is not None and tok.type != "$END":
            what += f" after {self._shown_before(stack, prev)}"
        if {"PVAR", "STRING", "INT"} <= expected:
            # where an operand belongs (`$rU == )`): the list of every literal form says less than this
            return here, f"{what}; expected an expression"
        names = sorted({_pretty(e) for e in expected if not e.startswith("__ANON")})
        if len(names) > 8:
            names = names[:8] + ["..."]
        choices = " or ".join(names) if len(names) <= 2 else "one of: " + ", ".join(names)
        return here, f"{what}; expected {choices}"

    def _outside_route(self, ip: Any, what: str) -> str:
        """The message for a statement met at the top level, naming where the route above ended."""
        stack = ip.parser_state.value_stack
        route = None
        for value in reversed(stack):
            if isinstance(value, Tree):  # the route's body (not reduced yet), or the items read so far
                found = [value] if value.data == "block" else [
                    t for t in value.children if isinstance(t, Tree) and t.data == "route_def"]
                route = found[-1] if found else None
                break
        if route is not None and not route.meta.empty:
            return (f"'{what}' is outside any route: the route above ends at the '}}' on line "
                    f"{route.meta.end_line} (one '}}' too many?)")
        return f"'{what}' is outside any route (one '}}' too many above it?)"

    def _shown_before(self, stack: list[Any], prev: Token) -> str:
        """What the parser read last, for `unexpected X after ...`: a whole construct as written when one
        was just completed (`sl_send_reply(...)`, `'$rU == NULL'`), else the last token."""
        top = stack[-1] if stack else None
        if isinstance(top, Tree) and not top.meta.empty and top.data != "block":
            if top.data in ("call", "route_call"):
                return f"{'route' if top.data == 'route_call' else top.children[0]}(...)"
            written = " ".join(self.text[top.meta.start_pos:top.meta.end_pos].split())
            return _show(Token("WRITTEN", written))
        return _show(prev)

    def _eof_pos(self, prev: Token | None) -> Pos:
        if prev is not None and prev.end_line is not None:
            return self.pos(prev.end_line, prev.end_column)
        lines = self.text.splitlines() or [""]
        return self.pos(len(lines), len(lines[-1]) + 1)


def _looks_like_call(name: Token) -> bool:
    """`name(` at the top level is a function call out of place, unless it is a top-level keyword
    misspelt (`modparm(...)`, `loadmodul(...)`): those keep the "unknown keyword" message."""
    import difflib
    return not difflib.get_close_matches(str(name), ["loadmodule", "modparam", "include_file",
                                                     "import_file"], n=1, cutoff=0.75)
