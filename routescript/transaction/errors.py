"""Errors of the transaction layer."""

from __future__ import annotations


class TransactionError(Exception):
    """Misuse of a transaction by our own code (a bug, logged): e.g. a second final reply."""


class TransactionLimitError(TransactionError):
    """Too many pending transactions (the bound of TransactionLayer). The caller answers the request
    statelessly with `status`/`reason` and a Retry-After of `retry_after` seconds (STYLE 7)."""

    def __init__(self, limit: int, retry_after: int = 5) -> None:
        super().__init__(f"too many pending transactions (limit {limit})")
        self.limit = limit
        self.status = 503
        self.reason = "Service Unavailable"
        self.retry_after = retry_after
