"""Real messages for the SIP layer tests, taken from the OpenSIPS 3.4 captures.

The captures are text files with LF line ends; the head is rebuilt with CRLF and the body cut to the
message's Content-Length (the capture tool wrote some bodies with LF, some with CRLF).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "opensips-captures"
_BLOCK = "=" * 72 + "\n"
_RULE = "-" * 72 + "\n"
_START = re.compile(r"^(?:[A-Z]+ \S+ SIP/2\.0|SIP/2\.0 \d{3} )")


def _to_wire(text: str) -> bytes | None:
    head, _, body = text.partition("\n\n")
    m = re.search(r"(?im)^content-length:\s*(\d+)", head)
    wire_head = head.replace("\n", "\r\n").encode() + b"\r\n\r\n"
    if m is None:
        return wire_head
    length = int(m.group(1))
    for variant in (body.encode(), body.replace("\n", "\r\n").encode()):
        if len(variant) >= length and not variant[length:].strip():
            return wire_head + variant[:length]
    return None


@lru_cache(maxsize=1)
def capture_messages() -> tuple[tuple[str, bytes], ...]:
    """(label, wire bytes) for every SIP message in the captures."""
    out: list[tuple[str, bytes]] = []
    for path in sorted(CAPTURES.glob("*.txt")):
        for n, block in enumerate(path.read_text(encoding="utf-8").split(_BLOCK)[1:]):
            _, _, text = block.partition(_RULE)
            if not _START.match(text):
                continue
            wire = _to_wire(text)
            if wire is not None:
                out.append((f"{path.stem}#{n}", wire))
    return tuple(out)


def sample(first_line_prefix: str) -> bytes:
    """The first captured message whose start line begins with `first_line_prefix`."""
    for _, wire in capture_messages():
        if wire.startswith(first_line_prefix.encode()):
            return wire
    raise LookupError(first_line_prefix)


SUBSCRIBE = (
    b"SUBSCRIBE sip:alice@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Bob Watcher" <sip:bob@example.com>;tag=1928301774\r\n'
    b"To: <sip:alice@example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 SUBSCRIBE\r\n"
    b"Contact: <sip:bob@192.0.2.10:5060;transport=udp>;expires=3600\r\n"
    b"Event: presence\r\n"
    b"Accept: application/pidf+xml\r\n"
    b"Expires: 3600\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

PIDF = (
    b'<?xml version="1.0"?>\r\n<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">'
    b"<tuple id=\"t1\"><status><basic>open</basic></status></tuple></presence>"
)

PUBLISH = (
    b"PUBLISH sip:alice@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKpub1\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKpub0;received=198.51.100.7;rport=5062\r\n"
    b"Max-Forwards: 69\r\n"
    b"From: <sip:alice@example.com>;tag=p1\r\n"
    b"To: <sip:alice@example.com>\r\n"
    b"Call-ID: pub-1\r\n"
    b"CSeq: 7 PUBLISH\r\n"
    b"Event: presence\r\n"
    b"Expires: 600\r\n"
    b"Content-Type: application/pidf+xml\r\n"
    b"Content-Length: " + str(len(PIDF)).encode() + b"\r\n"
    b"\r\n" + PIDF
)
