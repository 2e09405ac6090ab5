"""tm - stateful processing (OpenSIPS tm module), the UAS half.

t_newtran() makes the server transaction for the request, so a retransmission is answered by the
transaction layer with the last reply and never runs the script again. t_reply() answers through it.
fr_timeout (seconds) is Timer F of our own client transactions - the NOTIFYs presence sends - as in
OpenSIPS, where fr_timeout is also the NOTIFY timeout. The proxy half (t_relay) is not built yet: scripts
that call it still load, with a warning at each call, and the call fails with an error logged.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from routescript.core.module import Arg, Module, Param, script_function
from routescript.modules.sl._reply import check_code
from routescript.script.context import FAILURE_ROUTE, REQUEST_ROUTE, MsgContext
from routescript.sip import ParseError, SIPRequest
from routescript.transaction.errors import TransactionError, TransactionLimitError

log = logging.getLogger("routescript.tm")

_T_RELAY_LATER = "proxying (t_relay) is not built yet: the call will fail with -1 at run time"


def _positive(v: Any) -> None:
    if v <= 0:
        raise ValueError("must be a positive number")


class TmModule(Module):
    name = "tm"
    params = (
        Param("fr_timeout", int, 5, "seconds to wait for a final reply (Timer F of client transactions)",
              check=_positive),
        Param("fr_inv_timeout", int, 120, "seconds to wait for a final reply to an INVITE", check=_positive),
        Param("T1_timer", int, 500, "RFC 3261 T1, milliseconds", check=_positive),
        Param("T2_timer", int, 4000, "RFC 3261 T2, milliseconds", check=_positive),
        Param("wt_timer", int, 5, "accepted; Timer J/K follow T4 here"),
        Param("delete_timer", int, 2, "accepted; no effect"),
        Param("restart_fr_on_each_reply", int, 1, "accepted; proxy side not built"),
        Param("onreply_avp_mode", int, 0, "accepted; proxy side not built"),
        Param("ruri_matching", int, 1, "accepted; RFC 3261 branch matching is used"),
        Param("via1_matching", int, 1, "accepted; RFC 3261 branch matching is used"),
        Param("unix_tx_timeout", int, 2, "accepted; no effect"),
        Param("auto_100trying", int, 1, "accepted; no INVITE handling"),
        Param("tm_auto_inv_100", int, 1, "accepted; no INVITE handling"),
        Param("pass_provisional_replies", int, 0, "accepted; proxy side not built"),
        Param("disable_6xx_block", int, 0, "accepted; proxy side not built"),
        Param("enable_stats", int, 1, "accepted"),
        Param("tm_replies_syncronization", int, 0, "accepted"),
        Param("minor_branch_flag", str, "", "accepted; proxy side not built"),
        Param("cluster", str, "", "accepted; no clustering"),
    )
    unbuilt: ClassVar[dict[str, str]] = {"t_relay": _T_RELAY_LATER}

    def transaction_options(self) -> dict[str, float]:
        """What the core passes to the TransactionLayer."""
        return {"timer_f": float(self.param("fr_timeout")), "t1": self.param("T1_timer") / 1000.0,
                "t2": self.param("T2_timer") / 1000.0}

    @script_function("t_newtran", routes=(REQUEST_ROUTE,))
    def t_newtran(self, ctx: MsgContext) -> int:
        return 1 if newtran(ctx) is not None else -1

    @script_function("t_reply", Arg("int", "code", fixup=check_code), Arg("str", "reason"),
                     routes=(REQUEST_ROUTE, FAILURE_ROUTE))
    def t_reply(self, ctx: MsgContext, code: int, reason: str) -> int:
        return reply_stateful(ctx, code, reason)

    @script_function("t_check_trans", routes=(REQUEST_ROUTE,))
    def t_check_trans(self, ctx: MsgContext) -> int:
        """1 when the request already has its transaction; for a retransmission of a known transaction
        the last reply is resent and the script stops (0), as OpenSIPS does; -1 otherwise."""
        if ctx.transaction is not None:
            return 1
        if not isinstance(ctx.msg, SIPRequest):
            return -1
        if ctx.server.transactions.lookup(ctx.msg, ctx.source) is not None:
            return 0
        return -1

    @script_function("t_relay", Arg("any", "flags", optional=True), Arg("any", "proxy", optional=True),
                     routes=(REQUEST_ROUTE, FAILURE_ROUTE))
    def t_relay(self, ctx: MsgContext, flags: Any = None, proxy: Any = None) -> int:
        log.error("t_relay() called, but %s", _T_RELAY_LATER)
        return -1


def newtran(ctx: MsgContext) -> Any:
    """The server transaction of ctx.msg, made when missing. None (logged) for an ACK or a non-request."""
    if ctx.transaction is not None:
        return ctx.transaction
    msg = ctx.msg
    if not isinstance(msg, SIPRequest):
        log.error("t_newtran: no request")
        return None
    if msg.method == "ACK":
        # An ACK never makes a transaction (RFC 3261 17.2.1: it belongs to its INVITE's).
        log.debug("t_newtran: no transaction for ACK")
        return None
    try:
        ctx.transaction = ctx.server.transactions.create(msg, ctx.source)
    except TransactionLimitError as exc:
        log.warning("t_newtran: %s", exc)
        ctx.extra["sl_error"] = (503, "Service Unavailable")  # what sl_reply_error() then sends
        return None
    except ParseError as exc:
        log.error("t_newtran: %s", exc.reason)
        ctx.extra["sl_error"] = (exc.status, exc.reason)
        return None
    return ctx.transaction


def reply_stateful(ctx: MsgContext, code: int, reason: str) -> int:
    """Reply through the transaction; as in OpenSIPS 3, t_reply() makes the transaction when missing."""
    if not 100 <= code <= 699:
        log.error("t_reply: invalid code %d", code)
        return -1
    if isinstance(ctx.msg, SIPRequest) and ctx.msg.method == "ACK":
        return 1

    if newtran(ctx) is None:
        return -1
    try:
        ctx.server.reply(ctx, code, reason or None)
    except TransactionError as exc:
        log.error("t_reply(%d): %s", code, exc)
        return -1
    return 1


MODULE = TmModule
