"""loose_route(): routing a request by its Route set (RFC 3261 16.4, 16.6 step 6, 16.12; OpenSIPS rr
loose.c), sans-IO: it edits the request and says what it decided; the module applies the rest.

Three cases, as OpenSIPS tells them apart:
- preloaded (no To tag: an initial request carrying a Route set) and in-dialog requests whose
  Request-URI is not ours - "after loose": our own entries on top of the Route set are removed (two of
  them after a double Record-Route, `;r2=on`); the next Route, when there is one, is the next hop ($du)
  if it is a loose router (`;lr`); a strict router (no `;lr`) goes into the Request-URI and the
  Request-URI is kept as the last Route (RFC 3261 16.6 step 6).
- the Request-URI is ours (a strict router before us put our Record-Route there, RFC 3261 16.4) -
  "after strict": the last Route is the remote target, restored as the Request-URI and removed; the
  next Route is the next hop.

Return codes (OpenSIPS): 1 routed by the Route set; -1 no Route header, a bad one, or a preloaded
request whose only Route was ours (the script goes on to route it by its Request-URI).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from routescript.sip import NameAddr, ParseError, SIPRequest, SipURI, parse_name_addr

IsMyself = Callable[[SipURI], bool]


@dataclass(slots=True)
class LooseResult:
    """What loose_route decided, for the module to apply to the context."""

    rc: int
    dst_uri: str | None = None          # the next hop, when it is a loose router ($du)
    our_params: str | None = None       # the parameters of our Route entry ($rr_params, without ';')
    socket_uri: SipURI | None = None    # leave by the socket this URI names (our 2nd Record-Route)
    received_socket: bool = False       # leave by the socket the request came in on
    error: str | None = None


def uri_port(uri: SipURI) -> int:
    return uri.port or (5061 if uri.scheme == "sips" or (uri.transport or "") == "tls" else 5060)


def _params_text(uri: SipURI) -> str:
    """The URI parameters as written after the first ';' ("lr;ftag=a1;nat=yes")."""
    return ";".join(n if v is None else f"{n}={v}" for n, v in uri.params)


def _is_strict(route: NameAddr) -> bool:
    return not route.uri.has_param("lr")


def _is_2rr(uri: SipURI) -> bool:
    return uri.has_param("r2")


def _ours_loose(route: NameAddr, is_myself: IsMyself) -> bool:
    """A loose Route entry of ours (not the second of a double Record-Route) on top.

    Choice where OpenSIPS differs: OpenSIPS takes every request whose Request-URI is ours as coming
    from a strict router. When the top Route is a loose entry of ours too, no strict router can have
    sent it (it would have put that entry in the Request-URI): the request is for us (our Contact as
    the remote target, e.g. a presence server's dialog) and is routed as loose - our entry removed."""
    uri = route.uri
    return uri.has_param("lr") and not _is_2rr(uri) and is_myself(uri)


def _set_routes(msg: SIPRequest, values: list[str]) -> None:
    """Replace the Route header lines by `values`, one per line, where the first Route line was."""
    msg.replace_header("Route", values)


def loose_route(msg: SIPRequest, is_myself: IsMyself, *, double_rr: bool = True) -> LooseResult:
    if not msg.has_header("Route"):
        return LooseResult(-1)
    try:
        values = msg.header_values("Route")
        routes = [parse_name_addr(v, "Route") for v in values]
        ruri = msg.uri
        preloaded = not msg.to.tag
    except ParseError as exc:
        return LooseResult(-1, error=exc.reason)
    if not routes:
        return LooseResult(-1)
    strict_before_us = is_myself(ruri) and not ruri.has_param("gr") and not _ours_loose(routes[0], is_myself)
    if not preloaded and strict_before_us:
        return _after_strict(msg, values, routes, is_myself, double_rr)
    return _after_loose(msg, values, routes, is_myself, double_rr, preloaded)


def _after_loose(msg: SIPRequest, values: list[str], routes: list[NameAddr], is_myself: IsMyself,
                 double_rr: bool, preloaded: bool) -> LooseResult:
    result = LooseResult(1)
    top = routes[0].uri
    if is_myself(top):
        result.our_params = _params_text(top)
        del values[0], routes[0]
        if double_rr and _is_2rr(top) and routes and is_myself(routes[0].uri):
            # our second Record-Route: the request leaves by the socket it names
            result.socket_uri = routes[0].uri
            del values[0], routes[0]
        else:
            result.received_socket = not preloaded
        if not routes:
            # nothing after us: routed by the Request-URI; a preloaded Route naming only us is no
            # route set at all (OpenSIPS NOT_RR_DRIVEN)
            _set_routes(msg, values)
            result.rc = -1 if preloaded else 1
            return result
    nxt = routes[0]
    if _is_strict(nxt):
        # RFC 3261 16.6 step 6: the strict router gets the Request-URI; our Request-URI goes last
        values.append(f"<{msg.ruri}>")
        msg.ruri = str(nxt.uri)
        del values[0]
    else:
        result.dst_uri = str(nxt.uri)
    _set_routes(msg, values)
    return result


def _after_strict(msg: SIPRequest, values: list[str], routes: list[NameAddr], is_myself: IsMyself,
                  double_rr: bool) -> LooseResult:
    """The Request-URI is ours: the previous hop was a strict router (RFC 3261 16.4)."""
    ours = msg.uri
    result = LooseResult(1, our_params=_params_text(ours))
    top = routes[0].uri
    if double_rr and _is_2rr(top) and is_myself(top):
        result.socket_uri = top           # the second of our double Record-Route
        del values[0], routes[0]
        if not routes:
            _set_routes(msg, values)
            return LooseResult(-1, our_params=result.our_params, socket_uri=top)
    else:
        result.socket_uri = ours
    nxt = routes[0]
    if _is_strict(nxt):
        # strict after strict: the next hop goes into the Request-URI, as a strict router would
        msg.ruri = str(nxt.uri)
        del values[0]
    else:
        result.dst_uri = str(nxt.uri)
        # RFC 3261 16.4: "replace the Request-URI [...] with the last value from the Route header
        # field, and remove that value from the Route header field"
        msg.ruri = str(routes[-1].uri)
        del values[-1]
    _set_routes(msg, values)
    return result
