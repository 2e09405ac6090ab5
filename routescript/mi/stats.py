"""Statistics: named counters grouped by module, as OpenSIPS's statistics.c keeps them.

A statistic is `module:name` (for example `presence:active_watchers`); names are looked up
case-insensitively (OpenSIPS compares with strncasecmp). A statistic is either a counter the owner
updates (`inc`, `update`, `set`) or a function evaluated when read (OpenSIPS STAT_IS_FUNC, shown as
"non-incremental" by list_statistics and never reset).

This registry lives in routescript.mi for now because the core (routescript.core, owned elsewhere)
has none yet; `statistics_of(server)` attaches one to the server so modules and MI share it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Bound (STYLE 7): a module registering statistics in a loop must not grow this without limit.
MAX_STATISTICS = 10000


class StatVar:
    """One statistic. Counters are plain ints: everything runs on one event loop, no atomics needed."""

    __slots__ = ("module", "name", "_value", "_func", "no_reset")

    def __init__(self, module: str, name: str, func: Callable[[], int] | None = None,
                 no_reset: bool = False) -> None:
        self.module = module
        self.name = name
        self._value = 0
        self._func = func
        self.no_reset = no_reset or func is not None

    @property
    def value(self) -> int:
        if self._func is not None:
            try:
                return int(self._func())
            except Exception:  # a broken getter must not break get_statistics for the others
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
        if not self.no_reset:
            self._value = 0

    @property
    def full_name(self) -> str:
        return f"{self.module}:{self.name}"

    def __repr__(self) -> str:
        return f"StatVar({self.full_name}={self.value})"


class Statistics:
    """All statistics of one server, by module, in registration order."""

    def __init__(self) -> None:
        self._by_module: dict[str, list[StatVar]] = {}
        self._by_name: dict[str, StatVar] = {}

    def register(self, module: str, name: str, *, func: Callable[[], int] | None = None,
                 no_reset: bool = False) -> StatVar:
        """Register `module:name` (registering an existing name again returns the existing one,
        as OpenSIPS's dynamic statistics do)."""
        if not module or not name or ":" in name:
            raise ValueError(f"bad statistic name {module!r}:{name!r}")
        existing = self._by_name.get(name.lower())
        if existing is not None and existing.module.lower() == module.lower():
            return existing
        if len(self._by_name) >= MAX_STATISTICS:
            raise ValueError(f"too many statistics (at most {MAX_STATISTICS})")
        stat = StatVar(module, name, func, no_reset)
        self._by_module.setdefault(module, []).append(stat)
        # OpenSIPS looks statistics up by bare name; the first registered wins on a clash.
        self._by_name.setdefault(name.lower(), stat)
        return stat

    def get(self, name: str) -> StatVar | None:
        """A statistic by bare name (`rcv_requests`) or `module:name`."""
        if ":" in name:
            module, _, bare = name.partition(":")
            for stat in self.module(module):
                if stat.name.lower() == bare.lower():
                    return stat
            return None
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
        return sum(len(v) for v in self._by_module.values())


def statistics_of(server: Any) -> Statistics:
    """The server's Statistics, created and attached as `server.statistics` on first use."""
    stats = getattr(server, "statistics", None)
    if not isinstance(stats, Statistics):
        stats = Statistics()
        try:
            server.statistics = stats
        except AttributeError:  # a server object with __slots__: keep it unattached
            pass
    return stats
