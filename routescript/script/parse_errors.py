"""Syntax errors: lark's exceptions -> messages for the script's author, and recovery so parsing goes on.

A missing ';' is reported and parsing continues as if it were there; after any other error the parser
drops back to the enclosing block and carries on, and further errors on the same line are not reported
(they are usually echoes of the first).
"""

from __future__ import annotations

import re
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
    def __init__(self, loader: ErrorSink, filename: str, text: str) -> None:
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
