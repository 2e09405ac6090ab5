"""SIP message classes: SIPMessage, SIPRequest and SIPResponse - raw header access, the typed header
values parsed on first access and cached, editing, and serialising.

This module owns the message's storage. Everything else makes a message through a public constructor
(which checks its arguments) or, for parts already checked, through the private constructor
`SIPRequest._from_parts` / `SIPResponse._from_parts` (the parser, build_reply, assemble_request).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

from . import _abnf
from .errors import ParseError
from .headers import _KEY_CACHE, Header, check_header, header_key, split_values
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

_SIP_VERSION = "SIP/2.0"

# Parsed values cached under another name than their header's key (see the typed properties).
_CACHE_KEYS = {"via": ("via", "vias"), "contact": ("contacts",)}

# The head of a message as stored: the header lines as (name, value) pairs in order, the index from
# lower-case long name to their positions, and the typed values parsed so far (by cache key).
Lines = list[tuple[str, str]]
Index = dict[str, list[int]]
Head = tuple[Lines, Index, dict[str, Any]]


def _is_digits(text: str) -> bool:
    # str.isdigit() alone is True for "²" and "٣", which int() refuses or reads differently.
    return text.isascii() and text.isdigit()


def _key(name: str) -> str:
    """The index key of a header name as a caller spells it: header_key's, or the name lower-cased
    when it is no token (it then matches no line: the parser and check_header refuse such names)."""
    return header_key(name) or name.lower()


def _index_of(lines: Lines) -> Index:
    # `in` and `[]` on header_key's cache: no call per line for a known spelling (a proxy re-indexes
    # after each Via, Record-Route or Route edit; only a repeated header pays its append).
    index: Index = {}
    cache = _KEY_CACHE
    for i, (name, _) in enumerate(lines):
        key = cache[name] if name in cache else _key(name)
        if key in index:
            index[key].append(i)
        else:
            index[key] = [i]
    return index


def _after_first_value(value: str) -> list[str]:
    """split_values(value)[1:]: the values of a header line after its first. When no quote or "<" comes
    before the first comma, that comma ends the first value (split_values would scan the value
    character by character only to find it there): only the rest is split - a proxy's own Via taken
    off a folded Via line, as SIPp writes its responses, costs no scan of it."""
    comma = value.find(",")
    first = value[:comma]
    if comma < 0 or '"' in first or "<" in first or not first.strip():
        return split_values(value)[1:]   # an empty first value is dropped by the split: its rules
    return split_values(value[comma + 1:])


class SIPMessage:
    """A parsed (or built) SIP request or response. Not thread-safe; owned by one handler at a time.

    `headers` is the list of header lines as written, in order, a copy: edit them through add_header /
    insert_header / remove_header / set_header / set_body, which keep the lookup index, the cached parsed
    values and the serialised bytes right.
    """

    __slots__ = ("_body", "_cache", "_headers", "_index", "_raw", "_shared", "version")

    # One form: plain (name, value) tuples, as the parser splits them (a tuple display costs no call;
    # `.headers` hands out Header, which is a tuple too and compares equal to the pair).
    _headers: Lines
    version: str
    _body: bytes
    _index: Index
    _raw: bytes | None
    _cache: dict[str, Any]
    # True while `_headers` and `_index` are shared with a copy (copy() shares them instead of copying):
    # the first edit of either message makes its own (_own) - most copies a proxy makes are never edited.
    _shared: bool

    is_request: bool = False

    def _init(self, headers: Lines, body: bytes, version: str) -> None:
        """The public constructors' part: every line checked, then indexed."""
        for name, value in headers:
            check_header(name, value)
        self._headers = headers
        self._index = _index_of(headers)
        self._cache = {}
        self._shared = False
        self.version = version
        self._body = body
        self._raw = None

    def _take_head(self, other: SIPMessage) -> None:
        """Adopt the head of `other`, these same bytes parsed (AssembledRequest reading itself back)."""
        self._headers = other._headers
        self._index = other._index
        self._cache = other._cache
        self._shared = False   # `other` is a parse of our own bytes that nobody else holds

    def _reindex(self) -> None:
        self._index = _index_of(self._headers)

    def _own(self) -> None:
        """Before an edit in place: this message's own header lines and index, when a copy shares them."""
        if self._shared:
            self._headers = list(self._headers)
            self._index = {key: list(lines) for key, lines in self._index.items()}
            self._shared = False

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
        """The header lines as written, in order: a copy (edit through the methods below)."""
        return [Header(name, value) for name, value in self._headers]

    @property
    def start_line(self) -> str:
        raise NotImplementedError

    @property
    def body(self) -> bytes:
        return self._body

    @body.setter
    def body(self, body: bytes) -> None:
        self.set_body(body)

    # The lookups below resolve a spelling seen before with `in` and `[]` on header_key's cache (no
    # method call: they run several times per request); _key() for a new one.

    def header(self, name: str) -> str | None:
        """Value of the first `name` header line (case-insensitive, compact forms resolved), or None."""
        key = _KEY_CACHE[name] if name in _KEY_CACHE else _key(name)
        index = self._index
        return self._headers[index[key][0]][1] if key in index else None

    def header_all(self, name: str) -> list[str]:
        """Value of every `name` header line, in order."""
        key = _KEY_CACHE[name] if name in _KEY_CACHE else _key(name)
        index = self._index
        if key not in index:
            return []
        headers = self._headers
        return [headers[i][1] for i in index[key]]

    def header_values(self, name: str) -> list[str]:
        """Every value of `name`: all its lines, each comma list split (outside quotes and <>).

        Only meaningful for headers whose grammar is a comma list (Via, Contact, Route, Allow-Events,
        Supported...); a Date or WWW-Authenticate value would be cut at its commas.
        """
        key = _KEY_CACHE[name] if name in _KEY_CACHE else _key(name)
        index = self._index
        if key not in index:
            return []
        idx = index[key]
        headers = self._headers
        if len(idx) == 1:
            return split_values(headers[idx[0]][1])
        out: list[str] = []
        for i in idx:
            out.extend(split_values(headers[i][1]))
        return out

    def has_header(self, name: str) -> bool:
        return (_KEY_CACHE[name] if name in _KEY_CACHE else _key(name)) in self._index

    # --- editing ----------------------------------------------------------------------------------------

    def add_header(self, name: str, value: str, *, first: bool = False) -> None:
        """Add a header line. At the end of the head, or with `first=True` before the first line of
        the same header (at the top when there is none) - how a proxy pushes a Via or Record-Route."""
        value = str(value)
        key = check_header(name, value)
        self._own()
        if first:
            idx = self._index.get(key)
            self._headers.insert(idx[0] if idx else 0, (name, value))
            self._reindex()
        else:
            headers = self._headers
            headers.append((name, value))
            self._index.setdefault(key, []).append(len(headers) - 1)  # nothing else moved
        self._changed(key)

    def insert_header(self, position: int, name: str, value: str) -> None:
        """Insert a header line at `position` of the head (0: the first line; list.insert's rules) -
        for a script that anchors a line to another header (textops' insert_hf / append_hf)."""
        value = str(value)
        key = check_header(name, value)
        self._own()
        self._headers.insert(position, (name, value))
        self._reindex()
        self._changed(key)

    def remove_header(self, name: str) -> int:
        """Remove every `name` header line; returns how many were removed."""
        key = header_key(name) or name.lower()
        idx = self._index.get(key)
        if not idx:
            return 0
        drop = set(idx)
        self._headers = [h for i, h in enumerate(self._headers) if i not in drop]
        self._reindex()
        self._changed(key)
        return len(drop)

    def set_header(self, name: str, value: str) -> None:
        """Replace every `name` line by one line with `value`, where the first one was (appended when
        there was none)."""
        value = str(value)
        key = check_header(name, value)
        self._own()
        idx = self._index.get(key)
        if idx is not None and len(idx) == 1:
            # The usual edit (Max-Forwards, Content-Length): one line replaced where it is; the
            # line indices do not move, so the index stays as it is.
            i = idx[0]
            self._headers[i] = (self._headers[i][0], value)
            self._changed(key)
            return
        headers = self._headers
        if not idx:
            headers.append((name, value))
        else:
            headers[idx[0]] = (headers[idx[0]][0], value)
            drop = set(idx[1:])
            self._headers = [h for i, h in enumerate(headers) if i not in drop]
        self._reindex()
        self._changed(key)

    def replace_header(self, name: str, values: list[str]) -> None:
        """Replace every `name` line by one line per value, in order, where the first one was (at the
        end of the head when there was none); no values removes them - how loose_route rewrites the
        Route set in one edit."""
        values = [str(v) for v in values]
        key = _key(name)
        for value in values:
            check_header(name, value)
        self._own()
        headers = self._headers
        idx = self._index.get(key)
        if idx:
            drop = set(idx)
            position = idx[0]
            kept = [h for i, h in enumerate(headers) if i not in drop]
        else:
            kept = headers
            position = len(headers)
        kept[position:position] = [(name, value) for value in values]
        self._headers = kept
        self._reindex()
        self._changed(key)

    def set_top_via(self, via: Via | str) -> None:
        """Replace the topmost Via value (the first element of the first Via line, which may hold a
        comma list) - for the transport adding received/rport (RFC 3261 18.2.1, RFC 3581)."""
        value = str(via)
        check_header("Via", value)
        idx = self._index.get("via")
        if not idx:
            raise ValueError("message has no Via header")
        self._own()
        i = idx[0]
        line_name, line_value = self._headers[i]
        if "," in line_value:
            value = ", ".join([value, *split_values(line_value)[1:]])
        self._headers[i] = (line_name, value)
        self._changed("via")
        if isinstance(via, Via):
            self._cache["via"] = via  # what `.via` would parse back from the new line

    def remove_top_via(self) -> None:
        """Remove the topmost Via value (a proxy taking its own Via off a response, RFC 3261 16.7
        step 3): the first element of the first Via line, or that whole line when it holds one."""
        idx = self._index.get("via")
        if not idx:
            raise ValueError("message has no Via header")
        self._own()
        i = idx[0]
        name, value = self._headers[i]
        rest = _after_first_value(value) if "," in value else []
        if rest:
            self._headers[i] = (name, ", ".join(rest))
        else:
            del self._headers[i]
            self._reindex()
        self._changed("via")

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
            # one list display (no extend/append calls): every reply we send is written here
            lines = [self.start_line, *[f"{name}: {value}" for name, value in self._headers], "", ""]
            raw = "\r\n".join(lines).encode("utf-8") + self._body
            self._raw = raw
        return raw

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    # --- typed, lazily parsed header values -------------------------------------------------------------

    # Each typed value is parsed on its first read and kept in `_cache` under its header's key (the
    # parser puts the CSeq and Call-ID there, having read them): a later read is the property and
    # two dict operations, no method call. An edit of the header drops it (_changed).

    def _first(self, key: str) -> str | None:
        """The first line of header `key` (a lower-case long name), None when absent."""
        index = self._index
        return self._headers[index[key][0]][1] if key in index else None

    def _required(self, key: str, name: str) -> str:
        value = self._first(key)
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
        cache = self._cache
        if "via" in cache:
            via: Via = cache["via"]
            return via
        line = self._first("via")
        if line and "," not in line:   # the usual line: one via-parm
            via = cache["via"] = parse_via(line)
            return via
        values = self.header_values("via")
        if not values:
            raise ParseError("Missing Via header")
        via = cache["via"] = parse_via(values[0])
        return via

    @property
    def from_(self) -> NameAddr:
        cache = self._cache
        if "from" in cache:
            value: NameAddr = cache["from"]
            return value
        value = cache["from"] = parse_name_addr(self._required("from", "From"), "From")
        return value

    @property
    def to(self) -> NameAddr:
        cache = self._cache
        if "to" in cache:
            value: NameAddr = cache["to"]
            return value
        value = cache["to"] = parse_name_addr(self._required("to", "To"), "To")
        return value

    @property
    def call_id(self) -> str:
        cache = self._cache
        if "call-id" in cache:
            value: str = cache["call-id"]
            return value
        value = cache["call-id"] = self._required("call-id", "Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        cache = self._cache
        if "cseq" in cache:
            value: CSeq = cache["cseq"]
            return value
        value = cache["cseq"] = parse_cseq(self._required("cseq", "CSeq"))
        return value

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards  =  "Max-Forwards" HCOLON 1*DIGIT   (RFC 3261 20.22); None when absent."""
        cache = self._cache
        if "max-forwards" in cache:
            result: int | None = cache["max-forwards"]
            return result
        value = self._first("max-forwards")
        if value is not None:
            value = value.strip()
            if not _is_digits(value) or len(value) > 10:
                raise ParseError("Bad Max-Forwards header")
        result = cache["max-forwards"] = None if value is None else int(value)
        return result

    @property
    def expires(self) -> int | None:
        """Expires  =  "Expires" HCOLON delta-seconds   (RFC 3261 20.19); None when absent."""
        cache = self._cache
        if "expires" in cache:
            result: int | None = cache["expires"]
            return result
        value = self._first("expires")
        result = cache["expires"] = None if value is None else parse_delta_seconds(value, "Expires header")
        return result

    @property
    def event(self) -> Event | None:
        """The Event header (RFC 6665), None when absent."""
        cache = self._cache
        if "event" in cache:
            result: Event | None = cache["event"]
            return result
        value = self._first("event")
        result = cache["event"] = None if value is None else parse_event(value)
        return result

    @property
    def contacts(self) -> list[Contact]:
        """Every Contact value; `Contact: *` is Contact(star=True)."""
        cache = self._cache
        if "contacts" in cache:
            result: list[Contact] = cache["contacts"]
        else:
            result = cache["contacts"] = [parse_contact(v) for v in self.header_values("contact")]
        return list(result)

    @property
    def content_type(self) -> ContentType | None:
        cache = self._cache
        if "content-type" in cache:
            result: ContentType | None = cache["content-type"]
            return result
        value = self._first("content-type")
        result = cache["content-type"] = None if value is None else parse_content_type(value)
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
        cache = self._cache
        if "route" in cache:
            result: list[NameAddr] = cache["route"]
        else:
            result = cache["route"] = [parse_name_addr(v, "Route") for v in self.header_values("route")]
        return list(result)

    @property
    def record_routes(self) -> list[NameAddr]:
        """The Record-Route set, in order (RFC 3261 20.30)."""
        cache = self._cache
        if "record-route" in cache:
            result: list[NameAddr] = cache["record-route"]
        else:
            result = cache["record-route"] = [
                parse_name_addr(v, "Record-Route") for v in self.header_values("record-route")
            ]
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
        self._init([(n, str(v)) for n, v in headers], bytes(body), version)

    @classmethod
    def _from_parts(cls, method: str, ruri: str, version: str, head: Head | None, body: bytes,
                    raw: bytes | None) -> Self:
        """The private constructor, for parts already checked (the parser's, a builder's): nothing
        is validated. `head` None leaves the head unset, for a subclass that reads it from `raw` on
        first use (AssembledRequest) and then calls _take_head."""
        request = object.__new__(cls)
        request.method = method
        request._ruri = ruri
        request.version = version
        request._shared = False
        if head is not None:
            request._headers, request._index, request._cache = head
        request._body = body
        request._raw = raw
        return request

    def copy(self) -> SIPRequest:
        """A copy to edit on its own (a proxy's branch of this request): the header lines, their index,
        the body and the bytes are shared until one of the two messages is edited (that one then makes
        its own), and the values parsed so far are kept (they are immutable)."""
        head = (self._headers, self._index, dict(self._cache))   # read first: AssembledRequest parses
        self._shared = True
        request = SIPRequest._from_parts(self.method, self._ruri, self.version, head, self._body, self._raw)
        request._shared = True
        return request

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
        self._init([(n, str(v)) for n, v in headers], bytes(body), version)

    @classmethod
    def _from_parts(cls, status: int, reason: str, version: str, head: Head | None, body: bytes,
                    raw: bytes | None) -> Self:
        """The private constructor, for parts already checked (the parser's, build_reply's). `head`
        None leaves the head unset, for a subclass that reads it from `raw` (AssembledResponse)."""
        response = object.__new__(cls)
        response.status = status
        response.reason = reason
        response.version = version
        if head is not None:
            response._headers, response._index, response._cache = head
        response._shared = False
        response._body = body
        response._raw = raw
        return response

    @property
    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"
