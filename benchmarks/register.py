"""REGISTER with digest authentication (issue 20): examples/registrar-presence.cfg on a temporary SQLite
file, usrloc db_mode 1 (write-through: every binding committed before its 200) and 2 (write-back on
the timer), SIPp's register_auth.xml (401, then the authenticated REGISTER -> 200) with users from an
injection file. The subscribers are written before the server starts, as `routescript db subscriber
add` writes them (ha1 columns).

Also `measure_bindings_memory`: the server's RSS before and after N distinct users registered (one
binding each; a registrar without auth, so only usrloc's memory grows), per binding."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from benchmarks.procstat import rss_kib
from benchmarks.servers import start_routescript
from benchmarks.settings import Settings
from benchmarks.sipprun import SCENARIOS, RateResult, find_max_rate, log, run_sipp, step_stats
from routescript.db import open_database
from routescript.modules.auth_db.subscribers import Account, hashes

PASSWORD = "bench-Pa55"   # noqa: S105 - the benchmark subscribers' password


async def write_subscribers(url: str, users: int, domain: str = "127.0.0.1") -> None:
    db = await open_database(url)
    try:
        await db.ensure_schema(["subscriber"])
        rows = []
        for i in range(1, users + 1):
            account = Account(f"user{i}", domain)
            rows.append({"username": account.username, "domain": domain, **hashes(account, PASSWORD)})
        await db.insert_many("subscriber", rows)
    finally:
        await db.close()


def injection_file(path: Path, users: int, *, password: bool = True) -> Path:
    lines = "".join(f"user{i};[authentication username=user{i} password={PASSWORD}];\n" if password
                    else f"user{i};\n" for i in range(1, users + 1))
    path.write_text("SEQUENTIAL\n" + lines)
    return path


def registrar_config(workdir: Path, db_mode: int) -> Path:
    """examples/registrar-presence.cfg with usrloc's db_mode set; its databases under workdir."""
    source = Path(__file__).resolve().parents[1] / "examples" / "registrar-presence.cfg"
    text = re.sub(r'modparam\("usrloc", "db_mode", \d+\)', f'modparam("usrloc", "db_mode", {db_mode})',
                  source.read_text())
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / f"registrar-presence-db{db_mode}.cfg"
    cfg.write_text(text)
    return cfg


def find_max_register_rate(workdir: Path, settings: Settings, *, db_mode: int, workers: int | None,
                           users: int = 5000) -> RateResult:
    cfg = registrar_config(workdir, db_mode)
    db = workdir / "bench.sqlite"          # where bench_config points every db_url
    asyncio.run(write_subscribers(f"sqlite://{db}", users))
    inf = injection_file(workdir / "users.csv", users)
    with start_routescript(str(cfg), workdir, workers=workers) as srv:
        return find_max_rate(f"register db_mode {db_mode}", SCENARIOS / "register_auth.xml", srv.port,
                             srv.pid, workdir, settings, ("-inf", str(inf)))


NOAUTH_REGISTRAR = r"""
log_level = 1
socket = udp:127.0.0.1:5060
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
modparam("usrloc", "db_mode", 0)
route {
    if (is_method("REGISTER")) { save("location"); exit; }
    sl_send_reply(405, "Method Not Allowed");
}
"""


def measure_bindings_memory(workdir: Path, settings: Settings, count: int) -> tuple[int, int, float]:
    """(RSS KiB before, after, bytes per binding) for `count` distinct users registered at 1,000/s."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "registrar-noauth.cfg"
    cfg.write_text(NOAUTH_REGISTRAR)
    inf = injection_file(workdir / "users.csv", count, password=False)
    scenario = workdir / "register_noauth.xml"
    scenario.write_text(_noauth_scenario())
    with start_routescript(str(cfg), workdir) as srv:
        time.sleep(0.5)
        before = rss_kib(srv.pid)
        run = run_sipp(workdir / "fill", scenario, srv.port, 1000, count, settings=settings,
                       extra=("-inf", str(inf)))
        stats = step_stats(run, count)
        time.sleep(1.0)
        after = rss_kib(srv.pid)
    per = (after - before) * 1024 / max(stats.ok, 1)
    log(f"  memory: {stats.ok} bindings, RSS {before} -> {after} KiB: {per:.0f} bytes per binding")
    return before, after, per


def _noauth_scenario() -> str:
    text = (SCENARIOS / "register_auth.xml").read_text()
    head, _, _ = text.partition('  <recv response="401"')
    return head.replace("REGISTER with digest", "REGISTER without auth") + \
        '  <recv response="200" rtd="1"/>\n\n</scenario>\n'
