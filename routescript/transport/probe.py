"""How long datagrams wait in the kernel's receive buffer of a UDP socket, measured with our own.

A busy event loop reads its UDP socket late, and until it does the requests queue in the kernel's
receive buffer (megabytes: seconds of SUBSCRIBEs), where no timestamp of ours can see them. The
probe sends a small datagram to the listening socket every `interval` seconds from a socket of its
own; when the listener reads it back, its age is the time the datagrams around it spent in the
buffer. The core adds that to the time a request then waits for its turn (queue_delay_limit).

`delay(now)` is the later of two figures: the age of the last probe read back, and the age of the
oldest probe still in the buffer - so a buffer that fills up shows at once, not only when it drains.
A probe the kernel dropped (a full buffer) is forgotten when a later one comes back.

Worker processes reading one inherited socket (docs/workers.md) share its one kernel buffer but each
reads only some of the datagrams - and so only some of the probes, its own and its siblings'. A worker
that read none of them for a while saw its own probes "outstanding" and took the buffer for full while
the others kept draining it: every request it then read was refused 503 as overloaded (measured: 1-3%
of PUBLISH calls at 250 calls/s with 2 workers, each "waited" just over 250 ms). So the supervisor makes
a `SharedDrain` for each UDP socket before forking: every worker writes there the send time and age of
the newest probe it read back, and every worker's probe reads it. One buffer, one watermark.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
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


class SharedDrain:
    """The newest probe any worker read back from one shared socket: its send time (the buffer is
    drained up to it) and its age when read. Anonymous shared memory made before fork, so every worker
    sees the same 16 bytes. Two workers writing at once may leave the older of two close values for a
    moment: harmless, the next probe (100 ms later) corrects it."""

    _LAYOUT = struct.Struct("dd")

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, self._LAYOUT.size)   # MAP_SHARED | MAP_ANONYMOUS: kept across fork

    def note(self, sent: float, age: float) -> None:
        if sent > self._LAYOUT.unpack_from(self._mem)[0]:
            self._LAYOUT.pack_into(self._mem, 0, sent, age)

    def read(self) -> tuple[float, float]:
        """(drained up to, age of that probe when read)."""
        return self._LAYOUT.unpack_from(self._mem)


# The drains of the sockets the supervisor bound, by (host, port): made before fork, found after it by
# each worker's probe of that socket (a registry because the fork is what carries them).
_DRAINS: dict[tuple[str, int], SharedDrain] = {}


def share_drain(host: str, port: int) -> SharedDrain:
    """The SharedDrain of the UDP socket bound at (host, port), made now if missing: call before fork."""
    return _DRAINS.setdefault((host, port), SharedDrain())


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
        self.last_delay = 0.0                       # age of the newest probe read back (by any worker)
        self._newest_read = 0.0                     # its send time
        self._drain = _DRAINS.get((host, port))     # with sibling workers on this socket
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
        if sent < self._newest_read:     # a sibling already read a newer one: its age is the figure
            return
        self._newest_read = sent
        self.last_delay = max(0.0, now - sent)
        if self._drain is not None:
            self._drain.note(sent, self.last_delay)

    def delay(self, now: float) -> float:
        """The time a datagram read now has probably spent in the kernel's buffer (seconds)."""
        if self._drain is not None:
            self._catch_up(*self._drain.read())
        if self._outstanding:
            return max(self.last_delay, now - self._outstanding[0])
        return self.last_delay

    def _catch_up(self, drained: float, age: float) -> None:
        """What the sibling workers read back: our probes sent before `drained` left the buffer too."""
        outstanding = self._outstanding
        while outstanding and outstanding[0] <= drained:
            outstanding.popleft()
        if drained > self._newest_read:
            self._newest_read = drained
            self.last_delay = age

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._sock.close()
