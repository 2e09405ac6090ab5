"""routescript.core.stats: the registry, counters kept as CoreCounters attributes, the module groups."""

from __future__ import annotations

import pytest

from routescript.core.stats import (MAX_STATISTICS, CoreCounters, Statistics, register_core_statistics,
                                    register_module_statistics)


def test_attribute_counters_read_and_reset() -> None:
    stats, counters = Statistics(), CoreCounters()
    register_core_statistics(stats, counters, None, clock=lambda: 1234.9)
    counters.rcv_requests += 7
    rcv = stats.get("RCV_REQUESTS")
    assert rcv is not None and rcv.value == 7 and rcv.incremental and rcv.full_name == "core:rcv_requests"
    rcv.reset()
    assert counters.rcv_requests == 0
    ts = stats.get("core:timestamp")
    assert ts is not None and ts.value == 1234 and not ts.incremental
    ts.reset()
    assert ts.value == 1234
    assert stats.get("net:tcp_connections").value == 0  # type: ignore[union-attr]
    assert [s.name for s in stats.module("core")][:3] == ["rcv_requests", "rcv_replies", "fwd_requests"]


def test_reply_classes() -> None:
    c = CoreCounters()
    for code in (100, 200, 202, 301, 404, 500, 603):
        c.count_sl_reply(code, error=code >= 500)
        c.count_tm_final(code)
    assert (c.sl_1xx, c.sl_2xx, c.sl_3xx, c.sl_4xx, c.sl_5xx, c.sl_6xx) == (1, 2, 1, 1, 1, 1)
    assert c.sent_replies == 7 and c.sent_err_replies == 2
    assert (c.tm_2xx, c.tm_3xx, c.tm_4xx, c.tm_5xx, c.tm_6xx) == (2, 1, 1, 1, 1)


class _Mod:
    def __init__(self, enable: int) -> None:
        self.enable = enable

    def param(self, name: str) -> int:
        assert name == "enable_stats"
        return self.enable


class _Modules:
    def __init__(self, **mods: _Mod) -> None:
        self.mods = mods

    def get(self, name: str) -> _Mod | None:
        return self.mods.get(name)


class _Server:
    def __init__(self, **mods: _Mod) -> None:
        self.modules = _Modules(**mods)
        self.transactions = type("T", (), {"pending": 5, "completed": 0})()


def test_module_groups_follow_enable_stats() -> None:
    stats, counters = Statistics(), CoreCounters()
    register_module_statistics(stats, counters, _Server(sl=_Mod(0), tm=_Mod(1)))
    assert not stats.has_module("sl") and stats.has_module("tm")
    counters.tm_2xx = 3
    assert stats.get("2xx_transactions").value == 3  # type: ignore[union-attr]
    assert stats.get("tm:inuse_transactions").value == 5  # type: ignore[union-attr]
    assert stats.get("inuse_transactions").incremental is False  # type: ignore[union-attr]


def test_names_and_bounds() -> None:
    stats = Statistics()
    a = stats.register("presence", "active_watchers")
    assert stats.register("presence", "ACTIVE_watchers") is a
    b = stats.register("other", "active_watchers")  # same bare name in another group
    assert b is not a and stats.get("active_watchers") is a and stats.get("other:active_watchers") is b
    broken = stats.register("x", "broken", func=lambda: 1 // 0)
    assert broken.value == 0
    for bad in (("", "x"), ("m", ""), ("m", "a:b"), ("m:n", "a")):
        with pytest.raises(ValueError):
            stats.register(*bad)
    for i in range(MAX_STATISTICS - len(stats)):
        stats.register("bulk", f"s{i}")
    with pytest.raises(ValueError, match="too many"):
        stats.register("bulk", "one_more")
