"""The relay sender: "send this request on to this destination" - the one place a proxied request is
made and sent, statefully (tm's t_relay, one client transaction per attempt) or statelessly (forward()).

What it owns (RFC 3261 16.6):
- the next hop: $du when set, else the Request-URI (OpenSIPS: loose_route() has put the next Route in
  $du already), resolved by the server's Resolver (routescript.resolve) into Targets, tried in order;
- the outgoing request: a copy of the received one with the branch's Request-URI (step 1-2) and
  Max-Forwards decremented - unless the script's mf_process_maxfwd_header() did it already, as in
  OpenSIPS - or set to 70 when absent (step 3);
- the socket it leaves by: force_send_socket()'s, else our first socket of the target's transport and
  address family;
- our Via on top with a fresh branch (step 8; in a worker process the branch names its slot, so the
  responses come back to it: docs/workers.md 2), then the send hooks (rr's Record-Route, which needs
  the socket: step 4), then the bytes;
- the client transaction (stateful), or the transport's send (stateless).

A response to a stateless forward carries our stateless branch ("z9hG4bKsl" + a hash of the request,
the same for its retransmissions: RFC 3261 16.11); it matches no transaction and `forward_reply` sends it
on to the next Via (RFC 3261 16.11 / 16.7 step 3). Any other response that matches nothing is stray.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from routescript.resolve import ResolveError, Resolver, Target
from routescript.script.context import FAILURE_ROUTE, REQUEST_ROUTE, MsgContext
from routescript.script.registry import ArgSpec, FunctionSpec, function
from routescript.sip import Destination, ParseError, SIPRequest, SIPResponse, SipURI, SocketInfo, parse_uri
from routescript.sip.address import bare_host, is_ip, is_ipv6
from routescript.sip.build import generate_branch
from routescript.sip.hosts import host_for_uri

log = logging.getLogger("routescript.core")

STATELESS_BRANCH = "z9hG4bKsl"    # our stateless forwards' branches start so (never a worker slot's form)
MAXFWD_DONE = "maxfwd.done"       # ctx.extra key: mf_process_maxfwd_header() has decremented already
DEFAULT_MAX_FORWARDS = 70         # RFC 3261 16.6 step 3
LITERAL_TARGETS_KEPT = 4096       # Relay.targets' answers for IP-address URIs kept (then started again)

SendHook = Callable[[SIPRequest, Any], None]
OnResponse = Callable[[SIPResponse], None]


class RelayError(Exception):
    """The request cannot be relayed. `code` is OpenSIPS's t_relay/forward return code for it (-2 bad
    message, -3 no destination, -4 unresolvable destination, -6 send failure) and `sl_error` the reply
    sl_reply_error() then sends."""

    def __init__(self, message: str, code: int, sl_error: tuple[int, str]) -> None:
        super().__init__(message)
        self.code = code
        self.sl_error = sl_error


def bad_message(message: str) -> RelayError:
    return RelayError(message, -2, (400, "Bad Request"))


def no_destination(message: str) -> RelayError:
    return RelayError(message, -4, (478, "Unresolvable destination"))


def send_failed(message: str) -> RelayError:
    return RelayError(message, -6, (477, "Sending to next hop failed"))


@dataclass(frozen=True, slots=True)
class Attempt:
    """One send of a branch: the request with our Via, where it goes, its branch."""

    request: SIPRequest
    destination: Destination
    branch: str


class Relay:
    """`server.relay`. transactions: the TransactionLayer; transport: the TransportLayer (its
    send(data, dest)); sockets: our listening sockets (the server's list, read at each send);
    resolver: where Request-URIs become Targets (the one the server picked)."""

    def __init__(self, transactions: Any, transport: Any, sockets: Sequence[SocketInfo],
                 resolver: Resolver) -> None:
        self.transactions = transactions
        self.transport = transport
        self.sockets = sockets
        self.resolver = resolver
        # the Targets of Request-URIs/$du naming an IP address (no lookup: the same answer each time
        # for the same sockets and resolver), by (URI text, protos): a dialog's requests reuse them
        self._literal: dict[tuple[str, frozenset[str]], tuple[Target, ...]] = {}
        self._literal_resolver: Resolver | None = resolver

    @property
    def protos(self) -> frozenset[str]:
        """The transports we can send over (those we listen on)."""
        return frozenset([s.proto for s in self.sockets])   # a list display: no generator per relayed request

    # --- where to -------------------------------------------------------------------------------

    async def targets(self, uri_text: str) -> list[Target]:
        """The Targets of `uri_text` in the order to try them (RelayError -4 when there are none)."""
        protos = self.protos
        if self._literal_resolver is not self.resolver:   # another resolver: its answers may differ
            self._literal.clear()
            self._literal_resolver = self.resolver
        known = self._literal.get((uri_text, protos))
        if known is not None:
            return list(known)
        try:
            uri = _parsed_uri(uri_text)
        except ParseError as exc:
            raise no_destination(f"{uri_text!r} is not a URI ({exc.reason})") from None
        try:
            found = self.resolver.resolve_now(uri, protos)
            if found is None:
                found = await self.resolver.resolve(uri, protos)
        except ResolveError as exc:
            raise no_destination(str(exc)) from None
        if not found:
            raise no_destination(f"{uri_text}: no target")
        if is_ip(bare_host(uri.param("maddr") or uri.host)):
            if len(self._literal) >= LITERAL_TARGETS_KEPT:
                self._literal.clear()
            self._literal[(uri_text, protos)] = tuple(found)
        return found

    def socket_for(self, target: Target, forced: SocketInfo | None) -> SocketInfo:
        """force_send_socket()'s socket when it has the target's transport, else our first socket of
        that transport and address family (RelayError -4 when we have none)."""
        if forced is not None and forced.proto == target.proto:
            return forced
        v6 = is_ipv6(target.host)
        for sock in self.sockets:
            if sock.proto == target.proto and is_ipv6(sock.host) == v6:
                return sock
        raise no_destination(f"no {target.proto} socket of the address family of {target.host}")

    # --- the request ------------------------------------------------------------------------------

    @staticmethod
    def outgoing(request: SIPRequest, ruri: str | None, maxfwd_done: bool) -> SIPRequest:
        """A copy of `request` to send on: its Request-URI `ruri` (when given) and Max-Forwards
        decremented (RFC 3261 16.6 step 3) unless the script did it; RelayError -2 when it is 0 or
        not a number (mf_process_maxfwd_header() answers 483 before: scripts call it first)."""
        out = request.copy()
        if ruri is not None and ruri != out.ruri:
            out.ruri = ruri
        if maxfwd_done:
            return out
        try:
            hops = out.max_forwards
        except ParseError as exc:
            raise bad_message(f"bad Max-Forwards: {exc.reason}") from None
        if hops is None:
            out.add_header("Max-Forwards", str(DEFAULT_MAX_FORWARDS))
        elif hops <= 0:
            raise RelayError("Max-Forwards is 0: not relayed (answer 483 with mf_process_maxfwd_header())",
                             -2, (483, "Too Many Hops"))
        else:
            out.set_header("Max-Forwards", str(hops - 1))
        return out

    @staticmethod
    def attempt(base: SIPRequest, target: Target, sock: SocketInfo, hooks: Sequence[SendHook] | None, *,
                branch: str | None = None, last: bool = False) -> Attempt:
        """`base` (from `outgoing`) with our Via for `sock` on top (a fresh branch unless given), the
        send hooks run with the socket: ready for the wire. A copy of `base` is edited, so another
        attempt (failover to the next target) starts from it again; `last`: no other attempt will be
        made from `base`, which is edited itself (one copy of the request less per relayed request)."""
        request = base if last else base.copy()
        branch = branch or generate_branch()
        request.add_header("Via", f"SIP/2.0/{sock.proto.upper()} {host_for_uri(sock.host)}:{sock.port}"
                                  f";branch={branch}", first=True)
        if hooks:
            for hook in hooks:
                hook(request, sock)
        return Attempt(request, Destination(target.proto, target.host, target.port, None, sock), branch)

    # --- sending ----------------------------------------------------------------------------------

    def send_stateful(self, attempt: Attempt, on_final: OnResponse, on_provisional: OnResponse, *,
                      fr_timeout: float | None = None) -> Any:
        """A client transaction for `attempt` (INVITE or not): on_final once, on_provisional for each
        1xx (and, for INVITE, the 2xx after the first); `fr_timeout`: the wait for the first reply when
        not the configured one (t_set_fr). Returns the transaction, None when refused
        (on_final gets a 503 then)."""
        return self.transactions.send_request(attempt.request, attempt.destination, on_final,
                                              on_provisional=on_provisional, branch=attempt.branch,
                                              fr_timeout=fr_timeout)

    def send_stateless(self, attempt: Attempt) -> None:
        """Hand `attempt` to the transport (RelayError -6 when it cannot be sent at all)."""
        try:
            self.transport.send(attempt.request.to_bytes(), attempt.destination)
        except OSError as exc:
            raise send_failed(f"cannot send to {attempt.destination}: {exc}") from None

    def forward_reply(self, response: SIPResponse) -> bool:
        """A response to one of our stateless forwards (our stateless branch on top), or a late 2xx to an
        INVITE we relayed: our Via taken off and the response sent to the next one (RFC 3261 18.2.2 rules:
        received, rport, sent-by). False for any other response (the caller drops it as stray)."""
        try:
            via = response.via
            if not (via.branch or "").startswith(STATELESS_BRANCH) and not self._late_2xx(response, via):
                return False
        except ParseError:
            return False    # no readable Via: not ours (the caller drops it as stray)
        try:
            response.remove_top_via()
            nxt = response.via
        except (ParseError, ValueError) as exc:
            log.debug("response to a stateless forward without a Via to send it to: %s", exc)
            return True
        proto = nxt.transport.lower()
        rport = nxt.rport
        port = rport if isinstance(rport, int) and not isinstance(rport, bool) else (nxt.port or 5060)
        dest = Destination(proto, bare_host(nxt.received or nxt.host), port)
        try:
            self.transport.send(response.to_bytes(), dest)
        except OSError as exc:
            log.info("cannot forward a %d response to %s: %s", response.status, dest, exc)
        return True


    def _late_2xx(self, response: SIPResponse, via: Any) -> bool:
        """A 2xx to an INVITE we relayed whose branch is done (a retransmission, another fork's 2xx):
        our Via on top. Forwarded like a stateless one (RFC 3261 16.7; RFC 6026 7.2 wants every 2xx to
        reach the caller)."""
        if not 200 <= response.status < 300 or response.cseq.method != "INVITE":
            return False
        port = via.port or 5060
        host = bare_host(via.host)
        return any(s.port == port and s.host == host for s in self.sockets)


@functools.lru_cache(maxsize=4096)
def _parsed_uri(text: str) -> SipURI:
    """parse_uri, kept: a dialog's requests go to the same few targets (a ParseError is not cached)."""
    return parse_uri(text)


def stateless_branch(request: SIPRequest) -> str:
    """The branch of a stateless forward of `request`: the same for its retransmissions (RFC 3261
    16.11), different for each hop's request (the received top branch is part of it)."""
    try:
        text = "\x00".join((request.method, request.via.branch or "", request.call_id,
                             str(request.cseq.number), request.ruri))
    except ParseError:
        text = request.to_bytes().decode("utf-8", "replace")
    return STATELESS_BRANCH + hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:20]


async def forward_request(relay: Relay, ctx: MsgContext, dest: str | None = None) -> int:
    """forward([dest]) and t_relay() of an ACK: ctx.msg sent on statelessly to `dest`, else $du, else
    its Request-URI (first target only: a stateless send has no failover). 1 when sent, else the
    RelayError code (logged; sl_reply_error() then sends its reply)."""
    msg = ctx.msg
    if not isinstance(msg, SIPRequest):
        log.error("forward: no request to forward")
        return -1
    try:
        targets = await relay.targets(dest or ctx.dst_uri or msg.ruri)
        base = relay.outgoing(msg, None, bool(ctx.extra.get(MAXFWD_DONE)))
        sock = relay.socket_for(targets[0], ctx.send_socket)
        attempt = relay.attempt(base, targets[0], sock, ctx.send_hooks, branch=stateless_branch(msg),
                                last=True)
        relay.send_stateless(attempt)
    except RelayError as exc:
        log.warning("%s %s not forwarded: %s", msg.method, msg.header("call-id"), exc)
        ctx.extra["sl_error"] = exc.sl_error
        return exc.code
    return 1


async def forward(ctx: MsgContext, dest: Any = None) -> int:
    """The script's forward([dest]): `dest` a URI or "[proto:]host[:port]", else $du, else the
    Request-URI; stateless (forward_request)."""
    relay: Relay | None = getattr(ctx.server, "relay", None)
    if relay is None:
        log.error("forward: the server is not started")
        return -1
    target = None
    if dest not in (None, ""):
        text = str(dest).strip()
        proto, _, rest = text.partition(":")
        if text.startswith(("sip:", "sips:")):
            target = text
        elif proto.lower() in ("udp", "tcp", "tls", "ws", "wss") and rest:
            target = f"sip:{rest};transport={proto.lower()}"
        else:
            target = f"sip:{text}"
    return await forward_request(relay, ctx, target)


def relay_functions() -> list[FunctionSpec]:
    """The core's sending functions (registered with core_functions)."""
    return [function("forward", forward, ArgSpec("str", optional=True, name="destination"),
                     routes=(REQUEST_ROUTE, FAILURE_ROUTE))]
