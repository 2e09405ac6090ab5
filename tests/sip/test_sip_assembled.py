"""assemble_request: a request written straight into its bytes, its header lines parsed on first use."""

from __future__ import annotations

import pytest

from routescript.sip import ParseError, SIPRequest, build_reply, parse_message
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


def test_our_own_bytes_are_read_back_whatever_their_size_or_number_of_lines() -> None:
    """A NOTIFY over 64 KiB, with more header lines than a received message may have and a line longer
    than one may have, is ours: reading it back (its local 408) must not apply the received-message
    bounds. Before: ParseError "Message Too Large" in the timer path."""
    routes = [("Route", f"<sip:p{i}.example.com;lr>") for i in range(300)]
    long_line = [("X-Long", "v" * 10000)]
    body = b"x" * 70000
    headers = [*HEADERS[:-1], *routes, *long_line, ("Content-Length", str(len(body)))]
    request = assemble_request("NOTIFY", "sip:w@h", headers, body)
    assert len(request.to_bytes()) > 65536
    timeout = build_reply(request, 408, "Request Timeout")
    assert timeout.status == 408 and timeout.call_id == "c1@h" and len(request.header_all("Route")) == 300
    with pytest.raises(ParseError):   # the same bytes received from a peer are refused, as before
        parse_message(request.to_bytes())
