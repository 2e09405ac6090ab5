"""DnsResolver against a DNS server on loopback (routescript.testing.dns_server): lookups, the hosts
file, the TTL cache that lets resolve_now answer without awaiting, bounded timeouts."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import dns.exception
import pytest

from routescript.resolve import ResolveError, Target
from routescript.resolve.lookup import FAILURE_TTL, LookupSettings
from routescript.resolve.resolver import DnsResolver, DnsSettings
from routescript.resolve.rfc3263 import Policy
from routescript.sip.uri import parse_uri
from routescript.testing.dns_server import DnsTestServer

UDP_TCP = frozenset({"udp", "tcp"})
DEFAULT_POLICY = Policy()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsTestServer]:
    async with DnsTestServer() as server:
        server.add("example.test", "NAPTR", '10 50 "s" "SIP+D2T" "" _sip._tcp.example.test.')
        server.add("example.test", "NAPTR", '20 50 "s" "SIP+D2U" "" _sip._udp.example.test.')
        server.add("_sip._tcp.example.test", "SRV", "0 0 5070 a.example.test.", ttl=60)
        server.add("_sip._udp.example.test", "SRV", "0 0 5071 b.example.test.", ttl=60)
        server.add("a.example.test", "A", "127.0.0.2", ttl=60)
        server.add("b.example.test", "A", "127.0.0.3", ttl=60)
        server.add("plain.test", "A", "127.0.0.4", ttl=60)
        yield server


def make_resolver(server: DnsTestServer, tmp_path: Path, clock: FakeClock | None = None, *,
                  hosts: str = "", policy: Policy = DEFAULT_POLICY, failover: bool = True,
                  retry_time: float | None = None, retries: int | None = None) -> DnsResolver:
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text(hosts)
    settings = DnsSettings(policy=policy, failover=failover, hosts_file=str(hosts_file),
                           lookup=LookupSettings(nameservers=(("127.0.0.1", server.port),),
                                                 retry_time=retry_time, retries=retries))
    return DnsResolver(settings, clock=clock or FakeClock(), rng=random.Random(3))


async def test_naptr_srv_a_chain(dns_server: DnsTestServer, tmp_path: Path) -> None:
    resolver = make_resolver(dns_server, tmp_path)
    uri = parse_uri("sip:bob@example.test")
    assert resolver.resolve_now(uri, UDP_TCP) is None            # nothing cached yet
    assert await resolver.resolve(uri, UDP_TCP) == [Target("tcp", "127.0.0.2", 5070),
                                                   Target("udp", "127.0.0.3", 5071)]
    assert dns_server.queries == [("example.test", "NAPTR"), ("_sip._tcp.example.test", "SRV"),
                                  ("_sip._udp.example.test", "SRV"), ("a.example.test", "A"),
                                  ("b.example.test", "A")]
    # only udp listened on: the tcp NAPTR is skipped
    assert await resolver.resolve(uri, frozenset({"udp"})) == [Target("udp", "127.0.0.3", 5071)]


async def test_cache_answers_resolve_now_until_the_ttl_runs_out(dns_server: DnsTestServer,
                                                                tmp_path: Path) -> None:
    clock = FakeClock()
    resolver = make_resolver(dns_server, tmp_path, clock)
    uri = parse_uri("sip:example.test")
    first = await resolver.resolve(uri, UDP_TCP)
    asked = len(dns_server.queries)
    assert resolver.resolve_now(uri, UDP_TCP) == first           # no await, no query
    assert await resolver.resolve(uri, UDP_TCP) == first
    assert len(dns_server.queries) == asked
    clock.now += 61                                              # SRV and A records (TTL 60) expire;
    assert resolver.resolve_now(uri, UDP_TCP) is None            # the NAPTR (300) is still kept
    await resolver.resolve(uri, UDP_TCP)
    assert ("example.test", "NAPTR") not in dns_server.queries[asked:]
    assert ("a.example.test", "A") in dns_server.queries[asked:]


async def test_negative_answers_are_cached_for_the_soa_minimum(tmp_path: Path) -> None:
    clock = FakeClock()
    async with DnsTestServer(negative_ttl=10) as server:
        resolver = make_resolver(server, tmp_path, clock)
        uri = parse_uri("sip:missing.test")
        with pytest.raises(ResolveError, match="no such domain"):
            await resolver.resolve(uri, UDP_TCP)
        assert server.queries == [("missing.test", "NAPTR")]
        with pytest.raises(ResolveError, match="no such domain"):
            resolver.resolve_now(uri, UDP_TCP)                   # answered from the negative cache
        clock.now += 11
        assert resolver.resolve_now(uri, UDP_TCP) is None
        server.add("missing.test", "A", "127.0.0.9")
        assert await resolver.resolve(uri, UDP_TCP) == [Target("udp", "127.0.0.9", 5060)]


async def test_no_naptr_and_no_srv_fall_back_to_a(dns_server: DnsTestServer, tmp_path: Path) -> None:
    resolver = make_resolver(dns_server, tmp_path)
    assert await resolver.resolve(parse_uri("sip:plain.test"), UDP_TCP) == [Target("udp", "127.0.0.4", 5060)]
    assert dns_server.queries == [("plain.test", "NAPTR"), ("_sip._udp.plain.test", "SRV"),
                                  ("_sip._tcp.plain.test", "SRV"), ("plain.test", "A")]


async def test_srv_without_naptr(dns_server: DnsTestServer, tmp_path: Path) -> None:
    dns_server.add("srvonly.test", "A", "127.0.0.8")          # the name exists, without NAPTR
    dns_server.add("_sip._udp.srvonly.test", "SRV", "10 0 5090 b.example.test.")
    dns_server.add("_sip._udp.srvonly.test", "SRV", "5 0 5091 a.example.test.")
    resolver = make_resolver(dns_server, tmp_path)
    assert await resolver.resolve(parse_uri("sip:srvonly.test"), UDP_TCP) == [
        Target("udp", "127.0.0.2", 5091), Target("udp", "127.0.0.3", 5090)]


async def test_explicit_port_and_transport_param(dns_server: DnsTestServer, tmp_path: Path) -> None:
    resolver = make_resolver(dns_server, tmp_path)
    # a port: no NAPTR, no SRV - example.test has those but no A record
    with pytest.raises(ResolveError, match="no address records"):
        await resolver.resolve(parse_uri("sip:example.test:5999"), UDP_TCP)
    assert dns_server.queries == [("example.test", "A")]
    dns_server.queries.clear()
    assert await resolver.resolve(parse_uri("sip:a.example.test:5999;transport=tcp"), UDP_TCP) == [
        Target("tcp", "127.0.0.2", 5999)]
    assert dns_server.queries == [("a.example.test", "A")]
    dns_server.queries.clear()
    assert await resolver.resolve(parse_uri("sip:example.test;transport=udp"), UDP_TCP) == [
        Target("udp", "127.0.0.3", 5071)]
    assert dns_server.queries[0] == ("_sip._udp.example.test", "SRV")


async def test_sips_needs_tls(dns_server: DnsTestServer, tmp_path: Path) -> None:
    resolver = make_resolver(dns_server, tmp_path)
    with pytest.raises(ResolveError, match="needs TLS"):
        await resolver.resolve(parse_uri("sips:example.test"), UDP_TCP)
    dns_server.add("_sips._tcp.example.test", "SRV", "0 0 5061 a.example.test.")
    assert await resolver.resolve(parse_uri("sips:example.test"), frozenset({"udp", "tls"})) == [
        Target("tls", "127.0.0.2", 5061)]
    assert dns_server.queries == [("example.test", "NAPTR"), ("_sips._tcp.example.test", "SRV"),
                                  ("a.example.test", "A")]


async def test_ip_literal_resolves_now_without_a_query(dns_server: DnsTestServer, tmp_path: Path) -> None:
    resolver = make_resolver(dns_server, tmp_path)
    assert resolver.resolve_now(parse_uri("sip:127.0.0.5:5070"), UDP_TCP) == [
        Target("udp", "127.0.0.5", 5070)]
    assert resolver.resolve_now(parse_uri("sip:[::1];transport=tcp"), UDP_TCP) == [Target("tcp", "::1", 5060)]
    assert await resolver.resolve(parse_uri("sip:127.0.0.5"), UDP_TCP) == [Target("udp", "127.0.0.5", 5060)]
    assert dns_server.queries == []


async def test_hosts_file_answers_without_dns_and_is_reread(dns_server: DnsTestServer,
                                                              tmp_path: Path) -> None:
    clock = FakeClock()
    hosts = "# comment\n127.0.0.1 localhost\n::1 localhost\n127.0.1.7 pbx.lan pbx # x\n"
    resolver = make_resolver(dns_server, tmp_path, clock, hosts=hosts)
    assert resolver.resolve_now(parse_uri("sip:pbx.lan"), UDP_TCP) == [Target("udp", "127.0.1.7", 5060)]
    assert resolver.resolve_now(parse_uri("sip:PBX:5070;transport=tcp"), UDP_TCP) == [
        Target("tcp", "127.0.1.7", 5070)]
    assert await resolver.resolve(parse_uri("sip:localhost"), UDP_TCP) == [Target("udp", "127.0.0.1", 5060)]
    assert dns_server.queries == []
    (tmp_path / "hosts").write_text("127.0.2.2 pbx.lan\n")
    clock.now += 10                                              # past the recheck interval
    assert resolver.resolve_now(parse_uri("sip:pbx.lan"), UDP_TCP) == [Target("udp", "127.0.2.2", 5060)]


async def test_nxdomain_is_a_resolve_error(dns_server: DnsTestServer, tmp_path: Path) -> None:
    resolver = make_resolver(dns_server, tmp_path)
    with pytest.raises(ResolveError, match=r"cannot resolve nowhere\.test: no such domain"):
        await resolver.resolve(parse_uri("sip:nowhere.test:5060"), UDP_TCP)


async def test_timeout_is_bounded_and_the_failure_kept_briefly(tmp_path: Path) -> None:
    clock = FakeClock()
    async with DnsTestServer() as server:
        server.silent = True
        resolver = make_resolver(server, tmp_path, clock, retry_time=0.2, retries=2)
        started = time.monotonic()
        with pytest.raises(ResolveError, match=r"timed out after 0\.4s"):
            await resolver.resolve(parse_uri("sip:slow.test:5060"), UDP_TCP)
        assert time.monotonic() - started < 1.5
        assert len(server.queries) >= 2                          # retried
        with pytest.raises(ResolveError, match="timed out"):
            resolver.resolve_now(parse_uri("sip:slow.test:5060"), UDP_TCP)   # failure kept, no new wait
        clock.now += FAILURE_TTL + 1
        assert resolver.resolve_now(parse_uri("sip:slow.test:5060"), UDP_TCP) is None


async def test_unreachable_server_does_not_block_the_loop(tmp_path: Path) -> None:
    # a port nothing listens on: the lookup fails within its bound while other tasks keep running
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = DnsSettings(hosts_file=str(tmp_path / "none"),
                           lookup=LookupSettings(nameservers=(("127.0.0.1", port),), retry_time=0.3,
                                                 retries=1))
    resolver = DnsResolver(settings)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        with pytest.raises(ResolveError):
            await resolver.resolve(parse_uri("sip:x.test:5060"), UDP_TCP)
    finally:
        task.cancel()
    assert ticks > 5


async def test_concurrent_resolutions_share_one_lookup(dns_server: DnsTestServer, tmp_path: Path) -> None:
    resolver = make_resolver(dns_server, tmp_path)
    uri = parse_uri("sip:plain.test:5060")
    results = await asyncio.gather(*(resolver.resolve(uri, UDP_TCP) for _ in range(5)))
    assert results == [[Target("udp", "127.0.0.4", 5060)]] * 5
    assert dns_server.queries == [("plain.test", "A")]


async def test_disable_dns_failover_keeps_the_first_target(dns_server: DnsTestServer,
                                                           tmp_path: Path) -> None:
    resolver = make_resolver(dns_server, tmp_path, failover=False)
    assert await resolver.resolve(parse_uri("sip:example.test"), UDP_TCP) == [
        Target("tcp", "127.0.0.2", 5070)]


async def test_dns_try_naptr_off_and_ipv6(dns_server: DnsTestServer, tmp_path: Path) -> None:
    dns_server.add("a.example.test", "AAAA", "::1")
    resolver = make_resolver(dns_server, tmp_path, policy=Policy(try_naptr=False, try_ipv6=True))
    assert await resolver.resolve(parse_uri("sip:example.test"), UDP_TCP) == [
        Target("udp", "127.0.0.3", 5071), Target("tcp", "::1", 5070), Target("tcp", "127.0.0.2", 5070)]
    assert ("example.test", "NAPTR") not in dns_server.queries


async def test_srv_weights_spread_the_first_target(tmp_path: Path) -> None:
    async with DnsTestServer() as server:
        server.add("_sip._udp.w.test", "SRV", "0 90 5060 a.w.test.")
        server.add("_sip._udp.w.test", "SRV", "0 10 5060 b.w.test.")
        server.add("_sip._udp.w.test", "SRV", "1 50 5060 c.w.test.")
        for name, address in (("a", "127.0.0.1"), ("b", "127.0.0.2"), ("c", "127.0.0.3")):
            server.add(f"{name}.w.test", "A", address)
        resolver = make_resolver(server, tmp_path, policy=Policy(try_naptr=False))
        uri = parse_uri("sip:w.test")
        await resolver.resolve(uri, frozenset({"udp"}))
        firsts = []
        for _ in range(400):
            targets = resolver.resolve_now(uri, frozenset({"udp"}))
            assert targets is not None and targets[2] == Target("udp", "127.0.0.3", 5060)
            firsts.append(targets[0].host)
        assert 300 < firsts.count("127.0.0.1") < 395


def test_dns_test_server_refuses_a_bad_record() -> None:
    with pytest.raises(dns.exception.SyntaxError):
        DnsTestServer().add("x.test", "SRV", "not a srv record")


async def test_a_cancelled_resolution_does_not_hang_the_one_sharing_its_lookup(tmp_path: Path) -> None:
    async with DnsTestServer() as server:
        server.silent = True
        resolver = make_resolver(server, tmp_path, retry_time=5, retries=1)
        uri = parse_uri("sip:slow.test:5060")
        owner = asyncio.create_task(resolver.resolve(uri, UDP_TCP))
        await asyncio.sleep(0.05)
        sharer = asyncio.create_task(resolver.resolve(uri, UDP_TCP))
        await asyncio.sleep(0.05)
        owner.cancel()
        with pytest.raises(ResolveError, match="cancelled"):
            await asyncio.wait_for(sharer, 2)
        with pytest.raises(asyncio.CancelledError):
            await owner
        assert len(resolver.cache) == 0                      # nothing cached from it


async def test_no_resolv_conf_leaves_hosts_and_literals_working(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """No resolv.conf (a chroot without one): said once, as a warning naming the file; names in the hosts
    file and IP literals still resolve, DNS names fail at once."""
    (tmp_path / "hosts").write_text("127.0.0.6 gw.lan\n")
    settings = DnsSettings(hosts_file=str(tmp_path / "hosts"),
                           lookup=LookupSettings(resolv_conf=str(tmp_path / "no-resolv.conf")))
    with caplog.at_level(logging.WARNING, "routescript.resolve"):
        resolver = DnsResolver(settings)
    assert [r.getMessage()[:len("no DNS servers: /x")] for r in caplog.records] == ["no DNS servers: /t"]
    assert f"{tmp_path / 'no-resolv.conf'} gives none (no such file)" in caplog.text
    assert await resolver.resolve(parse_uri("sip:gw.lan"), UDP_TCP) == [Target("udp", "127.0.0.6", 5060)]
    assert resolver.resolve_now(parse_uri("sip:127.0.0.1"), UDP_TCP) == [Target("udp", "127.0.0.1", 5060)]
    with pytest.raises(ResolveError, match="no DNS servers configured"):
        await resolver.resolve(parse_uri("sip:example.test"), UDP_TCP)
