"""Record-Route entries (OpenSIPS rr record.c), built once the socket a request leaves by is known.

record_route() asks for one entry naming the socket the request is sent from; with enable_double_rr
and a request leaving by another socket than it came in on (UDP in, TCP out; two networks), two: the
sending socket on top, then the receiving one, both with `;r2=on` so loose_route() removes both later.
An entry reads (record.c build_rr and the SUBST_SND_ALL lump):

    <sip:[user@]host[:port][;transport=tcp][;r2=on];lr[;ftag=<From tag>][params]>

the port left out when it is 5060, the transport when it is UDP. record_route_preset(addr[, addr2])
writes the address as given: <sip:[user@]addr[;ftag=<From tag>];lr[params]>.

Nothing is added to the request the script sees: local replies and modules reading the request
(presence keeps the Record-Route set of a SUBSCRIBE) see the route set as it arrived, as in OpenSIPS,
where record_route() only adds lumps applied to what is forwarded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from routescript.sip import SIPRequest, SocketInfo
from routescript.sip.hosts import host_for_uri

DEFAULT_PORT = 5060

# add_rr_param / record_route(params): ";name[=value]" pairs (uri-parameter, RFC 3261 19.1.1; the
# characters that would end the URI or the header are refused).
_PARAMS_RE = re.compile(r"^(;[^;\s<>=\",]+(=[^;\s<>\",]*)?)+$")


def check_params(text: str) -> str:
    """";nat=yes" (the leading ';' added when missing); ValueError when it is not URI parameters."""
    params = text.strip()
    if params and not params.startswith(";"):
        params = ";" + params
    if params and not _PARAMS_RE.match(params):
        raise ValueError(f"bad Record-Route parameters {text!r} (expected \";name=value\")")
    return params


def socket_hostport(sock: SocketInfo, advertised: tuple[str, int | None] | None) -> str:
    """host[:port][;transport=tcp] of a socket (its advertised address when it has one)."""
    if advertised is not None:
        host, port = advertised
        port = port if port is not None else sock.port
    else:
        host, port = host_for_uri(sock.host), sock.port
    text = host if port == DEFAULT_PORT else f"{host}:{port}"
    return text if sock.proto == "udp" else f"{text};transport={sock.proto}"


def same_realm(a: SocketInfo, b: SocketInfo) -> bool:
    """One socket for both directions: a single Record-Route (OpenSIPS COND_IF_DIFF_REALMS)."""
    return a.proto == b.proto and a.host == b.host and a.port == b.port


@dataclass(slots=True, eq=False)
class RecordRoute:
    """The Record-Route one request asked for: record_route() / record_route_preset() and the
    add_rr_param() values, before or after them. `hook` is what ctx.send_hooks calls with each
    outgoing copy of the request and the socket it leaves by."""

    user: str | None = None
    from_tag: str | None = None
    params: list[str] = field(default_factory=list)
    requested: bool = False                  # record_route() or record_route_preset() was called
    preset: tuple[str, ...] = ()             # record_route_preset's addresses, outbound first
    own_params: str = ""                     # record_route("...")'s parameters
    double_rr: bool = True
    in_socket: SocketInfo | None = None      # where the request came in
    advertised: Callable[[SocketInfo], tuple[str, int | None] | None] = lambda _s: None

    def entries(self, out_socket: Any) -> list[str]:
        """The Record-Route values for a request sent from `out_socket`, top first."""
        params = self.own_params + "".join(self.params)
        user = f"{self.user}@" if self.user else ""
        ftag = f";ftag={self.from_tag}" if self.from_tag else ""
        if self.preset:
            return [f"<sip:{user}{addr}{ftag};lr{params}>" for addr in self.preset]
        sockets = [out_socket]
        inbound = self.in_socket
        if self.double_rr and inbound is not None and out_socket is not None and \
                not same_realm(inbound, out_socket):
            sockets.append(inbound)
        r2 = ";r2=on" if len(sockets) == 2 else ""
        return [f"<sip:{user}{socket_hostport(s, self.advertised(s))}{r2};lr{ftag}{params}>" for s in sockets]

    def hook(self, request: SIPRequest, out_socket: Any) -> None:
        """ctx.send_hooks: our entries on top of the Record-Route set of the outgoing request."""
        if out_socket is None and not self.preset:
            raise ValueError("record_route: the sending socket is not known")
        for value in reversed(self.entries(out_socket)):
            request.add_header("Record-Route", value, first=True)
