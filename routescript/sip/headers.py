"""Header names: the compact forms, canonical spelling, and splitting comma-separated values.

RFC 3261 7.3.1: header names are case-insensitive; 7.3.3 and 20: the compact forms. Every lookup in the
message goes through `header_key()`, which maps any spelling to one lower-case long name.
"""

from __future__ import annotations

from typing import NamedTuple

from . import _abnf


class Header(NamedTuple):
    """One header line as written: `name` in the case (and compact form) the sender used, `value`
    without the leading/trailing whitespace, folded continuation lines joined by one space.

    What `SIPMessage.headers` hands out. A message stores its lines as plain (name, value) tuples (the
    parser makes one per line of every message, and a tuple display costs no call); a NamedTuple is a
    tuple too, so a Header compares and unpacks like the pair it was made from.
    """

    name: str
    value: str


# Compact forms: RFC 3261 7.3.3 (i m e l c f s k t v), RFC 3515 (r), RFC 3891/3892 (b), RFC 3903 none,
# RFC 4028 (x), RFC 3841 (j, d), RFC 3265/6665 (o, u), RFC 3329 none, RFC 4474 (y: Identity),
# RFC 3428/4916 none; "a" is Accept-Contact (RFC 3841); "n" Identity-Info.
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# How we write a header we add ourselves (lower-case key -> canonical spelling).
CANONICAL_NAMES: dict[str, str] = {
    name.lower(): name
    for name in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Expires", "Event",
        "Allow-Events", "Content-Type", "Content-Length", "Content-Encoding", "Route", "Record-Route",
        "Subscription-State", "SIP-ETag", "SIP-If-Match", "Accept", "Allow", "Supported", "Require",
        "Unsupported", "Server", "User-Agent", "Retry-After", "Min-Expires", "Timestamp", "Warning",
        "WWW-Authenticate", "Proxy-Authenticate", "Authorization", "Proxy-Authorization", "Subject",
        "Refer-To", "Referred-By", "Session-Expires", "Accept-Contact", "Reject-Contact",
        "Request-Disposition", "Identity", "Identity-Info", "Date", "Organization", "Priority",
    )
}

# Bounded cache of `header_key` results: the same few dozen spellings appear in every message, and one
# dict lookup is cheaper than validating, lower-casing and mapping the compact form each time.
_KEY_CACHE: dict[str, str] = {}
_KEY_CACHE_MAX = 2048


def header_key(name: str) -> str | None:
    """The lookup key for a header name: lower-case long form ("v" -> "via", "CALL-ID" -> "call-id").

    None when `name` is not a valid header name (field-name = token, RFC 3261 25.1).
    """
    if name in _KEY_CACHE:   # `in` and `[]` rather than .get(): no method call for a known spelling
        return _KEY_CACHE[name]
    if not _abnf.TOKEN.fullmatch(name):
        return None
    key = name.lower()
    key = COMPACT_FORMS.get(key, key)
    if len(_KEY_CACHE) < _KEY_CACHE_MAX:
        _KEY_CACHE[name] = key
    return key


def check_header(name: str, value: str) -> str:
    """The lookup key of a header line our own code or a script adds; ValueError (a bug, not a peer's
    fault) for a name that is not a token or a value holding a line break (the bytes would not parse)."""
    key = _KEY_CACHE[name] if name in _KEY_CACHE else header_key(name)   # header_key says why
    if key is None:
        raise ValueError(f"not a header name: {name!r}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"header value holds a line break: {value!r}")
    return key


def canonical_name(name: str) -> str:
    """How to spell a header we write: "call-id" -> "Call-ID"; unknown names as given."""
    key = header_key(name)
    if key is None:
        return name
    return CANONICAL_NAMES.get(key, name if len(name) > 1 else key)


def split_values(value: str) -> list[str]:
    """Split a comma-separated header value into its elements (RFC 3261 7.3.1).

    Commas inside a quoted-string or inside `<...>` do not split (a display name "Smith, Bob" or a URI
    with a comma in its user part). Empty elements are dropped; each element is stripped.
    """
    if "," not in value:
        v = value.strip()
        return [v] if v else []
    out: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
        i += 1
    part = value[start:].strip()
    if part:
        out.append(part)
    return out
