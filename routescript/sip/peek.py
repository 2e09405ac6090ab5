"""peek_keys: the few keys a worker dispatcher needs, read from raw bytes without parsing the message.

Which worker owns a message (docs/workers.md section 2) depends on the start line, the top Via branch,
the To tag, the Call-ID and, for an initial PUBLISH or SUBSCRIBE, the Request-URI's user@host. Reading
them costs a handful of C calls on the head; a full `parse_message` costs the whole header loop. The
peek is deliberately narrow: anything it does not recognise with certainty (folded or bare-LF lines,
non-ASCII heads, quoted strings where a parameter is read, a header missing) gives None, and the caller
parses the message fully (`keys_from_message`). So a peek either agrees with the parser or abstains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ParseError
from .message import SIPRequest, SIPResponse
from .uri import parse_uri

__all__ = ["PeekedKeys", "keys_from_message", "peek_keys"]


@dataclass(frozen=True, slots=True)
class PeekedKeys:
    """What the dispatcher routes on.

    method: the request method; None for a response.
    top_branch / to_tag: None when absent.
    ruri_user_host: `user@host` of the Request-URI (host lower-cased, no port or parameters; the host
        alone when there is no user), set only for a PUBLISH or SUBSCRIBE without To tag - the one case
        a rule reads it (rule 3); None otherwise and for non-SIP URIs.
    """

    is_response: bool
    method: str | None
    top_branch: str | None
    to_tag: str | None
    call_id: str
    ruri_user_host: str | None = None


# RFC 3261 7.3.1 / 20: header-name HCOLON value, where HCOLON = *( SP / HTAB ) ":" SWS; compact forms
# v (Via), t (To), i (Call-ID). Anchored at a line start: the head has no folded lines when this runs.
_WANTED = re.compile(rb"\r\n(via|v|to|t|call-id|i)[ \t]*:[ \t]*([^\r]*)", re.IGNORECASE)
_NAMES = {b"via": "via", b"v": "via", b"to": "to", b"t": "to", b"call-id": "call-id", b"i": "call-id"}
# via-branch = "branch" EQUAL branch-value; tag-param = "tag" EQUAL token (EQUAL = SWS "=" SWS).
_BRANCH = re.compile(r";[ \t]*branch[ \t]*=[ \t]*([^;, \t]*)", re.IGNORECASE)
_TAG = re.compile(r";[ \t]*tag[ \t]*=[ \t]*([^;, \t]*)", re.IGNORECASE)
# Request-Line = Method SP Request-URI SP SIP-Version; Status-Line = SIP-Version SP Status-Code SP ...
_REQUEST_LINE = re.compile(r"([A-Za-z0-9.!%*_+`'~-]+) (\S+) SIP/2\.0")
_URI_KEYED = frozenset(("PUBLISH", "SUBSCRIBE"))


def peek_keys(data: bytes) -> PeekedKeys | None:
    """The routing keys of one message, or None when the bytes need the full parser to say."""
    head_end = data.find(b"\r\n\r\n")
    if head_end <= 0:
        return None
    head = data[:head_end]
    # Unusual heads go to the parser: non-ASCII, folded lines, LF or CR not in CRLF pairs.
    if (not head.isascii() or b"\r\n " in head or b"\r\n\t" in head
            or head.count(b"\n") != head.count(b"\r\n") or head.count(b"\r") != head.count(b"\n")):
        return None
    values: dict[str, str] = {}
    for m in _WANTED.finditer(head):
        name = _NAMES[m.group(1).lower()]
        if name not in values:
            values[name] = m.group(2).decode("ascii").rstrip(" \t")
    if len(values) != 3:
        return None
    via, to, call_id = values["via"], values["to"], values["call-id"]
    if not call_id or " " in call_id or "\t" in call_id or '"' in via:
        return None
    top_via = via.partition(",")[0]
    if not top_via.startswith("SIP/2.0/"):
        return None   # empty elements, spaced sent-protocol: the parser's business
    top_branch = _param(_BRANCH, "branch", top_via)
    to_tag = _to_tag(to)
    if top_branch == "" or to_tag == "":
        return None
    start = head[:head.find(b"\r\n")].decode("ascii")
    if start.startswith("SIP/2.0 "):
        return PeekedKeys(True, None, top_branch, to_tag, call_id)
    line = _REQUEST_LINE.fullmatch(start)
    if line is None:
        return None
    method, ruri = line.group(1), line.group(2)
    user_host = None
    if to_tag is None and method in _URI_KEYED:
        try:
            user_host = _user_host(ruri)
        except ParseError:
            return None
    return PeekedKeys(False, method, top_branch, to_tag, call_id, user_host)


def keys_from_message(msg: SIPRequest | SIPResponse) -> PeekedKeys:
    """The same keys from a parsed message (ParseError when one of its headers is malformed)."""
    to_tag = msg.to.tag
    call_id = msg.call_id
    top_branch = msg.via.branch
    if isinstance(msg, SIPResponse):
        return PeekedKeys(True, None, top_branch, to_tag, call_id)
    user_host = _user_host(msg.ruri) if to_tag is None and msg.method in _URI_KEYED else None
    return PeekedKeys(False, msg.method, top_branch, to_tag, call_id, user_host)


def _param(pattern: re.Pattern[str], name: str, text: str) -> str | None:
    """The parameter's value; None when `name` is nowhere in `text`; "" when unsure (the name twice, no
    "=", an empty value: the parser's reading of those is not worth copying)."""
    count = text.lower().count(name)
    if count == 0:
        return None
    m = pattern.search(text)
    return "" if count > 1 or m is None else m.group(1)


def _to_tag(to: str) -> str | None:
    """The tag among the header parameters: after the ">" of a name-addr, else after the addr-spec;
    "" when unsure."""
    if "<" in to:
        gt = to.rfind(">")
        if gt < 0:
            return ""   # unclosed: let the parser say what it is
        to = to[gt:]
    elif '"' in to:
        return ""   # a quoted display name without <...>: likewise
    return _param(_TAG, "tag", to)


def _user_host(ruri: str) -> str | None:
    uri = parse_uri(ruri)
    if uri.scheme not in ("sip", "sips"):
        return None
    host = uri.host.lower()
    return host if uri.user is None else f"{uri.user}@{host}"
