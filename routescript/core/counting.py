"""The transaction and transport layers with OpenSIPS's tm and core counters kept as they work.

The Server makes these instead of the plain layers, so the counting sits where the events happen
without the transaction or transport layer knowing about statistics (they import nothing of the core).
Each override only adds an `+= 1` on a `CoreCounters` attribute around the parent's behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from routescript.sip import Destination, SIPRequest, SIPResponse, Source
from routescript.transaction import ClientTransaction, ServerTransaction, TransactionLayer
from routescript.transport import TransportLayer

from .stats import CoreCounters


class CountingTransactionLayer(TransactionLayer):
    """TransactionLayer counting tm's UAS_transactions, UAC_transactions, local_replies (made here),
    relayed_replies (forwarded from a branch), received_replies and Nxx_transactions.

    Choice: Nxx_transactions counts transactions of both sides by their final reply (our replies to
    requests, and the final responses - received or made locally, 408/503 - to our NOTIFYs), as
    OpenSIPS counts every transaction completed by tm.
    """

    # Any: the parent's own arguments (transport, timers), forwarded unchanged.
    def __init__(self, counters: CoreCounters, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counters = counters

    def create(self, request: SIPRequest, source: Source) -> ServerTransaction:
        before = self.pending
        transaction = super().create(request, source)
        if self.pending > before:  # a new one, not the existing transaction of this request
            self.counters.UAS_transactions += 1
        return transaction

    def reply(self, transaction: ServerTransaction, response: SIPResponse, *, relayed: bool = False) -> None:
        super().reply(transaction, response, relayed=relayed)
        counters = self.counters
        if relayed:
            counters.relayed_replies += 1
        else:
            counters.local_replies += 1
        status = response.status
        if status >= 200:
            counters.count_tm_final(status)

    def send_request(self, req: SIPRequest, dest: Destination, on_final: Callable[[SIPResponse], None], *,
                     on_provisional: Callable[[SIPResponse], None] | None = None,
                     branch: str | None = None, fr_timeout: float | None = None) -> ClientTransaction | None:
        # request() goes through here too: every client transaction is counted once.
        self.counters.UAC_transactions += 1
        counters = self.counters

        def counted(response: SIPResponse) -> None:
            status = response.status
            if status >= 200:
                counters.count_tm_final(status)
            on_final(response)

        return super().send_request(req, dest, counted, on_provisional=on_provisional, branch=branch,
                                    fr_timeout=fr_timeout)

    def on_response(self, resp: SIPResponse, source: Source | None) -> bool:
        matched = super().on_response(resp, source)
        if matched:
            self.counters.received_replies += 1
        return matched


class CountingTransportLayer(TransportLayer):
    """TransportLayer counting core:err_requests / err_replies: messages that did not parse.

    They never reach the core (the transport answers or drops them), so the count is taken at the
    transport's one place for them, `answer_malformed` (a hook of routescript.transport;
    if it is renamed, these two statistics stay at 0 and test_counting fails).
    """

    # Any: the parent's own arguments (the message callback, the limits), forwarded unchanged.
    def __init__(self, counters: CoreCounters, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counters = counters

    def answer_malformed(self, data: bytes, status: int, reason: str, source: Source,
                          reply: Callable[[bytes], None]) -> None:
        if data.lstrip(b"\r\n").startswith(b"SIP/"):
            self.counters.err_replies += 1
        else:
            self.counters.err_requests += 1
        super().answer_malformed(data, status, reason, source, reply)
