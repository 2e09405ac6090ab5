"""Requests we send many of (a NOTIFY per watcher per change), made straight into their bytes.

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

from routescript.sip.message import SIPRequest
from routescript.sip.parse import parse_message

_SIP_VERSION = "SIP/2.0"
_PARSED_LATER = frozenset(("_headers", "_index", "_cache"))   # SIPMessage's head, left unset


class AssembledRequest(SIPRequest):
    """A SIPRequest whose header lines are parsed from its own bytes on first use."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        # Only reached for an attribute that is not set: the parsed parts, before anything read them.
        if name not in _PARSED_LATER:
            raise AttributeError(name)
        raw = self._raw
        assert raw is not None   # set at assembly; an edit clears it, but reads the headers first
        size = len(raw)   # our own bytes: no bound smaller than themselves
        self._take_head(parse_message(raw, max_size=size, max_headers=size, max_line_length=size))
        return getattr(self, name)


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
