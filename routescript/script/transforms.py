"""The core transformations of the script language: `$(var(x){s.substr,1,2}{uri.user})`.

OpenSIPS 3.x semantics (Script-Tran-3-4 and transformations.c), classes `s.`, `uri.`, `param.`,
`nameaddr.`, `csv.`, `re.` and `ip.`. Every transformation is `fn(value, *params)`:

- the value is a str, an int or None (NULL); a NULL value passes through every transformation
  unchanged, as OpenSIPS does;
- a value the transformation cannot handle (not a URI for `uri.*`, an empty string, an offset out of
  range) raises ValueError - the compiler then makes the whole expression NULL, like OpenSIPS's
  "transformation failed";
- a part that is simply absent (a URI without a user, a parameter not there) gives None.

Params are the literals written in the script. Integer params may arrive as numeric strings; each fixup
converts them at load time and refuses bad ones, and the functions convert again so that values
computed at run time work too.

Choices where OpenSIPS works on raw bytes: offsets and lengths (`s.len`, `s.substr`, `s.index`) count
characters, not UTF-8 bytes (identical for ASCII, which is what SIP scripts handle); byte-oriented
transformations (`s.md5`, `s.encode.hexa`, `s.b64encode`, `ip.pton`) use the UTF-8 bytes of the text,
and the binary strings they produce are decoded with "surrogateescape" so any byte round-trips.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable
from typing import Any

from routescript.sip import ParseError, SipURI, parse_uri

from .registry import TransformSpec

# Bound on what a transformation may build (OpenSIPS TR_BUFFER_SIZE is 65536 bytes).
MAX_RESULT_LEN = 65536


# ---------------------------------------------------------------------------------------------------
# value helpers

def _text(value: Any) -> str:
    """The string form of a value, as OpenSIPS's int2str for integer values."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"unsupported value type {type(value).__name__}")


def _nonempty_text(value: Any, what: str) -> str:
    """uri./param./nameaddr./csv./re. need a non-empty string (OpenSIPS: rs.len <= 0 -> error)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} needs a non-empty string")
    return value


def _to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _from_bytes(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _int_param(p: Any, what: str) -> int:
    if isinstance(p, bool):
        return int(p)
    if isinstance(p, int):
        return p
    if isinstance(p, str):
        try:
            return int(p.strip())
        except ValueError:
            pass
    raise ValueError(f"{what}: expected an integer, got {p!r}")


def _str_param(p: Any, what: str) -> str:
    """A string param as OpenSIPS reads one: surrounding whitespace skipped, and a quoted literal
    ('x y' or "x y") unquoted so it may hold spaces; a param that is only whitespace is kept."""
    if isinstance(p, int) and not isinstance(p, bool):
        return str(p)
    if isinstance(p, str) and p:
        s = p.strip()
        if not s:
            return p
        if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
            s = s[1:-1]
        if s:
            return s
    raise ValueError(f"{what}: expected a non-empty string, got {p!r}")


def _name_param(p: Any, what: str) -> str:
    """A name (of a parameter, a header...): never blank."""
    s = _str_param(p, what)
    if not s.strip():
        raise ValueError(f"{what}: expected a name, got {p!r}")
    return s


def _char_param(p: Any, what: str) -> str:
    """A one-character param (a separator): OpenSIPS takes the character right after the comma."""
    if isinstance(p, str) and len(p) == 1:
        return p
    s = _str_param(p, what)
    if len(s) != 1:
        raise ValueError(f"{what}: expected one character, got {p!r}")
    return s


def _comma_separator(params: tuple[Any, ...], count: int) -> tuple[Any, ...]:
    """`{s.select,1,,}`: a ',' separator reaches us as two empty params; fold them back into ","."""
    if len(params) == count + 1 and params[-2:] == ("", ""):
        return params[:-2] + (",",)
    return params


def _check_len(text: str) -> str:
    if len(text) > MAX_RESULT_LEN:
        raise ValueError("transformation result too long")
    return text


def _fixup_ints(*names: str) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """A fixup converting the params at the given positions (by name list) to int."""

    def fixup(params: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(params)
        for i, name in enumerate(names):
            if i < len(out) and name:
                out[i] = _int_param(out[i], name)
        return tuple(out)

    return fixup


def _fixup_strs(*names: str) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    def fixup(params: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(params)
        for i, name in enumerate(names):
            if i < len(out) and name:
                out[i] = _name_param(out[i], name)
        return tuple(out)

    return fixup


def _null_passes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """NULL in, NULL out - OpenSIPS's `if (val->flags & PV_VAL_NULL) return 0` in every class."""

    def wrapper(value: Any, *params: Any) -> Any:
        if value is None:
            return None
        return fn(value, *params)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


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


# ---------------------------------------------------------------------------------------------------
# uri.

def _parse_uri(value: Any) -> SipURI:
    text = _nonempty_text(value, "uri transformation")
    try:
        return parse_uri(text)
    except ParseError:
        raise ValueError(f"not a valid URI: {text!r}") from None


def _uri_param(uri: SipURI, name: str) -> str | None:
    lname = name.lower()
    for pname, pvalue in uri.params:
        if pname.lower() == lname:
            return "" if pvalue is None else pvalue
    return None


def _none_if_empty(text: str | None) -> str | None:
    return text if text not in (None, "") else None


def uri_user(value: Any) -> str | None:
    return _none_if_empty(_parse_uri(value).user)


def uri_host(value: Any) -> str | None:
    return _none_if_empty(_parse_uri(value).host)


def uri_passwd(value: Any) -> str | None:
    return _none_if_empty(_parse_uri(value).password)


def uri_port(value: Any) -> int | None:
    """{uri.port}: the port written in the URI, None when there is none (OpenSIPS 3.x)."""
    port = _parse_uri(value).port
    return int(port) if port is not None else None


def uri_params(value: Any) -> str | None:
    """{uri.params}: the parameters as written, without the leading ';'."""
    params = _parse_uri(value).params
    if not params:
        return None
    return ";".join(n if v is None else f"{n}={v}" for n, v in params)


def uri_param(value: Any, name: Any) -> str | None:
    """{uri.param,name}: the value ("" for a flag parameter like lr), None when absent."""
    return _uri_param(_parse_uri(value), _name_param(name, "uri.param"))


def uri_headers(value: Any) -> str | None:
    headers = _parse_uri(value).headers
    if not headers:
        return None
    if isinstance(headers, str):
        return headers.lstrip("?")
    return "&".join(n if v is None else f"{n}={v}" for n, v in headers)


def _uri_named_param(pname: str) -> Callable[[Any], str | None]:
    def fn(value: Any) -> str | None:
        return _none_if_empty(_uri_param(_parse_uri(value), pname))

    fn.__name__ = f"uri_{pname}"
    return fn


def uri_scheme(value: Any) -> str:
    return _parse_uri(value).scheme


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


# ---------------------------------------------------------------------------------------------------
# the table

def _spec(name: str, fn: Callable[..., Any], min_params: int = 0, max_params: int | None = None,
          fixup: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None) -> TransformSpec:
    return TransformSpec(name=name, fn=_null_passes(fn), min_params=min_params,
                         max_params=min_params if max_params is None else max_params, fixup=fixup)


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


def _sep_fixup(first: str, first_is_int: bool, takes_first: bool = True
               ) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """(first[, separator]) - `first` an int or a string; a ',' separator written as `,,` folded."""

    def fixup(params: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(_comma_separator(params, 2 if takes_first else 1))
        if takes_first:
            out[0] = _int_param(out[0], first) if first_is_int else _name_param(out[0], first)
        if len(out) > (1 if takes_first else 0):
            out[-1] = _char_param(out[-1], "separator")
        return tuple(out)

    return fixup


def _width_fixup(params: tuple[Any, ...]) -> tuple[Any, ...]:
    w = _int_param(params[0], "s.width")
    if w <= 0:
        raise ValueError("s.width: width must be >= 1")
    return (w,)


def _network_fixup(params: tuple[Any, ...]) -> tuple[Any, ...]:
    spec = _str_param(params[0], "ip.matches")
    try:
        ipaddress.ip_network(spec, strict=False)
    except ValueError:
        raise ValueError(f"ip.matches: bad network {spec!r}") from None
    if "/" not in spec:
        raise ValueError("ip.matches: expected ip/len")
    return (spec,)


def core_transforms() -> list[TransformSpec]:
    """Every core transformation, ready for `Registry.add_transform`."""
    specs = [
        _spec("s.len", s_len),
        _spec("s.int", s_int),
        _spec("s.md5", s_md5),
        _spec("s.reverse", s_reverse),
        _spec("s.substr", s_substr, 2, fixup=_fixup_ints("s.substr offset", "s.substr length")),
        _spec("s.select", s_select, 2, 3, fixup=_sep_fixup("s.select index", True)),
        _spec("s.encode.hexa", s_encode_hexa),
        _spec("s.decode.hexa", s_decode_hexa),
        _spec("s.hex2dec", s_hex2dec),
        _spec("s.dec2hex", s_dec2hex),
        _spec("s.escape.common", s_escape_common),
        _spec("s.unescape.common", s_unescape_common),
        _spec("s.escape.user", s_escape_user),
        _spec("s.unescape.user", s_unescape_user),
        _spec("s.escape.param", s_escape_param),
        _spec("s.unescape.param", s_unescape_param),
        _spec("s.tolower", s_tolower),
        _spec("s.toupper", s_toupper),
        _spec("s.index", s_index, 1, 2, fixup=_index_fixup),
        _spec("s.rindex", s_rindex, 1, 2, fixup=_index_fixup),
        _spec("s.fill.left", s_fill_left, 2, fixup=_fill_fixup),
        _spec("s.fill.right", s_fill_right, 2, fixup=_fill_fixup),
        _spec("s.width", s_width, 1, fixup=_width_fixup),
        _spec("s.trim", s_trim),
        _spec("s.trimr", s_trimr),
        _spec("s.triml", s_triml),
        _spec("s.b64encode", s_b64encode),
        _spec("s.b64decode", s_b64decode),
        _spec("s.strip", s_strip, 1, fixup=_fixup_ints("s.strip")),
        _spec("s.striptail", s_striptail, 1, fixup=_fixup_ints("s.striptail")),
        _spec("s.stripto", s_stripto, 1, fixup=lambda p: (_char_param(p[0], "s.stripto"),)),
        _spec("uri.user", uri_user),
        _spec("uri.host", uri_host),
        _spec("uri.domain", uri_host),
        _spec("uri.passwd", uri_passwd),
        _spec("uri.port", uri_port),
        _spec("uri.params", uri_params),
        _spec("uri.param", uri_param, 1, fixup=_fixup_strs("uri.param")),
        _spec("uri.headers", uri_headers),
        _spec("uri.schema", uri_scheme),
        _spec("uri.scheme", uri_scheme),
        _spec("param.value", param_value, 1, 3, fixup=_sep_fixup("param.value name", False)),
        _spec("param.valueat", param_valueat, 1, 3, fixup=_sep_fixup("param.valueat index", True)),
        _spec("param.name", param_name, 1, 3, fixup=_sep_fixup("param.name index", True)),
        _spec("param.count", param_count, 0, 2, fixup=_sep_fixup("", False, takes_first=False)),
        _spec("param.exist", param_exist, 1, 3, fixup=_sep_fixup("param.exist name", False)),
        _spec("nameaddr.name", nameaddr_name),
        _spec("nameaddr.uri", nameaddr_uri),
        _spec("nameaddr.len", nameaddr_len),
        _spec("nameaddr.param", nameaddr_param, 1, fixup=_fixup_strs("nameaddr.param")),
        _spec("nameaddr.params", nameaddr_params),
        _spec("csv.count", csv_count),
        _spec("csv.value", csv_value, 1, fixup=_fixup_ints("csv.value")),
        _spec("re.subst", re_subst, 1, 64, fixup=_re_subst_fixup),
        _spec("ip.isip", ip_isip),
        _spec("ip.isip4", ip_isip4),
        _spec("ip.isip6", ip_isip6),
        _spec("ip.pton", ip_pton),
        _spec("ip.ntop", ip_ntop),
        _spec("ip.family", ip_family),
        _spec("ip.matches", ip_matches, 1, fixup=_network_fixup),
        _spec("ip.isprivate", ip_isprivate),
    ]
    for pname in ("transport", "ttl", "maddr", "method", "lr", "r2"):
        specs.append(_spec(f"uri.{pname}", _uri_named_param(pname)))
    specs.append(_spec("uri.uparam", _uri_named_param("user")))
    for algo in ("sha1", "sha224", "sha256", "sha384", "sha512"):
        specs.append(_spec(f"s.{algo}", _digest(algo)))
        specs.append(_spec(f"s.{algo}_hmac", _hmac_digest(algo), 1, fixup=_fixup_strs("key")))
    return specs
