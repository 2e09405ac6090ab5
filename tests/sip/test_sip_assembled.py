"""assemble_request: a request written straight into its bytes, its header lines parsed on first use."""

from __future__ import annotations

import pytest

from routescript.sip import SIPRequest, build_reply, parse_message
from routescript.sip.assembled import AssembledRequest, assemble_request

HEADERS = [("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1"), ("To", "<sip:w@h>;tag=a"),
           ("From", "<sip:p@h>;tag=b"), ("CSeq", "7 NOTIFY"), ("Call-ID", "c1@h"), ("Max-Forwards", "70"),
           ("Event", "presence"), ("Subscription-State", "active;expires=60"), ("Content-Length", "3")]


def test_bytes_are_those_of_the_same_request_built_the_usual_way() -> None:
    lazy = assemble_request("NOTIFY", "sip:w@127.0.0.1:5070", list(HEADERS), b"abc")
    eager = SIPRequest("NOTIFY", "sip:w@127.0.0.1:5070", HEADERS, b"abc")
    assert lazy.to_bytes() == eager.to_bytes()
    assert isinstance(lazy, AssembledRequest) and lazy.method == "NOTIFY" and lazy.body == b"abc"


def test_header_lines_are_parsed_only_when_read() -> None:
    request = assemble_request("NOTIFY", "sip:w@h", list(HEADERS), b"abc")
    with pytest.raises(AttributeError):
        object.__getattribute__(request, "_index")          # nothing parsed by sending it
    assert request.call_id == "c1@h" and request.cseq.number == 7 and request.via.branch == "z9hG4bK-1"
    assert request.header("Subscription-State") == "active;expires=60"
    assert build_reply(request, 408, "Request Timeout").header("To") == "<sip:w@h>;tag=a"
    with pytest.raises(AttributeError):
        request.no_such_thing  # noqa: B018 - any other missing attribute is still an error


def test_edits_after_the_first_read_rewrite_the_bytes() -> None:
    request = assemble_request("NOTIFY", "sip:w@h", list(HEADERS), b"abc")
    request.add_header("X-Probe", "1")
    again = parse_message(request.to_bytes())
    assert again.header("X-Probe") == "1" and again.body == b"abc" and again.call_id == "c1@h"


def test_without_a_via_the_request_is_an_ordinary_one() -> None:
    request = assemble_request("NOTIFY", "sip:w@h", HEADERS[1:], b"abc")
    assert not isinstance(request, AssembledRequest)
    request.add_header("Via", "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-2", first=True)
    assert parse_message(request.to_bytes()).via.branch == "z9hG4bK-2"


def test_a_request_larger_than_a_peer_may_send_still_reads_back() -> None:
    # Found by the long mutation fuzz: a NOTIFY with a large aggregated body (it cannot go over UDP) timed
    # out, and making its 408 re-read the bytes under the peer's 64 KiB bound raised in the timer callback.
    body = b"x" * 70_000
    headers = [*HEADERS[:-1], ("Content-Length", str(len(body)))]
    request = assemble_request("NOTIFY", "sip:w@h", headers, body)
    assert build_reply(request, 408, "Request Timeout").header("Call-ID") == "c1@h"
    assert request.header("Content-Length") == "70000"
