"""RFC 3263 "Locating SIP Servers", client side, as a sans-IO procedure.

`plan()` is a generator: it yields a batch of DNS queries (asked together), is sent back their answers
(RecordSets, in the same order), and finally returns the targets in the order to try them. It never
touches the network or the clock: the resolver drives it from its cache (resolve_now, which gives up at
the first query the cache cannot answer) or from real lookups (resolve). One procedure, two drivers.

The steps (section numbers of RFC 3263):
  4.1 transport: `transport=` param; else NAPTR (SIP+D2U, SIP+D2T, SIPS+D2T, flag "s", only transports
      we listen on, SIPS+ only for a sips URI); else SRV for each transport we listen on; else UDP
      (TLS for sips). A URI with a port asks no NAPTR and no SRV.
  4.2 port and address: SRV targets ordered by RFC 2782 (priority, then weighted random), each target's
      A (and, with dns_try_ipv6, AAAA first) records; without SRV the host's A/AAAA at 5060 (5061 TLS).
A name in the hosts file is answered from it and asks nothing of DNS (4.1 and 4.2 fall back to its
addresses with the default transport and port, as when DNS has no NAPTR or SRV for it).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

from routescript.sip.hosts import bare_host, is_ip, is_ipv6, normalize_host
from routescript.sip.uri import SipURI

from . import ResolveError, Target
from .records import FAILED, NXDOMAIN, Naptr, Query, RecordSet, Srv

__all__ = ["DEFAULT_PORTS", "Plan", "Policy", "literal_targets", "order_srv", "plan", "target_host",
           "usable_naptr"]

# RFC 3261 19.1.2 (5060 / 5061 for TLS); RFC 7118 leaves ws/wss to the HTTP ports.
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}

# RFC 3263 4.1 NAPTR services -> our transport. SCTP (D2S) and WebSocket (D2W, RFC 7118) are not
# offered: we cannot open such connections to a server.
_NAPTR_SERVICES = {"sip+d2u": "udp", "sip+d2t": "tcp", "sips+d2t": "tls"}

# RFC 3263 4.1: "_sip._udp", "_sip._tcp", "_sips._tcp" (TLS). Also the order in which we try the
# transports when no NAPTR says otherwise (the RFC leaves it to the client): UDP, TCP, then TLS.
_SRV_PREFIXES = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}

_KNOWN_TRANSPORTS = frozenset({"udp", "tcp", "tls", "sctp", "ws", "wss"})

# Bounds (STYLE 7): a zone can publish any number of records; we read this many of each kind, and
# hand back at most MAX_TARGETS targets.
MAX_NAPTR = 8
MAX_SRV = 16
MAX_TARGETS = 32

# What the procedure yields and is sent, and what it returns.
Plan = Generator[tuple[Query, ...], Sequence[RecordSet], list[Target]]


@dataclass(frozen=True, slots=True)
class Policy:
    """What the core parameters change in the procedure: dns_try_naptr, dns_try_ipv6."""

    try_naptr: bool = True
    try_ipv6: bool = False


def target_host(uri: SipURI) -> str:
    """RFC 3263 4: "TARGET [is] the value of the maddr parameter of the URI, if present, otherwise, the
    host value" (OpenSIPS's tm and forward() do the same)."""
    if uri.params:
        maddr = uri.param("maddr")
        if maddr:
            return maddr
    return uri.host


def literal_targets(uri: SipURI, protos: frozenset[str]) -> list[Target] | None:
    """The one target of a URI whose host (or maddr) is an IP literal (no lookup), or None for a name."""
    host = target_host(uri)
    if not is_ip(host):
        return None
    proto = _chosen_transport(uri, protos) or _default_transport(uri, protos)
    return [Target(proto, normalize_host(host), uri.port or DEFAULT_PORTS[proto])]


def plan(uri: SipURI, protos: frozenset[str], policy: Policy,
         hosts: Callable[[str], tuple[str, ...] | None], rng: random.Random) -> Plan:
    """The RFC 3263 procedure for `uri` (see the module docstring). `hosts(name)` gives the hosts file's
    addresses of a name or None. Raises ResolveError when no target is found."""
    host = _dns_name(target_host(uri))
    forced = _chosen_transport(uri, protos)
    trace = _Trace(host)
    listed = hosts(host)
    if listed is not None:
        proto = forced or _default_transport(uri, protos)
        return trace.result(_expand(listed, proto, uri.port or DEFAULT_PORTS[proto], policy))
    if uri.port is not None:                       # 4.2: a port means no SRV, only A/AAAA
        proto = forced or _default_transport(uri, protos)
        return trace.result((yield from _addresses([(proto, host, uri.port)], policy, hosts, trace)))
    if forced is not None:                         # 4.1: a transport param means no NAPTR
        candidates = [forced] if forced in _SRV_PREFIXES else []
    else:
        if policy.try_naptr:
            targets = yield from _via_naptr(host, uri.scheme == "sips", protos, policy, hosts, rng, trace)
            if targets:
                return targets
        candidates = _srv_transports(uri, protos)
    if candidates:
        answers = yield tuple(Query(_SRV_PREFIXES[p] + host, "SRV") for p in candidates)
        trace.note(answers)
        if any(answer.items for answer in answers):
            hops = [(proto, srv.target, srv.port)
                    for proto, answer in zip(candidates, answers, strict=True)
                    for srv in order_srv(answer, rng)]
            return trace.result((yield from _addresses(hops, policy, hosts, trace)))
    proto = forced or _default_transport(uri, protos)   # 4.2: no SRV - the host itself, default port
    return trace.result((yield from _addresses([(proto, host, DEFAULT_PORTS[proto])], policy, hosts, trace)))


def _via_naptr(host: str, sips: bool, protos: frozenset[str], policy: Policy,
               hosts: Callable[[str], tuple[str, ...] | None], rng: random.Random, trace: _Trace) -> Plan:
    """4.1 NAPTR: the usable services in order, each replacement's SRV, their addresses; [] when the
    name has no usable NAPTR (the caller then asks SRV per transport, as OpenSIPS does)."""
    (answer,) = yield (Query(host, "NAPTR"),)
    trace.note((answer,))
    if answer.status == NXDOMAIN:      # RFC 8020: nothing exists under a name that does not exist
        return trace.result([])
    services = usable_naptr(answer, sips, protos)
    if not services:
        return []
    answers = yield tuple(Query(replacement, "SRV") for _proto, replacement in services)
    trace.note(answers)
    hops = [(proto, srv.target, srv.port)
            for (proto, _replacement), srv_answer in zip(services, answers, strict=True)
            for srv in order_srv(srv_answer, rng)]
    return (yield from _addresses(hops, policy, hosts, trace))


def usable_naptr(answer: RecordSet, sips: bool, protos: frozenset[str]) -> list[tuple[str, str]]:
    """(transport, SRV name) of the NAPTR records we can use, by ORDER then PREFERENCE (RFC 3403):
    flag "s", no regexp, a SIP service (SIPS+ only for a sips URI) on a transport we listen on."""
    usable: list[tuple[int, int, str, str]] = []
    for record in answer.items[:MAX_NAPTR]:
        if not isinstance(record, Naptr) or record.flags.lower() != "s" or record.regexp:
            continue
        service = record.service.lower()
        proto = _NAPTR_SERVICES.get(service)
        if proto is None or proto not in protos or (sips and not service.startswith("sips+")):
            continue
        if record.replacement in ("", "."):
            continue
        usable.append((record.order, record.preference, proto, _dns_name(record.replacement)))
    usable.sort(key=lambda u: (u[0], u[1]))
    return [(proto, name) for _order, _pref, proto, name in usable]


def order_srv(answer: RecordSet, rng: random.Random) -> list[Srv]:
    """RFC 2782's order: lowest priority first; within a priority, repeatedly pick a record with
    probability proportional to its weight (zero-weight records first in the running sum, so they are
    rarely picked while others remain). Targets "." (service not offered) are dropped."""
    records = [r for r in answer.items[:MAX_SRV] if isinstance(r, Srv) and r.target not in ("", ".")]
    ordered: list[Srv] = []
    for priority in sorted({r.priority for r in records}):
        group = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    ordered.append(group.pop(index))
                    break
    return ordered


def _addresses(hops: list[tuple[str, str, int]], policy: Policy,
               hosts: Callable[[str], tuple[str, ...] | None], trace: _Trace) -> Plan:
    """The targets of (transport, host, port) hops, in hop order: each host's addresses from the hosts
    file, as a literal, or from A (and AAAA) lookups asked together; duplicates dropped."""
    found: dict[str, tuple[str, ...]] = {}
    queries: list[Query] = []
    for _proto, target, _port in hops:
        name = _dns_name(target)
        if name in found:
            continue
        listed = (normalize_host(name),) if is_ip(name) else hosts(name)
        if listed is not None:
            found[name] = listed
            continue
        found[name] = ()
        if policy.try_ipv6:
            queries.append(Query(name, "AAAA"))
        queries.append(Query(name, "A"))
    if queries:
        answers = yield tuple(queries)
        trace.note(answers)
        for query, answer in zip(queries, answers, strict=True):
            found[query.name] += tuple(str(a) for a in answer.items)
    targets: dict[Target, None] = {}              # ordered, without duplicates
    for proto, hop_host, port in hops:
        for address in _expand(found[_dns_name(hop_host)], proto, port, policy):
            targets.setdefault(address)
    return list(targets)[:MAX_TARGETS]


def _expand(addresses: Sequence[str], proto: str, port: int, policy: Policy) -> list[Target]:
    """Targets of one host's addresses: IPv6 ones first with dns_try_ipv6, else IPv4 only (OpenSIPS
    tries AAAA only when dns_try_ipv6 is set; a hosts file's "::1 localhost" is skipped likewise)."""
    v6 = [Target(proto, normalize_host(a), port) for a in addresses if is_ipv6(a)] if policy.try_ipv6 else []
    return v6 + [Target(proto, normalize_host(a), port) for a in addresses if not is_ipv6(a)]


class _Trace:
    """What went wrong on the way, for the ResolveError when nothing is found."""

    __slots__ = ("host", "nxdomain", "failures")

    def __init__(self, host: str) -> None:
        self.host = host
        self.nxdomain = False
        self.failures: list[str] = []

    def note(self, answers: Sequence[RecordSet]) -> None:
        for answer in answers:
            if answer.status == FAILED and answer.reason not in self.failures:
                self.failures.append(answer.reason)
            elif answer.status == NXDOMAIN:
                self.nxdomain = True

    def result(self, targets: list[Target]) -> list[Target]:
        if targets:
            return targets
        if self.failures:
            raise ResolveError(f"cannot resolve {self.host}: {'; '.join(self.failures)}")
        if self.nxdomain:
            raise ResolveError(f"cannot resolve {self.host}: no such domain")
        raise ResolveError(f"cannot resolve {self.host}: no address records")


def _chosen_transport(uri: SipURI, protos: frozenset[str]) -> str | None:
    """The transport the URI names (`transport=`; a sips URI's tcp means TLS, RFC 3261 26.2.2), None
    when it names none. ResolveError when we cannot send over it."""
    proto = uri.transport
    sips = uri.scheme == "sips"
    if proto is None:
        if sips and "tls" not in protos:
            raise ResolveError(f"{uri.host}: a sips URI needs TLS and no tls socket is listening")
        return None
    if proto not in _KNOWN_TRANSPORTS:
        raise ResolveError(f"{uri.host}: unknown transport={proto}")
    if sips:
        if proto in ("udp", "sctp", "ws"):
            raise ResolveError(f"{uri.host}: a sips URI cannot be sent over transport={proto}")
        proto = "tls" if proto == "tcp" else proto
    if proto not in protos:
        raise ResolveError(f"{uri.host}: transport={proto} but no {proto} socket is listening")
    return proto


def _default_transport(uri: SipURI, protos: frozenset[str]) -> str:
    """4.1's last step: UDP for sip, TLS for sips. Choice: when we do not listen on UDP, TCP (then TLS),
    since we could not send UDP at all."""
    for proto in (("tls",) if uri.scheme == "sips" else ("udp", "tcp", "tls")):
        if proto in protos:
            return proto
    raise ResolveError(f"{uri.host}: no socket to send a {uri.scheme} request over")


def _srv_transports(uri: SipURI, protos: frozenset[str]) -> list[str]:
    """4.1 without NAPTR: an SRV query for each transport we listen on (_sips._tcp only for sips)."""
    if uri.scheme == "sips":
        return ["tls"] if "tls" in protos else []
    return [p for p in ("udp", "tcp", "tls") if p in protos]


def _dns_name(host: str) -> str:
    """The name as a DNS query takes it: no IPv6 brackets, lower-case, no final dot."""
    name = bare_host(host).lower()
    return name[:-1] if name.endswith(".") and len(name) > 1 else name
