"""SIP messages: framing, the eager parse, lazily parsed header values, and editing.

What `parse_message` does eagerly is kept minimal because every datagram pays for it (DESIGN.md,
the way OpenSIPS parses): find the end of the head, split it into lines once, build the list of
`Header(name, value)` and a dict from lower-case long header name to the line indices, check the start
line, check that the headers every transaction needs are there (Via, From, To, Call-ID, CSeq - the
CSeq is parsed because its method must equal the request method), and cut the body by Content-Length.
Every other header value is parsed on first access through the typed properties and cached.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import _abnf
from .errors import ParseError
from .headers import _KEY_CACHE, Header, canonical_name, header_key, split_values
from .uri import SipURI, parse_uri
from .values import (
    Contact,
    ContentType,
    CSeq,
    Event,
    NameAddr,
    Via,
    parse_contact,
    parse_content_type,
    parse_cseq,
    parse_delta_seconds,
    parse_event,
    parse_name_addr,
    parse_via,
)

# Bounds (STYLE.md 7). Over MAX_MESSAGE_SIZE the answer is 513 Message Too Large (RFC 3261 21.5.11).
MAX_MESSAGE_SIZE = 65536
MAX_HEADERS = 256          # header lines (continuation lines included) per message
MAX_LINE_LENGTH = 8192     # one physical line of the head

# The headers a transaction needs (RFC 3261 8.1.1: "the minimum required" set), checked eagerly.
_REQUIRED = (("via", "Via"), ("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq"))
_REQUIRED_KEYS = frozenset(key for key, _ in _REQUIRED)
# Headers that must appear once (RFC 3261 7.3.1 allows repetition only for comma-list headers).
# Choice: a repetition with the very same value is tolerated, a different one is rejected - two
# different Content-Lengths are how requests get smuggled.
_SINGLE = ("from", "to", "call-id", "cseq", "content-length")

_SIP_VERSION = "SIP/2.0"

# Parsed values cached under another name than their header's key (see the typed properties).
_CACHE_KEYS = {"via": ("via", "vias"), "contact": ("contacts",)}


def _is_digits(text: str) -> bool:
    # str.isdigit() alone is True for "²" and "٣", which int() refuses or reads differently.
    return text.isascii() and text.isdigit()


def _find_head_end(data: bytes, start: int) -> tuple[int, int]:
    """(end of the head, start of the body): the first empty line, CRLF or bare LF (RFC 3261 7.5
    asks for CRLF; bare LF is accepted as many parsers do). (-1, -1) when there is no empty line."""
    i = data.find(b"\n\r\n", start)
    j = data.find(b"\n\n", start, i + 1 if i >= 0 else len(data))
    if j >= 0:
        return (j - 1 if data[j - 1] == 13 else j), j + 2
    if i >= 0:
        # the head ends before the CRLF (or LF) of its last line
        return (i - 1 if data[i - 1] == 13 else i), i + 3
    return -1, -1


def _skip_leading_crlf(data: bytes) -> int:
    # RFC 3261 7.5: "implementations processing SIP messages over stream-oriented transports MUST
    # ignore any CRLF appearing before the start-line". Harmless for datagrams too.
    if data[:1] not in (b"\r", b"\n"):
        return 0
    return len(data) - len(data.lstrip(b"\r\n"))


def _decode(head: bytes) -> str:
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        # Choice: RFC 3261 says UTF-8; a head that is not is read as Latin-1 (what such UAs send)
        # rather than refused. A rebuilt message is written back in UTF-8.
        return head.decode("latin-1")


def _head_lines(data: bytes, start: int) -> tuple[str, list[str], int]:
    """(head text, its lines, where the body starts) for a message starting at `start`."""
    # Fast path, the usual message: CRLF everywhere, so the head ends at the first CRLFCRLF and
    # splitting it on CRLF leaves no CR or LF behind.
    pos = data.find(b"\r\n\r\n", start)
    if pos >= 0:
        text = _decode(data[start:pos])
        lines = text.split("\r\n")
        n = len(lines) - 1
        if text.count("\n") == n and text.count("\r") == n:
            return text, lines, pos + 4
    # Bare LF somewhere (accepted, as many parsers do; RFC 3261 7 asks for CRLF).
    head_end, body_start = _find_head_end(data, start)
    if head_end < 0:
        # Choice: a datagram whose head runs to its end (the final empty line missing) is accepted
        # with an empty body, as lenient stacks do.
        head_end = body_start = len(data)
        if data.endswith(b"\n"):
            head_end -= 2 if data.endswith(b"\r\n") else 1
    text = _decode(data[start:head_end])
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            raise ParseError("Bad line end")  # a CR that ends no line
    return text, text.split("\n"), body_start


def _unfold(lines: list[str]) -> list[str]:
    """Join LWS continuation lines (RFC 3261 7.3.1: a line starting with SP or HTAB continues the
    header above) to their header line with one SP."""
    out = [lines[0]]
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if len(out) == 1:
                raise ParseError("Bad header folding")
            stripped = line.strip()
            if stripped:
                out[-1] = out[-1].rstrip(" \t") + " " + stripped
            continue
        out.append(line)
    return out


class SIPMessage:
    """A parsed (or built) SIP request or response. Not thread-safe; owned by one handler at a time.

    `headers` is the list of header lines as written, in order. Do not mutate it directly: use
    add_header / remove_header / set_header / set_body, which keep the lookup index, the cached
    parsed values and the serialised bytes right.
    """

    __slots__ = ("_body", "_cache", "_headers", "_index", "_raw", "_typed", "version")

    # (name, value) pairs; plain tuples straight from the parser, turned into Header on the first
    # access to `.headers` (a Header is a tuple, so internal code reads both alike).
    _headers: list[tuple[str, str]]
    _typed: bool
    version: str
    _body: bytes
    _index: dict[str, list[int]]
    _raw: bytes | None
    _cache: dict[str, Any]

    is_request: bool = False

    def _init(self, headers: list[Header], body: bytes, version: str) -> None:
        for name, value in headers:
            self._check_header(name, value)
        self._headers = headers  # type: ignore[assignment]
        self._typed = True
        self.version = version
        self._body = body
        self._raw = None
        self._cache = {}
        self._reindex()

    def _reindex(self) -> None:
        index: dict[str, list[int]] = {}
        key_of = _KEY_CACHE.get
        for i, h in enumerate(self._headers):
            key = key_of(h[0]) or header_key(h[0]) or h[0].lower()
            if key in index:
                index[key].append(i)
            else:
                index[key] = [i]
        self._index = index

    def _changed(self, key: str | None = None) -> None:
        """The head changed: drop the serialised bytes and the parsed values - only those of header
        `key` when only its lines changed (the others stay valid, and re-parsing costs)."""
        self._raw = None
        if key is None:
            self._cache.clear()
            return
        cache = self._cache
        for cache_key in _CACHE_KEYS.get(key, (key,)):
            cache.pop(cache_key, None)

    # --- raw access -------------------------------------------------------------------------------------

    @property
    def headers(self) -> list[Header]:
        """The header lines as written, in order (read-only: edit through the methods below)."""
        if not self._typed:
            self._headers = [Header(name, value) for name, value in self._headers]
            self._typed = True
        return self._headers  # type: ignore[return-value]

    @property
    def start_line(self) -> str:
        raise NotImplementedError

    @property
    def body(self) -> bytes:
        return self._body

    @body.setter
    def body(self, body: bytes) -> None:
        self.set_body(body)

    def header(self, name: str) -> str | None:
        """Value of the first `name` header line (case-insensitive, compact forms resolved), or None."""
        idx = self._index.get(_KEY_CACHE.get(name) or header_key(name) or name.lower())
        if idx is None:
            return None
        return self._headers[idx[0]][1]

    def header_all(self, name: str) -> list[str]:
        """Value of every `name` header line, in order."""
        idx = self._index.get(_KEY_CACHE.get(name) or header_key(name) or name.lower())
        if idx is None:
            return []
        headers = self._headers
        return [headers[i][1] for i in idx]

    def header_values(self, name: str) -> list[str]:
        """Every value of `name`: all its lines, each comma list split (outside quotes and <>).

        Only meaningful for headers whose grammar is a comma list (Via, Contact, Route, Allow-Events,
        Supported...); a Date or WWW-Authenticate value would be cut at its commas.
        """
        idx = self._index.get(_KEY_CACHE.get(name) or header_key(name) or name.lower())
        if idx is None:
            return []
        headers = self._headers
        if len(idx) == 1:
            return split_values(headers[idx[0]][1])
        out: list[str] = []
        for i in idx:
            out.extend(split_values(headers[i][1]))
        return out

    def has_header(self, name: str) -> bool:
        return (header_key(name) or name.lower()) in self._index

    # --- editing ----------------------------------------------------------------------------------------

    @staticmethod
    def _check_header(name: str, value: str) -> None:
        # Our own code or a script passes these: a bad one is a bug (ValueError), not a peer's fault.
        if header_key(name) is None:
            raise ValueError(f"not a header name: {name!r}")
        if "\r" in value or "\n" in value:
            raise ValueError(f"header value holds a line break: {value!r}")

    def add_header(self, name: str, value: str, *, first: bool = False) -> None:
        """Add a header line. At the end of the head, or with `first=True` before the first line of
        the same header (at the top when there is none) - how a proxy pushes a Via or Record-Route."""
        value = str(value)
        self._check_header(name, value)
        header = Header(name, value)
        key = header_key(name) or ""
        if first:
            idx = self._index.get(key)
            self.headers.insert(idx[0] if idx else 0, header)
            self._reindex()
        else:
            headers = self.headers
            headers.append(header)
            self._index.setdefault(key, []).append(len(headers) - 1)  # nothing else moved
        self._changed(key)

    def remove_header(self, name: str) -> int:
        """Remove every `name` header line; returns how many were removed."""
        key = header_key(name) or name.lower()
        idx = self._index.get(key)
        if not idx:
            return 0
        drop = set(idx)
        self._headers = [h for i, h in enumerate(self.headers) if i not in drop]
        self._reindex()
        self._changed(key)
        return len(drop)

    def set_header(self, name: str, value: str) -> None:
        """Replace every `name` line by one line with `value`, where the first one was (appended when
        there was none)."""
        value = str(value)
        self._check_header(name, value)
        key = header_key(name) or ""
        idx = self._index.get(key)
        if idx is not None and len(idx) == 1:
            # The usual edit (Max-Forwards, Content-Length): one line replaced where it is; the
            # line indices do not move, so the index stays as it is.
            i = idx[0]
            line_name = self._headers[i][0]
            self._headers[i] = Header(line_name, value) if self._typed else (line_name, value)
            self._changed(key)
            return
        if not idx:
            self.headers.append(Header(name, value))
        else:
            headers = self.headers
            headers[idx[0]] = Header(headers[idx[0]].name, value)
            drop = set(idx[1:])
            self._headers = [h for i, h in enumerate(headers) if i not in drop]
        self._reindex()
        self._changed(key)

    def set_top_via(self, via: Via | str) -> None:
        """Replace the topmost Via value (the first element of the first Via line, which may hold a
        comma list) - for the transport adding received/rport (RFC 3261 18.2.1, RFC 3581)."""
        value = str(via)
        self._check_header("Via", value)
        idx = self._index.get("via")
        if not idx:
            raise ValueError("message has no Via header")
        i = idx[0]
        line_name, line_value = self._headers[i]
        if "," in line_value:
            value = ", ".join([value, *split_values(line_value)[1:]])
        self._headers[i] = Header(line_name, value) if self._typed else (line_name, value)
        self._changed("via")
        if isinstance(via, Via):
            self._cache["via"] = via  # what `.via` would parse back from the new line

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        """Replace the body; Content-Length is set to its length. `content_type` (when given) sets the
        Content-Type header; an empty string removes it."""
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError("body must be bytes")
        self._body = bytes(body)
        self.set_header("Content-Length", str(len(self._body)))
        if content_type is not None:
            if content_type:
                self.set_header("Content-Type", content_type)
            else:
                self.remove_header("Content-Type")

    # --- serialising ------------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The message on the wire: byte for byte what was parsed while unmodified (leading CRLFs and
        bytes past Content-Length in a datagram excepted); rebuilt with CRLF line ends otherwise."""
        raw = self._raw
        if raw is None:
            parts = [self.start_line]
            parts.extend([f"{name}: {value}" for name, value in self._headers])
            parts.append("")
            parts.append("")
            raw = "\r\n".join(parts).encode("utf-8") + self._body
            self._raw = raw
        return raw

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    # --- typed, lazily parsed header values -------------------------------------------------------------

    def _required(self, key: str, name: str) -> str:
        value = self.header(key)
        if value is None:
            raise ParseError(f"Missing {name} header")
        return value

    @property
    def vias(self) -> list[Via]:
        """Every Via value, topmost first."""
        vias = self._cache.get("vias")
        if vias is None:
            vias = [parse_via(v) for v in self.header_values("via")]
            self._cache["vias"] = vias
        return list(vias)

    @property
    def via(self) -> Via:
        """The topmost Via."""
        via = self._cache.get("via")
        if via is None:
            values = self.header_values("via")
            if not values:
                raise ParseError("Missing Via header")
            via = parse_via(values[0])
            self._cache["via"] = via
        return via

    @property
    def from_(self) -> NameAddr:
        value = self._cache.get("from")
        if value is None:
            value = parse_name_addr(self._required("from", "From"), "From")
            self._cache["from"] = value
        return value

    @property
    def to(self) -> NameAddr:
        value = self._cache.get("to")
        if value is None:
            value = parse_name_addr(self._required("to", "To"), "To")
            self._cache["to"] = value
        return value

    @property
    def call_id(self) -> str:
        return self._required("call-id", "Call-ID")

    @property
    def cseq(self) -> CSeq:
        value = self._cache.get("cseq")
        if value is None:
            value = parse_cseq(self._required("cseq", "CSeq"))
            self._cache["cseq"] = value
        return value

    def _cached(self, key: str, make: Any) -> Any:
        cache = self._cache
        if key in cache:
            return cache[key]
        value = make()
        cache[key] = value
        return value

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards  =  "Max-Forwards" HCOLON 1*DIGIT   (RFC 3261 20.22); None when absent."""
        def make() -> int | None:
            value = self.header("max-forwards")
            if value is None:
                return None
            value = value.strip()
            if not _is_digits(value) or len(value) > 10:
                raise ParseError("Bad Max-Forwards header")
            return int(value)
        result: int | None = self._cached("max-forwards", make)
        return result

    @property
    def expires(self) -> int | None:
        """Expires  =  "Expires" HCOLON delta-seconds   (RFC 3261 20.19); None when absent."""
        def make() -> int | None:
            value = self.header("expires")
            return None if value is None else parse_delta_seconds(value, "Expires header")
        result: int | None = self._cached("expires", make)
        return result

    @property
    def event(self) -> Event | None:
        """The Event header (RFC 6665), None when absent."""
        def make() -> Event | None:
            value = self.header("event")
            return None if value is None else parse_event(value)
        result: Event | None = self._cached("event", make)
        return result

    @property
    def contacts(self) -> list[Contact]:
        """Every Contact value; `Contact: *` is Contact(star=True)."""
        result: list[Contact] = self._cached(
            "contacts", lambda: [parse_contact(v) for v in self.header_values("contact")]
        )
        return list(result)

    @property
    def content_type(self) -> ContentType | None:
        def make() -> ContentType | None:
            value = self.header("content-type")
            return None if value is None else parse_content_type(value)
        result: ContentType | None = self._cached("content-type", make)
        return result

    @property
    def content_length(self) -> int | None:
        """The Content-Length header's value (checked when parsed); None when absent."""
        value = self.header("content-length")
        if value is None:
            return None
        value = value.strip()
        if not _is_digits(value) or len(value) > 10:
            raise ParseError("Bad Content-Length header")
        return int(value)

    @property
    def routes(self) -> list[NameAddr]:
        """The Route set, in order (RFC 3261 20.34)."""
        result: list[NameAddr] = self._cached(
            "route", lambda: [parse_name_addr(v, "Route") for v in self.header_values("route")]
        )
        return list(result)

    @property
    def record_routes(self) -> list[NameAddr]:
        """The Record-Route set, in order (RFC 3261 20.30)."""
        result: list[NameAddr] = self._cached(
            "record-route",
            lambda: [parse_name_addr(v, "Record-Route") for v in self.header_values("record-route")],
        )
        return list(result)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.start_line!r}>"


class SIPRequest(SIPMessage):
    """A request: `method`, `ruri` (the Request-URI text, writable), `uri` (it parsed), `version`."""

    __slots__ = ("_ruri", "method")

    is_request = True

    def __init__(self, method: str, ruri: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                 version: str = _SIP_VERSION) -> None:
        if not _abnf.TOKEN.fullmatch(method):
            raise ValueError(f"not a method: {method!r}")
        self.method = method
        self._ruri = ""
        self.ruri = ruri
        self._init([Header(n, str(v)) for n, v in headers], bytes(body), version)

    @property
    def start_line(self) -> str:
        return f"{self.method} {self._ruri} {self.version}"

    @property
    def ruri(self) -> str:
        return self._ruri

    @ruri.setter
    def ruri(self, value: str) -> None:
        value = str(value)
        if not value or any(c in value for c in " \t\r\n"):
            raise ValueError(f"not a Request-URI: {value!r}")
        self._ruri = value
        if hasattr(self, "_cache"):
            self._changed()

    @property
    def uri(self) -> SipURI:
        """The Request-URI parsed (ParseError 416 for a scheme other than sip/sips/tel)."""
        uri = self._cache.get("uri")
        if uri is None:
            try:
                uri = parse_uri(self._ruri)
            except ParseError as err:
                if err.status != 400:
                    raise
                raise ParseError("Bad Request-URI") from None
            self._cache["uri"] = uri
        return uri


class SIPResponse(SIPMessage):
    """A response: `status` (int), `reason` (the reason phrase), `version`."""

    __slots__ = ("reason", "status")

    def __init__(self, status: int, reason: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                 version: str = _SIP_VERSION) -> None:
        if not 100 <= int(status) <= 699:
            raise ValueError(f"not a status code: {status!r}")
        if "\r" in reason or "\n" in reason:
            raise ValueError(f"reason phrase holds a line break: {reason!r}")
        self.status = int(status)
        self.reason = reason
        self._init([Header(n, str(v)) for n, v in headers], bytes(body), version)

    @property
    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"


# --- parsing ------------------------------------------------------------------------------------------------


def parse_message(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE) -> SIPRequest | SIPResponse:
    """Parse one SIP message (a datagram, or a frame cut by `frame_length`).

    Raises ParseError (and nothing else) for any input this layer rejects; `.reason` is a reason
    phrase for the 400 (or 513/505) reply. A datagram without Content-Length takes the rest as body
    (RFC 3261 18.3); bytes past Content-Length are dropped.
    """
    if not isinstance(data, bytes):
        if not isinstance(data, (bytearray, memoryview)):
            raise TypeError("parse_message takes bytes")
        data = bytes(data)
    size = len(data)
    if size > max_size:
        raise ParseError("Message Too Large", 513)
    start = _skip_leading_crlf(data)
    text, lines, body_start = _head_lines(data, start)
    if len(lines) > MAX_HEADERS + 1:
        raise ParseError("Too many headers")
    if len(text) > MAX_LINE_LENGTH and any(len(line) > MAX_LINE_LENGTH for line in lines):
        raise ParseError("Header line too long")

    # The one loop every message pays for: (name, value) pairs and name -> line indices.
    headers: list[tuple[str, str]] = []
    index: dict[str, list[int]] = {}
    key_of = _KEY_CACHE.get
    if "\n " in text or "\n\t" in text:
        lines = _unfold(lines)
    lines_iter = iter(lines)
    first = next(lines_iter)  # the start line
    for n, line in enumerate(lines_iter):
        name, colon, value = line.partition(":")
        key = key_of(name)
        if key is None:
            if not colon:
                raise ParseError("Bad header line" if line else "Empty header line")
            # header-name HCOLON, where HCOLON = *( SP / HTAB ) ":" SWS
            name = name.rstrip(" \t")
            key = header_key(name)
            if key is None:
                raise ParseError("Bad header name")
        elif not colon:
            raise ParseError("Bad header line")
        if key in index:
            index[key].append(n)
        else:
            index[key] = [n]
        headers.append((name, value.strip()))
    msg: SIPRequest | SIPResponse
    if first[:4].upper() == "SIP/":
        m = _abnf.STATUS_LINE.fullmatch(first)
        if m is None:
            raise ParseError("Bad Status Line")
        version, status, reason = m.groups()
        if version != _SIP_VERSION and version.upper() != _SIP_VERSION:
            raise ParseError("Version Not Supported", 505)
        msg = SIPResponse.__new__(SIPResponse)
        msg.status = int(status)
        msg.reason = reason or ""
        method = None
    else:
        m = _abnf.REQUEST_LINE.fullmatch(first)
        if m is None:
            raise ParseError("Bad Request Line" if first else "Empty message")
        method, ruri, version = m.groups()
        if version != _SIP_VERSION and version.upper() != _SIP_VERSION:
            raise ParseError("Version Not Supported", 505)
        msg = SIPRequest.__new__(SIPRequest)
        msg.method = method
        msg._ruri = ruri
    msg.version = version

    if not index.keys() >= _REQUIRED_KEYS:
        for key, name in _REQUIRED:
            if key not in index:
                raise ParseError(f"Missing {name} header")
    if len(index) != len(headers):  # some header is repeated
        for key in _SINGLE:
            idx = index.get(key)
            if idx is not None and len(idx) > 1:
                values = {headers[i][1] for i in idx}
                if len(values) > 1:
                    raise ParseError(f"Conflicting {canonical_name(key)} headers")
    call_id = headers[index["call-id"][0]][1]
    if not call_id or " " in call_id or "\t" in call_id:
        raise ParseError("Bad Call-ID header")
    cseq = parse_cseq(headers[index["cseq"][0]][1])
    if method is not None and cseq.method != method:
        raise ParseError("CSeq method does not match request method")

    end = size
    cl_idx = index.get("content-length")
    if cl_idx is not None:
        value = headers[cl_idx[0]][1]
        if not _is_digits(value) or len(value) > 10:
            raise ParseError("Bad Content-Length header")
        end = body_start + int(value)
        if end > size:
            raise ParseError("Message body shorter than Content-Length")
    elif body_start > size:
        body_start = size

    msg._headers = headers
    msg._typed = False
    msg._index = index
    msg._body = data[body_start:end]
    msg._raw = data if (start == 0 and end == size) else data[start:end]
    msg._cache = {"cseq": cseq}
    return msg


def frame_length(buffer: bytes, *, max_size: int = MAX_MESSAGE_SIZE) -> int | None:
    """How many bytes of a stream `buffer` the next complete message takes (RFC 3261 18.3: framed by
    Content-Length), leading CRLFs included (parse_message skips them); None when more bytes are needed.

    ParseError when the stream cannot be framed: no Content-Length (400), a bad one (400), or a message
    (or a head still without its end) over `max_size` (513). After a ParseError the stream is out of
    sync and the connection should be closed.
    """
    start = _skip_leading_crlf(buffer)
    head_end, body_start = _find_head_end(buffer, start)
    if head_end < 0:
        if len(buffer) - start > max_size:
            raise ParseError("Message Too Large", 513)
        return None
    length: int | None = None
    head = buffer[start:head_end].replace(b"\r\n", b"\n")
    if b"\n " in head or b"\n\t" in head:
        # undo LWS folding before reading the header lines
        head = head.replace(b"\n ", b" ").replace(b"\n\t", b" ")
    for line in head.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon or name.rstrip(b" \t").lower() not in (b"content-length", b"l"):
            continue
        value = value.strip(b" \t\r")
        if not value.isdigit() or len(value) > 10:
            raise ParseError("Bad Content-Length header")
        if length is not None and length != int(value):
            raise ParseError("Conflicting Content-Length headers")
        length = int(value)
    if length is None:
        raise ParseError("Missing Content-Length header")
    total = body_start + length
    if total - start > max_size:
        raise ParseError("Message Too Large", 513)
    return total if len(buffer) >= total else None
