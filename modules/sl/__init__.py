"""sl - stateless replies (OpenSIPS sl module).

sl_send_reply(code, reason): a reply sent at once, no transaction kept; a retransmitted request runs the
script again and gets the same reply (our to-tag is derived from the request, as OpenSIPS's sl does).
sl_reply_error(): the reply for the last internal error (OpenSIPS err2reason): what a failed core step
left in ctx.extra["sl_error"] (e.g. 503 from t_newtran over the transaction bound), else the message's
parse error met by the script (ctx.failure, or ctx.error in error_route), else 500 Server Internal Error.
"""

from __future__ import annotations


from routescript.core.module import Arg, Module, Param, script_function
from routescript.sip import ParseError, SIPRequest
from routescript.script.context import MsgContext

from ._reply import check_code


class SlModule(Module):
    name = "sl"
    params = (
        Param("enable_stats", int, 1, "keep reply statistics (accepted; statistics come with MI)"),
    )

    @script_function("sl_send_reply", Arg("int", "code", fixup=check_code), Arg("str", "reason"))
    def sl_send_reply(self, ctx: MsgContext, code: int, reason: str) -> int:
        return send_stateless(ctx, code, reason)

    @script_function("sl_reply_error")
    def sl_reply_error(self, ctx: MsgContext) -> int:
        if "sl_error" in ctx.extra:
            code, reason = ctx.extra["sl_error"]
            return send_stateless(ctx, int(code), str(reason))
        # the peer's bad header met earlier in this run (recorded by the script runtime), or the one
        # error_route runs for - OpenSIPS's prev_ser_error
        for err in (ctx.failure, ctx.error):
            if isinstance(err, ParseError):
                return send_stateless(ctx, int(err.status), str(err.reason))
        return send_stateless(ctx, 500, "Server Internal Error")


def send_stateless(ctx: MsgContext, code: int, reason: str) -> int:
    """Send a stateless reply for ctx.msg; -1 (logged) when there is no request to answer."""
    import logging

    if not isinstance(ctx.msg, SIPRequest):
        logging.getLogger("routescript.sl").error("sl_send_reply: no request to reply to")
        return -1
    if ctx.msg.method == "ACK":
        return 1  # an ACK is never answered (RFC 3261 17.2.1); OpenSIPS silently skips it too
    if not 100 <= code <= 699:
        logging.getLogger("routescript.sl").error("sl_send_reply: invalid code %d", code)
        return -1
    ctx.server.send_reply(ctx, code, reason or None)
    return 1


MODULE = SlModule
