"""What the transactions count as they work: OpenSIPS tm's statistics.

TransactionLayer counts a new server transaction (UAS_transactions), each reply sent in one
(local_replies, or relayed_replies for a branch's response tm forwards), each client transaction
started (UAC_transactions) and each response that matched one (received_replies); TransactionCore
counts the final reply a transaction completes with (Nxx_transactions) where it decides it. They count
into the object the layer is given - the core's CoreCounters, which its statistics read - as plain
attribute increments on the message path (routescript.transaction imports nothing of the core), or,
without one, into a TransactionCounts of their own.

Choice: Nxx_transactions counts transactions of both sides by their final reply (our replies to
requests, and the final responses - received or made locally, 408/503 - handed to the creators of our
client transactions, the NOTIFYs and tm's branches), as OpenSIPS counts every transaction completed by tm.
"""

from __future__ import annotations

from typing import Protocol


class TransactionCounters(Protocol):
    """The counters the transactions update (CoreCounters has them)."""

    received_replies: int
    relayed_replies: int
    local_replies: int
    UAS_transactions: int
    UAC_transactions: int

    def count_tm_final(self, code: int) -> None:
        """A transaction completed with a final reply `code` (its class's Nxx_transactions)."""


class TransactionCounts:
    """TransactionCounters of a layer made without the core's (tests, tools): `finals[n]` is nX."""

    __slots__ = ("UAC_transactions", "UAS_transactions", "finals", "local_replies", "received_replies",
                 "relayed_replies")

    def __init__(self) -> None:
        self.received_replies = 0
        self.relayed_replies = 0
        self.local_replies = 0
        self.UAS_transactions = 0
        self.UAC_transactions = 0
        self.finals = [0] * 7

    def count_tm_final(self, code: int) -> None:
        self.finals[code // 100] += 1
