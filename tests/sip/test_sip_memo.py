"""The bounded memos of parsed values (routescript/sip/_memo.py): a value seen before is the object parsed
then, bad input is refused every time, a From/To tag rule is not skipped through another header's memo,
and no memo grows past MEMO_SIZE."""

from __future__ import annotations

import pytest

from routescript.sip import ParseError, parse_cseq, parse_name_addr, parse_uri, parse_via
from routescript.sip import uri as uri_module
from routescript.sip import values as values_module
from routescript.sip._memo import MEMO_SIZE


def test_a_value_seen_before_is_the_value_parsed_then() -> None:
    assert parse_uri("sip:bob@127.0.0.1:6001") is parse_uri("sip:bob@127.0.0.1:6001")
    to = "<sip:bob@127.0.0.1:6001>;tag=callee"
    assert parse_name_addr(to, "To") is parse_name_addr(to, "To")
    via = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-memo"
    assert parse_via(via) is parse_via(via)
    assert parse_via(via).branch == "z9hG4bK-memo"
    assert parse_cseq("1 INVITE") is parse_cseq("1 INVITE")


def test_bad_input_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ParseError):
            parse_uri("sip:bob@127.0.0.1:99999")
        with pytest.raises(ParseError, match="Bad Via header"):
            parse_via("SIP/2.0/UDP 127.0.0.1;rport=x")
        with pytest.raises(ParseError, match="Bad To header"):
            parse_name_addr("<sip:bob@127.0.0.1", "To")
        with pytest.raises(ParseError, match="Bad CSeq header"):
            parse_cseq("2147483648 INVITE")


def test_a_tag_without_a_value_is_refused_in_to_even_after_a_route_held_it() -> None:
    value = "<sip:bob@127.0.0.1>;tag"
    assert parse_name_addr(value, "Route").param("tag") == ""
    with pytest.raises(ParseError, match="Bad To header"):
        parse_name_addr(value, "To")
    assert parse_name_addr(value, "Contact").uri.user == "bob"


def test_no_memo_grows_past_its_bound() -> None:
    for n in range(MEMO_SIZE + 10):
        parse_uri(f"sip:u{n}@example.com")
        parse_via(f"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{n}")
        parse_name_addr(f"<sip:u{n}@example.com>;tag={n}", "From")
        parse_name_addr(f"<sip:u{n}@example.com;lr>", "Route")
        parse_cseq(f"{n} INVITE")
    for memo in (uri_module._URI_MEMO, values_module._VIA_MEMO, values_module._TAGGED_MEMO,
                 values_module._NAME_ADDR_MEMO, values_module._CSEQ_MEMO):
        assert 0 < len(memo) <= MEMO_SIZE
    assert parse_uri(f"sip:u{MEMO_SIZE + 9}@example.com").user == f"u{MEMO_SIZE + 9}"
