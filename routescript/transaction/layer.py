"""TransactionLayer: the thin asyncio adapter around the sans-IO TransactionCore (core.py).

It keeps the layer's public API (lookup/create/reply, send_request/request/on_response, pending,
completed, close) and does only what the core cannot: reads the loop's clock, hands the core's
outboxes to the transport, calls the creators' callbacks, and keeps one loop timer armed at
`core.get_timer()` (re-armed only when `core.timer_moved` says the deadline became earlier). The first
send of a client request to a host name or over TCP may have to resolve or connect: that one runs as a
task, and whichever ends the transaction first (a response, Timer F, a transport error) cancels it.

The transport is reached only through the `Transport` Protocol below (routescript.transaction may not
import routescript.transport); its errors are OSErrors (routescript.transport.TransportError is one).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections.abc import Callable
from typing import Protocol

from routescript.sip import Destination, SIPRequest, SIPResponse, Source
from routescript.transaction.completed import CompletedTransaction
from routescript.transaction.counters import TransactionCounters
from routescript.transaction.core import (
    ClientTransaction,
    DataOut,
    DeliveryOut,
    OnResponse,
    ResponseOut,
    TransactionCore,
)
from routescript.transaction.server import ServerTransaction
from routescript.transaction.timers import TimerConfig

log = logging.getLogger("routescript.transaction")

# A timer handle may fire up to the loop's clock resolution early; deadlines that close count as due.
_EARLY = 0.001


class Transport(Protocol):
    """What the transaction layer needs from routescript.transport.TransportLayer."""

    def send_reply(self, response: SIPResponse, source: Source, dest: Destination | None = None) -> None: ...

    def send(self, data: bytes, dest: Destination) -> None: ...

    async def deliver(self, data: bytes, dest: Destination) -> None: ...

    def reply_destination(self, response: SIPResponse, source: Source) -> Destination: ...


TransportLike = Transport   # the name this Protocol had before


class TransactionLayer:
    """RFC 3261 section 17 transactions over a transport (see TransactionCore for the bounds)."""

    def __init__(self, transport: Transport, *, t1: float = 0.5, t2: float = 4.0, t4: float = 5.0,
                 timer_f: float | None = None, max_transactions: int = 10000,
                 max_completed: int = 50000, timers: TimerConfig | None = None,
                 invite_tu_timeout: float = 180.0, wait_timer: float | None = None,
                 counters: TransactionCounters | None = None) -> None:
        """`counters`: where tm's statistics are counted (counters.py; the core's CoreCounters)."""
        self.transport = transport
        self.timers = timers or TimerConfig(t1=t1, t2=t2, t4=t4, timer_f=timer_f,
                                            invite_tu_timeout=invite_tu_timeout, wait=wait_timer)
        self.core = TransactionCore(self.timers, transport.reply_destination,
                                    max_transactions=max_transactions, max_completed=max_completed,
                                    counters=counters)
        self.counters = self.core.counters
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None  # uvloop's TimerHandle has no when(): keep it ourselves
        self._loop: asyncio.AbstractEventLoop | None = None
        # The loop's clock, bound at first use (the layer may be made before the loop runs).
        self._clock: Callable[[], float] = self._bind_clock
        self._first_sends: dict[ClientTransaction, asyncio.Task[None]] = {}

    # --- bookkeeping ----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Live transactions (server ones without their final reply yet, INVITE ones until they end,
        client ones): what max_transactions bounds."""
        return self.core.pending

    @property
    def completed(self) -> int:
        """Completed non-INVITE server transactions kept to answer retransmissions (Timer J)."""
        return self.core.completed

    @property
    def max_transactions(self) -> int:
        return self.core.max_transactions

    @max_transactions.setter
    def max_transactions(self, value: int) -> None:
        self.core.max_transactions = value

    @property
    def max_completed(self) -> int:
        return self.core.max_completed

    @max_completed.setter
    def max_completed(self, value: int) -> None:
        self.core.max_completed = value

    def _bind_clock(self) -> float:
        loop = self._get_loop()
        self._clock = loop.time
        return loop.time()

    # --- server side ----------------------------------------------------------------------------

    def lookup(self, request: SIPRequest,
               source: Source | None) -> ServerTransaction | CompletedTransaction | None:
        """The server transaction `request` belongs to, or None when it starts a new one.

        A retransmission is handled here (the last response is resent, or it is absorbed) and an ACK
        for a non-2xx final response is absorbed: when this returns a transaction the core must not run
        the script again. An ACK for a 2xx (its own branch) matches nothing and returns None.
        Raises routescript.sip.ParseError when the top Via is broken.
        """
        found = self.core.lookup(request, self._clock())
        if found is not None:
            self._carry_out()
        return found

    def create(self, request: SIPRequest, source: Source) -> ServerTransaction:
        """Make the server transaction for `request` (OpenSIPS t_newtran). An existing one for the
        same key is returned as it is. Raises TransactionLimitError over the bound, TransactionError
        for an ACK (an ACK never creates a transaction)."""
        core = self.core
        before = core.pending
        transaction = core.create(request, source, self._clock())
        if core.pending > before:   # a new one, not the existing transaction of this request
            self.counters.UAS_transactions += 1
        if core.timer_moved:
            self._arm_timer()
        return transaction

    def invite_of(self, cancel: SIPRequest) -> ServerTransaction | None:
        """The live INVITE server transaction `cancel` is for (t_check_trans/t_relay of a CANCEL)."""
        return self.core.invite_of(cancel)

    def reply(self, transaction: ServerTransaction, response: SIPResponse, *, relayed: bool = False) -> None:
        """Send `response` within `transaction` (OpenSIPS t_reply; `relayed`: tm forwards a branch's
        response rather than one made here). The transaction keeps it for retransmissions. Raises
        TransactionError for a reply its state does not allow (a second final reply); a transport
        failure is logged and ends the transaction."""
        self.core.reply(transaction, response, self._clock())
        self._carry_out()
        if transaction.reply_hooks:
            run_reply_hooks(transaction, response, relayed=relayed)
        counters = self.counters
        if relayed:
            counters.relayed_replies += 1
        else:
            counters.local_replies += 1
        if response.status >= 200:
            counters.count_tm_final(response.status)

    # --- client side ----------------------------------------------------------------------------

    async def request(self, req: SIPRequest, dest: Destination, *, on_provisional: OnResponse | None = None,
                      branch: str | None = None) -> SIPResponse:
        """Send a non-INVITE request (NOTIFY) and return its final response, delivered once.

        Timer F expiry returns a locally made `408 Request Timeout`, a transport error a locally made
        `503 Service Unavailable` (also when over the transaction bound or after close()).
        `on_provisional(resp)` is called for each 1xx. Responses reach the transaction through
        `on_response`, which the core calls for every response it receives. `branch`: the top Via's
        branch, when the caller that wrote that Via knows it (saves parsing it back).
        """
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        future: asyncio.Future[SIPResponse] = self._loop.create_future()

        def on_final(response: SIPResponse) -> None:
            if not future.done():
                future.set_result(response)

        transaction = self.send_request(req, dest, on_final, on_provisional=on_provisional, branch=branch)
        try:
            return await future
        except asyncio.CancelledError:
            if transaction is not None:
                self._stop_first_send(transaction)
                self.core.cancel(transaction)
                self._carry_out()
            raise

    def send_request(self, req: SIPRequest, dest: Destination, on_final: OnResponse, *,
                     on_provisional: OnResponse | None = None, branch: str | None = None,
                     fr_timeout: float | None = None) -> ClientTransaction | None:
        """The callback form of `request`, for senders of many requests (a NOTIFY fan-out): no task or
        future per request. `on_final(response)` is called exactly once, from the event loop and never
        from inside this call, with the final response or a locally made 408/503. Returns the
        transaction (None when refused at once: closed or over the bound; on_final then gets a 503).
        Raises TransactionError when `branch` is already in use."""
        core = self.core
        self.counters.UAC_transactions += 1   # request() comes through here too: each one counted once
        now = self._clock()
        transaction = core.send_request(req, dest, now, on_final, on_provisional=on_provisional,
                                        branch=branch, fr_timeout=fr_timeout)
        if transaction is None:
            self._carry_out(defer=True)
            return None
        if dest.proto == "udp" and _is_ip_literal(dest.host):
            # UDP to an address (every NOTIFY to a phone's Contact): sent now, no task per request.
            try:
                self.transport.send(transaction.data, dest)
            except OSError as exc:
                log.info("transaction %s: cannot send to %s: %s", transaction.label, dest, exc)
                core.transport_error(transaction, now)
                self._carry_out(defer=True)   # the 503 must not reach on_final inside this call
                return transaction
        else:
            # The first send may have to resolve a name or open a TCP connection; Timer F runs
            # meanwhile, and whichever ends the transaction first (a response, Timer F, a transport
            # error) gives the answer; the send is cancelled then.
            self._first_sends[transaction] = self._get_loop().create_task(
                self._first_send(transaction, transaction.data, dest))
        if core.timer_moved:
            self._arm_timer()
        return transaction

    def abandon(self, transaction: ClientTransaction) -> None:
        """The creator stops waiting (a proxy branch that timed out or failed over): no more
        retransmissions, nothing delivered any more."""
        self._stop_first_send(transaction)
        self.core.cancel(transaction)
        self._carry_out()

    async def _first_send(self, transaction: ClientTransaction, data: bytes,
                          dest: Destination) -> None:
        try:
            await self.transport.deliver(data, dest)
        except OSError as exc:
            log.info("transaction %s: cannot send to %s: %s", transaction.label, dest, exc)
            self._first_send_failed(transaction)
        except Exception:  # a bug below us must still end the transaction (503), not hang the caller
            log.exception("transaction %s: sending failed", transaction.label)
            self._first_send_failed(transaction)
        finally:
            if self._first_sends.get(transaction) is asyncio.current_task():
                del self._first_sends[transaction]

    def send_failed(self, branch: str, method: str, dest: Destination, reason: str) -> bool:
        """The request of client transaction (`branch`, `method`) could not be sent after all (another
        worker process sent it for us and failed): its transport error, as a failed first send here.
        False when no live transaction has that key (answered, timed out or cancelled meanwhile)."""
        transaction = self.core.client_transaction(branch, method)
        if transaction is None:
            return False
        log.info("transaction %s: cannot send to %s: %s", transaction.label, dest, reason)
        self._stop_first_send(transaction)
        self._first_send_failed(transaction)
        return True

    def _first_send_failed(self, transaction: ClientTransaction) -> None:
        self.core.transport_error(transaction, self._clock())
        self._carry_out()

    def _stop_first_send(self, transaction: ClientTransaction) -> None:
        send = self._first_sends.pop(transaction, None)
        if send is not None and not send.done() and send is not asyncio.current_task():
            send.cancel()

    def on_response(self, resp: SIPResponse, source: Source | None) -> bool:
        """Hand a received response to its client transaction. True when one matched (including a
        retransmitted final response that was absorbed); False when it is stray."""
        core = self.core
        matched = core.receive_response(resp, self._clock())
        if core.deliveries or core.data_out or core.timer_moved:
            self._carry_out()
        if matched:
            self.counters.received_replies += 1
        return matched

    # --- carrying out what the core asks ----------------------------------------------------------

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _carry_out(self, *, defer: bool = False) -> None:
        """Send what the core put in its outboxes, hand responses to their creators, re-arm the timer.
        `defer`: callbacks go through call_soon (never inside the caller's own call)."""
        core = self.core
        # each outbox taken as the take_* methods do (swapped for a new list), without their call
        if core.responses_out:
            responses, core.responses_out = core.responses_out, []
            self._send_responses(responses)
        if core.data_out:
            data, core.data_out = core.data_out, []
            self._send_data(data)
        if core.deliveries:
            deliveries, core.deliveries = core.deliveries, []
            self._deliver(deliveries, defer)
        if core.timer_moved:
            self._arm_timer()

    def _send_responses(self, out: list[ResponseOut]) -> None:
        for response, source, dest, transaction in out:
            try:
                self.transport.send_reply(response, source, dest)
            except OSError as exc:   # RFC 3261 17.2.4: the transaction ends
                log.info("transaction %s: transport error: %s", transaction.label, exc)
                self.core.transport_error(transaction, self._clock())

    def _send_data(self, out: list[DataOut]) -> None:
        for data, dest, transaction in out:
            try:
                self.transport.send(data, dest)
            except OSError as exc:
                if transaction is None:
                    log.info("cannot resend a final response to %s: %s", dest, exc)
                else:
                    log.info("transaction %s: transport error: %s", transaction.label, exc)
                    self.core.transport_error(transaction, self._clock())

    def _deliver(self, deliveries: list[DeliveryOut], defer: bool) -> None:
        for callback, response, transaction in deliveries:
            if transaction is not None and response.status >= 200 and self._first_sends:
                self._stop_first_send(transaction)
            if defer:
                self._get_loop().call_soon(_call, callback, response, transaction)
            else:
                _call(callback, response, transaction)

    def _arm_timer(self) -> None:
        when = self.core.get_timer()
        if self._timer is not None:
            if self._timer_when == when:
                return
            self._timer.cancel()
            self._timer = None
        if when is None or self.core.closed:
            return
        self._timer = self._get_loop().call_at(when, self._on_timer)
        self._timer_when = when

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.core.handle_timer(self._clock() + _EARLY)
        finally:
            # Whatever one transaction did, the timers of all the others keep running: a failure that
            # escaped here once left every later retransmission and Timer F unarmed for good.
            try:
                self._carry_out()   # re-arms the timer when it can (handle_timer sets timer_moved)
            finally:
                if self._timer is None:
                    self._arm_timer()

    async def close(self) -> None:
        """Stop the timers; callers still waiting on a client transaction get a local 503."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for send in list(self._first_sends.values()):
            if send is not asyncio.current_task():
                send.cancel()
        self._first_sends.clear()
        core = self.core
        core.close()
        if core.deliveries:
            self._deliver(core.take_deliveries(), False)


def _call(callback: OnResponse, response: SIPResponse,
          transaction: ClientTransaction | None) -> None:
    try:
        callback(response)
    except Exception:  # the caller's bug must not break the transaction layer
        # the label only now: it reads the request's headers, which a NOTIFY never parses otherwise
        log.exception("transaction %s: response callback failed", transaction.label if transaction else "?")


@functools.lru_cache(maxsize=1024)
def _is_ip_literal(host: str) -> bool:
    """An IPv4/IPv6 address (brackets allowed): sending to it needs no name resolution."""
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except ValueError:
        return False
    return True


def run_failure_hooks(transaction: ServerTransaction, response: SIPResponse, *, local: bool) -> None:
    """The transaction's failure hooks with the best failure of a round of branches (`local`: made here):
    one that raises is logged, the others run."""
    for hook in list(transaction.failure_hooks or ()):
        try:
            hook(response, local)
        except Exception:
            log.exception("a failure hook failed on %d %s", response.status, response.reason)


def run_reply_hooks(transaction: ServerTransaction, response: SIPResponse, *, relayed: bool) -> None:
    """The transaction's reply hooks with `response` (sent; `relayed`: from a branch, else made here): one
    that raises is logged, the others run."""
    transaction.relayed_reply = relayed
    for hook in list(transaction.reply_hooks or ()):
        try:
            hook(response)
        except Exception:
            log.exception("a reply hook failed on %d %s", response.status, response.reason)
