"""One proxied request: its server transaction, its branches (one client transaction each) and what
goes back upstream - RFC 3261 16.7 with OpenSIPS tm's routes.

A ProxyTransaction is made by the first t_relay() of a request. Each branch (branch 0 is the request
URI, the others ctx.branches from append_branch()/lookup()) is resolved into Targets and sent to the
first; a timeout without any reply or a 503 moves it to the next Target (failover), with a new Via branch.

Responses (and the local 408s of the fr timers) are handled one at a time, in arrival order: in place,
inside the client transaction's callback, when no route on the way may wait (CompiledScript.may_wait:
the usual proxy's reply routes only log), else by one task per burst (`_drain`); what arrives while
one is handled is queued behind it. The handling: the global onreply_route, then the armed
onreply_route[name]; then
- 1xx: forwarded upstream (not a 100: RFC 3261 16.7 step 5), a branch marked for cancelling gets its
  CANCEL now (RFC 3261 9.1: not before a provisional), an INVITE branch's timer becomes fr_inv_timeout;
- 2xx: forwarded at once, every one of them for an INVITE (RFC 6026); the other branches are cancelled;
- 3xx-6xx: kept; a 6xx cancels the other INVITE branches (unless disable_6xx_block); once every branch
  of the round has its final response, failure_route[name] runs when armed (its t_relay() starts a new
  round: serial forking; its t_reply() answers), and when it did neither the best response (select.py)
  goes upstream.

Choices where OpenSIPS and the RFCs leave room (docs/modules/tm.md):
- A branch that has had no provisional response when it must be cancelled (a CANCEL from the caller, a
  2xx or 6xx elsewhere) ends at once with a local 487 and gets its CANCEL if a provisional comes later.
- fr_timeout runs from the request to the first reply, fr_inv_timeout from the first provisional
  reply of an INVITE branch to its final one (restart_fr_on_each_reply=1: restarted by each 1xx);
  either expiring gives the branch a local 408 - and a CANCEL when it had a provisional.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from routescript.core.relay import Attempt, Relay, RelayError
from routescript.resolve import Target
from routescript.script.context import BRANCH_ROUTE, FAILURE_ROUTE, ONREPLY_ROUTE, MsgContext
from routescript.script.runtime import DROP_KEY
from routescript.sip import (
    ParseError,
    SIPRequest,
    SIPResponse,
    SocketInfo,
    Source,
    build_reply,
    parse_name_addr,
    split_values,
)
from routescript.transaction.errors import TransactionError
from routescript.transaction.layer import run_failure_hooks, run_reply_hooks

from .select import pick_best, upstream_status

if TYPE_CHECKING:
    from routescript.script import CompiledScript

log = logging.getLogger("routescript.tm")

# A loop timer may fire up to the clock's resolution early; a deadline that close counts as due.
_EARLY = 0.001

PROXY_KEY = "tm.proxy"     # ctx.extra: the ProxyTransaction of a failure route's (or relayed) request
ARM_KEY = "tm.arm"         # ctx.extra: what t_on_*/t_set_fr armed for the next t_relay()
BRANCH_IDX_KEY = "tm.branch_idx"
BRANCH_REPLY_KEY = "tm.branch_reply"   # ctx.extra in branch_route: t_on_reply() for that branch only


@dataclass(slots=True)
class Arm:
    """What the script armed for the transaction (OpenSIPS keeps these per transaction; a failure
    route must arm t_on_failure again for the next round)."""

    on_reply: str | None = None
    on_failure: str | None = None
    on_branch: str | None = None
    fr_timeout: float | None = None        # t_set_fr / $T_fr_timeout, seconds
    fr_inv_timeout: float | None = None    # t_set_fr / $T_fr_inv_timeout, seconds


@dataclass(frozen=True, slots=True)
class Settings:
    """The tm module parameters a ProxyTransaction reads."""

    fr_timeout: float
    fr_inv_timeout: float
    auto_100trying: bool
    restart_fr_on_each_reply: bool
    disable_6xx_block: bool
    onreply_avps: bool = False      # onreply_avp_mode=1: reply routes share the transaction's AVPs
    translate_503: bool = True      # a chosen 503 goes upstream as 500 (core disable_503_translation = no)


class ProxyBranch:
    """One branch: where it goes, what it has sent, what it got."""

    __slots__ = ("attempt", "cancel_sent", "cancel_wanted", "deadline", "dst_uri", "final", "flags", "hooks",
                 "index", "local", "on_reply", "provisional", "request", "socket", "targets", "timer",
                 "timer_at", "transaction", "uri")

    def __init__(self, index: int, uri: str, request: SIPRequest, targets: list[Target],
                 socket: SocketInfo | None, flags: int, dst_uri: str | None = None) -> None:
        self.index = index
        self.uri = uri                  # the branch's Request-URI
        self.dst_uri = dst_uri          # its $du (where it is sent instead of the Request-URI)
        self.request = request          # the request to send (Relay.outgoing): without our Via while
                                        # targets are left; the last attempt's own request after
        self.targets = targets          # not yet tried, in order
        self.socket = socket            # force_send_socket()'s, or None
        self.flags = flags              # branch flags
        self.attempt: Attempt | None = None
        self.hooks: Any = None          # the send hooks it was sent with (rr's Record-Route)
        self.on_reply: str | None = None  # its own onreply_route (t_on_reply in branch_route)
        self.transaction: Any = None
        self.provisional = False
        self.final: SIPResponse | None = None
        self.local = False              # the final response was made here (408, 487, 503)
        self.cancel_wanted = False
        self.cancel_sent = False
        self.deadline: float | None = None     # when its fr timer expires (loop time); None: not running
        self.timer: asyncio.TimerHandle | None = None   # the loop timer that serves it, due at timer_at
        self.timer_at = 0.0

    @property
    def done(self) -> bool:
        return self.final is not None


# A response to handle: (branch, the attempt it answers, response, made locally)
Event = tuple[ProxyBranch, Attempt | None, SIPResponse, bool]


class ProxyTransaction:
    """See the module docstring. `ctx` is the request route's context at the first t_relay()."""

    def __init__(self, ctx: MsgContext, server_transaction: Any, relay: Relay, settings: Settings,
                 spawn: Callable[[Coroutine[Any, Any, None]], Any],
                 on_done: Callable[[ProxyTransaction], None]) -> None:
        msg = ctx.msg
        assert isinstance(msg, SIPRequest)
        self.request = msg.copy()             # as it was at t_relay(): what failure_route sees
        self.source = ctx.source
        self.server = ctx.server
        self.flags = ctx.flags
        # the request route's send hooks (record_route()): OpenSIPS keeps the Record-Route in the
        # transaction's request, so the branches a failure_route adds carry it too
        self.send_hooks = list(ctx.send_hooks) if ctx.send_hooks else None
        self.avps = ctx.avps                  # the transaction's AVPs (failure_route sees them)
        self.server_transaction = server_transaction
        self.relay = relay
        self.settings = settings
        self.is_invite = msg.method == "INVITE"
        self.branches: list[ProxyBranch] = []
        self.round_start = 0
        self.arm = Arm()
        self.cancelled = False                # a CANCEL came for it (t_was_cancelled)
        self._cancel_reason: str | None = None
        self.replied = False                  # a final response went upstream
        self.local_reply = False              # ... and it was made here (t_local_replied)
        self._queue: deque[Event] = deque()
        self._busy = False
        self._spawn = spawn
        self._on_done = on_done
        self._loop = asyncio.get_running_loop()

    @property
    def label(self) -> str:
        return f"{self.request.method} {self.request.header('call-id')}"

    # --- sending ----------------------------------------------------------------------------------

    async def relay_branches(self, ctx: MsgContext, maxfwd_done: bool, *, failover: bool = True) -> int:
        """t_relay(): every branch of ctx (branch 0 and ctx.branches) sent; 1 when at least one went
        out, else the RelayError code of the last failure (logged)."""
        if self.cancelled:
            log.info("%s: t_relay() after the request was cancelled: nothing sent", self.label)
            return -3
        if self.replied and not self.is_invite:
            return -3
        msg = ctx.msg
        assert isinstance(msg, SIPRequest)
        wanted: list[tuple[str, str | None, Any, int, str | None]] = [
            (msg.ruri, ctx.dst_uri, ctx.send_socket, ctx.bflags, None)]
        for extra in ctx.branches or ():
            wanted.append((extra.uri, extra.dst_uri, extra.socket or ctx.send_socket, extra.flags,
                           extra.path))
        self.round_start = len(self.branches)
        if self.is_invite and ctx.route_type != FAILURE_ROUTE and self.settings.auto_100trying \
                and not ctx.extra.get("tm.no100"):
            self._trying(ctx)   # before the DNS lookups, which may take a while (OpenSIPS does the same)
        sent = 0
        error: RelayError | None = None
        for ruri, wanted_dst, socket, flags, path in wanted:
            dst_uri = wanted_dst
            try:
                request = self.relay.outgoing(msg, ruri, maxfwd_done)
                if path:
                    dst_uri = with_path(request, path, dst_uri)
            except RelayError as exc:
                log.warning("%s: branch to %s not relayed: %s", self.label, dst_uri or ruri, exc)
                error = exc
                continue
            branch = ProxyBranch(len(self.branches), ruri, request, [], socket, flags, dst_uri)
            # branch_route first: what it changes ($ru, $du, the socket) decides where the branch goes
            if not await self._run_branch_route(ctx, branch):
                continue
            try:
                branch.targets = list(await self.relay.targets(branch.dst_uri or branch.request.ruri))
                if not failover:
                    del branch.targets[1:]
                if self.cancelled:
                    break   # the CANCEL came while the destination was looked up: nothing more goes out
                self._send(branch, ctx.send_hooks)
            except RelayError as exc:
                log.warning("%s: branch to %s not relayed: %s", self.label, branch.dst_uri or branch.uri, exc)
                error = exc
                continue
            sent += 1
        if sent:
            return 1
        if self.cancelled and not self.replied:
            self.replied = self.local_reply = True
            try:
                self.server.reply(ctx, 487, "Request Terminated")
            except Exception as exc:  # noqa: BLE001 - logged: the caller's own timer ends its side
                log.info("%s: 487 not sent: %s", self.label, exc)
            self._on_done(self)
            return -3
        if error is None:
            return -3   # every branch dropped by branch_route
        ctx.extra["sl_error"] = error.sl_error
        return error.code

    async def _run_branch_route(self, ctx: MsgContext, branch: ProxyBranch) -> bool:
        """branch_route[name] over the branch's request; False when it dropped the branch."""
        name = self.arm.on_branch
        script = self._script()
        if name is None or script is None:
            return True
        bctx = MsgContext(msg=branch.request, source=ctx.source, server=ctx.server, route_type=BRANCH_ROUTE,
                          flags=ctx.flags, bflags=branch.flags, send_socket=branch.socket,
                          send_hooks=ctx.send_hooks)
        bctx.dst_uri = branch.dst_uri
        bctx.extra[BRANCH_IDX_KEY] = len(self.branches)
        bctx.extra[PROXY_KEY] = self
        try:
            await script.run(BRANCH_ROUTE, name, bctx)
        except Exception:
            log.exception("%s: branch_route[%s] failed", self.label, name)
        if bctx.extra.get(DROP_KEY):
            log.debug("%s: branch %s dropped by branch_route[%s]", self.label, branch.uri, name)
            return False
        branch.flags = bctx.bflags
        branch.on_reply = bctx.extra.get(BRANCH_REPLY_KEY)
        branch.dst_uri = bctx.dst_uri
        branch.uri = branch.request.ruri
        if bctx.send_socket is not None:
            branch.socket = bctx.send_socket
        ctx.flags = bctx.flags
        return True

    def _send(self, branch: ProxyBranch, hooks: Any) -> None:
        """Send the branch to its next target (RelayError when none is left that takes it)."""
        while branch.targets:
            target = branch.targets.pop(0)
            try:
                sock = self.relay.socket_for(target, branch.socket)
            except RelayError as exc:
                if not branch.targets:
                    raise
                log.info("%s: %s; trying the next target", self.label, exc)
                continue
            # the last target edits the branch's own request (no failover will start from it again)
            attempt = self.relay.attempt(branch.request, target, sock, hooks, last=not branch.targets)
            if branch not in self.branches:
                self.branches.append(branch)
            branch.attempt = attempt
            branch.provisional = False
            on_final, on_provisional = self._callbacks(branch, attempt)
            branch.transaction = self.relay.send_stateful(attempt, on_final, on_provisional,
                                                          fr_timeout=self.arm.fr_timeout)
            self._arm_timer(branch, self._fr_timeout())
            branch.hooks = hooks   # kept for a failover to the next target
            return
        raise RelayError(f"branch {branch.uri}: no target left", -3, (500, "No destination"))

    def _callbacks(self, branch: ProxyBranch, attempt: Attempt) -> tuple[Callable[[SIPResponse], None],
                                                                         Callable[[SIPResponse], None]]:
        """The client transaction's callbacks for this attempt of the branch."""
        def on_final(response: SIPResponse) -> None:
            self._received(branch, attempt, response, True)

        def on_other(response: SIPResponse) -> None:   # 1xx, and an INVITE's later 2xx
            self._received(branch, attempt, response, False)

        return on_final, on_other

    def _trying(self, ctx: MsgContext) -> None:
        tx = self.server_transaction
        if tx is None or tx.last_response is not None:
            return
        try:
            self.server.reply(ctx, 100, "Trying")
        except Exception as exc:  # noqa: BLE001 - a 100 that cannot go does not stop the relay
            log.info("%s: 100 Trying not sent: %s", self.label, exc)

    # --- timers -----------------------------------------------------------------------------------

    def _fr_timeout(self) -> float:
        return self.arm.fr_timeout or self.settings.fr_timeout

    def _fr_inv_timeout(self) -> float:
        return self.arm.fr_inv_timeout or self.settings.fr_inv_timeout

    def _arm_timer(self, branch: ProxyBranch, seconds: float) -> None:
        """The branch's fr timer, for its current attempt, expires in `seconds` (instead of when it
        did). A later expiry - fr_inv_timeout restarted by each 1xx - only moves `branch.deadline`: the
        loop timer already armed fires first and re-arms for the rest (no cancel and new timer per 1xx)."""
        loop = self._loop
        deadline = loop.time() + seconds
        branch.deadline = deadline
        timer = branch.timer
        if timer is not None:
            if branch.timer_at <= deadline:
                return
            timer.cancel()
        branch.timer = loop.call_at(deadline, self._timer_fired, branch)
        branch.timer_at = deadline

    def _stop_timer(self, branch: ProxyBranch) -> None:
        branch.deadline = None
        if branch.timer is not None:
            branch.timer.cancel()   # not left to fire: it holds the branch (and this transaction)
            branch.timer = None

    def _timer_fired(self, branch: ProxyBranch) -> None:
        branch.timer = None
        deadline = branch.deadline
        if deadline is None:
            return
        if deadline - self._loop.time() > _EARLY:   # moved later since it was armed: wait for the rest
            branch.timer = self._loop.call_at(deadline, self._timer_fired, branch)
            branch.timer_at = deadline
            return
        branch.deadline = None
        self._timed_out(branch, branch.attempt)

    def _timed_out(self, branch: ProxyBranch, attempt: Attempt | None) -> None:
        """The fr timer of `attempt` (every new attempt of a branch re-arms it) expired."""
        if branch.done or attempt is None:
            return
        log.info("%s: branch %d (%s) timed out (%s)", self.label, branch.index, attempt.destination,
                 "fr_inv_timeout" if branch.provisional else "fr_timeout")
        if branch.provisional:
            self._send_cancel(branch)
        else:
            self._abandon(branch)
        timeout = build_reply(attempt.request, 408, "Request Timeout")
        self._received(branch, attempt, timeout, True, local=True)

    # --- responses --------------------------------------------------------------------------------

    def _received(self, branch: ProxyBranch, attempt: Attempt | None, response: SIPResponse, final: bool,
                  *, local: bool = False) -> None:
        """A client transaction's callback (and the fr timers'): queued, handled in order."""
        if attempt is not branch.attempt:
            return   # an earlier attempt of a branch that failed over
        if final and not local and branch.transaction is not None \
                and getattr(branch.transaction, "local_final", False):
            local = True   # the client transaction's own 408 (Timer B) or 503 (transport error)
        if self._busy:
            self._queue.append((branch, attempt, response, local))
            return
        self._busy = True
        if self._may_wait(branch, response, local):
            self._queue.append((branch, attempt, response, local))
            self._spawn(self._drain())
            return
        # Nothing on the way waits (no route that may, none at all in the usual proxy): handled here,
        # without a task and a turn of the loop per response. What it queues meanwhile (a local 487
        # of a branch it cancels) is drained after it, in order.
        try:
            self._handle_now(branch, attempt, response, local)
        finally:
            if self._queue:
                self._spawn(self._drain())
            else:
                self._busy = False

    def _may_wait(self, branch: ProxyBranch, response: SIPResponse, local: bool) -> bool:
        """Whether handling `response` may suspend: a reply route to run (not for a local response)
        or the failure route a final >= 300 may end in, when the script compiled it as one that may
        wait (CompiledScript.may_wait)."""
        script = self._script()
        if script is None:
            return False
        if not local:
            if script.may_wait(ONREPLY_ROUTE, None):
                return True
            named = branch.on_reply or self.arm.on_reply
            if named is not None and script.may_wait(ONREPLY_ROUTE, named):
                return True
        failure = self.arm.on_failure
        return response.status >= 300 and failure is not None and script.may_wait(FAILURE_ROUTE, failure)

    def _handle_now(self, branch: ProxyBranch, attempt: Attempt | None, response: SIPResponse,
                    local: bool) -> None:
        """_handle run to its end in place: its coroutine never suspends (_may_wait said so)."""
        step = self._handle(branch, attempt, response, local)
        try:
            step.send(None)
        except StopIteration:
            return
        except Exception:
            log.exception("%s: handling a %d response failed", self.label, response.status)
            return
        step.close()   # a compiler bug: a never-waiting route waited; the rest is not run
        log.error("%s: a route compiled as never waiting suspended on a %d response; its handling "
                  "stopped there", self.label, response.status)

    async def _drain(self) -> None:
        try:
            while self._queue:
                event = self._queue.popleft()
                try:
                    await self._handle(*event)
                except Exception:
                    log.exception("%s: handling a %d response failed", self.label, event[2].status)
        finally:
            self._busy = False

    async def _handle(self, branch: ProxyBranch, attempt: Attempt | None, response: SIPResponse,
                      local: bool) -> None:
        status = response.status
        if branch.done and not (status < 300 and self.is_invite):
            if status < 200 and branch.cancel_wanted and not branch.cancel_sent:
                branch.provisional = True
                self._send_cancel(branch)
            return   # the branch ended already (a local 408/487): later responses are absorbed
        dropped = False
        if not local:
            dropped = await self._run_reply_routes(branch, response, attempt)
        if status < 200:
            first = not branch.provisional
            branch.provisional = True
            if branch.cancel_wanted:
                self._send_cancel(branch)
                return
            if self.is_invite and (first or self.settings.restart_fr_on_each_reply):
                self._arm_timer(branch, self._fr_inv_timeout())
            if status > 100 and not dropped and not self.replied:
                self._forward(response)
            return
        self._stop_timer(branch)
        if status < 300:
            if branch.final is None:
                branch.final = response
            if not self.replied or self.is_invite:
                self._forward(response)
            self.replied = True
            if self.is_invite:
                self._cancel_pending(except_branch=branch)
            self._check_done()
            return
        # failover: a 503 or a timeout without any reply moves the branch to its next target
        if (status == 503 or (local and status == 408 and not branch.provisional)) and branch.targets \
                and not self.cancelled and not self.replied:
            log.info("%s: branch %d got %d; failing over to the next target", self.label, branch.index,
                     status)
            self._abandon(branch)
            try:
                self._send(branch, branch.hooks)
                return
            except RelayError as exc:
                log.info("%s: failover impossible: %s", self.label, exc)
        branch.final = response
        branch.local = local
        if status >= 600 and self.is_invite and not self.settings.disable_6xx_block:
            self._cancel_pending(except_branch=branch)
        if self.replied:
            self._check_done()
            return
        if all(b.done for b in self.branches[self.round_start:]):
            await self._complete()

    async def _run_reply_routes(self, branch: ProxyBranch, response: SIPResponse,
                                attempt: Attempt | None) -> bool:
        """The global onreply_route, then the armed onreply_route[name]; True when one dropped it.
        Their source is where `attempt` went (_reply_source: $si, $sp, $proto; fix_nated_contact)."""
        script = self._script()
        if script is None:
            return False
        names: list[str | None] = []
        if script.has(ONREPLY_ROUTE, None):
            names.append(None)
        named = branch.on_reply or self.arm.on_reply
        if named is not None:
            names.append(named)
        if not names:
            return False
        source = _reply_source(attempt)   # made only for a route to read
        dropped = False
        for name in names:
            rctx = MsgContext(msg=response, source=source, server=self.server, route_type=ONREPLY_ROUTE,
                              reply_code=response.status, flags=self.flags)
            if self.settings.onreply_avps:
                rctx.avps = self.avps
            rctx.extra[BRANCH_IDX_KEY] = branch.index
            rctx.extra[PROXY_KEY] = self
            try:
                await script.run(ONREPLY_ROUTE, name, rctx)
            except Exception:
                log.exception("%s: onreply_route%s failed", self.label, f"[{name}]" if name else "")
            self.flags = rctx.flags
            if rctx.extra.get(DROP_KEY):
                dropped = True
        if dropped and response.status >= 200:
            # OpenSIPS: only a provisional reply can be dropped; a final one is still processed
            log.warning("%s: drop of a %d reply in onreply_route ignored (only 1xx can be dropped)",
                        self.label, response.status)
            return False
        return dropped

    async def _complete(self) -> None:
        """Every branch of the round has its final response and none was a 2xx: failure_route, then
        the best response upstream unless the route relayed again or replied."""
        round_branches = self.branches[self.round_start:]
        best_index = pick_best([b.final.status if b.final else 0 for b in round_branches])
        if best_index is None:
            return
        best = round_branches[best_index]
        assert best.final is not None
        tx = self.server_transaction
        if tx is not None and tx.failure_hooks:
            run_failure_hooks(tx, best.final, local=best.local)   # TMCB_ON_FAILURE: before failure_route
        name = self.arm.on_failure
        script = self._script()
        if name is not None and script is not None:
            self.arm.on_failure = None   # armed for one round: the route arms it again for the next
            before = len(self.branches)
            request = self.request.copy()
            request.ruri = best.uri   # OpenSIPS: failure_route starts with the winning branch's R-URI
            fctx = MsgContext(msg=request, source=self.source, server=self.server,
                              route_type=FAILURE_ROUTE, transaction=self.server_transaction,
                              reply_code=best.final.status, flags=self.flags)
            fctx.avps = self.avps
            fctx.send_hooks = list(self.send_hooks) if self.send_hooks else None
            fctx.extra[PROXY_KEY] = self
            fctx.extra["tm.best"] = best
            try:
                await script.run(FAILURE_ROUTE, name, fctx)
            except Exception:
                log.exception("%s: failure_route[%s] failed", self.label, name)
            self.flags = fctx.flags
            if fctx.replied or self.replied:
                self.replied = True
                self.local_reply = True
                self._check_done()
                return
            if len(self.branches) > before:
                return   # serial forking: the new round decides
        self._forward(best.final, final_choice=True, local=best.local)
        self.local_reply = best.local
        self.replied = True
        self._check_done()

    def _forward(self, response: SIPResponse, *, final_choice: bool = False, local: bool = False) -> None:
        """`response` upstream through the server transaction, without our Via; `local`: made here (a
        branch's 408 or 503), not received - the reply hooks are told (OpenSIPS's FAKED_REPLY)."""
        out = response
        try:
            out.remove_top_via()
        except ValueError:
            log.warning("%s: %d response without our Via: not forwarded", self.label, response.status)
            return
        if final_choice and self.settings.translate_503 and upstream_status(out.status) != out.status:
            out = _with_status(out, upstream_status(out.status))
        transactions = self.server.transactions
        if transactions is None or self.server_transaction is None:
            return
        try:
            transactions.reply(self.server_transaction, out, relayed=not local)
        except TransactionError as exc:
            if self.is_invite and 200 <= out.status < 300 and self.source is not None:
                # a 2xx after our 487/408 went up (the callee answered as it was cancelled): forwarded
                # anyway, as the transaction layer would not (RFC 6026 7.2: every 2xx goes upstream)
                transport = getattr(self.server, "transport", None)
                if transport is not None:
                    transport.send_reply(out, self.source)
                    if self.server_transaction.reply_hooks:
                        run_reply_hooks(self.server_transaction, out, relayed=True)
                    return
            log.debug("%s: %d not forwarded: %s", self.label, out.status, exc)

    # --- cancelling -------------------------------------------------------------------------------

    def cancel(self, reason: str | None = None) -> None:
        """A CANCEL for the request arrived: every pending branch is cancelled (RFC 3261 16.10); `reason`
        its Reason header, passed on in our CANCELs (t_relay's pass-reason-hdr)."""
        self.cancelled = True
        self._cancel_reason = reason
        self._cancel_pending(except_branch=None)

    def cancel_branches(self, index: int, which: str) -> None:
        """t_cancel_branch(): "" the branch `index`, "o" every other pending branch, "a" all of them."""
        for branch in self.branches:
            if which == "a" or (which == "o") == (branch.index != index):
                self._cancel_branch(branch)

    def _cancel_pending(self, except_branch: ProxyBranch | None) -> None:
        for branch in self.branches:
            if branch is not except_branch:
                self._cancel_branch(branch)

    def _cancel_branch(self, branch: ProxyBranch) -> None:
        if branch.done or branch.attempt is None or branch.cancel_wanted:
            return
        branch.cancel_wanted = True
        if branch.provisional:
            self._send_cancel(branch)
            self._arm_timer(branch, 64 * self.relay.transactions.timers.t1)   # the 487 should come
        else:
            # no provisional yet: no CANCEL may be sent (RFC 3261 9.1); the branch ends here and gets
            # its CANCEL if a provisional comes later
            self._stop_timer(branch)
            self._received(branch, branch.attempt, build_reply(branch.attempt.request, 487,
                                                               "Request Terminated"), True, local=True)

    def _send_cancel(self, branch: ProxyBranch) -> None:
        attempt = branch.attempt
        if attempt is None or branch.cancel_sent or not self.is_invite:
            return
        branch.cancel_sent = True
        cancel = cancel_for(attempt.request, self._cancel_reason)
        try:
            self.relay.transactions.send_request(cancel, attempt.destination, _ignore, branch=attempt.branch)
        except Exception as exc:  # noqa: BLE001 - a CANCEL that cannot go is logged; the branch times out
            log.info("%s: CANCEL to %s not sent: %s", self.label, attempt.destination, exc)

    def _abandon(self, branch: ProxyBranch) -> None:
        """Stop the branch's client transaction (no more retransmissions, no delivery)."""
        tx = branch.transaction
        if tx is not None:
            self.relay.transactions.abandon(tx)

    # --- the end ----------------------------------------------------------------------------------

    def _check_done(self) -> None:
        """The end once a final reply went upstream and every branch has its final response (a plain
        loop: this runs for every final response)."""
        if not self.replied:
            return
        branches = self.branches
        for branch in branches:
            if branch.final is None:
                return
        for branch in branches:
            self._stop_timer(branch)
        self._on_done(self)

    def _script(self) -> CompiledScript | None:
        return getattr(self.server, "script", None)


def with_path(request: SIPRequest, path: str, dst_uri: str | None) -> str | None:
    """A branch with a Path (RFC 3327, from the registrar's contact): its URIs become the branch's
    first Route lines, and the first one its destination unless $du names one (OpenSIPS does the same).
    RelayError -2 when the path is not a list of name-addrs."""
    try:
        hops = [parse_name_addr(value, "Path").uri for value in split_values(path)]
    except ParseError as exc:
        raise RelayError(f"bad branch path {path!r}: {exc.reason}", -2, (500, "Bad Path")) from None
    for value in reversed(split_values(path)):
        request.add_header("Route", value, first=True)
    return dst_uri or (str(hops[0]) if hops else None)


def cancel_for(request: SIPRequest, reason: str | None = None) -> SIPRequest:
    """The CANCEL of a sent request (RFC 3261 9.1): its Request-URI, top Via (our branch), Route
    lines, From, To, Call-ID and CSeq number with method CANCEL; Max-Forwards 70; no body; `reason`
    as its Reason header (RFC 3326) when given."""
    headers: list[tuple[str, str]] = [("Via", str(request.via))]
    for route in request.header_all("route"):
        headers.append(("Route", route))
    headers += [("From", request.header("from") or ""), ("To", request.header("to") or ""),
                ("Call-ID", request.call_id), ("CSeq", f"{request.cseq.number} CANCEL"),
                ("Max-Forwards", "70")]
    if reason:
        headers.append(("Reason", reason))
    headers.append(("Content-Length", "0"))
    return SIPRequest("CANCEL", request.ruri, headers)


def _reply_source(attempt: Attempt | None) -> Source | None:
    """Where a branch's reply came from: where the branch was sent. The transaction layer hands a
    creator the response without its transport source; a reply comes back over the connection the
    request went on (RFC 3261 18.2.2), and over UDP from the address sent to - the NAT binding a
    fix_nated_contact() in onreply_route must name."""
    if attempt is None:
        return None
    dest = attempt.destination
    if dest.socket is None:
        return None
    return Source(dest.proto, dest.socket, dest.host, dest.port, dest.conn_id)


def _with_status(response: SIPResponse, status: int) -> SIPResponse:
    return SIPResponse(status, "Server Internal Error" if status == 500 else response.reason,
                       [(h.name, h.value) for h in response.headers], response.body)


def _ignore(response: SIPResponse) -> None:
    """The final response of a CANCEL we sent: nothing to do with it."""
