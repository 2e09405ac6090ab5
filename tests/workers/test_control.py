"""The control channel's JSON-lines codec: every message round-trips; garbage, unknown types, wrong
fields and over-long lines are ControlError with a clear message, never another exception."""

from __future__ import annotations

import asyncio
import socket

import pytest

from routescript.workers.control import (
    ControlChannel,
    ControlError,
    LineDecoder,
    MIReply,
    MIRequest,
    Ping,
    Pong,
    Ready,
    StartFailed,
    Stop,
    decode,
    encode,
)

MESSAGES = [Ready(0, 1234), StartFailed(1, "x.cfg:3:1: module 'presence' failed to start: boom\n  line"),
            Ping(7), Pong(7), Stop(), MIRequest(3, "ps"),
            MIRequest(4, "get_statistics", {"statistics": ["all"]}),
            MIRequest(5, "log_level", [3]), MIReply(3, True, {"Processes": [{"ID": 0}]}),
            MIReply(4, False, {"code": 404, "message": "Statistics Not Found"}), MIReply(5, True, "OK")]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: object) -> None:
    line = encode(message)   # type: ignore[arg-type]
    assert line.endswith(b"\n") and line.count(b"\n") == 1   # one line, whatever the text holds
    assert decode(line[:-1]) == message


@pytest.mark.parametrize(("line", "error"), [
    (b"not json", "control line is not JSON"),
    (b"\xff\xfe", "control line is not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"seq": 1}', "unknown control message type"),
    (b'{"type": "reboot"}', "unknown control message type"),
    (b'{"type": "ping"}', "ping: expected fields ['seq'], got []"),
    (b'{"type": "ping", "seq": 1, "extra": 2}', "ping: expected fields"),
    (b'{"type": "ping", "seq": "1"}', "ping: field seq has the wrong type (str)"),
    (b'{"type": "ping", "seq": true}', "ping: field seq has the wrong type (bool)"),
    (b'{"type": "mi_reply", "id": 1, "ok": 1}', "mi_reply: field ok has the wrong type (int)"),
    (b'{"type": "ready", "slot": 0}', "ready: expected fields"),
])
def test_garbage_is_a_clear_error(line: bytes, error: str) -> None:
    with pytest.raises(ControlError) as ei:
        decode(line)
    assert error in str(ei.value)


def test_decoder_joins_partial_lines_and_skips_blank_ones() -> None:
    d = LineDecoder()
    data = encode(Ping(1)) + b"\n" + encode(Pong(1))
    assert d.feed(data[:5]) == []
    assert d.feed(data[5:]) == [Ping(1), Pong(1)]


def test_decoder_bounds_the_line_before_its_end_arrives() -> None:
    d = LineDecoder(max_line=100)
    d.feed(b"x" * 100)    # at the bound, still waiting for the end
    with pytest.raises(ControlError, match="more than 100 bytes"):
        d.feed(b"x")
    with pytest.raises(ControlError, match="exceeds the 100-byte bound"):
        LineDecoder(max_line=100).feed(b"y" * 101 + b"\n")


def test_an_oversized_message_is_refused_at_encode(monkeypatch: pytest.MonkeyPatch) -> None:
    from routescript.workers import control

    monkeypatch.setattr(control, "MAX_LINE", 64)
    with pytest.raises(ControlError, match="exceeds the 64-byte bound"):
        encode(MIReply(1, True, "z" * 100))


async def test_channel_over_a_socketpair_until_eof() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    left, right = await ControlChannel.open(a), await ControlChannel.open(b)
    left.send(Ready(0, 42))
    left.send(MIRequest(1, "ps"))
    await left.drain()
    assert await asyncio.wait_for(right.receive(), 5) == Ready(0, 42)
    assert await asyncio.wait_for(right.receive(), 5) == MIRequest(1, "ps")
    left.close()
    assert await asyncio.wait_for(right.receive(), 5) is None
    right.close()


async def test_channel_reports_garbage_as_control_error() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    channel = await ControlChannel.open(b)
    a.sendall(b"{oops\n")
    with pytest.raises(ControlError, match="not JSON"):
        await asyncio.wait_for(channel.receive(), 5)
    a.close()
    channel.close()
