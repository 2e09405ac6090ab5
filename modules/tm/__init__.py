"""tm - stateful processing (OpenSIPS tm module): server transactions and the stateful proxy.

t_newtran() makes the server transaction for the request, so a retransmission is answered by the
transaction layer with the last reply and never runs the script again. t_reply() answers through it.
t_relay() forwards the request statefully (proxy.py: one ProxyTransaction per relayed request, one INVITE
or non-INVITE client transaction per branch, RFC 3261 16.7 reply processing, CANCEL, serial and parallel
forking) through the core's relay sender (routescript/core/relay.py). fr_timeout (seconds) is also Timer F
of our own client transactions - the NOTIFYs presence sends - as in OpenSIPS. See docs/modules/tm.md.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncio
import re
from collections.abc import Coroutine

from routescript.core.module import Arg, Module, Param, pseudo_variable, script_function
from routescript.core.relay import MAXFWD_DONE, forward_request
from routescript.modules.sl._reply import check_code
from routescript.script.context import BRANCH_ROUTE, FAILURE_ROUTE, ONREPLY_ROUTE, REQUEST_ROUTE, MsgContext
from routescript.sip import ParseError, SIPRequest, SIPResponse
from routescript.transaction.errors import TransactionError, TransactionLimitError

from .proxy import ARM_KEY, BRANCH_IDX_KEY, BRANCH_REPLY_KEY, PROXY_KEY, Arm, ProxyTransaction, Settings

log = logging.getLogger("routescript.tm")

# t_relay() flags: OpenSIPS 3.x names them (a comma-separated string), older scripts give the number
NO_100 = 0x01            # no 100 Trying for an INVITE (1.x/2.x only: 3.x has auto_100trying)
NO_AUTO_REPLY = 0x02     # "no-auto-477": no error reply of our own when nothing could be sent
NO_FAILOVER = 0x04       # "no-dns-failover": only the first target of each branch
PASS_REASON = 0x08       # "pass-reason-hdr": a relayed CANCEL's Reason header goes on in our CANCELs
_T_RELAY_FLAGS = NO_100 | NO_AUTO_REPLY | NO_FAILOVER | PASS_REASON
_FLAG_NAMES = {"no-auto-477": NO_AUTO_REPLY, "no-dns-failover": NO_FAILOVER, "pass-reason-hdr": PASS_REASON}
_FLAGS_LATER = {"allow-no-cancel": "RFC 3841 no-cancel (keeping branches after a 2xx) is not built"}


def _positive(v: Any) -> None:
    if v <= 0:
        raise ValueError("must be a positive number")


def _zero_or_one(v: Any) -> None:
    if v not in (0, 1):
        raise ValueError("must be 0 or 1")


def _relay_flags(value: Any) -> int:
    """t_relay()'s flags at load: OpenSIPS 3.x names ("no-auto-477,no-dns-failover", "pass-reason-hdr")
    or the older number (0x1 no 100 Trying, 0x2, 0x4, 0x8); anything we do not implement is refused
    with a message."""
    if value is None or value == "":
        return 0
    text = str(value).strip()
    try:
        flags = int(text, 0)
    except ValueError:
        flags = 0
        for name in (part.strip().lower() for part in text.split(",")):
            if name in _FLAGS_LATER:
                why = _FLAGS_LATER[name]
                raise ValueError(f"t_relay flag {name!r} is not supported yet: {why}") from None
            if name not in _FLAG_NAMES:
                raise ValueError(f"t_relay flag {name!r} is unknown (expected no-auto-477, no-dns-failover, "
                                 "pass-reason-hdr)") from None
            flags |= _FLAG_NAMES[name]
        return flags
    unknown = flags & ~_T_RELAY_FLAGS
    if flags < 0 or unknown:
        raise ValueError(f"t_relay flag bits {hex(unknown)} are not supported (0x1 no 100 Trying, "
                         "0x2 no-auto-477, 0x4 no-dns-failover, 0x8 pass-reason-hdr)")
    return flags


def _cancel_flags(value: Any) -> str:
    """t_cancel_branch's flags: "" (the current branch), "a" (all), "o" (the others)."""
    text = str(value or "").strip()
    if text not in ("", "a", "o"):
        raise ValueError(f"t_cancel_branch flags {text!r}: expected a (all) or o (others), or none")
    return text


def _seconds(value: Any, what: str) -> float | None:
    if value is None or value == "":
        return None
    seconds = float(value)
    if seconds <= 0:
        raise ValueError(f"{what} must be positive, not {value}")
    return seconds


def _core_flag(server: Any, name: str) -> bool:
    """A yes/no core parameter; no for a server without a configuration (a module made in a test)."""
    config = getattr(server, "config", None)
    return bool(config.get(name)) if config is not None else False


class TmModule(Module):
    name = "tm"
    params = (
        Param("fr_timeout", int, 5, "seconds to wait for the first reply (and Timer F of client "
              "transactions)", check=_positive),
        Param("fr_inv_timeout", int, 120, "seconds to wait for the final reply to an INVITE after a "
              "provisional one", check=_positive),
        Param("T1_timer", int, 500, "RFC 3261 T1, milliseconds", check=_positive),
        Param("T2_timer", int, 4000, "RFC 3261 T2, milliseconds", check=_positive),
        Param("restart_fr_on_each_reply", int, 1, "1: each provisional reply restarts fr_inv_timeout"),
        Param("auto_100trying", int, 1, "1: t_relay() answers an INVITE with 100 Trying"),
        Param("tm_auto_inv_100", int, 1, "OpenSIPS 1.x/2.x name of auto_100trying"),
        Param("disable_6xx_block", int, 0, "1: a 6xx does not cancel the other branches"),
        Param("enable_stats", int, 1, "accepted: the tm statistics are always kept"),
        Param("wt_timer", int, 5, "seconds an INVITE transaction answered 2xx stays to absorb "
              "retransmissions (RFC 6026 Timer L; the other waits follow RFC 3261's timers)",
              check=_positive),
        Param("delete_timer", int, 2, "", later="transactions are freed when their RFC timers end"),
        Param("onreply_avp_mode", int, 0, "1: onreply routes see (and set) the transaction's AVPs",
              check=_zero_or_one),
        Param("ruri_matching", int, 1, "", later="RFC 3261 branch matching is always used"),
        Param("via1_matching", int, 1, "", later="RFC 3261 branch matching is always used"),
        Param("unix_tx_timeout", int, 2, "", later="there is no unix socket transport"),
        Param("pass_provisional_replies", int, 0, "", later="local requests (t_uac) are not built"),
        Param("tm_replies_syncronization", int, 0, "", later="replies are handled in one process per "
              "transaction here"),
        Param("minor_branch_flag", str, "", "", later="minor branches are not built"),
        Param("cluster", str, "", "", later="no clustering"),
    )

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._proxies: dict[Any, ProxyTransaction] = {}   # server transaction -> its proxy state
        self._tasks: set[asyncio.Task[None]] = set()
        self.settings = Settings(
            fr_timeout=float(self.param("fr_timeout")), fr_inv_timeout=float(self.param("fr_inv_timeout")),
            auto_100trying=bool(self.param("auto_100trying")) and bool(self.param("tm_auto_inv_100")),
            restart_fr_on_each_reply=bool(self.param("restart_fr_on_each_reply")),
            disable_6xx_block=bool(self.param("disable_6xx_block")),
            onreply_avps=bool(self.param("onreply_avp_mode")),
            translate_503=not _core_flag(server, "disable_503_translation"))

    def transaction_options(self) -> dict[str, float]:
        """What the core passes to the TransactionLayer. An INVITE server transaction waits for its
        final reply as long as a branch may (fr_inv_timeout and the CANCEL's 487 after it)."""
        t1 = self.param("T1_timer") / 1000.0
        return {"timer_f": float(self.param("fr_timeout")), "t1": t1, "t2": self.param("T2_timer") / 1000.0,
                "invite_tu_timeout": max(180.0, float(self.param("fr_inv_timeout")) + 64 * t1 + 5),
                "wait_timer": float(self.param("wt_timer"))}

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        self._proxies.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _done(self, proxy: ProxyTransaction) -> None:
        if self._proxies.get(proxy.server_transaction) is proxy:
            del self._proxies[proxy.server_transaction]

    def proxy_of(self, ctx: MsgContext) -> ProxyTransaction | None:
        """The ProxyTransaction the route runs for (failure/branch/onreply routes, or after t_relay)."""
        found = ctx.extra.get(PROXY_KEY)
        if found is None and ctx.transaction is not None:
            found = self._proxies.get(ctx.transaction)
        return found

    # --- UAS ----------------------------------------------------------------------------------------

    @script_function("t_newtran", routes=(REQUEST_ROUTE,))
    def t_newtran(self, ctx: MsgContext) -> int:
        """The server transaction; for a new INVITE a 100 Trying at once (auto_100trying, as OpenSIPS
        3.x's t_newtran does)."""
        had = ctx.transaction is not None
        transaction = newtran(ctx)
        if transaction is None:
            return -1
        if not had and self.settings.auto_100trying and transaction.is_invite \
                and transaction.last_response is None:
            try:
                ctx.server.reply(ctx, 100, "Trying")
            except TransactionError as exc:
                log.info("t_newtran: 100 Trying not sent: %s", exc)
        return 1

    @script_function("t_reply", Arg("int", "code", fixup=check_code), Arg("str", "reason"),
                     routes=(REQUEST_ROUTE, FAILURE_ROUTE))
    def t_reply(self, ctx: MsgContext, code: int, reason: str) -> int:
        if ctx.route_type == FAILURE_ROUTE:
            proxy = self.proxy_of(ctx)
            if proxy is not None and proxy.replied:
                log.error("t_reply(%d) in failure_route: a final reply was sent already", code)
                return -1
        return reply_stateful(ctx, code, reason)

    @script_function("t_reply_with_body", Arg("int", "code", fixup=check_code), Arg("str", "reason"),
                     Arg("str", "body"), routes=(REQUEST_ROUTE, FAILURE_ROUTE))
    def t_reply_with_body(self, ctx: MsgContext, code: int, reason: str, body: str) -> int:
        """t_reply with a body; its Content-Type comes from append_to_reply(), as in OpenSIPS."""
        if ctx.route_type == FAILURE_ROUTE:
            proxy = self.proxy_of(ctx)
            if proxy is not None and proxy.replied:
                log.error("t_reply_with_body(%d) in failure_route: a final reply was sent already", code)
                return -1
        return reply_stateful(ctx, code, reason, body.encode())

    @script_function("t_check_trans", routes=(REQUEST_ROUTE,))
    def t_check_trans(self, ctx: MsgContext) -> int:
        """1 when the request already has its transaction (for a CANCEL: when its INVITE's is live);
        for a retransmission of a known transaction the last reply is resent and the script stops (0),
        as OpenSIPS does; -1 otherwise."""
        if ctx.transaction is not None:
            return 1
        msg = ctx.msg
        if not isinstance(msg, SIPRequest):
            return -1
        transactions = ctx.server.transactions
        try:
            if msg.method == "CANCEL":
                return 1 if transactions.invite_of(msg) is not None else -1
            if transactions.lookup(msg, ctx.source) is not None:
                return 0
        except ParseError as exc:
            log.error("t_check_trans: %s", exc.reason)
        return -1

    # --- the proxy ----------------------------------------------------------------------------------

    @script_function("t_relay", Arg("any", "flags", optional=True, fixup=_relay_flags),
                     Arg("str", "proxy", optional=True), routes=(REQUEST_ROUTE, FAILURE_ROUTE))
    async def t_relay(self, ctx: MsgContext, flags: Any = None, proxy: str | None = None) -> int:
        """Relay the request statefully to $du, else its Request-URI (and every append_branch()
        branch). 1 when sent; else OpenSIPS's codes: -1 internal error, -2 bad message, -3 no
        destination (none left, or the request was cancelled), -4 unresolvable destination, -6 send
        failure. In request_route, when nothing could be sent, the error reply goes out at once and
        the script stops (0), unless flag 0x2; an ACK is relayed statelessly."""
        msg = ctx.msg
        relay = getattr(self.server, "relay", None)
        if not isinstance(msg, SIPRequest):
            log.error("t_relay: no request to relay")
            return -1
        if relay is None:
            log.error("t_relay: the server has no relay sender (not started)")
            return -1
        bits = flags if isinstance(flags, int) else _relay_flags(flags)
        if proxy and ctx.dst_uri is None:   # OpenSIPS: a $du set before wins over the parameter
            try:
                ctx.dst_uri = outbound_proxy_uri(proxy)
            except ValueError as exc:
                log.error("t_relay: %s", exc)
                return -4
        if msg.method == "ACK":
            return await forward_request(relay, ctx)     # hop by hop: no transaction (OpenSIPS too)
        transactions = self.server.transactions
        if transactions is None:
            return -1
        if msg.method == "CANCEL" and ctx.route_type == REQUEST_ROUTE:
            try:
                invite = transactions.invite_of(msg)
            except ParseError as exc:
                log.error("t_relay: %s", exc.reason)
                return -2
            if invite is not None:
                # RFC 3261 16.10: the CANCEL is answered here and every pending branch cancelled; one
                # for an INVITE already answered (or never relayed) changes nothing (RFC 3261 9.2)
                reply_stateful(ctx, 200, "OK")
                cancelled = self._proxies.get(invite)
                if cancelled is not None and not cancelled.replied:
                    cancelled.cancel(msg.header("reason") if bits & PASS_REASON else None)
                return 1
        proxy_tx = self.proxy_of(ctx)
        created = False
        if proxy_tx is None:
            had_transaction = ctx.transaction is not None
            server_tx = newtran(ctx)
            if server_tx is None:
                return -1
            proxy_tx = self._proxies.get(server_tx)
            if proxy_tx is None:
                proxy_tx = ProxyTransaction(ctx, server_tx, relay, self.settings, self._spawn, self._done)
                self._proxies[server_tx] = proxy_tx
                created = not had_transaction
            ctx.extra[PROXY_KEY] = proxy_tx
        armed = ctx.extra.pop(ARM_KEY, None)
        if armed is not None:
            _merge(proxy_tx.arm, armed)
        if bits & NO_100:
            ctx.extra["tm.no100"] = True
        code = await proxy_tx.relay_branches(ctx, bool(ctx.extra.get(MAXFWD_DONE)),
                                             failover=not bits & NO_FAILOVER)
        if code > 0:
            return code
        if not proxy_tx.branches:
            self._done(proxy_tx)
        if created and ctx.route_type == REQUEST_ROUTE and not bits & NO_AUTO_REPLY:
            status, reason = ctx.extra.get("sl_error") or (500, "Server Internal Error")
            if reply_stateful(ctx, status, reason) > 0:
                return 0    # answered here: the script stops (OpenSIPS's "taken care of all")
        return code

    @script_function("t_on_failure", Arg("route", "failure"),
                     routes=(REQUEST_ROUTE, FAILURE_ROUTE, BRANCH_ROUTE))
    def t_on_failure(self, ctx: MsgContext, name: str) -> int:
        self._arm(ctx).on_failure = name
        return 1

    @script_function("t_on_reply", Arg("route", "onreply"),
                     routes=(REQUEST_ROUTE, FAILURE_ROUTE, BRANCH_ROUTE))
    def t_on_reply(self, ctx: MsgContext, name: str) -> int:
        """From branch_route: the reply route of that branch only (OpenSIPS); elsewhere the
        transaction's."""
        if ctx.route_type == BRANCH_ROUTE:
            ctx.extra[BRANCH_REPLY_KEY] = name
        else:
            self._arm(ctx).on_reply = name
        return 1

    @script_function("t_on_branch", Arg("route", "branch"), routes=(REQUEST_ROUTE, FAILURE_ROUTE))
    def t_on_branch(self, ctx: MsgContext, name: str) -> int:
        self._arm(ctx).on_branch = name
        return 1

    @script_function("t_cancel_branch", Arg("str", "flags", optional=True, fixup=_cancel_flags),
                     routes=(ONREPLY_ROUTE,))
    def t_cancel_branch(self, ctx: MsgContext, flags: str | None = None) -> int:
        """In onreply_route: cancel the reply's branch (no flag), every other pending one ("o") or all
        of them ("a")."""
        proxy = self.proxy_of(ctx)
        index = ctx.extra.get(BRANCH_IDX_KEY)
        if proxy is None or index is None:
            log.error("t_cancel_branch: no relayed transaction here")
            return -1
        proxy.cancel_branches(index, flags or "")
        return 1

    @script_function("t_set_fr", Arg("int", "fr_inv_timeout"), Arg("int", "fr_timeout", optional=True),
                     routes=(REQUEST_ROUTE, FAILURE_ROUTE, BRANCH_ROUTE))
    def t_set_fr(self, ctx: MsgContext, fr_inv: int, fr: int | None = None) -> int:
        """fr_inv_timeout (and fr_timeout) of this transaction, in seconds; 0 keeps the module's."""
        if fr_inv < 0 or (fr is not None and fr < 0):
            log.error("t_set_fr(%s, %s): timeouts are not negative", fr_inv, fr)
            return -1
        arm = self._arm(ctx)
        arm.fr_inv_timeout = float(fr_inv) or None
        if fr is not None:
            arm.fr_timeout = float(fr) or None
        return 1

    def _arm(self, ctx: MsgContext) -> Arm:
        proxy = self.proxy_of(ctx)
        if proxy is not None:
            return proxy.arm
        arm = ctx.extra.get(ARM_KEY)
        if arm is None:
            arm = ctx.extra[ARM_KEY] = Arm()
        return arm

    @script_function("t_check_status", Arg("regex", "re"),
                     routes=(REQUEST_ROUTE, FAILURE_ROUTE, ONREPLY_ROUTE))
    def t_check_status(self, ctx: MsgContext, pattern: re.Pattern[str]) -> int:
        """The reply code (the reply's own in onreply_route, the winning one in failure_route)
        matches `re` (searched, as OpenSIPS's regexec does)."""
        code = ctx.reply_code
        if code is None and isinstance(ctx.msg, SIPResponse):
            code = ctx.msg.status
        if code is None and ctx.transaction is not None:   # request_route: the last reply sent
            last = getattr(ctx.transaction, "last_response", None)
            code = last.status if last is not None else None
        if code is None:
            return -1
        return 1 if pattern.search(str(code)) else -1

    @script_function("t_was_cancelled", routes=(FAILURE_ROUTE, ONREPLY_ROUTE, REQUEST_ROUTE, BRANCH_ROUTE))
    def t_was_cancelled(self, ctx: MsgContext) -> int:
        proxy = self.proxy_of(ctx)
        return 1 if proxy is not None and proxy.cancelled else -1

    @script_function("t_local_replied", Arg("str", "reply", optional=True),
                     routes=(FAILURE_ROUTE, ONREPLY_ROUTE, REQUEST_ROUTE))
    def t_local_replied(self, ctx: MsgContext, which: str | None = None) -> int:
        """"all" (default): every branch's final reply was made here (timeouts, cancels); "branch"/
        "last": the winning one (failure_route) was."""
        proxy = self.proxy_of(ctx)
        if proxy is None:
            return -1
        kind = (which or "all").lower()
        if kind in ("branch", "last"):
            best = ctx.extra.get("tm.best")
            return 1 if best is not None and best.local else -1
        if kind != "all":
            log.error("t_local_replied(%r): expected all, branch or last", which)
            return -1
        done = [b for b in proxy.branches if b.done]
        return 1 if done and all(b.local for b in done) else -1

    # --- pseudo-variables -----------------------------------------------------------------------------

    @pseudo_variable("T_branch_idx")
    def pv_branch_idx(self, ctx: MsgContext, key: Any, index: Any) -> int | None:
        return ctx.extra.get(BRANCH_IDX_KEY, 0 if self.proxy_of(ctx) is not None else None)

    @pseudo_variable("T_reply_reason")
    def pv_reply_reason(self, ctx: MsgContext, key: Any, index: Any) -> str | None:
        if isinstance(ctx.msg, SIPResponse):
            return ctx.msg.reason
        best = ctx.extra.get("tm.best")
        return best.final.reason if best is not None and best.final is not None else None

    @pseudo_variable("T_fr_timeout", setter="set_fr_timeout")
    def pv_fr_timeout(self, ctx: MsgContext, key: Any, index: Any) -> int:
        arm = self._arm(ctx)
        return int(arm.fr_timeout or self.settings.fr_timeout)

    def set_fr_timeout(self, ctx: MsgContext, key: Any, index: Any, value: Any) -> None:
        self._arm(ctx).fr_timeout = _seconds(value, "$T_fr_timeout")

    @pseudo_variable("T_fr_inv_timeout", setter="set_fr_inv_timeout")
    def pv_fr_inv_timeout(self, ctx: MsgContext, key: Any, index: Any) -> int:
        arm = self._arm(ctx)
        return int(arm.fr_inv_timeout or self.settings.fr_inv_timeout)

    def set_fr_inv_timeout(self, ctx: MsgContext, key: Any, index: Any, value: Any) -> None:
        self._arm(ctx).fr_inv_timeout = _seconds(value, "$T_fr_inv_timeout")


def _merge(into: Arm, armed: Arm) -> None:
    for name in ("on_reply", "on_failure", "on_branch", "fr_timeout", "fr_inv_timeout"):
        value = getattr(armed, name)
        if value is not None:
            setattr(into, name, value)


def outbound_proxy_uri(text: str) -> str:
    """t_relay()'s outbound proxy "[proto:]host[:port]" as a URI to send to (ValueError if it is none)."""
    text = text.strip()
    if text.startswith(("sip:", "sips:")):
        return text
    proto, _, rest = text.partition(":")
    if proto.lower() in ("udp", "tcp", "tls", "ws", "wss") and rest:
        return f"sip:{rest};transport={proto.lower()}"
    if not text:
        raise ValueError("empty outbound proxy")
    return f"sip:{text}"


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


def reply_stateful(ctx: MsgContext, code: int, reason: str, body: bytes = b"") -> int:
    """Reply through the transaction; as in OpenSIPS 3, t_reply() makes the transaction when missing."""
    if not 100 <= code <= 699:
        log.error("t_reply: invalid code %d", code)
        return -1
    if isinstance(ctx.msg, SIPRequest) and ctx.msg.method == "ACK":
        return 1

    if newtran(ctx) is None:
        return -1
    try:
        ctx.server.reply(ctx, code, reason or None, body=body)
    except TransactionError as exc:
        log.error("t_reply(%d): %s", code, exc)
        return -1
    return 1


MODULE = TmModule
