"""IP addresses and networks as script values: `$si == 10.0.0.0/8`, `$socket_in(ip) != ::1`.

OpenSIPS (cfg.y `script_var equalop ipnet`, route.c comp_ip) reads the right side as a network and
tests whether the left side's value, read as an address, is inside it. The network is parsed once at
load time (parse_network); each comparison runs a closure (network_test) that compares integers, so
`::1` equals `0:0:0:0:0:0:0:1` and `10.1.2.3` is in `10.0.0.0/8`.

Choices, as OpenSIPS has them where it has them:
- a bare address is the network of that one address (2.x's `ipnet: ip`; 3.x accepts only a/b forms,
  we accept both);
- the mask is a bit count (/8) or an address (/255.0.0.0); host bits in the address are dropped
  (mk_net masks them): 10.1.2.3/8 is 10.0.0.0/8;
- an IPv6 address in brackets ([::1], [2001:db8::]/32) is the same address;
- a NULL value: `==` is false, `!=` true (route.c: null against a not-null constant);
- a value that is not an address: both `==` and `!=` are false (comp_ip returns -1);
- an IPv4 address never matches an IPv6 network and the reverse (matchnet compares families first).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> Network:
    """An IP literal as written in a script -> its network. Raises ValueError("why")."""
    addr, slash, mask = text.partition("/")
    addr = _unbracket(addr)
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise ValueError(f"'{addr}' is not an IP address") from None
    if not slash:
        return ipaddress.ip_network(ip)
    mask = _unbracket(mask)
    if mask.isdigit():
        bits = int(mask)
        if bits > ip.max_prefixlen:
            raise ValueError(f"netmask /{mask} is longer than {ip.max_prefixlen} bits")
    else:
        try:
            mask_ip = ipaddress.ip_address(mask)
        except ValueError:
            raise ValueError(f"bad netmask '{mask}' (expected a bit count or an address)") from None
        if mask_ip.version != ip.version:
            raise ValueError(f"netmask '{mask}' is not an IPv{ip.version} address")
        bits = _prefix_of(int(mask_ip), ip.max_prefixlen)
    return ipaddress.ip_network(f"{ip}/{bits}", strict=False)


def _unbracket(text: str) -> str:
    return text[1:-1] if text.startswith("[") and text.endswith("]") else text


def _prefix_of(mask: int, width: int) -> int:
    """255.255.0.0 -> 16; a mask that is not contiguous ones then zeros is refused."""
    inverted = ~mask & ((1 << width) - 1)
    if inverted & (inverted + 1):
        raise ValueError("the netmask is not a run of ones followed by zeros")
    return width - inverted.bit_length()


# The longest text an address can be: an IPv6 address with an IPv4 tail (45) in brackets, with spaces.
_MAX_ADDRESS_LEN = 64


@functools.lru_cache(maxsize=4096)
def _address_of(text: str) -> tuple[int, int] | None:
    """(version, integer) of an address in a pvar value, or None; cached: sources repeat (only short
    texts reach the cache, see network_test)."""
    try:
        ip = ipaddress.ip_address(_unbracket(text.strip()))
    except ValueError:
        return None
    return ip.version, int(ip)


def network_test(net: Network, negate: bool) -> Callable[[Any], bool]:
    """The per-message test of `value == net` (negate: `value != net`), built once per comparison."""
    version, base, mask = net.version, int(net.network_address), int(net.netmask)

    def test(value: Any) -> bool:
        if value is None:
            return negate
        found = _address_of(value) if isinstance(value, str) and len(value) <= _MAX_ADDRESS_LEN else None
        if found is None:
            return False  # not an address: neither == nor != holds (OpenSIPS comp_ip: -1)
        inside = found[0] == version and found[1] & mask == base
        return inside != negate

    return test
