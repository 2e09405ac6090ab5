"""Compatibility: the statistics registry lives in routescript.core.stats (the Server makes one,
`server.statistics`); MI reads it. Kept so `from routescript.mi.stats import ...` still works."""

from routescript.core.stats import MAX_STATISTICS, Statistics, StatVar, statistics_of

__all__ = ["MAX_STATISTICS", "StatVar", "Statistics", "statistics_of"]
