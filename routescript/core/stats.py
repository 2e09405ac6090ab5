"""Statistics: named counters grouped by module, as OpenSIPS's statistics.c keeps them.

One `Statistics` per Server (`server.statistics`), made before any module is instantiated, so a module
registers its own in `__init__`, `check()` or `start()`:

    stats = server.statistics
    published = stats.register("presence", "published_presentities", func=lambda: len(table))
    notifies = stats.register("presence", "sent_notifies")      # a counter the module updates:
    notifies.inc()                                              #   .inc(n=1) / .update(n) / .set(n)

A statistic is `group:name` (for example `core:rcv_requests`); names are looked up case-insensitively
(OpenSIPS compares with strncasecmp). It is either a counter its owner updates, or a function evaluated
when read (OpenSIPS STAT_IS_FUNC: "non-incremental" in list_statistics, a gauge for prometheus, never
reset). `no_reset=True` makes a counter a gauge too (OpenSIPS STAT_NO_RESET).

With worker processes each worker keeps its own statistics and MI get_statistics merges them per
statistic by its `aggregate` (routescript/mi/aggregate.py): "sum" (the default: counters, and gauges of
what each worker holds apart, e.g. transactions, subscriptions, TCP connections) or "max" (values that
are the same kind of thing in every worker and whose sum means nothing: core:timestamp, the time now).

The core's own counters are on the hot path (every message), so they are plain int attributes of one
slotted `CoreCounters` object (`server.counters.rcv_requests += 1`, no dict lookup); the StatVars of
the core, sl and tm groups read those attributes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from routescript.transaction import TransactionLayer
    from routescript.transport import TransportLayer

    from .module import Module, ModuleSet

# How the values of one statistic in several worker processes make the server's value.
Aggregate = Literal["sum", "max"]
AGGREGATES: frozenset[str] = frozenset({"sum", "max"})

# Bound (STYLE 7): a module registering statistics in a loop must not grow this without limit.
MAX_STATISTICS = 10000


class StatVar:
    """One statistic. Counters are plain ints: everything runs on one event loop, no atomics needed."""

    __slots__ = ("module", "name", "_value", "_func", "_reset", "no_reset", "aggregate")

    def __init__(self, module: str, name: str, func: Callable[[], int] | None = None,
                 no_reset: bool = False, reset: Callable[[], None] | None = None,
                 aggregate: Aggregate = "sum") -> None:
        if aggregate not in AGGREGATES:
            raise ValueError(f"statistic {module}:{name}: aggregate {aggregate!r}, expected one of "
                             f"{sorted(AGGREGATES)}")
        self.module = module
        self.name = name
        self.aggregate: Aggregate = aggregate
        self._value = 0
        self._func = func
        self._reset = reset
        # A function without its own reset is a gauge (STAT_IS_FUNC); one with a reset is a counter kept
        # elsewhere (the CoreCounters attributes).
        self.no_reset = no_reset or (func is not None and reset is None)

    @property
    def value(self) -> int:
        if self._func is not None:
            try:
                return int(self._func())
            except Exception:  # noqa: BLE001 - a broken getter must not break the other statistics
                return 0
        return self._value

    @property
    def incremental(self) -> bool:
        """OpenSIPS's list_statistics wording: counters are "incremental", functions/no-reset are not."""
        return not self.no_reset

    def inc(self, n: int = 1) -> None:
        self._value += n

    def update(self, n: int) -> None:
        """OpenSIPS update_stat: add n (may be negative)."""
        self._value += n

    def set(self, n: int) -> None:
        self._value = n

    def reset(self) -> None:
        if self.no_reset:
            return
        if self._reset is not None:
            self._reset()
        else:
            self._value = 0

    @property
    def full_name(self) -> str:
        return f"{self.module}:{self.name}"

    def __repr__(self) -> str:
        return f"StatVar({self.full_name}={self.value})"


class Statistics:
    """All statistics of one server, by group (module), in registration order."""

    def __init__(self) -> None:
        self._by_module: dict[str, list[StatVar]] = {}
        self._by_name: dict[str, StatVar] = {}
        self._by_full: dict[tuple[str, str], StatVar] = {}
        self._count = 0

    def register(self, module: str, name: str, *, func: Callable[[], int] | None = None,
                 no_reset: bool = False, reset: Callable[[], None] | None = None,
                 aggregate: Aggregate = "sum") -> StatVar:
        """Register `module:name` and return its StatVar (registering an existing name again returns the
        existing one, as OpenSIPS's dynamic statistics do). `func`: evaluated when read (a gauge unless
        `reset` is given too). `aggregate`: how worker processes' values merge (module docstring).
        ValueError for a bad name or over MAX_STATISTICS."""
        if not module or not name or ":" in name or ":" in module:
            raise ValueError(f"bad statistic name {module!r}:{name!r}")
        key = (module.lower(), name.lower())
        existing = self._by_full.get(key)
        if existing is not None:
            return existing
        if self._count >= MAX_STATISTICS:
            raise ValueError(f"too many statistics (at most {MAX_STATISTICS})")
        stat = StatVar(module, name, func, no_reset, reset, aggregate)
        self._by_module.setdefault(module, []).append(stat)
        self._by_full[key] = stat
        self._count += 1
        # OpenSIPS looks statistics up by bare name; the first registered wins on a clash.
        self._by_name.setdefault(name.lower(), stat)
        return stat

    def get(self, name: str) -> StatVar | None:
        """A statistic by bare name (`rcv_requests`) or `group:name`."""
        if ":" in name:
            module, _, bare = name.partition(":")
            return self._by_full.get((module.lower(), bare.lower()))
        return self._by_name.get(name.lower())

    def module(self, module: str) -> list[StatVar]:
        for mod, stats in self._by_module.items():
            if mod.lower() == module.lower():
                return list(stats)
        return []

    def has_module(self, module: str) -> bool:
        return any(m.lower() == module.lower() for m in self._by_module)

    def modules(self) -> list[str]:
        return list(self._by_module)

    def all(self) -> list[StatVar]:
        return [s for stats in self._by_module.values() for s in stats]

    def __len__(self) -> int:
        return self._count


class CoreCounters:
    """The counters the core updates per message: plain int attributes (`counters.rcv_requests += 1`).

    Attribute names are the OpenSIPS statistic names, except the sl/tm ones starting with a digit
    (`1xx_replies` -> `sl_1xx`, `2xx_transactions` -> `tm_2xx`).
    """

    __slots__ = (
        # core
        "rcv_requests", "rcv_replies", "fwd_requests", "fwd_replies", "drop_requests", "drop_replies",
        "err_requests", "err_replies", "bad_URIs_rcvd", "unsupported_methods", "bad_msg_hdr",
        # sl (stateless replies)
        "sl_1xx", "sl_2xx", "sl_3xx", "sl_4xx", "sl_5xx", "sl_6xx", "sent_replies", "sent_err_replies",
        "received_ACKs",
        # tm
        "received_replies", "relayed_replies", "local_replies", "UAS_transactions", "UAC_transactions",
        "tm_2xx", "tm_3xx", "tm_4xx", "tm_5xx", "tm_6xx",
        # ours (health.py): requests refused 503 by queue_delay_limit
        "queue_delay_refusals",
    )
    # Declared for the type checker; __init__ sets every slot to 0.
    rcv_requests: int
    rcv_replies: int
    fwd_requests: int
    fwd_replies: int
    drop_requests: int
    drop_replies: int
    err_requests: int
    err_replies: int
    bad_URIs_rcvd: int  # noqa: N815 - OpenSIPS's statistic names
    unsupported_methods: int
    bad_msg_hdr: int
    sl_1xx: int
    sl_2xx: int
    sl_3xx: int
    sl_4xx: int
    sl_5xx: int
    sl_6xx: int
    sent_replies: int
    sent_err_replies: int
    received_ACKs: int  # noqa: N815
    received_replies: int
    relayed_replies: int
    local_replies: int
    UAS_transactions: int
    UAC_transactions: int
    tm_2xx: int
    tm_3xx: int
    tm_4xx: int
    tm_5xx: int
    tm_6xx: int
    queue_delay_refusals: int

    def __init__(self) -> None:
        for attr in self.__slots__:
            setattr(self, attr, 0)

    def count_sl_reply(self, code: int, error: bool = False) -> None:
        """One stateless reply sent (sl's per-class counters, sent_replies, sent_err_replies)."""
        cls = code // 100
        if cls == 1:
            self.sl_1xx += 1
        elif cls == 2:
            self.sl_2xx += 1
        elif cls == 3:
            self.sl_3xx += 1
        elif cls == 4:
            self.sl_4xx += 1
        elif cls == 5:
            self.sl_5xx += 1
        elif cls == 6:
            self.sl_6xx += 1
        self.sent_replies += 1
        if error:
            self.sent_err_replies += 1

    def count_tm_final(self, code: int) -> None:
        """A transaction completed with a final reply of this class (tm's Nxx_transactions)."""
        cls = code // 100
        if cls == 2:
            self.tm_2xx += 1
        elif cls == 3:
            self.tm_3xx += 1
        elif cls == 4:
            self.tm_4xx += 1
        elif cls == 5:
            self.tm_5xx += 1
        elif cls == 6:
            self.tm_6xx += 1


# (statistic name, CoreCounters attribute) per group, in OpenSIPS's order.
CORE_STATS = (
    ("rcv_requests", "rcv_requests"), ("rcv_replies", "rcv_replies"), ("fwd_requests", "fwd_requests"),
    ("fwd_replies", "fwd_replies"), ("drop_requests", "drop_requests"), ("drop_replies", "drop_replies"),
    ("err_requests", "err_requests"), ("err_replies", "err_replies"), ("bad_URIs_rcvd", "bad_URIs_rcvd"),
    ("unsupported_methods", "unsupported_methods"), ("bad_msg_hdr", "bad_msg_hdr"),
)
SL_STATS = (
    ("1xx_replies", "sl_1xx"), ("2xx_replies", "sl_2xx"), ("3xx_replies", "sl_3xx"),
    ("4xx_replies", "sl_4xx"), ("5xx_replies", "sl_5xx"), ("6xx_replies", "sl_6xx"),
    ("sent_replies", "sent_replies"), ("sent_err_replies", "sent_err_replies"),
    ("received_ACKs", "received_ACKs"),
)
TM_STATS = (
    ("received_replies", "received_replies"), ("relayed_replies", "relayed_replies"),
    ("local_replies", "local_replies"), ("UAS_transactions", "UAS_transactions"),
    ("UAC_transactions", "UAC_transactions"), ("2xx_transactions", "tm_2xx"),
    ("3xx_transactions", "tm_3xx"), ("4xx_transactions", "tm_4xx"), ("5xx_transactions", "tm_5xx"),
    ("6xx_transactions", "tm_6xx"),
)

# RFC 3261 and its extensions' methods; any other counts as core:unsupported_methods (OpenSIPS
# METHOD_OTHER).
KNOWN_METHODS = frozenset({
    "INVITE", "ACK", "CANCEL", "BYE", "REGISTER", "OPTIONS", "INFO", "UPDATE", "PRACK", "SUBSCRIBE",
    "NOTIFY", "PUBLISH", "MESSAGE", "REFER", "KDMQ",
})


class _TransportHolder(Protocol):
    """What the net: gauge reads of the server (None before start())."""

    @property
    def transport(self) -> TransportLayer | None: ...


class _ModulesHolder(Protocol):
    """What the sl: and tm: groups read of the server."""

    @property
    def modules(self) -> ModuleSet: ...

    @property
    def transactions(self) -> TransactionLayer | None: ...


def _attr_stat(stats: Statistics, counters: CoreCounters, group: str, name: str, attr: str) -> StatVar:
    def read() -> int:
        return int(getattr(counters, attr))

    def reset() -> None:
        setattr(counters, attr, 0)

    return stats.register(group, name, func=read, reset=reset)


def register_core_statistics(stats: Statistics, counters: CoreCounters,
                             server: _TransportHolder | None = None,
                             clock: Callable[[], float] = time.time) -> None:
    """The `core:` group (OpenSIPS's names) and `net:tcp_connections` (our gauge: TCP connections open
    now; OpenSIPS has no such statistic, its net: group counts bytes waiting in socket queues, which an
    asyncio server does not see)."""
    for name, attr in CORE_STATS:
        _attr_stat(stats, counters, "core", name, attr)
    # the time now: the same in every worker, a sum would be N times it
    stats.register("core", "timestamp", func=lambda: int(clock()), aggregate="max")

    def tcp_connections() -> int:
        transport = server.transport if server is not None else None
        return transport.tcp_connections if transport is not None else 0

    stats.register("net", "tcp_connections", func=tcp_connections)


def register_module_statistics(stats: Statistics, counters: CoreCounters, server: _ModulesHolder) -> None:
    """The sl: and tm: groups, when those modules are loaded with enable_stats (their default), as
    OpenSIPS registers them with the module. The counting itself is the core's (server.py, the replies)
    and the transaction layer's into these counters (routescript/transaction/counters.py)."""
    sl = server.modules.get("sl")
    tm = server.modules.get("tm")
    if sl is not None and _stats_enabled(sl):
        for name, attr in SL_STATS:
            _attr_stat(stats, counters, "sl", name, attr)
    if tm is not None and _stats_enabled(tm):
        for name, attr in TM_STATS:
            _attr_stat(stats, counters, "tm", name, attr)

        def inuse() -> int:
            # live transactions and the completed ones still waiting out Timer J, as OpenSIPS counts
            transactions = server.transactions
            return transactions.pending + transactions.completed if transactions is not None else 0

        stats.register("tm", "inuse_transactions", func=inuse)


def _stats_enabled(module: Module) -> bool:
    try:
        return bool(module.param("enable_stats"))
    except Exception:  # noqa: BLE001 - a module without the parameter keeps statistics
        return True


def statistics_of(server: object) -> Statistics:
    """The server's Statistics (`server.statistics`), created and attached on first use for server-like
    objects that did not make one (tests, tools). A real server always has one (ModuleHost.statistics);
    this helper is for any object, hence the probe."""
    stats = getattr(server, "statistics", None)
    if not isinstance(stats, Statistics):
        stats = Statistics()
        try:
            setattr(server, "statistics", stats)  # noqa: B010 - any object: mypy cannot name the attribute
        except AttributeError:  # a server object with __slots__: keep it unattached
            pass
    return stats
