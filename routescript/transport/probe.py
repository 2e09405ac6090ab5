"""How long datagrams wait in the kernel's receive buffer of a UDP socket, measured with our own.

A busy event loop reads its UDP socket late, and until it does the requests queue in the kernel's
receive buffer (megabytes: seconds of SUBSCRIBEs), where no timestamp of ours can see them. The
probe sends a small datagram to the listening socket every `interval` seconds from a socket of its
own; when the listener reads it back, its age is the time the datagrams around it spent in the
buffer. The core adds that to the time a request then waits for its turn (queue_delay_limit).

`delay(now)` is the later of two figures: the age of the last probe read back, and the age of the
oldest probe still in the buffer - so a buffer that fills up shows at once, not only when it drains.
A probe the kernel dropped (a full buffer) is forgotten when a later one comes back.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("routescript.transport")

# A probe datagram: a marker no SIP message starts with, then its send time (our clock).
_MAGIC = b"\x00rs-queue-probe\x00"
_STAMP = struct.Struct("!d")
MAX_OUTSTANDING = 256     # probes in flight remembered (25 s at 100 ms): the oldest is kept


class QueueDelayProbe:
    """The probe of one listening UDP socket at (host, port)."""

    def __init__(self, host: str, port: int, *, interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        target = "::1" if host == "::" else "127.0.0.1" if host == "0.0.0.0" else host  # noqa: S104
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._sock.connect((target, port))
        name = self._sock.getsockname()
        self.host: str = name[0]
        self.port: int = name[1]
        self._outstanding: deque[float] = deque()   # send times of the probes not read back, oldest first
        self.last_delay = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def is_probe(self, host: str, port: int) -> bool:
        return port == self.port and host == self.host

    def is_sibling_probe(self, host: str, data: bytes) -> bool:
        """A probe another worker process sent to the socket we share (docs/workers.md: all workers read
        one inherited fd, so each reads some of the others' probes): from our address, with the marker.
        It measures the same kernel buffer; received() takes it as one of ours."""
        return host == self.host and data.startswith(_MAGIC)

    def start(self) -> None:
        """Send one probe now and then every `interval` seconds on the running loop, until close()."""
        self.send()
        self._timer = asyncio.get_running_loop().call_later(self.interval, self.start)

    def send(self) -> None:
        now = self.clock()
        try:
            self._sock.send(_MAGIC + _STAMP.pack(now))
        except OSError as exc:   # a full buffer (EAGAIN) or the socket gone: the oldest keeps ageing
            log.debug("queue probe to port %d not sent: %s", self.port, exc)
            return
        outstanding = self._outstanding
        if len(outstanding) >= MAX_OUTSTANDING:
            del outstanding[1]     # keep the oldest: its age is the figure that matters
        outstanding.append(now)

    def received(self, data: bytes) -> None:
        """A probe read back from the listening socket."""
        if not data.startswith(_MAGIC) or len(data) != len(_MAGIC) + _STAMP.size:
            return
        (sent,) = _STAMP.unpack_from(data, len(_MAGIC))
        now = self.clock()
        outstanding = self._outstanding
        while outstanding and outstanding[0] <= sent:   # this one, and any the kernel dropped before it
            outstanding.popleft()
        self.last_delay = max(0.0, now - sent)

    def delay(self, now: float) -> float:
        """The time a datagram read now has probably spent in the kernel's buffer (seconds)."""
        if self._outstanding:
            return max(self.last_delay, now - self._outstanding[0])
        return self.last_delay

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._sock.close()
