"""TransactionCore: every transaction of the server, sans-IO (the aioquic QuicConnection shape).

No clock, no loop, no transport: every entry point takes `now` (seconds, any monotonic origin) and leaves
what must happen in three outboxes the caller empties after each call:
  responses to send      (response, source, destination or None, server transaction)  take_responses()
  requests/data to send  (bytes, destination, client transaction or None)            take_data()
  responses to hand up   (the creator's callback, response, client transaction)         take_deliveries()
`get_timer()` is when `handle_timer(now)` is next due; `timer_moved` says it may have become earlier
since the last `get_timer()` (so the caller re-arms its one timer only then). A send that fails comes
back through `transport_error(transaction, now)`. TransactionLayer (layer.py) is the asyncio adapter.

Timers: client (and INVITE server) transactions sit on a heap of (deadline, seq); `_scheduled` maps a
live transaction to its entry and `_by_seq` the seq back. An entry never holds the transaction, so one
that ends before its timer (a NOTIFY answered within Timer E) is freed at once; stale entries are skipped.

Non-INVITE server transactions - every PUBLISH and SUBSCRIBE - cost no heap entry: while live (Trying,
Proceeding) their only timer is the TU timeout, the same for all, so a periodic sweep walks them oldest
first (dict insertion order) and stops at the first one not due. Once they have sent their final response
over UDP they leave `_server` for the CompletedTable (key -> response bytes and destination, expiring in
order after Timer J): no machine is kept for the 64*T1 they wait. The sweep also expires that table and
the Timer K table of answered client transactions; its deadline is one more candidate of `get_timer()`.

Client transactions are made by whoever sends (`send_request`) with the callbacks it gives: provisional
responses go to `on_provisional`, the final one (received, or a local 408 on Timer F / 503 on a transport
error or at close) to `on_final`, exactly once. Only non-INVITE client transactions exist today; an
INVITE client machine (Timers A/B/D, the ACK for a non-2xx, Timer C) plugs in at `send_request` and
`receive_response` with the same delivery to its creator.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from routescript.sip import Destination, ParseError, SIPRequest, SIPResponse, Source, build_reply
from routescript.transaction.client import NonInviteClientTransaction
from routescript.transaction.completed import CompletedTable, CompletedTransaction
from routescript.transaction.counters import TransactionCounters, TransactionCounts
from routescript.transaction.errors import TransactionError, TransactionLimitError
from routescript.transaction.invite_client import InviteClientTransaction
from routescript.transaction.keys import (
    ClientKey,
    ServerKey,
    client_key_of_request,
    client_key_of_response,
    server_key,
)
from routescript.transaction.machine import Action, Transmit
from routescript.transaction.server import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
)
from routescript.transaction.states import State
from routescript.transaction.timers import TimerConfig

# Stale timer entries tolerated beyond the live ones before handle_timer compacts the heap (_compact).
STALE_SLACK = 4096

log = logging.getLogger("routescript.transaction")

OnResponse = Callable[[SIPResponse], None]
"""A creator's callback for the responses of its client transaction."""

RouteReply = Callable[[SIPResponse, Source], Destination]
"""Where a response to a request from this source goes (RFC 3261 18.2.2, RFC 3581): a pure function."""

ClientTransaction = NonInviteClientTransaction | InviteClientTransaction
Transaction = ServerTransaction | ClientTransaction

ResponseOut = tuple[SIPResponse, Source, Destination | None, ServerTransaction]
DataOut = tuple[bytes, Destination, ClientTransaction | None]
DeliveryOut = tuple[OnResponse, SIPResponse, ClientTransaction | None]


@dataclass(slots=True, eq=False)
class _ClientEntry:
    """A live client transaction and its creator's callbacks; `on_final` is None once taken."""

    transaction: ClientTransaction
    on_final: OnResponse | None
    on_provisional: OnResponse | None
    via_line: str | None = None   # the request's top Via line as sent (_top_via_line), None when not known


class TransactionCore:
    """RFC 3261 section 17 transactions of one server, without I/O.

    max_transactions bounds the live transactions (server ones still waiting for their final reply,
    INVITE ones until they end, client ones); over it `create` raises TransactionLimitError and
    `send_request` answers a local 503. Completed non-INVITE server transactions over UDP are not live:
    they sit in a retransmission cache bounded by max_completed (the oldest evicted first, logged).
    `route_reply` says where a response goes (only asked for the final UDP reply kept for Timer J).
    """

    def __init__(self, timers: TimerConfig, route_reply: RouteReply, *, max_transactions: int = 10000,
                 max_completed: int = 50000, counters: TransactionCounters | None = None) -> None:
        self.timers = timers
        # where the final responses handed to the creators of client transactions are counted (counters.py)
        self.counters: TransactionCounters = counters if counters is not None else TransactionCounts()
        self.max_transactions = max_transactions
        self._route_reply = route_reply
        self._server: dict[ServerKey, ServerTransaction] = {}
        self._non_invite_tu_timeout = timers.tu_timeout(False)   # asked once, not per transaction
        self._looked_up: tuple[SIPRequest | None, ServerKey] = (None, ())   # the last lookup() (create)
        self._completed = CompletedTable(timers.timer_j(False), max_completed)
        # Client transactions that got their final response over UDP wait Timer K only to absorb
        # retransmissions of it: their key is all that is kept (no machine, request or response).
        self._client_done = CompletedTable(timers.timer_k(False), max_completed)
        self._client: dict[ClientKey, _ClientEntry] = {}
        # Live transactions (what max_transactions bounds): len(_server) + len(_client), counted as
        # they come and go instead of summed at every read (t_newtran reads it twice per request).
        self.pending = 0
        self._evict_logged = -1.0e9
        self._heap: list[tuple[float, int]] = []
        self._scheduled: dict[Transaction, tuple[float, int]] = {}
        self._by_seq: dict[int, Transaction] = {}
        self._seq = itertools.count()
        # One sweep for the TU timeouts of live non-INVITE server transactions and the tables' expiry.
        self._sweep_interval = min(1.0, 2 * timers.t1)
        self._sweep_at: float | None = None
        self._timer_read: float | None = None   # what get_timer() last answered
        self.timer_moved = False
        self.closed = False
        self.responses_out: list[ResponseOut] = []
        self.data_out: list[DataOut] = []
        self.deliveries: list[DeliveryOut] = []

    # --- bookkeeping ----------------------------------------------------------------------------

    @property
    def completed(self) -> int:
        """Completed non-INVITE server transactions kept to answer retransmissions (Timer J)."""
        return len(self._completed)

    @property
    def answered(self) -> int:
        """Answered client transactions whose key waits Timer K to absorb retransmitted finals."""
        return len(self._client_done)

    @property
    def max_completed(self) -> int:
        return self._completed.max_entries

    @max_completed.setter
    def max_completed(self, value: int) -> None:
        if value < 1:
            raise ValueError("max_completed must be at least 1")
        self._completed.max_entries = value

    def client_transactions(self) -> list[ClientTransaction]:
        """The live client transactions, oldest first."""
        return [entry.transaction for entry in self._client.values()]

    def server_transactions(self) -> list[ServerTransaction]:
        """The live server transactions, oldest first."""
        return list(self._server.values())

    # --- what to do -----------------------------------------------------------------------------

    def take_responses(self) -> list[ResponseOut]:
        out, self.responses_out = self.responses_out, []
        return out

    def take_data(self) -> list[DataOut]:
        out, self.data_out = self.data_out, []
        return out

    def take_deliveries(self) -> list[DeliveryOut]:
        out, self.deliveries = self.deliveries, []
        return out

    # --- server side ----------------------------------------------------------------------------

    def lookup(self, request: SIPRequest, now: float) -> ServerTransaction | CompletedTransaction | None:
        """The server transaction `request` belongs to, or None when it starts a new one.

        A retransmission is handled here (the last response goes to the outbox, or it is absorbed) and
        an ACK for a non-2xx final response is absorbed. An ACK for a 2xx (its own branch) matches
        nothing and returns None. Raises routescript.sip.ParseError when the top Via is broken.
        """
        key = server_key(request)
        self._looked_up = (request, key)
        transaction = self._server.get(key)
        if transaction is None:
            if request.method == "ACK" or key not in self._completed.entries:
                return None
            done = self._completed.get(key, now)
            if done is not None and done.dest is not None:
                # RFC 3261 17.2.2: Completed + request -> resend the final response
                self.data_out.append((done.data, done.dest, None))
            return done
        if request.method == "ACK":
            if not transaction.is_invite:
                return None
            actions = transaction.receive_ack(now)
        else:
            actions = transaction.receive_request(now)
        self._run(transaction, actions, now)
        return transaction

    def invite_of(self, cancel: SIPRequest) -> ServerTransaction | None:
        """The live INVITE server transaction a CANCEL is for (RFC 3261 9.2: same key but the method),
        None when there is none. Raises routescript.sip.ParseError when the top Via is broken."""
        key = server_key(cancel)
        transaction = self._server.get((*key[:-1], "INVITE"))
        return transaction if transaction is not None and transaction.is_invite else None

    def create(self, request: SIPRequest, source: Source, now: float) -> ServerTransaction:
        """Make the server transaction for `request` (OpenSIPS t_newtran). An existing one for the same
        key is returned as it is. Raises TransactionLimitError over the bound, TransactionError for an
        ACK (an ACK never creates a transaction)."""
        if request.method == "ACK":
            raise TransactionError("an ACK does not create a transaction")
        # The core looked this request up just before (t_newtran after the retransmission check): the
        # key of the request as received, kept for this one step.
        looked_up, key = self._looked_up
        if looked_up is not request:
            key = server_key(request)
        self._looked_up = (None, ())
        existing = self._server.get(key)
        if existing is not None:
            return existing
        if self.pending >= self.max_transactions:
            log.warning("transaction limit %d reached: refusing %s %s", self.max_transactions,
                        request.method, request.call_id)
            raise TransactionLimitError(self.max_transactions)
        if request.method == "INVITE":
            transaction: ServerTransaction = InviteServerTransaction(
                request, source, reliable=source.reliable, timers=self.timers, now=now, key=key)
            self._schedule(transaction)
        else:
            # every PUBLISH and SUBSCRIBE: its one timer (the TU timeout) armed with it, run by the sweep
            transaction = NonInviteServerTransaction(request, source, reliable=source.reliable,
                                                     timers=self.timers, now=now, key=key,
                                                     tu_timeout=self._non_invite_tu_timeout)
            if self._sweep_at is None:
                self._arm_sweep(now)
        self._server[key] = transaction
        self.pending += 1
        return transaction

    def reply(self, transaction: ServerTransaction, response: SIPResponse, now: float) -> None:
        """`response` within `transaction` (OpenSIPS t_reply): it goes to the outbox and the transaction
        keeps it for retransmissions. Raises TransactionError for a reply its state does not allow (a
        second final reply)."""
        if response.status < 200:
            # a 1xx in Proceeding (every provisional an INVITE proxy forwards, its 100 Trying): kept by
            # the machine, sent; no table walk, no action list, no rescheduling (no timer moves)
            source = transaction.source
            if source is not None and transaction.keep_provisional(response, now):
                self.responses_out.append((response, source, None, transaction))
                return
        elif (not transaction.reliable and not transaction.is_invite
                and self._server.get(transaction.key or ()) is transaction):
            self._complete_udp(transaction, response, now)
            return
        # Provisional replies, TCP (Timer J is 0: the machine ends it at once), INVITE, and a reply the
        # state refuses (a transaction that has ended) go through the machine.
        self._run(transaction, transaction.send_response(response, now), now)

    def _complete_udp(self, transaction: ServerTransaction, response: SIPResponse,
                      now: float) -> None:
        """The final response of a non-INVITE server transaction over UDP - every PUBLISH, SUBSCRIBE and
        OPTIONS - in one step: the table's FINAL row, then only the response's bytes and destination are
        kept for retransmissions until Timer J; the machine is dropped (no action list, no timers)."""
        source = transaction.source
        assert source is not None and transaction.key is not None
        transaction.complete_into_table(response)   # raises the TransactionError of the state
        dest = source.reply_to or self._route_reply(response, source)   # the transport's, when it has it
        key = transaction.key
        del self._server[key]
        self.pending -= 1
        evicted = self._completed.add(key, response.to_bytes(), dest, now)
        if evicted and now - self._evict_logged >= 60.0:
            self._evict_logged = now
            log.warning("completed-transaction cache full (%d entries): the oldest are dropped before "
                        "Timer J (%d so far); a late retransmission will run the script again",
                        self._completed.max_entries, self._completed.evicted)
        self.responses_out.append((response, source, dest, transaction))

    # --- client side ----------------------------------------------------------------------------

    def send_request(self, request: SIPRequest, dest: Destination, now: float, on_final: OnResponse, *,
                     on_provisional: OnResponse | None = None, branch: str | None = None,
                     fr_timeout: float | None = None) -> ClientTransaction | None:
        """Start a client transaction for `request` to `dest` (an INVITE one for an INVITE: tm's
        branches; its later 2xx - retransmissions, other forks' - go to `on_provisional` too). The
        caller transmits `transaction.data` once now (and reports a failure through
        `transport_error`); the core asks for every retransmission. `on_final`
        gets the final response exactly once (a local 408 on Timer F, 503
        on a transport error or at close); `on_provisional` each 1xx. Returns None when refused (closed,
        or over the bound: a local 503 is in the deliveries). Raises TransactionError when `branch` (the
        top Via's, when the caller wrote it) is already in use. `fr_timeout`: Timer F (B for INVITE) of
        this transaction when not the configured one."""
        if self.closed or self.pending >= self.max_transactions:
            if not self.closed:
                log.warning("transaction limit %d reached: not sending %s %s", self.max_transactions,
                            request.method, request.call_id)
            self._hand_final(on_final, build_reply(request, 503, "Service Unavailable"), None)
            return None
        key = (branch, request.method) if branch else client_key_of_request(request)
        if key in self._client:
            raise TransactionError(f"branch {key[0]!r} already used by a pending {key[1]}")
        machine = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        transaction = machine(request, dest, reliable=dest.reliable, timers=self.timers, now=now, key=key,
                              fr_timeout=fr_timeout)
        # the top Via line: a parsed request's own (a relayed one), else read off the bytes (an assembled
        # NOTIFY: reading its header would parse it back)
        via_line = request.header("via") if type(request) is SIPRequest else _top_via_line(transaction.data)
        if via_line is not None and '"' in via_line:
            via_line = None   # a quoted parameter (none of ours has one): a comma in it would mislead
        self._client[key] = _ClientEntry(transaction, on_final, on_provisional, via_line)
        self.pending += 1
        self._schedule(transaction)
        return transaction

    def receive_response(self, response: SIPResponse, now: float) -> bool:
        """A response arrived: hand it to its client transaction. True when one matched (including a
        retransmitted final response absorbed within Timer K); False when it is stray."""
        found = self._entry_of_our_via(response)
        entry: _ClientEntry | None
        if found is not None:
            key, entry = found
        else:
            try:
                key = client_key_of_response(response)
            except ParseError:  # a broken Via/CSeq in a response: nothing can match it
                return False
            entry = self._client.get(key)
        if entry is None:  # a retransmitted final response within Timer K is absorbed
            return bool(self._client_done) and self._client_done.contains(key, now)
        transaction = entry.transaction
        actions = transaction.receive_response(response, now)
        if transaction.state is State.COMPLETED and not transaction.reliable and not transaction.is_invite:
            # Answered over UDP: Timer K is kept by _client_done, so the machine's Timer K never goes on
            # the heap (a stale heap entry per NOTIFY, popped later, was a tenth of a fan-out).
            self._run_client(transaction, actions, now, schedule=False)
            if self._client.get(key) is entry:
                self._retire_client(transaction, now)
            else:
                self._schedule(transaction)
            return True
        self._run_client(transaction, actions, now)
        if self._client.get(key) is entry:
            if transaction.state is State.COMPLETED and not transaction.is_invite:
                self._retire_client(transaction, now)   # an INVITE one stays: it ACKs retransmissions
            elif transaction.state is State.ACCEPTED:
                # An INVITE answered 2xx is done with at once (RFC 3261's proxy, and OpenSIPS): its 2xx
                # retransmissions and other forks' 2xx then match nothing and are forwarded statelessly by
                # their Via (core/relay.py forward_reply) - RFC 6026's Timer M would keep every answered
                # call's branch for 32 s (at 1,500 calls/s, 48,000 of them)
                self._forget(transaction)
        return True

    def _entry_of_our_via(self, response: SIPResponse) -> tuple[ClientKey, _ClientEntry] | None:
        """The live client transaction whose request's top Via line is, character for character, the
        response's top Via value (a UAS copies it: RFC 3261 8.2.6.2): its branch read off the text, no
        Via parsed. None otherwise (a Via the UAS rewrote, a stray, a request whose line was not kept):
        then the key is parsed as usual - the same answer, since the line equals the one the
        transaction's key was made from."""
        line = response.header("via")
        if line is None:
            return None
        if "," in line:
            # a UAS that folds the Vias into one line (SIPp's [last_Via:]): ours is the text before the
            # first comma - our Via has no comma, quote or '<' that would make the split elsewhere
            line = line.partition(",")[0]
        start = line.find(";branch=")
        if start < 0:
            return None
        start += 8
        end = line.find(";", start)
        try:
            method = response.cseq.method
        except ParseError:
            return None
        key = (line[start:] if end < 0 else line[start:end], method)
        entry = self._client.get(key)
        if entry is None or entry.via_line != line:
            return None
        return key, entry

    def client_transaction(self, branch: str, method: str) -> ClientTransaction | None:
        """The live client transaction of the request with top Via `branch` and `method` (RFC 3261 17.1.3)."""
        entry = self._client.get((branch, method))
        return None if entry is None else entry.transaction

    def cancel(self, transaction: ClientTransaction) -> None:
        """The creator stopped waiting: forget the transaction; nothing is delivered any more."""
        entry = self._client.get(transaction.key or ("", ""))
        if entry is not None and entry.transaction is transaction:
            entry.on_final = None
        self._forget(transaction)

    def _retire_client(self, transaction: ClientTransaction, now: float) -> None:
        """The final response is delivered (UDP: Timer K runs): keep the key only, to absorb its
        retransmissions, and drop the machine with its request and response."""
        key = transaction.key
        assert key is not None
        del self._client[key]
        self.pending -= 1
        self._unschedule(transaction)
        self._client_done.add(key, b"", None, now)
        if self._sweep_at is None:
            self._arm_sweep(now)

    # --- both sides -----------------------------------------------------------------------------

    def transport_error(self, transaction: Transaction, now: float) -> None:
        """Sending for `transaction` failed (RFC 3261 17.1.4, 17.2.4): the table's TRANSPORT_ERROR row
        (a client one delivers a local 503). A final UDP reply already moved to the completed table is
        dropped from it: a retransmission will run the script again."""
        if isinstance(transaction, ServerTransaction) and transaction.key is not None \
                and self._server.get(transaction.key) is not transaction:
            self._completed.discard(transaction.key)
        self._run(transaction, transaction.transport_error(now), now)

    # --- timers -----------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When `handle_timer` is next due (None: no timer runs)."""
        heap = self._heap
        while heap and heap[0][1] not in self._by_seq:
            heapq.heappop(heap)  # drop stale entries at the top
        if heap:
            when: float | None = heap[0][0]
            if self._sweep_at is not None and self._sweep_at < heap[0][0]:
                when = self._sweep_at
        else:
            when = self._sweep_at
            # No heap timer left, so no live client transaction: the tables are made anew, since an
            # emptied dict keeps its slots (a fan-out to 20,000 watchers grew them to 2 MB).
            if not self._client:
                self._client = {}
            if not self._scheduled:
                self._scheduled, self._by_seq = {}, {}
        self._timer_read = when
        self.timer_moved = False
        return when

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at `now`. One transaction's failure is logged and ends only it."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq = heapq.heappop(heap)
            transaction = self._by_seq.pop(seq, None)
            if transaction is None:
                continue   # stale: the transaction ended or was rescheduled
            del self._scheduled[transaction]
            try:
                self._run(transaction, transaction.handle_timer(now), now)
            except Exception:  # one transaction's bug must not stop the timers of all the others
                log.exception("transaction %s: timer handling failed", transaction.label)
                self._forget(transaction)
        if len(heap) > 2 * len(self._by_seq) + STALE_SLACK:
            self._compact()   # checked here only: timers fire all the time under the load that piles them up
        if self._sweep_at is not None and self._sweep_at <= now:
            self._sweep(now)
        self.timer_moved = True

    def _arm_sweep(self, now: float) -> None:
        self._sweep_at = at = now + self._sweep_interval
        if self._timer_read is None or at < self._timer_read:
            self.timer_moved = True

    def _sweep(self, now: float) -> None:
        """TU timeouts of live non-INVITE server transactions (created in order with one timeout, so
        the oldest come first) and the expiry of the completed tables."""
        self._sweep_at = None
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
            self._arm_sweep(now)

    # --- running actions ---------------------------------------------------------------------------

    def _run(self, transaction: Transaction, actions: list[Action], now: float) -> None:
        if isinstance(transaction, ServerTransaction):
            source = transaction.source   # None only for a machine made without one (tests): nowhere to send
            for action in actions:
                if isinstance(action, Transmit) and isinstance(action.message, SIPResponse) and source:
                    self.responses_out.append((action.message, source, None, transaction))
            self._schedule(transaction)
        else:
            self._run_client(transaction, actions, now)

    def _run_client(self, transaction: ClientTransaction, actions: list[Action], now: float, *,
                    schedule: bool = True) -> None:
        for action in actions:
            if isinstance(action, Transmit):
                assert transaction.destination is not None
                # the request itself, or the ACK an INVITE one sends for a 300-699 response
                message = action.message
                data = transaction.data if message is transaction.request else message.to_bytes()
                self.data_out.append((data, transaction.destination, transaction))
                continue
            entry = self._client.get(transaction.key or ("", ""))
            if entry is None:
                continue
            if action.final:
                on_final, entry.on_final = entry.on_final, None
                if on_final is not None:
                    self._hand_final(on_final, action.response, transaction)
            elif entry.on_provisional is not None:
                self.deliveries.append((entry.on_provisional, action.response, transaction))
        if schedule:
            self._schedule(transaction)

    def _schedule(self, transaction: Transaction) -> None:
        if transaction.state is State.TERMINATED:
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
        # A timer armed no later than this deadline serves it too: the caller is not asked to re-arm
        # (cancelling and re-arming a loop timer per NOTIFY was a twentieth of a fan-out); stale entries
        # left at the top by answered transactions are dropped when it fires.
        if self._timer_read is None or deadline < self._timer_read:
            self.timer_moved = True

    def _unschedule(self, transaction: Transaction) -> None:
        entry = self._scheduled.pop(transaction, None)
        if entry is not None:
            del self._by_seq[entry[1]]

    def _compact(self) -> None:
        """Drop the heap's stale entries (handle_timer calls it once they outnumber the live ones by
        STALE_SLACK). They are otherwise dropped only when they reach the top: every relayed INVITE
        leaves its 180 s TU timeout behind a live one's earlier deadline, so a proxy at 700 calls/s kept
        ~126,000 dead entries (13 MB, and log n on every push). In place: handle_timer holds the list."""
        heap, by_seq = self._heap, self._by_seq
        heap[:] = [entry for entry in heap if entry[1] in by_seq]
        heapq.heapify(heap)

    def _forget(self, transaction: Transaction) -> None:
        """Drop a transaction that ended; a client one that ended without delivering its final response
        delivers a local 503, so its creator is never left waiting."""
        self._unschedule(transaction)
        if isinstance(transaction, ServerTransaction):
            key = transaction.key
            if key is not None and self._server.get(key) is transaction:
                del self._server[key]
                self.pending -= 1
            return
        client_key = transaction.key
        if client_key is None:
            return
        entry = self._client.get(client_key)
        if entry is not None and entry.transaction is transaction:
            del self._client[client_key]
            self.pending -= 1
            on_final, entry.on_final = entry.on_final, None
            if on_final is not None:
                self._hand_final(on_final, build_reply(transaction.request, 503, "Service Unavailable"),
                                 transaction)

    def _hand_final(self, on_final: OnResponse, response: SIPResponse,
                    transaction: ClientTransaction | None) -> None:
        """A client transaction's final response for its creator (the one place: exactly once each),
        counted by its class."""
        self.deliveries.append((on_final, response, transaction))
        self.counters.count_tm_final(response.status)

    def close(self) -> None:
        """Stop: every waiting creator gets a local 503 (in the deliveries); nothing is kept."""
        self.closed = True
        for entry in list(self._client.values()):
            try:
                self._forget(entry.transaction)
            except Exception:  # closing must finish (a stop that raised here never exited)
                log.exception("transaction %s: could not be ended at close", entry.transaction.label)
        self._server.clear()
        self.pending = len(self._client)   # 0 unless a client transaction could not be ended
        self._completed.clear()
        self._client_done.clear()
        self._heap.clear()
        self._scheduled.clear()
        self._by_seq.clear()
        self._sweep_at = None
        self.responses_out.clear()
        self.data_out.clear()


def _top_via_line(data: bytes) -> str | None:
    """The value of the first header line of a request on the wire when it is "Via: ..." (an assembled
    request's always is: the Via its sender put on top); None otherwise."""
    start = data.find(b"\r\n") + 2
    if start < 2 or not data.startswith(b"Via: ", start):
        return None
    end = data.find(b"\r\n", start)
    try:
        return data[start + 5:end].decode() if end > 0 else None
    except UnicodeDecodeError:
        return None

