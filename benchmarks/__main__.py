"""`python -m benchmarks [--quick] [--only a,b] [--out DIR]`: every benchmark, one table at the end.

Scenarios (each on a fresh server: a temporary copy of the example config, a temporary SQLite file,
a free port, loopback only):
  options     examples/hello.cfg      OPTIONS -> 200                       (sipp/options.xml)
  publish     examples/presence.cfg   initial + modify PUBLISH             (sipp/publish.xml)
  subscribe   examples/presence.cfg   SUBSCRIBE/NOTIFY/unSUBSCRIBE         (sipp/subscribe.xml)
  fanout      examples/presence.cfg   N watchers, PUBLISH changes -> NOTIFYs/s
  memory      examples/presence.cfg   VmRSS with 10k / 100k publications + subscriptions
  proxy       examples/proxy.cfg      SIPp caller -> proxy -> SIPp callee, full calls with Record-Route
                                      (INVITE/100/180/200/ACK/BYE/200; sipp/proxy_uac.xml, proxy_uas.xml)
  register    examples/registrar-presence.cfg  REGISTER with digest (401, then 200), usrloc db_mode 1 and 2,
                                      5,000 subscribers (sipp/register_auth.xml); then the memory of
                                      100,000 bindings (10,000 in QUICK) on a registrar without auth
  latency     examples/presence.cfg   PUBLISH -> NOTIFY latency p50/p99 under PUBLISH load at half the
                                      publish max of this run (else 1,000/s), watcher in the same worker
                                      and (workers >= 2) in another one (benchmarks/notify_latency.py)
  options and publish are also run against benchmarks/py_ceiling.py in the same run, proxy against
  benchmarks/py_proxy_ceiling.py (a stateless relay in plain asyncio): the ratio column.
QUICK=1 (or --quick) uses short steps to smoke-test the harness in about 2 minutes.
--config FILE runs the presence scenarios on another config (e.g. examples/cluster-node1.cfg, with a
second node started by hand on the same database), --db-url URL points every db_url of the config at
URL (e.g. a PostgreSQL database) instead of a temporary SQLite file, --no-ceiling skips py_ceiling,
--workers N runs the server with N worker processes (udp_workers = tcp_workers = N; the CPU column
sums the supervisor and its workers).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.fanout import find_max_fanout
from benchmarks.gauge import describe, python_speed_us
from benchmarks.memory import measure_memory
from benchmarks.notify_latency import measure_latency
from benchmarks.register import find_max_register_rate, injection_file, measure_bindings_memory
from benchmarks.proxy import find_max_proxy_rate
from benchmarks.report import Row, memory_table, rate_table
from benchmarks.servers import start_py_ceiling, start_py_proxy_ceiling, start_routescript
from benchmarks.settings import Settings
from benchmarks.sipprun import SCENARIOS, SIPP, find_max_rate, log, run_sipp

ALL = ("options", "publish", "subscribe", "fanout", "memory", "proxy", "latency", "register")
# Reference figures (measured elsewhere with the same scenarios and rule; see docs/benchmarks.md)
REFERENCE = {
    "options": "py ~25,000",
    "publish": "OpenSIPS ~1,300-1,600; Kamailio ~1,450; py ~15,000",
    "subscribe": "OpenSIPS ~4,000; Kamailio ~1,070",
    "fanout": "",
    "proxy": "target >= 1,500 (issue 19)",
    "register": "target >= 2,000 (issue 20)",
}


def _subscribe_extra(workdir: Path, settings: Settings, port: int) -> tuple[str, ...]:
    """subscribe.xml reads presentities from an injection file; publish user1..userN first (as run.sh)."""
    inf = workdir / "presentities.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"user{i};\n" for i in range(1, settings.presentities + 1)))
    log(f"  prepublish user1..user{settings.presentities}")
    pre = run_sipp(workdir / "prepublish", SCENARIOS / "publish.xml", port, 200, settings.presentities,
                   settings=settings)
    log(f"  prepublish rc={pre.rc}")
    time.sleep(settings.settle)
    return ("-inf", str(inf))


def run(selected: tuple[str, ...], settings: Settings, out: Path, *, config: str = "presence.cfg",
        db_url: str | None = None, ceiling: bool = True, workers: int | None = None) -> int:
    rows: list[Row] = []
    mem = None
    t_start = time.monotonic()
    speed_at_start = python_speed_us()
    ceilings: dict[str, int] = {}
    latency_lines: list[str] = []
    binding_lines: list[str] = []
    for name in selected:
        log(f"== {name}")
        w = out / name
        if name in ("options", "publish"):
            scen = SCENARIOS / f"{name}.xml"
            if ceiling:
                with start_py_ceiling(w / "py_ceiling") as ceil:
                    cres = find_max_rate(f"{name} py_ceiling", scen, ceil.port, ceil.pid, w / "py_ceiling",
                                         settings)
                ceilings[name] = cres.max_rate
            example = "hello.cfg" if name == "options" else config
            with start_routescript(example, w / "routescript", db_url=db_url, workers=workers) as srv:
                res = find_max_rate(name, scen, srv.port, srv.pid, w / "routescript", settings)
            rows.append(Row.from_rate(name, "calls/s", res, ceilings.get(name), REFERENCE[name]))
        elif name == "subscribe":
            with start_routescript(config, w, db_url=db_url, workers=workers) as srv:
                extra = _subscribe_extra(w, settings, srv.port)
                res = find_max_rate(name, SCENARIOS / "subscribe.xml", srv.port, srv.pid, w, settings, extra)
            rows.append(Row.from_rate(name, "calls/s", res, None, REFERENCE[name]))
        elif name == "fanout":
            with start_routescript(config, w, db_url=db_url, workers=workers) as srv:
                fres = find_max_fanout(srv.port, srv.pid, w, settings)
            rows.append(Row.from_fanout(fres, settings.fanout_watchers))
        elif name == "proxy":
            if ceiling:
                with start_py_proxy_ceiling(w / "py_proxy_ceiling") as ceil:
                    cres = find_max_proxy_rate(f"{name} py_proxy_ceiling", ceil, w / "py_proxy_ceiling",
                                               settings)
                ceilings[name] = cres.max_rate
            with start_routescript("proxy.cfg", w / "routescript", workers=workers) as srv:
                res = find_max_proxy_rate(name, srv, w / "routescript", settings)
            rows.append(Row.from_rate(name, "calls/s", res, ceilings.get(name), REFERENCE[name]))
        elif name == "register":
            if ceiling:
                with start_py_ceiling(w / "py_ceiling") as ceil:
                    inf = injection_file(w / "py_ceiling" / "users.csv", 5000)
                    cres = find_max_rate("register py_ceiling", SCENARIOS / "register_auth.xml", ceil.port,
                                         ceil.pid, w / "py_ceiling", settings, ("-inf", str(inf)))
                ceilings[name] = cres.max_rate
            for mode in (1, 2):
                res = find_max_register_rate(w / f"db_mode{mode}", settings, db_mode=mode, workers=workers)
                rows.append(Row.from_rate(f"register db_mode {mode}", "calls/s", res, ceilings.get(name),
                                          REFERENCE[name]))
            count = 10_000 if settings.quick else 100_000
            _before, _after, per = measure_bindings_memory(w / "memory", settings, count)
            binding_lines.append(f"usrloc: {per:.0f} bytes of RSS per binding with {count:,} bindings")
        elif name == "latency":
            published = int(next((r.max_rate for r in rows if r.scenario == "publish" and r.max_rate), 0))
            background = published // 2 if published else 1000
            n = workers or 1
            for placement in ("same", "cross") if n > 1 else ("same",):
                res = measure_latency(w / placement, settings, workers=n, placement=placement,
                                      background=background, samples=100 if settings.quick else 400)
                latency_lines.append(res.line().strip())
        elif name == "memory":
            with start_routescript(config, w, db_url=db_url, workers=workers) as srv:
                mem = measure_memory(srv.port, srv.pid, settings.memory_counts, settings.memory_window,
                                     settings.max_scenario_s * 2)
    elapsed = time.monotonic() - t_start
    text = [(f"routescript benchmarks ({'QUICK' if settings.quick else 'full'} mode) - "
             f"{time.strftime('%Y-%m-%d %H:%M')} - {platform.node()} nproc={os.cpu_count()} "
             f"python {platform.python_version()} - {elapsed:.0f}s - results in {out}"),
            (f"config {config}, database {db_url or 'a temporary SQLite file'}, "
             f"{workers or 1} worker process(es)"),
            describe(speed_at_start, python_speed_us()) + " (lower is faster: compare runs with it)",
            "max rate: highest step with failures < 0.5%, retrans < 1/100 calls, achieved >= 90% of target",
            ""]
    if rows:
        text.append(rate_table(rows))
    if mem is not None:
        text += ["", memory_table(mem)]
    if binding_lines:
        text += ["", *binding_lines]
    if latency_lines:
        text += ["", "PUBLISH -> NOTIFY latency (target p99 < 5 ms across workers at half the max rate):",
                 *latency_lines]
    report = "\n".join(text)
    (out / "summary.txt").write_text(report + "\n")
    print("\n" + report, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short steps (same as QUICK=1)")
    p.add_argument("--only", default=",".join(ALL), help=f"comma list out of {','.join(ALL)}")
    p.add_argument("--out", default=None, help="results directory (default: a new temporary one)")
    p.add_argument("--config", default="presence.cfg",
                   help="config of the presence scenarios: an examples/ name or a path "
                        "(default presence.cfg)")
    p.add_argument("--db-url", default=None, help="db_url for the server (default: a temporary SQLite file)")
    p.add_argument("--no-ceiling", action="store_true", help="do not run py_ceiling for options/publish")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes of the server (udp_workers = tcp_workers = N)")
    a = p.parse_args(argv)
    settings = Settings.from_env()
    if a.quick and not settings.quick:
        settings = replace(Settings.from_env({**os.environ, "QUICK": "1"}))
    selected = tuple(s.strip() for s in a.only.split(",") if s.strip())
    unknown = [s for s in selected if s not in ALL]
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}")
    if shutil.which(SIPP) is None:
        print("sipp not found: apt-get install sip-tester", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="routescript-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    return run(selected, settings, out, config=a.config, db_url=a.db_url, ceiling=not a.no_ceiling,
               workers=a.workers)


if __name__ == "__main__":
    sys.exit(main())
