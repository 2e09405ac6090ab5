"""A list of IP addresses and networks, as a parameter writes it, and the test "is this host in it".

Used for the trusted sources exempt from the per-address caps (core `tcp_trusted_sources`, presence
`trusted_sources`): an edge proxy in front of the server sends everything from its own address.

    "10.0.0.7, 192.0.2.0/24 2001:db8::/32"   items separated by commas, semicolons or blanks

An IPv4 address seen as an IPv4-mapped IPv6 address (`::ffff:10.0.0.7`, a dual-stack socket) matches
the IPv4 entries.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_SEPARATORS = re.compile(r"[\s,;]+")


@dataclass(frozen=True, slots=True)
class NetworkList:
    """Networks (a single address is a /32 or /128); `host in networks` for an address string."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> NetworkList:
        """ValueError naming the item that is not an address or network (host bits set included:
        "10.0.0.1/24" is refused rather than silently widened)."""
        networks = []
        for item in _SEPARATORS.split(text.strip()):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=True))
            except ValueError as exc:
                raise ValueError(f"'{item}' is not an IP address or network ({exc})") from None
        return cls(tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, host: object) -> bool:
        if not self.networks or not isinstance(host, str):
            return False
        ip = _address(host)
        return ip is not None and any(ip in net for net in self.networks)

    def __str__(self) -> str:
        return ", ".join(str(net) for net in self.networks)


@functools.lru_cache(maxsize=4096)
def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host string names (None for a name); cached: the same few sources ask again."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
