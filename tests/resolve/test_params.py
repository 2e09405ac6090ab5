"""The DNS core parameters: what each changes in the resolver, and the values we refuse at load."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from routescript.core.config import apply_globals, parse_nameservers
from routescript.core.module import ConfigError
from routescript.core.server import LoadError, Server
from routescript.resolve import Target
from routescript.resolve.lookup import DnsLookup
from routescript.resolve.resolver import DnsResolver
from routescript.sip.uri import parse_uri
from routescript.testing.dns_server import DnsTestServer

P = ("d.cfg", 4, 1)


def test_defaults_follow_opensips() -> None:
    cfg, warnings = apply_globals([])
    settings = cfg.dns_settings()
    assert warnings == []
    assert settings.policy.try_naptr is True and settings.policy.try_ipv6 is False
    assert settings.failover is True
    assert settings.lookup.use_search_list is True
    assert settings.lookup.retry_time is None and settings.lookup.retries is None
    assert settings.lookup.servers_no is None and settings.lookup.nameservers == ()
    assert settings.hosts_file == "/etc/hosts"


def test_every_dns_parameter_maps_without_a_warning() -> None:
    cfg, warnings = apply_globals([
        ("dns", "no", P), ("rev_dns", "no", P), ("dns_try_ipv6", "yes", P), ("dns_try_naptr", "no", P),
        ("dns_retr_time", 3, P), ("dns_retr_no", 4, P), ("dns_servers_no", 1, P),
        ("dns_use_search_list", "no", P), ("disable_dns_failover", "yes", P),
        ("disable_dns_blacklist", "yes", P),
        ("dns_nameservers", "127.0.0.1:5353, [::1]:5354 10.0.0.1", P), ("dns_hosts_file", "/tmp/h", P)])
    assert warnings == []
    settings = cfg.dns_settings()
    assert settings.policy.try_ipv6 is True and settings.policy.try_naptr is False
    assert settings.failover is False
    assert settings.hosts_file == "/tmp/h"
    lookup = settings.lookup
    assert (lookup.retry_time, lookup.retries, lookup.servers_no, lookup.use_search_list) == (3, 4, 1, False)
    assert lookup.nameservers == (("127.0.0.1", 5353), ("::1", 5354), ("10.0.0.1", 53))
    # what dnspython is told: one server (dns_servers_no), 3 s a try, 4 tries
    dns = DnsLookup(lookup)
    assert dns.nameservers == [("127.0.0.1", 5353)]
    assert (dns.timeout, dns.lifetime) == (3, 12)
    assert DnsResolver(settings).settings is settings


@pytest.mark.parametrize(("name", "value", "needle"), [
    ("dns", "yes", "dns = yes"),
    ("rev_dns", 1, "rev_dns = yes"),
    ("disable_dns_blacklist", "no", "no DNS blacklist"),
])
def test_values_we_do_not_implement_are_refused(name: str, value: object, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_globals([(name, value, P)])
    assert needle in str(info.value) and "not supported" in str(info.value)
    assert info.value.pos == P


@pytest.mark.parametrize(("name", "value"),
                         [("dns_retr_time", 0), ("dns_retr_no", -1), ("dns_servers_no", 0)])
def test_counts_must_be_positive(name: str, value: int) -> None:
    with pytest.raises(ConfigError, match=f"'{name}' must be at least 1"):
        apply_globals([(name, value, P)])


@pytest.mark.parametrize("text", ["dns.example.com", "127.0.0.1:x", "127.0.0.1:70000", "[::1]x"])
def test_bad_nameservers_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_nameservers(text)
    with pytest.raises(ConfigError, match="dns_nameservers"):
        apply_globals([("dns_nameservers", text, P)])


def test_resolv_conf_timeout_and_attempts_are_the_defaults(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\nnameserver 127.0.0.2\noptions timeout:1 attempts:3\n")
    cfg, _ = apply_globals([])
    dns = DnsLookup(replace(cfg.dns_settings().lookup, resolv_conf=str(conf)))
    assert dns.nameservers == [("127.0.0.1", 53), ("127.0.0.2", 53)]
    assert (dns.timeout, dns.lifetime) == (1, 3)


def test_a_refused_dns_value_is_a_load_error_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "dns.cfg"
    path.write_text('log_level = 3\ndns_try_naptr = no\nrev_dns = yes\nroute { exit; }\n')
    with pytest.raises(LoadError) as info:
        Server().load(str(path))
    first = str(info.value.diagnostics[0]).splitlines()[0]
    assert first.startswith(f"{path}:3:") and "rev_dns = yes" in first


async def test_dns_nameservers_and_hosts_file_reach_the_resolver(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.3.3 gw.lan\n")
    async with DnsTestServer() as server:
        server.add("pbx.test", "A", "127.0.0.7")
        cfg, _ = apply_globals([("dns_nameservers", f"127.0.0.1:{server.port}", P),
                                ("dns_hosts_file", str(hosts), P), ("dns_try_naptr", "no", P)])
        resolver = DnsResolver(cfg.dns_settings())
        protos = frozenset({"udp"})
        assert await resolver.resolve(parse_uri("sip:pbx.test"), protos) == [Target("udp", "127.0.0.7", 5060)]
        assert server.queries == [("_sip._udp.pbx.test", "SRV"), ("pbx.test", "A")]
        assert resolver.resolve_now(parse_uri("sip:gw.lan"), protos) == [Target("udp", "127.0.3.3", 5060)]


async def test_exec_dns_threshold_logs_slow_queries(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="exec_dns_threshold"):
        apply_globals([("exec_dns_threshold", -5, P)])
    async with DnsTestServer() as server:
        server.add("pbx.test", "A", "127.0.0.7")
        cfg, _ = apply_globals([("dns_nameservers", f"127.0.0.1:{server.port}", P),
                                ("exec_dns_threshold", 1, P), ("dns_hosts_file", str(tmp_path / "h"), P)])
        assert cfg.dns_settings().lookup.slow_query_us == 1
        with caplog.at_level("WARNING", logger="routescript.resolve"):
            await DnsResolver(cfg.dns_settings()).resolve(parse_uri("sip:pbx.test:5060"), frozenset({"udp"}))
        assert any("slow DNS query: A pbx.test took" in r.getMessage() for r in caplog.records)
        caplog.clear()
        quiet, _ = apply_globals([("dns_nameservers", f"127.0.0.1:{server.port}", P),
                                  ("dns_hosts_file", str(tmp_path / "h"), P)])
        with caplog.at_level("WARNING", logger="routescript.resolve"):
            await DnsResolver(quiet.dns_settings()).resolve(parse_uri("sip:pbx.test:5060"),
                                                            frozenset({"udp"}))
        assert not caplog.records
