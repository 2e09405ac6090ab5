"""nathelper's message work, without the module: which NAT tests hold for a message and where it came
from, and the rewritten Contact values. Pure functions of a parsed message and its `Source`."""

from __future__ import annotations

import email.parser
import email.policy
from email.message import Message
import re
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, ip_address

from routescript.sip import Contact, ParseError, SIPMessage, Source, parse_uri
from routescript.sip.hosts import bare_host, host_for_uri, normalize_host

SIP_PORT = 5060   # OpenSIPS's SIP_PORT: a Via or Contact without a port, whatever its transport

# --- private addresses -------------------------------------------------------------------------------

# OpenSIPS ip_addr_is_1918(): RFC 1918, RFC 6598 (shared address space of carrier-grade NATs) and
# loopback (RFC 1122) - IPv4 only, as there; RFC 6333's DS-Lite range only with "carrier-grade-nat".
_PRIVATE = tuple(IPv4Network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                               "100.64.0.0/10", "127.0.0.0/8"))
_DS_LITE = IPv4Network("192.0.0.0/29")


def is_private(host: str, *, carrier_grade: bool = False) -> bool:
    """`host` is an IPv4 address of a private range (a name or an IPv6 address is not)."""
    try:
        addr = ip_address(bare_host(host))
    except ValueError:
        return False
    if not isinstance(addr, IPv4Address):
        return False
    return any(addr in net for net in _PRIVATE) or (carrier_grade and addr in _DS_LITE)


def same_ip(host: str, source_ip: str) -> bool:
    """The host written in a header is the address the message came from. A name never is: OpenSIPS
    resolves it only with the core's DNS checks on, which are off by default."""
    return normalize_host(host) == normalize_host(source_ip)


# --- nat_uac_test ------------------------------------------------------------------------------------

# OpenSIPS 3.4's flag names, in the order of the old numeric bits (1, 2, 4 ... 128).
UAC_TEST_FLAGS = ("private-contact", "diff-ip-src-via", "private-via", "private-sdp", "diff-port-src-via",
                  "diff-ip-src-contact", "diff-port-src-contact", "carrier-grade-nat")
CARRIER_GRADE = 1 << UAC_TEST_FLAGS.index("carrier-grade-nat")


def uac_test_mask(text: str) -> int:
    """"private-contact,diff-port-src-via" -> the bit mask (ValueError naming a flag we do not know).
    A number is refused as OpenSIPS 3.x refuses it, with the names it stands for."""
    names = [name.strip() for name in str(text).split(",")]
    if len(names) == 1 and names[0].isdigit():
        bits = int(names[0])
        known = [n for i, n in enumerate(UAC_TEST_FLAGS) if bits & (1 << i)]
        raise ValueError(f"nat_uac_test takes flag names since OpenSIPS 3.0, not {bits}: write "
                         f"\"{','.join(known)}\"" if known else f"nat_uac_test: no test in {bits}")
    mask = 0
    for name in names:
        if name not in UAC_TEST_FLAGS:
            raise ValueError(f"nat_uac_test: unknown flag \"{name}\" (known: {', '.join(UAC_TEST_FLAGS)})")
        mask |= 1 << UAC_TEST_FLAGS.index(name)
    if mask & ~CARRIER_GRADE == 0:
        raise ValueError("nat_uac_test: no test asked for (carrier-grade-nat only widens the private ones)")
    return mask


def _sip_contacts(msg: SIPMessage) -> list[Contact]:
    return [c for c in msg.contacts if c.uri is not None and c.uri.scheme in ("sip", "sips")]


def _contact_port(contact: Contact) -> int:
    uri = contact.uri
    assert uri is not None
    if uri.port is not None:
        return uri.port
    return 5061 if uri.scheme == "sips" or uri.transport == "tls" else SIP_PORT


def _private_contact(msg: SIPMessage, src: Source, cgn: bool) -> bool:
    return any(is_private(c.uri.host, carrier_grade=cgn) for c in _sip_contacts(msg))  # type: ignore[union-attr]


def _diff_ip_via(msg: SIPMessage, src: Source, cgn: bool) -> bool:
    via = msg.via
    if via.received is not None:   # a proxy on the way saw it differ already (OpenSIPS received_test)
        return True
    return not same_ip(via.param("maddr") or via.host, src.remote_host)


def _private_via(msg: SIPMessage, src: Source, cgn: bool) -> bool:
    return is_private(msg.via.host, carrier_grade=cgn)


def _private_sdp(msg: SIPMessage, src: Source, cgn: bool) -> bool:
    found = False
    for sdp in sdp_bodies(msg):
        ip = first_connection_ip(sdp)
        if ip is None or ip == "0.0.0.0":  # noqa: S104 - the SDP null address, not a bind
            return False
        found = found or is_private(ip, carrier_grade=cgn)
    return found


def _diff_port_via(msg: SIPMessage, src: Source, cgn: bool) -> bool:
    return (msg.via.port or SIP_PORT) != src.remote_port


def _diff_ip_contact(msg: SIPMessage, src: Source, cgn: bool) -> bool:
    return any(not same_ip(c.uri.host, src.remote_host) for c in _sip_contacts(msg))  # type: ignore[union-attr]


def _diff_port_contact(msg: SIPMessage, src: Source, cgn: bool) -> bool:
    return any(_contact_port(c) != src.remote_port for c in _sip_contacts(msg))


# bit -> test, in the order OpenSIPS runs them (the cheap ones first); carrier-grade-nat is no test
_UAC_TESTS: tuple[tuple[int, Callable[[SIPMessage, Source, bool], bool]], ...] = (
    (16, _diff_port_via), (2, _diff_ip_via), (1, _private_contact), (8, _private_sdp), (4, _private_via),
    (32, _diff_ip_contact), (64, _diff_port_contact))


def nat_uac_test(msg: SIPMessage, src: Source, mask: int) -> bool:
    """True when any test of `mask` holds (ParseError when a header it reads is malformed)."""
    cgn = bool(mask & CARRIER_GRADE)
    return any(mask & bit and test(msg, src, cgn) for bit, test in _UAC_TESTS)


# --- SDP ---------------------------------------------------------------------------------------------

# c=<nettype> <addrtype> <connection-address> (RFC 4566 5.7); OpenSIPS reads the first c= line only
_CONNECTION = re.compile(rb"^c=IN[ \t]+IP4[ \t]+([0-9.]+)", re.M)
_ANY_CONNECTION = re.compile(rb"^c=", re.M)


def first_connection_ip(sdp: bytes) -> str | None:
    """The address of the first c= line when it is IPv4, None when that line is another kind or absent."""
    first = _ANY_CONNECTION.search(sdp)
    if first is None:
        return None
    found = _CONNECTION.match(sdp, first.start())
    return found.group(1).decode("ascii") if found else None


def sdp_bodies(msg: SIPMessage) -> list[bytes]:
    """The SDP of the message: its body, or each application/sdp part of a multipart body (one level,
    as OpenSIPS)."""
    ctype = msg.content_type
    if ctype is None or not msg.body:
        return []
    if ctype.mime == "application/sdp":
        return [msg.body]
    if ctype.type.lower() != "multipart":
        return []
    head = f"Content-Type: {msg.header('Content-Type')}\r\n\r\n".encode()
    parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(head + msg.body)
    if not parsed.is_multipart():
        return []
    out = []
    for part in parsed.get_payload():
        if isinstance(part, Message) and not part.is_multipart() \
                and part.get_content_type() == "application/sdp":
            payload = part.get_payload(decode=True)
            out.append(payload if isinstance(payload, bytes) else b"")
    return out


# --- Contact rewriting -------------------------------------------------------------------------------

def uri_params(text: str) -> tuple[tuple[str, str | None], ...]:
    """fix_nated_contact's ";name=value;flag" text as URI parameters (ValueError when it is none)."""
    text = text.strip()
    if not text:
        return ()
    if not text.startswith(";"):
        raise ValueError(f"URI parameters start with ';': \"{text}\"")
    try:
        return parse_uri("sip:h" + text).params
    except ParseError:
        raise ValueError(f"bad URI parameters \"{text}\"") from None


def nated_contacts(msg: SIPMessage, src: Source,
                   extra: tuple[tuple[str, str | None], ...] = ()) -> list[str] | None:
    """The Contact values with each sip/sips URI's host:port set to the source address, `extra`
    parameters first and its maddr dropped (OpenSIPS fix_nated_contact); None when there is no Contact.
    Other URIs (tel:, a `*`) are kept as they are."""
    contacts = msg.contacts
    if not contacts:
        return None
    host = host_for_uri(src.remote_host)
    out = []
    for contact in contacts:
        name_addr, uri = contact.name_addr, contact.uri
        if name_addr is None or uri is None or uri.scheme not in ("sip", "sips"):
            out.append(str(contact))
            continue
        params = extra + tuple(p for p in uri.params if p[0].lower() != "maddr")
        new_uri = replace(uri, host=host, port=src.remote_port, params=params)
        out.append(str(replace(name_addr, uri=new_uri)))
    return out


def received_uri(src: Source) -> str:
    """sip:IP:PORT[;transport=PROTO] of where the message came from (OpenSIPS create_rcv_uri: no
    transport parameter for UDP)."""
    transport = "" if src.proto == "udp" else f";transport={src.proto}"
    return f"sip:{host_for_uri(src.remote_host)}:{src.remote_port}{transport}"


def with_received(msg: SIPMessage, received: str, *, in_uri: bool) -> list[str] | None:
    """The Contact values with a `received` parameter naming `received`: a header parameter (quoted),
    or with `in_uri` a URI parameter - escaped there (RFC 3261 25.1: a URI parameter value holds no
    quote, ';' or '='), where OpenSIPS writes the quoted form into the URI."""
    contacts = msg.contacts
    if not contacts:
        return None
    out = []
    for contact in contacts:
        name_addr = contact.name_addr
        if name_addr is None:
            out.append(str(contact))
        elif in_uri:
            escaped = received.replace("%", "%25").replace(";", "%3B").replace("=", "%3D")
            out.append(str(replace(name_addr, uri=name_addr.uri.with_param("received", escaped))))
        else:
            out.append(str(name_addr.with_param("received", f'"{received}"')))
    return out
