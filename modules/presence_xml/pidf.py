"""PIDF documents for the `presence` event: checking a published body, aggregating the publications of
one presentity into the NOTIFY body, the offline / closed bodies, and the RPID sphere.

Pure functions: bytes in, bytes out, no I/O. The shape follows OpenSIPS presence_xml (notify_body.c,
agregate_presence_xmls / presence_offline_body / build_offline_presence) where it is sound, and the RFCs:

RFC 3863 (PIDF) schema, the part aggregation relies on:
    <xs:element name="presence"> sequence: tuple*, note*, any ##other*; attribute entity anyURI required
    <xs:element name="tuple"> sequence: status, any ##other*, contact?, note*, timestamp?;
                              attribute id xs:ID required
    <xs:element name="status"> sequence: basic?, any ##other*          basic: "open" | "closed"
RFC 4479 (data model): <dm:person id=xs:ID>, <dm:device id=xs:ID> are ##other children of <presence>.
RFC 4480 (RPID): <rpid:sphere> inside <dm:person>: text, or one of <rpid:work/>, <rpid:home/>,
<rpid:unknown/>.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Sequence

from lxml import etree

from .xml_util import (
    NS_DATA_MODEL,
    NS_PIDF,
    NS_XML,
    BodyError,
    local_name,
    namespace_of,
    parse_xml,
    qname,
    serialize,
    xml_safe,
)

__all__ = [
    "OFFLINE_TUPLE_ID",
    "aggregate_pidf",
    "check_pidf",
    "closed_tuple_pidf",
    "offline_pidf",
    "sphere_of",
]

log = logging.getLogger(__name__)

# The tuple id OpenSIPS gives the dummy 'closed' tuple (presence build_offline_presence).
OFFLINE_TUPLE_ID = "tuple_mixingid"

_PRESENCE = qname(NS_PIDF, "presence")
_TUPLE = qname(NS_PIDF, "tuple")
_STATUS = qname(NS_PIDF, "status")
_BASIC = qname(NS_PIDF, "basic")
_NOTE = qname(NS_PIDF, "note")
_PERSON = qname(NS_DATA_MODEL, "person")
_DEVICE = qname(NS_DATA_MODEL, "device")
_XML_LANG = qname(NS_XML, "lang")

# Elements that carry an xs:ID; the ID must be unique across all of them in one document.
_ID_ELEMENTS = frozenset((_TUPLE, _PERSON, _DEVICE))

# The 400s of check_pidf: the reason phrase says what is wrong with the document (fixed texts: nothing of
# the peer's is put on the wire; the detail, for the log, says which element).
NOT_PIDF = (400, "Not a PIDF document")
FOREIGN_TUPLE = (400, "PIDF tuple outside the PIDF namespace")
MISSING_ID = (400, "PIDF element without id")
DUPLICATE_ID = (400, "Duplicate id in PIDF document")


# A body accepted once is accepted again: phones republish the same few documents (a refresh with a
# body, a modify back to a state seen before), and parsing each one was a twentieth of a PUBLISH. Small
# bodies only, a bounded number; refusals are not kept (the exception is raised each time).
MEMO_BODY_MAX = 4096
MEMO_ENTRIES = 1024


def check_pidf(body: bytes) -> None:
    """`_check_pidf`, remembering the small bodies it accepted."""
    if len(body) <= MEMO_BODY_MAX:
        _check_pidf_memo(bytes(body))
    else:
        _check_pidf(body)


def _check_pidf(body: bytes) -> None:
    """Check a PUBLISHed application/pidf+xml body; raise `BodyError` when it is unacceptable.

    - not well-formed XML, or carrying a DOCTYPE: 415 "Unsupported media type" (what OpenSIPS answers);
    - too large (bytes or elements): 413; nested too deep: 400;
    - what RFC 3863 4.1 requires of the document, each a 400 whose reason phrase says what is wrong:
      the root is `<presence>` in the PIDF namespace (NOT_PIDF); every `<tuple>` child of it is in the
      PIDF namespace (FOREIGN_TUPLE: the schema's tuple is `pidf:tuple`, and `##other` extensions may not
      be named tuple - a receiver that matches by local name, as OpenSIPS does, would take it for one);
      every `<tuple>`, `<dm:person>` and `<dm:device>` has an `id` (MISSING_ID), and those ids - one xs:ID
      space, RFC 3863 4.1.2 and RFC 4479 - are unique in the document (DUPLICATE_ID).
      OpenSIPS accepts such a body and relays it, or silently leaves it out of (or, for a missing id,
      fails) every later NOTIFY; refusing it at PUBLISH tells the publisher. 400 rather than 415 because
      the media type itself is supported - this body just breaks it.
    Extensions at the presence level in other namespaces (RPID, data-model, CIPID, ...) are accepted.
    Choices (liberal, as OpenSIPS): an id is not checked to be an NCName, and a tuple without `<status>`
    is accepted - neither breaks aggregation or a watcher.
    """
    root = parse_xml(body)
    _require_pidf_root(root)
    seen: set[str] = set()
    for child in root:
        tag = child.tag
        if tag in _ID_ELEMENTS:
            element_id = (child.get("id") or "").strip()
            if not element_id:
                raise BodyError(*MISSING_ID, f"<{local_name(child)}> without an id attribute")
            if element_id in seen:
                raise BodyError(*DUPLICATE_ID, f"id {element_id!r} used twice (<{local_name(child)}>)")
            seen.add(element_id)
        elif isinstance(tag, str) and (tag == "tuple" or tag.endswith("}tuple")):
            raise BodyError(*FOREIGN_TUPLE, f"<tuple> in namespace {namespace_of(child)!r}, not {NS_PIDF}")


def _require_pidf_root(root: etree._Element) -> None:
    if root.tag != _PRESENCE:
        raise BodyError(
            *NOT_PIDF,
            f"root element is <{local_name(root)}> in namespace {namespace_of(root)!r}, "
            f"not <presence> in {NS_PIDF}",
        )


def _parse_pidf(body: bytes) -> etree._Element:
    root = parse_xml(body)
    _require_pidf_root(root)
    return root


def aggregate_pidf(pres_uri: str, bodies: Sequence[bytes], off_index: int | None = None) -> bytes:
    """The NOTIFY body for presentity `pres_uri` built from all its live publications.

    `bodies` are the publications in the order they were received, oldest first (the presentity table
    ordered by received_time, as OpenSIPS reads it). The result lists the newest publication's elements
    first, as OpenSIPS does (it walks that list from the end):
        <presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres_uri">
          all <tuple>s, then the PIDF <note>s, then <dm:person>s, then <dm:device>s, then every other
          top-level extension element, each group newest publication first
    Namespace declarations of the publications are gathered on the root (the PIDF one as the default);
    a prefix that two publications bind to different URIs stays declared where it is used.

    Duplicate ids: tuple, person and device ids are one xs:ID space and must be unique in a document, so
    when two publications use the same id the newest publication's element is kept and the older one is
    left out - OpenSIPS's rule too (ids compared exactly here; OpenSIPS ignores case). Identical top-level
    notes (same text and xml:lang) appear once.

    A single publication is passed through as it is except for `entity` (set to `pres_uri`).

    off_index: index in `bodies` of the publication being removed (PUBLISH Expires: 0); it is replaced
    by `closed_tuple_pidf` of itself, so one NOTIFY shows the removed device closed next to the others
    (OpenSIPS's agg_nbody off_index, same position); its closed tuples come after every live one and
    lose any id clash with them. The signature is the presence core's agg_nbody hook as it is.

    A body that does not parse as PIDF is left out with a warning (bodies are checked at PUBLISH, so
    this only happens with rows written by something else). `bodies` must not be empty (no publication
    means no body, or `offline_pidf`); when none is usable the result is a `<presence>` without tuples.
    """
    if not bodies:
        raise ValueError("aggregate_pidf needs at least one publication body")
    live: list[etree._Element] = []
    closed: list[etree._Element] = []
    for index, body in enumerate(bodies):
        try:
            if index == off_index:
                closed.append(_parse_pidf(closed_tuple_pidf(pres_uri, body)))
            else:
                live.append(_parse_pidf(body))
        except BodyError as exc:
            log.warning("presentity %s: publication %d left out of the NOTIFY body: %s", pres_uri, index, exc)
    # Newest first; the removed publication's closed tuples go last so that they never hide a live
    # device's tuple that happens to use the same id.
    roots = [*reversed(live), *closed]
    if len(roots) == 1:
        roots[0].set("entity", xml_safe(pres_uri, "PIDF entity", pres_uri))
        return serialize(roots[0])
    return serialize(_merge(pres_uri, roots))


def _merge(pres_uri: str, newest_first: list[etree._Element]) -> etree._Element:
    nsmap: dict[str | None, str] = {None: NS_PIDF}
    for root in newest_first:
        for prefix, uri in root.nsmap.items():
            if prefix is not None and prefix not in nsmap and uri not in nsmap.values():
                nsmap[prefix] = uri

    tuples: list[etree._Element] = []
    notes: list[etree._Element] = []
    persons: list[etree._Element] = []
    devices: list[etree._Element] = []
    others: list[etree._Element] = []
    groups = {_TUPLE: tuples, _PERSON: persons, _DEVICE: devices}
    seen_ids: set[str] = set()
    seen_notes: set[tuple[str, str | None]] = set()

    for root in newest_first:
        for child in root:
            if not isinstance(child.tag, str):  # comments and processing instructions are not carried
                continue
            group = groups.get(child.tag)
            if group is not None:
                element_id = child.get("id")
                if element_id is not None:
                    if element_id in seen_ids:
                        continue  # an older publication's element with an id already used: newest wins
                    seen_ids.add(element_id)
                group.append(child)
            elif child.tag == _NOTE:
                key = ((child.text or "").strip(), child.get(_XML_LANG))
                if key not in seen_notes:
                    seen_notes.add(key)
                    notes.append(child)
            else:
                others.append(child)

    merged = etree.Element(_PRESENCE, nsmap=nsmap)
    merged.set("entity", xml_safe(pres_uri, "PIDF entity", pres_uri))
    for element in (*tuples, *notes, *persons, *devices, *others):
        element_copy = copy.deepcopy(element)
        element_copy.tail = None  # whitespace between top-level elements is not kept (as OpenSIPS)
        merged.append(element_copy)
    # Declarations the copies carried that the root already makes are dropped; none of the root's are.
    etree.cleanup_namespaces(merged, top_nsmap=nsmap, keep_ns_prefixes=[p for p in nsmap if p])
    return merged


def _offline_root(pres_uri: str) -> etree._Element:
    root = etree.Element(_PRESENCE, nsmap={None: NS_PIDF})
    root.set("entity", xml_safe(pres_uri, "PIDF entity", pres_uri))
    return root


def _closed_tuple(parent: etree._Element, tuple_id: str) -> None:
    tuple_element = etree.SubElement(parent, _TUPLE)
    tuple_element.set("id", tuple_id)
    status = etree.SubElement(tuple_element, _STATUS)
    etree.SubElement(status, _BASIC).text = "closed"


def offline_pidf(pres_uri: str, tuple_id: str | None = None) -> bytes:
    """The dummy body used when a presentity has no publication and notify_offline_body is 1:
        <presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres_uri">
          <tuple id="tuple_mixingid"><status><basic>closed</basic></status></tuple></presence>
    (`tuple_id` overrides the id; "tuple_mixingid" is OpenSIPS's.)
    """
    root = _offline_root(pres_uri)
    _closed_tuple(root, tuple_id or OFFLINE_TUPLE_ID)
    return serialize(root)


def closed_tuple_pidf(pres_uri: str, removed_body: bytes) -> bytes:
    """The removed publication (PUBLISH Expires: 0) as its watchers should last see it: each of its tuples
    kept by id with only `<status><basic>closed</basic></status>`; its contacts, notes, persons and
    devices are dropped. This is the shape OpenSIPS sends (presence_offline_body, capture 10b), except
    that every tuple is closed where OpenSIPS closes only the first.
    Raises `BodyError` when `removed_body` is not a PIDF document.
    """
    removed = _parse_pidf(removed_body)
    root = _offline_root(pres_uri)
    seen: set[str] = set()
    for child in removed:
        if child.tag == _TUPLE:
            tuple_id = (child.get("id") or "").strip()
            if tuple_id and tuple_id not in seen:
                seen.add(tuple_id)
                _closed_tuple(root, tuple_id)
    return serialize(root)


def sphere_of(body: bytes) -> str | None:
    """The RPID sphere of the presentity's person (RFC 4480 section 3.6), for enable_sphere_check.

    `<rpid:sphere>work</rpid:sphere>` gives "work"; the element forms
    `<rpid:sphere><rpid:home/></rpid:sphere>` give the element's name ("home"). The first `<dm:person>`
    carrying a non-empty sphere wins; None when there is none. `person` and `sphere` are matched by local
    name whatever their namespace, as OpenSIPS does, so a client that gets the namespaces wrong still
    works; a sphere outside a person is ignored.
    Raises `BodyError` when `body` is not well-formed XML.
    """
    root = parse_xml(body)
    for person in root.iter():
        if local_name(person) != "person":
            continue
        for sphere in person.iter():
            if local_name(sphere) != "sphere":
                continue
            value = _sphere_value(sphere)
            if value:
                return value
    return None


def _sphere_value(sphere: etree._Element) -> str | None:
    for child in sphere:
        name = local_name(child)
        if name:
            return name
    text = (sphere.text or "").strip()
    return text or None


@functools.lru_cache(maxsize=MEMO_ENTRIES)
def _check_pidf_memo(body: bytes) -> None:
    _check_pidf(body)
