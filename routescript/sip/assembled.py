"""Messages we send many of (a NOTIFY per watcher per change, a 100 Trying per relayed INVITE), made
straight into their bytes.

`assemble_request` writes the request line, the header lines and the body into the bytes the transport
sends, and returns a SIPRequest holding only those bytes, its method and its Request-URI. Its header
lines are parsed back from the bytes the first time anything reads them (a log line, a locally made
408): a NOTIFY answered 200 never needs them. That saves the header index every message otherwise
gets (a dict and a list per header name), which made a tenth of a fan-out's objects and kept the
collector busy while hundreds of NOTIFYs were in flight.

The bytes are read back without the bounds that protect us from received messages (size, header
count, line length): a NOTIFY carrying a large presentity state or a long route set is ours, and
refusing to read it back (ParseError "Message Too Large") broke the locally made 408/503 in the
timer path and left its dialog waiting for an answer forever.
"""

from __future__ import annotations

from typing import Any

from routescript.sip.message import SIPMessage, SIPRequest, SIPResponse
from routescript.sip.parse import parse_message

_SIP_VERSION = "SIP/2.0"
_PARSED_LATER = frozenset(("_headers", "_index", "_cache"))   # SIPMessage's head, left unset


def _read_back(message: SIPMessage, name: str) -> Any:
    """`name` of an assembled message: its head parsed from its own bytes when `name` is part of it."""
    # Only reached for an attribute that is not set: the parsed parts, before anything read them.
    if name not in _PARSED_LATER:
        raise AttributeError(name)
    raw = message._raw
    assert raw is not None   # set at assembly; an edit clears it, but reads the headers first
    size = len(raw)   # our own bytes: no bound smaller than themselves
    message._take_head(parse_message(raw, max_size=size, max_headers=size, max_line_length=size))
    return getattr(message, name)


class AssembledRequest(SIPRequest):
    """A SIPRequest whose header lines are parsed from its own bytes on first use."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        return _read_back(self, name)


class AssembledResponse(SIPResponse):
    """A SIPResponse whose header lines are parsed from its own bytes on first use."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        return _read_back(self, name)


def assemble_request(method: str, ruri: str, headers: list[tuple[str, str]], body: bytes) -> SIPRequest:
    """A request from parts our own code has already checked: no validation, `headers` (Content-Length
    included) written as given. Callers make sure no value holds a line break (the bytes would not
    parse back); everyone else uses build_request. Without a Via (the layer below adds one) the bytes
    could not parse back, so that request is an ordinary, eagerly parsed one."""
    if not headers or headers[0][0] != "Via":
        return SIPRequest(method, ruri, headers, body)
    lines = [f"{method} {ruri} {_SIP_VERSION}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += ("", "")
    raw = "\r\n".join(lines).encode("utf-8") + body
    return AssembledRequest._from_parts(method, ruri, _SIP_VERSION, None, body, raw)


def assemble_trying(request: SIPRequest, server: str = "") -> SIPResponse:
    """The 100 Trying of `request` (RFC 3261 8.2.6.1): byte for byte build_reply(request, 100,
    server=server) - the request's Via lines, From, To, Call-ID, CSeq and Timestamp, `server` as its
    Server header, Content-Length 0 - written straight into its bytes. A proxy's 100 is sent, kept
    for a retransmitted INVITE and rarely read: its head is parsed back only then. ValueError for a
    request without one of those headers or a `server` holding a line break, as build_reply."""
    src = request._headers
    index = request._index
    try:
        lines = ["SIP/2.0 100 Trying", *[f"Via: {src[i][1]}" for i in index["via"]],
                 f"From: {src[index['from'][0]][1]}", f"To: {src[index['to'][0]][1]}",
                 f"Call-ID: {src[index['call-id'][0]][1]}", f"CSeq: {src[index['cseq'][0]][1]}"]
    except KeyError as e:  # only a request we built ourselves can lack them
        raise ValueError(f"request has no {e.args[0]} header") from None
    if "timestamp" in index:
        lines.append(f"Timestamp: {src[index['timestamp'][0]][1]}")
    if server:
        if "\r" in server or "\n" in server:
            raise ValueError(f"header value holds a line break: {server!r}")
        lines.append(f"Server: {server}")
    lines += ("Content-Length: 0", "", "")
    raw = "\r\n".join(lines).encode("utf-8")
    return AssembledResponse._from_parts(100, "Trying", _SIP_VERSION, None, b"", raw)
