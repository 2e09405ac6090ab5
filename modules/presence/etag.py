"""Entity-tags for publications (RFC 3903 section 6: SIP-ETag / SIP-If-Match).

OpenSIPS writes etags as `a.<startup time>.<pid>.<counter>.<generation>`; we keep that shape so
tools that parse it still work, with a random process nonce instead of the pid: two restarts within
one second (a container restarting as pid 1) must never hand out the same etag twice.
"""

from __future__ import annotations

import secrets


class EtagGenerator:
    """Makes etags unique across the process lifetime and, through start/nonce, across restarts."""

    def __init__(self, start: float, nonce: int | None = None) -> None:
        self._prefix = f"a.{int(start)}.{secrets.randbelow(1 << 30) if nonce is None else nonce}"
        self._counter = 0

    def new(self, generation: int = 0) -> str:
        """A fresh etag; `generation` counts the etags one publication has had (0 for a new one)."""
        self._counter += 1
        return f"{self._prefix}.{self._counter}.{generation}"
