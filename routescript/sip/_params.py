"""Shared helpers for `;name=value` parameter lists and quoted strings (private)."""

from __future__ import annotations

from . import _abnf
from .errors import ParseError

Params = tuple[tuple[str, "str | None"], ...]
# The parameters as a lookup: lower-case name -> unquoted value ("" for a flag), the first of a repeated
# name (as `param_value` reads them). Made once per parsed value, so a read is one dict lookup.
ParamMap = dict[str, str]


def parse_generic_params(text: str, what: str) -> Params:
    """Parse `*( SEMI generic-param )` (RFC 3261 25.1) - `text` starts at the first ";" (or is blank).

    Values are kept as written (a quoted-string keeps its quotes) so that str() gives them back; use
    `param_value()` to read one. `what` names the header for the error reason ("Bad Via header").
    """
    if not text:
        return ()
    if '"' not in text:
        # Fast path: validate the whole list with one regex, then split (no ';' or '=' in values).
        if _abnf.GENERIC_PARAMS_UNQUOTED.fullmatch(text) is None:
            if text.isspace():   # blank (any white space, not only SP/HTAB): no parameters
                return ()
            raise ParseError(f"Bad {what} header")
        # one C-level pass for the pairs; an unquoted gen-value is never empty, so "" means a flag
        return tuple([(name, value or None) for name, value in _abnf.PARAM_PAIR.findall(text)])
    out: list[tuple[str, str | None]] = []
    pos = 0
    n = len(text)
    match = _abnf.GENERIC_PARAM.match
    while pos < n:
        m = match(text, pos)
        if m is None or m.end() == pos:
            raise ParseError(f"Bad {what} header")
        out.append((m.group("name"), m.group("value")))
        pos = m.end()
    return tuple(out)


def unquote(value: str) -> str:
    """The text of a quoted-string (quotes removed, quoted-pairs undone); other values unchanged."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        if "\\" not in inner:
            return inner
        out = []
        i = 0
        while i < len(inner):
            ch = inner[i]
            if ch == "\\" and i + 1 < len(inner):
                i += 1
                ch = inner[i]
            out.append(ch)
            i += 1
        return "".join(out)
    return value


def quote(text: str) -> str:
    """A quoted-string holding `text` (RFC 3261 25.1 quoted-pair for '"' and '\\')."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def param_value(params: Params, name: str) -> str | None:
    """Value of parameter `name` (case-insensitive, RFC 3261 7.3.1), unquoted; "" when it has no value,
    None when absent."""
    lname = name.lower()
    for pname, pvalue in params:
        if pname.lower() == lname:
            return "" if pvalue is None else unquote(pvalue)
    return None


def param_map(params: Params) -> ParamMap:
    """The lookup form of `params` (ParamMap): built once when a value object is made."""
    return {
        name.lower(): "" if value is None else unquote(value) if value[:1] == '"' else value
        for name, value in reversed(params)   # reversed: the first of a repeated name wins
    }


def mapped_value(pmap: ParamMap, name: str) -> str | None:
    """`param_value` over the lookup form: no lower-casing when `name` is written in lower case."""
    if name in pmap:
        return pmap[name]
    return pmap.get(name.lower())


def has_param(params: Params, name: str) -> bool:
    lname = name.lower()
    return any(pname.lower() == lname for pname, _ in params)


def format_params(params: Params) -> str:
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def with_param(params: Params, name: str, value: str | None) -> Params:
    """`params` with `name` set to `value` (replaced in place when present, else appended)."""
    lname = name.lower()
    out = []
    found = False
    for pname, pvalue in params:
        if pname.lower() == lname:
            if not found:
                out.append((pname, value))
                found = True
            continue
        out.append((pname, pvalue))
    if not found:
        out.append((name, value))
    return tuple(out)
