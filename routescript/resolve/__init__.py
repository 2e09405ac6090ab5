"""Next-hop resolution (RFC 3263): a SIP URI in, the ordered list of (transport, address, port) to try out.

The interface the senders (tm's t_relay, forward(), presence's NOTIFY) use; the DNS part (NAPTR, SRV,
A/AAAA, /etc/hosts, failover order) lives beside it. Imports `sip` only (docs/internals.md layering).

`resolve_now` is the synchronous fast path - an IP literal, or an answer still in the cache - so the
common case costs no await; `resolve` does the lookups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from routescript.sip.uri import SipURI

__all__ = ["ResolveError", "Resolver", "Target"]


class ResolveError(Exception):
    """The URI names no reachable target: no such host, no usable transport, or a lookup that failed."""


@dataclass(frozen=True, slots=True)
class Target:
    """One place to send to: `proto` is "udp", "tcp", "tls", "ws" or "wss"; `host` an IP address."""

    proto: str
    host: str
    port: int


class Resolver(Protocol):
    def resolve_now(self, uri: SipURI, protos: frozenset[str]) -> list[Target] | None:
        """The targets without waiting (IP literal, cached answer), or None when a lookup is needed.
        Raises ResolveError when the URI cannot be resolved at all (for example a transport we do not
        listen on)."""

    async def resolve(self, uri: SipURI, protos: frozenset[str]) -> list[Target]:
        """The targets in the order to try them (RFC 3263 4.1-4.2, SRV priority and weight), at least
        one, or ResolveError."""
