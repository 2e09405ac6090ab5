"""Property tests: no input makes the SIP layer raise anything but ParseError (DESIGN.md: this layer is
fuzzed), unmodified messages round-trip byte for byte, and parsed values survive str() and back."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sip_samples import PUBLISH, SUBSCRIBE, capture_messages

from routescript.sip import (
    ParseError,
    SIPMessage,
    build_reply,
    frame_length,
    parse_contact,
    parse_content_type,
    parse_event,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    reply_to_malformed,
)

# derandomize: the same examples on every run, so CI is deterministic (explore more by hand with a
# different seed or more examples when changing a parser).
FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])

LAZY = ("vias", "via", "from_", "to", "call_id", "cseq", "max_forwards", "expires", "event", "contacts",
        "content_type", "content_length", "routes", "record_routes")


def _captured(*prefixes: bytes) -> list[bytes]:
    return [w for _, w in capture_messages() if w.startswith(prefixes)]


# Real SUBSCRIBE / PUBLISH / NOTIFY / 200 OK samples to mutate.
SEEDS = [SUBSCRIBE, PUBLISH] + _captured(b"SUBSCRIBE", b"PUBLISH", b"NOTIFY", b"SIP/2.0 200")[:24]

# Bytes that matter to the grammar, so mutations hit the interesting cases often.
SPECIAL = st.sampled_from(
    [b":", b";", b",", b"<", b">", b'"', b"\\", b"=", b"@", b"[", b"]", b"?", b"&", b"/", b".", b" ", b"\t",
     b"\r\n", b"\n", b"\r", b"\r\n ", b"\r\n\r\n", b"\x00", b"\xff", b"\xc3\xa9", b"\xd9\xa3", b"9" * 12,
     b"tag=", b"branch=", b"rport", b"sip:", b"tel:", b"*", b"SIP/2.0", b"Content-Length: 9\r\n",
     b"l: 0\r\n", b"Via: SIP/2.0/UDP x\r\n", b"Event: x.y;id=\"\r\n"]
)


def touch_everything(msg: SIPMessage) -> None:
    """Read every lazy property; each must either work or raise ParseError."""
    for name in LAZY:
        try:
            getattr(msg, name)
        except ParseError:
            pass
    if msg.is_request:
        try:
            msg.uri  # type: ignore[attr-defined]  # noqa: B018
        except ParseError:
            pass
        reply = build_reply(msg, 400)  # type: ignore[arg-type]
        assert parse_message(reply.to_bytes()).status == 400  # type: ignore[union-attr]
    for header in msg.headers:
        msg.header_values(header.name)
    str(msg.headers)


def check_bytes(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except ParseError as err:
        assert err.reason and "\r" not in err.reason and "\n" not in err.reason
        assert 400 <= err.status <= 599
        wire = reply_to_malformed(data, err.status, err.reason)
        assert wire is None or wire.startswith(f"SIP/2.0 {err.status} ".encode())
        return
    wire = msg.to_bytes()
    assert data.lstrip(b"\r\n").startswith(wire)
    assert parse_message(wire).to_bytes() == wire
    touch_everything(msg)


@FUZZ
@given(st.binary(max_size=600))
def test_any_bytes_parse_or_parse_error(data: bytes) -> None:
    check_bytes(data)


@FUZZ
@given(st.lists(st.one_of(SPECIAL, st.binary(max_size=8), st.sampled_from([
    b"INVITE sip:a@h SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n", b"Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n",
    b"From: <sip:a@h>;tag=1\r\n", b"To: b <sip:b@h>\r\n", b"Call-ID: x\r\n", b"CSeq: 1 INVITE\r\n",
    b"Contact: *\r\n", b"Content-Length: 3\r\n", b"\r\n"])), max_size=30))
def test_token_soup_parse_or_parse_error(parts: list[bytes]) -> None:
    check_bytes(b"".join(parts))


@st.composite
def mutated(draw: Any) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "special"]))
        if kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 12))]
        elif kind == "replace":
            data[pos:pos + 1] = bytes([draw(st.integers(0, 255))])
        else:
            data[pos:pos + draw(st.integers(0, 2))] = draw(SPECIAL)
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_real_messages_parse_or_parse_error(data: bytes) -> None:
    check_bytes(data)


@FEWER
@given(st.sampled_from(SEEDS), st.integers(0, 4000))
def test_truncated_real_messages(data: bytes, cut: int) -> None:
    check_bytes(data[:cut])


@FEWER
@given(st.binary(max_size=400))
def test_frame_length_any_bytes(data: bytes) -> None:
    try:
        n = frame_length(data)
    except ParseError as err:
        assert err.status in (400, 513)
        return
    assert n is None or 0 < n <= len(data)


@FEWER
@given(st.lists(st.sampled_from(SEEDS), min_size=1, max_size=4), st.integers(1, 97))
def test_frame_length_cuts_a_stream_in_any_chunks(messages: list[bytes], chunk: int) -> None:
    stream = b"".join(messages)
    buffer = b""
    out = []
    for i in range(0, len(stream), chunk):
        buffer += stream[i:i + chunk]
        while (n := frame_length(buffer)) is not None:
            out.append(buffer[:n])
            buffer = buffer[n:]
    assert out == messages and buffer == b""


# --- round trip of generated valid messages -----------------------------------------------------------------

token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
                min_size=1, max_size=10)
host = st.one_of(
    st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){0,2}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
user = st.from_regex(r"[a-zA-Z0-9+_.!~*'()-]{1,12}", fullmatch=True)
port = st.one_of(st.none(), st.integers(1, 65535))
paramchars = st.from_regex(r"[a-zA-Z0-9_.!~*'()\[\]/:&+$-]{1,10}", fullmatch=True)
uri_params = st.lists(st.tuples(st.sampled_from(["transport", "lr", "user", "maddr", "x-y"]),
                                st.one_of(st.none(), paramchars)), max_size=3)


@st.composite
def sip_uris(draw: Any) -> str:
    u = draw(st.one_of(st.none(), user))
    text = "sip:" + (f"{u}@" if u else "") + draw(host)
    p = draw(port)
    if p is not None:
        text += f":{p}"
    for name, value in draw(uri_params):
        text += f";{name}" if value is None else f";{name}={value}"
    return text


@st.composite
def messages(draw: Any) -> bytes:
    method = draw(st.sampled_from(["SUBSCRIBE", "PUBLISH", "NOTIFY", "OPTIONS", "MESSAGE"]))
    is_reply = draw(st.booleans())
    sep = draw(st.sampled_from(["\r\n", "\n"]))
    lines = [f"SIP/2.0 {draw(st.integers(100, 699))} {draw(token)}" if is_reply
             else f"{method} {draw(sip_uris())} SIP/2.0"]
    for _ in range(draw(st.integers(1, 3))):
        via = draw(st.sampled_from(["Via", "v", "VIA"]))
        lines.append(f"{via}: SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP']))} "
                     f"{draw(host)};branch=z9hG4bK{draw(token)}")
    display = draw(st.one_of(st.just(""), token.map(lambda t: f'"{t}" ')))
    lines.append(f"{draw(st.sampled_from(['From', 'f']))}: {display}<{draw(sip_uris())}>;tag={draw(token)}")
    lines.append(f"{draw(st.sampled_from(['To', 't']))}: <{draw(sip_uris())}>")
    call_id = draw(st.sampled_from(["Call-ID", "i", "call-id"]))
    lines.append(f"{call_id}:{draw(st.sampled_from(['', ' ', '  ']))}{draw(token)}@{draw(host)}")
    lines.append(f"CSeq: {draw(st.integers(0, 2**31 - 1))} {method}")
    extra = draw(st.lists(st.tuples(token, st.text(
        "abcdefghijklmnopqrstuvwxyz0123456789 ;=,<>:@\"/.", max_size=30).map(str.strip)), max_size=5))
    for name, value in extra:
        lines.append(f"X-{name}: {value}")
    body = draw(st.binary(max_size=50))
    if draw(st.booleans()):
        lines.append(f"Content-Length: {len(body)}")
    return (sep.join(lines) + sep + sep).encode() + body


@FUZZ
@given(messages())
def test_generated_messages_round_trip(data: bytes) -> None:
    msg = parse_message(data)
    assert msg.to_bytes() == data
    assert msg.from_.tag
    assert msg.to.tag is None
    assert msg.via.branch is not None and msg.via.branch.startswith("z9hG4bK")
    assert msg.cseq.number >= 0
    if msg.is_request:
        assert msg.uri.scheme == "sip"  # type: ignore[attr-defined]
        reply = build_reply(msg, 200)  # type: ignore[arg-type]
        again = parse_message(reply.to_bytes())
        assert again.call_id == msg.call_id and again.header_all("Via") == msg.header_all("Via")
        assert again.to.tag is not None
    # editing then serialising keeps every header we did not touch
    msg.add_header("X-Added", "1")
    again = parse_message(msg.to_bytes())
    assert again.header_all("Via") == msg.header_all("Via")
    assert again.body == msg.body
    assert again.header("X-Added") == "1"


@FUZZ
@given(sip_uris())
def test_generated_uris_round_trip(text: str) -> None:
    uri = parse_uri(text)
    assert str(uri) == text
    assert parse_uri(str(uri)) == uri


@pytest.mark.parametrize("spaces", [1000, 8000])
def test_no_regex_blowup_on_long_whitespace(spaces: int) -> None:
    # long runs of blanks inside parameters must not make the parsers backtrack quadratically
    pad = " " * spaces
    for text in (f"<sip:a@h>;tag=1{pad};x{pad}y", f"SIP/2.0/UDP h;branch=1{pad};rport{pad}!",
                 f"presence;id=1{pad};{pad}", f"sip:{'a;' * spaces}b"):
        for parse in (parse_via, parse_event, lambda t: parse_name_addr(t, "To"), parse_uri):
            try:
                parse(text)
            except ParseError:
                pass


SIPISH = st.lists(st.sampled_from(list("sip:tel@ab1.;=,<>\"\\ /?&*[]-_+%!~'()`\u00e9\t") + ["SIP/2.0/UDP "]),
                  max_size=40).map("".join)


@st.composite
def near_valid_values(draw: Any) -> str:
    """A valid URI / name-addr / Via / Event value with a few characters inserted, deleted or replaced."""
    text = draw(st.one_of(
        sip_uris(),
        sip_uris().map(lambda u: f"<{u}>;tag=1;x"),
        sip_uris().map(lambda u: f'"Bob \\"B\\"" <{u}>;expires=5'),
        host.map(lambda h: f"SIP/2.0/TCP {h}:5060;branch=z9hG4bK1;rport;received=1.2.3.4"),
        st.sampled_from(["presence.winfo;id=1", "dialog;sla", "application/pidf+xml;charset=utf-8", "*"]),
    ))
    chars = list(text)
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(chars)))
        new = draw(st.sampled_from(list(";:,<>\"\\ =@[]?&*.") + [""]))
        if draw(st.booleans()):
            chars[pos:pos + 1] = [new]
        else:
            chars.insert(pos, new)
    return "".join(chars)


@FUZZ
@given(st.one_of(st.text(max_size=80), SIPISH, near_valid_values()))
def test_value_parsers_on_any_text(text: str) -> None:
    for parse in (parse_uri, parse_via, parse_event, parse_contact, parse_content_type,
                  lambda t: parse_name_addr(t, "From")):
        try:
            value = parse(text)
        except ParseError:
            continue
        # whatever parsed prints back to something that parses to the same value
        assert parse(str(value)) == value


def _both_splits_agree(data: bytes) -> None:
    """parse_message's C-level split of the head (_split_head) gives what the line-by-line one gives;
    where it declines (None), the line-by-line one decides (and raises the reasons)."""
    from routescript.sip.parse import _head_lines, _split_head, _split_lines

    try:
        text, lines, _ = _head_lines(data, 0)
    except ParseError:
        return
    if "\n " in text or "\n\t" in text:
        return   # folded heads never take the fast split
    try:
        slow = _split_lines(lines)   # first: it teaches header_key's cache the spellings it validates
    except ParseError:
        assert _split_head(lines) is None
        return
    fast = _split_head(lines)
    if fast is not None:
        assert fast == slow


@FUZZ
@given(mutated())
def test_fast_head_split_agrees_on_mutated_messages(data: bytes) -> None:
    _both_splits_agree(data)


@FUZZ
@given(st.lists(st.one_of(SPECIAL, st.binary(max_size=8), st.sampled_from([
    b"SIP/2.0 200 OK\r\n", b"Via: a\r\n", b"v: b\r\n", b"VIA:c\r\n", b"Via :d\r\n", b"X-New: e\r\n",
    b"Call-ID: x\r\n", b": v\r\n", b"noColon\r\n", b"To:\r\n", b"To:  \t q \t\r\n"])), max_size=30))
def test_fast_head_split_agrees_on_token_soup(parts: list[bytes]) -> None:
    _both_splits_agree(b"".join(parts))


def test_fast_head_split_takes_the_usual_message() -> None:
    from routescript.sip.parse import _head_lines, _split_head

    for data in (SUBSCRIBE, PUBLISH, PUBLISH.replace(b"Via:", b"v:")):
        parse_message(data)   # the spellings validated once
        _, lines, _ = _head_lines(data, 0)
        split = _split_head(lines)
        assert split is not None
        headers, index = split
        assert headers == [tuple(h) for h in parse_message(data).headers]
        vias = [n for n, (name, _) in enumerate(headers) if name in ("Via", "v")]
        assert index["via"] == vias and len(vias) == (2 if data is not SUBSCRIBE else 1)
        assert index["call-id"] == [next(n for n, (name, _) in enumerate(headers) if name == "Call-ID")]


@FUZZ
@given(st.text(alphabet=' \t,;"<>\\=abSIP/2.0UDP', max_size=40))
def test_the_values_after_the_first_are_those_split_values_gives(value: str) -> None:
    """remove_top_via's cut at the first comma (a folded Via line) keeps exactly what splitting the
    whole line keeps, whatever quotes, angle brackets, empty values or blanks the line holds."""
    from routescript.sip.headers import split_values
    from routescript.sip.message import _after_first_value

    assert _after_first_value(value) == split_values(value)[1:]
