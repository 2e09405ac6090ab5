"""NOTIFY fan-out: N watchers (one SIPp instance, N subscribe calls that stay up and answer every
NOTIFY) on one presentity, whose single device then PUBLISHes changes at a rate (a second SIPp).
Reports NOTIFYs delivered per second; the rate searched is the NOTIFY rate (= PUBLISH rate x N),
spread over DEVICES devices of that presentity.

A step passes when no watcher or publisher call failed (< 0.5 %), fewer than 0.5 % of the expected
NOTIFYs (N x DEVICES x (modifies + 2)) went missing, and the delivered rate (NOTIFYs received between
the first PUBLISH and the last NOTIFY) is >= 90 % of the target.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.procstat import cpu_pct, cpu_snap, machine_busy_pct
from benchmarks.search import RateSearch
from benchmarks.settings import Settings
from benchmarks.sipprun import SCENARIOS, SippProcess, log, run_sipp, sipp_command, step_stats
from benchmarks.stats import parse_counts_csv

WATCHER_RATE = 500        # SUBSCRIBE calls/s while the watchers sign up
DEVICES = 4               # publishing devices of the presentity: each waits for its 200 before pausing
                          # again, so several devices keep the PUBLISH round trip from capping the rate


def render(template: Path, dest: Path, **values: object) -> Path:
    """Copy a scenario template with its @NAME@ placeholders filled in."""
    text = template.read_text()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    return dest


def notify_columns(header: list[str]) -> tuple[int, int]:
    """Positions of the first NOTIFY receive (the initial one) and the second (the fan-out loop)."""
    cols = [i for i, name in enumerate(header) if name.endswith("_NOTIFY_Recv")]
    if len(cols) < 2:
        raise KeyError("watcher counts have fewer than two NOTIFY receive columns")
    return cols[0], cols[1]


def drain_end(rows: list[tuple[float, list[int]]], col: int) -> float | None:
    """When counter `col` reached its final value, interpolated inside the 1 s row that reached it
    (assuming the rate of the row before), in seconds since SIPp started. None when it never moved."""
    if not rows:
        return None
    final = rows[-1][1][col]
    if final == 0:
        return None
    b = next(i for i, (_, c) in enumerate(rows) if c[col] == final)
    if b == 0:
        return rows[0][0]
    t_a, c_a = rows[b - 1][0], rows[b - 1][1][col]
    t_b = rows[b][0]
    if b >= 2:
        t_p, c_p = rows[b - 2][0], rows[b - 2][1][col]
        r = (c_a - c_p) / (t_a - t_p) if t_a > t_p else 0.0
        if r > 0:
            return min(t_b, t_a + (final - c_a) / r)
    return t_b


@dataclass(frozen=True, slots=True)
class FanoutStep:
    target: int                 # NOTIFYs/s asked for
    phase: str
    watchers: int
    modifies: int
    subscribed: int             # initial NOTIFYs received
    delivered: int              # fan-out NOTIFYs received
    expected: int
    notify_rate: float          # delivered per second
    publish_rate: float
    why: list[str]
    server_cpu: float | None
    machine_busy: float

    @property
    def passed(self) -> bool:
        return not self.why

    def line(self) -> str:
        cpu = "n/a" if self.server_cpu is None else f"{self.server_cpu:.0f}%"
        verdict = "PASS" if self.passed else "FAIL(" + ",".join(self.why) + ")"
        return (f"  {self.phase:<7} notify_target={self.target:<6} watchers={self.watchers} "
                f"publishes={DEVICES * (self.modifies + 2)} {verdict} subscribed={self.subscribed} "
                f"delivered={self.delivered}/{self.expected} notify_rate={self.notify_rate:.0f}/s "
                f"publish_rate={self.publish_rate:.1f}/s srv_cpu={cpu} machine={self.machine_busy:.0f}%")


def fanout_step(workdir: Path, port: int, server_pid: int | None, target: int, phase: str,
                settings: Settings) -> FanoutStep:
    n = settings.fanout_watchers
    crit = settings.criteria
    publish_rate = target / n
    duration = max(settings.duration, 5.0)            # counts have a 1 s resolution: keep steps long enough
    modifies = max(3, int(publish_rate * duration / DEVICES))
    pause_ms = max(0, int(1000 * DEVICES / publish_rate) - 1)   # ~1 ms of round trip per PUBLISH on loopback
    sub_s = n / WATCHER_RATE + 3
    idle_ms = int((sub_s + 3 + 1000 / publish_rate / 1000) * 1000)
    presentity = f"fan{target}{phase}"
    d = workdir / f"fanout-{target:06d}-{phase}"
    watch = render(SCENARIOS / "fanout_watch.xml", d / "watch" / "fanout_watch.xml",
                   PRESENTITY=presentity, IDLE_MS=idle_ms)
    pub = render(SCENARIOS / "fanout_publish.xml", d / "publish" / "fanout_publish.xml",
                 PRESENTITY=presentity, MODIFIES=modifies, PAUSE_MS=pause_ms)
    w_tmo = int(sub_s + duration * 3 + idle_ms / 1000 * 2 + 30)
    w_cmd = sipp_command(watch, port, WATCHER_RATE, n, settings=settings, timeout_s=w_tmo,
                         extra=("-l", str(n + 10), "-trace_counts"))
    a = cpu_snap(server_pid)
    watchers = SippProcess(d / "watch", w_cmd, w_tmo)
    # wait (bounded) until every watcher got its first NOTIFY, or the counts stop growing
    deadline = time.monotonic() + sub_s + 5
    subscribed = 0
    while time.monotonic() < deadline and watchers.proc.poll() is None:
        time.sleep(0.25)
        files = sorted((d / "watch").glob("*_counts.csv"))
        if files:
            header, rows = parse_counts_csv(files[0].read_text(errors="replace"))
            if rows and len(header) > 0:
                first, _ = notify_columns(header)
                subscribed = rows[-1][1][first]
                if subscribed >= n:
                    break
    t_pub0 = time.monotonic()
    w0 = t_pub0
    prun = run_sipp(d / "publish", pub, port, 1000, DEVICES, settings=settings,
                    timeout_s=int(modifies * (pause_ms / 1000 + 1) + 30), extra=("-l", str(DEVICES)))
    t_pub1 = time.monotonic()
    # the publishing itself, on the publisher's own clock (-trace_rtt Date_ms = ms since SIPp started):
    # first PUBLISH answered .. last PUBLISH answered
    stamps = [float(line.split(";")[0]) for p in (d / "publish").glob("*_rtt.csv")
              for line in p.read_text(errors="replace").splitlines()[1:] if line.count(";") >= 2]
    if stamps:
        t_pub0, t_pub1 = t_pub0 + min(stamps) / 1000, t_pub0 + max(stamps) / 1000
    b, w1 = cpu_snap(server_pid), time.monotonic()
    wrun = watchers.wait()
    pstats = step_stats(prun, DEVICES)
    wstats = step_stats(wrun, n)
    files = sorted((d / "watch").glob("*_counts.csv"))
    header, rows = parse_counts_csv(files[0].read_text(errors="replace")) if files else ([], [])
    delivered = 0
    end_s: float | None = None
    if header:
        first, loop = notify_columns(header)
        subscribed = rows[-1][1][first] if rows else subscribed
        delivered = rows[-1][1][loop] if rows else 0
        end_s = drain_end(rows, loop)
    expected = subscribed * DEVICES * (modifies + 2)
    span = (watchers.t0 + end_s - t_pub0) if end_s is not None else 0.0
    span = max(span, t_pub1 - t_pub0)   # never shorter than the publishing itself
    notify_rate = delivered / span if span > 0 else 0.0
    why: list[str] = []
    if prun.rc not in (0, 1) or pstats.ok < DEVICES:
        why.append("publisher_failed")
    if wrun.rc is None:
        why.append("watchers_killed")
    if subscribed < n or 100.0 * wstats.failed / n >= crit.max_fail_pct:
        why.append("watcher_failures")
    if expected and 100.0 * (expected - delivered) / expected >= crit.max_fail_pct:
        why.append("notify_loss")
    if notify_rate < target * crit.min_achieved_pct / 100.0:
        why.append("rate_not_reached")
    step = FanoutStep(target, phase, n, modifies, subscribed, delivered, expected, notify_rate,
                      DEVICES * (modifies + 2) / max(t_pub1 - t_pub0, 1e-6), why,
                      cpu_pct(a, b, w1 - w0) if server_pid else None, machine_busy_pct(a, b))
    log(step.line())
    time.sleep(settings.settle)
    return step


@dataclass
class FanoutResult:
    max_rate: int = 0                 # target NOTIFYs/s of the best passing step
    best: FanoutStep | None = None
    steps: list[FanoutStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def find_max_fanout(port: int, server_pid: int | None, workdir: Path, settings: Settings) -> FanoutResult:
    search = RateSearch(start=settings.fanout_start, factor=settings.factor, max_rate=settings.max_rate,
                        refine=settings.refine, retry_fail=settings.retry_fail)
    res = FanoutResult()
    t0 = time.monotonic()
    while (target := search.next_rate()) is not None:
        expected = max(settings.duration, 5.0) + settings.fanout_watchers / WATCHER_RATE * 2 + 12
        if res.steps and time.monotonic() - t0 + expected > settings.max_scenario_s:
            search.stop()
            res.notes.append(f"time budget {settings.max_scenario_s:.0f}s reached at {target} NOTIFY/s")
            break
        step = fanout_step(workdir, port, server_pid, target, search.phase, settings)
        res.steps.append(step)
        search.record(step.passed)
    res.max_rate = search.last_pass
    passing = [s for s in res.steps if s.target == res.max_rate and s.passed]
    res.best = passing[-1] if passing else None
    log(f"  => fan-out: {res.best.notify_rate:.0f} NOTIFY/s delivered at target {res.max_rate}/s"
        if res.best else "  => fan-out: no passing step")
    return res
