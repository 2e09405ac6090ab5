"""Building messages: replies (RFC 3261 8.2.6), new requests (NOTIFY), replies to bytes that did not
parse, and the random tokens (tags, branches) a UA needs."""

from __future__ import annotations

import itertools
import os
import re
import secrets
from collections.abc import Callable, Iterable
from typing import NoReturn

from .headers import _KEY_CACHE, Header, canonical_name, check_header, header_key
from .message import SIPRequest, SIPResponse
from .parse import MAX_HEADERS, MAX_MESSAGE_SIZE, _find_head_end, _skip_leading_crlf
from .uri import SipURI

# RFC 3261 section 21, RFC 3265/6665 (489), RFC 3903 (412), RFC 3261 21.4.17 (423), RFC 4028 (422).
REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}
_CLASS_REASONS = {1: "Trying", 2: "OK", 3: "Redirect", 4: "Bad Request", 5: "Server Error", 6: "Decline"}


def reason_phrase(status: int) -> str:
    """The usual reason phrase of `status` (RFC 3261 21), or a generic one for its class."""
    return REASON_PHRASES.get(status) or _CLASS_REASONS.get(status // 100, "Unknown")


def generate_tag() -> str:
    """A From/To tag: 64 random bits in hex (RFC 3261 19.3 asks for at least 32 random bits)."""
    return secrets.token_hex(8)


# RFC 3261 8.1.1.7: a branch must be unique across space and time, not unpredictable (tags must be
# random, branches need not be). 64 random bits drawn once per process, then a counter: unique, and no
# system call per request (os.urandom was a twentieth of a NOTIFY fan-out). A forked process draws its
# own bits (a worker and its siblings must not repeat each other's branches), and a worker process puts
# its slot in front of them (set_branch_marker) so that responses come back to it (docs/workers.md 2).
class _BranchSource:
    """This process's branch prefix ("z9hG4bK" + the slot marker + 64 random bits) and counter."""

    def __init__(self) -> None:
        self.marker = ""
        self.prefix = ""
        self.numbers = itertools.count(1)
        self.redraw()

    def redraw(self) -> None:
        self.prefix = f"z9hG4bK{self.marker}{secrets.token_hex(8)}."
        self.numbers = itertools.count(1)


_branches = _BranchSource()
os.register_at_fork(after_in_child=_branches.redraw)


def set_branch_marker(marker: str) -> None:
    """In a worker process: every branch from now on is "z9hG4bK" + `marker` (the worker's slot, made by
    routescript.workers.dispatch) + new random bits + a counter. "" gives the one-process form."""
    _branches.marker = marker
    _branches.redraw()


def generate_branch() -> str:
    """A Via branch: the RFC 3261 magic cookie "z9hG4bK", the worker's slot marker (none in one process),
    this process's 64 random bits, a counter."""
    branches = _branches
    return f"{branches.prefix}{next(branches.numbers):x}"


# tag-param = "tag" EQUAL token, among the params after the URI (after ">" or the first ";" of an
# addr-spec, RFC 3261 20.10).
_TAG_PARAM = re.compile(r";[ \t]*tag[ \t]*=", re.IGNORECASE)


def _has_tag(to_value: str) -> bool:
    gt = to_value.rfind(">")
    if gt >= 0:
        return _TAG_PARAM.search(to_value, gt) is not None
    return _TAG_PARAM.search(to_value) is not None


def _header_pairs(headers: Iterable[tuple[str, str]] | Iterable[Header]) -> list[tuple[str, str]]:
    out = []
    for name, raw in headers:
        value = str(raw)
        check_header(name, value)
        out.append((name, value))
    return out


def _line_break(value: str) -> NoReturn:
    raise ValueError(f"header value holds a line break: {value!r}")


def build_reply(
    request: SIPRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    make_to_tag: Callable[[SIPRequest], str] | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
    record_route: bool = False,
    server: str = "",
) -> SIPResponse:
    """A response to `request` per RFC 3261 8.2.6: every Via line, From, To, Call-ID and CSeq copied
    (and Timestamp for a 100, 8.2.6.1); a To tag added when the request's To has none and status > 100
    (`to_tag`, else `make_to_tag(request)` - asked only then -, else a fresh one); then `headers`,
    Content-Type when given, and Content-Length.

    `record_route`: a 18x/2xx reply carries the request's Record-Route lines, in order, before
    `headers` (RFC 3261 12.1.1; OpenSIPS copies them for 180..299 to any request). `server`: a Server
    header added after `headers` unless they hold one.
    """
    if not request.is_request:
        raise ValueError("build_reply needs a request")
    status = int(status)
    if not 100 <= status <= 699:
        raise ValueError(f"not a status code: {status}")
    if reason is None:
        reason = reason_phrase(status)
    elif "\r" in reason or "\n" in reason:
        raise ValueError(f"reason phrase holds a line break: {reason!r}")
    # Built straight into the response's storage (pairs + index, the shapes message.py gives them):
    # this runs for every request. The request's storage is only read.
    src = request._headers
    index = request._index
    try:
        vias = [("Via", src[i][1]) for i in index["via"]]
        from_ = src[index["from"][0]][1]
        to = src[index["to"][0]][1]
        call_id = src[index["call-id"][0]][1]
        cseq = src[index["cseq"][0]][1]
    except KeyError as e:  # only a request we built ourselves can lack them
        raise ValueError(f"request has no {e.args[0]} header") from None
    if status > 100 and not _has_tag(to):
        tag = to_tag or (make_to_tag(request) if make_to_tag is not None else generate_tag())
        to = f"{to};tag={tag}"
    n = len(vias)
    out: list[tuple[str, str]] = vias
    out += (("From", from_), ("To", to), ("Call-ID", call_id), ("CSeq", cseq))
    out_index: dict[str, list[int]] = {
        "via": list(range(n)), "from": [n], "to": [n + 1], "call-id": [n + 2], "cseq": [n + 3],
    }
    at = n + 4   # where the next line goes
    if status == 100 and "timestamp" in index:
        out.append(("Timestamp", src[index["timestamp"][0]][1]))
        out_index["timestamp"] = [at]
        at += 1
    if record_route and 180 <= status < 300 and "record-route" in index:
        positions = out_index["record-route"] = []
        for i in index["record-route"]:
            out.append(("Record-Route", src[i][1]))
            positions.append(at)
            at += 1
    # Each added line checked once, in the same pass that files it: a name already in header_key's
    # cache is a valid token (the cache holds only those), so it costs one lookup; any other name
    # goes through check_header (ValueError for a name that is not a token).
    key_of = _KEY_CACHE.get
    for name, raw in headers:
        value = raw if raw.__class__ is str else str(raw)
        key = key_of(name)
        if key is None:
            key = check_header(name, value)
        elif "\r" in value or "\n" in value:
            _line_break(value)
        if key in out_index:
            out_index[key].append(at)
        else:
            out_index[key] = [at]
        out.append((name, value))
        at += 1
    if server and "server" not in out_index:
        if "\r" in server or "\n" in server:
            _line_break(server)
        out.append(("Server", server))
        out_index["server"] = [at]
        at += 1
    body = bytes(body)
    if content_type:
        if "\r" in content_type or "\n" in content_type:
            _line_break(content_type)
        if "content-type" in out_index:
            out_index["content-type"].append(at)
        else:
            out_index["content-type"] = [at]
        out.append(("Content-Type", content_type))
        at += 1
    if "content-length" in out_index:
        out_index["content-length"].append(at)
    else:
        out_index["content-length"] = [at]
    out.append(("Content-Length", str(len(body))))
    # The copied lines parse to what the request already parsed (the transport routes the response
    # by its top Via; the transaction layer matches by CSeq): share those values instead of parsing again.
    req_cache = request._cache
    cache = {k: req_cache[k] for k in _COPIED_VALUES if k in req_cache}
    return SIPResponse._from_parts(status, reason, "SIP/2.0", (out, out_index, cache), body, None)


# Parsed values of the header lines build_reply copies unchanged (To may get a tag: not shared).
_COPIED_VALUES = ("via", "vias", "from", "cseq")


def build_request(
    method: str,
    uri: str | SipURI,
    headers: Iterable[tuple[str, str]],
    body: bytes = b"",
    *,
    content_type: str | None = None,
) -> SIPRequest:
    """A new request (a NOTIFY, say): start line, `headers` in the order given, Max-Forwards: 70 when
    not given (RFC 3261 8.1.1.6), Content-Type when given, Content-Length always (computed).

    The Via is not added here: the transaction layer that sends the request owns the branch.
    """
    out = _header_pairs(headers)
    body = bytes(body)
    keys = {header_key(h[0]) for h in out}
    if "max-forwards" not in keys:
        out.append(("Max-Forwards", "70"))
    if content_type and "content-type" not in keys:
        check_header("Content-Type", content_type)
        out.append(("Content-Type", content_type))
    out = [h for h in out if header_key(h[0]) != "content-length"]
    out.append(("Content-Length", str(len(body))))
    return SIPRequest(method, str(uri), out, body)


_WANTED = {"via", "from", "to", "call-id", "cseq"}
_UNSAFE_REASON = re.compile(r"[\x00-\x1f\x7f]")


def reply_to_malformed(data: bytes, status: int = 400, reason: str = "Bad Request") -> bytes | None:
    """A best-effort reply (bytes) to a request that did not parse: the Via, From, To, Call-ID and CSeq
    lines are copied as written (RFC 3261 8.2.6), a To tag added, `status` and `reason` used as given
    (e.g. ParseError's .status/.reason: "400 Bad CSeq header").

    None when there is not enough to answer: a line among Via/From/To/Call-ID/CSeq is missing, the
    bytes are a response or an ACK (neither is ever answered), or the head cannot be found.
    """
    status = int(status)
    if not 100 <= status <= 699:
        raise ValueError(f"not a status code: {status}")
    reason = _UNSAFE_REASON.sub(" ", reason).strip() or reason_phrase(status)
    data = bytes(data[: MAX_MESSAGE_SIZE * 2])
    start = _skip_leading_crlf(data)
    head_end, _ = _find_head_end(data, start)
    head = data[start:head_end] if head_end >= 0 else data[start:]
    lines = head.replace(b"\r\n", b"\n").split(b"\n", MAX_HEADERS * 2)[: MAX_HEADERS * 2]
    first = lines[0].strip()
    if not first or first[:4].upper() == b"SIP/":
        return None
    method = first.split(None, 1)[0]
    if method == b"ACK":
        return None
    found: dict[str, list[bytes]] = {}
    last: tuple[str, int] | None = None
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            if last is not None:  # a continuation line of a header we keep
                found[last[0]][last[1]] += b" " + line.strip()
            continue
        last = None
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        key = header_key(name.strip(b" \t").decode("latin-1"))
        if key is None or key not in _WANTED:
            continue
        value = value.strip()
        if key != "via" and key in found:
            continue  # the first one counts
        found.setdefault(key, []).append(value)
        last = (key, len(found[key]) - 1)
    if len(found) < len(_WANTED):
        return None
    out = [f"SIP/2.0 {status} {reason}".encode()]
    for key in ("via", "from", "to", "call-id", "cseq"):
        for line_value in found[key]:
            if b"\r" in line_value:  # a bare CR would split the line for the peer's parser
                return None
            value = line_value
            if key == "to" and status > 100 and not _has_tag(value.decode("latin-1")):
                value += b";tag=" + generate_tag().encode()
            out.append(canonical_name(key).encode() + b": " + value)
    out.append(b"Content-Length: 0")
    out.append(b"")
    out.append(b"")
    return b"\r\n".join(out)


__all__ = [
    "REASON_PHRASES",
    "build_reply",
    "build_request",
    "generate_branch",
    "generate_tag",
    "reason_phrase",
    "reply_to_malformed",
    "set_branch_marker",
]
