"""Request and response routing and the received/rport stamp - sans-IO (RFC 3261 18.2.1, 18.2.2;
RFC 3263 4 without NAPTR/SRV; RFC 3581).

They work on routescript.sip values (Via, SipURI); the transport layer and the core's request sender
(routescript.core.requests) apply them to messages.
"""

from __future__ import annotations

from typing import Any

from routescript.sip import SipURI
from routescript.transport.address import (
    DEFAULT_SIP_PORT,
    DEFAULT_SIPS_PORT,
    TLS,
    UDP,
    WS,
    WSS,
    Destination,
    SocketInfo,
    Source,
    bare_host,
    is_ip,
    normalize_host,
)


def stamp_via(via: Any, remote_host: str, remote_port: int) -> Any:
    """The top Via of a received request with `received`/`rport` added, or None when it needs none.

    RFC 3261 18.2.1: "If the host portion of the "sent-by" parameter contains a domain name, or if it
    contains an IP address that differs from the packet source address, the server MUST add a
    "received" parameter to that Via header field value."
    RFC 3581 4: "If this Via header field value contains an "rport" parameter with no value, it MUST
    set the value of the parameter to the source port of the request. [...] the server MUST insert a
    "received" parameter containing the source IP address that the request came from, even if it is
    identical to the value of the "sent-by" component."  (OpenSIPS does the same: see capture 19.)
    """
    source_ip = normalize_host(remote_host)
    wants_rport = via.rport is True
    differs = not is_ip(via.host) or normalize_host(via.host) != source_ip
    if not (differs or wants_rport):
        return None
    stamped = via.with_param("received", bare_host(remote_host))
    if wants_rport:
        stamped = stamped.with_param("rport", str(remote_port))
    return stamped


def receive_route(via: Any, source: Source) -> tuple[Any, Destination]:
    """stamp_via and response_destination in one pass over the top Via of a request received from
    `source`: the Via to put back (None: unchanged) and where its responses go. Each parameter is
    read once, and the received/rport the stamp adds are used as they are made; the answers are
    those of response_destination(stamp_via(...) or via, source), the host in the socket API's
    canonical form when the sent-by is the source address.

    Computed as the request arrives, as OpenSIPS does from the parsed via1 (with received/rport): a
    reply goes where the Via said when it came in, whatever the script does to the request after."""
    remote_host = source.remote_host
    rport = via.rport
    host = via.host
    stamped = None
    if rport is True or not is_ip(host) or normalize_host(host) != normalize_host(remote_host):
        reply_host = received = bare_host(remote_host)
        stamped = via.with_param("received", received)
        if rport is True:
            rport = source.remote_port
            stamped = stamped.with_param("rport", str(rport))
    else:
        # sent-by is the packet's source address: reply to it as the socket gave it (the same address
        # as the Via's text, in canonical form), unless the Via already names a received
        received = via.received
        reply_host = bare_host(received) if received else remote_host
    sent_by_port = via.port or DEFAULT_SIP_PORT
    if source.proto != UDP:
        return stamped, Destination(source.proto, reply_host, sent_by_port, source.conn_id, source.socket)
    maddr = via.param("maddr")
    if maddr:
        return stamped, Destination(UDP, bare_host(maddr), sent_by_port, socket=source.socket)
    port = rport if rport.__class__ is int else sent_by_port   # a bool (bare rport) is not a port
    return stamped, Destination(UDP, reply_host, port, socket=source.socket)


def request_destination(uri: SipURI, *, default_transport: str = UDP, socket: SocketInfo | None = None,
                        conn_id: int | None = None, conn_transport: str = "") -> Destination:
    """Where a request for `uri` (a Request-URI, or the URI of its first Route) goes: RFC 3263 4 for a
    numeric host without NAPTR/SRV.

    Transport from ;transport= (ws is wss for a sips: URI or a dialog over wss), else TLS for sips:, else
    `default_transport` (UDP, or for a dialog the
    transport its request came over: a watcher that subscribed over TCP without ";transport=tcp" in
    its Contact listens on TCP only). ;maddr= overrides the host; the port defaults to 5060 (5061 for
    TLS). `socket` is the preferred local socket, used when it has the same transport; `conn_id` the
    connection to reuse (RFC 3261 18.1.1), used when `conn_transport` - the transport it carries - is
    the chosen stream transport. Whether the transport is one we support is the sender's question:
    the transport layer refuses the rest when it sends."""
    transport = (uri.param("transport") or (TLS if uri.scheme == "sips" else default_transport)).lower()
    if transport == WS and (uri.scheme == "sips" or conn_transport == WSS):
        # RFC 7118 registers only "ws" as a URI transport (5.2: a sips URI with transport=ws is reached
        # over WSS), and browsers write ";transport=ws" in Contacts they send over wss: the wss
        # connection it came on is what reaches it.
        transport = WSS
    host = uri.param("maddr") or uri.host
    port = uri.port or (DEFAULT_SIPS_PORT if transport == TLS else DEFAULT_SIP_PORT)
    conn = conn_id if transport == conn_transport and transport != UDP else None
    use = socket if socket is not None and socket.proto == transport else None
    return Destination(transport, bare_host(host), port, conn, use)


def _maddr(via: Any) -> str | None:
    return via.param("maddr") if hasattr(via, "param") else None


def response_destination(via: Any, source: Source) -> Destination:
    """Where a response goes, from the top Via it carries and the Source of its request.

    RFC 3261 18.2.2: reliable transport - "the response MUST be sent using the existing connection to
    the source of the original request [...] if that connection is still open" (conn_id), else a new
    connection to `received` (or sent-by host) at the sent-by port. Unreliable - `maddr` first, then
    `received` at the sent-by port, else the sent-by address; RFC 3581 4: with an rport value the
    response goes to `received`:`rport`. Always from the socket the request came in on.

    Choice: the transport the request really used (source.proto) decides, not the Via's sent-protocol;
    they agree for every sane client and the socket is what we can answer on.
    """
    sent_by_port = via.port or DEFAULT_SIP_PORT
    received = via.received
    if source.proto != UDP:
        host = received or via.host
        return Destination(source.proto, bare_host(host), sent_by_port, conn_id=source.conn_id,
                           socket=source.socket)
    maddr = _maddr(via)
    if maddr:
        return Destination(UDP, bare_host(maddr), sent_by_port, socket=source.socket)
    rport = via.rport
    port = rport if isinstance(rport, int) and not isinstance(rport, bool) else sent_by_port
    if received:
        return Destination(UDP, bare_host(received), port, socket=source.socket)
    return Destination(UDP, bare_host(via.host), port, socket=source.socket)
