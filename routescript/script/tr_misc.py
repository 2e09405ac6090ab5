"""The `csv.`, `re.subst` and `ip.` classes of core transformations."""

from __future__ import annotations

import csv
import ipaddress
import re
from typing import Any


from .tr_common import _text, _nonempty_text, _to_bytes, _from_bytes, _int_param, _str_param, _check_len


# ---------------------------------------------------------------------------------------------------
# csv. - one RFC 4180 record

def _csv_fields(value: Any) -> list[str]:
    text = _nonempty_text(value, "csv transformation")
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise ValueError(f"csv: {exc}") from None
    if len(rows) != 1:
        raise ValueError("csv: not one record")
    return rows[0]


def csv_count(value: Any) -> int:
    return len(_csv_fields(value))


def csv_value(value: Any, index: Any) -> str:
    """{csv.value,n}: the n-th field (negative from the end); out of range is an error (OpenSIPS)."""
    fields = _csv_fields(value)
    i = _int_param(index, "csv.value")
    if i < 0:
        i += len(fields)
    if not 0 <= i < len(fields):
        raise ValueError("csv.value: index out of range")
    return fields[i]


# ---------------------------------------------------------------------------------------------------
# re.subst - sed-like "/regex/replacement/flags" (OpenSIPS subst_parser)

class SubstExpr:
    """A compiled `/re/repl/flags` expression.

    The first character is the delimiter; a backslash escapes the delimiter inside both parts.
    Flags: g (replace every match), i (ignore case), s (POSIX REG_NEWLINE: '.' stops at newlines and
    ^/$ match at line breaks - without it '.' matches newlines, as POSIX regexec does).
    Replacement: \\0 the whole match, \\1..\\9 groups, \\\\ a backslash, \\n \\r \\t.
    Choice: pseudo-variables inside the replacement are not expanded (OpenSIPS expands them).
    """

    __slots__ = ("pattern", "pieces", "replace_all", "text")

    def __init__(self, text: str) -> None:
        if len(text) < 4:
            raise ValueError(f"re.subst: too short: {text!r}")
        delim = text[0]
        if delim.isalnum() or delim == "\\":
            raise ValueError(f"re.subst: bad delimiter {delim!r}")
        parts: list[str] = []
        cur: list[str] = []
        i = 1
        while i < len(text) and len(parts) < 2:
            c = text[i]
            if c == "\\" and i + 1 < len(text):
                nxt = text[i + 1]
                if nxt == delim:
                    cur.append(delim if len(parts) == 1 or not _is_re_special(delim) else "\\" + delim)
                else:
                    cur.append(c + nxt)
                i += 2
                continue
            if c == delim:
                parts.append("".join(cur))
                cur = []
            else:
                cur.append(c)
            i += 1
        if len(parts) != 2:
            raise ValueError(f"re.subst: expected /regex/replacement/flags, got {text!r}")
        flags_text = text[i:]
        flags = 0
        self.replace_all = False
        newline_sensitive = False
        for f in flags_text:
            if f == "g":
                self.replace_all = True
            elif f == "i":
                flags |= re.IGNORECASE
            elif f == "s":
                newline_sensitive = True
            else:
                raise ValueError(f"re.subst: unknown flag {f!r}")
        flags |= re.MULTILINE if newline_sensitive else re.DOTALL
        try:
            self.pattern = re.compile(parts[0], flags)
        except re.error as exc:
            raise ValueError(f"re.subst: bad regular expression {parts[0]!r}: {exc}") from None
        self.pieces = _parse_replacement(parts[1], self.pattern.groups)
        self.text = text

    def apply(self, value: str) -> str:
        def repl(m: re.Match[str]) -> str:
            return "".join(m.group(p) or "" if isinstance(p, int) else p for p in self.pieces)

        result = self.pattern.sub(repl, value, count=0 if self.replace_all else 1)
        return _check_len(result)

    def __repr__(self) -> str:
        return f"SubstExpr({self.text!r})"


def _is_re_special(c: str) -> bool:
    return c in ".^$*+?{}[]|()"


_REPL_ESCAPES = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def _parse_replacement(text: str, groups: int) -> list[str | int]:
    pieces: list[str | int] = []
    lit: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt.isdigit():
                n = int(nxt)
                if n > groups:
                    raise ValueError(f"re.subst: \\{n} refers to a group the expression does not have")
                if lit:
                    pieces.append("".join(lit))
                    lit = []
                pieces.append(n)
            else:
                lit.append(_REPL_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        lit.append(c)
        i += 1
    if lit:
        pieces.append("".join(lit))
    return pieces


def _re_subst_fixup(params: tuple[Any, ...]) -> tuple[Any, ...]:
    # The script's ',' splits params; a regex may contain commas, so the pieces are joined back.
    text = ",".join(p if isinstance(p, str) else str(p) for p in params)
    # OpenSIPS lets "\{" and "\}" stand for braces inside a transformation.
    text = text.replace("\\{", "{").replace("\\}", "}")
    return (SubstExpr(text),)


def re_subst(value: Any, *params: Any) -> str:
    """{re.subst,/re/repl/flags}: the value with the substitution applied; unchanged when nothing
    matches. The param is the SubstExpr made by the fixup (a string is compiled on the spot)."""
    expr = params[0] if len(params) == 1 and isinstance(params[0], SubstExpr) else _re_subst_fixup(params)[0]
    return expr.apply(_nonempty_text(value, "re.subst"))


# ---------------------------------------------------------------------------------------------------
# ip.

def _ip(text: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(text, str):
        return None
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    try:
        return ipaddress.ip_address(t)
    except ValueError:
        return None


def ip_isip(value: Any) -> int:
    return int(_ip(_text(value)) is not None)


def ip_isip4(value: Any) -> int:
    return int(isinstance(_ip(_text(value)), ipaddress.IPv4Address))


def ip_isip6(value: Any) -> int:
    return int(isinstance(_ip(_text(value)), ipaddress.IPv6Address))


def ip_pton(value: Any) -> str:
    """{ip.pton}: the 4 or 16 address bytes (as a surrogateescape string)."""
    addr = _ip(_nonempty_text(value, "ip.pton"))
    if addr is None:
        raise ValueError("ip.pton: not an IP address")
    return _from_bytes(addr.packed)


def _binary_ip(value: Any, what: str) -> bytes:
    raw = _to_bytes(_nonempty_text(value, what))
    if len(raw) not in (4, 16):
        raise ValueError(f"{what}: binary address expected")
    return raw


def ip_ntop(value: Any) -> str:
    return str(ipaddress.ip_address(_binary_ip(value, "ip.ntop")))


def ip_family(value: Any) -> str:
    return "INET" if len(_binary_ip(value, "ip.family")) == 4 else "INET6"


def ip_matches(value: Any, network: Any) -> int:
    """{ip.matches,net/len}: 1 when the address is inside the network, 0 otherwise."""
    addr = _ip(_nonempty_text(value, "ip.matches"))
    if addr is None:
        raise ValueError("ip.matches: not an IP address")
    spec = _str_param(network, "ip.matches")
    if "/" not in spec:
        raise ValueError("ip.matches: expected ip/len")
    try:
        net = ipaddress.ip_network(spec, strict=False)
    except ValueError:
        raise ValueError(f"ip.matches: bad network {spec!r}") from None
    if net.version != addr.version:
        raise ValueError("ip.matches: address families differ")
    return int(addr in net)


_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def ip_isprivate(value: Any) -> int:
    """{ip.isprivate}: 1 for an RFC 1918 IPv4 address."""
    addr = _ip(_text(value))
    return int(isinstance(addr, ipaddress.IPv4Address) and any(addr in n for n in _RFC1918))


def _network_fixup(params: tuple[Any, ...]) -> tuple[Any, ...]:
    spec = _str_param(params[0], "ip.matches")
    try:
        ipaddress.ip_network(spec, strict=False)
    except ValueError:
        raise ValueError(f"ip.matches: bad network {spec!r}") from None
    if "/" not in spec:
        raise ValueError("ip.matches: expected ip/len")
    return (spec,)
