"""Host text as SIP writes it (RFC 3261 25.1): IPv6 references in brackets in URIs and Via, bare in the
socket API; IP literals compared in canonical form. Pure functions, no I/O; the answers are cached because
every message asks them of the same few addresses."""

from __future__ import annotations

import functools
import ipaddress


def bare_host(host: str) -> str:
    """Strip IPv6 reference brackets: "[::1]" -> "::1"; other hosts are returned unchanged."""
    if host[:1] == "[" and host[-1:] == "]":   # slices, not method calls: every send asks this
        return host[1:-1]
    return host


@functools.lru_cache(maxsize=4096)
def _analyse(host: str) -> tuple[str, bool, bool]:
    """(canonical text, is an IP literal, is IPv6) of a host. Every message asks this of the same few
    addresses (its source, its Via, our sockets); ipaddress parsing is costly, so the answers are
    cached (bounded, least recently used dropped)."""
    bare = bare_host(host)
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return bare.lower(), False, False
    return str(ip), True, ip.version == 6


def normalize_host(host: str) -> str:
    """Canonical text of an IP literal (so "::0001" and "[::1]" compare equal); names are lower-cased."""
    return _analyse(host)[0]


def is_ip(host: str) -> bool:
    return _analyse(host)[1]


def is_ipv6(host: str) -> bool:
    return _analyse(host)[2]


def host_for_uri(host: str) -> str:
    """Host as written in a SIP URI or Via: IPv6 literals in brackets (RFC 3261 25.1 IPv6reference)."""
    host = bare_host(host)
    return f"[{host}]" if is_ipv6(host) else host
