"""Server.to_tag reads the From tag without the full name-addr parse; it must agree with that parse."""

from __future__ import annotations

import pytest

from routescript.core.config import CoreConfig
from routescript.core.replies import Replier, to_tag
from routescript.core.server import Server, _from_tag
from routescript.core.stats import CoreCounters
from routescript.sip import SIPRequest, build_reply, parse_message


def _msg(from_value: str, branch: str = "z9hG4bK1") -> object:
    return parse_message((f"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch={branch}\r\n"
                          f"From: {from_value}\r\nTo: <sip:x@y>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\r\n"
                          ).encode())


@pytest.mark.parametrize("from_value", [
    "<sip:a@b>;tag=abc", '"X" <sip:a@b;tag=no>;tag=yes', "sip:a@b;tag=zz;x=1", "<sip:a@b>",
    "<sip:a@b> ; TAG = Q1-2.3", "<sip:a@b>;x=1;tag=t;y", "Bob <sips:bob@[::1]:5061>;tag=7f.e-2",
])
def test_from_tag_agrees_with_the_parser(from_value: str) -> None:
    msg = _msg(from_value)
    assert _from_tag(msg) == (msg.from_.tag or "")  # type: ignore[attr-defined]


def test_to_tag_is_stable_per_request_and_differs_between_requests() -> None:
    a1, a2 = _msg("<sip:a@b>;tag=1"), _msg("<sip:a@b>;tag=1")
    assert Server.to_tag(a1) == Server.to_tag(a2) and Server.to_tag(a1).startswith("rs.")
    assert Server.to_tag(_msg("<sip:a@b>;tag=2")) != Server.to_tag(a1)
    assert Server.to_tag(_msg("<sip:a@b>;tag=1", branch="z9hG4bK2")) != Server.to_tag(a1)


# --- one reply form per request (issue 18 item 5) -------------------------------------------------

def _request(to: str = "<sip:x@y>", extra: str = "") -> SIPRequest:
    return parse_message(("SUBSCRIBE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK9\r\n"
                          f"From: <sip:a@b>;tag=f1\r\nTo: {to}\r\nCall-ID: c9\r\nCSeq: 2 SUBSCRIBE\r\n"
                          f"{extra}\r\n").encode())  # type: ignore[return-value]


def test_the_to_tag_is_asked_only_when_the_to_has_none() -> None:
    asked: list[object] = []

    def make(msg: SIPRequest) -> str:
        asked.append(msg)
        return "made"

    in_dialog = build_reply(_request("<sip:x@y>;tag=theirs"), 200, make_to_tag=make)
    assert in_dialog.to.tag == "theirs" and asked == []
    initial = _request()
    assert build_reply(initial, 200, make_to_tag=make).to.tag == "made" and asked == [initial]
    assert build_reply(initial, 100, make_to_tag=make).to.tag is None and len(asked) == 1  # 100: no tag


def test_to_tag_kept_for_its_request_is_the_tag_computed_afresh() -> None:
    a, b = _request(), _request(extra="X-Other: 1\r\n")
    first = to_tag(a)
    assert to_tag(a) == first                   # asked again (presence, then the reply): same tag
    assert to_tag(b) == first                   # an equal request elsewhere: computed, same value
    other = _request("<sip:x@y>", extra="")
    other.set_header("Call-ID", "c10")
    assert to_tag(other) != first and to_tag(a) == first


def test_record_route_and_server_go_in_the_reply_form() -> None:
    msg = _request(extra="Record-Route: <sip:p1;lr>\r\nRecord-Route: <sip:p2;lr>\r\n")
    ok = build_reply(msg, 200, record_route=True, server="rs", headers=[("Expires", "600")])
    assert ok.header_all("Record-Route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert [n for n, _ in ok.headers][5:] == ["Record-Route", "Record-Route", "Expires", "Server",
                                              "Content-Length"]   # after Via, From, To, Call-ID, CSeq
    assert ok.header("Server") == "rs" and ok.header("Expires") == "600"
    assert build_reply(msg, 404, record_route=True).header("Record-Route") is None   # 18x/2xx only
    assert build_reply(msg, 200).header("Record-Route") is None                       # not asked
    theirs = build_reply(msg, 200, server="rs", headers=[("server", "mine")])
    assert theirs.header_all("Server") == ["mine"]          # a Server in `headers` wins
    assert build_reply(msg, 200, server="").header("Server") is None


def test_added_headers_are_checked_and_filed_in_one_pass() -> None:
    msg = _request()
    resp = build_reply(msg, 200, headers=[("X-A", "1"), ("x-a", "2"), ("Contact", "<sip:s@h>")],
                       body=b"abc", content_type="text/plain")
    assert resp.header_all("X-A") == ["1", "2"] and resp.header("Contact") == "<sip:s@h>"
    assert resp.header("Content-Type") == "text/plain" and resp.header("Content-Length") == "3"
    again = parse_message(resp.to_bytes())                  # what the index says is what the wire says
    assert [(n, v) for n, v in again.headers] == [(n, v) for n, v in resp.headers]
    with pytest.raises(ValueError, match="not a header name"):
        build_reply(msg, 200, headers=[("Bad Name", "1")])
    with pytest.raises(ValueError, match="line break"):
        build_reply(msg, 200, headers=[("Expires", "1\r\nX: y")])          # a known name: value checked
    with pytest.raises(ValueError, match="line break"):
        build_reply(msg, 200, server="a\nb")
    with pytest.raises(ValueError, match="line break"):
        build_reply(msg, 200, content_type="text/plain\r\nX: y")


def test_the_server_header_is_decided_once_per_configuration_generation() -> None:
    class Layers:
        config = CoreConfig(values={"server_header": "Server: first"})
        transport = None
        transactions = None

    layers = Layers()
    replier = Replier(layers, CoreCounters())  # type: ignore[arg-type]
    assert replier.make_reply(_request(), 200).header("Server") == "first"
    layers.config = CoreConfig(values={"server_header": "Server: second"})   # a reload's new config
    assert replier.make_reply(_request(), 200).header("Server") == "second"
    layers.config = CoreConfig(values={"server_header": "Server: x", "server_signature": False})
    assert replier.make_reply(_request(), 200).header("Server") is None
