"""Statistics and the get/list/reset_statistics commands (OpenSIPS statistics.c semantics)."""

from __future__ import annotations

import pytest

from routescript.core.config import CoreConfig
from routescript.core.module import ModuleSet
from routescript.mi import MIRegistry, Statistics, build_registry, statistics_of
from routescript.mi.jsonrpc import JSONRPCError


class Srv:
    """What build_registry reads of a server: its configuration and modules (none here)."""

    def __init__(self) -> None:
        self.config = CoreConfig()
        self.modules = ModuleSet()


@pytest.fixture
def reg() -> MIRegistry:
    srv = Srv()
    stats = statistics_of(srv)
    received = stats.register("core", "rcv_requests")
    received.inc(5)
    stats.register("core", "tcp_conns", func=lambda: 3)
    stats.register("presence", "active_watchers").set(2)
    return build_registry(srv)


def test_registry_lookup() -> None:
    s = Statistics()
    a = s.register("tm", "UAS_transactions")
    assert s.register("tm", "UAS_transactions") is a
    assert s.get("uas_TRANSACTIONS") is a and s.get("tm:uas_transactions") is a and s.get("sl:x") is None
    a.update(3)
    a.update(-1)
    assert a.value == 2 and a.incremental
    with pytest.raises(ValueError):
        s.register("tm", "bad:name")


async def test_get_statistics(reg: MIRegistry) -> None:
    assert await reg.dispatch("get_statistics", [["all"]]) == {
        "core:rcv_requests": 5, "core:tcp_conns": 3, "presence:active_watchers": 2}
    assert await reg.dispatch("get_statistics", {"statistics": ["presence:", "rcv_requests", "nope"]}) == {
        "presence:active_watchers": 2, "core:rcv_requests": 5}
    with pytest.raises(JSONRPCError) as info:
        await reg.dispatch("get_statistics", [["nope", "nomod:"]])
    assert (info.value.code, info.value.message) == (404, "Statistics Not Found")


async def test_list_and_reset(reg: MIRegistry) -> None:
    assert await reg.dispatch("list_statistics") == {
        "core:rcv_requests": "incremental", "core:tcp_conns": "non-incremental",
        "presence:active_watchers": "incremental"}
    assert await reg.dispatch("list_statistics", [["tcp_conns"]]) == {"tcp_conns": "non-incremental"}
    assert await reg.dispatch("reset_statistics", [["rcv_requests", "tcp_conns"]]) == "OK"
    assert await reg.dispatch("get_statistics", [["core:"]]) == {"core:rcv_requests": 0, "core:tcp_conns": 3}
    with pytest.raises(JSONRPCError):
        await reg.dispatch("reset_statistics", [["nope"]])
