"""The `param.` and `nameaddr.` classes of core transformations: parameter lists and To/From-style values."""

from __future__ import annotations

import re
from typing import Any


from .tr_common import _nonempty_text, _int_param, _name_param, _char_param, _comma_separator


# ---------------------------------------------------------------------------------------------------
# param. - a ';'-separated parameter list: "a=1;b=2;lr"

def _split_outside_quotes(text: str, sep: str) -> list[str]:
    out: list[str] = []
    start = 0
    in_quotes = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if in_quotes:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == sep:
            out.append(text[start:i])
            start = i + 1
        i += 1
    if in_quotes:
        raise ValueError("unterminated quoted string")
    out.append(text[start:])
    return out


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _parse_params(text: str, sep: str = ";") -> list[tuple[str, str]]:
    """RFC 3261 generic-param list: `name[=value]` items; a value of a flag parameter is ""; quoted
    values are unquoted. A leading separator is tolerated (";a=1;b" as well as "a=1;b")."""
    parts = _split_outside_quotes(text, sep)
    if parts and not parts[0].strip() and len(parts) > 1:
        parts = parts[1:]
    out: list[tuple[str, str]] = []
    for part in parts:
        name, eq, val = part.partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"bad parameter list {text!r}")
        out.append((name, _unquote(val.strip()) if eq else ""))
    return out


def _param_list(value: Any, sep: tuple[Any, ...]) -> list[tuple[str, str]]:
    """sep: the optional separator param(s) - (), (";",), or ("", "") for a ',' written as `,,`."""
    text = _nonempty_text(value, "param transformation")
    sep = _comma_separator(sep, 1)
    if len(sep) > 1:
        raise ValueError("param transformation: too many params")
    return _parse_params(text, _char_param(sep[0], "separator") if sep else ";")


def param_value(value: Any, name: Any, *sep: Any) -> str | None:
    """{param.value,name[,sep]}: value of a parameter (names case-insensitive); None when absent."""
    lname = _name_param(name, "param.value").lower()
    for pname, pval in _param_list(value, sep):
        if pname.lower() == lname:
            return pval
    return None


def _at(items: list[Any], index: Any, what: str) -> Any:
    i = _int_param(index, what)
    if i < 0:
        i += len(items)
    return items[i] if 0 <= i < len(items) else None


def param_valueat(value: Any, index: Any, *sep: Any) -> str | None:
    item = _at(_param_list(value, sep), index, "param.valueat")
    return item[1] if item else None


def param_name(value: Any, index: Any, *sep: Any) -> str | None:
    item = _at(_param_list(value, sep), index, "param.name")
    return item[0] if item else None


def param_count(value: Any, *sep: Any) -> int:
    return len(_param_list(value, sep))


def param_exist(value: Any, name: Any, *sep: Any) -> int:
    lname = _name_param(name, "param.exist").lower()
    return int(any(p.lower() == lname for p, _ in _param_list(value, sep)))


# ---------------------------------------------------------------------------------------------------
# nameaddr. - a To/From-style value: [display-name] <uri> *(;param), or addr-spec *(;param)
#
# RFC 3261 25.1:  name-addr = [ display-name ] LAQUOT addr-spec RAQUOT
#                 display-name = *(token LWS) / quoted-string
#                 from-spec = ( name-addr / addr-spec ) *( SEMI from-param )
# In the addr-spec form the ';' parameters belong to the header, not to the URI (RFC 3261 20.10).

class _NameAddr:
    __slots__ = ("display", "uri", "params", "params_text", "length")

    def __init__(self, display: str | None, uri: str, params: list[tuple[str, str]], params_text: str,
                 length: int) -> None:
        self.display = display
        self.uri = uri
        self.params = params
        self.params_text = params_text
        self.length = length


def _parse_nameaddr(value: Any) -> _NameAddr:
    text = _nonempty_text(value, "nameaddr transformation").strip()
    display: str | None = None
    rest = text
    if text.startswith('"'):
        i = 1
        while i < len(text) and text[i] != '"':
            i += 2 if text[i] == "\\" else 1
        if i >= len(text):
            raise ValueError("nameaddr: unterminated display name")
        display = text[:i + 1]
        rest = text[i + 1:].lstrip()
        if not rest.startswith("<"):
            raise ValueError("nameaddr: '<' expected after the display name")
    lt = rest.find("<")
    if lt >= 0:
        if display is None:
            display = rest[:lt].strip() or None
        gt = rest.find(">", lt)
        if gt < 0:
            raise ValueError("nameaddr: missing '>'")
        uri = rest[lt + 1:gt].strip()
        tail = rest[gt + 1:].strip()
        # {nameaddr.len}: the name-addr itself, display name to '>', without the parameters.
        body_len = len(text) - len(rest) + gt + 1
    else:
        uri, _, tail = rest.partition(";")
        uri = uri.strip()
        tail = (";" + tail) if _ else ""
        body_len = len(uri)
    if not uri or ":" not in uri or any(c in uri for c in " \t<>"):
        raise ValueError(f"nameaddr: bad URI in {text!r}")
    tail = tail.strip()
    if tail and not tail.startswith(";"):
        raise ValueError(f"nameaddr: unexpected text after the URI in {text!r}")
    params_text = tail[1:].strip() if tail else ""
    params = _parse_params(params_text) if params_text else []
    return _NameAddr(display, uri, params, params_text, body_len)


def nameaddr_name(value: Any) -> str | None:
    """{nameaddr.name}: the display name as written (quotes kept, like OpenSIPS); None if absent."""
    return _parse_nameaddr(value).display


def nameaddr_uri(value: Any) -> str:
    return _parse_nameaddr(value).uri


def nameaddr_len(value: Any) -> int:
    return _parse_nameaddr(value).length


def nameaddr_param(value: Any, name: Any) -> str | None:
    """{nameaddr.param,name}: a header parameter (";tag=..."); names compared exactly, as OpenSIPS
    does; a flag parameter or an absent one gives None."""
    pname = _name_param(name, "nameaddr.param")
    for n, v in _parse_nameaddr(value).params:
        if n == pname:
            return v or None
    return None


def nameaddr_params(value: Any) -> str | None:
    return _parse_nameaddr(value).params_text or None
