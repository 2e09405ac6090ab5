"""WorkerDispatcher: one worker's front on its TransportLayer and the reader of its inbox.

Every message this worker reads goes through `on_received` before it is parsed: peek its keys (the full
parse when the peek abstains), decide its owner (dispatch.owner_slot); ours -> the usual receive path,
another worker's -> a Handoff to that worker's inbox. Read from our inbox: a Handoff goes into the usual
receive path with the Source the reader built (its socket is inherited by every worker, so a UDP reply
leaves from the address the peer sent to); a TcpSend is written on the connection we hold; Announce and
Resync go to the change feed's callbacks.

TCP, TLS and WebSocket (ws, wss) connections belong to the worker that accepted or opened them
(docs/workers.md section 4); conn_ids are global (the layer is made with conn_id_base(slot)), so a send
to another worker's connection is relayed as TcpSend (`relay_tcp`, the layer's tcp_relay hook). The
holder writes it (framing and encryption happen there), or, when the connection has closed meanwhile,
sends to its remote address over another connection: the fallback a closed connection gets in one
process (a new TCP or TLS connection; none for ws/wss, which only the peer opens). A message read on a
TLS connection is handed over with the connection's TLS session in its Source, for the owner's $tls_*.
A request's first send, which a client transaction awaits (in one process: until the connection is
open), is relayed with `report_to` = our slot: when the holder cannot send it (no connection and the
connect fails, no WebSocket connection) it answers SendFailed naming the request's branch and method, and
`on_send_failed` gives the transaction its transport error here (RFC 3261 17.1.4: a local 503), as in one
process. Nothing is kept per relayed send and nothing is sent back for a success.

A full inbox (the owner is not keeping up) is never waited for: a request other than ACK is answered
503 with Retry-After here, a response or ACK is dropped (the peer retransmits); both counted and logged
at most once a second.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from routescript.sip import ParseError, SIPRequest, build_reply, parse_message
from routescript.sip.peek import PeekedKeys, keys_from_message, peek_keys
from routescript.transport import TLS, Destination, Source, TransportError, TransportLayer, stamp_via
from routescript.transport.address import WSS
from routescript.transport.layer import Reply
from routescript.transport._ratelimit import RateLimitedLog
from routescript.workers.dispatch import Affinity, SlotTable, conn_id_slot, owner_slot
from routescript.workers.inbox import Inbox, InboxError, InboxFull, InboxReader
from routescript.workers.messages import (
    NO_REPORT,
    Announce,
    Handoff,
    InboxMessage,
    Resync,
    SendFailed,
    TcpSend,
    encode_handoff,
)

__all__ = ["BUSY_RETRY_AFTER", "DispatchCounters", "WorkerDispatcher"]

log = logging.getLogger("routescript.workers")

BUSY_RETRY_AFTER = 5   # seconds, in the 503 for a request whose owner's inbox is full


@dataclass(slots=True)
class DispatchCounters:
    """What this worker's dispatcher did, for statistics."""

    handed_off: int = 0          # messages read here and sent to their owner
    received: int = 0            # Handoffs read from our inbox
    busy_answered: int = 0       # requests answered 503: the owner's inbox was full (drop_requests)
    dropped: int = 0             # responses and ACKs dropped for the same reason
    tcp_relayed: int = 0         # sends relayed to the worker holding the connection
    tcp_written: int = 0         # relayed sends we wrote on our connection
    tcp_fallback: int = 0        # relayed sends whose connection had closed: sent over another one
    tcp_failed: int = 0          # relayed sends we could not make (reported back when awaited)
    send_failed: int = 0         # SendFailed reports read from our inbox
    unhandled: int = 0           # Announce/Resync with no callback set


class WorkerDispatcher:
    """The dispatcher of worker `slot` among len(inboxes) slots. `attach()` installs it on the layer
    and starts reading its inbox; `on_announce`/`on_resync` receive the change feed's messages."""

    def __init__(self, layer: TransportLayer, slot: int, inboxes: Sequence[Inbox], *,
                 affinity: Affinity = "uri", slot_table: SlotTable | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 <= slot < len(inboxes):
            raise ValueError(f"worker slot {slot} is not one of the {len(inboxes)} inboxes")
        self.layer = layer
        self.slot = slot
        self.inboxes = tuple(inboxes)
        self.slots = len(self.inboxes)
        self.affinity: Affinity = affinity
        self.slot_table = self._checked(slot_table or SlotTable.identity(self.slots))
        self.clock = clock
        self.counters = DispatchCounters()
        self.on_announce: Callable[[Announce], None] | None = None
        self.on_resync: Callable[[Resync], None] | None = None
        # a relayed send of ours failed in the holder: (the report) -> whether a transaction took it
        self.on_send_failed: Callable[[SendFailed], bool] | None = None
        self._sends: set[asyncio.Task[None]] = set()   # awaited fallback sends in flight (the layer's own)
        self._reader = InboxReader(self.inboxes[slot], self.on_inbox)
        self._busy_log = RateLimitedLog(log, interval=1.0)

    def _checked(self, table: SlotTable) -> SlotTable:
        if table.slots != self.slots:
            raise ValueError(f"a slot table of {table.slots} slots for {self.slots} workers")
        return table

    def set_slot_table(self, table: SlotTable) -> None:
        """The supervisor's newer table (a slot adopted, or back)."""
        if table.version < self.slot_table.version:
            log.info("worker %d: slot table version %d ignored (have %d)", self.slot, table.version,
                     self.slot_table.version)
            return
        self.slot_table = self._checked(table)

    def attach(self) -> None:
        """Become the layer's front and TCP relay, and read our inbox (on the running loop)."""
        self.layer.front = self.on_received
        self.layer.tcp_relay = self.relay_tcp
        self._reader.start()

    def detach(self) -> None:
        self._reader.stop()
        for task in list(self._sends):
            task.cancel()
        self.layer.front = self.layer.receive
        self.layer.tcp_relay = None

    # --- read by this worker ----------------------------------------------------------------------

    def on_received(self, data: bytes, source: Source, reply: Reply) -> None:
        """The layer's front: a message for another worker goes to its inbox (or is answered here when
        that inbox is full); ours, and one that does not parse (400 from here), to layer.receive."""
        keys = peek_keys(data)
        if keys is None:
            keys = self._parsed_keys(data)
        owner = None if keys is None else owner_slot(keys, self.slots, self.affinity, self.slot_table)
        if keys is None or owner is None or owner == self.slot:
            # Our inbox first: what other workers sent us before this message was sent (the change it
            # was a reply to, handed-off messages) is handled before it, whichever fd the loop saw first.
            self._reader.read_queued()
            self.layer.receive(data, source, reply)
            return
        if source.proto in (TLS, WSS) and source.tls is None:
            source = dataclasses.replace(source, tls=self.layer.tls_session(source.conn_id))
        try:
            datagram = encode_handoff(source, self.clock(), data)
        except (ValueError, struct.error) as exc:   # a Source we cannot encode: our bug, not the peer's
            log.error("cannot hand a message from %s to worker %d (%s); handling it here", source, owner, exc)
            self.layer.receive(data, source, reply)
            return
        try:
            self.inboxes[owner].send_datagram(datagram)
        except InboxError as exc:
            self._owner_unreachable(data, source, keys, owner, exc)
            return
        self.counters.handed_off += 1

    def _parsed_keys(self, data: bytes) -> PeekedKeys | None:
        try:
            return keys_from_message(parse_message(data, max_size=self.layer.max_message_size))
        except ParseError:
            return None

    def _owner_unreachable(self, data: bytes, source: Source, keys: PeekedKeys, owner: int,
                           exc: InboxError) -> None:
        """Its owner's inbox is full (or gone): a request other than ACK gets 503 + Retry-After from
        here, anything else is dropped; the peer retries either way."""
        level = logging.WARNING if isinstance(exc, InboxFull) else logging.ERROR
        if keys.is_response or keys.method == "ACK":
            self.counters.dropped += 1
            self._busy_log.log(("drop", owner), self.clock(), "%s; dropped a %s from %s (Call-ID %s)", exc,
                               keys.method or "response", source, keys.call_id or _call_id(data),
                               level=level)
            return
        self.counters.busy_answered += 1
        self._busy_log.log(("503", owner), self.clock(), "%s; answered 503 to a %s from %s (Call-ID %s)", exc,
                           keys.method, source, keys.call_id, level=level)
        try:
            request = parse_message(data, max_size=self.layer.max_message_size)
            if not isinstance(request, SIPRequest):
                return
            stamped = stamp_via(request.via, source.remote_host, source.remote_port)
            if stamped is not None:
                request.set_top_via(stamped)
            busy = build_reply(request, 503, headers=[("Retry-After", str(BUSY_RETRY_AFTER))])
            self.layer.send_reply(busy, source)
        except (ParseError, OSError) as error:   # OSError: TransportError
            log.info("cannot answer 503 to %s: %s", source, error)

    # --- read from our inbox ------------------------------------------------------------------------

    def on_inbox(self, message: InboxMessage) -> None:
        if isinstance(message, Handoff):
            self.counters.received += 1
            source = message.source
            self.layer.receive(message.data, source, partial(self._reply, source))
        elif isinstance(message, TcpSend):
            self._write_relayed(message)
        elif isinstance(message, SendFailed):
            self._relayed_send_failed(message)
        elif isinstance(message, Announce):
            self._deliver(self.on_announce, message)
        else:
            self._deliver(self.on_resync, message)

    def _deliver(self, callback: Callable[[Announce], None] | Callable[[Resync], None] | None,
                 message: Announce | Resync) -> None:
        if callback is None:
            self.counters.unhandled += 1
            self._busy_log.log(("unhandled", type(message)), self.clock(),
                               "worker %d: no receiver for %s", self.slot, message)
            return
        callback(message)  # type: ignore[arg-type]

    def _reply(self, source: Source, out: bytes) -> None:
        """How the receive path answers bytes it cannot parse: back where they came from (bound to
        each Handoff with partial, the Destination made only when a reply is sent: nearly never)."""
        self.layer.send(out, Destination(source.proto, source.remote_host, source.remote_port,
                                         source.conn_id, source.socket))

    def _write_relayed(self, message: TcpSend) -> None:
        conn = self.layer.connection(message.conn_id)
        if conn is not None:
            try:
                conn.write(message.data)
                self.counters.tcp_written += 1
                return
            except TransportError as exc:
                log.debug("relayed send on tcp#%d: %s; falling back", message.conn_id, exc)
        if not message.remote_host:
            self._send_failed(message, f"tcp connection #{message.conn_id} is closed and no address to fall "
                                       "back to")
            return
        self.counters.tcp_fallback += 1
        dest = Destination(message.proto, message.remote_host, message.remote_port)
        if message.report_to == NO_REPORT:
            try:
                self.layer.send(message.data, dest)   # a failed connect is logged there, as in one process
            except TransportError as exc:
                self._send_failed(message, str(exc))
            return
        # Awaited by the asker's client transaction: the connect's outcome goes back to it.
        task = asyncio.get_running_loop().create_task(self._deliver_awaited(message, dest))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _deliver_awaited(self, message: TcpSend, dest: Destination) -> None:
        try:
            await self.layer.deliver(message.data, dest)
        except TransportError as exc:
            self._send_failed(message, str(exc))

    def _send_failed(self, message: TcpSend, reason: str) -> None:
        """A relayed send we could not make: logged, and reported to the worker awaiting it."""
        self.counters.tcp_failed += 1
        log.info("relayed send for %s#%d to %s:%d failed: %s", message.proto, message.conn_id,
                 message.remote_host, message.remote_port, reason)
        if message.report_to == NO_REPORT or message.report_to >= self.slots:
            return
        keys = peek_keys(message.data)
        if keys is None:
            keys = self._parsed_keys(message.data)
        if keys is None or keys.method is None or not keys.top_branch:
            log.info("relayed send failed: no request branch to report it by (%d bytes)", len(message.data))
            return
        report = SendFailed(keys.top_branch, keys.method, message.proto, message.remote_host,
                            message.remote_port, reason)
        target = self.slot_table.owner_of[message.report_to]
        try:
            if target == self.slot:   # the asker's slot is adopted by us: its transactions are ours
                self._relayed_send_failed(report)
            else:
                self.inboxes[target].send(report)
        except (InboxError, ValueError) as exc:   # the asker times out instead (408), as before
            log.warning("cannot report the failed send of %s %s to worker %d: %s", keys.method,
                        keys.top_branch, target, exc)

    def _relayed_send_failed(self, report: SendFailed) -> None:
        self.counters.send_failed += 1
        taken = self.on_send_failed is not None and self.on_send_failed(report)
        if not taken:   # answered or ended meanwhile
            log.debug("relayed send of %s %s failed (%s); no transaction waits for it", report.method,
                      report.branch, report.reason)

    # --- sending to another worker's connection -------------------------------------------------------

    def relay_tcp(self, data: bytes, dest: Destination, awaited: bool = False) -> bool:
        """The layer's tcp_relay: True when dest.conn_id is another worker's connection and the bytes
        are on their way to it; TransportError when its inbox refuses them (as a closed connection).
        `awaited`: a client transaction waits for this send, so the holder reports a failure back."""
        conn_id = dest.conn_id
        if conn_id is None:
            return False
        holder = conn_id_slot(conn_id)
        if holder == self.slot or holder >= self.slots:
            return False
        # A holder adopted by another worker took its connections down with it: the adopter falls back.
        target = self.slot_table.owner_of[holder]
        if target == self.slot:
            return False
        try:
            self.inboxes[target].send(TcpSend(conn_id, data, dest.host, dest.port, dest.proto,
                                              self.slot if awaited else NO_REPORT))
        except InboxError as exc:
            raise TransportError(f"tcp connection #{conn_id} of worker {holder}: {exc}") from None
        self.counters.tcp_relayed += 1
        return True

    # --- the change feed (docs/workers.md section 3, feed B) ------------------------------------------

    def broadcast(self, message: Announce | Resync) -> list[int]:
        """`message` to every other worker's inbox; the slots whose inbox refused it (full, or gone):
        those owe a Resync once they accept again (the caller's repair, docs/workers.md 3)."""
        refused = []
        for slot, inbox in enumerate(self.inboxes):
            if slot == self.slot:
                continue
            try:
                inbox.send(message)
            except InboxError as exc:
                refused.append(slot)
                self._busy_log.log(("broadcast", slot), self.clock(), "%s: %s not delivered", exc,
                                   type(message).__name__)
        return refused


def _call_id(data: bytes) -> str:
    """The Call-ID of a message for a log line (the peek does not read a response's)."""
    try:
        return parse_message(data).call_id
    except ParseError:
        return "unreadable"
