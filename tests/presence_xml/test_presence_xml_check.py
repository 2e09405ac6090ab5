"""check_pidf / parse_xml: well-formedness, PIDF root, bounds, and XXE safety."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routescript.modules.presence_xml.pidf import check_pidf, sphere_of
from routescript.modules.presence_xml.winfo import parse_winfo
from routescript.modules.presence_xml.xml_util import (
    MAX_BODY_SIZE,
    BodyError,
    parse_xml,
)

PIDF = "urn:ietf:params:xml:ns:pidf"

# The body of capture 01 (PUBLISH from alice), byte for byte.
CAPTURE_01_BODY = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@127.0.0.1">
  <tuple id="t1">
    <status><basic>open</basic></status>
    <contact>sip:alice@127.0.0.1</contact>
    <note>Available</note>
  </tuple>
</presence>
"""

RPID_BODY = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
          xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@example.com">
  <tuple id="a1"><status><basic>open</basic></status></tuple>
  <dm:person id="p1"><rpid:activities><rpid:busy/></rpid:activities></dm:person>
  <dm:device id="d1"><dm:deviceID>urn:uuid:1234</dm:deviceID></dm:device>
</presence>"""


def test_capture_body_is_accepted() -> None:
    assert check_pidf(CAPTURE_01_BODY) is None


def test_rpid_body_with_person_and_device_is_accepted() -> None:
    assert check_pidf(RPID_BODY) is None


def test_prefixed_pidf_root_is_accepted() -> None:
    body = (b'<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" entity="sip:a@b">'
            b'<p:tuple id="x"><p:status/></p:tuple></p:presence>')
    check_pidf(body)


def test_presence_without_tuples_is_accepted() -> None:
    check_pidf(b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"/>')


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   \r\n",
        b"<presence",
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf"><tuple id="t1"></presence>',
        b"not xml at all",
        b'<?xml version="1.0" encoding="bogus-enc"?><presence/>',
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/><presence/>',
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf">&nbsp;</presence>',
        b"\xff\xfe\x00<\x00",
    ],
)
def test_not_well_formed_is_415(body: bytes) -> None:
    with pytest.raises(BodyError) as info:
        check_pidf(body)
    assert info.value.status == 415
    assert info.value.reason == "Unsupported media type"
    assert info.value.detail  # says why, for the log


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'<presence xmlns="urn:example:other" entity="sip:a@b"/>', "presence"),
        (b'<presence entity="sip:a@b"><tuple id="t"/></presence>', "presence"),
        (
            b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full"/>',
            "dialog-info",
        ),
        (b'<tuple xmlns="urn:ietf:params:xml:ns:pidf" id="t1"/>', "tuple"),
    ],
)
def test_non_pidf_root_is_400(body: bytes, why: str) -> None:
    with pytest.raises(BodyError) as info:
        check_pidf(body)
    assert (info.value.status, info.value.reason) == (400, "Not a PIDF document")
    assert why in info.value.detail


@pytest.mark.parametrize(
    "child",
    [
        b"<tuple><status><basic>open</basic></status></tuple>",
        b'<tuple id="  "><status/></tuple>',
        b'<dm:person xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"/>',
        b'<dm:device xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"/>',
    ],
)
def test_id_elements_without_id_are_400(child: bytes) -> None:
    body = b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b">' + child + b"</presence>"
    with pytest.raises(BodyError) as info:
        check_pidf(body)
    assert (info.value.status, info.value.reason) == (400, "PIDF element without id")
    assert "id" in info.value.detail


_DM = 'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"'


@pytest.mark.parametrize(
    "children",
    [
        b'<tuple id="t1"><status/></tuple><tuple id="t1"><status/></tuple>',
        b'<tuple id="t1"><status/></tuple><tuple id=" t1 "><status/></tuple>',
        b'<tuple id="x"><status/></tuple><dm:person id="x"/>',
        b'<dm:person id="p"/><dm:device id="p"><dm:deviceID>urn:x</dm:deviceID></dm:device>',
    ],
)
def test_duplicate_ids_are_400(children: bytes) -> None:
    # RFC 3863 4.1.2 / RFC 4479: tuple, person and device ids are xs:IDs - unique in the document.
    body = (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" ' + _DM.encode() + b' entity="sip:a@b">'
            + children + b"</presence>")
    with pytest.raises(BodyError) as info:
        check_pidf(body)
    assert (info.value.status, info.value.reason) == (400, "Duplicate id in PIDF document")
    assert "used twice" in info.value.detail


@pytest.mark.parametrize(
    "child",
    [
        b'<x:tuple xmlns:x="urn:example:foreign" id="t2"><x:status/></x:tuple>',
        b'<tuple xmlns="" id="t2"><status/></tuple>',
        b'<dm:tuple ' + _DM.encode() + b' id="t2"/>',
    ],
)
def test_tuple_outside_the_pidf_namespace_is_400(child: bytes) -> None:
    # RFC 3863 4.1: <tuple> is urn:ietf:params:xml:ns:pidf's; an extension may not be named tuple.
    body = (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b">'
            b'<tuple id="t1"><status><basic>open</basic></status></tuple>' + child + b"</presence>")
    with pytest.raises(BodyError) as info:
        check_pidf(body)
    assert (info.value.status, info.value.reason) == (400, "PIDF tuple outside the PIDF namespace")


def test_extensions_in_other_namespaces_stay_accepted() -> None:
    # RPID/data-model/CIPID at the presence level, a foreign element named like a PIDF one but not tuple,
    # a nested foreign tuple inside an extension, comments and processing instructions: all fine.
    body = (b'<presence xmlns="urn:ietf:params:xml:ns:pidf" ' + _DM.encode() + b' '
            b'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" xmlns:c="urn:ietf:params:xml:ns:pidf:cipid" '
            b'xmlns:x="urn:example:x" entity="sip:a@b"><!-- c --><?pi x?>'
            b'<tuple id="t1"><status><basic>open</basic><x:tuple>inner</x:tuple></status></tuple>'
            b'<tuple id="t2"><status><basic>closed</basic></status></tuple><note>n</note>'
            b'<dm:person id="p1"><rpid:activities><rpid:away/></rpid:activities></dm:person>'
            b'<dm:device id="d1"><dm:deviceID>urn:uuid:1</dm:deviceID></dm:device>'
            b'<c:homepage>https://a.example/</c:homepage><x:note>foreign note</x:note>'
            b'<x:stuff><x:tuple id="t1"/></x:stuff></presence>')
    assert check_pidf(body) is None


def test_body_error_is_the_presence_core_body_error() -> None:
    from routescript.modules.presence.events import BodyError as PresenceBodyError

    with pytest.raises(PresenceBodyError) as info:
        check_pidf(b"<presence")
    assert (info.value.status, info.value.reason) == (415, "Unsupported media type")


def test_body_error_is_general() -> None:
    error = BodyError(488, "Not Acceptable Here", "dialog-info without dialog")
    assert (error.status, error.reason, error.detail) == (
        488,
        "Not Acceptable Here",
        "dialog-info without dialog",
    )
    assert "488 Not Acceptable Here" in str(error)
    assert isinstance(error, Exception)


# --- bounds ---------------------------------------------------------------------------------------------


def test_too_large_body_is_413() -> None:
    note = b"x" * MAX_BODY_SIZE
    body = b'<presence xmlns="urn:ietf:params:xml:ns:pidf"><note>' + note + b"</note></presence>"
    with pytest.raises(BodyError) as info:
        check_pidf(body)
    assert info.value.status == 413


def test_too_many_elements_is_413() -> None:
    tuples = b"".join(b"<n/>" for _ in range(5000))
    body = b'<presence xmlns="urn:ietf:params:xml:ns:pidf"><x xmlns="urn:x">' + tuples + b"</x></presence>"
    assert len(body) < MAX_BODY_SIZE
    with pytest.raises(BodyError) as info:
        check_pidf(body)
    assert info.value.status == 413


def test_too_deep_is_400_but_moderate_depth_is_fine() -> None:
    def nested(depth: int) -> bytes:
        return (
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf">'
            + b"<e>" * depth
            + b"</e>" * depth
            + b"</presence>"
        )

    check_pidf(nested(20))
    with pytest.raises(BodyError) as info:
        check_pidf(nested(40))
    assert info.value.status == 400
    assert "deeper" in info.value.detail


def test_bounds_are_parameters() -> None:
    with pytest.raises(BodyError):
        parse_xml(b"<a><b/></a>", max_elements=1)
    with pytest.raises(BodyError):
        parse_xml(b"<a><b/></a>", max_depth=1)
    with pytest.raises(BodyError):
        parse_xml(b"<a/>", max_size=3)
    assert parse_xml(b"<a><b/></a>", max_elements=2, max_depth=2).tag == "a"


def test_parse_xml_refuses_str() -> None:
    with pytest.raises(TypeError):
        parse_xml("<a/>")  # type: ignore[arg-type]


# --- XXE and entity attacks -----------------------------------------------------------------------------


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-TOKEN-4711")
    return path


def _xxe_bodies(secret: Path) -> list[bytes]:
    uri = secret.as_uri().encode()
    return [
        # classic external entity
        b'<?xml version="1.0"?><!DOCTYPE presence [<!ENTITY xxe SYSTEM "' + uri + b'">]>'
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="t"><status>'
        b"<basic>open</basic></status><note>&xxe;</note></tuple></presence>",
        # external entity in an attribute-free spot, no XML declaration
        b'<!DOCTYPE presence [<!ENTITY xxe SYSTEM "' + uri + b'">]>'
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf">&xxe;</presence>',
        # parameter entity pulling an external DTD
        b'<!DOCTYPE presence [<!ENTITY % ext SYSTEM "' + uri + b'"> %ext;]>'
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/>',
        # external DTD over the network (loopback, closed port): must not even be tried
        (
            b'<!DOCTYPE presence SYSTEM "http://127.0.0.1:9/evil.dtd">'
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/>'
        ),
        # internal entity (harmless by itself, refused with every DOCTYPE)
        (b'<!DOCTYPE presence [<!ENTITY n "hello">]>'
         b'<presence xmlns="urn:ietf:params:xml:ns:pidf">&n;</presence>'),
    ]


def test_xxe_attempts_are_refused(secret_file: Path) -> None:
    for body in _xxe_bodies(secret_file):
        with pytest.raises(BodyError) as info:
            check_pidf(body)
        assert info.value.status == 415
        assert b"TOP-SECRET" not in str(info.value).encode()


def test_xxe_refused_by_every_entry_point(secret_file: Path) -> None:
    body = _xxe_bodies(secret_file)[0]
    for reader in (sphere_of, parse_winfo, parse_xml):
        with pytest.raises(BodyError):
            reader(body)


def test_billion_laughs_is_refused_quickly() -> None:
    lol = [b'<!ENTITY lol0 "lol">']
    for i in range(1, 10):
        lol.append(b'<!ENTITY lol%d "' % i + b"&lol%d;" % (i - 1) * 10 + b'">')
    body = (
        b"<!DOCTYPE presence [" + b"".join(lol) + b"]>"
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf"><note>&lol9;</note></presence>'
    )
    start = time.perf_counter()
    with pytest.raises(BodyError) as info:
        check_pidf(body)
    assert info.value.status == 415
    assert time.perf_counter() - start < 1.0


def test_undefined_entity_without_doctype_is_415() -> None:
    with pytest.raises(BodyError) as info:
        check_pidf(b'<presence xmlns="urn:ietf:params:xml:ns:pidf"><note>&xxe;</note></presence>')
    assert info.value.status == 415


def test_xinclude_is_not_processed(secret_file: Path) -> None:
    body = (
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:xi="http://www.w3.org/2001/XInclude">'
        b'<tuple id="t"><status/><note><xi:include href="'
        + secret_file.as_uri().encode()
        + b'" parse="text"/>'
        b"</note></tuple></presence>"
    )
    check_pidf(body)  # an unknown extension element, accepted as such
    root = parse_xml(body)
    assert "TOP-SECRET" not in "".join(root.itertext())


# --- property: anything in, only BodyError out ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_body_error(data: bytes) -> None:
    try:
        check_pidf(data)
    except BodyError as exc:
        assert exc.status in (400, 413, 415)


_FRAGMENTS = st.sampled_from(
    [
        b"<presence",
        b' xmlns="urn:ietf:params:xml:ns:pidf"',
        b">",
        b"</presence>",
        b'<tuple id="t1">',
        b"<tuple>",
        b"</tuple>",
        b"<status><basic>open</basic></status>",
        b"<note>",
        b"</note>",
        b"&amp;",
        b"&bogus;",
        b"<!DOCTYPE presence>",
        b'<dm:person xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" id="p">',
        b"</dm:person>",
        b"<![CDATA[x]]>",
        b"<!-- c -->",
        b"\xc3\xa9",
        b"\xff",
        b"\x00",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=20))
def test_xmlish_fragments_raise_only_body_error(parts: list[bytes]) -> None:
    data = b"".join(parts)
    for reader in (check_pidf, sphere_of, parse_winfo):
        try:
            reader(data)
        except BodyError:
            pass


def test_reused_parser_stays_safe_after_a_refusal():
    """The per-thread parser is reused: a refused document leaves nothing behind for the next one."""
    bad = [b"<a>", b'<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>', b"<a>" * 40 + b"</a>" * 40]
    for _ in range(2):
        for body in bad:
            with pytest.raises(BodyError):
                parse_xml(body)
        root = parse_xml(b'<presence xmlns="urn:ietf:params:xml:ns:pidf"><tuple id="t"/></presence>')
        assert root.tag == "{urn:ietf:params:xml:ns:pidf}presence" and len(root) == 1
    with pytest.raises(BodyError) as err:
        parse_xml(b"<a>" + b"<b/>" * 33 + b"</a>", max_depth=2, max_elements=30)
    assert err.value.status == 413


def test_accepted_body_parsed_once_refused_one_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from routescript.modules.presence_xml import pidf

    parsed: list[bytes] = []
    real = pidf.parse_xml
    monkeypatch.setattr(pidf, "parse_xml", lambda body: parsed.append(body) or real(body))
    body = RPID_BODY.replace(b"</presence>", b"<!-- memo test --></presence>")
    for _ in range(3):
        assert check_pidf(body) is None
    assert parsed == [body]
    broken = b"<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple><status/></tuple></presence>"
    for _ in range(2):
        with pytest.raises(pidf.BodyError):
            check_pidf(broken)
    assert parsed.count(broken) == 2
