"""The RFC 3263 procedure without a network: rfc3263.plan driven from a table of answers."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping

import pytest

from routescript.resolve import ResolveError, Target
from routescript.resolve.records import FAILED, NODATA, NXDOMAIN, OK, Naptr, Query, RecordSet, Srv
from routescript.resolve.rfc3263 import Policy, literal_targets, order_srv, plan, usable_naptr
from routescript.sip.uri import parse_uri

UDP_TCP = frozenset({"udp", "tcp"})
ALL = frozenset({"udp", "tcp", "tls"})
DEFAULT_POLICY = Policy()

Table = Mapping[Query, RecordSet]


def drive(uri: str, table: Table, protos: frozenset[str] = UDP_TCP, policy: Policy = DEFAULT_POLICY,
          hosts: Mapping[str, tuple[str, ...]] | None = None, seed: int = 1,
          asked: list[Query] | None = None) -> list[Target]:
    """Run the procedure, answering each query from `table` (absent: NODATA)."""
    steps = plan(parse_uri(uri), protos, policy, (hosts or {}).get, random.Random(seed))
    try:
        queries = next(steps)
        while True:
            if asked is not None:
                asked.extend(queries)
            queries = steps.send([table.get(q, RecordSet(NODATA)) for q in queries])
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def ok(*items: Naptr | Srv | str) -> RecordSet:
    return RecordSet(OK, items, 60)


def naptr(order: int, pref: int, service: str, replacement: str, flags: str = "s") -> Naptr:
    return Naptr(order, pref, flags, service, "", replacement)


BASE: dict[Query, RecordSet] = {
    Query("a.test", "A"): ok("10.0.0.1"),
    Query("b.test", "A"): ok("10.0.0.2", "10.0.0.3"),
    Query("c.test", "A"): ok("10.0.0.4"),
}


def test_naptr_then_srv_then_a_in_naptr_order() -> None:
    table = {**BASE,
             Query("example.test", "NAPTR"): ok(naptr(20, 10, "SIP+D2U", "_sip._udp.example.test"),
                                                naptr(10, 10, "SIP+D2T", "_sip._tcp.example.test")),
             Query("_sip._tcp.example.test", "SRV"): ok(Srv(0, 0, 5070, "a.test")),
             Query("_sip._udp.example.test", "SRV"): ok(Srv(0, 0, 5080, "b.test"))}
    asked: list[Query] = []
    assert drive("sip:bob@example.test", table, asked=asked) == [
        Target("tcp", "10.0.0.1", 5070), Target("udp", "10.0.0.2", 5080), Target("udp", "10.0.0.3", 5080)]
    # three round trips: NAPTR, both SRVs together, both A lookups together
    assert asked == [Query("example.test", "NAPTR"), Query("_sip._tcp.example.test", "SRV"),
                     Query("_sip._udp.example.test", "SRV"), Query("a.test", "A"), Query("b.test", "A")]


def test_naptr_services_we_do_not_listen_on_or_cannot_use_are_skipped() -> None:
    records = ok(naptr(10, 10, "SIP+D2T", "_sip._tcp.x"), naptr(20, 10, "SIPS+D2T", "_sips._tcp.x"),
                 naptr(30, 10, "SIP+D2S", "_sip._sctp.x"), naptr(40, 10, "SIP+D2U", "_sip._udp.x", flags="a"),
                 naptr(50, 10, "E2U+sip", "_sip._udp.x"), naptr(5, 10, "sip+d2u", "_sip._udp.x."))
    assert usable_naptr(records, sips=False, protos=frozenset({"udp"})) == [("udp", "_sip._udp.x")]
    assert usable_naptr(records, sips=False, protos=ALL) == [
        ("udp", "_sip._udp.x"), ("tcp", "_sip._tcp.x"), ("tls", "_sips._tcp.x")]
    # RFC 3263 4.1: a SIPS URI uses SIPS+ services only
    assert usable_naptr(records, sips=True, protos=ALL) == [("tls", "_sips._tcp.x")]
    # a regexp NAPTR (not a SIP replacement) is not ours
    assert usable_naptr(ok(Naptr(1, 1, "s", "SIP+D2U", "!.*!x!", "_sip._udp.x")), False, ALL) == []


def test_naptr_preference_orders_within_one_order() -> None:
    records = ok(naptr(10, 20, "SIP+D2U", "_sip._udp.x"), naptr(10, 10, "SIP+D2T", "_sip._tcp.x"))
    assert [p for p, _ in usable_naptr(records, False, UDP_TCP)] == ["tcp", "udp"]


def test_no_naptr_asks_srv_for_each_transport_we_listen_on() -> None:
    table = {**BASE, Query("_sip._tcp.example.test", "SRV"): ok(Srv(0, 0, 5062, "c.test"))}
    asked: list[Query] = []
    assert drive("sip:example.test", table, asked=asked) == [Target("tcp", "10.0.0.4", 5062)]
    assert Query("_sip._udp.example.test", "SRV") in asked and Query("_sip._tcp.example.test", "SRV") in asked
    assert Query("_sips._tcp.example.test", "SRV") not in asked      # no tls socket


def test_srv_results_of_several_transports_udp_first() -> None:
    table = {**BASE, Query("_sip._tcp.example.test", "SRV"): ok(Srv(0, 0, 5062, "c.test")),
             Query("_sip._udp.example.test", "SRV"): ok(Srv(0, 0, 5061, "a.test"))}
    assert drive("sip:example.test", table) == [
        Target("udp", "10.0.0.1", 5061), Target("tcp", "10.0.0.4", 5062)]


def test_no_srv_falls_back_to_a_records_on_the_default_port() -> None:
    table = {Query("example.test", "A"): ok("10.1.1.1")}
    assert drive("sip:example.test", table) == [Target("udp", "10.1.1.1", 5060)]
    assert drive("sip:example.test", table, protos=frozenset({"tcp"})) == [Target("tcp", "10.1.1.1", 5060)]


def test_explicit_port_asks_only_a() -> None:
    table = {**BASE, Query("example.test", "A"): ok("10.1.1.1"),
             Query("example.test", "NAPTR"): ok(naptr(1, 1, "SIP+D2T", "_sip._tcp.example.test"))}
    asked: list[Query] = []
    assert drive("sip:example.test:5099", table, asked=asked) == [Target("udp", "10.1.1.1", 5099)]
    assert asked == [Query("example.test", "A")]
    assert drive("sip:example.test:5099;transport=tcp", table) == [Target("tcp", "10.1.1.1", 5099)]


def test_transport_param_skips_naptr_and_asks_its_srv() -> None:
    table = {**BASE, Query("_sip._tcp.example.test", "SRV"): ok(Srv(0, 0, 5071, "a.test"))}
    asked: list[Query] = []
    assert drive("sip:example.test;transport=TCP", table, asked=asked) == [Target("tcp", "10.0.0.1", 5071)]
    assert asked[0] == Query("_sip._tcp.example.test", "SRV")
    # no SRV for it: the host's A on the transport's default port
    table2 = {Query("example.test", "A"): ok("10.1.1.1")}
    assert drive("sip:example.test;transport=tcp", table2) == [Target("tcp", "10.1.1.1", 5060)]


def test_transport_we_do_not_listen_on_is_an_error() -> None:
    with pytest.raises(ResolveError, match="transport=tls but no tls socket"):
        drive("sip:example.test;transport=tls", BASE)
    with pytest.raises(ResolveError, match="unknown transport=foo"):
        drive("sip:example.test;transport=foo", BASE)


def test_sips_uses_tls_and_sips_srv_only() -> None:
    table = {**BASE, Query("example.test", "NAPTR"): ok(naptr(1, 1, "SIP+D2U", "_sip._udp.example.test")),
             Query("_sip._udp.example.test", "SRV"): ok(Srv(0, 0, 5060, "b.test")),
             Query("_sips._tcp.example.test", "SRV"): ok(Srv(0, 0, 5063, "a.test"))}
    assert drive("sips:example.test", table, protos=ALL) == [Target("tls", "10.0.0.1", 5063)]
    # sips + transport=tcp is TLS (RFC 3261 26.2.2); no SRV: A on 5061
    assert drive("sips:a.test;transport=tcp", BASE, protos=ALL) == [Target("tls", "10.0.0.1", 5061)]
    with pytest.raises(ResolveError, match="needs TLS"):
        drive("sips:example.test", table, protos=UDP_TCP)
    with pytest.raises(ResolveError, match="cannot be sent over transport=udp"):
        drive("sips:example.test;transport=udp", table, protos=ALL)


def test_ip_literals_need_no_lookup() -> None:
    assert literal_targets(parse_uri("sip:10.0.0.9"), UDP_TCP) == [Target("udp", "10.0.0.9", 5060)]
    assert literal_targets(parse_uri("sip:[::1]:5070;transport=tcp"), UDP_TCP) == [Target("tcp", "::1", 5070)]
    assert literal_targets(parse_uri("sips:10.0.0.9"), ALL) == [Target("tls", "10.0.0.9", 5061)]
    assert literal_targets(parse_uri("sip:example.test"), UDP_TCP) is None
    with pytest.raises(ResolveError):
        literal_targets(parse_uri("sip:10.0.0.9;transport=tls"), UDP_TCP)


def test_maddr_is_the_target() -> None:
    # RFC 3263 4: TARGET is maddr when present, else the host
    assert literal_targets(parse_uri("sip:bob@example.test;maddr=10.0.0.7"), UDP_TCP) == [
        Target("udp", "10.0.0.7", 5060)]
    asked: list[Query] = []
    assert drive("sip:bob@10.9.9.9:5070;maddr=b.test", BASE, asked=asked) == [
        Target("udp", "10.0.0.2", 5070), Target("udp", "10.0.0.3", 5070)]
    assert asked == [Query("b.test", "A")]


def test_hosts_file_name_asks_nothing_of_dns() -> None:
    asked: list[Query] = []
    hosts = {"pbx.lan": ("192.168.1.5", "::1")}
    assert drive("sip:pbx.lan", {}, hosts=hosts, asked=asked) == [Target("udp", "192.168.1.5", 5060)]
    assert asked == []
    assert drive("sip:PBX.lan.:5070", {}, hosts=hosts, policy=Policy(try_ipv6=True)) == [
        Target("udp", "::1", 5070), Target("udp", "192.168.1.5", 5070)]
    # an SRV target listed in the hosts file is not asked either
    table = {Query("_sip._udp.example.test", "SRV"): ok(Srv(0, 0, 5090, "pbx.lan"))}
    asked.clear()
    assert drive("sip:example.test", table, hosts=hosts, asked=asked) == [Target("udp", "192.168.1.5", 5090)]
    assert all(q.rdtype != "A" for q in asked)


def test_ipv6_only_with_dns_try_ipv6_and_first() -> None:
    table = {Query("h.test", "A"): ok("10.0.0.1"), Query("h.test", "AAAA"): ok("2001:db8::1")}
    asked: list[Query] = []
    assert drive("sip:h.test:5060", table, asked=asked) == [Target("udp", "10.0.0.1", 5060)]
    assert asked == [Query("h.test", "A")]
    assert drive("sip:h.test:5060", table, policy=Policy(try_ipv6=True)) == [
        Target("udp", "2001:db8::1", 5060), Target("udp", "10.0.0.1", 5060)]


def test_dns_try_naptr_off_goes_straight_to_srv() -> None:
    table = {**BASE, Query("example.test", "NAPTR"): ok(naptr(1, 1, "SIP+D2T", "_sip._tcp.example.test")),
             Query("_sip._udp.example.test", "SRV"): ok(Srv(0, 0, 5061, "a.test"))}
    asked: list[Query] = []
    assert drive("sip:example.test", table, policy=Policy(try_naptr=False), asked=asked) == [
        Target("udp", "10.0.0.1", 5061)]
    assert all(q.rdtype != "NAPTR" for q in asked)


def test_nxdomain_failure_and_empty_answers_raise_with_the_reason() -> None:
    nx = RecordSet(NXDOMAIN, ttl=30)
    asked: list[Query] = []
    with pytest.raises(ResolveError, match="no such domain"):
        drive("sip:gone.test", {Query("gone.test", "NAPTR"): nx}, asked=asked)
    assert asked == [Query("gone.test", "NAPTR")]          # nothing exists under it (RFC 8020)
    failed = RecordSet(FAILED, ttl=5, reason="A lookup of slow.test timed out after 4s")
    with pytest.raises(ResolveError, match="timed out after 4s"):
        drive("sip:slow.test:5060", {Query("slow.test", "A"): failed})
    with pytest.raises(ResolveError, match="no address records"):
        drive("sip:empty.test", {})


def test_srv_dot_target_means_not_offered() -> None:
    table = {**BASE, Query("_sip._udp.example.test", "SRV"): ok(Srv(0, 0, 0, ".")),
             Query("example.test", "A"): ok("10.9.9.9")}
    with pytest.raises(ResolveError):
        drive("sip:example.test", table, protos=frozenset({"udp"}))


def test_srv_priority_first_then_weight() -> None:
    records = ok(Srv(20, 0, 1, "low.test"), Srv(10, 60, 2, "p10-a.test"), Srv(10, 30, 3, "p10-b.test"),
                 Srv(10, 10, 4, "p10-c.test"), Srv(30, 0, 5, "last.test"))
    firsts: Counter[str] = Counter()
    rng = random.Random(7)
    for _ in range(3000):
        ordered = order_srv(records, rng)
        assert [r.priority for r in ordered] == [10, 10, 10, 20, 30]
        firsts[ordered[0].target] += 1
    # RFC 2782: chosen first with probability weight / sum of weights (60%, 30%, 10%)
    assert 0.55 < firsts["p10-a.test"] / 3000 < 0.65
    assert 0.25 < firsts["p10-b.test"] / 3000 < 0.35
    assert 0.06 < firsts["p10-c.test"] / 3000 < 0.14


def test_srv_zero_weights_all_kept_in_some_order() -> None:
    records = ok(Srv(0, 0, 1, "a.test"), Srv(0, 0, 2, "b.test"), Srv(0, 5, 3, "c.test"))
    for seed in range(20):
        ordered = order_srv(records, random.Random(seed))
        assert sorted(r.port for r in ordered) == [1, 2, 3]


def test_targets_are_deduplicated_and_bounded() -> None:
    many = ok(*[Srv(0, 1, 5060, "b.test")] * 3, *[Srv(1, 1, 5000 + i, f"h{i}.test") for i in range(15)])
    table = {**BASE, Query("_sip._udp.example.test", "SRV"): many,
             **{Query(f"h{i}.test", "A"): ok(f"10.2.0.{i}", f"10.3.0.{i}", f"10.4.0.{i}") for i in range(15)}}
    targets = drive("sip:example.test", table, protos=frozenset({"udp"}))
    assert targets[:2] == [Target("udp", "10.0.0.2", 5060), Target("udp", "10.0.0.3", 5060)]
    assert len(targets) == len(set(targets)) == 32


def test_websocket_transports_use_a_records_on_http_ports() -> None:
    table = {Query("ws.test", "A"): ok("10.5.5.5")}
    asked: list[Query] = []
    assert drive("sip:ws.test;transport=ws", table, protos=frozenset({"ws"}), asked=asked) == [
        Target("ws", "10.5.5.5", 80)]
    assert asked == [Query("ws.test", "A")]                      # no SRV defined for ws (RFC 7118)
    assert drive("sips:ws.test;transport=wss", table, protos=frozenset({"wss", "tls"})) == [
        Target("wss", "10.5.5.5", 443)]
