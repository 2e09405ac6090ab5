"""The inside of pseudo-variables and string literals.

OpenSIPS core doc, "Script variables": the full syntax of a pseudo-variable is

    $(<context>name(subname)[index]{transformation}...)

and the short form `$name`, `$name(subname)`, `$name(subname)[index]` needs no outer parentheses.
index is an integer (negative counts from the end), `*` (all values), a pseudo-variable, or a word that
the pseudo-variable gives a meaning (`append` of $avp; master's `insert`/`insertAfter` of $sdp.line);
a transformation is `{class.name,param,param...}` and several chain left to right.

String literals may embed pseudo-variables ("$fu to $ru", "$(hdr(X){s.len})"); a `$` not followed by a
name or `(` is kept as text ("^sip:.*$"). Backslash escapes: \\n \\r \\t \\\\ \\" \\' are replaced; any
other backslash pair is kept as written, so regular expressions like "^1\\.2" keep their escapes.
"""

from __future__ import annotations

from collections.abc import Callable

from .ast import PVar, StrLit, Transform
from .pos import Pos

_NAME_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _NAME_START | set("0123456789.")
_TR_NAME_CHARS = _NAME_CHARS | set("-")
# a backslash before a newline removes both (a string that spans lines; OpenSIPS cfg.lex eats escaped CRs)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'", "\n": ""}

# Bound on nesting ($(hdr(X){s.substr,$(var(i){s.int}),1}) is depth 2); deeper input is refused.
MAX_DEPTH = 8

PosAt = Callable[[int], Pos]  # offset in the text -> script position


class PVarSyntaxError(ValueError):
    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


def _balanced(text: str, i: int, open_: str, close: str) -> int:
    """text[i] == open_; return the index just past the matching close (parentheses/braces nest)."""
    depth = 0
    pairs = {"(": ")", "{": "}", "[": "]"}
    stack: list[str] = []
    j = i
    while j < len(text):
        c = text[j]
        if c in pairs:
            stack.append(pairs[c])
            depth += 1
        elif stack and c == stack[-1]:
            stack.pop()
            if not stack:
                return j + 1
        elif c in ")}]":
            break
        j += 1
    raise PVarSyntaxError(i, f"missing '{close}' to match '{open_}'")


def unescape(body: str) -> str:
    """A script string's text without its escapes (\\n \\r \\t \\\\ \\" \\'; any other `\\x` is kept as
    written). `body` is the text between the quotes; pseudo-variables are not looked at."""
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], "\\" + body[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _shifted(pos_at: PosAt, base: int) -> PosAt:
    """pos_at for a text that starts at offset `base` of the outer one."""
    return lambda off: pos_at(base + off)


def parse_pvar(text: str, i: int, pos_at: PosAt, depth: int = 0) -> tuple[PVar, int]:
    """Parse the pseudo-variable starting at text[i] == '$'; return it and the index just past it."""
    if depth > MAX_DEPTH:
        raise PVarSyntaxError(i, "pseudo-variables nested too deeply")
    if i + 1 >= len(text):
        raise PVarSyntaxError(i, "'$' without a pseudo-variable name")
    start = i
    full = text[i + 1] == "("
    j = i + 2 if full else i + 1
    context = None
    if full and j < len(text) and text[j] == "<":
        end = text.find(">", j)
        if end < 0:
            raise PVarSyntaxError(j, "missing '>' after the pseudo-variable context")
        context = text[j + 1:end]
        j = end + 1
    if j >= len(text) or text[j] not in _NAME_START:
        raise PVarSyntaxError(j if j < len(text) else i, "expected a pseudo-variable name after '$'")
    k = j
    while k < len(text) and text[k] in _NAME_CHARS:
        k += 1
    while text[k - 1] == ".":  # "$rU." at the end of a sentence: the dot is text
        k -= 1
    name = text[j:k]
    j = k
    key = None
    if j < len(text) and text[j] == "(":
        end = _balanced(text, j, "(", ")")
        key = text[j + 1:end - 1]
        j = end
    index: int | str | PVar | None = None
    if j < len(text) and text[j] == "[":
        end = _balanced(text, j, "[", "]")
        raw = text[j + 1:end - 1].strip()
        if raw == "*":
            index = "*"
        elif raw.isalpha():
            # a named index: $(avp(x)[append]), master's $(sdp.line([12])[insert]) / [insertAfter];
            # which names a pseudo-variable takes is its PVarSpec.index_words, checked by the compiler
            index = raw
        elif raw.startswith("$"):
            index, used = parse_pvar(raw, 0, _shifted(pos_at, j + 1), depth + 1)
            if used != len(raw):
                raise PVarSyntaxError(j + 1 + used, f"unexpected text in index [{raw}]")
        else:
            try:
                index = int(raw)
            except ValueError:
                raise PVarSyntaxError(j + 1, f"bad index [{raw}]: expected a number, '*' or a variable") \
                    from None
        j = end
    transforms: list[Transform] = []
    if full:
        while j < len(text) and text[j] in " \t":
            j += 1
        while j < len(text) and text[j] == "{":
            end = _balanced(text, j, "{", "}")
            transforms.append(_parse_transform(text, j, end, pos_at, depth))
            j = end
            while j < len(text) and text[j] in " \t":
                j += 1
        if j >= len(text) or text[j] != ")":
            raise PVarSyntaxError(j if j < len(text) else i, f"expected ')' to close '$(' of ${name}")
        j += 1
    return PVar(name, key, index, tuple(transforms), text[start:j], pos_at(start), context), j


def _parse_transform(text: str, i: int, end: int, pos_at: PosAt, depth: int) -> Transform:
    """text[i:end] is '{name,p1,p2}'."""
    inner_start = i + 1
    inner = text[inner_start:end - 1]
    pieces: list[tuple[int, str]] = []
    stack: list[str] = []
    pairs = {"(": ")", "{": "}", "[": "]"}
    last = 0
    for k, c in enumerate(inner):
        if c in pairs:
            stack.append(pairs[c])
        elif stack and c == stack[-1]:
            stack.pop()
        elif c == "," and not stack:
            pieces.append((last, inner[last:k]))
            last = k + 1
    pieces.append((last, inner[last:]))
    name = pieces[0][1].strip()
    if not name or any(c not in _TR_NAME_CHARS for c in name):
        raise PVarSyntaxError(inner_start, f"bad transformation name '{name}'")
    params: list[str | int | PVar] = []
    for off, raw in pieces[1:]:
        stripped = raw.strip()
        if stripped.startswith("$"):
            lead = len(raw) - len(raw.lstrip())
            base = inner_start + off + lead
            pv, used = parse_pvar(stripped, 0, _shifted(pos_at, base), depth + 1)
            if used == len(stripped):
                params.append(pv)
                continue
        params.append(_literal_param(raw))
    return Transform(name, tuple(params), pos_at(i))


def _literal_param(raw: str) -> str | int:
    s = raw.strip()
    try:
        if s and (s.lstrip("-").isdigit()):
            return int(s)
    except ValueError:
        pass
    return raw


def parse_string(raw: str, pos: Pos, pos_at: PosAt) -> StrLit:
    """A string token as written (with its quotes) -> StrLit with embedded pseudo-variables split out.

    pos_at maps an offset in `raw` to its script position (strings do not span lines).
    """
    body_start = 1
    body = raw[1:-1]
    value_chars: list[str] = []
    parts: list[str | PVar] = []
    text: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            rep = _ESCAPES.get(nxt, "\\" + nxt)
            text.append(rep)
            value_chars.append(rep)
            i += 2
            continue
        if c == "$" and i + 1 < len(body) and (body[i + 1] in _NAME_START or body[i + 1] == "("):
            pv, end = parse_pvar(body, i, lambda o: pos_at(body_start + o))
            if text:
                parts.append("".join(text))
                text = []
            parts.append(pv)
            value_chars.append(body[i:end])
            i = end
            continue
        text.append(c)
        value_chars.append(c)
        i += 1
    if text or not parts:
        parts.append("".join(text))
    return StrLit("".join(value_chars), tuple(parts), pos)
