"""Knobs of a benchmark run: the full defaults (the reference's), QUICK=1 for a 1-2 minute smoke test of
the harness, and the reference's environment variable names to override one knob."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

from benchmarks.search import Criteria


@dataclass(frozen=True, slots=True)
class Settings:
    quick: bool = False
    start_rate: int = 200
    factor: float = 1.5
    max_rate: int = 30000
    refine: int = 2
    retry_fail: bool = True
    duration: float = 10.0           # seconds per step: calls = rate*duration, at least min_calls
    min_calls: int = 2000
    settle: float = 3.0              # idle seconds between steps
    recv_timeout_ms: int = 8000      # SIPp per-recv timeout (a lost NOTIFY fails the call)
    presentities: int = 1000         # presentity pool for subscribe.xml ([field0])
    max_scenario_s: float = 600.0    # time budget of one scenario's search (then it stops, keeping the best)
    p99_at: float = 0.8              # p99 response time is measured in one more step at this fraction of max
    fanout_watchers: int = 500
    fanout_start: int = 1000         # NOTIFYs/s of the first fan-out step
    memory_counts: tuple[int, ...] = (10_000, 100_000)
    memory_window: int = 200         # requests in flight from the memory client
    criteria: Criteria = Criteria()  # noqa: RUF009 - frozen, so one shared default is safe

    @classmethod
    def full(cls) -> Settings:
        return cls()

    @classmethod
    def quick_mode(cls) -> Settings:
        return cls(quick=True, start_rate=200, factor=2.0, refine=1, retry_fail=False, duration=2.0,
                   min_calls=300, settle=0.5, recv_timeout_ms=3000, presentities=200, max_scenario_s=25.0,
                   fanout_watchers=100, fanout_start=500, memory_counts=(1_000, 5_000))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """QUICK=1 picks the quick set; START_RATE, FACTOR, MAX_RATE, REFINE, RETRY_FAIL, DURATION,
        MIN_CALLS, SETTLE, RECV_TIMEOUT_MS, PRESENTITIES, MAX_SCENARIO_S, FANOUT_WATCHERS,
        MEMORY_COUNTS (comma list) override single knobs."""
        env = dict(os.environ if env is None else env)
        s = cls.quick_mode() if env.get("QUICK", "") not in ("", "0") else cls.full()
        changes: dict[str, object] = {}
        for f in fields(cls):
            key = f.name.upper()
            if key in env and f.name not in ("quick", "criteria"):
                raw = env[key]
                cur = getattr(s, f.name)
                if isinstance(cur, bool):
                    changes[f.name] = raw not in ("0", "", "no", "false")
                elif isinstance(cur, int):
                    changes[f.name] = int(raw)
                elif isinstance(cur, float):
                    changes[f.name] = float(raw)
                elif isinstance(cur, tuple):
                    changes[f.name] = tuple(int(x) for x in raw.split(",") if x.strip())
        crit = {}
        for key, name in (("MAX_FAIL_PCT", "max_fail_pct"), ("MAX_RETRANS_PCT", "max_retrans_pct"),
                          ("MIN_ACHIEVED_PCT", "min_achieved_pct")):
            if key in env:
                crit[name] = float(env[key])
        if crit:
            changes["criteria"] = replace(s.criteria, **crit)  # type: ignore[arg-type]
        return replace(s, **changes)  # type: ignore[arg-type]

    def calls_for(self, rate: int) -> int:
        return max(self.min_calls, int(rate * self.duration))
