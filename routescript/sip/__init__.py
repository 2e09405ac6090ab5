"""routescript.sip - the sans-IO SIP message layer: bytes in, objects out; objects in, bytes out.

No sockets, no clock, no asyncio. The contract other layers code against is in docs/internals.md.
"""

from .address import Destination, SocketInfo, Source
from .build import (
    REASON_PHRASES,
    build_reply,
    build_request,
    generate_branch,
    generate_tag,
    reason_phrase,
    reply_to_malformed,
)
from .errors import ParseError, SIPError
from .headers import COMPACT_FORMS, Header, canonical_name, header_key, split_values
from .message import SIPMessage, SIPRequest, SIPResponse
from .parse import (
    MAX_HEADERS,
    MAX_LINE_LENGTH,
    MAX_MESSAGE_SIZE,
    MAX_UDP_PAYLOAD,
    frame_length,
    parse_message,
)
from .uri import SipURI, parse_uri
from .values import (
    Contact,
    ContentType,
    CSeq,
    Event,
    NameAddr,
    Via,
    name_addr_tag,
    parse_contact,
    parse_content_type,
    parse_cseq,
    parse_event,
    parse_name_addr,
    parse_via,
)

__all__ = [
    "COMPACT_FORMS",
    "MAX_HEADERS",
    "MAX_LINE_LENGTH",
    "MAX_MESSAGE_SIZE",
    "MAX_UDP_PAYLOAD",
    "REASON_PHRASES",
    "CSeq",
    "Destination",
    "Contact",
    "ContentType",
    "Event",
    "Header",
    "NameAddr",
    "ParseError",
    "SIPError",
    "SIPMessage",
    "SIPRequest",
    "SIPResponse",
    "SipURI",
    "SocketInfo",
    "Source",
    "Via",
    "build_reply",
    "build_request",
    "canonical_name",
    "frame_length",
    "generate_branch",
    "generate_tag",
    "header_key",
    "name_addr_tag",
    "parse_contact",
    "parse_content_type",
    "parse_cseq",
    "parse_event",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "reason_phrase",
    "reply_to_malformed",
    "split_values",
]
