"""assemble_request: a request written straight into its bytes, its header lines parsed on first use."""

from __future__ import annotations

import pytest

from routescript.sip import ParseError, SIPRequest, build_reply, parse_message
from routescript.sip.assembled import AssembledRequest, AssembledResponse, assemble_request, assemble_trying

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


TRYING_REQUEST = (b"INVITE sip:bob@192.0.2.9 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa1, "
                  b"SIP/2.0/TCP 192.0.2.7;branch=z9hG4bKa0\r\nMax-Forwards: 70\r\n"
                  b"v: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bKz\r\nf: <sip:alice@example.com>;tag=a\r\n"
                  b"To: <sip:bob@example.com>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nTimestamp: 54\r\n"
                  b"Record-Route: <sip:p1;lr>\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("server", ["", "routescript (1.0)"])
def test_trying_bytes_are_those_build_reply_makes_and_its_head_is_read_back(server: str) -> None:
    request = parse_message(TRYING_REQUEST)
    trying = assemble_trying(request, server)
    built = build_reply(request, 100, server=server)
    assert trying.to_bytes() == built.to_bytes()
    assert isinstance(trying, AssembledResponse) and trying.status == 100 and trying.reason == "Trying"
    with pytest.raises(AttributeError):
        object.__getattribute__(trying, "_index")           # nothing parsed by making or sending it
    assert trying.headers == built.headers and trying.cseq.method == "INVITE"
    assert [v.branch for v in trying.vias] == ["z9hG4bKa1", "z9hG4bKa0", "z9hG4bKz"]


def test_trying_refuses_what_build_reply_refuses() -> None:
    request = parse_message(TRYING_REQUEST)
    with pytest.raises(ValueError, match="line break"):
        assemble_trying(request, "bad\r\nX: 1")
    kept = [(h.name, h.value) for h in request.headers if h.name != "CSeq"]
    no_cseq = SIPRequest("INVITE", "sip:b@h", kept)
    with pytest.raises(ValueError, match="no cseq header"):
        assemble_trying(no_cseq)
    with pytest.raises(ValueError, match="no cseq header"):
        build_reply(no_cseq, 100)
