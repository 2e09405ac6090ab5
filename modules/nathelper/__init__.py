"""nathelper - help for user agents behind NATs and for WebSocket clients (OpenSIPS 3.4 nathelper).
docs/modules/nathelper.md lists every function and parameter with where we differ.

fix_nated_contact() writes the message's source address into its Contact URIs, so requests inside the
dialog (and a NOTIFY to a watcher) go back where the message came from - a browser's `xyz.invalid`
Contact becomes its own `ip:port;transport=ws`, which the transport reaches over its WebSocket.
fix_nated_register() hands the same address to the registrar through received_avp (the binding keeps
the Contact the client wrote, as RFC 3261 10.3 wants it echoed), add_rcv_param() writes it into the
Contact as a `received` parameter, nat_uac_test() says whether the message looks NATed.

NAT pinging (natping_interval and the sipping_* parameters) and fix_nated_sdp() are not built: the
parameters are refused at load for any value but their default, the function is not declared.
"""

from __future__ import annotations

import logging
from typing import Any

from routescript.core.module import Arg, ConfigError, Module, Param, script_function
from routescript.script.context import (
    BRANCH_ROUTE,
    FAILURE_ROUTE,
    LOCAL_ROUTE,
    ONREPLY_ROUTE,
    REQUEST_ROUTE,
    MsgContext,
)
from routescript.script.pv_script import set_avp
from routescript.sip import ParseError, Source

from . import _nat

log = logging.getLogger("routescript.nathelper")

_FIXED = "nathelper.contact_fixed"   # ctx.extra: fix_nated_contact() ran for this message
_PINGING = "NAT pinging is not built (keep-alives: the client's own, RFC 5626 CRLF pings over WebSocket)"
_SDP = "fix_nated_sdp() is not built"


def _avp_spec(value: Any) -> None:
    text = str(value)
    if text and not (text.startswith("$avp(") and text.endswith(")") and len(text) > 6):
        raise ValueError(f"must name an AVP ($avp(name)), got {text!r}")


def _uri_params(value: Any) -> Any:
    text = str(value)
    if "$" not in text:
        _nat.uri_params(text)   # raises ValueError: refused at load when written out
    return value


def _uac_flags(value: Any) -> int:
    return value if isinstance(value, int) else _nat.uac_test_mask(str(value))


class NathelperModule(Module):
    name = "nathelper"
    params = (
        Param("received_avp", str, "", "AVP fix_nated_register() stores the source URI in (the "
              "registrar's received_avp)", check=_avp_spec),
        Param("natping_interval", int, 0, later=_PINGING),
        Param("ping_nated_only", int, 0, later=_PINGING),
        Param("natping_partitions", int, 1, later=_PINGING),
        Param("natping_socket", str, "", later=_PINGING),
        Param("natping_tcp", int, 0, later=_PINGING),
        Param("force_socket", str, "", later=_PINGING + "; force_socket is the pings' socket"),
        Param("sipping_bflag", str, "", later=_PINGING),
        Param("remove_on_timeout_bflag", str, "", later=_PINGING),
        Param("sipping_latency_flag", str, "", later=_PINGING),
        Param("sipping_ignore_rpl_codes", str, "", later=_PINGING),
        Param("sipping_from", str, "", later=_PINGING),
        Param("sipping_method", str, "OPTIONS", later=_PINGING),
        Param("ping_threshold", int, 3, later=_PINGING),
        Param("max_pings_lost", int, 3, later=_PINGING),
        Param("cluster_id", int, 0, later=_PINGING + "; the cluster only shares the pinging"),
        Param("cluster_sharing_tag", str, "", later=_PINGING + "; the cluster only shares the pinging"),
        Param("nortpproxy_str", str, "a=nortpproxy:yes", later=_SDP),
        Param("oldip_skip", str, "", later=_SDP),
    )

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._received_avp = str(self.param("received_avp"))
        if not self._received_avp:
            # OpenSIPS returns 1 and does nothing: the binding would silently keep no address
            self.refused["fix_nated_register"] = ("fix_nated_register() stores the source address in "
                                                  "received_avp: set modparam(\"nathelper\", "
                                                  "\"received_avp\", \"$avp(...)\") (and the registrar's "
                                                  "to the same AVP)")

    async def start(self) -> None:
        registrar = self.server.modules.get("registrar")
        theirs = str(registrar.param("received_avp")) if registrar is not None else ""
        if self._received_avp and registrar is not None and theirs != self._received_avp:
            raise ConfigError(f"nathelper: received_avp is {self._received_avp!r} but the registrar's is "
                              f"{theirs!r}: they must name the same AVP, or the binding keeps no address")

    # --- the functions ---------------------------------------------------------------------------------

    @script_function("fix_nated_contact", Arg("str", "uri_params", optional=True, fixup=_uri_params),
                     routes=(REQUEST_ROUTE, ONREPLY_ROUTE, BRANCH_ROUTE, LOCAL_ROUTE))
    def fix_nated_contact(self, ctx: MsgContext, params: str | None = None) -> int:
        src = _source(ctx, "fix_nated_contact")
        if src is None:
            return -1
        if ctx.extra.get(_FIXED):
            # OpenSIPS: "SCRIPT BUG - second attempt to change URI Contact"
            log.error("fix_nated_contact: called twice for one message (Call-ID %s)", _call_id(ctx))
            return -1
        try:
            extra = _nat.uri_params(params or "")
            values = _nat.nated_contacts(ctx.msg, src, extra)  # type: ignore[arg-type]
        except (ParseError, ValueError) as exc:
            log.error("fix_nated_contact: %s (Call-ID %s)", _reason(exc), _call_id(ctx))
            return -1
        if values is not None:
            ctx.msg.replace_header("Contact", values)  # type: ignore[union-attr]
            ctx.extra[_FIXED] = True
        return 1

    @script_function("fix_nated_register", routes=(REQUEST_ROUTE,))
    def fix_nated_register(self, ctx: MsgContext) -> int:
        src = _source(ctx, "fix_nated_register")
        if src is None:
            return -1
        set_avp(ctx, self._received_avp[5:-1], None, _nat.received_uri(src))
        return 1

    @script_function("add_rcv_param", Arg("int", "flag", optional=True), routes=(REQUEST_ROUTE,))
    def add_rcv_param(self, ctx: MsgContext, flag: int | None = None) -> int:
        src = _source(ctx, "add_rcv_param")
        if src is None:
            return -1
        try:
            values = _nat.with_received(ctx.msg, _nat.received_uri(src),  # type: ignore[arg-type]
                                        in_uri=bool(flag and flag > 0))
        except ParseError as exc:
            log.error("add_rcv_param: %s (Call-ID %s)", exc.reason, _call_id(ctx))
            return -1
        if values is None:   # OpenSIPS: no Contact to add it to is a failure
            return -1
        ctx.msg.replace_header("Contact", values)  # type: ignore[union-attr]
        return 1

    @script_function("nat_uac_test", Arg("str", "flags", fixup=_uac_flags),
                     routes=(REQUEST_ROUTE, ONREPLY_ROUTE, FAILURE_ROUTE, BRANCH_ROUTE, LOCAL_ROUTE))
    def nat_uac_test(self, ctx: MsgContext, mask: int) -> int:
        src = _source(ctx, "nat_uac_test")
        if src is None:
            return -1
        try:
            return 1 if _nat.nat_uac_test(ctx.msg, src, mask) else -1  # type: ignore[arg-type]
        except ParseError as exc:
            log.error("nat_uac_test: %s (Call-ID %s)", exc.reason, _call_id(ctx))
            return -1


def _source(ctx: MsgContext, what: str) -> Source | None:
    """Where the message came from; None (logged) for one that did not come from the network."""
    if ctx.msg is None or ctx.source is None:
        log.error("%s: the message has no source address (a route not run for a received message)", what)
        return None
    return ctx.source


def _call_id(ctx: MsgContext) -> str:
    return (ctx.msg.header("Call-ID") if ctx.msg is not None else None) or "-"


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, ParseError) else str(exc)


MODULE = NathelperModule
