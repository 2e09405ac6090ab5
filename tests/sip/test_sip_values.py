"""Typed header values and URIs: parsed lazily on first access, cached, ParseError when malformed."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sip_samples import PUBLISH, SUBSCRIBE, sample

from routescript.sip import (
    Contact,
    ContentType,
    CSeq,
    Event,
    NameAddr,
    name_addr_tag,
    ParseError,
    SipURI,
    Via,
    parse_contact,
    parse_content_type,
    parse_cseq,
    parse_event,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
)


def with_header(line: str, base: bytes = SUBSCRIBE) -> bytes:
    return base.replace(b"Content-Length: 0\r\n", line.encode() + b"\r\nContent-Length: 0\r\n")


def bad(fn, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ParseError) as info:
        fn(*args)
    return info.value.reason


# --- URIs ---------------------------------------------------------------------------------------------------


def test_sip_uri_all_parts() -> None:
    text = "sip:alice:secret@example.com:5070;transport=tcp;lr;maddr=239.1.1.1?subject=hi&priority=urgent"
    uri = parse_uri(text)
    assert uri == SipURI(
        "sip", "alice", "secret", "example.com", 5070,
        (("transport", "tcp"), ("lr", None), ("maddr", "239.1.1.1")),
        (("subject", "hi"), ("priority", "urgent")),
    )
    assert uri.param("TRANSPORT") == "tcp"
    assert uri.param("lr") == ""
    assert uri.param("ttl") is None
    assert uri.has_param("lr") and not uri.has_param("ttl")
    assert uri.transport == "tcp"
    assert uri.hostport == "example.com:5070"
    assert uri.aor == "sip:alice@example.com"
    assert str(uri) == text


def test_sip_uri_without_user() -> None:
    uri = parse_uri("sip:127.0.0.1:5070")
    assert (uri.user, uri.host, uri.port, uri.params) == (None, "127.0.0.1", 5070, ())
    assert str(uri) == "sip:127.0.0.1:5070"
    assert uri.aor == "sip:127.0.0.1"


def test_sips_and_scheme_case() -> None:
    assert parse_uri("sips:bob@example.com").scheme == "sips"
    assert parse_uri("SIP:bob@example.com").scheme == "sip"


def test_ipv6_reference_keeps_brackets() -> None:
    uri = parse_uri("sip:bob@[2001:db8::10]:5060;transport=udp")
    assert (uri.host, uri.port) == ("[2001:db8::10]", 5060)
    assert str(uri) == "sip:bob@[2001:db8::10]:5060;transport=udp"
    assert parse_uri("sip:[::1]").host == "[::1]"


def test_user_part_with_escapes_and_user_unreserved() -> None:
    uri = parse_uri("sip:%2B1%20212;phone-context=x@example.com;user=phone")
    assert uri.user == "%2B1%20212;phone-context=x"
    assert uri.param("user") == "phone"


def test_tel_uri() -> None:
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert (uri.scheme, uri.user, uri.host) == ("tel", "+1-201-555-0123", "")
    assert uri.param("phone-context") == "example.com"
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com"
    assert uri.aor == "tel:+1-201-555-0123"


def test_pres_uri_shares_the_sip_form() -> None:
    uri = parse_uri("pres:alice@example.com")
    assert (uri.scheme, uri.user, uri.host) == ("pres", "alice", "example.com")


def test_unsupported_scheme_is_416() -> None:
    with pytest.raises(ParseError) as info:
        parse_uri("http://example.com/")
    assert (info.value.status, info.value.reason) == (416, "Unsupported URI Scheme")


@pytest.mark.parametrize(
    "text",
    ["sip:", "sip:@host", "sip:bob@", "sip:bob@host:99999", "sip:bob@host:port", "sip:bob@ho st", "bob@host",
     "sip:bob@host;=x", "", "tel:", "sip:bob@[zz::1]"],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(ParseError):
        parse_uri(text)


def test_uri_is_frozen_and_with_param() -> None:
    uri = parse_uri("sip:bob@h")
    with pytest.raises(dataclasses.FrozenInstanceError):
        uri.host = "x"  # type: ignore[misc]
    assert str(uri.with_param("transport", "tcp")) == "sip:bob@h;transport=tcp"
    assert str(uri.with_param("lr")) == "sip:bob@h;lr"


def test_request_uri_lazy_and_writable() -> None:
    msg = parse_message(SUBSCRIBE)
    assert msg.uri.user == "alice" and msg.uri.host == "example.com"
    msg.ruri = "sip:carol@example.org:5080"
    assert msg.uri.user == "carol" and msg.uri.port == 5080
    assert msg.to_bytes().startswith(b"SUBSCRIBE sip:carol@example.org:5080 SIP/2.0\r\n")
    with pytest.raises(ValueError):
        msg.ruri = "sip:a b"


def test_request_uri_unsupported_scheme_on_access() -> None:
    msg = parse_message(SUBSCRIBE.replace(b"SUBSCRIBE sip:alice@example.com", b"SUBSCRIBE urn:service:sos",
                                          1))
    with pytest.raises(ParseError) as info:
        msg.uri  # noqa: B018
    assert info.value.status == 416


# --- name-addr ----------------------------------------------------------------------------------------------


def test_from_with_quoted_display_and_tag() -> None:
    msg = parse_message(SUBSCRIBE)
    fr = msg.from_
    assert fr == NameAddr("Bob Watcher", parse_uri("sip:bob@example.com"), (("tag", "1928301774"),))
    assert fr.tag == "1928301774"
    assert str(fr) == '"Bob Watcher" <sip:bob@example.com>;tag=1928301774'
    assert msg.to.tag is None and msg.to.display is None


@pytest.mark.parametrize(
    "value, display, uri, tag",
    [
        ("Bob <sip:bob@h>;tag=x", "Bob", "sip:bob@h", "x"),
        ("Bob Smith <sip:bob@h>", "Bob Smith", "sip:bob@h", None),
        ("<sip:bob@h;transport=tcp>;tag=y;foo", None, "sip:bob@h;transport=tcp", "y"),
        ("sip:bob@h;tag=z", None, "sip:bob@h", "z"),
        ('"quote \\" inside" <sip:bob@h>', 'quote " inside', "sip:bob@h", None),
        ('""<sip:bob@h>', "", "sip:bob@h", None),
        ("  <tel:+123>  ;  tag = t1 ", None, "tel:+123", "t1"),
        ("<sip:bob@h>;tag=\"quoted\"", None, "sip:bob@h", "quoted"),
    ],
)
def test_name_addr_forms(value: str, display: str | None, uri: str, tag: str | None) -> None:
    na = parse_name_addr(value, "To")
    assert na.display == display
    assert str(na.uri) == uri
    assert na.tag == tag


@pytest.mark.parametrize("what", ["From", "To"])
@pytest.mark.parametrize("params", [';tag="a b"', ';tag="a;x=1"', ';tag=""', ";tag", ";TAG", ';Tag="a,b"'])
def test_tag_that_is_no_token_is_refused(what: str, params: str) -> None:
    # tag-param = "tag" EQUAL token (RFC 3261 25.1): the tag is stored and written back in the NOTIFY's
    # From/To as it is, so a quoted value holding a space, ";" or "," (or no value) is refused.
    with pytest.raises(ParseError) as info:
        parse_name_addr("<sip:bob@h>" + params, what)
    assert info.value.reason == f"Bad {what} header"


def test_tag_rule_is_only_for_from_and_to() -> None:
    # In a Contact or Route, "tag" is any generic-param.
    assert parse_name_addr('<sip:bob@h>;tag="a b"', "Contact").param("tag") == "a b"


def test_name_addr_round_trips_through_str() -> None:
    na = parse_name_addr('"A \\"B\\"" <sip:a@h;lr>;tag=1;x', "From")
    assert parse_name_addr(str(na), "From") == na
    assert na.param("x") == "" and na.has_param("X")
    assert na.with_tag("9").tag == "9"


@pytest.mark.parametrize(
    "value", ["<sip:bob@h", '"unterminated <sip:bob@h>', '"a" sip:bob@h', "sip:bob@h, sip:c@h", "<>", "",
              "<sip:bob@h>;=x"]
)
def test_bad_name_addr(value: str) -> None:
    assert bad(parse_name_addr, value, "From") == "Bad From header"


def test_bad_to_raises_on_access_only() -> None:
    msg = parse_message(SUBSCRIBE.replace(b"To: <sip:alice@example.com>", b"To: <sip:alice@example.com"))
    assert msg.call_id  # the message itself parsed
    assert bad(lambda: msg.to) == "Bad To header"


# --- Via ----------------------------------------------------------------------------------------------------


def test_via_fields() -> None:
    via = parse_message(SUBSCRIBE).via
    assert via == Via("SIP/2.0/UDP", "192.0.2.10", 5060, (("branch", "z9hG4bK776asdhds"), ("rport", None)))
    assert via.transport == "UDP"
    assert via.branch == "z9hG4bK776asdhds"
    assert via.rport is True
    assert via.received is None
    assert via.sent_by == "192.0.2.10:5060"
    assert str(via) == "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport"


def test_vias_in_order_with_ipv6_received_and_rport() -> None:
    vias = parse_message(PUBLISH).vias
    assert [v.transport for v in vias] == ["TCP", "UDP"]
    assert vias[0].host == "[2001:db8::1]" and vias[0].port == 5060 and vias[0].rport is None
    assert vias[1].port is None and vias[1].sent_by == "192.0.2.1"
    assert vias[1].received == "198.51.100.7"
    assert vias[1].rport == 5062


def test_comma_separated_vias() -> None:
    data = SUBSCRIBE.replace(
        b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport",
        b"Via: SIP/2.0/TLS p.example.com;branch=z9hG4bKa , SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKb",
    )
    msg = parse_message(data)
    assert [v.branch for v in msg.vias] == ["z9hG4bKa", "z9hG4bKb"]
    assert msg.via.transport == "TLS"


def test_via_loose_whitespace() -> None:
    via = parse_via("SIP / 2.0 / UDP   host.example.com : 5060 ; branch = z9hG4bK1 ;received=1.2.3.4")
    assert (via.protocol, via.host, via.port, via.branch, via.received) == (
        "SIP/2.0/UDP", "host.example.com", 5060, "z9hG4bK1", "1.2.3.4")


def test_via_with_param() -> None:
    via = parse_via("SIP/2.0/UDP h:5060;branch=z9hG4bK1;rport")
    via2 = via.with_param("received", "10.0.0.1").with_param("rport", "5099")
    assert str(via2) == "SIP/2.0/UDP h:5060;branch=z9hG4bK1;rport=5099;received=10.0.0.1"
    assert via2.rport == 5099 and via.rport is True


@pytest.mark.parametrize(
    "value", ["SIP/2.0/UDP", "SIP/2.0 h", "SIP/2.0/UDP h:99999", "SIP/2.0/UDP h;rport=abc", "SIP/2.0/UDP h;;",
              "x"]
)
def test_bad_via(value: str) -> None:
    assert bad(parse_via, value) == "Bad Via header"


def test_bad_via_raises_on_access() -> None:
    msg = parse_message(SUBSCRIBE.replace(b"Via: SIP/2.0/UDP 192.0.2.10:5060", b"Via: SIP/2.0/UDP"))
    assert bad(lambda: msg.via) == "Bad Via header"
    assert bad(lambda: msg.vias) == "Bad Via header"


# --- CSeq, Call-ID, Max-Forwards, Expires -------------------------------------------------------------------


def test_cseq() -> None:
    assert parse_message(SUBSCRIBE).cseq == CSeq(314159, "SUBSCRIBE")
    assert parse_cseq("  7\tNOTIFY ") == CSeq(7, "NOTIFY")
    assert str(CSeq(7, "NOTIFY")) == "7 NOTIFY"


def test_max_forwards_and_expires() -> None:
    msg = parse_message(SUBSCRIBE)
    assert msg.max_forwards == 70
    assert msg.expires == 3600
    plain = parse_message(SUBSCRIBE.replace(b"Max-Forwards: 70\r\n", b"").replace(b"Expires: 3600\r\n", b""))
    assert plain.max_forwards is None and plain.expires is None


def test_expires_caps_huge_values() -> None:
    msg = parse_message(SUBSCRIBE.replace(b"Expires: 3600", b"Expires: " + b"9" * 5000))
    assert msg.expires == 2**32 - 1


def test_bad_max_forwards_and_expires() -> None:
    bad_mf = SUBSCRIBE.replace(b"Max-Forwards: 70", b"Max-Forwards: x")
    assert bad(lambda: parse_message(bad_mf).max_forwards) == "Bad Max-Forwards header"
    assert bad(lambda: parse_message(SUBSCRIBE.replace(b"Expires: 3600", b"Expires: -1")).expires) == (
        "Bad Expires header")
    assert bad(lambda: parse_message(SUBSCRIBE.replace(b"Expires: 3600", b"Expires: \xd9\xa3")).expires) == (
        "Bad Expires header")


# --- Event --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, package, templates, name, event_id, params",
    [
        ("presence", "presence", (), "presence", None, ()),
        ("presence.winfo", "presence", ("winfo",), "presence.winfo", None, ()),
        ("dialog;sla", "dialog", (), "dialog", None, (("sla", None),)),
        ("message-summary", "message-summary", (), "message-summary", None, ()),
        ("refer;id=93809824", "refer", (), "refer", "93809824", (("id", "93809824"),)),
        ("presence.winfo.x ; id = 7 ; foo=bar", "presence", ("winfo", "x"), "presence.winfo.x", "7",
         (("id", "7"), ("foo", "bar"))),
    ],
)
def test_event(value: str, package: str, templates: tuple[str, ...], name: str, event_id: str | None,
               params: tuple[tuple[str, str | None], ...]) -> None:
    event = parse_event(value)
    assert event == Event(package, templates, params)
    assert (event.name, event.id) == (name, event_id)


def test_event_sla_flag_and_str() -> None:
    event = parse_event("dialog;sla")
    assert event.has_param("sla") and event.param("sla") == ""
    assert str(event) == "dialog;sla"
    assert str(parse_event("presence.winfo")) == "presence.winfo"


def test_event_from_message_and_absent() -> None:
    assert parse_message(SUBSCRIBE).event == Event("presence")
    assert parse_message(SUBSCRIBE.replace(b"Event: presence\r\n", b"")).event is None
    winfo = parse_message(sample("SUBSCRIBE sip:alice@127.0.0.1:5070").replace(b"Event: presence",
                                                                                b"o: presence.winfo"))
    assert winfo.event is not None and winfo.event.name == "presence.winfo"


@pytest.mark.parametrize("value", ["", "presence.", ".winfo", "pres ence", "presence;", "presence;=1",
                                   "dialog,sla"])
def test_bad_event(value: str) -> None:
    msg = parse_message(SUBSCRIBE.replace(b"Event: presence", f"Event: {value}".encode()))
    assert bad(lambda: msg.event) == "Bad Event header"


@pytest.mark.parametrize("value",
                         ['presence;id="a b"', 'presence;id="1;x=2"', "presence;id", 'presence;ID=""'])
def test_event_id_that_is_no_token_is_refused(value: str) -> None:
    # event-param = generic-param / ( "id" EQUAL token ) (RFC 6665 8.2.1): written back in each NOTIFY's
    # Event header as it is.
    msg = parse_message(SUBSCRIBE.replace(b"Event: presence", f"Event: {value}".encode()))
    assert bad(lambda: msg.event) == "Bad Event header"


# --- Contact ------------------------------------------------------------------------------------------------


def test_contacts() -> None:
    msg = parse_message(with_header('Contact: "Bob" <sip:bob@10.0.0.2>;expires=60;q=0.5, sip:bob@10.0.0.3'))
    contacts = msg.contacts
    assert len(contacts) == 3
    assert contacts[0].uri is not None and contacts[0].uri.params == (("transport", "udp"),)
    assert contacts[0].expires == 3600
    assert contacts[1].name_addr is not None and contacts[1].name_addr.display == "Bob"
    assert contacts[1].expires == 60 and contacts[1].param("q") == "0.5"
    assert contacts[2].uri is not None and contacts[2].uri.host == "10.0.0.3" and contacts[2].expires is None
    assert not any(c.star for c in contacts)


def test_star_contact() -> None:
    assert parse_contact("*") == Contact(star=True)
    star = parse_contact(" * ")
    assert star.star and star.uri is None and star.expires is None and str(star) == "*"


def test_contact_addr_spec_params_are_contact_params() -> None:
    contact = parse_contact("sip:bob@h;expires=30")
    assert contact.uri is not None and contact.uri.params == ()
    assert contact.expires == 30
    assert str(contact) == "<sip:bob@h>;expires=30"


def test_bad_contact() -> None:
    assert bad(parse_contact, "<sip:bob@h>;expires=soon") == "Bad Contact header"
    msg = parse_message(with_header("Contact: <sip:bob@h"))
    assert bad(lambda: msg.contacts) == "Bad Contact header"


# --- Content-Type -------------------------------------------------------------------------------------------


def test_content_type() -> None:
    msg = parse_message(PUBLISH)
    assert msg.content_type == ContentType("application", "pidf+xml")
    assert msg.content_type.mime == "application/pidf+xml"
    ct = parse_content_type('Multipart/Related ; type="application/rlmi+xml";boundary=abc')
    assert ct.mime == "multipart/related"
    assert ct.param("type") == "application/rlmi+xml"
    assert ct.param("boundary") == "abc"
    assert str(ct) == 'Multipart/Related;type="application/rlmi+xml";boundary=abc'
    assert parse_message(SUBSCRIBE).content_type is None


@pytest.mark.parametrize("value", ["", "text", "text/", "/plain", "text/plain;", "text/plain junk"])
def test_bad_content_type(value: str) -> None:
    assert bad(parse_content_type, value) == "Bad Content-Type header"


# --- Route / Record-Route -----------------------------------------------------------------------------------


def test_route_sets() -> None:
    msg = parse_message(
        with_header("Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
                    "Record-Route: <sip:rr@h;lr;ftag=x>")
    )
    assert [str(r.uri) for r in msg.routes] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert msg.routes[0].uri.has_param("lr")
    assert [r.uri.param("ftag") for r in msg.record_routes] == ["x"]
    assert parse_message(SUBSCRIBE).routes == [] and parse_message(SUBSCRIBE).record_routes == []


def test_bad_route() -> None:
    msg = parse_message(with_header("Route: <sip:p1.example.com;lr"))
    assert bad(lambda: msg.routes) == "Bad Route header"


# --- laziness and caching -----------------------------------------------------------------------------------


def test_values_are_cached_and_lists_are_copies() -> None:
    msg = parse_message(PUBLISH)
    assert msg.from_ is msg.from_
    assert msg.via is msg.via
    vias = msg.vias
    vias.clear()
    assert len(msg.vias) == 2


def test_cache_is_dropped_after_an_edit() -> None:
    msg = parse_message(SUBSCRIBE)
    assert msg.event == Event("presence")
    msg.set_header("Event", "dialog;sla")
    assert msg.event == Event("dialog", (), (("sla", None),))
    assert msg.expires == 3600
    msg.set_header("Expires", "0")
    assert msg.expires == 0


def test_garbage_in_unused_header_does_not_stop_parsing() -> None:
    data = (SUBSCRIBE.replace(b"Event: presence", b"Event: ???")
            .replace(b"Contact: <sip:bob@192.0.2.10:5060;transport=udp>;expires=3600", b"Contact: <<<")
            .replace(b"Max-Forwards: 70", b"Max-Forwards: lots"))
    msg = parse_message(data)
    assert msg.call_id == "a84b4c76e66710@pc33.example.com"
    assert msg.cseq.method == "SUBSCRIBE"
    for prop in ("event", "contacts", "max_forwards"):
        with pytest.raises(ParseError):
            getattr(msg, prop)


def test_bad_request_uri_reason() -> None:
    msg = parse_message(SUBSCRIBE.replace(b"SUBSCRIBE sip:alice@example.com", b"SUBSCRIBE sip:alice@", 1))
    assert bad(lambda: msg.uri) == "Bad Request-URI"


# --- the parser's constructors (private, _fast.py) ---------------------------------------------------------


def test_the_parsers_constructors_make_what_the_dataclass_makes() -> None:
    """The parser builds value objects by setting their slots directly; each must hold every field, as the
    dataclass's own __init__ would (a field added to a class and missed here fails at import or here)."""
    from routescript.sip import uri as uri_module
    from routescript.sip import values as values_module

    uri = SipURI("sip", "alice", "pw", "h.example.com", 5070, (("lr", None),), (("subject", "x"),))
    tagged = (("tag", "t1"),)
    branch = (("branch", "z9hG4bK1"),)
    made: list[tuple[Any, Any]] = [
        (uri_module._new_uri(*dataclasses.astuple(uri)), uri),
        (values_module._new_name_addr("Alice", uri, tagged), NameAddr("Alice", uri, tagged)),
        (values_module._new_via("SIP/2.0/UDP", "h", 5060, branch), Via("SIP/2.0/UDP", "h", 5060, branch)),
        (values_module._new_cseq(7, "NOTIFY"), CSeq(7, "NOTIFY")),
        (values_module._new_event("presence", ("winfo",), (("id", "1"),)),
         Event("presence", ("winfo",), (("id", "1"),))),
        (values_module._new_content_type("text", "plain", (("charset", '"utf-8"'),)),
         ContentType("text", "plain", (("charset", '"utf-8"'),))),
    ]
    for fast, usual in made:
        assert type(fast) is type(usual) and fast == usual and hash(fast) == hash(usual)
        assert dataclasses.astuple(fast) == dataclasses.astuple(usual)   # every slot set
        first = dataclasses.fields(fast)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(fast, first, None)


@pytest.mark.parametrize("value", [
    "<sip:a@b>;tag=abc", '"X" <sip:a@b;tag=no>;tag=yes', "sip:a@b;tag=zz;x=1", "<sip:a@b>",
    "<sip:a@b> ; TAG = Q1-2.3", "<sip:a@b>;x=1;tag=t;y", "Bob <sips:bob@[::1]:5061>;tag=7f.e-2",
    '"a;tag=x" <sip:a@b>', "<sip:a@b;tag=inside>",
])
def test_name_addr_tag_agrees_with_the_full_parse(value: str) -> None:
    assert name_addr_tag(value) == (parse_name_addr(value).tag or "")


# --- parameters read once (the lookup form made with the value) ---------------------------------------------


def test_parameter_lookup_is_case_insensitive_first_wins_and_unquoted() -> None:
    via = parse_via('SIP/2.0/UDP h;BRANCH=z9hG4bKa;Branch=z9hG4bKb;RPort;x="q \\"y\\"";Received=10.0.0.1')
    assert (via.branch, via.rport, via.received) == ("z9hG4bKa", True, "10.0.0.1")
    assert via.param("x") == 'q "y"' and via.param("X") == 'q "y"' and via.param("branch") == "z9hG4bKa"
    assert via.has_param("RPORT") and not via.has_param("ttl") and via.param("ttl") is None
    assert str(via) == 'SIP/2.0/UDP h;BRANCH=z9hG4bKa;Branch=z9hG4bKb;RPort;x="q \\"y\\"";Received=10.0.0.1'
    to = parse_name_addr("<sip:a@b>;TAG=t1;tag=t2;Flag", "To")
    assert (to.tag, to.param("flag"), to.has_param("FLAG")) == ("t1", "", True)
    event = parse_event("presence;ID=7;Id=8")
    assert (event.id, event.param("id")) == ("7", "7")
    ctype = parse_content_type('text/plain;Charset="utf-8"')
    assert ctype.param("charset") == "utf-8" and ctype.param("CHARSET") == "utf-8"


def test_derived_fields_follow_every_way_of_making_the_value() -> None:
    via = Via("SIP/2.0/UDP", "h", None, (("branch", "z9hG4bK1"), ("rport", "5062")))
    assert (via.branch, via.rport, via.received) == ("z9hG4bK1", 5062, None)
    stamped = via.with_param("received", "192.0.2.1").with_param("rport", None)
    assert (stamped.branch, stamped.rport, stamped.received) == ("z9hG4bK1", True, "192.0.2.1")
    assert dataclasses.replace(via, params=()).branch is None
    # derived fields are neither compared nor shown: two Vias with the same parameters are equal
    assert via == Via("SIP/2.0/UDP", "h", None, (("branch", "z9hG4bK1"), ("rport", "5062")))
    assert repr(via) == ("Via(protocol='SIP/2.0/UDP', host='h', port=None, "
                         "params=(('branch', 'z9hG4bK1'), ('rport', '5062')))")
    name_addr = NameAddr(None, parse_uri("sip:a@b"))
    assert name_addr.tag is None and name_addr.with_tag("x1").tag == "x1"
    assert Event("presence", (), (("id", "9"),)).id == "9"
    with pytest.raises(ValueError, match="rport"):
        Via("SIP/2.0/UDP", "h", None, (("rport", "none"),))


def test_call_id_read_from_the_parse_and_after_an_edit() -> None:
    msg = parse_message(SUBSCRIBE.replace(b"Call-ID:", b"i:"))
    assert msg.call_id == "a84b4c76e66710@pc33.example.com"
    msg.set_header("Call-ID", "other@h")
    assert msg.call_id == "other@h"
    msg.remove_header("i")
    assert bad(lambda: msg.call_id) == "Missing Call-ID header"
    msg.add_header("i", "third@h")
    assert msg.call_id == "third@h"


def test_uri_params_keep_empty_values_apart_from_flags() -> None:
    uri = parse_uri("sip:a@h;lr;x=;transport=UDP;maddr=[::1]")
    assert uri.params == (("lr", None), ("x", ""), ("transport", "UDP"), ("maddr", "[::1]"))
    assert str(uri) == "sip:a@h;lr;x=;transport=UDP;maddr=[::1]" and uri.transport == "udp"


def test_header_lookups_by_any_spelling_and_by_names_that_are_no_token() -> None:
    msg = parse_message(PUBLISH)
    vias = msg.header_all("Via")
    assert len(vias) == 2 and msg.header_all("v") == vias == msg.header_all("VIA")
    assert msg.header("v") == vias[0] and msg.header_values("via") == vias
    assert msg.has_header("i") and msg.has_header("CALL-ID") and not msg.has_header("X-Absent")
    for name in ("Bad Name", "", "Via:"):   # not a token: matches no line, never raises
        assert msg.header(name) is None and msg.header_all(name) == [] and msg.header_values(name) == []
        assert not msg.has_header(name)
