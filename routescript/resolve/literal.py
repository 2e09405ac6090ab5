"""The resolver for URIs that name an IP address (RFC 3263 4.1/4.2 for a numeric host): no DNS at all.

What the server uses until the RFC 3263 DNS resolver is plugged in (routescript.core.transaction_setup picks
the resolver in one place). A host name is refused with a ResolveError that says why, never guessed.
"""

from __future__ import annotations

from routescript.resolve import ResolveError, Target
from routescript.sip.address import bare_host, is_ip
from routescript.sip.uri import SipURI

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}


def numeric_target(uri: SipURI, protos: frozenset[str]) -> Target | None:
    """The one target of a URI whose host (or ;maddr) is an IP address, None for a host name.

    RFC 3263 4.1: a numeric host without ;transport= means UDP for sip:, TLS for sips:; 4.2: the port
    is the URI's, else the transport's default. Raises ResolveError for a transport we do not listen
    on (the caller's sockets: `protos`)."""
    host = bare_host(uri.param("maddr") or uri.host)
    if not is_ip(host):
        return None
    proto = (uri.param("transport") or ("tls" if uri.scheme == "sips" else "udp")).lower()
    if proto not in protos:
        raise ResolveError(f"{uri}: transport {proto} - we have no {proto} socket to send it from")
    return Target(proto, host, uri.port or DEFAULT_PORTS.get(proto, 5060))


class LiteralResolver:
    """routescript.resolve.Resolver for IP literals only; a host name is a ResolveError."""

    def resolve_now(self, uri: SipURI, protos: frozenset[str]) -> list[Target] | None:
        target = numeric_target(uri, protos)
        if target is None:
            raise ResolveError(f"{uri}: {uri.host} is a host name and no DNS resolver is configured "
                               "(only IP addresses are resolved)")
        return [target]

    async def resolve(self, uri: SipURI, protos: frozenset[str]) -> list[Target]:
        targets = self.resolve_now(uri, protos)
        assert targets is not None   # resolve_now never asks for a lookup: it raises instead
        return targets
