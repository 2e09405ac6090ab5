"""StreamFramer: Content-Length framing, keep-alives, bounds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routescript.transport import FramingError, Ping, StreamFramer


def msg(body: bytes = b"", *, cl: str | None = None, extra: str = "") -> bytes:
    length = str(len(body)) if cl is None else cl
    return (f"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
            f"To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n{extra}Content-Length: {length}\r\n\r\n"
            ).encode() + body


def test_two_messages_in_one_read():
    a, b = msg(b"hello"), msg(b"")
    assert StreamFramer().feed(a + b) == [a, b]


def test_message_split_byte_by_byte():
    data = msg(b"0123456789")
    framer = StreamFramer()
    out = []
    for i in range(len(data)):
        out += framer.feed(data[i:i + 1])
    assert out == [data]
    assert framer.buffered == 0


def test_body_split_across_reads_waits_for_content_length():
    data = msg(b"x" * 100)
    framer = StreamFramer()
    assert framer.feed(data[:-50]) == []
    assert framer.feed(data[-50:]) == [data]


def test_ping_answered_and_stray_crlf_ignored():
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [Ping()]
    assert framer.feed(b"\r\n") == []          # might become a ping
    assert framer.feed(b"\r\n") == [Ping()]
    data = msg()
    assert framer.feed(b"\r\n" + data) == [data]   # RFC 3261 7.5: CRLF before a start line


def test_compact_content_length():
    data = msg(b"abc").replace(b"Content-Length: 3", b"l: 3")
    assert StreamFramer().feed(data + b"NEXT") == [data]


def test_missing_content_length_is_a_framing_error():
    data = msg().replace(b"Content-Length: 0\r\n", b"")
    framer = StreamFramer()
    with pytest.raises(FramingError) as err:
        framer.feed(data)
    assert err.value.status == 400 and "Content-Length" in err.value.reason
    assert b"Call-ID: c" in err.value.head
    with pytest.raises(FramingError):          # out of sync for good
        framer.feed(msg())


def test_bad_content_length():
    with pytest.raises(FramingError) as err:
        StreamFramer().feed(msg(cl="12x"))
    assert err.value.status == 400


def test_content_length_over_the_bound_is_513():
    with pytest.raises(FramingError) as err:
        StreamFramer(1000).feed(msg(cl="5000"))
    assert err.value.status == 513


def test_head_without_end_over_the_bound_is_513():
    framer = StreamFramer(1000)
    assert framer.feed(b"GARBAGE" * 100) == []
    with pytest.raises(FramingError) as err:
        framer.feed(b"GARBAGE" * 100)
    assert err.value.status == 513
    assert framer.buffered <= 1000 + 700


# --- properties ---------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_any_bytes_give_messages_or_a_framing_error(chunks):
    framer = StreamFramer(2000)
    try:
        for chunk in chunks:
            for item in framer.feed(chunk):
                assert isinstance(item, (bytes, Ping))
    except FramingError as exc:
        assert exc.status in (400, 513)
    assert framer.buffered <= 2000 + 300


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=5), st.data())
def test_messages_split_anywhere_come_back_whole(bodies, data):
    messages = [msg(body) for body in bodies]
    stream = b"".join(messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    framer = StreamFramer()
    out = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out += framer.feed(stream[last:cut])
        last = cut
    assert out == messages
