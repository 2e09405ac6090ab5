"""Parsing SIP messages: `parse_message` (bytes to a SIPRequest or SIPResponse) and `frame_length`
(where the next message ends in a stream), with the size bounds both enforce.

What `parse_message` does eagerly is kept minimal because every datagram pays for it (DESIGN.md,
the way OpenSIPS parses): find the end of the head, split it into lines once, build the list of
`(name, value)` pairs and a dict from lower-case long header name to the line indices, check the start
line, check that the headers every transaction needs are there (Via, From, To, Call-ID, CSeq - the
CSeq is parsed because its method must equal the request method), and cut the body by Content-Length.
Every other header value is parsed on first access through the typed properties of message.py and cached.
"""

from __future__ import annotations

from itertools import islice, repeat

from . import _abnf
from .errors import ParseError
from .headers import _KEY_CACHE, canonical_name, header_key
from .message import _SIP_VERSION, Index, Lines, SIPRequest, SIPResponse
from .values import parse_cseq

# Bounds (STYLE.md 7). Over MAX_MESSAGE_SIZE the answer is 513 Message Too Large (RFC 3261 21.5.11).
MAX_MESSAGE_SIZE = 65536
MAX_HEADERS = 256          # header lines (continuation lines included) per message
MAX_LINE_LENGTH = 8192     # one physical line of the head
# The largest SIP message one UDP datagram can carry: 65,535 (the IPv4 total length field) - 20 (IP
# header) - 8 (UDP header). RFC 3261 18.1.1: "For UDP, this size is 65,535 bytes, including IP and UDP
# headers". Anything larger cannot be sent over UDP at all (sendto fails with EMSGSIZE).
MAX_UDP_PAYLOAD = 65507

# The headers a transaction needs (RFC 3261 8.1.1: "the minimum required" set), checked eagerly.
_REQUIRED = (("via", "Via"), ("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq"))
# "SIP/" in every case (RFC 3261 7.1: SIP-Version is case-sensitive, but a status line is recognised
# whatever its case and then refused as 505 when it is not "SIP/2.0"), a set lookup instead of upper().
_SIP_SLASH = frozenset(s + i + p + "/" for s in "Ss" for i in "Ii" for p in "Pp")
# Headers that must appear once (RFC 3261 7.3.1 allows repetition only for comma-list headers).
# Choice: a repetition with the very same value is tolerated, a different one is rejected - two
# different Content-Lengths are how requests get smuggled.
_SINGLE = ("from", "to", "call-id", "cseq", "content-length")


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


_LINE_ENDS = (b"\r", b"\n")


def _skip_leading_crlf(data: bytes) -> int:
    # RFC 3261 7.5: "implementations processing SIP messages over stream-oriented transports MUST
    # ignore any CRLF appearing before the start-line". Harmless for datagrams too.
    if data[:1] not in _LINE_ENDS:
        return 0
    return len(data) - len(data.lstrip(b"\r\n"))


# _abnf.control_char as a bytes.translate table: every byte kept, each control byte made NUL, so one
# C call and an `in` find any of them (a regex search cost about five times the split of the head).
# Bytes suffice: in UTF-8 and Latin-1 alike a control character is the byte itself.
_CONTROL_TO_NUL = bytes(0 if _abnf.CONTROL_CHAR.fullmatch(chr(b)) else b for b in range(256))


def _decode(head: bytes) -> str:
    """The head as text; ParseError when it holds a control character (_abnf.control_char)."""
    if 0 in head.translate(_CONTROL_TO_NUL):
        text = head.decode("latin-1")
        raise ParseError(_control_char_reason(text.replace("\r\n", "\n").split("\n")))
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


def _split_head(lines: list[str]) -> tuple[Lines, Index] | None:
    """The (name, value) pairs and the index of the header lines (the start line excluded) by C-level
    passes (map and zip: no Python call per line, which the per-request call count charges to every
    message); None when some line is not the usual `known-name: value` (no colon, a name not validated
    yet or with white space before its colon): _split_lines then says what is wrong with it.

    In CPU time this is no faster than the loop of _split_lines (3.11 runs that loop well; ~1 us more
    for a dozen lines, measured): what it saves is the calls, and with them the profiler's view."""
    if len(lines) < 2:
        return None
    # message-header = header-name HCOLON header-value CRLF: the name is what precedes the first ":"
    names, colons, values = zip(*map(str.partition, islice(lines, 1, None), repeat(":")), strict=True)
    if "" in colons:
        return None
    try:
        keys = list(map(_KEY_CACHE.__getitem__, names))
    except KeyError:   # a spelling header_key has not validated yet
        return None
    headers = list(zip(names, map(str.strip, values), strict=True))
    index = {key: [n] for n, key in enumerate(keys)}
    if len(index) != len(keys):   # some header is repeated: every one of its lines, in order
        index = {}
        for n, key in enumerate(keys):
            if key in index:
                index[key].append(n)
            else:
                index[key] = [n]
    return headers, index


def _split_lines(lines: list[str]) -> tuple[Lines, Index]:
    """The (name, value) pairs and the index of the header lines (the start line excluded), line by
    line: for a head _split_head does not take, with the errors for a bad line or name."""
    headers: Lines = []
    index: Index = {}
    key_of = _KEY_CACHE.get
    for n, line in enumerate(lines[1:]):
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
    return headers, index


def _control_char_reason(lines: list[str]) -> str:
    """The reason phrase for a head holding a control character: which line holds it (the start line, or
    the header by its name), so the 400 tells the sender what to fix."""
    for n, line in enumerate(lines):
        if _abnf.CONTROL_CHAR.search(line) is None:
            continue
        if n == 0:
            return "Bad Status Line" if line[:4].upper() == "SIP/" else "Bad Request Line"
        name = line.partition(":")[0].rstrip(" \t")
        return f"Bad {canonical_name(name)} header" if header_key(name) is not None else "Bad header line"
    return "Bad header line"  # pragma: no cover - the caller found one in these lines


def parse_message(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE, max_headers: int = MAX_HEADERS,
                  max_line_length: int = MAX_LINE_LENGTH) -> SIPRequest | SIPResponse:
    """Parse one SIP message (a datagram, or a frame cut by `frame_length`).

    Raises ParseError (and nothing else) for any input this layer rejects; `.reason` is a reason
    phrase for the 400 (or 513/505) reply. A datagram without Content-Length takes the rest as body
    (RFC 3261 18.3); bytes past Content-Length are dropped. The bounds are for received messages;
    the bytes of a request we built ourselves are read back with bounds of their own length.
    """
    # The tests below avoid method calls where an operator does (`type() is`, `in`, slices): every
    # datagram pays for this function, and the per-request call count charges it to every message.
    if type(data) is not bytes and not isinstance(data, bytes):
        if not isinstance(data, (bytearray, memoryview)):
            raise TypeError("parse_message takes bytes")
        data = bytes(data)
    size = len(data)
    if size > max_size:
        raise ParseError("Message Too Large", 513)
    start = _skip_leading_crlf(data) if data[:1] in _LINE_ENDS else 0   # no call for the usual message
    text, lines, body_start = _head_lines(data, start)
    n_lines = len(lines)
    if n_lines > max_headers + 1:
        raise ParseError("Too many headers")
    # the head's byte count bounds its text's length: the lines are measured only when it is long
    if body_start - start > max_line_length and any(len(line) > max_line_length for line in lines):
        raise ParseError("Header line too long")

    # What every message pays for: (name, value) pairs and name -> line indices.
    first = lines[0]  # the start line
    split = None
    if "\n " in text or "\n\t" in text:
        lines = _unfold(lines)
        n_lines = len(lines)
    else:
        split = _split_head(lines)
    headers, index = split if split is not None else _split_lines(lines)
    if first[:4] in _SIP_SLASH:
        m = _abnf.STATUS_LINE.fullmatch(first)
        if m is None:
            raise ParseError("Bad Status Line")
        version, status, reason = m.groups()
        method = None
    else:
        m = _abnf.REQUEST_LINE.fullmatch(first)
        if m is None:
            raise ParseError("Bad Request Line" if first else "Empty message")
        method, ruri, version = m.groups()
    if version != _SIP_VERSION and version.upper() != _SIP_VERSION:
        raise ParseError("Version Not Supported", 505)

    if not ("via" in index and "from" in index and "to" in index and "call-id" in index and "cseq" in index):
        for key, name in _REQUIRED:
            if key not in index:
                raise ParseError(f"Missing {name} header")
    if len(index) != n_lines - 1:  # some header is repeated (one (name, value) pair per line after the first)
        for key in _SINGLE:
            idx = index.get(key)
            if idx is not None and len(idx) > 1:
                values = {headers[i][1] for i in idx}
                if len(values) > 1:
                    raise ParseError(f"Conflicting {canonical_name(key)} headers")
    # _abnf.callid (visible ASCII): no control character is left in the head, so what remains to refuse
    # is the empty value, white space and non-ASCII - without a regex call on every message.
    call_id = headers[index["call-id"][0]][1]
    if not call_id or " " in call_id or "\t" in call_id or not call_id.isascii():
        raise ParseError("Bad Call-ID header")
    cseq = parse_cseq(headers[index["cseq"][0]][1])
    if method is not None and cseq.method != method:
        raise ParseError("CSeq method does not match request method")

    end = size
    if "content-length" in index:
        value = headers[index["content-length"][0]][1]
        if not (value.isascii() and value.isdigit()) or len(value) > 10:   # _is_digits, inline
            raise ParseError("Bad Content-Length header")
        end = body_start + int(value)
        if end > size:
            raise ParseError("Message body shorter than Content-Length")
    elif body_start > size:
        body_start = size

    head = (headers, index, {"cseq": cseq, "call-id": call_id})
    body = data[body_start:end]
    raw = data if (start == 0 and end == size) else data[start:end]
    if method is None:
        return SIPResponse._from_parts(int(status), reason or "", version, head, body, raw)
    return SIPRequest._from_parts(method, ruri, version, head, body, raw)


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
