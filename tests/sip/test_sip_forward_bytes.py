"""remove_top_via on a received response keeps its bytes: the first line (our Via) is cut out and the
rest is sent as it came; anything but a plain first Via line falls back to the rebuilt form."""

from __future__ import annotations

import pytest

from routescript.sip import SIPMessage, parse_message

REST = (b"from:  <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\ni: c1@x\r\n"
        b"CSeq: 1 INVITE\r\nContact: <sip:b@10.0.0.2>\r\nl: 4\r\n\r\nbody")
OURS = b"Via:SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ours\r\n"
CALLER = b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-caller\r\n"


def _rebuilt(msg: SIPMessage) -> bytes:
    lines = [msg.start_line, *(f"{h.name}: {h.value}" for h in msg.headers), "", ""]
    return "\r\n".join(lines).encode() + msg.body


def test_our_via_line_is_cut_from_the_bytes_and_the_rest_kept_as_received() -> None:
    msg = parse_message(b"SIP/2.0 200 OK\r\n" + OURS + CALLER + REST)
    msg.remove_top_via()
    assert msg.to_bytes() == b"SIP/2.0 200 OK\r\n" + CALLER + REST
    assert msg.via.branch == "z9hG4bK-caller"
    assert [tuple(h) for h in parse_message(msg.to_bytes()).headers] == [tuple(h) for h in msg.headers]


def test_the_last_via_taken_off_leaves_the_rest() -> None:
    msg = parse_message(b"SIP/2.0 200 OK\r\n" + OURS + REST)
    msg.remove_top_via()
    assert msg.to_bytes() == b"SIP/2.0 200 OK\r\n" + REST
    assert msg.header("via") is None


@pytest.mark.parametrize("data", [
    b"SIP/2.0 200 OK\n" + OURS.replace(b"\r\n", b"\n") + CALLER + REST,           # a bare LF
    b"SIP/2.0 200 OK\r\n" + OURS + CALLER + REST.replace(b"To: ", b"To:\r\n "),  # a folded line
    b"SIP/2.0 200 OK\r\n" + OURS[:-2] + b" ;rport\r\n" + CALLER + REST,           # a folded line's look-alike
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ours, "
    b"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-c\r\n" + REST,                          # two values in one line
    b"SIP/2.0 200 OK\r\nContact: <sip:x@10.0.0.3>\r\n" + OURS + CALLER + REST,           # the Via not first
], ids=["bare-lf", "folded", "spaces-before-param", "two-values", "via-not-first"])
def test_anything_else_is_rebuilt(data: bytes) -> None:
    msg = parse_message(data)
    msg.remove_top_via()
    out = msg.to_bytes()
    if b" ;rport" in data:   # a plain line after all (white space before a parameter): cut as well
        assert out == data.replace(OURS[:-2] + b" ;rport\r\n", b"")
    else:
        assert out == _rebuilt(msg)
    assert b"z9hG4bK-ours" not in out
    assert [tuple(h) for h in parse_message(out).headers] == [tuple(h) for h in msg.headers]
