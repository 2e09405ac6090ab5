"""DnsResolver: the Resolver (routescript.resolve) the senders use - RFC 3263 over DNS, /etc/hosts and a
TTL cache. One per process (each worker has its own cache).

    resolver = DnsResolver(server.config.dns_settings())
    targets = resolver.resolve_now(uri, protos)        # IP literal, hosts file or cached answers
    if targets is None:
        targets = await resolver.resolve(uri, protos)   # asks DNS; ResolveError when nothing is found

The list is the failover order: try targets[0], and on a timeout or 503 the next one (RFC 3263 4.3).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from routescript.sip.uri import SipURI

from . import ResolveError, Resolver, Target
from .cache import RecordCache
from .hosts_file import HostsFile
from .lookup import DnsLookup, LookupSettings
from .records import Query, RecordSet
from .rfc3263 import Plan, Policy, literal_targets, plan

__all__ = ["DnsResolver", "DnsSettings"]

log = logging.getLogger("routescript.resolve")


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """The resolver's settings, from the core parameters (CoreConfig.dns_settings()):
    dns_try_naptr, dns_try_ipv6, disable_dns_failover, and how to ask DNS (LookupSettings: dns_retr_time,
    dns_retr_no, dns_servers_no, dns_use_search_list, ours dns_nameservers); ours dns_hosts_file."""

    policy: Policy = field(default_factory=Policy)
    failover: bool = True                 # False (disable_dns_failover = yes): only the first target
    lookup: LookupSettings = field(default_factory=LookupSettings)
    hosts_file: str = "/etc/hosts"
    max_cache_entries: int = 10_000


class DnsResolver:
    """RFC 3263 resolution (rfc3263.plan) driven from the cache or from DNS."""

    __slots__ = ("settings", "cache", "hosts", "_lookup", "_clock", "_rng", "_inflight")

    def __init__(self, settings: DnsSettings | None = None, *, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.settings = settings = settings or DnsSettings()
        self.cache = RecordCache(settings.max_cache_entries)
        self.hosts = HostsFile(settings.hosts_file)
        self._lookup = DnsLookup(settings.lookup)
        self._clock = clock
        self._rng = rng or random.Random()
        # one lookup per (name, type) at a time: requests that need it meanwhile await the same one
        self._inflight: dict[Query, asyncio.Future[RecordSet]] = {}

    def resolve_now(self, uri: SipURI, protos: frozenset[str]) -> list[Target] | None:
        direct = literal_targets(uri, protos)
        if direct is not None:
            return direct
        steps = self._plan(uri, protos)
        now = self._clock()
        try:
            queries = next(steps)
            while True:
                answers = self.cache.get_all(queries, now)
                if answers is None:
                    steps.close()
                    return None
                queries = steps.send(answers)
        except StopIteration as done:
            return self._chosen(done.value)

    async def resolve(self, uri: SipURI, protos: frozenset[str]) -> list[Target]:
        direct = literal_targets(uri, protos)
        if direct is not None:
            return direct
        steps = self._plan(uri, protos)
        try:
            queries = next(steps)
            while True:
                queries = steps.send(await self._answers(queries))
        except StopIteration as done:
            targets = self._chosen(done.value)
        log.debug("resolved %s: %s", uri, ", ".join(f"{t.proto}:{t.host}:{t.port}" for t in targets))
        return targets

    def _plan(self, uri: SipURI, protos: frozenset[str]) -> Plan:
        if not uri.host or uri.scheme not in ("sip", "sips"):
            raise ResolveError(f"cannot resolve {uri}: not a sip or sips URI with a host")
        now = self._clock()
        return plan(uri, protos, self.settings.policy, lambda name: self.hosts.lookup(name, now), self._rng)

    def _chosen(self, targets: list[Target]) -> list[Target]:
        return targets if self.settings.failover else targets[:1]

    async def _answers(self, queries: Sequence[Query]) -> list[RecordSet]:
        """The answers to a batch of queries: cached ones at once, the others asked together."""
        now = self._clock()
        answers: list[RecordSet | None] = [self.cache.get(q, now) for q in queries]
        missing = [i for i, a in enumerate(answers) if a is None]
        if missing:
            fetched = await asyncio.gather(*(self._ask(queries[i]) for i in missing))
            for i, answer in zip(missing, fetched, strict=True):
                answers[i] = answer
        return [a for a in answers if a is not None]

    async def _ask(self, query: Query) -> RecordSet:
        pending = self._inflight.get(query)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[RecordSet] = asyncio.get_running_loop().create_future()
        self._inflight[query] = future
        try:
            answer = await self._lookup.query(query)
            self.cache.put(query, answer, self._clock())
            future.set_result(answer)
            return answer
        except BaseException as exc:           # cancelled: the waiters must not hang
            future.set_exception(exc if isinstance(exc, Exception) else ResolveError("lookup cancelled"))
            future.exception()                  # retrieved: no "never retrieved" warning when none waits
            raise
        finally:
            del self._inflight[query]


def _conforms(resolver: DnsResolver) -> Resolver:
    """mypy checks here that DnsResolver is a Resolver (the protocol the senders are typed against)."""
    return resolver
