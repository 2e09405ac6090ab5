"""The `s.` (string) class of core transformations and their fixups."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any


from .tr_common import (
    MAX_RESULT_LEN, _char_param, _check_len, _comma_separator, _from_bytes, _int_param, _str_param, _text,
    _to_bytes,
)


# ---------------------------------------------------------------------------------------------------
# s. - string transformations

def s_len(value: Any) -> int:
    """{s.len}: length of the string form."""
    return len(_text(value))


_LEADING_INT = re.compile(r"[+-]?[0-9]+")


def s_int(value: Any) -> int:
    """{s.int}: the leading integer of the string; 0 when there is none (OpenSIPS 3.x str2sint)."""
    if isinstance(value, int):
        return int(value)
    m = _LEADING_INT.match(_text(value))
    return int(m.group()) if m else 0


def s_md5(value: Any) -> str:
    """{s.md5}: lower-case hex MD5 of the UTF-8 bytes."""
    return hashlib.md5(_to_bytes(_text(value)), usedforsecurity=False).hexdigest()


def _digest(algo: str) -> Callable[[Any], str]:
    def fn(value: Any) -> str:
        return hashlib.new(algo, _to_bytes(_text(value))).hexdigest()

    fn.__name__ = f"s_{algo}"
    return fn


def _hmac_digest(algo: str) -> Callable[[Any, Any], str]:
    def fn(value: Any, key: Any) -> str:
        return hmac.new(_to_bytes(_text(key)), _to_bytes(_text(value)), algo).hexdigest()

    fn.__name__ = f"s_{algo}_hmac"
    return fn


def s_reverse(value: Any) -> str:
    return _text(value)[::-1]


def s_substr(value: Any, offset: Any, length: Any) -> str:
    """{s.substr,offset,length} (OpenSIPS 3.x): a negative offset counts from the end; length 0 means
    "to the end", a negative length stops that many characters before the end; an offset outside the
    string is an error."""
    text = _text(value)
    i = _int_param(offset, "s.substr offset")
    j = _int_param(length, "s.substr length")
    n = len(text)
    if i < 0:
        if -i > n:
            raise ValueError("s.substr: negative offset out of range")
        i += n
    if i >= n:
        raise ValueError("s.substr: offset out of range")
    if j < 1:
        j = n + j - i
    if i + j > n:
        j = n - i
    if j <= 0:
        return ""
    return text[i:i + j]


def s_select(value: Any, index: Any, separator: Any, *rest: Any) -> str | None:
    """{s.select,index,separator}: the index-th field split on a one-character separator (negative
    counts from the end); None when there are not that many fields."""
    text = _text(value)
    idx = _int_param(index, "s.select index")
    _, sep = _comma_separator((index, separator, *rest), 2) if rest else (index, separator)
    sep = _char_param(sep, "s.select separator")
    fields = text.split(sep)
    if idx < 0:
        idx += len(fields)
    if 0 <= idx < len(fields):
        return fields[idx]
    return None


def s_encode_hexa(value: Any) -> str:
    return _check_len(_to_bytes(_text(value)).hex())


def s_decode_hexa(value: Any) -> str:
    """{s.decode.hexa}: "616263" -> "abc". Choice: OpenSIPS silently drops a trailing odd digit; an odd
    length is refused here as malformed."""
    text = _text(value)
    if len(text) % 2 or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise ValueError("s.decode.hexa: not a hex string")
    return _from_bytes(bytes.fromhex(text))


def s_hex2dec(value: Any) -> int:
    """{s.hex2dec}: "ff" -> 255 (an int value is taken as already converted)."""
    if isinstance(value, int):
        return int(value)
    text = _text(value).strip()
    if text[:2].lower() == "0x":
        text = text[2:]
    if not text or not all(c in "0123456789abcdefABCDEF" for c in text) or len(text) > 8:
        raise ValueError("s.hex2dec: not a hex number")
    return int(text, 16)


def s_dec2hex(value: Any) -> str:
    """{s.dec2hex}: 255 -> "ff"; negatives print as 32-bit two's complement (C's %x)."""
    if isinstance(value, int):
        n = int(value)
    else:
        text = _text(value).strip()
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise ValueError("s.dec2hex: not a decimal number")
        n = int(text)
    return format(n & 0xFFFFFFFF, "x")


# strcommon.c escape_common: backslash before ', ", \ and NUL.
_COMMON_ESCAPES = {"'": "\\'", '"': '\\"', "\\": "\\\\", "\0": "\\0"}
_COMMON_UNESCAPES = {"'": "'", '"': '"', "\\": "\\", "0": "\0"}


def s_escape_common(value: Any) -> str:
    return _check_len("".join(_COMMON_ESCAPES.get(c, c) for c in _text(value)))


def s_unescape_common(value: Any) -> str:
    text = _text(value)
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in _COMMON_UNESCAPES:
            out.append(_COMMON_UNESCAPES[text[i + 1]])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


# RFC 3261 25.1:
#   user             =  1*( unreserved / escaped / user-unreserved )
#   user-unreserved  =  "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
#   paramchar        =  param-unreserved / unreserved / escaped
#   param-unreserved =  "[" / "]" / "/" / ":" / "&" / "+" / "$"
#   unreserved       =  alphanum / mark
#   mark             =  "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_UNRESERVED = frozenset(_ALNUM + "-_.!~*'()")
_USER_SAFE = _UNRESERVED | frozenset("&=+$,;?/")
_PARAM_SAFE = _UNRESERVED | frozenset("[]/:&+$")


def _escape(text: str, safe: frozenset[str], what: str) -> str:
    out: list[str] = []
    for c in text:
        # OpenSIPS escapes printable ASCII only and refuses anything else.
        if not " " <= c <= "~":
            raise ValueError(f"{what}: character {c!r} cannot be escaped")
        out.append(c if c in safe else "%" + format(ord(c), "02x"))
    return _check_len("".join(out))


def _unescape(text: str, what: str) -> str:
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "%":
            pair = text[i + 1:i + 3]
            if len(pair) != 2 or not all(h in "0123456789abcdefABCDEF" for h in pair):
                raise ValueError(f"{what}: bad escape at offset {i}")
            ch = chr(int(pair, 16))
            if not " " <= ch <= "~":
                raise ValueError(f"{what}: escaped character out of range")
            out.append(ch)
            i += 3
            continue
        out.append(c)
        i += 1
    return "".join(out)


def s_escape_user(value: Any) -> str:
    return _escape(_text(value), _USER_SAFE, "s.escape.user")


def s_unescape_user(value: Any) -> str:
    return _unescape(_text(value), "s.unescape.user")


def s_escape_param(value: Any) -> str:
    return _escape(_text(value), _PARAM_SAFE, "s.escape.param")


def s_unescape_param(value: Any) -> str:
    return _unescape(_text(value), "s.unescape.param")


def _ascii_lower(text: str) -> str:
    # OpenSIPS changes A-Z only.
    return text.translate(_LOWER)


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def s_tolower(value: Any) -> Any:
    """{s.tolower}: an integer value is returned as it is (OpenSIPS keeps its int form)."""
    if isinstance(value, int):
        return value
    return _ascii_lower(_text(value))


def s_toupper(value: Any) -> Any:
    if isinstance(value, int):
        return value
    return _text(value).translate(_UPPER)


def _start_index(start: Any, n: int, default: int) -> int:
    if start is None:
        return default
    i = _int_param(start, "start")
    if i < 0:
        # OpenSIPS wraps negative starts: -2 and -12 are the same on a 10-character string.
        i = (-i) % n if n else 0
        if i > 0:
            i = n - i
    return i


def s_index(value: Any, needle: Any, start: Any = None) -> int | None:
    """{s.index,needle[,start]}: offset of the first occurrence at or after start; None if absent."""
    text = _text(value)
    sub = _text(needle)
    n = len(text)
    i = _start_index(start, n, 0)
    if not sub or i >= n or len(sub) > n - i:
        return None
    pos = text.find(sub, i)
    return pos if pos >= 0 else None


def s_rindex(value: Any, needle: Any, start: Any = None) -> int | None:
    """{s.rindex,needle[,start]}: offset of the last occurrence starting at or before start."""
    text = _text(value)
    sub = _text(needle)
    n = len(text)
    if not sub or len(sub) > n:
        return None
    i = _start_index(start, n, n - 1)
    i = min(i, n - 1, n - len(sub))
    pos = text.rfind(sub, 0, i + len(sub))
    return pos if pos >= 0 else None


def s_fill_left(value: Any, pad: Any, length: Any) -> str:
    """{s.fill.left,pad,len}: pad on the left up to len characters (a longer value is unchanged)."""
    text = _text(value)
    tok = _str_param(pad, "s.fill.left pad")
    missing = min(_int_param(length, "s.fill.left length"), MAX_RESULT_LEN) - len(text)
    if missing <= 0:
        return text
    # As OpenSIPS: the uneven remainder comes from the end of the pad string, then whole pads.
    r = missing % len(tok)
    return (tok[len(tok) - r:] if r else "") + tok * (missing // len(tok)) + text


def s_fill_right(value: Any, pad: Any, length: Any) -> str:
    text = _text(value)
    tok = _str_param(pad, "s.fill.right pad")
    missing = min(_int_param(length, "s.fill.right length"), MAX_RESULT_LEN) - len(text)
    if missing <= 0:
        return text
    return text + (tok * (missing // len(tok) + 1))[:missing]


def s_width(value: Any, width: Any) -> str:
    """{s.width,len}: cut to len characters or pad with spaces on the right."""
    text = _text(value)
    w = _int_param(width, "s.width")
    if w <= 0:
        raise ValueError("s.width: width must be >= 1")
    if w > MAX_RESULT_LEN:
        raise ValueError("s.width: width too large")
    return text[:w].ljust(w)


_WS = " \t\r\n"


def s_trim(value: Any) -> str:
    return _text(value).strip(_WS)


def s_trimr(value: Any) -> str:
    return _text(value).rstrip(_WS)


def s_triml(value: Any) -> str:
    return _text(value).lstrip(_WS)


def s_b64encode(value: Any) -> str:
    return _check_len(base64.b64encode(_to_bytes(_text(value))).decode("ascii"))


def s_b64decode(value: Any) -> str:
    try:
        return _from_bytes(base64.b64decode(_text(value), validate=True))
    except (binascii.Error, ValueError):
        raise ValueError("s.b64decode: not base64") from None


# Kamailio's {s.strip,n} / {s.striptail,n} / {s.stripto,c}: not in OpenSIPS 3.x, accepted so scripts
# shared between the two keep working.
def s_strip(value: Any, count: Any) -> str:
    n = _int_param(count, "s.strip")
    text = _text(value)
    return text[n:] if n > 0 else text


def s_striptail(value: Any, count: Any) -> str:
    n = _int_param(count, "s.striptail")
    text = _text(value)
    return text[:-n] if n > 0 else text


def s_stripto(value: Any, char: Any) -> str:
    """Drop everything before the first `char` (kept); the value is unchanged when `char` is absent."""
    text = _text(value)
    pos = text.find(_char_param(char, "s.stripto"))
    return text[pos:] if pos >= 0 else text


def _index_fixup(params: tuple[Any, ...]) -> tuple[Any, ...]:
    """s.index/s.rindex: (needle[, start])."""
    out = list(params)
    out[0] = _str_param(out[0], "needle")
    if len(out) > 1:
        out[1] = _int_param(out[1], "start")
    return tuple(out)


def _fill_fixup(params: tuple[Any, ...]) -> tuple[Any, ...]:
    pad = _str_param(params[0], "pad")
    length = _int_param(params[1], "length")
    if length < 0:
        raise ValueError("fill length must not be negative")
    return (pad, length)


def _width_fixup(params: tuple[Any, ...]) -> tuple[Any, ...]:
    w = _int_param(params[0], "s.width")
    if w <= 0:
        raise ValueError("s.width: width must be >= 1")
    return (w,)
