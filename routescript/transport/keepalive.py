"""TCP keepalive on our connections (core parameters tcp_keepalive, tcp_keepidle, tcp_keepinterval,
tcp_keepcount, as OpenSIPS sets them): the kernel probes an idle peer, so a phone that vanished behind a
NAT is found dead and its connection closed, instead of lingering until tcp_connection_lifetime."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("routescript.transport")


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """SO_KEEPALIVE on, with the probes' timing when given (None: the system's, as OpenSIPS leaves it)."""

    idle: int | None = None        # seconds idle before the first probe (TCP_KEEPIDLE)
    interval: int | None = None    # seconds between probes (TCP_KEEPINTVL)
    count: int | None = None       # unanswered probes before the connection is dropped (TCP_KEEPCNT)

    def apply(self, transport: Any) -> None:
        """Set on the socket of an asyncio stream transport (a failure is logged: never fatal)."""
        sock = transport.get_extra_info("socket")
        if sock is None:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for option, value in ((getattr(socket, "TCP_KEEPIDLE", None), self.idle),
                                  (getattr(socket, "TCP_KEEPINTVL", None), self.interval),
                                  (getattr(socket, "TCP_KEEPCNT", None), self.count)):
                if option is not None and value is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, option, value)
        except OSError as exc:
            log.warning("cannot set TCP keepalive on %s: %s", transport.get_extra_info("peername"), exc)
