"""Messages, from the transport's callback to their routes (the MessageDispatcher): the bounds on
messages in flight (MAX_RUNNING, MAX_PENDING), the overload shedding (queue_delay_limit), requests and
responses to their routes, and what a failure becomes (400 or the error's status, error_route, 500)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Coroutine

from routescript.script import CompiledScript
from routescript.script.context import ERROR_ROUTE, ONREPLY_ROUTE, REQUEST_ROUTE, MsgContext
from routescript.script.runtime import DROP_KEY
from routescript.sip import ParseError, SIPRequest, SIPResponse, Source
from routescript.sip.hosts import bare_host

from .layers import SipLayers
from .log import current_call_id
from .replies import Replier
from .routes import Routes
from .stats import KNOWN_METHODS, CoreCounters

log = logging.getLogger("routescript.core")

# Bounds (STYLE 7). Messages handled at once (a task each); the others wait in the dispatcher's run
# queue, without a task, in arrival order; beyond MAX_PENDING messages in all a request gets 503.
MAX_RUNNING = 256
MAX_PENDING = 4096

# queue_delay_limit times this for requests inside a dialog (375 ms by default: below T1, 500 ms).
# Measured on SUBSCRIBE calls offered 45% above capacity (2,200/s): 1,170-1,250 complete calls/s kept,
# against 1,030 when an unSUBSCRIBE was refused like a new SUBSCRIBE (half-done calls wasted).
IN_DIALOG_ALLOWANCE = 1.5

_RETRY_LATER = (("Retry-After", "5"),)


# A message waiting for its turn: its source, its arrival and the context its task will run in (the
# transport callback's, as when the task is made at once - not that of the message whose end starts it).
Queued = tuple[SIPRequest | SIPResponse, Source, float, contextvars.Context]


class MessageDispatcher:
    """Runs every message the transport hands over (`on_message`, given to the transport as is)
    through the script, one task each. Closed until start() opens it: a message read while the server
    stops gets 503 (a response still completes its transaction).

    Choice (issue 18): the MAX_RUNNING bound is kept by admission, not by an asyncio.Semaphore inside
    each task - a message beyond it waits in a FIFO run queue and gets its task when a running one
    ends. Same order, same bound, same overload rules (its wait counts in queue_delay_limit), and a
    message costs no semaphore round trip (a seventh of the dispatcher's calls per request)."""

    def __init__(self, layers: SipLayers, routes: Routes, replier: Replier, counters: CoreCounters) -> None:
        self._layers = layers          # the transport and transactions, read at each message
        self._server = layers          # what the routes see as ctx.server (the Server itself)
        self._routes = routes
        self._replier = replier
        self._counters = counters
        self.accepting = False
        self.max_pending = MAX_PENDING
        self.queue_delay_limit = 0.0   # seconds; start() sets it from the core parameter (ms)
        self._tasks: set[asyncio.Task[object]] = set()
        self._running = 0                          # admitted messages whose task has not ended
        self._queued: deque[Queued] = deque()      # admitted, waiting for one of them to end
        self._shed_logged = -1.0e9
        self._stop_logged = -1.0e9

    def spawn(self, coro: Coroutine[object, object, object],
              context: contextvars.Context | None = None) -> asyncio.Task[object]:
        """A task among the messages in flight: bounded by MAX_PENDING, waited for by finish()."""
        task = asyncio.get_running_loop().create_task(coro, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def finish(self, grace: float) -> None:
        """Let the messages in flight and queued end (at most `grace` seconds), then cancel what runs
        and drop what still waits (logged)."""
        current = asyncio.current_task()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while pending := [t for t in self._tasks if t is not current]:
            # a message ending starts the next queued one: wait again for those
            _done, still = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
            if still:
                if self._queued:
                    log.warning("stopping: %d queued messages dropped after %.0f s", len(self._queued), grace)
                    self._queued.clear()   # before the cancels: an ending message starts no other
                for t in still:
                    t.cancel()
                return

    # ------------------------------------------------------------------ the transport's callback
    def on_message(self, msg: SIPRequest | SIPResponse, source: Source) -> None:
        """The transport's callback. A response that matches one of our client transactions (the 200
        to a NOTIFY) is handed over here at once - it must never queue behind requests waiting for the
        database (nor cost a task). Anything else is one task, bounded by MAX_PENDING.

        Choice: a request is not run eagerly up to its first wait (it would save the task for those
        that never wait, ~5% of an OPTIONS): code below it, asyncpg's pool among others, needs
        asyncio.current_task() (asyncio.timeout), which only a real task gives on Python 3.11."""
        if not self.accepting:
            self._while_stopping(msg, source)
            return
        counters = self._counters  # OpenSIPS core statistics (stats.py): plain int attributes
        request: SIPRequest | None
        if isinstance(msg, SIPRequest):
            request = msg
            counters.rcv_requests += 1
            if msg.method not in KNOWN_METHODS:
                counters.unsupported_methods += 1
        else:
            request = None
            counters.rcv_replies += 1
            transactions = self._layers.transactions
            if transactions is not None:
                try:
                    if transactions.on_response(msg, source):
                        return
                except Exception:
                    log.exception("unexpected failure handling a response")
                    return
                if not self._routes.has(ONREPLY_ROUTE, None):
                    self._stray_response(msg)
                    return
        pending = self._running + len(self._queued) if self._queued else self._running   # admitted messages
        if pending >= self.max_pending:
            if request is not None:
                counters.drop_requests += 1  # dropped before the script, as OpenSIPS counts them
            else:
                counters.drop_replies += 1
            if request is not None and request.method != "ACK":
                log.warning("overloaded (%d messages pending): 503 to %s", pending, request.method)
                self._replier.reply_stateless(request, source, 503, "Service Unavailable", _RETRY_LATER)
            else:
                log.warning("overloaded (%d messages pending): response dropped", pending)
            return
        arrived = time.monotonic()
        if request is not None and self.queue_delay_limit:
            transport = self._layers.transport
            assert transport is not None
            in_kernel = transport.queue_delay(source, arrived)   # its wait in the kernel's buffer
            arrived -= in_kernel
            if in_kernel > self.queue_delay_limit and self._too_late(request, source, arrived):
                return   # already too late: answered here, without a task
        if self._running < MAX_RUNNING:
            self._running += 1
            self.spawn(self.handle_message(msg, source, arrived, admitted=True))
        else:
            self._queued.append((msg, source, arrived, contextvars.copy_context()))

    def _start_queued(self) -> None:
        """An admitted message ended and others wait: the first one gets its task (in its place)."""
        msg, source, arrived, context = self._queued.popleft()
        self.spawn(self.handle_message(msg, source, arrived, admitted=True), context)

    def _while_stopping(self, msg: SIPRequest | SIPResponse, source: Source) -> None:
        """A message read after stop() began (the sockets are read until the modules have stopped,
        seconds with presence's last flush). A response still completes its transaction (the 200 a
        NOTIFY sent before the stop waits for); a request is refused 503 + Retry-After (RFC 3261
        21.5.4: the client tries again, or another server) and counted, never dropped unanswered."""
        counters = self._counters
        if not isinstance(msg, SIPRequest):
            counters.rcv_replies += 1
            transactions = self._layers.transactions
            try:
                if transactions is None or not transactions.on_response(msg, source):
                    counters.drop_replies += 1
            except Exception:
                log.exception("unexpected failure handling a response")
            return
        counters.rcv_requests += 1
        counters.drop_requests += 1
        if msg.method != "ACK":
            now = time.monotonic()
            if now - self._stop_logged >= 1.0:  # one line a second, not one per request
                self._stop_logged = now
                log.info("stopping: 503 to %s %s (Call-ID %s) and to what follows", msg.method,
                         msg.ruri, msg.header("call-id"))
            self._replier.reply_stateless(msg, source, 503, "Service Unavailable", _RETRY_LATER)

    def _too_late(self, msg: SIPRequest, source: Source, arrived: float) -> bool:
        """Overload, measured where it shows: the time a request waited between its arrival and its
        turn (the kernel's UDP buffer, as the transport's probe measures it, then the loop's ready
        queue and the MAX_RUNNING bound). Beyond queue_delay_limit it gets a
        503 with Retry-After (RFC 3261 21.5.4) instead of the script: its client retransmits at 500 ms
        (T1), so a late answer is paid twice, and the server that answers every request late collapses
        to a fraction of its capacity (measured: 455 SUBSCRIBE calls/s achieved at 1,720 offered).
        A 503 costs a tenth of a request and keeps the rest on time. ACKs are never answered.

        Choice, measured on PUBLISH 50% above capacity: at 250 ms the server kept ~1,550 successful
        calls/s and no retransmission; at 400 ms (too close to T1) it fell to ~830 with retransmissions,
        and refusing only a standing queue (CoDel-like: every request of 200 ms late) to ~870. The cost:
        a server run at 90%+ of its capacity answers the worst of its bursts 503 (0.5% of calls once).

        A request inside a dialog (To tag: an unSUBSCRIBE, a refresh) may wait IN_DIALOG_ALLOWANCE times
        longer: new work is refused first, and the work already done for the dialog is not wasted."""
        limit = self.queue_delay_limit
        if not limit or msg.method == "ACK":
            return False
        now = time.monotonic()
        waited = now - arrived
        if waited <= limit or (waited <= limit * IN_DIALOG_ALLOWANCE and _in_dialog(msg)):
            return False
        self._counters.drop_requests += 1
        self._counters.queue_delay_refusals += 1
        if now - self._shed_logged >= 1.0:  # one line a second, not one per request
            self._shed_logged = now
            log.warning("overloaded: a %s waited %.0f ms (queue_delay_limit %.0f ms): 503 until it "
                        "catches up", msg.method, waited * 1000, limit * 1000)
        self._replier.reply_stateless(msg, source, 503, "Service Unavailable", _RETRY_LATER)
        return True

    # ------------------------------------------------------------------ one message
    async def handle_message(self, msg: SIPRequest | SIPResponse, source: Source,
                             arrived: float | None = None, *, admitted: bool = False) -> None:
        """Dispatch one parsed message (also the entry point tests use without sockets). `arrived`:
        when the transport handed it over (time.monotonic), to answer 503 when it waited too long.
        `admitted`: counted in the MAX_RUNNING bound by on_message; its end lets the next one run."""
        try:
            cid: str | None = msg.call_id
        except ParseError:
            cid = None
        token = current_call_id.set(cid)
        try:
            if isinstance(msg, SIPRequest):
                if arrived is not None and self.queue_delay_limit and self._too_late(msg, source, arrived):
                    return   # (no limit set: not even asked)
                # The request is run here rather than in a coroutine of its own: every frame between
                # the task and the script is resumed again at each wait of the message (issue 18).
                script = self._routes.script  # fixed for this message even if a reload swaps it meanwhile
                assert script is not None, "a message before load()"
                ctx = MsgContext(msg=msg, source=source, server=self._server, route_type=REQUEST_ROUTE)
                transactions = self._layers.transactions
                try:
                    if transactions is not None and transactions.lookup(msg, source) is not None:
                        return   # a retransmission: the transaction layer has resent the last reply itself
                except ParseError as exc:   # a Via too broken to match transactions on
                    await self._on_bad_message(ctx, exc, script)
                    return
                if msg.method == "ACK" and _acks_our_stateless_reply(msg):
                    self._counters.received_ACKs += 1  # sl's statistic; the script still sees the ACK
                # The compiled route never raises: what a function call, pseudo-variable or statement
                # raised is logged there with its file:line:col and recorded on the context (ctx.failure).
                await script.request_route(ctx)   # ctx.route_type is REQUEST_ROUTE: made so above
                if ctx.failure is not None:
                    await self._after_failure(ctx, script)
            else:
                await self._handle_response(msg, source)
        except Exception:
            log.exception("unexpected failure handling a message")
        finally:
            current_call_id.reset(token)
            if admitted:   # its place goes to the first queued message, if any
                if self._queued:
                    self._start_queued()
                else:
                    self._running -= 1

    async def _handle_response(self, msg: SIPResponse, source: Source) -> None:
        transactions = self._layers.transactions
        if transactions is not None and transactions.on_response(msg, source):
            return
        routes = self._routes
        if routes.has(ONREPLY_ROUTE, None):
            ctx = MsgContext(msg=msg, source=source, server=self._server, route_type=ONREPLY_ROUTE,
                             reply_code=msg.status)
            try:
                await routes.run(ONREPLY_ROUTE, None, ctx)
            except Exception as exc:
                log.error("onreply_route failed%s", _where(exc), exc_info=not _has_pos(exc))
            if not ctx.extra.get(DROP_KEY):
                self._stray_response(msg)
        else:
            self._stray_response(msg)

    def _stray_response(self, msg: SIPResponse) -> None:
        """A response no transaction took: one to our stateless forward() goes on to the next Via
        (core/relay.py); any other is dropped (OpenSIPS sends such strays on by their Via; we do not:
        nothing of ours sent the request). disable_stateless_fwd = yes drops them all; check_via = yes
        forwards only one whose top Via names us (OpenSIPS forward_reply's check_self)."""
        relay = getattr(self._layers, "relay", None)
        config = self._layers.config
        if relay is not None and not config.get("disable_stateless_fwd") \
                and (not config.get("check_via") or self._top_via_is_ours(msg)) and relay.forward_reply(msg):
            return
        log.debug("response %s matched no transaction; dropped", msg.status)

    def _top_via_is_ours(self, msg: SIPResponse) -> bool:
        try:
            via = msg.via
        except ParseError:
            return False
        return self._layers.is_myself(bare_host(via.host), via.port or 5060)

    async def _after_failure(self, ctx: MsgContext, script: CompiledScript) -> None:
        """The script failed (ctx.failure) and did not reply: a bad header becomes the error's reply or
        error_route, a bug a 500; a bad script value is only logged (there). Nothing for an ACK, a
        dropped request or one already answered."""
        msg = ctx.msg
        if ctx.replied or (isinstance(msg, SIPRequest) and msg.method == "ACK") or ctx.extra.get(DROP_KEY):
            return
        failure = ctx.failure
        if isinstance(failure, ParseError):
            # the script met a bad header and ended without replying: its status + reason, or error_route
            await self._on_bad_message(ctx, failure, script)
        elif not isinstance(failure, (ValueError, TypeError)):  # a bad script value is only logged
            try:
                self._replier.reply(ctx, 500, "Server Internal Error")
            except Exception:
                log.exception("could not send 500")

    async def _on_bad_message(self, ctx: MsgContext, exc: ParseError, script: CompiledScript) -> None:
        """The script touched a header the peer got wrong: error_route when the script has one, else
        the error's own status and reason (400 by default), as OpenSIPS's core does."""
        log.warning("bad message: %s", exc.reason)
        if "URI" in str(exc.reason):
            self._counters.bad_URIs_rcvd += 1
        else:
            self._counters.bad_msg_hdr += 1
        if script.has(ERROR_ROUTE, None):
            ctx.route_type = ERROR_ROUTE
            ctx.error = exc
            try:
                await script.run(ERROR_ROUTE, None, ctx)
            except Exception as exc2:
                log.error("error_route failed%s: %s", _where(exc2), exc2, exc_info=not _has_pos(exc2))
            return
        if not ctx.replied and not (isinstance(ctx.msg, SIPRequest) and ctx.msg.method == "ACK"):
            try:
                self._replier.reply(ctx, exc.status, exc.reason)
            except Exception as exc2:  # noqa: BLE001 - the headers a reply copies are broken too
                log.warning("cannot answer the bad message (%s): %s", exc.reason, exc2)


def _in_dialog(msg: SIPRequest) -> bool:
    """A To tag: the request belongs to a dialog (RFC 3261 12.2). Read only for a request about to be
    refused, so the cost does not matter; a broken To counts as outside."""
    try:
        return bool(msg.to.tag)
    except Exception:  # noqa: BLE001 - a broken To header: treated as new work
        return False


def _acks_our_stateless_reply(msg: SIPRequest) -> bool:
    """An ACK whose To tag is one our stateless replies carry (Server.to_tag's "rs." prefix)."""
    try:
        tag = msg.to.tag
    except Exception:  # noqa: BLE001 - a broken To header: not ours to count
        return False
    return bool(tag) and str(tag).startswith("rs.")


def _has_pos(exc: BaseException) -> bool:
    # a script error (routescript.script) carries its position; any other exception may be met here
    return getattr(exc, "pos", None) is not None


def _where(exc: BaseException) -> str:
    pos = getattr(exc, "pos", None)   # any exception: only the script's carry a position
    if pos:
        try:
            return f" at {pos[0]}:{pos[1]}:{pos[2]}"
        except (TypeError, IndexError):
            return f" at {pos}"
    return ""
