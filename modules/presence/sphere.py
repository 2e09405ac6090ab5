"""The presentity's sphere (RFC 4480 RPID <sphere>), for enable_sphere_check and get_sphere.

OpenSIPS presence (enable_sphere_check): "The sphere information is expected to be present in the RPID
body published by the presentity." RFC 4480 section 3.8:
    <sphere> ( <home/> | <work/> | <unknown/> | text )  inside a <person> (or <tuple>/<device>)
The value is the element's text, or the name of its single child element ("work" for <work/>).
OpenSIPS takes the first <sphere> found in the newest publication; we do the same.
"""

from __future__ import annotations

from lxml import etree

__all__ = ["NS_RPID", "extract_sphere"]

NS_RPID = "urn:ietf:params:xml:ns:pidf:rpid"
MAX_BODY = 65536  # bound: larger bodies are not searched (the PUBLISH size limit is below anyway)

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False)


def extract_sphere(body: bytes | None) -> str | None:
    """The sphere value of a PIDF body ("work", "home", or free text), None when it has none or is not XML."""
    if not body or len(body) > MAX_BODY:
        return None
    try:
        root = etree.fromstring(bytes(body), _PARSER)
    except etree.XMLSyntaxError:
        return None
    for element in root.iter(f"{{{NS_RPID}}}sphere"):
        children = [c for c in element if isinstance(c.tag, str)]
        if children:
            name: str = etree.QName(children[0]).localname
            return name
        text = (element.text or "").strip()
        if text:
            return text
    return None
