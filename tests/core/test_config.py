"""Core global parameters: types, socket forms, unknown names as warnings with positions."""

from __future__ import annotations

import pytest

from routescript.core.config import DEFAULT_SOCKET, L_DBG, L_ERR, apply_globals, parse_socket, unknown_globals
from routescript.core.module import ConfigError

P = ("x.cfg", 3, 1)


def test_sockets_repeatable_with_ipv6_and_default_port() -> None:
    cfg, warnings = apply_globals([
        ("socket", "udp:127.0.0.1:5070", P), ("listen", "tcp:[::1]:5071", P), ("socket", "udp:localhost", P),
    ])
    assert warnings == []
    assert [(s.proto, s.host, s.port) for s in cfg.sockets] == [
        ("udp", "127.0.0.1", 5070), ("tcp", "::1", 5071), ("udp", "localhost", 5060)]
    assert cfg.sockets[1].name == "tcp:[::1]:5071"
    assert parse_socket("udp:1.2.3.4:5060 as 5.6.7.8:5060").advertised == "5.6.7.8:5060"


def test_default_socket_when_none() -> None:
    cfg, _ = apply_globals([])
    assert [s.name for s in cfg.listen_specs()] == [DEFAULT_SOCKET]


@pytest.mark.parametrize("value", ["sctp:1.2.3.4:5060", "udp:1.2.3.4:99999", "udp::::"])
def test_bad_socket_is_config_error_at_position(value: str) -> None:
    with pytest.raises(ConfigError) as ei:
        apply_globals([("socket", value, ("a.cfg", 7, 1))])
    assert ei.value.pos == ("a.cfg", 7, 1)
    assert str(ei.value).startswith("a.cfg:7:1: ")


def test_types_and_log_level_names() -> None:
    cfg, _ = apply_globals([("log_level", 4, P), ("xlog_level", "L_ERR", P), ("stderror_enabled", "no", P),
                            ("server_header", "Server: rs", P), ("alias", "a.example.com", P),
                            ("alias", "b.example.com:5080", P), ("udp_workers", 8, P)])
    assert cfg.log_level == L_DBG and cfg.xlog_level == L_ERR
    assert cfg.stderror_enabled is False
    assert cfg.server_header == "rs"
    assert cfg.aliases == ["a.example.com", "b.example.com:5080"]
    assert cfg.worker_plan().udp_workers == 8


def test_unknown_parameter_is_an_error_and_one_without_effect_a_note() -> None:
    # issue 17: OpenSIPS 3.4 refuses a name it does not know (port = 5060 is 2.x), so do we; issue 22:
    # a 3.4 parameter with no effect here is accepted with the reason logged at start
    items = [("frobnicate", 1, ("z.cfg", 2, 5)), ("port", 5060, ("z.cfg", 3, 1)), ("log_levl", 1, P),
             ("mem", 64, ("z.cfg", 4, 1)), ("log_level", 1, P)]
    assert unknown_globals(items) == [
        ("unknown core parameter 'frobnicate'", ("z.cfg", 2, 5)),
        ("unknown core parameter 'port' (the port is part of each socket: socket = udp:127.0.0.1:5060)",
         ("z.cfg", 3, 1)),
        ("unknown core parameter 'log_levl' (did you mean log_level?)", P)]
    cfg, warnings = apply_globals(items)
    assert warnings == []
    assert [n for n in cfg.notes if "'mem'" in n] == [
        ("core parameter 'mem' accepted without effect: OpenSIPS's own shared/private memory allocator; "
        "routescript is a Python process whose memory the interpreter manages (bound it from outside: "
        "systemd's MemoryMax=)")]
    assert cfg.log_level == 1


def test_wrong_type_of_known_parameter() -> None:
    with pytest.raises(ConfigError, match=r"log_level.*integer") as ei:
        apply_globals([("log_level", "loud", ("c.cfg", 1, 1))])
    assert ei.value.pos == ("c.cfg", 1, 1)


def test_tcp_bounds_defaults_and_trusted_sources() -> None:
    cfg, warnings = apply_globals([])
    assert (cfg.get("tcp_max_connections_per_ip"), cfg.get("tcp_max_msg_time")) == (256, 4)
    assert not cfg.tcp_trusted_sources
    cfg, warnings = apply_globals([("tcp_trusted_sources", "10.0.0.7, 192.0.2.0/24 ::1", ("a.cfg", 3, 1)),
                                   ("tcp_max_connections_per_ip", 16, None), ("tcp_max_msg_time", 8, None)])
    assert warnings == [] and (cfg.get("tcp_max_connections_per_ip"), cfg.get("tcp_max_msg_time")) == (16, 8)
    assert "192.0.2.200" in cfg.tcp_trusted_sources and "10.0.0.7" in cfg.tcp_trusted_sources
    assert "::1" in cfg.tcp_trusted_sources and "10.0.0.8" not in cfg.tcp_trusted_sources


@pytest.mark.parametrize("value", ["proxy.example.com", "10.0.0.1/8", "10.0.0.300"])
def test_bad_trusted_sources_is_config_error_at_position(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_globals([("tcp_trusted_sources", f"10.0.0.1, {value}", ("a.cfg", 3, 1))])
    assert "tcp_trusted_sources" in str(info.value) and value in str(info.value)
    assert str(info.value).startswith("a.cfg:3:1:")


# ------------------------------------------------------------------ worker parameters (issue 18)
def test_children_and_udp_workers_with_different_values_is_an_error_at_the_second() -> None:
    with pytest.raises(ConfigError) as ei:
        apply_globals([("children", 2, ("w.cfg", 1, 1)), ("udp_workers", 3, ("w.cfg", 2, 1))])
    assert ei.value.pos == ("w.cfg", 2, 1)
    assert "'udp_workers' = 3 contradicts 'children' = 2" in str(ei.value)
    cfg, _ = apply_globals([("children", 2, P), ("udp_workers", 2, P)])   # the same number twice: fine
    assert cfg.worker_plan().udp_workers == 2


def test_children_alone_sets_udp_workers() -> None:
    cfg, _ = apply_globals([("children", 3, P)])
    assert cfg.worker_plan().udp_workers == 3


@pytest.mark.parametrize("name", ["udp_workers", "children", "tcp_workers", "timer_workers",
                                  "worker_restart_backoff"])
def test_worker_counts_below_one_are_errors(name: str) -> None:
    with pytest.raises(ConfigError, match=f"core parameter '{name}' must be at least 1, got 0"):
        apply_globals([(name, 0, P)])


def test_worker_affinity_is_uri_or_callid() -> None:
    assert apply_globals([("worker_affinity", "callid", P)])[0].worker_plan().affinity == "callid"
    assert apply_globals([])[0].worker_plan().affinity == "uri"
    with pytest.raises(ConfigError, match='expects "uri" or "callid", got "hash"'):
        apply_globals([("worker_affinity", "hash", P)])


def test_timer_workers_is_accepted_with_a_warning() -> None:
    _cfg, warnings = apply_globals([("timer_workers", 2, ("t.cfg", 4, 1))])
    text = ("timer_workers accepted: module timers run in the worker that owns the state; "
            "timer_route runs in worker 0")
    assert warnings == [(text, ("t.cfg", 4, 1))]


def test_use_workers_of_a_parsed_socket_line_is_kept() -> None:
    from routescript.script import parse_text

    (g,) = parse_text("socket=udp:127.0.0.1:5070 use_workers 3\n", "g.cfg").globals
    cfg, _ = apply_globals([("socket", g.value, P)])
    assert cfg.sockets[0].workers == 3 and cfg.sockets[0].name == "udp:127.0.0.1:5070"
    (g,) = parse_text("socket=udp:127.0.0.1:5070 use_workers 0\n", "g.cfg").globals
    with pytest.raises(ConfigError, match="use_workers must be at least 1, got 0"):
        apply_globals([("socket", g.value, P)])
