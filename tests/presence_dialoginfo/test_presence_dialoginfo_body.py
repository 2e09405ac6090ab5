"""presence_dialoginfo: the dialog-info body check, aggregation, per-watcher version, empty document."""

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from routescript.modules.presence.events import BodyError
from routescript.modules.presence.notify import presentity_body, watcher_body
from routescript.modules.presence.subscription import SubState
from routescript.modules.presence_dialoginfo import (NS_DIALOG_INFO, aggregate_dialog_info, check_dialog_info,
                                                     dialog_event, empty_dialog_info, set_version)

NS = {"d": NS_DIALOG_INFO}
PRES = "sip:gina@127.0.0.1"

# Capture 18a's PUBLISH body.
CAPTURE_18A = b"""<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" entity="sip:gina@127.0.0.1">
  <dialog id="d1" call-id="c1" local-tag="lt1" remote-tag="rt1" direction="initiator">
    <state>confirmed</state>
  </dialog>
</dialog-info>"""


def doc(*dialogs, entity=PRES, version="1", prefix=""):
    p = f"{prefix}:" if prefix else ""
    ns = f'xmlns{":" + prefix if prefix else ""}="{NS_DIALOG_INFO}"'
    inner = "".join(f'<{p}dialog id="{i}"><{p}state>{s}</{p}state></{p}dialog>' for i, s in dialogs)
    return (f'<?xml version="1.0"?><{p}dialog-info {ns} version="{version}" state="full" entity="{entity}">'
            f"{inner}</{p}dialog-info>").encode()


def parse(body):
    return etree.fromstring(body)


def dialogs_of(body):
    return [(d.get("id"), d.findtext("d:state", namespaces=NS)) for d in parse(body).findall("d:dialog", NS)]


# --- body check -----------------------------------------------------------------------------------------

def test_capture_body_accepted():
    check_dialog_info(CAPTURE_18A)
    check_dialog_info(doc(("a", "early"), prefix="di"))
    check_dialog_info(b"")  # a refresh: the presence core's call


@pytest.mark.parametrize("body, status", [
    (b"<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info'>", 415),          # not well-formed
    (b"not xml at all", 415),
    (b'<!DOCTYPE x [<!ENTITY a "b">]><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"/>', 415),
    (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"/>', 400),     # wrong root
    (b"<dialog-info/>", 400),                                                       # no namespace
    ((b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"><dialog><state>early</state></dialog>'
      b"</dialog-info>"), 400),                                                     # dialog without id
    (b"<a>" * 40 + b"</a>" * 40, 400),                                              # too deep
])
def test_refused_bodies(body, status):
    with pytest.raises(BodyError) as info:
        check_dialog_info(body)
    assert info.value.status == status


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_body_error(data):
    try:
        check_dialog_info(data)
    except BodyError as exc:
        assert exc.status in (400, 413, 415)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet='<>/="\' adilogenx:-d1', max_size=200))
def test_xmlish_text_raises_only_body_error(text):
    try:
        check_dialog_info(text.encode())
    except BodyError:
        pass


# --- aggregation -----------------------------------------------------------------------------------------

def test_single_publication_like_capture_18b():
    body = aggregate_dialog_info(PRES, [CAPTURE_18A])
    root = parse(body)
    assert root.tag == f"{{{NS_DIALOG_INFO}}}dialog-info"
    assert (root.get("version"), root.get("state"), root.get("entity")) == ("0", "full", PRES)
    d = root.find("d:dialog", NS)
    assert dict(d.attrib) == {"id": "d1", "call-id": "c1", "local-tag": "lt1", "remote-tag": "rt1",
                              "direction": "initiator"}
    assert body.startswith(b'<?xml version="1.0"?>\n')


def test_several_publications_aggregated_in_received_order():
    body = aggregate_dialog_info("sip:bob@example.com", [doc(("a", "early"), entity="sip:x@y"),
                                                         doc(("b", "confirmed"), ("c", "terminated"))])
    assert dialogs_of(body) == [("a", "early"), ("b", "confirmed"), ("c", "terminated")]
    assert parse(body).get("entity") == "sip:bob@example.com"
    assert b"xmlns:" not in body  # one default namespace declaration, none repeated on the children


def test_prefixed_publication_comes_out_in_the_default_namespace():
    body = aggregate_dialog_info(PRES, [doc(("a", "early"), prefix="di"), doc(("b", "trying"))])
    assert dialogs_of(body) == [("a", "early"), ("b", "trying")]


def test_same_dialog_id_newest_wins():
    body = aggregate_dialog_info(PRES, [doc(("a", "early"), ("b", "trying")), doc(("a", "confirmed"))])
    assert dialogs_of(body) == [("b", "trying"), ("a", "confirmed")]


def test_removed_publication_is_left_out_and_nothing_left_is_empty():
    pubs = [doc(("a", "early")), doc(("b", "confirmed"))]
    assert dialogs_of(aggregate_dialog_info(PRES, pubs, off_index=0)) == [("b", "confirmed")]
    assert aggregate_dialog_info(PRES, [pubs[0]], off_index=0) == empty_dialog_info(PRES)


def test_unparseable_stored_body_is_skipped():
    assert dialogs_of(aggregate_dialog_info(PRES, [b"<broken", doc(("a", "early"))])) == [("a", "early")]
    assert aggregate_dialog_info(PRES, [b"<broken"]) == empty_dialog_info(PRES)


@pytest.mark.parametrize("states, winner", [
    (["confirmed", "early", "terminated"], "early"),
    (["terminated", "trying"], "trying"),
    (["proceeding", "confirmed"], "confirmed"),
    (["confirmed", "confirmed"], "confirmed"),
    (["bogus", "terminated"], "bogus"),  # unknown state counts as terminated; the first one wins a tie
])
def test_force_single_dialog_keeps_the_most_interesting(states, winner):
    pubs = [doc((f"id{i}", s)) for i, s in enumerate(states)]
    body = aggregate_dialog_info(PRES, pubs, force_single_dialog=True)
    got = dialogs_of(body)
    assert len(got) == 1 and got[0][1] == winner
    assert got[0][0] == f"id{states.index(winner)}"


# --- empty document, version ---------------------------------------------------------------------------

def test_empty_document():
    assert empty_dialog_info(PRES) == (
        b'<?xml version="1.0"?>\n<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" '
        b'state="full" entity="sip:gina@127.0.0.1"/>')
    assert parse(empty_dialog_info('sip:a"b@h&x')).get("entity") == 'sip:a"b@h&x'  # escaped, well-formed


def test_set_version_rewrites_the_root_only():
    body = aggregate_dialog_info(PRES, [doc(("a", "early"))])
    assert parse(set_version(body, 7)).get("version") == "7"
    assert set_version(body, 0) == body
    assert parse(set_version(empty_dialog_info(PRES), 12)).get("version") == "12"
    # no version attribute at all: one is added
    bare = (b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" state="full">'
            b'<dialog id="v"/></dialog-info>')
    assert parse(set_version(bare, 3)).get("version") == "3"
    empty = b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"/>'
    assert parse(set_version(empty, 4)).get("version") == "4"
    # the XML declaration's version="1.0" and a dialog's attributes are untouched
    assert set_version(body, 5).startswith(b'<?xml version="1.0"?>')
    assert set_version(b"<presence/>", 3) == b"<presence/>"
    with pytest.raises(ValueError):
        set_version(body, -1)


def sub(version):
    return SimpleNamespace(version=version, status=SubState.ACTIVE, pres_uri=PRES)


def test_version_per_watcher_through_the_core_hooks():
    event = dialog_event()
    shared = presentity_body(event, PRES, [SimpleNamespace(body=CAPTURE_18A, received_time=1.0)])
    first = watcher_body(event, sub(0), shared)
    later = watcher_body(event, sub(3), shared)
    assert parse(first).get("version") == "0" and parse(later).get("version") == "3"
    assert dialogs_of(first) == dialogs_of(later) == [("d1", "confirmed")]


def test_nothing_published_gives_the_empty_document():
    event = dialog_event()
    assert event.mandatory_body
    shared = presentity_body(event, PRES, [])
    assert shared == empty_dialog_info(PRES)
    assert parse(watcher_body(event, sub(2), shared)).get("version") == "2"


def test_dialog_event_as_opensips_registers_it():
    event = dialog_event()
    assert (event.name, event.content_type, event.default_expires, event.code) == (
        "dialog", "application/dialog-info+xml", 3600, 5)
    assert not event.req_auth
    with pytest.raises(BodyError):
        event.evs_publ_handl(b"<nope")
    single = dialog_event(force_single_dialog=True)
    body = single.agg_nbody(PRES, [doc(("a", "confirmed"), ("b", "early"))], None)
    assert dialogs_of(body) == [("b", "early")]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=2**31))
def test_set_version_never_fails_on_any_body(data, version):
    out = set_version(data, version)
    assert isinstance(out, bytes)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=120), st.sampled_from([CAPTURE_18A, doc(("z", "early"))])),
                max_size=4))
def test_aggregation_of_any_stored_bodies_gives_a_dialog_info_document(bodies):
    root = parse(aggregate_dialog_info(PRES, bodies))
    assert root.tag == f"{{{NS_DIALOG_INFO}}}dialog-info" and root.get("entity") == PRES
