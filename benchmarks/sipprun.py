"""Run SIPp steps against a server and search its highest sustainable call rate (the reference's run.sh,
in Python). SIPp is started with the reference's arguments so the figures stay comparable."""

from __future__ import annotations

import resource
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.procstat import cpu_pct, cpu_snap, machine_busy_pct
from benchmarks.search import RateSearch, verdict
from benchmarks.servers import free_port
from benchmarks.settings import Settings
from benchmarks.stats import StepStats, summarize

SIPP = shutil.which("sipp") or "sipp"
SCENARIOS = Path(__file__).resolve().parent / "sipp"


def log(msg: str) -> None:
    print(msg, flush=True)


@dataclass(frozen=True, slots=True)
class SippRun:
    rc: int | None           # None: killed by our timeout
    wall_s: float
    cpu_s: float             # SIPp's user+sys
    dir: Path


def sipp_command(scenario: Path, port: int, rate: float, calls: int, *, settings: Settings, timeout_s: int,
                 extra: tuple[str, ...] = (), host: str = "127.0.0.1") -> list[str]:
    """The reference's SIPp command line (UDP, loopback, -trace_stat/-trace_rtt every second)."""
    return [SIPP, f"{host}:{port}", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(free_port()),
            "-r", str(rate), "-rp", "1000", "-m", str(calls), "-nostdin", "-buff_size", "4194304",
            "-recv_timeout", str(settings.recv_timeout_ms), "-timeout", f"{timeout_s}s",
            "-trace_stat", "-stf", "stat.csv", "-fd", "1", "-trace_rtt", "-rtt_freq", "100", "-trace_screen",
            "-trace_err", "-max_log_size", "2000000", "-default_behaviors", "all,-bye", *extra]


class SippProcess:
    """A SIPp run in the background; `wait()` bounds it (kill after timeout_s + 15 s)."""

    def __init__(self, workdir: Path, cmd: list[str], timeout_s: int) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "cmd.txt").write_text(" ".join(cmd) + "\n")
        self.dir, self.timeout_s = workdir, timeout_s
        self._before = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.t0 = time.monotonic()
        with open(workdir / "sipp.out", "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)

    def wait(self) -> SippRun:
        try:
            left = self.t0 + self.timeout_s + 15 - time.monotonic()
            rc: int | None = self.proc.wait(timeout=max(1.0, left))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            rc = None
        wall = time.monotonic() - self.t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # children's rusage is only summed at wait(): exact when one SIPp runs at a time
        cpu = (after.ru_utime - self._before.ru_utime) + (after.ru_stime - self._before.ru_stime)
        return SippRun(rc, wall, cpu, self.dir)


def run_sipp(workdir: Path, scenario: Path, port: int, rate: float, calls: int, *, settings: Settings,
             extra: tuple[str, ...] = (), host: str = "127.0.0.1", timeout_s: int | None = None) -> SippRun:
    """One SIPp UAC run to completion (bounded): stat.csv, *_rtt.csv (and *_counts.csv) in workdir."""
    slack = 10 if settings.quick else 30
    tmo = timeout_s if timeout_s is not None else int(calls / max(rate, 1) * 3 + slack)
    cmd = sipp_command(scenario, port, rate, calls, settings=settings, timeout_s=tmo, extra=extra, host=host)
    return SippProcess(workdir, cmd, tmo).wait()


def step_stats(run: SippRun, calls: int) -> StepStats:
    stat = run.dir / "stat.csv"
    stat_text = stat.read_text(errors="replace") if stat.exists() else ""
    rtts = [p.read_text(errors="replace") for p in sorted(run.dir.glob("*_rtt.csv"))]
    return summarize(stat_text, rtts, calls)


@dataclass(frozen=True, slots=True)
class Step:
    rate: int
    phase: str
    calls: int
    stats: StepStats
    why: list[str]
    server_cpu: float | None
    sipp_cpu: float
    machine_busy: float

    @property
    def passed(self) -> bool:
        return not self.why

    def line(self) -> str:
        s = self.stats
        rtd = " ".join(f"rtd{k} p50/p99={v[0]:g}/{v[1]:g}ms" for k, v in sorted(s.rtd.items()))
        cpu = "n/a" if self.server_cpu is None else f"{self.server_cpu:.0f}%"
        return (f"  {self.phase:<7} rate={self.rate:<6} calls={self.calls:<7} "
                f"{'PASS' if self.passed else 'FAIL(' + ','.join(self.why) + ')'} "
                f"ok={s.ok} failed={s.failed} "
                f"retrans={s.retrans} achieved={s.achieved_cps:.0f}cps {rtd} srv_cpu={cpu} "
                f"sipp_cpu={self.sipp_cpu:.0f}% machine={self.machine_busy:.0f}%")


def run_step(workdir: Path, scenario: Path, port: int, server_pid: int | None, rate: int, phase: str,
             settings: Settings, extra: tuple[str, ...] = ()) -> Step:
    calls = settings.calls_for(rate)
    a, w0 = cpu_snap(server_pid), time.monotonic()
    run = run_sipp(workdir / f"step-{rate:05d}-{phase}", scenario, port, rate, calls, settings=settings,
                   extra=extra)
    b, w1 = cpu_snap(server_pid), time.monotonic()
    stats = step_stats(run, calls)
    step = Step(rate, phase, calls, stats, verdict(stats, rate, run.rc, settings.criteria),
                # server CPU over the whole SIPp run (start-up and drain included: slightly underestimates)
                cpu_pct(a, b, w1 - w0) if server_pid else None,
                run.cpu_s / run.wall_s * 100 if run.wall_s > 0 else 0.0, machine_busy_pct(a, b))
    log(step.line())
    time.sleep(settings.settle)
    return step


@dataclass
class RateResult:
    name: str
    max_rate: int = 0
    first_fail: int = 0
    best: Step | None = None
    at80: Step | None = None
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def p99_ms(self) -> float | None:
        """p99 of response time 1 in the 80 % step (the last response time of the scenario if it has 2)."""
        src = self.at80 or None
        if src is None or not src.stats.rtd:
            return None
        return max(v[1] for v in src.stats.rtd.values())


def find_max_rate(name: str, scenario: Path, port: int, server_pid: int | None, workdir: Path,
                  settings: Settings, extra: tuple[str, ...] = ()) -> RateResult:
    """The reference's search (ramp, retry, refine) bounded by settings.max_scenario_s, then one step at
    p99_at x max for the response-time percentiles."""
    search = RateSearch(start=settings.start_rate, factor=settings.factor, max_rate=settings.max_rate,
                        refine=settings.refine, retry_fail=settings.retry_fail)
    res = RateResult(name)
    t0 = time.monotonic()
    while (rate := search.next_rate()) is not None:
        expected = settings.calls_for(rate) / rate + settings.settle + 2
        if res.steps and time.monotonic() - t0 + expected > settings.max_scenario_s:
            search.stop()
            res.notes.append(f"time budget {settings.max_scenario_s:.0f}s reached at rate {rate}")
            break
        step = run_step(workdir, scenario, port, server_pid, rate, search.phase, settings, extra)
        res.steps.append(step)
        search.record(step.passed)
    res.max_rate, res.first_fail = search.last_pass, search.first_fail
    passing = [s for s in res.steps if s.rate == res.max_rate and s.passed]
    res.best = passing[-1] if passing else None
    if search.reached_max_without_failure:
        res.notes.append(f"MAX_RATE={settings.max_rate} reached without failure")
    if res.max_rate:
        r80 = max(10, int(res.max_rate * settings.p99_at) // 10 * 10)
        res.at80 = run_step(workdir, scenario, port, server_pid, r80, "at80", settings, extra)
    log(f"  => {name}: max sustainable {res.max_rate}/s" + (f", first fail {res.first_fail}/s"
                                                            if res.first_fail else "")
        + (f"; {'; '.join(res.notes)}" if res.notes else ""))
    return res
