"""Pure parsing of SIPp's output files (no I/O beyond the caller handing us text).

Same arithmetic as the reference harness (shared bench/sipp_stats.py) so figures stay comparable:
- the LAST row of `-trace_stat` (stat.csv, `;`-separated, header first) gives the cumulative counters;
- every `-trace_rtt` sample (`Date_ms;response_time_ms;rtd_no`) gives the response-time distribution
  and the time of the last response;
- calls SIPp never created count as failed; achieved rate = successful calls / time to last response.
`-trace_counts` (per scenario message, cumulative, one row per `-fd` period) gives time series, which the
NOTIFY fan-out benchmark turns into "messages received per second".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field


def percentile(sorted_vals: list[float], p: float) -> float | None:
    """Nearest-rank percentile as the reference computes it (rank = round(p/100*n + 0.5), 1-based)."""
    if not sorted_vals:
        return None
    n = len(sorted_vals)
    k = max(0, min(n - 1, round(p / 100.0 * n + 0.5) - 1))
    return sorted_vals[k]


def parse_stat_csv(text: str) -> dict[str, str]:
    """The last data row of a SIPp -trace_stat file as {column: value}; {} when there is none."""
    lines = [line.rstrip("\r\n") for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    header = lines[0].rstrip(";").split(";")
    row = lines[-1].rstrip(";").split(";")
    return dict(zip(header, row, strict=False))


def parse_rtt_csv(text: str) -> tuple[dict[str, list[float]], float]:
    """-trace_rtt samples: ({rtd number: [ms, ...]}, time of the last sample in ms since SIPp start).
    Malformed lines (a file cut short when SIPp was killed) are skipped."""
    samples: dict[str, list[float]] = {}
    last_ms = 0.0
    for i, line in enumerate(text.splitlines()):
        if i == 0 and line.startswith("Date_ms"):
            continue
        parts = line.strip().split(";")
        if len(parts) < 3:
            continue
        try:
            t, v = float(parts[0]), float(parts[1])
        except ValueError:
            continue
        samples.setdefault(parts[2], []).append(v)
        last_ms = max(last_ms, t)
    return samples, last_ms


def _int(st: dict[str, str], key: str) -> int:
    try:
        return int(float(st.get(key, "0") or 0))
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class StepStats:
    """One SIPp run summarised (the reference's FIELDS, typed)."""

    calls: int                  # calls asked for (-m)
    created: int
    ok: int
    failed: int                 # failed + never created
    retrans: int
    dead_msgs: int
    ooc_msgs: int
    timeouts: int
    unexpected: int
    duration_s: float           # time to the last response
    rtd: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # rtd -> (p50, p99, max) ms

    @property
    def fail_pct(self) -> float:
        return 100.0 * self.failed / self.calls if self.calls else 0.0

    @property
    def retrans_pct_calls(self) -> float:
        return 100.0 * self.retrans / self.calls if self.calls else 0.0

    @property
    def achieved_cps(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def p99(self, rtd: str = "1") -> float | None:
        v = self.rtd.get(rtd)
        return v[1] if v else None

    def p50(self, rtd: str = "1") -> float | None:
        v = self.rtd.get(rtd)
        return v[0] if v else None


def summarize(stat_text: str, rtt_texts: Iterable[str], calls: int) -> StepStats:
    """StepStats from the stat.csv text and the *_rtt.csv texts of one run."""
    st = parse_stat_csv(stat_text)
    created = _int(st, "TotalCallCreated")
    never = max(0, calls - created)
    samples: dict[str, list[float]] = {}
    last_ms = 0.0
    for text in rtt_texts:
        s, last = parse_rtt_csv(text)
        for k, v in s.items():
            samples.setdefault(k, []).extend(v)
        last_ms = max(last_ms, last)
    rtd: dict[str, tuple[float, float, float]] = {}
    for k, v in samples.items():
        v.sort()
        p50, p99 = percentile(v, 50), percentile(v, 99)
        assert p50 is not None and p99 is not None
        rtd[k] = (p50, p99, v[-1])
    return StepStats(
        calls=calls, created=created, ok=_int(st, "SuccessfulCall(C)"),
        failed=_int(st, "FailedCall(C)") + never, retrans=_int(st, "Retransmissions(C)"),
        dead_msgs=_int(st, "DeadCallMsgs(C)"), ooc_msgs=_int(st, "OutOfCallMsgs(C)"),
        timeouts=_int(st, "FailedTimeoutOnRecv(C)") + _int(st, "FailedMaxUDPRetrans(C)"),
        unexpected=_int(st, "FailedUnexpectedMessage(C)"), duration_s=last_ms / 1000.0, rtd=rtd)


# ---- -trace_counts ---------------------------------------------------------------------------------

def _elapsed_s(text: str) -> float:
    """SIPp's ElapsedTime `HH:MM:SS:uuuuuu` (microseconds after the last colon) in seconds."""
    parts = text.strip().split(":")
    if len(parts) != 4:
        raise ValueError(f"bad ElapsedTime {text!r}")
    h, m, s, us = (int(p) for p in parts)
    return h * 3600 + m * 60 + s + us / 1e6


def parse_counts_csv(text: str) -> tuple[list[str], list[tuple[float, list[int]]]]:
    """-trace_counts: (column names after CurrentTime/ElapsedTime, [(elapsed seconds, counts), ...])."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return [], []
    header = lines[0].rstrip(";").split(";")[2:]
    rows: list[tuple[float, list[int]]] = []
    for line in lines[1:]:
        parts = line.rstrip(";").split(";")
        if len(parts) != len(header) + 2:
            continue  # a row cut short
        try:
            rows.append((_elapsed_s(parts[1]), [int(x) for x in parts[2:]]))
        except ValueError:
            continue
    return header, rows


def column_index(header: list[str], index: int) -> int:
    """Position of scenario message number `index` (e.g. 7 for `7_NOTIFY_Recv`) in a counts header."""
    prefix = f"{index}_"
    for i, name in enumerate(header):
        if name.startswith(prefix) and name.endswith("_Recv"):
            return i
    raise KeyError(f"no received-message column for scenario message {index}")


def peak_window_rate(rows: list[tuple[float, list[int]]], col: int, window_s: float) -> float:
    """The highest average rate of column `col` over any window of at least `window_s` seconds between
    two rows (cumulative counters, so rate = difference / time). 0 when there is too little data."""
    best = 0.0
    j = 0
    for i in range(len(rows)):
        t_i, c_i = rows[i]
        while j < i and t_i - rows[j + 1][0] >= window_s:
            j += 1
        t_j, c_j = rows[j]
        dt = t_i - t_j
        if dt >= window_s and dt > 0:
            best = max(best, (c_i[col] - c_j[col]) / dt)
    return best


def busy_span(rows: list[tuple[float, list[int]]], col: int) -> tuple[float, float, int]:
    """(first time the counter moved, first time it reached its final value, final value)."""
    if not rows:
        return 0.0, 0.0, 0
    final = rows[-1][1][col]
    start = next((t for t, c in rows if c[col] > 0), 0.0)
    # the row before the first nonzero one is when counting began at the earliest
    prev = [t for t, c in rows if c[col] == 0 and t < start]
    if prev:
        start = prev[-1]
    end = next((t for t, c in rows if c[col] == final), rows[-1][0])
    return start, end, final


def fmt_num(v: float | None, digits: int = 0) -> str:
    """Numbers for the table: thousands separators, 'n/a' for None/NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:,.{digits}f}"
