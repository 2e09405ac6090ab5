"""aggregate_pidf, offline_pidf, closed_tuple_pidf and sphere_of."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from routescript.modules.presence_xml.pidf import (
    OFFLINE_TUPLE_ID,
    aggregate_pidf,
    check_pidf,
    closed_tuple_pidf,
    offline_pidf,
    sphere_of,
)
from routescript.modules.presence_xml.xml_util import BodyError

PIDF = "urn:ietf:params:xml:ns:pidf"
DM = "urn:ietf:params:xml:ns:pidf:data-model"
RPID = "urn:ietf:params:xml:ns:pidf:rpid"
CIPID = "urn:ietf:params:xml:ns:pidf:cipid"
NS = {"p": PIDF, "dm": DM, "rpid": RPID, "c": CIPID}

CAROL = "sip:carol@127.0.0.1"

# capture 04a: carol's PUBLISH body, byte for byte
CAPTURE_04A_BODY = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:carol@127.0.0.1">
  <tuple id="t1">
    <status><basic>open</basic></status>
    <contact>sip:carol@127.0.0.1</contact>
    <note>Online</note>
  </tuple>
</presence>
"""

# capture 10b: the first NOTIFY body after carol's PUBLISH Expires: 0
CAPTURE_10B_BODY = (
    b'<?xml version="1.0"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:carol@127.0.0.1">'
    b'<tuple xmlns="urn:ietf:params:xml:ns:pidf" id="t1"><status xmlns="urn:ietf:params:xml:ns:pidf">'
    b"<basic>closed</basic></status></tuple></presence>"
)

# Three devices of carol, oldest first. The desk phone uses the dm/rpid prefixes, the softphone other
# prefixes for the same namespaces, the mobile a cipid extension and a person id clashing with the desk's.
DESK_PHONE = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
          xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:carol@desk.example.com">
  <tuple id="desk">
    <status><basic>open</basic></status>
    <dm:deviceID>urn:device:desk</dm:deviceID>
    <contact priority="0.8">sip:carol@10.0.0.5</contact>
    <note xml:lang="en">At my desk</note>
  </tuple>
  <note>Office hours</note>
  <dm:person id="carol">
    <rpid:activities><rpid:on-the-phone/></rpid:activities>
    <rpid:sphere>work</rpid:sphere>
    <dm:note>Call me</dm:note>
  </dm:person>
  <dm:device id="dev-desk"><dm:deviceID>urn:device:desk</dm:deviceID></dm:device>
</presence>
"""

SOFTPHONE = b"""<?xml version="1.0" encoding="UTF-8"?>
<pidf:presence xmlns:pidf="urn:ietf:params:xml:ns:pidf" xmlns:d="urn:ietf:params:xml:ns:pidf:data-model"
               xmlns:r="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:carol@127.0.0.1">
  <pidf:tuple id="soft">
    <pidf:status><pidf:basic>closed</pidf:basic></pidf:status>
    <pidf:contact>sip:carol@10.0.0.9:5062</pidf:contact>
  </pidf:tuple>
  <pidf:note>Office hours</pidf:note>
  <d:person id="carol-soft"><r:activities><r:away/></r:activities></d:person>
  <d:device id="dev-soft"><d:deviceID>urn:device:soft</d:deviceID></d:device>
</pidf:presence>
"""

MOBILE = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
          xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" xmlns:c="urn:ietf:params:xml:ns:pidf:cipid"
          entity="sip:carol@127.0.0.1">
  <tuple id="mobile"><status><basic>open</basic></status><contact>sip:carol@192.0.2.7</contact>
    <note>Unterwegs – zurück um 5</note></tuple>
  <dm:person id="carol"><rpid:activities><rpid:meeting/></rpid:activities></dm:person>
  <c:homepage>https://carol.example.com/</c:homepage>
</presence>
""".encode()  # noqa: RUF001 - a non-ASCII note (en dash, umlaut) on purpose


def parse(body: bytes) -> etree._Element:
    assert body.startswith(b'<?xml version="1.0"?>\n')
    return etree.fromstring(body)


def ids(root: etree._Element, path: str) -> list[str]:
    return [element.get("id") for element in root.xpath(path, namespaces=NS)]


def test_inputs_are_valid_pidf() -> None:
    for body in (CAPTURE_04A_BODY, DESK_PHONE, SOFTPHONE, MOBILE):
        check_pidf(body)


# --- one publication ------------------------------------------------------------------------------------


def test_single_body_passes_through_except_entity() -> None:
    out = aggregate_pidf(CAROL, [DESK_PHONE])
    root = parse(out)
    assert root.get("entity") == CAROL
    original = etree.fromstring(DESK_PHONE)
    original.set("entity", CAROL)
    assert etree.tostring(root, method="c14n") == etree.tostring(original, method="c14n")


def test_single_capture_body_matches_opensips_notify() -> None:
    root = parse(aggregate_pidf(CAROL, [CAPTURE_04A_BODY]))
    assert root.tag == f"{{{PIDF}}}presence"
    assert root.get("entity") == CAROL
    assert ids(root, "p:tuple") == ["t1"]
    assert root.xpath("string(p:tuple/p:status/p:basic)", namespaces=NS) == "open"
    assert root.xpath("string(p:tuple/p:contact)", namespaces=NS) == CAROL
    assert root.xpath("string(p:tuple/p:note)", namespaces=NS) == "Online"


def test_entity_is_always_the_presentity_uri() -> None:
    root = parse(aggregate_pidf("sip:carol@example.org", [CAPTURE_04A_BODY]))
    assert root.get("entity") == "sip:carol@example.org"


# --- several publications -------------------------------------------------------------------------------


def test_two_devices_newest_first_with_persons_and_devices() -> None:
    out = aggregate_pidf(CAROL, [DESK_PHONE, SOFTPHONE])
    root = parse(out)
    assert root.tag == f"{{{PIDF}}}presence"
    assert root.get("entity") == CAROL
    assert ids(root, "p:tuple") == ["soft", "desk"]  # softphone published last
    assert ids(root, "dm:person") == ["carol-soft", "carol"]
    assert ids(root, "dm:device") == ["dev-soft", "dev-desk"]
    # child order: tuples, notes, persons, devices (PIDF schema: tuple*, note*, ##other*)
    order = [etree.QName(child).localname for child in root]
    assert order == ["tuple", "tuple", "note", "person", "person", "device", "device"]
    # identical top-level notes of both devices appear once
    assert root.xpath("p:note/text()", namespaces=NS) == ["Office hours"]
    # contents kept: rpid activities, tuple notes with xml:lang, contact priority
    assert root.xpath("boolean(dm:person[@id='carol']/rpid:activities/rpid:on-the-phone)", namespaces=NS)
    assert root.xpath("boolean(dm:person[@id='carol-soft']/rpid:activities/rpid:away)", namespaces=NS)
    note = root.xpath("p:tuple[@id='desk']/p:note", namespaces=NS)[0]
    assert note.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    assert root.xpath("string(p:tuple[@id='desk']/p:contact/@priority)", namespaces=NS) == "0.8"
    assert root.xpath("string(p:tuple[@id='soft']/p:status/p:basic)", namespaces=NS) == "closed"


def test_namespaces_declared_once_on_the_root() -> None:
    out = aggregate_pidf(CAROL, [DESK_PHONE, SOFTPHONE])
    root = parse(out)
    assert root.nsmap[None] == PIDF
    assert set(root.nsmap.values()) >= {PIDF, DM, RPID}
    # the softphone's d:/r: prefixes were folded onto the root's: one declaration per namespace
    text = out.decode()
    assert text.count(f'"{DM}"') == 1
    assert text.count(f'"{RPID}"') == 1
    assert text.count(f'"{PIDF}"') == 1
    for element in root.iter():
        assert element.nsmap == root.nsmap


def test_three_devices_duplicate_ids_newest_wins() -> None:
    out = aggregate_pidf(CAROL, [DESK_PHONE, SOFTPHONE, MOBILE])
    root = parse(out)
    assert ids(root, "p:tuple") == ["mobile", "soft", "desk"]
    # person id "carol" is used by the desk phone and the (newer) mobile: the mobile's is kept
    persons = root.xpath("dm:person", namespaces=NS)
    assert [p.get("id") for p in persons] == ["carol", "carol-soft"]
    assert persons[0].xpath("boolean(rpid:activities/rpid:meeting)", namespaces=NS)
    assert not root.xpath("//rpid:on-the-phone", namespaces=NS)
    # xs:ID uniqueness over the whole document
    all_ids = root.xpath("//@id")
    assert len(all_ids) == len(set(all_ids))
    # other extension elements (cipid) are carried, after devices
    assert root.xpath("string(c:homepage)", namespaces=NS) == "https://carol.example.com/"
    assert etree.QName(root[-1]).localname == "homepage"
    # non-ASCII text survives, output is UTF-8
    assert "zurück" in root.xpath("string(p:tuple[@id='mobile']/p:note)", namespaces=NS)
    assert "zurück".encode() in out


def test_same_tuple_id_on_two_devices_keeps_the_newest() -> None:
    older = CAPTURE_04A_BODY
    newer = CAPTURE_04A_BODY.replace(b"open", b"closed").replace(b"Online", b"Away")
    root = parse(aggregate_pidf(CAROL, [older, newer]))
    assert ids(root, "p:tuple") == ["t1"]
    assert root.xpath("string(p:tuple/p:note)", namespaces=NS) == "Away"


def test_tuple_id_clashing_with_person_id_is_dropped() -> None:
    older = b'<presence xmlns="urn:ietf:params:xml:ns:pidf"><tuple id="x"><status/></tuple></presence>'
    newer = (
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model">'
        b'<tuple id="y"><status/></tuple><dm:person id="x"/></presence>'
    )
    root = parse(aggregate_pidf(CAROL, [older, newer]))
    assert ids(root, "p:tuple") == ["y"]
    assert ids(root, "dm:person") == ["x"]


def test_prefix_bound_to_different_uris_keeps_each_namespace() -> None:
    first = (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:x="urn:one">'
             b'<tuple id="a"><status/></tuple><x:e>1</x:e></presence>')
    second = (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:x="urn:two">'
              b'<tuple id="b"><status/></tuple><x:e>2</x:e></presence>')
    root = parse(aggregate_pidf(CAROL, [first, second]))
    extensions = {etree.QName(e).namespace: e.text for e in root if etree.QName(e).localname == "e"}
    assert extensions == {"urn:one": "1", "urn:two": "2"}


def test_default_namespace_extension_children_keep_their_namespace() -> None:
    first = (b'<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" xmlns="urn:ext">'
             b'<p:tuple id="a"><p:status/></p:tuple><thing/></p:presence>')
    second = CAPTURE_04A_BODY
    root = parse(aggregate_pidf(CAROL, [first, second]))
    assert ids(root, "p:tuple") == ["t1", "a"]
    assert root.xpath("count(*[local-name()='thing' and namespace-uri()='urn:ext'])") == 1


def test_latin1_publication_is_reencoded_as_utf8() -> None:
    latin = (
        '<?xml version="1.0" encoding="ISO-8859-1"?>'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf">'
        '<tuple id="l"><status/><note>Café</note></tuple></presence>'
    ).encode("latin-1")
    out = aggregate_pidf(CAROL, [latin, CAPTURE_04A_BODY])
    assert "Café".encode() in out
    assert parse(out).xpath("string(p:tuple[@id='l']/p:note)", namespaces=NS) == "Café"
    single = aggregate_pidf(CAROL, [latin])
    assert "Café".encode() in single and b"ISO-8859-1" not in single


def test_unusable_stored_body_is_left_out_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    bad = b"<presence><oops"
    with caplog.at_level(logging.WARNING):
        root = parse(aggregate_pidf(CAROL, [DESK_PHONE, bad, SOFTPHONE]))
    assert ids(root, "p:tuple") == ["soft", "desk"]
    assert CAROL in caplog.text


def test_no_usable_body_gives_presence_without_tuples() -> None:
    root = parse(aggregate_pidf(CAROL, [b"junk", b'<x xmlns="urn:x"/>']))
    assert root.tag == f"{{{PIDF}}}presence"
    assert root.get("entity") == CAROL
    assert len(root) == 0


def test_empty_list_is_a_caller_error() -> None:
    with pytest.raises(ValueError):
        aggregate_pidf(CAROL, [])


def test_output_is_valid_input() -> None:
    out = aggregate_pidf(CAROL, [DESK_PHONE, SOFTPHONE, MOBILE])
    check_pidf(out)
    assert aggregate_pidf(CAROL, [out]) == out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=3, unique=True),
        min_size=1,
        max_size=5,
    )
)
def test_aggregate_tuple_ids_unique_and_newest_wins(publications: list[list[str]]) -> None:
    bodies = []
    for n, tuple_ids in enumerate(publications):
        tuples = "".join(f'<tuple id="{t}"><status/><note>pub{n}</note></tuple>' for t in tuple_ids)
        bodies.append(f'<presence xmlns="{PIDF}" entity="sip:x@y">{tuples}</presence>'.encode())
    root = parse(aggregate_pidf(CAROL, bodies))
    out_ids = ids(root, "p:tuple")
    assert len(out_ids) == len(set(out_ids))
    assert set(out_ids) == {t for pub in publications for t in pub}
    for tuple_id in out_ids:
        newest = max(n for n, pub in enumerate(publications) if tuple_id in pub)
        assert root.xpath(f"string(p:tuple[@id='{tuple_id}']/p:note)", namespaces=NS) == f"pub{newest}"


# --- offline and closed bodies ---------------------------------------------------------------------------


def test_offline_body() -> None:
    out = offline_pidf(CAROL)
    root = parse(out)
    assert root.get("entity") == CAROL
    assert ids(root, "p:tuple") == [OFFLINE_TUPLE_ID] == ["tuple_mixingid"]
    assert root.xpath("string(p:tuple/p:status/p:basic)", namespaces=NS) == "closed"
    check_pidf(out)


def test_offline_body_with_tuple_id() -> None:
    root = parse(offline_pidf(CAROL, tuple_id="t9"))
    assert ids(root, "p:tuple") == ["t9"]


def test_closed_tuple_body_matches_capture_10b() -> None:
    out = closed_tuple_pidf(CAROL, CAPTURE_04A_BODY)
    # same document as OpenSIPS sent, up to its redundant namespace redeclarations
    assert etree.tostring(etree.fromstring(out), method="c14n") == etree.tostring(
        etree.fromstring(CAPTURE_10B_BODY), method="c14n"
    )
    assert b"contact" not in out and b"note" not in out


def test_closed_tuple_body_closes_every_tuple_and_drops_the_rest() -> None:
    root = parse(closed_tuple_pidf(CAROL, aggregate_pidf(CAROL, [DESK_PHONE, SOFTPHONE])))
    assert ids(root, "p:tuple") == ["soft", "desk"]
    assert root.xpath("p:tuple/p:status/p:basic/text()", namespaces=NS) == ["closed", "closed"]
    assert [etree.QName(c).localname for c in root] == ["tuple", "tuple"]
    assert root.get("entity") == CAROL


def test_closed_tuple_body_of_a_publication_without_tuples() -> None:
    body = (b'<presence xmlns="urn:ietf:params:xml:ns:pidf"'
            b' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"><dm:person id="p"/></presence>')
    root = parse(closed_tuple_pidf(CAROL, body))
    assert len(root) == 0


def test_closed_tuple_body_of_garbage_raises_body_error() -> None:
    with pytest.raises(BodyError):
        closed_tuple_pidf(CAROL, b"<nope")


def test_removed_device_shown_closed_next_to_the_others() -> None:
    # the desk phone (oldest) sends PUBLISH Expires: 0; one NOTIFY shows it closed and the others live
    root = parse(aggregate_pidf(CAROL, [DESK_PHONE, SOFTPHONE, MOBILE], off_index=0))
    assert ids(root, "p:tuple") == ["mobile", "soft", "desk"]
    assert root.xpath("string(p:tuple[@id='desk']/p:status/p:basic)", namespaces=NS) == "closed"
    assert root.xpath("string(p:tuple[@id='mobile']/p:status/p:basic)", namespaces=NS) == "open"
    assert not root.xpath("p:tuple[@id='desk']/p:contact", namespaces=NS)
    assert not root.xpath("//rpid:on-the-phone", namespaces=NS)  # the removed person is gone


def test_removed_device_never_hides_a_live_tuple_with_the_same_id() -> None:
    live = CAPTURE_04A_BODY
    removed = CAPTURE_04A_BODY.replace(b"Online", b"Leaving")  # same tuple id t1, published later
    root = parse(aggregate_pidf(CAROL, [live, removed], off_index=1))
    assert ids(root, "p:tuple") == ["t1"]
    assert root.xpath("string(p:tuple/p:status/p:basic)", namespaces=NS) == "open"
    assert root.xpath("string(p:tuple/p:note)", namespaces=NS) == "Online"


def test_only_publication_removed_gives_capture_10b() -> None:
    out = aggregate_pidf(CAROL, [CAPTURE_04A_BODY], off_index=0)
    assert etree.tostring(etree.fromstring(out), method="c14n") == etree.tostring(
        etree.fromstring(CAPTURE_10B_BODY), method="c14n"
    )


# --- sphere ----------------------------------------------------------------------------------------------


def test_sphere_text_form() -> None:
    assert sphere_of(DESK_PHONE) == "work"


def test_sphere_element_form() -> None:
    body = (
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        b'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"><dm:person id="p">'
        b"<rpid:sphere>\n  <rpid:home/>\n</rpid:sphere></dm:person></presence>"
    )
    assert sphere_of(body) == "home"


@pytest.mark.parametrize("body", [CAPTURE_04A_BODY, SOFTPHONE, MOBILE])
def test_no_sphere_is_none(body: bytes) -> None:
    assert sphere_of(body) is None


def test_empty_sphere_is_none() -> None:
    body = (
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        b'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"><dm:person id="p"><rpid:sphere>  </rpid:sphere>'
        b"</dm:person></presence>"
    )
    assert sphere_of(body) is None


def test_sphere_in_aggregated_document() -> None:
    assert sphere_of(aggregate_pidf(CAROL, [DESK_PHONE, SOFTPHONE])) == "work"


def test_sphere_without_namespaces_is_found_like_opensips() -> None:
    body = (b'<presence xmlns="urn:ietf:params:xml:ns:pidf">'
            b'<person id="p"><sphere>home</sphere></person></presence>')
    assert sphere_of(body) == "home"


def test_sphere_outside_a_person_is_ignored() -> None:
    body = (
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid">'
        b'<tuple id="t"><status/><rpid:sphere>work</rpid:sphere></tuple></presence>'
    )
    assert sphere_of(body) is None


def test_sphere_of_garbage_raises_body_error() -> None:
    with pytest.raises(BodyError):
        sphere_of(b"<<<")


def test_functions_fit_the_presence_event_hooks() -> None:
    # agg_nbody(pres_uri, bodies, off_index), build_empty_pres_info(pres_uri), evs_publ_handl(body)
    from routescript.modules.presence.events import PresenceEvent

    event = PresenceEvent(
        "presence",
        "application/pidf+xml",
        agg_nbody=aggregate_pidf,
        build_empty_pres_info=offline_pidf,
        evs_publ_handl=check_pidf,
    )
    assert event.agg_nbody is not None and event.build_empty_pres_info is not None
    root = parse(event.agg_nbody(CAROL, [SOFTPHONE, CAPTURE_04A_BODY], 1))
    assert ids(root, "p:tuple") == ["soft", "t1"]
    assert root.xpath("string(p:tuple[@id='t1']/p:status/p:basic)", namespaces=NS) == "closed"
    assert ids(parse(event.build_empty_pres_info(CAROL)), "p:tuple") == [OFFLINE_TUPLE_ID]


@pytest.mark.parametrize("build", [
    offline_pidf,
    lambda uri: aggregate_pidf(uri, [CAPTURE_04A_BODY]),
    lambda uri: aggregate_pidf(uri, [CAPTURE_04A_BODY, DESK_PHONE]),
])
def test_entity_xml_cannot_carry_is_escaped(build: Callable[[str], bytes]) -> None:
    # The presentity URI comes from a stored row; one holding a control character still gives a body.
    root = parse(build("sip:car\x01ol@example.com"))
    assert root.get("entity") == "sip:car%01ol@example.com"
