"""The errors of the SIP layer.

Two kinds (STYLE.md, h11's RemoteProtocolError/LocalProtocolError): the peer's bad SIP is a
`ParseError`, which the transport or the core turns into an error reply at one boundary; misuse of this
API by our own code is a plain ValueError/TypeError and is a bug to fix, never a reply.
"""

from __future__ import annotations


class SIPError(Exception):
    """Base class of everything the SIP layer raises about a peer's message."""


class ParseError(SIPError):
    """The peer sent something this layer rejects.

    `reason` is short and written to be used as the reason phrase of the error reply
    ("Bad CSeq header", "Missing Call-ID header", "Message Too Large"); `status` is the reply code
    (400 unless the problem has its own code: 513 for too large, 505 for an unknown SIP version,
    416 for an unsupported URI scheme).
    """

    __slots__ = ("reason", "status")

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    def __reduce__(self) -> tuple[type[ParseError], tuple[str, int]]:
        return (type(self), (self.reason, self.status))

    def __repr__(self) -> str:
        return f"ParseError({self.reason!r}, {self.status})"
