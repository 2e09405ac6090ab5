"""Watcher information documents (RFC 3858): building, OpenSIPS's shape, parsing back."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from routescript.modules.presence_xml.winfo import WatcherInfo, WinfoDocument, parse_winfo, winfo_document
from routescript.modules.presence_xml.xml_util import BodyError

WINFO = "urn:ietf:params:xml:ns:watcherinfo"
ALICE = "sip:alice@127.0.0.1"

# capture 22: the NOTIFY body OpenSIPS 3.4 sent for a presence.winfo SUBSCRIBE, byte for byte
CAPTURE_22_BODY = (
    b'<?xml version="1.0"?>\n'
    b'<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="0" state="full">'
    b'<watcher-list resource="sip:alice@127.0.0.1" package="presence">'
    b'<watcher id="sub-ztu0346x4s" event="subscribe" status="active">sip:bob@127.0.0.1</watcher>'
    b'<watcher id="sub-eut1tpg0xq" event="subscribe" status="active">sip:bob@127.0.0.1</watcher>'
    b"</watcher-list></watcherinfo>"
)

BOB_1 = WatcherInfo("sub-ztu0346x4s", "sip:bob@127.0.0.1", "active", "subscribe")
BOB_2 = WatcherInfo("sub-eut1tpg0xq", "sip:bob@127.0.0.1", "active", "subscribe")


def test_full_document_is_byte_for_byte_opensips() -> None:
    assert winfo_document(ALICE, [BOB_1, BOB_2], 0, "full") == CAPTURE_22_BODY


def test_parse_capture() -> None:
    version, state, resource, watchers = parse_winfo(CAPTURE_22_BODY)
    assert (version, state, resource) == (0, "full", ALICE)
    assert watchers == [BOB_1, BOB_2]


def test_partial_document_with_one_new_watcher() -> None:
    dave = WatcherInfo("sub-dave", "sip:dave@127.0.0.1", "pending", "subscribe")
    body = winfo_document(ALICE, [dave], 1, "partial")
    root = etree.fromstring(body)
    assert root.tag == f"{{{WINFO}}}watcherinfo"
    assert (root.get("version"), root.get("state")) == ("1", "partial")
    assert parse_winfo(body) == WinfoDocument(1, "partial", ALICE, [dave])


def test_empty_full_list() -> None:
    body = winfo_document(ALICE, [], 3, "full")
    assert parse_winfo(body) == (3, "full", ALICE, [])
    assert b'<watcher-list resource="sip:alice@127.0.0.1" package="presence"/>' in body


def test_optional_attributes_round_trip() -> None:
    watcher = WatcherInfo(
        "sub-x",
        "sip:eve@example.com",
        "terminated",
        "rejected",
        display_name='Eve "the watcher" <&>',
        duration=120,
        expiration=0,
    )
    body = winfo_document(ALICE, [watcher], 7, "partial", package="dialog")
    element = etree.fromstring(body).find(f"{{{WINFO}}}watcher-list/{{{WINFO}}}watcher")
    assert element is not None
    assert element.get("display-name") == 'Eve "the watcher" <&>'
    assert element.get("duration-subscribed") == "120"
    assert element.get("expiration") == "0"
    assert etree.fromstring(body).find(f"{{{WINFO}}}watcher-list").get("package") == "dialog"
    assert parse_winfo(body).watchers == [watcher]


def test_watcher_info_is_frozen_and_slotted() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        BOB_1.status = "pending"  # type: ignore[misc]
    assert not hasattr(BOB_1, "__dict__")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status": "approved"},
        {"event": "active"},
        {"id": ""},
        {"duration": -1},
        {"expiration": 2**64},
    ],
)
def test_watcher_info_rejects_bad_values(kwargs: dict[str, object]) -> None:
    fields = {"id": "c", "uri": "sip:a@b", "status": "active", "event": "subscribe", **kwargs}
    with pytest.raises(ValueError):
        WatcherInfo(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("version", "state"), [(-1, "full"), (True, "full"), (0, "fuller"), ("0", "full")])
def test_winfo_document_rejects_bad_arguments(version: object, state: str) -> None:
    with pytest.raises(ValueError):
        winfo_document(ALICE, [], version, state)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"<watcherinfo", 415),
        (b'<watcherinfo version="0" state="full"/>', 400),  # no namespace
        (b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/>', 400),
        (b'<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="x" state="full"/>', 400),
        (b'<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="-1" state="full"/>', 400),
        (b'<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" state="full"/>', 400),
        (b'<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="0" state="half"/>', 400),
        (
            (
                b'<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="0" state="full">'
                b'<watcher-list package="presence"/></watcherinfo>'
            ),
            400,
        ),
        (
            (
                b'<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="0" state="full">'
                b'<watcher-list resource="sip:a@b" package="presence"><watcher id="1" status="gone" '
                b'event="subscribe">sip:x@y</watcher></watcher-list></watcherinfo>'
            ),
            400,
        ),
        (
            (
                b'<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="0" state="full">'
                b'<watcher-list resource="sip:a@b" package="presence"><watcher id="1" status="active" '
                b'event="subscribe" expiration="soon">sip:x@y</watcher></watcher-list></watcherinfo>'
            ),
            400,
        ),
    ],
)
def test_parse_winfo_errors(body: bytes, status: int) -> None:
    with pytest.raises(BodyError) as info:
        parse_winfo(body)
    assert info.value.status == status


def test_parse_winfo_without_watcher_list() -> None:
    body = b'<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="5" state="full"/>'
    assert parse_winfo(body) == (5, "full", None, [])


_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x2FFF, blacklist_categories=("Cs",)),
    min_size=1,
    max_size=20,
)
_WATCHERS = st.builds(
    WatcherInfo,
    id=_TEXT,
    uri=_TEXT.map(lambda s: "sip:" + s),
    status=st.sampled_from(["active", "pending", "waiting", "terminated"]),
    event=st.sampled_from(
        ["subscribe", "approved", "deactivated", "probation", "rejected", "timeout", "giveup", "noresource"]
    ),
    display_name=st.none() | _TEXT,
    duration=st.none() | st.integers(0, 2**64 - 1),
    expiration=st.none() | st.integers(0, 2**64 - 1),
)


@settings(max_examples=100, deadline=None)
@given(
    watchers=st.lists(_WATCHERS, max_size=8),
    version=st.integers(0, 10**9),
    state=st.sampled_from(["full", "partial"]),
    resource=_TEXT,
)
def test_round_trip(watchers: list[WatcherInfo], version: int, state: str, resource: str) -> None:
    body = winfo_document("sip:" + resource, watchers, version, state)  # type: ignore[arg-type]
    assert parse_winfo(body) == (version, state, "sip:" + resource, watchers)


def test_stored_values_xml_cannot_carry_are_escaped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    # A subscription row written by something else (an old database) may hold a control character: the
    # document is still built - the watcher kept, its id %-escaped - and a warning names the presentity.
    bad = WatcherInfo("call\x00id\x01", "sip:b\x1bob@127.0.0.1", "active", "subscribe",
                      display_name="B\ufffe")
    body = winfo_document("sip:al\x02ice@127.0.0.1", [BOB_1, bad], 3, "full")
    version, state, resource, watchers = parse_winfo(body)
    assert (version, state, resource) == (3, "full", "sip:al%02ice@127.0.0.1")
    assert [(w.id, w.uri, w.display_name) for w in watchers] == [
        (BOB_1.id, BOB_1.uri, None), ("call%00id%01", "sip:b%1Bob@127.0.0.1", "B%EF%BF%BE")]
    assert "watcher id of 'sip:al\\x02ice@127.0.0.1'" in caplog.text
