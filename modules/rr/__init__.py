"""rr - Record-Route and loose routing (OpenSIPS 3.4 rr module). docs/modules/rr.md lists every function
and parameter with where we differ.

record_route([params]) / record_route_preset(addr[, addr2]) add a hook to ctx.send_hooks: the entries
(one, or two for a double Record-Route) are written when the sender knows the socket the request
leaves by (record.py). loose_route() routes by the Route set (loose.py); check_route_param(),
is_direction() and $rr_params read the parameters of the Route entry of ours it removed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from routescript.core.module import Arg, Module, Param, pseudo_variable, script_function
from routescript.script.context import BRANCH_ROUTE, FAILURE_ROUTE, REQUEST_ROUTE, MsgContext
from routescript.sip import ParseError, SIPRequest, SipURI, SocketInfo

from .loose import LooseResult, loose_route, uri_port
from .record import RecordRoute, check_params

log = logging.getLogger("routescript.rr")

_RECORD_ROUTES = (REQUEST_ROUTE, BRANCH_ROUTE, FAILURE_ROUTE)
_RR = "rr"              # ctx.extra key: the message's _RrState


class _RrState:
    """Per message: the Record-Route asked for, and what loose_route() found (for check_route_param,
    is_direction and $rr_params). Made only for a message that calls an rr function."""

    __slots__ = ("record", "route_params")

    def __init__(self) -> None:
        self.record: RecordRoute | None = None
        self.route_params: str | None = None


def _state(ctx: MsgContext) -> _RrState:
    state = ctx.extra.get(_RR)
    if state is None:
        state = ctx.extra[_RR] = _RrState()
    return state


def _bool_param(value: Any) -> None:
    if int(value) not in (0, 1):
        raise ValueError("must be 0 or 1")


def _direction(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("downstream", "upstream"):
        raise ValueError(f"unknown direction {value!r} (\"downstream\" or \"upstream\")")
    return text


class RrModule(Module):
    name = "rr"
    params = (
        Param("append_fromtag", int, 1, "add ;ftag=<From tag> to Record-Route (is_direction needs it)",
              check=_bool_param),
        Param("enable_double_rr", int, 1, "two Record-Route entries when a request leaves by another "
              "socket than it came in on", check=_bool_param),
        Param("add_username", int, 0, "put the Request-URI user in the Record-Route URI", check=_bool_param),
        Param("enable_socket_mismatch_warning", int, 1, "warn when a Route of ours names no socket of ours",
              check=_bool_param),
    )

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        # load-time parameters: read once
        self._append_fromtag = bool(self.param("append_fromtag"))
        self._double_rr = bool(self.param("enable_double_rr"))
        self._add_username = bool(self.param("add_username"))
        self._mismatch_warning = bool(self.param("enable_socket_mismatch_warning"))
        # OpenSIPS's register_rrcb(): called after a successful loose_route() with the message and the
        # parameters of our Route entry ("" when none); the dialog module matches in-dialog requests so
        self.loose_route_callbacks: list[Callable[[MsgContext, str], None]] = []
        if not self._append_fromtag:
            # OpenSIPS direction_fixup: "usage of is_direction requires append_fromtag enabled"
            self.refused["is_direction"] = ("is_direction() reads the ;ftag= Record-Route parameter: "
                                            "it needs modparam(\"rr\", \"append_fromtag\", 1)")

    # --- Record-Route -------------------------------------------------------------------------------

    def _new_record(self, ctx: MsgContext, state: _RrState) -> RecordRoute | None:
        """The RecordRoute of the request, its hook on ctx.send_hooks; None (logged) when it has one."""
        msg = ctx.msg
        if not isinstance(msg, SIPRequest):
            raise ValueError("there is no request to record-route")
        record = state.record
        if record is not None and record.requested:
            log.error("double attempt to record-route (Call-ID %s)", msg.header("Call-ID"))
            return None
        try:
            user = msg.uri.user if self._add_username else None
            from_tag = msg.from_.tag if self._append_fromtag else None
        except ParseError as exc:
            raise ValueError(f"cannot record-route: {exc.reason}") from None
        if record is None:
            record = state.record = RecordRoute()
        record.requested = True
        record.user, record.from_tag = user, from_tag
        record.double_rr = self._double_rr
        record.in_socket = ctx.source.socket if ctx.source is not None else None
        record.advertised = self._advertised
        hooks = ctx.send_hooks
        if hooks is None:
            ctx.send_hooks = [record.hook]
        else:
            hooks.append(record.hook)
        return record

    @script_function("record_route", Arg("str", "params", optional=True), routes=_RECORD_ROUTES)
    def record_route(self, ctx: MsgContext, params: str | None = None) -> int:
        own = check_params(params) if params else ""
        record = self._new_record(ctx, _state(ctx))
        if record is None:
            return -1
        record.own_params = own
        return 1

    @script_function("record_route_preset", Arg("str", "address"), Arg("str", "address2", optional=True),
                     routes=_RECORD_ROUTES)
    def record_route_preset(self, ctx: MsgContext, address: str, address2: str | None = None) -> int:
        if address2 is not None and not self._double_rr:
            log.error("record_route_preset: a second address while enable_double_rr is 0")
            return -1
        addrs = tuple(a.strip() for a in (address, address2) if a is not None)
        for addr in addrs:
            if not addr or any(c in addr for c in "<>\r\n \t"):
                raise ValueError(f"record_route_preset: bad address {addr!r}")
        record = self._new_record(ctx, _state(ctx))
        if record is None:
            return -1
        record.preset = addrs
        return 1

    @script_function("add_rr_param", Arg("str", "param"), routes=_RECORD_ROUTES)
    def add_rr_param(self, ctx: MsgContext, param: str) -> int:
        """Before or after record_route(): the parameter ends up in its entries."""
        text = check_params(param)
        state = _state(ctx)
        if state.record is None:
            state.record = RecordRoute()
        state.record.params.append(text)
        return 1

    def _advertised(self, sock: SocketInfo) -> tuple[str, int | None] | None:
        """The address a socket advertises (`socket = ... as host[:port]`, else advertised_address /
        advertised_port), None when none is set (OpenSIPS: adv_name, then the global ones)."""
        config = self.server.config
        for spec in config.listen_specs():
            if (spec.proto, spec.host, spec.port) == (sock.proto, sock.host, sock.port) and spec.advertised:
                host, _, port = spec.advertised.rpartition(":")
                if host and port.isdigit() and not spec.advertised.endswith("]"):
                    return host, int(port)
                return spec.advertised, None
        host = config.get("advertised_address")
        port = config.get("advertised_port")
        if host or port:
            from routescript.sip.hosts import host_for_uri
            return (str(host) if host else host_for_uri(sock.host)), (int(port) if port else None)
        return None

    # --- loose routing ------------------------------------------------------------------------------

    @script_function("loose_route", routes=(REQUEST_ROUTE,))
    def loose_route(self, ctx: MsgContext) -> int:
        msg = ctx.msg
        if not isinstance(msg, SIPRequest):
            return -1
        result = loose_route(msg, self._is_myself, double_rr=self._double_rr)
        if result.error is not None:
            log.error("loose_route: %s (Call-ID %s)", result.error, msg.header("Call-ID"))
            return -1
        self._apply(ctx, result)
        if result.rc > 0 and self.loose_route_callbacks:
            params = result.our_params or ""
            for callback in list(self.loose_route_callbacks):
                try:
                    callback(ctx, params)
                except Exception:
                    log.exception("loose_route: a callback failed (Call-ID %s)", msg.header("Call-ID"))
        return result.rc

    def _is_myself(self, uri: SipURI) -> bool:
        return bool(self.server.is_myself(uri.host, uri_port(uri)))

    def _apply(self, ctx: MsgContext, result: LooseResult) -> None:
        if result.our_params is not None:
            _state(ctx).route_params = result.our_params
        if result.dst_uri is not None:
            ctx.dst_uri = result.dst_uri
        if result.socket_uri is not None:
            sock = self._socket_of(result.socket_uri)
            if sock is not None:
                ctx.send_socket = sock
            elif self._mismatch_warning:
                log.warning("loose_route: no socket of ours matches Route %s", result.socket_uri)
        elif result.received_socket and ctx.source is not None:
            ctx.send_socket = ctx.source.socket

    def _socket_of(self, uri: SipURI) -> SocketInfo | None:
        from routescript.sip.hosts import normalize_host

        proto = (uri.transport or "udp").lower()
        host, port = normalize_host(uri.host), uri_port(uri)
        for sock in self.server.sockets:
            if sock.proto == proto and sock.port == port and normalize_host(sock.host) == host:
                return sock
        return None

    @script_function("check_route_param", Arg("regex", "re"), routes=(REQUEST_ROUTE,))
    def check_route_param(self, ctx: MsgContext, rx: re.Pattern[str]) -> int:
        """The parameters of our Route entry (";lr;ftag=...;nat=yes", with its first ';') match rx."""
        state = ctx.extra.get(_RR)
        params = state.route_params if state is not None else None
        if not params:
            return -1
        return 1 if rx.search(";" + params) else -1

    @script_function("is_direction", Arg("str", "direction", fixup=_direction), routes=(REQUEST_ROUTE,))
    def is_direction(self, ctx: MsgContext, direction: str) -> int:
        """upstream when our Route's ftag is not the From tag (the callee sends), else downstream -
        also when there is no ftag (OpenSIPS)."""
        direction = _direction(direction)
        flow = "downstream"
        state = ctx.extra.get(_RR)
        ftag = _param(state.route_params, "ftag") if state is not None and state.route_params else None
        msg = ctx.msg
        if ftag and isinstance(msg, SIPRequest):
            try:
                tag = msg.from_.tag
            except ParseError:
                tag = None
            if tag and tag != ftag:
                flow = "upstream"
        return 1 if flow == direction else -1

    @pseudo_variable("rr_params")
    def pv_rr_params(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        """The parameters of the Route entry of ours loose_route() removed ("lr;ftag=a1"), else NULL."""
        state = ctx.extra.get(_RR)
        return state.route_params if state is not None else None


def _param(params: str, name: str) -> str | None:
    for part in params.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == name:
            return value.strip()
    return None


MODULE = RrModule
