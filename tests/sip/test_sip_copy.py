"""SIPRequest.copy(): the copy shares the original's header lines, index and parsed values until one of
the two is edited; an edit of either never shows in the other (message.py's copy-on-write)."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from routescript.sip import SIPRequest, parse_message
from routescript.sip.assembled import assemble_request

INVITE = (b"INVITE sip:bob@127.0.0.1:6001 SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-c1\r\n"
          b"Route: <sip:127.0.0.1:5060;lr>\r\nRoute: <sip:10.0.0.1;lr>\r\n"
          b"Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=c1\r\nTo: <sip:bob@127.0.0.1:6001>\r\n"
          b"Call-ID: call-1@bench\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:6000>\r\n"
          b"Content-Length: 0\r\n\r\n")

Edit = Callable[[SIPRequest], None]

# Every method that edits the head, each a different way (in place, insert, append, remove).
EDITS: dict[str, Edit] = {
    "push_via": lambda m: m.add_header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-p", first=True),
    "push_rr": lambda m: m.add_header("Record-Route", "<sip:127.0.0.1:5060;lr>", first=True),
    "append": lambda m: m.add_header("X-Tag", "x"),
    "insert": lambda m: m.insert_header(2, "X-Insert", "i"),
    "remove": lambda m: m.remove_header("Contact"),
    "set_one": lambda m: m.set_header("Max-Forwards", "69"),
    "set_new": lambda m: m.set_header("Subject", "hi"),
    "replace_routes": lambda m: m.replace_header("Route", ["<sip:10.0.0.1;lr>"]),
    "set_top_via": lambda m: m.set_top_via("SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-c1;received=1.2.3.4"),
    "remove_top_via": lambda m: m.remove_top_via(),
    "body": lambda m: m.set_body(b"v=0\r\n", "application/sdp"),
    "ruri": lambda m: setattr(m, "ruri", "sip:carol@127.0.0.1"),
}


def _edited(names: list[str]) -> bytes:
    """The bytes of INVITE parsed afresh (nothing shared) with `names` applied."""
    msg = parse_message(INVITE)
    assert isinstance(msg, SIPRequest)
    for name in names:
        EDITS[name](msg)
    return msg.to_bytes()


def _request(data: bytes = INVITE) -> SIPRequest:
    msg = parse_message(data)
    assert isinstance(msg, SIPRequest)
    return msg


def test_an_edit_of_the_copy_leaves_the_original_as_it_was() -> None:
    for name, edit in EDITS.items():
        original = _request()
        copy = original.copy()
        edit(copy)
        assert original.to_bytes() == INVITE, name
        assert copy.to_bytes() == _edited([name]), name


def test_an_edit_of_the_original_leaves_the_copy_as_it_was() -> None:
    for name, edit in EDITS.items():
        original = _request()
        copy = original.copy()
        edit(original)
        assert copy.to_bytes() == INVITE, name
        assert [tuple(h) for h in copy.headers] == [tuple(h) for h in _request().headers], name
        assert original.to_bytes() == _edited([name]), name


def test_the_copy_keeps_the_values_parsed_so_far_and_drops_only_those_it_edits() -> None:
    original = _request()
    via, to, uri = original.via, original.to, original.uri
    copy = original.copy()
    assert copy.via is via and copy.to is to and copy.uri is uri   # not parsed again
    copy.add_header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-p", first=True)
    assert copy.via.branch == "z9hG4bK-p"
    assert copy.to is to
    assert original.via is via   # the original's cache is its own
    copy.ruri = "sip:carol@127.0.0.1"
    assert copy.uri.user == "carol" and original.uri is uri


def test_copies_of_copies_are_independent() -> None:
    original = _request()
    first = original.copy()
    second = first.copy()
    first.set_header("Max-Forwards", "69")
    second.add_header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-p", first=True)
    third = second.copy()
    third.remove_top_via()
    assert original.to_bytes() == INVITE
    assert first.to_bytes() == _edited(["set_one"])
    assert second.to_bytes() == _edited(["push_via"])
    assert third.to_bytes() == _edited(["push_via", "remove_top_via"])
    assert third.header("via") == original.header("via")


def test_a_copy_of_an_assembled_request_is_independent_of_it() -> None:
    head = [(h.name, h.value) for h in _request().headers]
    assembled = assemble_request("INVITE", "sip:bob@127.0.0.1:6001", head, b"")
    copy = assembled.copy()
    assembled.add_header("X-Late", "1")
    assert copy.header("x-late") is None
    assert copy.to_bytes() == INVITE
    copy.set_header("Max-Forwards", "69")
    assert assembled.max_forwards == 70


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(sorted(EDITS))), max_size=8))
def test_any_sequence_of_edits_on_either_side_matches_a_message_edited_alone(
        steps: list[tuple[bool, str]]) -> None:
    original = _request()
    copy = original.copy()
    done: dict[bool, list[str]] = {True: [], False: []}   # True: the copy's edits
    for on_copy, name in steps:
        target = copy if on_copy else original
        try:
            EDITS[name](target)
        except ValueError:   # remove_top_via with no Via left: refused, nothing changed
            assert name in ("remove_top_via", "set_top_via")
            continue
        done[on_copy].append(name)
        if on_copy and name in ("append", "push_via", "remove"):
            copy = copy.copy()   # a copy taken midway (after an edit that moved lines): shares them again
    assert original.to_bytes() == _edited(done[False])
    assert copy.to_bytes() == _edited(done[True])
    for msg in (original, copy):   # every lookup finds what a parse of the bytes finds
        if not msg.has_header("Via"):   # every Via taken off: the bytes would not parse
            continue
        reparsed = parse_message(msg.to_bytes())
        for name in ("Via", "v", "Route", "Record-Route", "Max-Forwards", "X-Tag", "X-Insert", "Contact",
                     "Content-Type", "Subject", "CSeq"):
            assert msg.header_all(name) == reparsed.header_all(name), name
            assert msg.header(name) == reparsed.header(name), name
