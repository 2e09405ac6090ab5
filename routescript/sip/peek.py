"""peek_keys: the few keys a worker dispatcher needs, read from raw bytes without parsing the message.

Which worker owns a message (docs/workers.md section 2) depends on the start line, the top Via branch,
the To tag, the Call-ID and, for an initial PUBLISH or SUBSCRIBE, the Request-URI's user@host. Reading
them costs a handful of C calls on the head; a full `parse_message` costs the whole header loop. The
peek is deliberately narrow: anything it does not recognise with certainty (folded or bare-LF lines,
non-ASCII heads, quoted strings where a parameter is read, a parameter twice or without a value, a
header missing) gives None, and the caller parses the message fully (`keys_from_message`). So a peek
either agrees with the parser or abstains (the hypothesis test in tests/workers/test_peek.py).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import ParseError
from .message import SIPRequest, SIPResponse
from .uri import parse_uri

__all__ = ["PeekedKeys", "keys_from_message", "peek_keys", "uri_user_host"]


class PeekedKeys(NamedTuple):
    """What the dispatcher routes on (a NamedTuple: frozen, and made in one call - it is made for every
    message a worker reads).

    method: the request method; None for a response.
    top_branch / to_tag: None when absent.
    call_id: a request's Call-ID. A response has only its top Via branch read (rule 1 routes it by that
        alone): its to_tag and call_id are None, whatever it carries - reading them cost a third of the
        peek of a response (measured, 2026-12-08).
    ruri_user_host: `user@host` of the Request-URI (host lower-cased, no port or parameters; the host
        alone when there is no user), set only for a PUBLISH or SUBSCRIBE without To tag - the one case
        a rule reads it (rule 3); None otherwise and for non-SIP URIs.
    """

    is_response: bool
    method: str | None
    top_branch: str | None
    to_tag: str | None
    call_id: str | None
    ruri_user_host: str | None = None


# header-name HCOLON value (HCOLON = *( SP / HTAB ) ":" SWS), compact forms v, t, i (RFC 3261 7.3.3);
# anchored at a line start; the first of each is the one the parser reads. One search per header: three
# searches cost half a finditer over every header line with a Python step per match (measured, 2026-12-08).
# The value runs to the line's CR (greedy: 2.6x faster than a lazy match with a look-ahead, measured) and
# its trailing SP/HTAB are stripped by the caller.
_VIA = re.compile(r"\r\n(?:via|v)[ \t]*:[ \t]*([^\r]*)", re.IGNORECASE)
_TO = re.compile(r"\r\n(?:to|t)[ \t]*:[ \t]*([^\r]*)", re.IGNORECASE)
_CALL_ID = re.compile(r"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r]*)", re.IGNORECASE)
# A folded line (RFC 3261 7.3.1: a line starting with SP or HTAB continues the header above): one regex
# search, half the two `in` scans it replaced.
_FOLDED = re.compile("\n[ \t]")
# The top via-parm: sent-protocol "SIP/2.0/..." up to the first comma (quotes make the peek abstain).
_TOP_VIA = re.compile(r"SIP/2\.0/[^,]*")
# via-branch = "branch" EQUAL branch-value; tag-param = "tag" EQUAL token (EQUAL = SWS "=" SWS). Every
# ";branch" is found, with or without "=", so a second one or a bare flag can make the peek abstain.
_BRANCH = re.compile(r";[ \t]*branch[ \t]*(?:(=)[ \t]*([^;, \t]*))?", re.IGNORECASE)
_TAG = re.compile(r";[ \t]*tag[ \t]*(?:(=)[ \t]*([^;, \t]*))?", re.IGNORECASE)
# Request-Line = Method SP Request-URI SP SIP-Version CRLF
_REQUEST_LINE = re.compile(r"([A-Za-z0-9.!%*_+`'~-]+) (\S+) SIP/2\.0\r\n")
_URI_KEYED = frozenset(("PUBLISH", "SUBSCRIBE"))
_UNSURE = ""   # a parameter the peek will not read (the parser decides)


def peek_keys(data: bytes) -> PeekedKeys | None:
    """The routing keys of one message, or None when the bytes need the full parser to say."""
    head_end = data.find(b"\r\n\r\n")
    if head_end <= 0:
        return None
    try:
        head = data[:head_end].decode("ascii")
    except UnicodeDecodeError:
        return None
    if _unusual(head):
        return None
    via_found = _VIA.search(head)
    if via_found is None or '"' in via_found[1]:
        return None
    top_via = _TOP_VIA.match(via_found[1])
    if top_via is None:
        return None   # empty elements, a spaced sent-protocol: the parser's business
    top_branch = _param(_BRANCH, top_via[0])
    if top_branch == _UNSURE:
        return None
    if head.startswith("SIP/2.0 "):
        return PeekedKeys(True, None, top_branch, None, None)
    to_found, call_id_found = _TO.search(head), _CALL_ID.search(head)
    if to_found is None or call_id_found is None:
        return None
    call_id = call_id_found[1].rstrip(" \t")
    if not call_id or " " in call_id or "\t" in call_id:
        return None
    to_tag = _to_tag(to_found[1].rstrip(" \t"))
    if to_tag == _UNSURE:
        return None
    line = _REQUEST_LINE.match(head)
    if line is None:
        return None
    method = line[1]
    user_host = None
    if to_tag is None and method in _URI_KEYED:
        user_host = _peek_user_host(line[2])
        if user_host == _UNSURE:
            return None
    return PeekedKeys(False, method, top_branch, to_tag, call_id, user_host)


def _unusual(head: str) -> bool:
    """What sends a head to the parser: a CR or LF not in a CRLF pair, a folded line. Counted with str
    methods: a regex with a look-behind took 6 us of the peek's 14 (measured on a SIPp PUBLISH)."""
    crlf = head.count("\r\n")
    return head.count("\r") != crlf or head.count("\n") != crlf or _FOLDED.search(head) is not None


def keys_from_message(msg: SIPRequest | SIPResponse) -> PeekedKeys:
    """The same keys from a parsed message (ParseError when one of its headers is malformed)."""
    top_branch = msg.via.branch
    if isinstance(msg, SIPResponse):
        return PeekedKeys(True, None, top_branch, None, None)
    to_tag = msg.to.tag
    call_id = msg.call_id
    user_host = _user_host(msg.ruri) if to_tag is None and msg.method in _URI_KEYED else None
    return PeekedKeys(False, msg.method, top_branch, to_tag, call_id, user_host)


def _param(pattern: re.Pattern[str], text: str) -> str | None:
    """The parameter's value; None when absent; _UNSURE when twice, without "=" or empty."""
    found = pattern.findall(text)
    if not found:
        return None
    if found[1:]:
        return _UNSURE
    equals, value = found[0]
    return value if equals else _UNSURE   # an empty value is _UNSURE too


def _to_tag(to: str) -> str | None:
    """The tag among the header parameters: after the ">" of a name-addr, else after the addr-spec."""
    if "<" in to:
        gt = to.rfind(">")
        if gt < 0:
            return _UNSURE   # unclosed: let the parser say what it is
        return _param(_TAG, to[gt:])
    if '"' in to:
        return _UNSURE       # a quoted display name without <...>: likewise
    return _param(_TAG, to)


def _peek_user_host(ruri: str) -> str | None:
    try:
        return _user_host(ruri)
    except ParseError:
        return _UNSURE


def uri_user_host(uri_text: str) -> str | None:
    """`user@host` of a SIP URI as the dispatcher keys a PUBLISH or SUBSCRIBE by its Request-URI (host
    lower-cased, no port or parameters); None for another scheme. ParseError when it does not parse."""
    return _user_host(uri_text)


def _user_host(ruri: str) -> str | None:
    uri = parse_uri(ruri)
    if uri.scheme not in ("sip", "sips"):
        return None
    host = uri.host.lower()
    return host if uri.user is None else f"{uri.user}@{host}"
