"""TransactionLayer: the thin asyncio adapter around the sans-IO transaction machines.

One timer for all client (and INVITE server) transactions: a heap of (deadline, seq, transaction) and
a single loop.call_at handle armed for the earliest deadline (no task per transaction). Entries made
stale by a transaction changing its deadline are skipped when popped.

Non-INVITE server transactions - every PUBLISH and SUBSCRIBE - cost no heap entry: while live (Trying,
Proceeding) their only timer is the TU timeout, the same for all, so a periodic sweep walks them
oldest first (dict insertion order) and stops at the first one not due. Once they have sent their
final response over UDP they leave `_server` for the CompletedTable (key -> response bytes and
destination, expiring in order after Timer J): no machine is kept for the 64*T1 they wait.

The transport is reached only through the small interface below (routescript.transaction may not
import routescript.transport); its errors are OSErrors (routescript.transport.TransportError is one).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import ipaddress
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from routescript.sip import ParseError, build_reply
from routescript.transaction.client import NonInviteClientTransaction
from routescript.transaction.completed import CompletedTable, CompletedTransaction
from routescript.transaction.errors import TransactionError, TransactionLimitError
from routescript.transaction.keys import client_key_of_request, client_key_of_response, server_key
from routescript.transaction.machine import Action, Deliver, Machine, Transmit
from routescript.transaction.server import NonInviteServerTransaction, ServerTransaction, server_transaction
from routescript.transaction.states import State
from routescript.transaction.timers import TimerConfig

log = logging.getLogger("routescript.transaction")

# A timer handle may fire up to the loop's clock resolution early; deadlines that close count as due.
_EARLY = 0.001


class TransportLike(Protocol):
    """What the transaction layer needs from routescript.transport.TransportLayer."""

    def send_reply(self, response: Any, source: Any, dest: Any = None) -> None: ...

    def send(self, data: bytes, dest: Any) -> None: ...

    async def deliver(self, data: bytes, dest: Any) -> None: ...

    def reply_destination(self, response: Any, source: Any) -> Any: ...


@dataclass(slots=True, eq=False)
class _ClientEntry:
    transaction: NonInviteClientTransaction
    on_final: Callable[[Any], None] | None      # None once called: the final answer goes out once
    data: bytes
    on_provisional: Callable[[Any], None] | None
    first_send: asyncio.Task[None] | None = None
    deferred: bool = False                        # answer through call_soon (inside send_request)

    def finish(self, response: Any) -> None:
        on_final, self.on_final = self.on_final, None
        send = self.first_send
        if send is not None and not send.done() and send is not asyncio.current_task():
            send.cancel()
        if on_final is None:
            return
        if self.deferred:
            asyncio.get_running_loop().call_soon(_call_final, on_final, response, self.transaction)
        else:
            _call_final(on_final, response, self.transaction)


def _call_final(on_final: Callable[[Any], None], response: Any, transaction: Machine) -> None:
    try:
        on_final(response)
    except Exception:  # the caller's bug must not break the transaction layer
        # the label only now: it reads the request's headers, which a NOTIFY never parses otherwise
        log.exception("transaction %s: final-response callback failed", transaction.label)


class TransactionLayer:
    """RFC 3261 section 17 transactions over a transport.

    max_transactions bounds the live transactions (server ones still waiting for their final reply,
    and client ones); over it `create` raises TransactionLimitError (answer 503 with Retry-After) and
    `request` returns a locally made 503. Completed non-INVITE server transactions are not live: they
    sit in a retransmission cache bounded by max_completed (the oldest evicted first, logged).
    """

    def __init__(self, transport: TransportLike, *, t1: float = 0.5, t2: float = 4.0, t4: float = 5.0,
                 timer_f: float | None = None, max_transactions: int = 10000,
                 max_completed: int = 50000, timers: TimerConfig | None = None) -> None:
        self.transport = transport
        self.timers = timers or TimerConfig(t1=t1, t2=t2, t4=t4, timer_f=timer_f)
        self.max_transactions = max_transactions
        self._server: dict[tuple[Any, ...], ServerTransaction] = {}
        self._looked_up: tuple[Any, Any] = (None, None)   # the last lookup()'s request and key (create)
        # Response destinations are kept packed into plain tuples (see completed.py: no GC walk).
        self._completed = CompletedTable(self.timers.timer_j(False), max_completed,
                                         pack=getattr(transport, "pack_destination", None),
                                         unpack=getattr(transport, "unpack_destination", None))
        # Client transactions that got their final response over UDP wait Timer K only to absorb
        # retransmissions of it: their key is all that is kept (no machine, request or response).
        self._client_done = CompletedTable(self.timers.timer_k(False), max_completed)
        # One sweep for the TU timeouts of live server transactions and the completed table's expiry.
        self._sweep_interval = min(1.0, 2 * self.timers.t1)
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._evict_logged = -1.0e9
        self._client: dict[tuple[str, str], _ClientEntry] = {}
        # Timers: the heap holds (deadline, seq) only, so a transaction that ends before its timer
        # (a NOTIFY answered within Timer E) is freed at once instead of being kept - and promoted
        # by the collector with its request - until its stale entry reaches the top. _scheduled maps
        # a live transaction to its (deadline, seq); _by_seq the seq back to it.
        self._heap: list[tuple[float, int]] = []
        self._scheduled: dict[Machine, tuple[float, int]] = {}
        self._by_seq: dict[int, Machine] = {}
        self._seq = itertools.count()
        self._wakeup: asyncio.TimerHandle | None = None
        self._wakeup_when: float | None = None  # uvloop's TimerHandle has no when(): keep it ourselves
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # --- bookkeeping ----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Live transactions (server ones without their final reply yet, INVITE ones until they end,
        client ones): what max_transactions bounds."""
        return len(self._server) + len(self._client)

    @property
    def completed(self) -> int:
        """Completed non-INVITE server transactions kept to answer retransmissions (Timer J)."""
        return len(self._completed)

    @property
    def max_completed(self) -> int:
        return self._completed.max_entries

    @max_completed.setter
    def max_completed(self, value: int) -> None:
        if value < 1:
            raise ValueError("max_completed must be at least 1")
        self._completed.max_entries = value

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _now(self) -> float:
        return self._get_loop().time()

    # --- server side ----------------------------------------------------------------------------

    def lookup(self, request: Any, source: Any) -> ServerTransaction | CompletedTransaction | None:
        """The server transaction `request` belongs to, or None when it starts a new one.

        A retransmission is handled here (the last response is resent, or it is absorbed) and an ACK
        for a non-2xx final response is absorbed: when this returns a transaction the core must not run
        the script again. An ACK for a 2xx (its own branch) matches nothing and returns None.
        Raises routescript.sip.ParseError when the top Via is broken.
        """
        key = server_key(request)
        self._looked_up = (request, key)
        transaction = self._server.get(key)
        if transaction is None:
            if not self._completed or request.method == "ACK":
                return None
            done = self._completed.get(key, self._now())
            if done is not None:  # RFC 3261 17.2.2: Completed + request -> resend the final response
                try:
                    self.transport.send(done.data, done.dest)
                except OSError as exc:
                    log.info("transaction %s %s: cannot resend the final response: %s", request.method,
                             request.call_id, exc)
            return done
        now = self._now()
        if request.method == "ACK":
            if not transaction.is_invite:
                return None
            actions = transaction.receive_ack(now)
        else:
            actions = transaction.receive_request(now)
        self._run(transaction, actions, now)
        return transaction

    def create(self, request: Any, source: Any) -> ServerTransaction:
        """Make the server transaction for `request` (OpenSIPS t_newtran). An existing one for the
        same key is returned as it is. Raises TransactionLimitError over the bound, TransactionError
        for an ACK (an ACK never creates a transaction)."""
        if request.method == "ACK":
            raise TransactionError("an ACK does not create a transaction")
        # The core looked this request up just before (t_newtran after the retransmission check): the
        # key of the request as received, kept for this one step.
        looked_up, key = self._looked_up
        if looked_up is not request:
            key = server_key(request)
        self._looked_up = (None, None)
        existing = self._server.get(key)
        if existing is not None:
            return existing
        if len(self._server) + len(self._client) >= self.max_transactions:
            log.warning("transaction limit %d reached: refusing %s %s", self.max_transactions,
                        request.method, request.call_id)
            raise TransactionLimitError(self.max_transactions)
        transaction = server_transaction(request, source, reliable=_reliable(source),
                                         timers=self.timers, now=self._now(), key=key)
        self._server[key] = transaction
        self._schedule(transaction)
        if self._sweep_handle is None:
            self._arm_sweep()
        return transaction

    def reply(self, transaction: ServerTransaction, response: Any) -> None:
        """Send `response` within `transaction` (OpenSIPS t_reply). The transaction keeps it for
        retransmissions. Raises TransactionError for a reply its state does not allow (a second final
        reply); a transport failure is logged and ends the transaction."""
        now = self._now()
        if (not transaction.reliable and not transaction.is_invite and response.status >= 200
                and self._server.get(transaction.key) is transaction):  # type: ignore[arg-type]
            self._reply_final_udp(transaction, response, now)  # type: ignore[arg-type]
            return
        # Provisional replies, TCP (Timer J is 0: the machine ends it at once), INVITE, and a reply the
        # state refuses (a transaction that has ended) go through the machine.
        actions = transaction.send_response(response, now)
        self._run(transaction, actions, now)

    def _reply_final_udp(self, transaction: NonInviteServerTransaction, response: Any, now: float) -> None:
        """The final response of a non-INVITE server transaction over UDP - every PUBLISH, SUBSCRIBE and
        OPTIONS - in one step: send it and keep only its bytes and destination for retransmissions until
        Timer J; the machine is dropped (no action list, no timers)."""
        dest = self.transport.reply_destination(response, transaction.source)
        data = response.to_bytes()
        if not transaction.complete_into_table(response):
            transaction.send_response(response, now)  # raises the TransactionError of the state
            return
        key: Any = transaction.key
        del self._server[key]
        self._unschedule(transaction)
        try:
            self.transport.send_reply(response, transaction.source, dest)
        except OSError as exc:  # RFC 3261 17.2.2: a transport error in Completed ends the transaction
            log.info("transaction %s: transport error: %s", transaction.label, exc)
            transaction.state = State.TERMINATED
            return
        self._keep_completed(key, data, dest, now)

    def _keep_completed(self, key: Any, data: bytes, dest: Any, now: float) -> None:
        evicted = self._completed.add(key, data, dest, now)
        if evicted and now - self._evict_logged >= 60.0:
            self._evict_logged = now
            log.warning("completed-transaction cache full (%d entries): the oldest are dropped before "
                        "Timer J (%d so far); a late retransmission will run the script again",
                        self._completed.max_entries, self._completed.evicted)
        if self._sweep_handle is None:
            self._arm_sweep()

    def _arm_sweep(self) -> None:
        if self._closed:
            return
        self._sweep_handle = self._get_loop().call_later(self._sweep_interval, self._sweep)

    def _sweep(self) -> None:
        """TU timeouts of live non-INVITE server transactions (created in order with one timeout, so
        the oldest come first) and the expiry of the completed table."""
        self._sweep_handle = None
        now = self._now() + _EARLY
        due: list[ServerTransaction] = []
        for transaction in self._server.values():
            if transaction.is_invite:
                continue  # INVITE server transactions have their own timers on the heap
            deadline = transaction.next_deadline()
            if deadline is not None and deadline > now:
                break
            due.append(transaction)
        for transaction in due:
            try:
                self._run(transaction, transaction.handle_timer(now), now)
            except Exception:  # one transaction's bug must not stop the sweep
                log.exception("transaction %s: timer handling failed", transaction.label)
                self._forget(transaction)
        self._completed.expire(now)
        self._client_done.expire(now)
        if self._server or self._completed or self._client_done:
            self._arm_sweep()

    # --- client side ----------------------------------------------------------------------------

    async def request(self, req: Any, dest: Any, *,
                      on_provisional: Callable[[Any], None] | None = None, branch: str | None = None) -> Any:
        """Send a non-INVITE request (NOTIFY) and return its final response, delivered once.

        Timer F expiry returns a locally made `408 Request Timeout`, a transport error a locally made
        `503 Service Unavailable` (also when over the transaction bound or after close()).
        `on_provisional(resp)` is called for each 1xx. Responses reach the transaction through
        `on_response`, which the core calls for every response it receives. `branch`: the top Via's
        branch, when the caller that wrote that Via knows it (saves parsing it back).
        """
        future: asyncio.Future[Any] = self._get_loop().create_future()

        def on_final(response: Any) -> None:
            if not future.done():
                future.set_result(response)

        transaction = self.send_request(req, dest, on_final, on_provisional=on_provisional, branch=branch)
        try:
            return await future
        except asyncio.CancelledError:
            if transaction is not None:
                self._forget(transaction, cancelled=True)
            raise

    def send_request(self, req: Any, dest: Any, on_final: Callable[[Any], None], *,
                     on_provisional: Callable[[Any], None] | None = None,
                     branch: str | None = None) -> NonInviteClientTransaction | None:
        """The callback form of `request`, for senders of many requests (a NOTIFY fan-out): no task or
        future per request. `on_final(response)` is called exactly once, from the event loop and never
        from inside this call, with the final response or a locally made 408/503. Returns the
        transaction (None when refused at once: closed or over the bound; on_final then gets a 503).
        Raises TransactionError when `branch` is already in use."""
        loop = self._get_loop()
        if self._closed or self.pending >= self.max_transactions:
            if not self._closed:
                log.warning("transaction limit %d reached: not sending %s %s", self.max_transactions,
                            req.method, req.call_id)
            loop.call_soon(on_final, build_reply(req, 503, "Service Unavailable"))
            return None
        key = (branch, req.method) if branch else client_key_of_request(req)
        if key in self._client:
            raise TransactionError(f"branch {key[0]!r} already used by a pending {key[1]}")
        transaction = NonInviteClientTransaction(req, dest, reliable=_reliable(dest), timers=self.timers,
                                                 now=loop.time(), key=key)
        entry = _ClientEntry(transaction, on_final, req.to_bytes(), on_provisional)
        self._client[key] = entry
        self._schedule(transaction)
        udp = str(getattr(dest, "proto", "")).lower() == "udp"
        if udp and _is_ip_literal(str(getattr(dest, "host", ""))):
            # UDP to an address (every NOTIFY to a phone's Contact): sent now, no task per request.
            try:
                self.transport.send(entry.data, dest)
            except OSError as exc:
                log.info("transaction %s: cannot send to %s: %s", transaction.label, dest, exc)
                now = loop.time()
                entry.deferred = True   # the 503 must not reach on_final inside this call
                self._run(transaction, transaction.transport_error(now), now)
        else:
            # The first send may have to resolve a name or open a TCP connection; Timer F runs
            # meanwhile, and whichever ends the transaction first (a response, Timer F, a transport
            # error) gives the answer; the send is cancelled then.
            entry.first_send = loop.create_task(self._first_send(transaction, entry.data, dest))
        return transaction

    async def _first_send(self, transaction: NonInviteClientTransaction, data: bytes, dest: Any) -> None:
        try:
            await self.transport.deliver(data, dest)
        except OSError as exc:
            log.info("transaction %s: cannot send to %s: %s", transaction.label, dest, exc)
            now = self._now()
            self._run(transaction, transaction.transport_error(now), now)
        except Exception:  # a bug below us must still end the transaction (503), not hang the caller
            log.exception("transaction %s: sending failed", transaction.label)
            now = self._now()
            self._run(transaction, transaction.transport_error(now), now)

    def on_response(self, resp: Any, source: Any) -> bool:
        """Hand a received response to its client transaction. True when one matched (including a
        retransmitted final response that was absorbed); False when it is stray."""
        try:
            key = client_key_of_response(resp)
        except ParseError:  # a broken Via/CSeq in a response: nothing can match it
            return False
        entry = self._client.get(key)
        if entry is None:  # a retransmitted final response within Timer K is absorbed
            return bool(self._client_done) and self._client_done.contains(key, self._now())
        now = self._now()
        transaction = entry.transaction
        actions = transaction.receive_response(resp, now)
        if transaction.state is State.COMPLETED and not transaction.reliable:
            # Answered over UDP: Timer K is kept by _client_done, so the machine's Timer K never goes on
            # the heap (a stale heap entry per NOTIFY, popped later, was a tenth of a fan-out).
            self._run(transaction, actions, now, schedule=False)
            if self._client.get(key) is entry:
                self._retire_client(transaction, now)
            else:
                self._schedule(transaction)
            return True
        self._run(transaction, actions, now)
        if transaction.state is State.COMPLETED and self._client.get(key) is entry:
            self._retire_client(transaction, now)
        return True

    def _retire_client(self, transaction: NonInviteClientTransaction, now: float) -> None:
        """The final response is delivered (UDP: Timer K runs): keep the key only, to absorb its
        retransmissions, and drop the machine with its request and response."""
        key: Any = transaction.key
        del self._client[key]
        self._unschedule(transaction)
        self._client_done.add(key, b"", None, now)
        if self._sweep_handle is None:
            self._arm_sweep()

    # --- running actions and timers ---------------------------------------------------------------

    def _run(self, transaction: Machine, actions: list[Action], now: float, *, schedule: bool = True) -> None:
        for action in actions:
            if isinstance(action, Transmit):
                self._transmit(transaction, action, now)
            elif isinstance(action, Deliver):
                self._deliver(transaction, action)
        if schedule:
            self._schedule(transaction)

    def _transmit(self, transaction: Machine, action: Transmit, now: float) -> None:
        try:
            if isinstance(transaction, ServerTransaction):
                self.transport.send_reply(action.message, transaction.source)
            else:
                assert isinstance(transaction, NonInviteClientTransaction)
                entry = self._client.get(transaction.key)  # type: ignore[arg-type]
                data = entry.data if entry is not None else action.message.to_bytes()
                self.transport.send(data, transaction.destination)
        except OSError as exc:
            log.info("transaction %s: transport error: %s", transaction.label, exc)
            more = transaction.transport_error(now)
            for follow in more:  # only Deliver actions can follow a transport error
                if isinstance(follow, Deliver):
                    self._deliver(transaction, follow)

    def _deliver(self, transaction: Machine, action: Deliver) -> None:
        entry = self._client.get(transaction.key)  # type: ignore[attr-defined]
        if entry is None:
            return
        if action.final:
            entry.finish(action.response)
        elif entry.on_provisional is not None:
            try:
                entry.on_provisional(action.response)
            except Exception:
                log.exception("transaction %s: on_provisional callback failed", transaction.label)

    def _schedule(self, transaction: Machine) -> None:
        if transaction.terminated:
            self._forget(transaction)
            return
        if isinstance(transaction, ServerTransaction) and not transaction.is_invite:
            return  # the sweep runs their timers (or they have left for the completed table)
        deadline = transaction.next_deadline()
        if deadline is None:
            self._unschedule(transaction)
            return
        current = self._scheduled.get(transaction)
        if current is not None:
            if current[0] == deadline:
                return
            del self._by_seq[current[1]]
        seq = next(self._seq)
        self._scheduled[transaction] = (deadline, seq)
        self._by_seq[seq] = transaction
        heapq.heappush(self._heap, (deadline, seq))
        # A wakeup armed no later than this deadline serves it too: it is not re-armed (cancelling and
        # re-arming a loop timer per NOTIFY was a twentieth of a fan-out); stale entries left at the
        # top by answered transactions are dropped when it fires.
        if self._wakeup is None or self._wakeup_when is None or deadline < self._wakeup_when:
            self._arm_wakeup()

    def _unschedule(self, transaction: Machine) -> None:
        entry = self._scheduled.pop(transaction, None)
        if entry is not None:
            del self._by_seq[entry[1]]

    def _forget(self, transaction: Machine, *, cancelled: bool = False) -> None:
        self._unschedule(transaction)
        key = getattr(transaction, "key", None)
        if isinstance(transaction, ServerTransaction):
            if self._server.get(key) is transaction:  # type: ignore[arg-type]
                del self._server[key]  # type: ignore[arg-type]
        else:
            entry = self._client.get(key)  # type: ignore[arg-type]
            if entry is not None and entry.transaction is transaction:
                del self._client[key]  # type: ignore[arg-type]
                if cancelled:   # the caller stopped waiting: nobody to answer, only the send to stop
                    entry.on_final = None
                # ended without a final: never leave the caller waiting
                entry.finish(None if entry.on_final is None
                             else build_reply(transaction.request, 503, "Service Unavailable"))

    def _arm_wakeup(self) -> None:
        if self._closed:
            return
        while self._heap and self._heap[0][1] not in self._by_seq:
            heapq.heappop(self._heap)  # drop stale entries at the top
        if not self._heap:
            if self._wakeup is not None:
                self._wakeup.cancel()
                self._wakeup = None
            # No timer left, so no live client transaction: the tables are made anew, since an
            # emptied dict keeps its slots (a fan-out to 20,000 watchers grew them to 2 MB).
            if not self._client:
                self._client = {}
            if not self._scheduled:
                self._scheduled, self._by_seq = {}, {}
            return
        when = self._heap[0][0]
        if self._wakeup is not None:
            if self._wakeup_when == when:
                return
            self._wakeup.cancel()
        self._wakeup = self._get_loop().call_at(when, self._on_wakeup)
        self._wakeup_when = when

    def _on_wakeup(self) -> None:
        self._wakeup = None
        try:
            self._fire_due_timers()
        finally:
            # Whatever one transaction did, the timers of all the others keep running: a failure that
            # escaped here once left every later retransmission and Timer F unarmed for good.
            self._arm_wakeup()

    def _fire_due_timers(self) -> None:
        now = self._now() + _EARLY
        while self._heap and self._heap[0][0] <= now:
            _, seq = heapq.heappop(self._heap)
            transaction = self._by_seq.pop(seq, None)
            if transaction is None:
                continue   # stale: the transaction ended or was rescheduled
            del self._scheduled[transaction]
            try:
                actions = transaction.handle_timer(now)
                self._run(transaction, actions, now)
            except Exception:  # one transaction's bug must not stop the timers of all the others
                log.exception("transaction %s: timer handling failed", transaction.label)
                self._forget(transaction)

    async def close(self) -> None:
        """Stop the timers; callers still waiting on a client transaction get a local 503."""
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        for entry in list(self._client.values()):
            try:
                self._forget(entry.transaction)
            except Exception:  # closing must finish (a stop that raised here never exited)
                log.exception("transaction %s: could not be ended at close", entry.transaction.label)
        self._server.clear()
        self._completed.clear()
        self._client_done.clear()
        self._heap.clear()
        self._scheduled.clear()
        self._by_seq.clear()


@functools.lru_cache(maxsize=1024)
def _is_ip_literal(host: str) -> bool:
    """An IPv4/IPv6 address (brackets allowed): sending to it needs no name resolution."""
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except ValueError:
        return False
    return True


def _reliable(where: Any) -> bool:
    """Stream transports need no retransmissions (Source/Destination expose .proto)."""
    return str(getattr(where, "proto", "udp")).lower() != "udp"
