"""frame_length: how a stream reader cuts the next message out of its buffer (RFC 3261 18.3)."""

from __future__ import annotations

import pytest
from sip_samples import PUBLISH, SUBSCRIBE

from routescript.sip import ParseError, frame_length, parse_message


def test_complete_message() -> None:
    assert frame_length(PUBLISH) == len(PUBLISH)
    assert frame_length(SUBSCRIBE) == len(SUBSCRIBE)


def test_two_messages_back_to_back() -> None:
    stream = PUBLISH + SUBSCRIBE
    n = frame_length(stream)
    assert n == len(PUBLISH)
    assert parse_message(stream[:n]).method == "PUBLISH"
    rest = stream[n:]
    m = frame_length(rest)
    assert m == len(SUBSCRIBE)
    assert parse_message(rest[:m]).method == "SUBSCRIBE"


def test_needs_more_bytes() -> None:
    for cut in (0, 1, 10, PUBLISH.index(b"\r\n\r\n") + 2, PUBLISH.index(b"\r\n\r\n") + 4, len(PUBLISH) - 1):
        assert frame_length(PUBLISH[:cut]) is None, cut


def test_every_prefix_is_incomplete_then_complete() -> None:
    results = [frame_length(PUBLISH[:i]) for i in range(len(PUBLISH) + 1)]
    assert results[:-1] == [None] * len(PUBLISH)
    assert results[-1] == len(PUBLISH)


def test_leading_crlf_belongs_to_the_frame() -> None:
    stream = b"\r\n\r\n" + SUBSCRIBE
    n = frame_length(stream)
    assert n == len(stream)
    assert parse_message(stream[:n]).to_bytes() == SUBSCRIBE
    assert frame_length(b"\r\n\r\n") is None


def test_compact_content_length_and_folding() -> None:
    data = PUBLISH.replace(b"Content-Length: ", b"l :\r\n  ")
    assert frame_length(data + b"NEXT") == len(PUBLISH) - len(b"Content-Length: ") + len(b"l :\r\n  ")


def test_bare_lf_head() -> None:
    head, _, body = PUBLISH.partition(b"\r\n\r\n")
    data = head.replace(b"\r\n", b"\n") + b"\n\n" + body
    assert frame_length(data + b"x") == len(data)


def test_missing_content_length_is_an_error() -> None:
    data = SUBSCRIBE.replace(b"Content-Length: 0\r\n", b"")
    with pytest.raises(ParseError) as info:
        frame_length(data)
    assert (info.value.status, info.value.reason) == (400, "Missing Content-Length header")


@pytest.mark.parametrize("value", [b"abc", b"-1", b"12345678901", b""])
def test_bad_content_length(value: bytes) -> None:
    with pytest.raises(ParseError) as info:
        frame_length(SUBSCRIBE.replace(b"Content-Length: 0", b"Content-Length: " + value))
    assert info.value.reason == "Bad Content-Length header"


def test_conflicting_content_lengths() -> None:
    with pytest.raises(ParseError) as info:
        frame_length(SUBSCRIBE.replace(b"Content-Length: 0\r\n", b"Content-Length: 0\r\nl: 5\r\n"))
    assert info.value.reason == "Conflicting Content-Length headers"


def test_too_large_body_announced() -> None:
    with pytest.raises(ParseError) as info:
        frame_length(SUBSCRIBE.replace(b"Content-Length: 0", b"Content-Length: 70000"))
    assert info.value.status == 513
    with pytest.raises(ParseError):
        frame_length(SUBSCRIBE.replace(b"Content-Length: 0", b"Content-Length: 200"), max_size=300)


def test_head_never_ending_is_bounded() -> None:
    assert frame_length(b"SUBSCRIBE sip:a@h SIP/2.0\r\n" + b"X: y\r\n" * 100) is None
    with pytest.raises(ParseError) as info:
        frame_length(b"SUBSCRIBE sip:a@h SIP/2.0\r\n" + b"X: y\r\n" * 12000)
    assert info.value.status == 513
