"""Requests the server sends on its own behalf: a module says what to send, the RequestSender how.

A module (presence's NOTIFY; next pua's PUBLISH and dialog's in-dialog requests) describes a request
once, as an `OutgoingRequest`: method, Request-URI, header lines in wire order without Via and
Content-Length, body. `server.requests` (a RequestSender) does the rest, the same way for every module:

- where it goes (RFC 3261 8.1.2): the URI of the first Route, else the Request-URI, resolved by
  routescript.transport.routing.request_destination (the one rule; TransportLayer.destination_for is
  it plus the support check). Inside a dialog, the transport the dialog's request came over is the
  default and its TCP connection is reused. The answers are cached: a dialog's requests go to the
  same few places, and parsing the target per NOTIFY was a twentieth of a fan-out.
- the top Via (RFC 3261 8.1.1.7): our socket, a fresh branch.
- RFC 3261 18.1.1: a request bound for UDP that no datagram can carry (over MAX_UDP_PAYLOAD bytes)
  goes over TCP to the same host and port, from our TCP socket near the UDP one; with no TCP socket,
  or when TCP fails (a local 408/503), the caller gets a local 513 (Message Too Large).
- the bytes, assembled once (routescript.sip.assembled: header lines parsed back only when a log line
  or a locally made 408/503 reads them), and the client transaction (`transactions.send_request`).

The caller gets the final response - received, or made locally (408, 503, 513) - through a callback,
called once from the event loop and never inside the send call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from routescript.sip import (
    MAX_UDP_PAYLOAD,
    Destination,
    ParseError,
    SIPRequest,
    SIPResponse,
    SipURI,
    SocketInfo,
    Source,
    build_reply,
    generate_branch,
    parse_name_addr,
    parse_uri,
)
from routescript.sip.assembled import assemble_request
from routescript.sip.hosts import host_for_uri
from routescript.transport.routing import request_destination

log = logging.getLogger("routescript.core")

# RFC 3261 21.5.11: the local answer for a request that fits no transport its destination takes.
TOO_LARGE = 513
_TCP_FAILED = (408, 503)   # no connection (503), no answer (408): TCP did not reach the peer
DESTINATIONS_MAX = 4096    # bound of the destination cache (one entry per dialog target and socket)

OnFinal = Callable[[SIPResponse], None]


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """A request as its sender describes it: Request-URI, header lines in order without Via and
    Content-Length (the RequestSender adds them; Max-Forwards too when absent), body."""

    method: str
    ruri: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lower = name.lower()
        for n, v in self.headers:
            if n.lower() == lower:
                return v
        return None

    def to_sip(self, via: str | None = None) -> SIPRequest:
        """As a routescript.sip SIPRequest with Content-Length, and `via` as its first header when
        given. Made with assemble_request - written once into its bytes - after the one check it
        skips: no line breaks. Without a Via it is an ordinary, eagerly parsed request."""
        max_forwards = False
        for name, value in self.headers:
            if "\r" in value or "\n" in value:
                raise ValueError(f"{self.method} header {name} holds a line break: {value!r}")
            if name == "Max-Forwards":
                max_forwards = True
        headers = [("Via", via), *self.headers] if via is not None else list(self.headers)
        if not max_forwards:
            headers.append(("Max-Forwards", "70"))   # RFC 3261 8.1.1.6
        headers.append(("Content-Length", str(len(self.body))))
        return assemble_request(self.method, self.ruri, headers, self.body)


def dialog_route(remote_target: str, route_set: Sequence[str]) -> tuple[str, list[str]]:
    """(Request-URI, Route values) of a request inside a dialog, RFC 3261 12.2.1.1: the remote
    target and the route set in order when the first route is loose (;lr) or there is none; else
    the strict first route becomes the Request-URI and the remote target goes last."""
    if not route_set:
        return remote_target, []
    routes = list(route_set)
    first = _route_uri(routes[0])
    if first is None or first.has_lr:   # one that does not parse fails at sending, whatever its place
        return remote_target, routes
    return first.text, routes[1:] + [f"<{remote_target}>"]


@dataclass(frozen=True, slots=True)
class _RouteURI:
    text: str      # the URI as written between < and >
    has_lr: bool


@functools.lru_cache(maxsize=256)
def _route_uri(route: str) -> _RouteURI | None:
    """A Route/Record-Route value's URI (routescript.sip.parse_name_addr); None when it does not
    parse. Cached: a dialog's route set is the same for each of its requests."""
    try:
        uri = parse_name_addr(route, "Route").uri
    except ParseError:
        return None
    return _RouteURI(str(uri), uri.param("lr") is not None)


@dataclass(frozen=True, slots=True)
class Hop:
    """Where a request goes (RFC 3261 8.1.2), the socket that sends it and our Via up to its branch
    ("SIP/2.0/UDP 127.0.0.1:5060;branch="; None: no socket, no Via). Worked out once for a dialog's
    target (`RequestSender.hop_in_dialog`), it serves every request of the dialog with the same
    Request-URI and Route lines (`send_by`): a NOTIFY fan-out does not find each watcher's destination
    again per change."""

    socket: SocketInfo | None
    destination: Destination
    via_prefix: str | None


class ClientTransactions(Protocol):
    """What the sender needs of the transaction layer: a client transaction per request, its final
    response (or a locally made 408/503) handed to `on_final` once, from the event loop."""

    def send_request(self, req: SIPRequest, dest: Destination, on_final: OnFinal, *,
                     branch: str | None = None) -> object: ...


class RequestSender:
    """`server.requests`: sends requests modules describe (see the module docstring).

    transactions: the client transactions (routescript.transaction.TransactionLayer).
    sockets: our listening sockets, in order (the server's list: read at each send).
    user_agent: the User-Agent value every request sent here carries unless it has one ('' for none):
        the core parameter user_agent_header, as OpenSIPS's tm adds it to the requests it originates
        (t_msgbuilder.c build_uac_req, when server_signature is on).
    """

    def __init__(self, transactions: ClientTransactions, sockets: Sequence[SocketInfo], *,
                 user_agent: str = "") -> None:
        self.transactions = transactions
        self.sockets = sockets
        self.user_agent = user_agent

    def send_in_dialog(self, request: OutgoingRequest, on_final: OnFinal, *, source: Source | None = None,
                       socket: str = "") -> None:
        """Send `request` inside a dialog (its Request-URI and Route lines from `dialog_route`).

        source: where the dialog's initiating request came from - its socket sends this one, its
            transport is the default (a watcher that subscribed over TCP without ";transport=tcp" in
            its Contact listens on TCP only) and its TCP connection is reused. None for a dialog
            reloaded from the database: then `socket`, the name of the socket it came in on
            ("udp:127.0.0.1:5060"), else our first socket.
        Raises routescript.sip.ParseError when the target is no URI (nothing is sent)."""
        self.send_by(request, self.hop_in_dialog(request, source=source, socket=socket), on_final)

    def hop_in_dialog(self, request: OutgoingRequest, *, source: Source | None = None,
                      socket: str = "", ruri: SipURI | None = None) -> Hop:
        """Where `send_in_dialog` sends `request` (same arguments), to keep for the dialog's next requests
        (`send_by`). `ruri`: the request's Request-URI as the caller parsed it already (a remote target
        just read from a Contact), used when no Route names the next hop - it is not parsed again.
        Raises routescript.sip.ParseError when the target is no URI."""
        sock = source.socket if source is not None else self._socket_named(socket)
        came_over = ((source.proto if source is not None else socket.partition(":")[0]) or "udp").lower()
        conn_transport = source.proto if source is not None else ""
        conn_id = source.conn_id if source is not None else None
        route = _first_route(request)
        if route is None and ruri is not None:
            dest = request_destination(ruri, default_transport=came_over, socket=sock, conn_id=conn_id,
                                       conn_transport=conn_transport)
        else:
            dest = _destination(route or request.ruri, came_over, sock, conn_id, conn_transport)
        return Hop(sock, dest, _via_prefix(sock))

    def send_by(self, request: OutgoingRequest, hop: Hop, on_final: OnFinal) -> None:
        """Send `request` by a hop kept from `hop_in_dialog` for a request of the same dialog with the
        same Request-URI and Route lines (the caller keeps it only while those and the dialog's
        transport source stay the same). Every send comes here: the Via written in, the 18.1.1 move to
        TCP, the client transaction."""
        if self.user_agent and request.header("User-Agent") is None:
            agent = ("User-Agent", self.user_agent)
            request = dataclasses.replace(request, headers=(*request.headers, agent))
        sip, branch = _with_via(request, hop.via_prefix)
        dest = hop.destination
        if dest.proto == "udp" and len(sip.to_bytes()) > MAX_UDP_PAYLOAD:
            self._send_over_tcp(request, sip, dest, on_final)
            return
        self.transactions.send_request(sip, dest, on_final, branch=branch)

    def send_to(self, request: OutgoingRequest, on_final: OnFinal, *,
                destination: Destination | None = None, next_hop: str | None = None) -> None:
        """Send `request` outside any dialog (a PUBLISH, pua's initial SUBSCRIBE): to `destination` when
        given, else to the URI `next_hop` (an outbound proxy or a contact's received address, no Route
        written: OpenSIPS tm's outbound proxy), else where its first Route or Request-URI says (UDP
        unless the URI names a transport). Raises routescript.sip.ParseError when the target is no URI
        (nothing is sent)."""
        dest = destination or _destination(next_hop or _first_route(request) or request.ruri, "udp", None,
                                           None, "")
        sock = dest.socket or self._socket_of(dest.proto)
        self.send_by(request, Hop(sock, dest, _via_prefix(sock)), on_final)

    # --- the parts ------------------------------------------------------------------------------

    def _send_over_tcp(self, request: OutgoingRequest, too_large: SIPRequest, dest: Destination,
                       on_final: OnFinal) -> None:
        """A request bound for UDP that no datagram can carry (over MAX_UDP_PAYLOAD bytes).

        RFC 3261 18.1.1: a request that large MUST go over a congestion-controlled transport, with
        the top Via changed to it; when the TCP attempt fails the client may retry over UDP - not
        possible here. So it goes over TCP to the same host and port (a peer listening on both, as
        most do), from our TCP socket; if we have none, or the peer cannot be reached over TCP (local
        503: no connection; 408: no answer), `on_final` gets a local 513. OpenSIPS sends it over UDP
        regardless: sendto fails (EMSGSIZE, logged) and the transaction times out.
        Below MAX_UDP_PAYLOAD a request stays on UDP, as in OpenSIPS (18.1.1's 1300-byte rule would
        move ordinary presence documents to TCP, which phones behind NAT do not accept)."""
        size = len(request.body)
        call_id = request.header("Call-ID")
        tcp = self._tcp_socket_near(dest.socket)
        if tcp is None:
            log.warning("%s %s to %s: %d-byte body too large for UDP and no TCP socket to send it over",
                        request.method, call_id, dest, size)
            reply = build_reply(too_large, TOO_LARGE, "Message Too Large")
            asyncio.get_running_loop().call_soon(on_final, reply)
            return
        sip, branch = _with_via(request, _via_prefix(tcp))
        tcp_dest = Destination("tcp", dest.host, dest.port, None, tcp)
        log.info("%s %s: %d bytes do not fit in a UDP datagram, sent over TCP to %s (RFC 3261 18.1.1)",
                 request.method, call_id, len(sip.to_bytes()), tcp_dest)

        def on_tcp_final(response: SIPResponse) -> None:
            if response.status in _TCP_FAILED:
                log.info("%s %s: %d-byte body too large for UDP and TCP to %s failed (%d)",
                         request.method, call_id, size, tcp_dest, response.status)
                response = build_reply(sip, TOO_LARGE, "Message Too Large")
            on_final(response)

        self.transactions.send_request(sip, tcp_dest, on_tcp_final, branch=branch)

    def _socket_named(self, name: str) -> SocketInfo | None:
        """The socket called `name` ("udp:127.0.0.1:5060"), else our first one (None: no socket)."""
        for sock in self.sockets:
            if sock.name == name:
                return sock
        return self.sockets[0] if self.sockets else None

    def _socket_of(self, proto: str) -> SocketInfo | None:
        """Our first socket of transport `proto`, else our first one (None: no socket)."""
        for sock in self.sockets:
            if sock.proto == proto:
                return sock
        return self.sockets[0] if self.sockets else None

    def _tcp_socket_near(self, sock: SocketInfo | None) -> SocketInfo | None:
        """Our TCP listening socket on `sock`'s address (else on its address family), or None."""
        family_v6 = sock is not None and ":" in sock.host
        fallback = None
        for candidate in self.sockets:
            if candidate.proto != "tcp":
                continue
            if sock is not None and candidate.host == sock.host:
                return candidate
            if fallback is None and (":" in candidate.host) == family_v6:
                fallback = candidate
        return fallback


def _first_route(request: OutgoingRequest) -> str | None:
    """The URI of the request's first Route, None without one: where it is sent (RFC 3261 8.1.2),
    else to its Request-URI."""
    for name, value in request.headers:
        if name == "Route":
            route = _route_uri(value)
            if route is None:
                raise ParseError(f"Bad Route header: {value!r}")
            return route.text
    return None


def _via_prefix(sock: SocketInfo | None) -> str | None:
    """Our Via for `sock` up to its branch value (RFC 3261 8.1.1.7); None without a socket."""
    if sock is None:
        return None
    return f"SIP/2.0/{sock.proto.upper()} {host_for_uri(sock.host)}:{sock.port};branch="


def _with_via(request: OutgoingRequest, via_prefix: str | None) -> tuple[SIPRequest, str | None]:
    """The request as a SIP request with our Via (`via_prefix` and a fresh branch) first, and the
    branch; no Via without one. Written in first, rather than added to the built request (which
    re-indexes its headers)."""
    if via_prefix is None:
        return request.to_sip(None), None
    branch = generate_branch()
    return request.to_sip(via_prefix + branch), branch


def forget_destinations() -> None:
    """Empty the destination cache (presence's clean_period: the targets of dialogs that have gone
    leave it; the live ones cost one parse of their target each on their next request)."""
    _destination.cache_clear()


@functools.lru_cache(maxsize=DESTINATIONS_MAX)
def _destination(target: str, default_transport: str, sock: SocketInfo | None, conn_id: int | None,
                 conn_transport: str) -> Destination:
    """request_destination for the URI text `target`, kept: the same few answers for every request of
    a dialog. A pure function of its arguments, so one cache serves every sender. Raises ParseError
    for a target that is no URI (not cached)."""
    return request_destination(parse_uri(target), default_transport=default_transport, socket=sock,
                               conn_id=conn_id, conn_transport=conn_transport)
