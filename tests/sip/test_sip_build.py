"""Building replies and requests, editing parsed messages, replies to malformed bytes, tags and branches."""

from __future__ import annotations

import re

import pytest
from sip_samples import PIDF, PUBLISH, SUBSCRIBE, sample

from routescript.sip import (
    Header,
    ParseError,
    SIPRequest,
    SIPResponse,
    build_reply,
    build_request,
    generate_branch,
    generate_tag,
    parse_message,
    parse_via,
    reason_phrase,
    reply_to_malformed,
)

# --- build_reply (RFC 3261 8.2.6) --------------------------------------------------------------------------


def test_reply_copies_via_from_to_call_id_cseq_and_adds_to_tag() -> None:
    request = parse_message(PUBLISH)
    reply = build_reply(request, 200, to_tag="srv1", headers=[("SIP-ETag", "e1"), ("Expires", "600")])
    assert isinstance(reply, SIPResponse)
    assert (reply.status, reply.reason) == (200, "OK")
    assert reply.header_all("Via") == request.header_all("Via")
    assert reply.header("From") == request.header("From")
    assert reply.header("To") == "<sip:alice@example.com>;tag=srv1"
    assert reply.header("Call-ID") == "pub-1"
    assert reply.header("CSeq") == "7 PUBLISH"
    assert reply.header("SIP-ETag") == "e1"
    assert reply.header("Content-Length") == "0"
    assert reply.to.tag == "srv1"
    wire = reply.to_bytes()
    assert wire == (
        b"SIP/2.0 200 OK\r\n"
        b"Via: SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKpub1\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKpub0;received=198.51.100.7;rport=5062\r\n"
        b"From: <sip:alice@example.com>;tag=p1\r\n"
        b"To: <sip:alice@example.com>;tag=srv1\r\n"
        b"Call-ID: pub-1\r\n"
        b"CSeq: 7 PUBLISH\r\n"
        b"SIP-ETag: e1\r\n"
        b"Expires: 600\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )
    assert parse_message(wire).to_bytes() == wire


def test_reply_generates_a_to_tag_when_none_given() -> None:
    reply = build_reply(parse_message(SUBSCRIBE), 202)
    assert reply.reason == "Accepted"
    assert reply.to.tag and re.fullmatch(r"[0-9a-f]{16}", reply.to.tag)


def test_reply_keeps_an_existing_to_tag() -> None:
    request = parse_message(SUBSCRIBE.replace(b"To: <sip:alice@example.com>",
                                              b"To: <sip:alice@example.com>;tag=old"))
    reply = build_reply(request, 200, to_tag="new")
    assert reply.header("To") == "<sip:alice@example.com>;tag=old"


def test_100_trying_gets_no_to_tag_but_timestamp() -> None:
    request = parse_message(SUBSCRIBE.replace(b"Expires: 3600\r\n", b"Expires: 3600\r\nTimestamp: 54\r\n"))
    trying = build_reply(request, 100)
    assert trying.header("To") == "<sip:alice@example.com>"
    assert trying.header("Timestamp") == "54"
    assert build_reply(request, 200).header("Timestamp") is None


def test_reply_with_body_and_content_type() -> None:
    reply = build_reply(parse_message(SUBSCRIBE), 200, "Fine", body=PIDF, content_type="application/pidf+xml")
    assert reply.reason == "Fine"
    assert reply.body == PIDF
    assert reply.content_type is not None and reply.content_type.mime == "application/pidf+xml"
    assert reply.content_length == len(PIDF)
    assert parse_message(reply.to_bytes()).body == PIDF


def test_reply_to_a_request_with_modified_via_reflects_it() -> None:
    request = parse_message(SUBSCRIBE)
    request.set_top_via(request.via.with_param("received", "203.0.113.9").with_param("rport", "40000"))
    reply = build_reply(request, 200)
    assert reply.via.received == "203.0.113.9" and reply.via.rport == 40000


def test_reply_uses_compact_form_request() -> None:
    request = parse_message(
        b"NOTIFY sip:b@h SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a@h>;tag=1\r\n"
        b"t: <sip:b@h>;tag=2\r\ni: c1\r\nCSeq: 3 NOTIFY\r\nl: 0\r\n\r\n"
    )
    reply = build_reply(request, 481)
    assert reply.reason == "Call/Transaction Does Not Exist"
    assert reply.call_id == "c1" and reply.to.tag == "2" and reply.via.branch == "z9hG4bK1"


def test_reply_misuse() -> None:
    request = parse_message(SUBSCRIBE)
    with pytest.raises(ValueError):
        build_reply(request, 99)
    with pytest.raises(ValueError):
        build_reply(request, 200, "OK\r\nX: injected")
    with pytest.raises(ValueError):
        build_reply(request, 200, headers=[("X-A", "a\r\nX-B: b")])
    with pytest.raises(ValueError):
        build_reply(build_reply(request, 200), 200)  # type: ignore[arg-type]


def test_reason_phrases() -> None:
    assert reason_phrase(489) == "Bad Event"
    assert reason_phrase(412) == "Conditional Request Failed"
    assert reason_phrase(513) == "Message Too Large"
    assert reason_phrase(499) == "Bad Request"
    assert reason_phrase(299) == "OK"


# --- build_request ------------------------------------------------------------------------------------------


def test_build_notify() -> None:
    notify = build_request(
        "NOTIFY",
        "sip:bob@127.0.0.1:50944",
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=" + generate_branch()),
            ("To", "<sip:bob@127.0.0.1>;tag=qh1ajjhq"),
            ("From", "<sip:alice@127.0.0.1>;tag=313b"),
            ("CSeq", "1 NOTIFY"),
            ("Call-ID", "sub-ztu0346x4s"),
            ("Event", "presence"),
            ("Subscription-State", "active;expires=600"),
        ],
        PIDF,
        content_type="application/pidf+xml",
    )
    assert isinstance(notify, SIPRequest)
    assert notify.method == "NOTIFY" and notify.ruri == "sip:bob@127.0.0.1:50944"
    assert notify.header("Max-Forwards") == "70"
    assert notify.header("Content-Length") == str(len(PIDF))
    assert notify.headers[-1] == Header("Content-Length", str(len(PIDF)))
    wire = notify.to_bytes()
    assert wire.startswith(b"NOTIFY sip:bob@127.0.0.1:50944 SIP/2.0\r\n"
                           b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK")
    again = parse_message(wire)
    assert again.body == PIDF
    assert again.event is not None and again.event.name == "presence"
    assert again.content_type is not None and again.content_type.mime == "application/pidf+xml"
    assert again.cseq.number == 1


def test_build_request_replaces_given_content_length_and_keeps_max_forwards() -> None:
    req = build_request("OPTIONS", "sip:h", [("Max-Forwards", "5"), ("Content-Length", "99")], b"abc")
    assert req.header_all("Content-Length") == ["3"]
    assert req.max_forwards == 5


def test_build_request_misuse() -> None:
    with pytest.raises(ValueError):
        build_request("NOT IFY", "sip:h", [])
    with pytest.raises(ValueError):
        build_request("NOTIFY", "sip:h x", [])
    with pytest.raises(ValueError):
        build_request("NOTIFY", "sip:h", [("Bad Name", "x")])


# --- editing ------------------------------------------------------------------------------------------------


def test_unmodified_message_is_byte_for_byte() -> None:
    data = SUBSCRIBE.replace(b"Expires: 3600", b"expires   :3600 ")
    msg = parse_message(data)
    msg.header("Expires")
    msg.from_  # noqa: B018
    assert msg.to_bytes() is data or msg.to_bytes() == data


def test_add_header_at_end_and_first() -> None:
    msg = parse_message(SUBSCRIBE)
    msg.add_header("X-Extra", "1")
    msg.add_header("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp", first=True)
    msg.add_header("Record-Route", "<sip:rr@h;lr>", first=True)
    assert msg.headers[0] == Header("Record-Route", "<sip:rr@h;lr>")
    assert msg.headers[1].value.startswith("SIP/2.0/UDP proxy")
    assert msg.headers[-1] == Header("X-Extra", "1")
    assert [v.host for v in msg.vias] == ["proxy.example.com", "192.0.2.10"]
    wire = msg.to_bytes()
    assert wire.startswith(b"SUBSCRIBE sip:alice@example.com SIP/2.0\r\nRecord-Route: <sip:rr@h;lr>\r\n"
                           b"Via: SIP/2.0/UDP proxy")
    assert wire.endswith(b"X-Extra: 1\r\n\r\n")
    assert parse_message(wire).header("x-extra") == "1"


def test_insert_header_at_a_position() -> None:
    msg = parse_message(SUBSCRIBE)
    names = [h.name for h in msg.headers]
    at = names.index("Event")
    msg.cseq  # noqa: B018 - a parsed value the insertion must not disturb
    msg.insert_header(at, "X-Before-Event", "1")
    assert [h.name for h in msg.headers] == [*names[:at], "X-Before-Event", *names[at:]]
    assert msg.header("x-before-event") == "1" and msg.event is not None and msg.event.package == "presence"
    msg.insert_header(0, "Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKi")
    assert msg.via.host == "proxy.example.com" and msg.cseq.method == "SUBSCRIBE"
    again = parse_message(msg.to_bytes())
    assert [h.name for h in again.headers] == [h.name for h in msg.headers]
    with pytest.raises(ValueError):
        msg.insert_header(1, "X-A", "a\r\nVia: evil")


def test_replace_header_puts_one_line_per_value_where_the_first_was() -> None:
    wire = (b"BYE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKr\r\n"
            b"Route: <sip:a;lr>\r\nMax-Forwards: 70\r\nRoute: <sip:b;lr>, <sip:c;lr>\r\n"
            b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: r1\r\nCSeq: 2 BYE\r\n"
            b"Content-Length: 0\r\n\r\n")
    msg = parse_message(wire)
    assert [r.uri.host for r in msg.routes] == ["a", "b", "c"]
    msg.replace_header("Route", ["<sip:b;lr>", "<sip:c;lr>"])
    names = [h.name for h in msg.headers]
    assert names[:4] == ["Via", "Route", "Route", "Max-Forwards"] and names.count("Route") == 2
    assert [r.uri.host for r in msg.routes] == ["b", "c"] and msg.header("max-forwards") == "70"
    assert [r.uri.host for r in parse_message(msg.to_bytes()).routes] == ["b", "c"]
    msg.replace_header("Route", [])
    assert not msg.has_header("Route") and msg.routes == [] and msg.cseq.method == "BYE"
    msg.replace_header("Route", ["<sip:d;lr>"])         # none before: at the end of the head
    assert msg.headers[-1] == ("Route", "<sip:d;lr>") and msg.routes[0].uri.host == "d"
    with pytest.raises(ValueError):
        msg.replace_header("Route", ["<sip:e;lr>\r\nVia: evil"])


def test_headers_is_a_copy_of_the_lines_as_headers() -> None:
    msg = parse_message(SUBSCRIBE)
    lines = msg.headers
    count = len(lines)
    assert all(type(h) is Header for h in lines) and lines[0].name == "Via"
    assert lines[0] == ("Via", lines[0].value)   # a Header is a tuple: it compares like the pair
    lines.clear()                                  # editing the copy leaves the message as it is
    assert len(msg.headers) == count and msg.to_bytes() == SUBSCRIBE


def test_remove_header() -> None:
    msg = parse_message(PUBLISH)
    assert msg.remove_header("via") == 2
    assert msg.remove_header("X-None") == 0
    assert msg.header("Via") is None and msg.vias == []
    with pytest.raises(ParseError):
        msg.via  # noqa: B018
    assert b"Via:" not in msg.to_bytes()


def test_set_header_replaces_all_lines_in_place() -> None:
    msg = parse_message(PUBLISH)
    position = [h.name for h in msg.headers].index("Expires")
    msg.set_header("expires", "0")
    assert msg.headers[position] == Header("Expires", "0")
    msg.set_header("Via", "SIP/2.0/UDP only;branch=z9hG4bKx")
    assert msg.header_all("Via") == ["SIP/2.0/UDP only;branch=z9hG4bKx"]
    msg.set_header("SIP-If-Match", "etag1")
    assert msg.headers[-1] == Header("SIP-If-Match", "etag1")
    assert parse_message(msg.to_bytes()).expires == 0


def test_set_header_with_compact_name_finds_long_form() -> None:
    msg = parse_message(SUBSCRIBE)
    msg.set_header("o", "presence.winfo")
    assert msg.header_all("Event") == ["presence.winfo"]


def test_editing_rejects_injection() -> None:
    msg = parse_message(SUBSCRIBE)
    with pytest.raises(ValueError):
        msg.add_header("X-A", "a\r\nVia: evil")
    with pytest.raises(ValueError):
        msg.set_header("X A", "a")
    assert msg.to_bytes() == SUBSCRIBE


def test_set_top_via_in_a_comma_list() -> None:
    data = PUBLISH.replace(
        b"Via: SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKpub1\r\n",
        b"Via: SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKpub1;rport, SIP/2.0/UDP mid;branch=z9hG4bKm\r\n",
    )
    msg = parse_message(data)
    top = msg.via
    msg.set_top_via(top.with_param("received", "2001:db8::9").with_param("rport", "5061"))
    assert [v.branch for v in msg.vias] == ["z9hG4bKpub1", "z9hG4bKm", "z9hG4bKpub0"]
    assert msg.via.received == "2001:db8::9" and msg.via.rport == 5061
    assert msg.header("Via") == (
        "SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKpub1;rport=5061;received=2001:db8::9, "
        "SIP/2.0/UDP mid;branch=z9hG4bKm"
    )


@pytest.mark.parametrize(("line", "left"), [
    ("SIP/2.0/UDP proxy;branch=z9hG4bKp, SIP/2.0/UDP ua;branch=z9hG4bKu;rport=5061",
     "SIP/2.0/UDP ua;branch=z9hG4bKu;rport=5061"),                      # SIPp's folded line
    ("SIP/2.0/UDP proxy;branch=z9hG4bKp ,SIP/2.0/UDP a;branch=z9hG4bKa ,  SIP/2.0/UDP b;branch=z9hG4bKb",
     "SIP/2.0/UDP a;branch=z9hG4bKa, SIP/2.0/UDP b;branch=z9hG4bKb"),    # the rest re-joined as before
    ('SIP/2.0/UDP proxy;x="a,b", SIP/2.0/UDP ua;branch=z9hG4bKu', "SIP/2.0/UDP ua;branch=z9hG4bKu"),
    (", SIP/2.0/UDP proxy;branch=z9hG4bKp, SIP/2.0/UDP ua;branch=z9hG4bKu", "SIP/2.0/UDP ua;branch=z9hG4bKu"),
    ("SIP/2.0/UDP proxy;branch=z9hG4bKp,  ", None),                      # nothing left: the line goes
])
def test_remove_top_via_on_a_folded_line(line: str, left: str | None) -> None:
    msg = parse_message(b"SIP/2.0 180 Ringing\r\nVia: " + line.encode() + b"\r\nFrom: <sip:a@h>;tag=1\r\n"
                        b"To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    msg.remove_top_via()
    assert msg.header("Via") == left
    assert [h.name for h in msg.headers][:2] == (["Via", "From"] if left else ["From", "To"])


def test_set_body_recomputes_content_length() -> None:
    msg = parse_message(SUBSCRIBE)
    msg.set_body(PIDF, "application/pidf+xml")
    assert msg.header("Content-Length") == str(len(PIDF))
    assert msg.content_type is not None and msg.content_type.mime == "application/pidf+xml"
    again = parse_message(msg.to_bytes())
    assert again.body == PIDF
    msg.body = b""
    assert msg.header("Content-Length") == "0"
    msg.set_body(b"", "")
    assert msg.header("Content-Type") is None
    assert parse_message(msg.to_bytes()).body == b""
    with pytest.raises(TypeError):
        msg.set_body("text")  # type: ignore[arg-type]


def test_body_change_on_message_without_content_length() -> None:
    data = SUBSCRIBE.replace(b"Content-Length: 0\r\n", b"")
    msg = parse_message(data)
    msg.set_body(b"xyz")
    assert parse_message(msg.to_bytes()).body == b"xyz"


def test_modified_latin1_message_is_written_as_utf8() -> None:
    data = SUBSCRIBE.replace(b'"Bob Watcher"', b'"B\xf6b"')
    msg = parse_message(data)
    msg.set_header("Expires", "1")
    assert '"B\u00f6b"'.encode() in msg.to_bytes()
    assert parse_message(msg.to_bytes()).from_.display == "B\u00f6b"


def test_edit_of_captured_notify() -> None:
    msg = parse_message(sample("NOTIFY sip:bob@127.0.0.1:50944"))
    body = msg.body
    msg.set_header("Subscription-State", "terminated;reason=timeout")
    again = parse_message(msg.to_bytes())
    assert again.body == body
    assert again.header("Subscription-State") == "terminated;reason=timeout"


# --- reply_to_malformed -------------------------------------------------------------------------------------


def test_reply_to_malformed_cseq() -> None:
    data = SUBSCRIBE.replace(b"CSeq: 314159 SUBSCRIBE", b"CSeq: abc SUBSCRIBE")
    with pytest.raises(ParseError) as info:
        parse_message(data)
    wire = reply_to_malformed(data, info.value.status, info.value.reason)
    assert wire is not None
    lines = wire.split(b"\r\n")
    assert lines[0] == b"SIP/2.0 400 Bad CSeq header"
    assert lines[1] == b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport"
    assert lines[2] == b'From: "Bob Watcher" <sip:bob@example.com>;tag=1928301774'
    assert re.fullmatch(rb"To: <sip:alice@example.com>;tag=[0-9a-f]{16}", lines[3])
    assert lines[4:] == [b"Call-ID: a84b4c76e66710@pc33.example.com", b"CSeq: abc SUBSCRIBE",
                         b"Content-Length: 0", b"", b""]


def test_reply_to_malformed_event_header_parses_back() -> None:
    data = SUBSCRIBE.replace(b"Event: presence", b"Event: ???")
    msg = parse_message(data)
    with pytest.raises(ParseError) as info:
        msg.event  # noqa: B018
    wire = reply_to_malformed(data, info.value.status, info.value.reason)
    assert wire is not None
    reply = parse_message(wire)
    assert (reply.status, reply.reason) == (400, "Bad Event header")
    assert reply.cseq.number == 314159 and reply.to.tag


def test_reply_to_malformed_start_line_and_compact_forms() -> None:
    data = (
        b"SUBSCRIBE sip:alice@example.com SIP/2.0 trailing\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1\r\n"
        b"v: SIP/2.0/UDP b;branch=z9hG4bK2\r\nf: <sip:a@h>;tag=1\r\nt: <sip:b@h>;tag=2\r\ni: c1\r\n"
        b"CSeq: 1\r\n SUBSCRIBE\r\n\r\n"
    )
    wire = reply_to_malformed(data, 400, "Bad Request Line")
    assert wire is not None
    reply = parse_message(wire)
    assert [v.host for v in reply.vias] == ["a", "b"]
    assert reply.to.tag == "2"
    assert reply.cseq.method == "SUBSCRIBE"


def test_reply_to_malformed_too_large_is_513() -> None:
    data = SUBSCRIBE.replace(b"Expires: 3600\r\n", b"X-Pad: " + b"a" * 70000 + b"\r\n")
    wire = reply_to_malformed(data, 513, "Message Too Large")
    assert wire is not None and wire.startswith(b"SIP/2.0 513 Message Too Large\r\n")


def test_reply_to_malformed_sanitises_reason() -> None:
    wire = reply_to_malformed(SUBSCRIBE, 400, "Bad\r\nX-Evil: 1")
    assert wire is not None and wire.startswith(b"SIP/2.0 400 Bad  X-Evil: 1\r\nVia")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        SUBSCRIBE.replace(b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n", b""),
        SUBSCRIBE.replace(b"Call-ID: a84b4c76e66710@pc33.example.com\r\n", b""),
        b"SIP/2.0 200 OK\r\n" + SUBSCRIBE.split(b"\r\n", 1)[1],
        b"ACK sip:alice@example.com SIP/2.0\r\n" + SUBSCRIBE.split(b"\r\n", 1)[1],
    ],
)
def test_reply_to_malformed_gives_none(data: bytes) -> None:
    assert reply_to_malformed(data, 400, "Bad Request") is None


# --- tags and branches --------------------------------------------------------------------------------------


def test_generate_tag_and_branch() -> None:
    tags = {generate_tag() for _ in range(200)}
    branches = {generate_branch() for _ in range(200)}
    assert len(tags) == 200 and len(branches) == 200
    assert all(b.startswith("z9hG4bK") and len(b) > 7 + 16 for b in branches)
    assert all(re.fullmatch(r"[0-9a-f]+", t) for t in tags)
    via = parse_via(f"SIP/2.0/UDP h;branch={generate_branch()}")
    assert via.branch is not None and via.branch.startswith("z9hG4bK")


def test_constructors_validate_and_serialise() -> None:
    req = SIPRequest("OPTIONS", "sip:h", [("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("Call-ID", "c")])
    assert req.to_bytes() == (b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
                              b"Call-ID: c\r\n\r\n")
    assert req.headers == [Header("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), Header("Call-ID", "c")]
    resp = SIPResponse(200, "OK")
    assert resp.to_bytes() == b"SIP/2.0 200 OK\r\n\r\n"
    with pytest.raises(ValueError):
        SIPRequest("OPTIONS", "sip:h", [("Bad Name", "x")])
    with pytest.raises(ValueError):
        SIPResponse(200, "OK", [("X", "a\nb")])
    with pytest.raises(ValueError):
        SIPResponse(700, "Nope")


def test_parse_error_pickles_with_its_status() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(ParseError("Message Too Large", 513)))  # noqa: S301 - our own bytes
    assert (err.reason, err.status) == ("Message Too Large", 513)
