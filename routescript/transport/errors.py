"""The transport layer's two kinds of errors (STYLE 6): the peer's fault vs a failure to deliver."""

from __future__ import annotations


class TransportError(OSError):
    """A message could not be sent: no suitable socket, connection refused or lost, name not resolved.

    An OSError, so layers that may not import this package (routescript.transaction) catch it as one;
    the transaction layer turns it into a locally made 503 for client transactions.
    """


class FramingError(Exception):
    """The peer sent a stream we cannot split into messages (RFC 3261 18.3); the connection is closed.

    `status`/`reason` are what a reply would say (400 or 513); `head` holds the bytes of the broken
    message seen so far, for a best-effort reply (routescript.sip.reply_to_malformed).
    """

    def __init__(self, reason: str, status: int = 400, head: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.head = head
