"""Host text as SIP writes it (RFC 3261 25.1): IPv6 references in brackets in URIs and Via, bare in the
socket API; IP literals compared in canonical form. Pure functions, no I/O; the answers are cached because
every message asks them of the same few addresses."""

from __future__ import annotations

import ipaddress

from ._memo import MEMO_SIZE


def bare_host(host: str) -> str:
    """Strip IPv6 reference brackets: "[::1]" -> "::1"; other hosts are returned unchanged."""
    if host[:1] == "[" and host[-1:] == "]":   # slices, not method calls: every send asks this
        return host[1:-1]
    return host


# (canonical text, is an IP literal, is IPv6) by host as written. Every message asks this of the same few
# addresses (its source, its Via, our sockets) - a relayed call some 40 times; ipaddress parsing is
# costly, so the answers are kept (a bounded memo, _memo.py), read with `in` and `[]`.
_ANALYSED: dict[str, tuple[str, bool, bool]] = {}


def _analyse(host: str) -> tuple[str, bool, bool]:
    if host in _ANALYSED:
        return _ANALYSED[host]
    bare = bare_host(host)
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        found = (bare.lower(), False, False)
    else:
        found = (str(ip), True, ip.version == 6)
    if len(_ANALYSED) >= MEMO_SIZE:
        _ANALYSED.clear()
    _ANALYSED[host] = found
    return found


def normalize_host(host: str) -> str:
    """Canonical text of an IP literal (so "::0001" and "[::1]" compare equal); names are lower-cased."""
    return _ANALYSED[host][0] if host in _ANALYSED else _analyse(host)[0]


def is_ip(host: str) -> bool:
    return _ANALYSED[host][1] if host in _ANALYSED else _analyse(host)[1]


def is_ipv6(host: str) -> bool:
    return _ANALYSED[host][2] if host in _ANALYSED else _analyse(host)[2]


def host_for_uri(host: str) -> str:
    """Host as written in a SIP URI or Via: IPv6 literals in brackets (RFC 3261 25.1 IPv6reference)."""
    host = bare_host(host)
    return f"[{host}]" if is_ipv6(host) else host
