"""The MI FIFO framing (sans-IO): requests split over reads, several in one read, bad input dropped."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from routescript.modules.mi_fifo._protocol import FifoError, FifoParser, FifoRequest, json_end

REQ = b'{"jsonrpc":"2.0","method":"pres_phtable_list","id":"1"}'


def test_capture_24_request() -> None:
    items = FifoParser().feed(b":anchor_reply_3059_pres_phtable_list:" + REQ)
    assert items == [FifoRequest("anchor_reply_3059_pres_phtable_list", REQ)]


def test_split_over_reads_and_several_per_read() -> None:
    p = FifoParser()
    data = b"  :r1:" + REQ + b"\n:r2:" + REQ + b":r3:{\"a\": \"}{\\\"\"}"
    out = []
    for i in range(len(data)):
        out += p.feed(data[i:i + 1])
    assert out == [FifoRequest("r1", REQ), FifoRequest("r2", REQ), FifoRequest("r3", b'{"a": "}{\\""}')]
    assert p.buffered == 0


def test_no_reply_name_and_bad_input() -> None:
    p = FifoParser()
    assert p.feed(b"::" + REQ) == [FifoRequest("", REQ)]
    out = p.feed(b"which\n:r:" + REQ)
    assert isinstance(out[0], FifoError) and out[1] == FifoRequest("r", REQ)
    out = p.feed(b":../etc/passwd:" + REQ + b"\n")
    assert len(out) == 1 and isinstance(out[0], FifoError) and "forbidden" in out[0].reason
    out = p.feed(b":r5:which\n")
    assert out == [FifoError("request is not a JSON object", "r5", parse_error=True)]
    assert p.buffered == 0


def test_bounded_buffer() -> None:
    p = FifoParser(max_buffer=100)
    out = p.feed(b":r:{\"x\": \"" + b"a" * 200)
    assert isinstance(out[-1], FifoError) and p.buffered == 0
    assert p.feed(b":r:" + REQ) == [FifoRequest("r", REQ)]


def test_json_end() -> None:
    assert json_end(b'{"a":[1,{"b":"]"}]} tail', 0) == 19
    assert json_end(b'{"a":"\\"}"', 0) is None


@given(st.binary(max_size=300))
def test_any_bytes_never_raise(data: bytes) -> None:
    p = FifoParser(max_buffer=256)
    for item in p.feed(data):
        assert isinstance(item, (FifoRequest, FifoError))
    assert p.buffered <= 256
