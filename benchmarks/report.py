"""The summary tables (pure formatting)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmarks.stats import fmt_num

if TYPE_CHECKING:
    from benchmarks.fanout import FanoutResult
    from benchmarks.memory import MemoryResult
    from benchmarks.sipprun import RateResult


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    max_rate: float | None
    unit: str
    p99_ms: str                     # "rtd1/rtd2" p99 in ms at 80 % of max, or "n/a"
    cpu_pct: float | None           # server CPU at the max step (100 = one core)
    ceiling: float | None           # py_ceiling's max rate measured in the same run
    reference: str
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.max_rate is None or not self.ceiling:
            return None
        return self.max_rate / self.ceiling

    @classmethod
    def from_rate(cls, name: str, unit: str, res: RateResult, ceiling: int | None, reference: str) -> Row:
        p99 = "n/a"
        if res.at80 is not None and res.at80.stats.rtd:
            p99 = "/".join(f"{v[1]:g}" for _, v in sorted(res.at80.stats.rtd.items()))
        note = "; ".join(res.notes)
        if res.first_fail:
            note = f"first fail {res.first_fail}" + (f"; {note}" if note else "")
        return cls(name, res.max_rate, unit, p99, res.best.server_cpu if res.best else None, ceiling,
                   reference, note)

    @classmethod
    def from_fanout(cls, res: FanoutResult, watchers: int) -> Row:
        best = res.best
        return cls(f"fanout x{watchers}", best.notify_rate if best else 0, "NOTIFY/s", "n/a",
                   best.server_cpu if best else None, None, "",
                   "; ".join(res.notes + ([f"publish {best.publish_rate:.1f}/s"] if best else [])))


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def rate_table(rows: list[Row]) -> str:
    header = ["scenario", "max rate", "unit", "p99@80% ms", "srv CPU%", "py_ceiling", "ratio", "reference",
              "note"]
    body = [[r.scenario, fmt_num(r.max_rate), r.unit, r.p99_ms, fmt_num(r.cpu_pct), fmt_num(r.ceiling),
             "n/a" if r.ratio is None else f"{r.ratio:.2f}", r.reference, r.note] for r in rows]
    return _table(header, body)


def memory_table(mem: MemoryResult) -> str:
    body = [[f"{n:,}", fmt_num(kp, 1), fmt_num(ks, 1)] for n, kp, ks in mem.per_item()]
    last = mem.points[-1].rss_kib if mem.points else mem.baseline_kib
    text = _table(["publications+subscriptions", "KiB/publication", "KiB/subscription"], body)
    extra = (f"baseline RSS {mem.baseline_kib:,} KiB, final RSS {last:,} KiB, failed requests {mem.failed}, "
             f"NOTIFYs answered {mem.notifies}, {mem.seconds:.0f}s")
    if mem.notes:
        extra += "; " + "; ".join(mem.notes)
    return text + "\n" + extra
