"""The one place that talks DNS: dnspython's asyncio stub resolver, its answers turned into RecordSets.

Why dnspython (not aiodns): pure Python with typed (py.typed) answers for every record type we read
(NAPTR, SRV, A, AAAA), an asyncio resolver that runs on uvloop, per-query timeout and lifetime bounds,
nameservers with ports (the tests' server on loopback), and a message API the tests' DNS server is built
on, so one library serves both; aiodns needs pycares, a C extension, for no gain at our query rates.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.rdtypes.IN.NAPTR
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.resolver

from .records import FAILED, NODATA, NXDOMAIN, OK, Naptr, Query, RecordSet, Srv

__all__ = ["DnsLookup", "LookupSettings", "NEGATIVE_TTL", "FAILURE_TTL"]

log = logging.getLogger("routescript.resolve")

# RFC 2308 5: a negative answer is kept for the SOA's minimum (capped by the SOA's own TTL); without a
# SOA in the answer, for NEGATIVE_TTL seconds (our choice).
NEGATIVE_TTL = 30.0
# RFC 2308 7.1 allows keeping a server failure up to 5 minutes; we keep it FAILURE_TTL seconds so that
# a dead DNS server costs one timeout per name every few seconds, not one per request.
FAILURE_TTL = 5.0
# Longest we keep any answer (a mistyped TTL of years must not pin a record).
MAX_TTL = 86_400.0


@dataclass(frozen=True, slots=True)
class LookupSettings:
    """How to ask DNS. None means "as /etc/resolv.conf says" (its `timeout:`/`attempts:` options, else
    2 s and 2 tries). `nameservers` (ours) replaces resolv.conf's servers: ("127.0.0.1", 5353), ..."""

    retry_time: float | None = None      # dns_retr_time: seconds one try waits for its answer
    retries: int | None = None           # dns_retr_no: tries per query, over the servers in turn
    servers_no: int | None = None        # dns_servers_no: how many of the servers to use
    use_search_list: bool = True         # dns_use_search_list: resolv.conf's search/domain lines
    nameservers: tuple[tuple[str, int], ...] = ()
    resolv_conf: str = "/etc/resolv.conf"
    slow_query_us: int = 0               # exec_dns_threshold: log a warning for a query slower (0: never)


def _resolv_conf_attempts(path: str) -> int | None:
    """resolv.conf's `options attempts:N` (dnspython reads `timeout:` but not this one)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(65536)
    except OSError:
        return None
    attempts = None
    for line in text.splitlines():
        fields = line.split()
        if fields[:1] == ["options"]:
            for option in fields[1:]:
                if option.startswith("attempts:") and option[9:].isdigit():
                    attempts = max(1, int(option[9:]))
    return attempts


def _why(exc: Exception, path: str) -> str:
    """Why `path` gave no server: dnspython says NoResolverConfiguration for a missing file too."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if not os.path.exists(path):
        return "no such file"
    return "unreadable, or no nameserver line"


class DnsLookup:
    """`await query(Query)` -> RecordSet, never an exception: a failure is a FAILED RecordSet whose
    reason says what happened. Each query is bounded by retry_time x retries seconds."""

    __slots__ = ("_resolver", "_search", "_slow_s", "timeout", "lifetime")

    def __init__(self, settings: LookupSettings) -> None:
        resolver = dns.asyncresolver.Resolver(configure=False)
        if not settings.nameservers:
            try:
                resolver.read_resolv_conf(settings.resolv_conf)
            except (dns.resolver.NoResolverConfiguration, OSError) as exc:
                resolver.nameservers = []        # every query then fails with "no DNS servers"
                # said once per process: in a chroot, /etc/resolv.conf must be copied inside it
                log.warning("no DNS servers: %s gives none (%s); only IP addresses and the hosts file's "
                            "names resolve (set dns_nameservers, or in a chroot copy the file inside it: "
                            "docs/dns.md)", settings.resolv_conf, _why(exc, settings.resolv_conf))
        else:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                                    for host, port in settings.nameservers]
        if settings.servers_no is not None:
            resolver.nameservers = list(resolver.nameservers)[:settings.servers_no]
        attempts = settings.retries or _resolv_conf_attempts(settings.resolv_conf) or 2
        resolver.timeout = settings.retry_time if settings.retry_time is not None else resolver.timeout
        resolver.lifetime = resolver.timeout * attempts
        resolver.use_search_by_default = settings.use_search_list
        self._resolver = resolver
        self._search = settings.use_search_list
        self._slow_s = settings.slow_query_us / 1e6
        self.timeout = resolver.timeout
        self.lifetime = resolver.lifetime

    @property
    def nameservers(self) -> list[tuple[str, int]]:
        """(address, port) of the servers asked, in order."""
        return [(ns, 53) if isinstance(ns, str) else (ns.address, ns.port)  # type: ignore[attr-defined]
                for ns in self._resolver.nameservers]

    async def query(self, query: Query) -> RecordSet:
        if not self._resolver.nameservers:
            return RecordSet(FAILED, ttl=FAILURE_TTL, reason="no DNS servers configured")
        if not self._slow_s:
            return await self._ask(query)
        started = time.monotonic()
        answer = await self._ask(query)
        took = time.monotonic() - started
        if took > self._slow_s:
            log.warning("slow DNS query: %s %s took %d us (exec_dns_threshold %d us)", query.rdtype,
                        query.name, took * 1e6, self._slow_s * 1e6)
        return answer

    async def _ask(self, query: Query) -> RecordSet:
        rdtype = dns.rdatatype.from_text(query.rdtype)
        try:
            qname = dns.name.from_text(query.name, origin=None)
            answer = await self._resolver.resolve(qname, rdtype, raise_on_no_answer=False,
                                                  search=self._search)
        except dns.resolver.NXDOMAIN as exc:
            responses: dict[dns.name.Name, dns.message.Message] = exc.responses()  # type: ignore[no-untyped-call]
            return RecordSet(NXDOMAIN, ttl=_negative_ttl(responses.values()))
        except dns.resolver.LifetimeTimeout:
            return RecordSet(FAILED, ttl=FAILURE_TTL,
                             reason=f"{query.rdtype} lookup of {query.name} timed out after "
                                    f"{self.lifetime:g}s")
        except dns.exception.DNSException as exc:   # SERVFAIL/REFUSED from every server, a bad name
            return RecordSet(FAILED, ttl=FAILURE_TTL,
                             reason=f"{query.rdtype} lookup of {query.name} failed: {exc}")
        if answer.rrset is None:
            return RecordSet(NODATA, ttl=_negative_ttl([answer.response]))
        ttl = min(max(0.0, answer.expiration - time.time()), MAX_TTL)
        return RecordSet(OK, tuple(_record(rd) for rd in answer.rrset), ttl)


def _record(rd: dns.rdata.Rdata) -> Naptr | Srv | str:
    """One rdata as our value type."""
    if isinstance(rd, dns.rdtypes.IN.NAPTR.NAPTR):
        return Naptr(rd.order, rd.preference, rd.flags.decode("ascii", "replace"),
                     rd.service.decode("ascii", "replace"), rd.regexp.decode("ascii", "replace"),
                     rd.replacement.to_text(omit_final_dot=True))
    if isinstance(rd, dns.rdtypes.IN.SRV.SRV):
        return Srv(rd.priority, rd.weight, rd.port, rd.target.to_text(omit_final_dot=True))
    if isinstance(rd, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
        return str(rd.address)
    return rd.to_text()       # never asked for: we query NAPTR, SRV, A and AAAA only


def _negative_ttl(responses: Iterable[dns.message.Message]) -> float:
    """RFC 2308 5: min(SOA TTL, SOA MINIMUM) of the authority section, else NEGATIVE_TTL."""
    ttls: list[float] = []
    for response in responses:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA:
                ttls.extend(min(rrset.ttl, rd.minimum) for rd in rrset)
    return float(min(ttls)) if ttls else NEGATIVE_TTL
