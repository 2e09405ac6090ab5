"""Safe, bounded XML parsing and serialisation shared by the presence_xml documents.

Every XML body that comes from the network goes through `parse_xml`: a size bound before parsing, a parser
that never resolves entities, never loads a DTD and never touches the network (XXE-safe), a refusal of any
DOCTYPE (no presence document needs one), then depth and element-count bounds. A problem becomes a
`BodyError` carrying the SIP status and reason phrase the caller answers with.
"""

from __future__ import annotations

import logging
import re
import threading

from lxml import etree

# presence_xml serves event packages of the presence module (OpenSIPS: bind_presence); its body errors
# are the presence core's, so a refused PUBLISH body is answered by the core whoever raised it.
from ..presence.events import BodyError as PresenceBodyError

# XML namespaces by the names the RFCs give them.
NS_PIDF = "urn:ietf:params:xml:ns:pidf"  # RFC 3863
NS_DATA_MODEL = "urn:ietf:params:xml:ns:pidf:data-model"  # RFC 4479 (person, device)
NS_RPID = "urn:ietf:params:xml:ns:pidf:rpid"  # RFC 4480 (activities, sphere, ...)
NS_CIPID = "urn:ietf:params:xml:ns:pidf:cipid"  # RFC 4482
NS_WATCHERINFO = "urn:ietf:params:xml:ns:watcherinfo"  # RFC 3858
NS_XML = "http://www.w3.org/XML/1998/namespace"  # xml:lang

# Bounds. A presence body rides in one SIP message, whose own bound is 64 KiB; nesting in PIDF/RPID is
# shallow (presence/person/activities/busy is 4 levels), so 32 leaves room for any real extension.
MAX_BODY_SIZE = 65536
MAX_DEPTH = 32
MAX_ELEMENTS = 4096

# The declaration OpenSIPS writes (libxml2's xmlDocDumpMemory); UTF-8 is implied without an encoding.
XML_DECLARATION = b'<?xml version="1.0"?>\n'

# Reply texts: the 415 phrase is the one OpenSIPS presence_xml answers with (xml_publ_handl).
UNSUPPORTED_MEDIA_TYPE = (415, "Unsupported media type")
BAD_REQUEST = (400, "Bad request")
TOO_LARGE = (413, "Request Entity Too Large")


class BodyError(PresenceBodyError):
    """A message body the peer sent is unacceptable; answer the request with `status` `reason`.

    `detail` says why, for the log line (the parser's message, or which rule the body broke); it is never
    put on the wire. Other event packages raise it with their own statuses. It is a presence
    `BodyError`, so the presence core's `except BodyError` around evs_publ_handl answers it as it is.
    """

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.status} {self.reason}" + (f": {self.detail}" if self.detail else "")


def _new_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,  # no entity expansion (billion laughs, external entities)
        no_network=True,  # never fetch anything
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,  # keep libxml2's own hard limits
        collect_ids=False,
    )


# One parser per thread, reused for every document: building an XMLParser cost as much as parsing a
# small PIDF body. lxml resets a parser's state at each parse, but a parser must not be used by two
# threads at once, hence one per thread (the event loop is one thread; a database thread may parse too).
_parsers = threading.local()


def _parser() -> etree.XMLParser:
    parser: etree.XMLParser | None = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = _new_parser()
    return parser


def parse_xml(
    body: bytes,
    *,
    max_size: int = MAX_BODY_SIZE,
    max_depth: int = MAX_DEPTH,
    max_elements: int = MAX_ELEMENTS,
) -> etree._Element:
    """Parse `body` as one XML document and return its root element, or raise `BodyError`.

    Not well-formed XML, and any document with a DOCTYPE, gives 415 (the answer OpenSIPS gives to a body
    its XML parser refuses). Larger than `max_size` bytes or more than `max_elements` elements gives 413;
    nested deeper than `max_depth` gives 400.
    """
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError("parse_xml expects bytes")
    data = bytes(body)
    if len(data) > max_size:
        raise BodyError(*TOO_LARGE, f"XML body of {len(data)} bytes exceeds {max_size}")
    if not data.strip():
        raise BodyError(*UNSUPPORTED_MEDIA_TYPE, "empty XML body")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise BodyError(*UNSUPPORTED_MEDIA_TYPE, f"not well-formed XML: {exc}") from None
    except (etree.LxmlError, ValueError) as exc:  # e.g. an encoding lxml cannot decode
        raise BodyError(*UNSUPPORTED_MEDIA_TYPE, f"unreadable XML: {exc}") from None
    if root is None:  # pragma: no cover - lxml raises instead, kept as a guard
        raise BodyError(*UNSUPPORTED_MEDIA_TYPE, "no root element")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise BodyError(*UNSUPPORTED_MEDIA_TYPE, "DOCTYPE declarations are not accepted")
    _check_shape(root, max_depth, max_elements)
    return root


def _check_shape(root: etree._Element, max_depth: int, max_elements: int) -> None:
    """Bound depth and element count with an explicit stack (no recursion on untrusted input)."""
    # Fast path: a document of n elements is at most n deep, so when n is within both bounds neither
    # can be broken. lxml counts in C; only a larger document is walked (the walk decides which error).
    limit = min(max_depth, max_elements)
    small = 0
    for small, _ in enumerate(root.iter(tag=etree.Element), 1):
        if small > limit:
            break
    if small <= limit:
        return
    count = 0
    stack: list[tuple[etree._Element, int]] = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        count += 1
        if count > max_elements:
            raise BodyError(*TOO_LARGE, f"more than {max_elements} XML elements")
        if depth > max_depth:
            raise BodyError(*BAD_REQUEST, f"XML nested deeper than {max_depth} levels")
        for child in element:
            if isinstance(child.tag, str):  # elements only; comments and PIs have no children
                stack.append((child, depth + 1))


log = logging.getLogger("routescript.presence_xml")

# Char  ::=  #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]     (XML 1.0, 2.2)
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _percent_escape(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8", "surrogatepass"))


def xml_safe(text: str, what: str, of: str) -> str:
    """`text` fit for an XML attribute or text node: every character XML 1.0 cannot carry (a control
    character, a lone surrogate, U+FFFE/U+FFFF) %-escaped as its UTF-8 bytes ("a\x01b" -> "a%01b"), with a
    warning naming `what` and whose it is (`of`, a presentity URI: "watcher id of sip:alice@example.com").

    The body builders pass every stored string through it: the SIP layer refuses such characters in
    what it stores, but a row written by something else (an old or shared database) must not make lxml
    raise and lose the NOTIFY. Escaping rather than leaving the value out keeps the element there (a
    watcher stays in the watcher list).
    """
    if _NOT_XML_CHAR.search(text) is None:
        return text
    safe = _NOT_XML_CHAR.sub(_percent_escape, text)
    log.warning("%s of %r holds characters XML cannot carry: %r written as %r", what, of, text, safe)
    return safe


def qname(namespace: str, local: str) -> str:
    """Clark notation `{namespace}local`, the form lxml uses for tags."""
    return f"{{{namespace}}}{local}"


def local_name(element: etree._Element) -> str | None:
    """The element's local name, or None for a comment or processing instruction."""
    if not isinstance(element.tag, str):
        return None
    name: str = etree.QName(element).localname
    return name


def namespace_of(element: etree._Element) -> str | None:
    """The element's namespace URI (None when it has none, or for a comment / PI)."""
    if not isinstance(element.tag, str):
        return None
    namespace: str | None = etree.QName(element).namespace
    return namespace


def serialize(root: etree._Element) -> bytes:
    """The document as UTF-8 bytes, led by the XML declaration."""
    document: bytes = etree.tostring(root, encoding="UTF-8", xml_declaration=False)
    return XML_DECLARATION + document
