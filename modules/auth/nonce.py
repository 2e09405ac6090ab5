"""Nonces: signed, self-describing, single use. Sans-IO: `now` (seconds, wall clock) is passed in.

A nonce is base64url (no padding) of

    expires (uint64, seconds) | index (uint64) | offered (uint8) | random (4 bytes) | MAC (16 bytes)

MAC = HMAC-SHA256(secret, the 21 bytes before it)[:16]. `offered` is the mask of the algorithms and qops
the challenge offered (digest.ALGORITHMS bits, QOP_*), so an answer with an algorithm we did not offer
is refused without keeping any state per challenge. The secret is made once per server, before the
worker processes are forked (or derived from modparam("auth", "secret")), so every worker verifies every
worker's nonces.

Replay (OpenSIPS "nonce index", modparam disable_nonce_check): every challenge takes the next `index`
from a counter and writes it into slot `index % size` of a table; the first successful authorization
with that nonce clears the slot, so a second one (a replay, or a UA reusing the nonce) finds it cleared
(or overwritten by a newer index) and is answered as stale. The counter and the table live in one
shared memory block (a memfd mapped MAP_SHARED, created before the fork), guarded by a POSIX record
lock on the memfd (fcntl.lockf): the kernel drops it if a worker dies holding it, so a crash never
blocks the others. Memory is bounded: 8 bytes per slot, `size` slots (NONCE_INDEX_SIZE).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import mmap
import os
import struct
from contextlib import nullcontext
from dataclasses import dataclass
from enum import Enum
from typing import Any

NONCE_INDEX_SIZE = 1 << 17          # slots: 131,072 challenges may be pending at once (1 MiB)
_HEAD = struct.Struct(">QQB4s")     # expires, index, offered, random
_MAC_LEN = 16
_RAW_LEN = _HEAD.size + _MAC_LEN
MAX_NONCE_LENGTH = 64               # a nonce of ours is 50 characters; longer ones are not ours


class NonceState(Enum):
    VALID = "valid"
    EXPIRED = "expired"     # signed by us, past its expiry: stale
    FORGED = "forged"       # not one of ours (bad MAC, bad encoding): stale too, as OpenSIPS answers


@dataclass(frozen=True, slots=True)
class NonceInfo:
    state: NonceState
    index: int = 0
    offered: int = 0
    expires: int = 0


class NonceMint:
    """Makes and checks nonces with one secret."""

    def __init__(self, secret: bytes, expire: int) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        self._key = secret
        self.expire = expire
        # the opaque we send: constant per server (we check nothing with it; RFC 7616 3.3 lets us)
        self.opaque = hmac.new(secret, b"opaque", hashlib.sha256).hexdigest()[:16]

    @classmethod
    def from_phrase(cls, phrase: str | None, expire: int) -> NonceMint:
        """modparam("auth", "secret"): the phrase hashed to a key; None: 32 random bytes."""
        key = hashlib.sha256(phrase.encode()).digest() if phrase else os.urandom(32)
        return cls(key, expire)

    def make(self, now: float, index: int, offered: int) -> str:
        head = _HEAD.pack(int(now) + self.expire, index, offered & 0xFF, os.urandom(4))
        mac = hmac.new(self._key, head, hashlib.sha256).digest()[:_MAC_LEN]
        return base64.urlsafe_b64encode(head + mac).rstrip(b"=").decode()

    def check(self, nonce: str, now: float) -> NonceInfo:
        if len(nonce) > MAX_NONCE_LENGTH or not nonce.isascii():
            return NonceInfo(NonceState.FORGED)
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return NonceInfo(NonceState.FORGED)
        if len(raw) != _RAW_LEN:
            return NonceInfo(NonceState.FORGED)
        head, mac = raw[:_HEAD.size], raw[_HEAD.size:]
        if not hmac.compare_digest(mac, hmac.new(self._key, head, hashlib.sha256).digest()[:_MAC_LEN]):
            return NonceInfo(NonceState.FORGED)
        expires, index, offered, _ = _HEAD.unpack(head)
        if expires < now:
            return NonceInfo(NonceState.EXPIRED, index, offered, expires)
        return NonceInfo(NonceState.VALID, index, offered, expires)


class NonceIndex:
    """The counter and the table of pending nonce indexes (see the module docstring).

    `buffer` is any writable buffer of 8 * (size + 1) bytes; `lock` a context manager guarding it across
    processes (a no-op one for a single process). `shared()` makes the real one."""

    def __init__(self, buffer: Any, size: int = NONCE_INDEX_SIZE, lock: Any = None) -> None:
        self._words = memoryview(buffer).cast("B").cast("Q")
        if len(self._words) < size + 1:
            raise ValueError("nonce index buffer too small")
        self.size = size
        self._lock = lock if lock is not None else nullcontext()
        self._keep = buffer          # the mmap stays mapped while we live

    @classmethod
    def shared(cls, size: int = NONCE_INDEX_SIZE) -> NonceIndex:
        """In memory shared with every process forked after this call."""
        length = 8 * (size + 1)
        fd = os.memfd_create("routescript-auth-nonce-index", os.MFD_CLOEXEC)
        os.ftruncate(fd, length)
        block = mmap.mmap(fd, length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        return cls(block, size, _RecordLock(fd))

    @classmethod
    def local(cls, size: int = NONCE_INDEX_SIZE) -> NonceIndex:
        return cls(bytearray(8 * (size + 1)), size)

    def allocate(self) -> int:
        """The next index (never 0), marked pending."""
        words = self._words
        with self._lock:
            index = words[0] + 1
            words[0] = index
            words[1 + index % self.size] = index
        return index

    def use(self, index: int) -> bool:
        """True the first time a pending index is used (it is then cleared); False for a replay, an
        index overwritten by NONCE_INDEX_SIZE newer challenges, or 0."""
        if index <= 0:
            return False
        words = self._words
        slot = 1 + index % self.size
        with self._lock:
            if words[slot] != index:
                return False
            words[slot] = 0
        return True


class _RecordLock:
    """An exclusive POSIX record lock on a file descriptor: per process, released by the kernel when the
    holder exits. Within one process it does not exclude (no thread uses the index concurrently: the
    event loop's thread only, and nothing awaits while holding it)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN)
