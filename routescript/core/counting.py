"""The transport layer with OpenSIPS's core counters of malformed messages kept as it works.

The Server makes this instead of the plain layer, so the counting sits where the events happen without
the transport layer knowing about statistics (it imports nothing of the core): the override only adds
an `+= 1` on a `CoreCounters` attribute around the parent's behaviour. (The transaction layer counts
tm's statistics itself into the CoreCounters it is given: routescript/transaction/counters.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from routescript.sip import Source
from routescript.transport import TransportLayer

from .stats import CoreCounters


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
