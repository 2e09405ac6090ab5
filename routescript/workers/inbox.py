"""Inboxes: one AF_UNIX datagram socketpair per worker slot (docs/workers.md section 2, "Inboxes").

Made by the supervisor before any fork and kept as long as it lives: the slot's worker reads the receive
end on its asyncio loop (InboxReader), every worker sends on the send end (Inbox.send). A socketpair
because nothing else on the host can write to it, it keeps message boundaries, and a connected pair is
not bound by net.unix.max_dgram_qlen; the supervisor holding the receive end open lets datagrams sent to
a restarting slot wait in the kernel for the new worker.

Bounds: SO_SNDBUF/SO_RCVBUF (4 MiB asked; the kernel caps it at net.core.wmem_max/rmem_max). Sends never
block: a full inbox raises InboxFull at once, and the caller decides (the dispatcher answers a request
503 itself and drops a response or ACK, counted: UDP peers retransmit).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import select
import socket
from collections.abc import Callable

from routescript.transport._ratelimit import RateLimitedLog
from routescript.workers.messages import MAX_DATAGRAM, InboxMessage, MessageDecodeError, decode, encode

__all__ = ["INBOX_BUFFER", "Inbox", "InboxClosed", "InboxError", "InboxFull", "InboxReader"]

log = logging.getLogger("routescript.workers")

INBOX_BUFFER = 4 << 20   # bytes; OpenSIPS's maxbuffer default
READ_BATCH = 64          # datagrams read per wake-up: others' messages wait at most one batch

_FULL = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)


class InboxError(OSError):
    """A message could not be put in a slot's inbox."""


class InboxFull(InboxError):
    """The inbox's buffer is full (EAGAIN): the owner is not keeping up."""


class InboxClosed(InboxError):
    """The inbox was closed (its supervisor is gone, or this process closed its end)."""


class Inbox:
    """One slot's inbox. `send` from any worker; the slot's worker reads `receive_end` (InboxReader)."""

    def __init__(self, slot: int, *, buffer_size: int = INBOX_BUFFER) -> None:
        self.slot = slot
        self.receive_end, self.send_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for end in (self.receive_end, self.send_end):
            end.setblocking(False)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)

    def send(self, message: InboxMessage) -> None:
        """Queue `message` for the slot's worker; InboxFull when its buffer is full, InboxClosed when
        the inbox is closed, ValueError when the message cannot be encoded (a bug of ours)."""
        self.send_datagram(encode(message))

    def send_datagram(self, datagram: bytes) -> None:
        try:
            self.send_end.send(datagram)
        except OSError as exc:
            if exc.errno in _FULL:
                raise InboxFull(exc.errno, f"inbox of worker slot {self.slot} is full") from None
            if self.send_end.fileno() < 0 or exc.errno in (errno.EBADF, errno.ECONNREFUSED, errno.EPIPE):
                raise InboxClosed(exc.errno, f"inbox of worker slot {self.slot} is closed") from None
            raise InboxError(exc.errno, f"inbox of worker slot {self.slot}: {exc.strerror}") from None

    def close_receive_end(self) -> None:
        """In a worker that does not read this slot (after fork): only the slot's worker and the
        supervisor keep it."""
        self.receive_end.close()

    def close(self) -> None:
        self.receive_end.close()
        self.send_end.close()


class InboxReader:
    """Reads one inbox on the running asyncio loop (add_reader on the receive end): up to READ_BATCH
    datagrams per wake-up, each decoded and given to `handler`. A datagram that does not decode, or a
    handler that raises, is logged and counted, and the reader goes on."""

    def __init__(self, inbox: Inbox, handler: Callable[[InboxMessage], None], *,
                 batch: int = READ_BATCH) -> None:
        self.inbox = inbox
        self.handler = handler
        self.batch = batch
        self.received = 0
        self.bad_datagrams = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bad_log = RateLimitedLog(log, interval=1.0)
        # "anything queued?" without a recv: a recv on an empty inbox raises (BlockingIOError), 2 us
        # a time; poll(0) answers in 0.5 (measured). A closed end reports POLLNVAL: read_ready says why.
        self._poll = select.poll()
        self._poll.register(inbox.receive_end.fileno(), select.POLLIN)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.inbox.receive_end.fileno(), self.read_ready)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.inbox.receive_end.fileno())
            self._loop = None

    def read_queued(self) -> None:
        """read_ready when something is queued: the dispatcher's check before every message it handles
        itself (causal order, docs/workers.md section 2), nearly always with nothing queued."""
        if self._poll.poll(0):
            self.read_ready()

    def read_ready(self) -> None:
        """Up to `batch` datagrams, while any is queued: after each, poll(0) says whether another is
        (a quarter of the recv that would raise on the empty inbox, and a wake-up usually brings one)."""
        sock, poll = self.inbox.receive_end, self._poll.poll
        for _ in range(self.batch):
            try:
                datagram = sock.recv(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("inbox of worker slot %d: %s; no longer reading it", self.inbox.slot, exc)
                self.stop()
                return
            self.received += 1
            try:
                message = decode(datagram)
            except MessageDecodeError as exc:
                self.bad_datagrams += 1
                self._bad_log.log("decode", _now(), "inbox of worker slot %d: dropped a datagram: %s",
                                  self.inbox.slot, exc)
            else:
                try:
                    self.handler(message)
                except Exception:  # one message's bug must not stop the inbox
                    log.exception("inbox of worker slot %d: handling %s failed", self.inbox.slot,
                                  type(message).__name__)
            if not poll(0):
                return


def _now() -> float:
    return asyncio.get_running_loop().time()
