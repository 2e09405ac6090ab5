"""The pass/fail rule for one step and the search for the highest sustainable rate - pure, no I/O.

Same rule and same search as the reference harness (shared bench/run.sh), so figures are comparable:
a step PASSES when SIPp exited 0 or 1, every call was created, failures < 0.5 % of calls,
retransmissions < 1 per 100 calls, and the achieved rate >= 90 % of the target.
The rate ramps geometrically (start * factor^k, rounded up to tens), a failing step is retried once,
then REFINE bisections between the last pass and the first fail (stopping when they are < 8 % apart).
The harness drives `RateSearch` step by step (`next_rate()`, `record()`), so the search can be tested
on synthetic verdicts and stopped by a time budget between steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.stats import StepStats


@dataclass(frozen=True, slots=True)
class Criteria:
    max_fail_pct: float = 0.5
    max_retrans_pct: float = 1.0      # retransmissions per 100 calls
    min_achieved_pct: float = 90.0


def verdict(stats: StepStats, rate: float, sipp_rc: int | None, criteria: Criteria = Criteria()) -> list[str]:
    """Why a step failed ([] = PASS). Reasons use the reference's words."""
    why: list[str] = []
    if sipp_rc not in (0, 1):
        why.append(f"sipp_rc={sipp_rc}")
    if stats.created < stats.calls:
        why.append("not_all_created")
    if stats.fail_pct >= criteria.max_fail_pct:
        why.append("failures")
    if stats.retrans_pct_calls >= criteria.max_retrans_pct:
        why.append("retrans")
    if stats.achieved_cps < rate * criteria.min_achieved_pct / 100.0:
        why.append("rate_not_reached")
    return why


def next_ramp_rate(rate: int, factor: float) -> int:
    """rate*factor rounded up to a multiple of ten, at least rate+10 (as run.sh's awk does)."""
    n = int(rate * factor / 10 + 0.999) * 10
    return n if n > rate else rate + 10


@dataclass(slots=True)
class RateSearch:
    """Geometric ramp, one retry of a failing step, then bisection. Call `next_rate()` for the rate of
    the next step (None when the search is over) and `record(passed)` with its verdict."""

    start: int = 200
    factor: float = 1.5
    max_rate: int = 30000
    refine: int = 2
    retry_fail: bool = True
    last_pass: int = 0
    first_fail: int = 0
    phase: str = "ramp"               # ramp | retry | refine | done
    history: list[tuple[int, str, bool]] = field(default_factory=list)  # (rate, phase, passed)
    stopped_early: bool = False       # stop() was called (time budget)
    _rate: int = 0
    _refined: int = 0

    def __post_init__(self) -> None:
        self._rate = self.start
        if self.start > self.max_rate:
            self.phase = "done"

    def next_rate(self) -> int | None:
        if self.phase == "refine":
            if self._refined >= self.refine or not (self.first_fail and self.last_pass):
                self.phase = "done"
            else:
                mid = (self.last_pass + self.first_fail) // 20 * 10
                if mid <= self.last_pass or (self.first_fail - self.last_pass) * 100 // self.last_pass < 8:
                    self.phase = "done"
                else:
                    self._rate = mid
        return None if self.phase == "done" else self._rate

    def record(self, passed: bool) -> None:
        rate, phase = self._rate, self.phase
        self.history.append((rate, phase, passed))
        if phase in ("ramp", "retry"):
            if passed:
                self.last_pass = rate
                self._rate = next_ramp_rate(rate, self.factor)
                self.phase = "ramp" if self._rate <= self.max_rate else "done"
            elif phase == "ramp" and self.retry_fail:
                self.phase = "retry"
            else:
                self.first_fail = rate
                self.phase = "refine"
        elif phase == "refine":
            self._refined += 1
            if passed:
                self.last_pass = rate
            else:
                self.first_fail = rate

    def stop(self) -> None:
        """End the search now (time budget spent); last_pass stays what was proven."""
        if self.phase != "done":
            self.stopped_early = True
        self.phase = "done"

    @property
    def reached_max_without_failure(self) -> bool:
        return (self.phase == "done" and not self.stopped_early and self.first_fail == 0
                and self.last_pass > 0)
