"""Running as a service (issue 22, docs/operations.md), over real processes and loopback sockets, with one
process and with two worker processes:

- sd_notify: READY=1 once the port answers, WATCHDOG=1 pings, RELOADING=1 then READY=1 on SIGHUP,
  STOPPING=1 on SIGTERM (a fake $NOTIFY_SOCKET: a unix datagram socket of the test);
- the pid file (-P): the main process's id, removed at exit; a live one refuses the start;
- the privilege drop to nobody, every process of the server (the supervisor and its workers);
- the run flags (--listen, --log-level, --chroot), $env(NAME) in a modparam, the log formats and syslog;
- a graceful stop: every PUBLISH answered 200 before SIGTERM is in the database, exit 0;
- the shipped systemd unit passes `systemd-analyze verify`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from presence_e2e import presence_cfg
from rs_e2e import ROOT, START_TIMEOUT, RunningServer, _env, free_port, routescript
from test_lifecycle_e2e import _basic_cfg, _free_low_port, _ids, _served_by, needs_root, nobody_setup

from routescript.testing import SipTestClient, pidf

WORKERS = [1, 2]


def _cfg(tmp_path: Path, port: int, *, workers: int = 1, head: str = "", extra: str = "",
         route: str = 'sl_send_reply(200, "OK");') -> Path:
    workers_line = f"udp_workers = {workers}\n" if workers > 1 else ""
    return _basic_cfg(tmp_path, port, extra=extra, head=head + workers_line, route=route)


class Service(RunningServer):
    """`routescript run CFG ARGS` with an environment of our own; stderr to a file (RunningServer's log()
    and wait_for())."""

    def __init__(self, cfg: Path, workdir: Path, args: tuple[str, ...] = (),   # not super(): our argv
                 env: dict[str, str] | None = None, python: list[str] | None = None) -> None:
        self.cfg = cfg
        self.log_path = workdir / f"{cfg.stem}.stderr"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in close()
        argv = [*(python or [sys.executable, "-m", "routescript"]), "run", str(cfg), *args]
        self.proc = subprocess.Popen(argv, cwd=ROOT, env={**_env(), **(env or {})},
                                     stdout=subprocess.DEVNULL, stderr=self._log)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and the exit status (SIGKILL after `timeout`: a failure)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError(f"still running {timeout}s after SIGTERM:\n{self.log()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._log.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short folder every account can reach (a unix socket path has at most 107 bytes; pytest's
    tmp_path is long and root's only)."""
    path = Path(tempfile.mkdtemp(prefix="rs-ops-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class FakeSystemd:
    """The service manager's end of $NOTIFY_SOCKET: the notifications as lists of fields."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)   # who sent it, as systemd asks
        self.sock.bind(str(self.path))
        self.senders: set[int] = set()

    def next(self, timeout: float = START_TIMEOUT) -> list[str]:
        self.sock.settimeout(timeout)
        data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        for level, kind, creds in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                self.senders.add(int.from_bytes(creds[:4], sys.byteorder))   # struct ucred: pid, uid, gid
        return data.decode().split("\n")

    def until(self, field: str, timeout: float = START_TIMEOUT) -> tuple[list[str], list[list[str]]]:
        """The first notification holding `field`, and those that came before it."""
        before: list[list[str]] = []
        deadline = time.monotonic() + timeout
        while True:
            fields = self.next(max(0.01, deadline - time.monotonic()))
            if field in fields:
                return fields, before
            before.append(fields)

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------------------ sd_notify
@pytest.mark.parametrize("workers", WORKERS)
def test_sd_notify_ready_watchdog_reload_stopping(tmp_path: Path, short_dir: Path, workers: int) -> None:
    port = free_port()
    cfg = _cfg(tmp_path, port, workers=workers)
    systemd = FakeSystemd(short_dir)
    service = Service(cfg, tmp_path, env={"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "400000"})
    try:
        ready, before = systemd.until("READY=1")
        _served_by(port)    # READY=1 came once the port answers, not before
        assert not before, before    # nothing (no watchdog ping) before READY
        assert f"MAINPID={service.proc.pid}" in ready, ready
        assert any(f.startswith("STATUS=") and f"udp:127.0.0.1:{port}" in f for f in ready), ready
        pings = [systemd.next(5.0) for _ in range(3)]    # every 0.2 s: half of WATCHDOG_USEC
        assert all(p == ["WATCHDOG=1"] for p in pings), pings
        service.proc.send_signal(signal.SIGHUP)
        reloading, _ = systemd.until("RELOADING=1")
        assert any(f.startswith("MONOTONIC_USEC=") for f in reloading), reloading
        reloaded, _ = systemd.until("READY=1")
        assert "STATUS=reloaded" in reloaded, reloaded
        service.proc.send_signal(signal.SIGTERM)
        systemd.until("STOPPING=1")
        assert service.terminate() == 0, service.log()
        # the main process alone spoke (NotifyAccess=main): no worker notified anything
        assert systemd.senders == {service.proc.pid}, systemd.senders
    finally:
        service.close()
        systemd.close()


def test_no_watchdog_pings_for_another_pid(tmp_path: Path, short_dir: Path) -> None:
    """WATCHDOG_PID naming another process: the watchdog is not ours (sd_watchdog_enabled(3))."""
    port = free_port()
    systemd = FakeSystemd(short_dir)
    service = Service(_cfg(tmp_path, port), tmp_path,
                      env={"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "200000",
                           "WATCHDOG_PID": "1"})
    try:
        systemd.until("READY=1")
        with pytest.raises(TimeoutError):
            systemd.next(1.0)
    finally:
        assert service.terminate() == 0, service.log()
        service.close()
        systemd.close()


# ------------------------------------------------------------------ pid file
@pytest.mark.parametrize("workers", WORKERS)
def test_pid_file_holds_the_main_process_and_goes_at_exit(tmp_path: Path, workers: int) -> None:
    port = free_port()
    pid_file = tmp_path / "rs.pid"
    service = Service(_cfg(tmp_path, port, workers=workers), tmp_path, args=("-P", str(pid_file)))
    try:
        service.wait_for("routescript started")
        assert pid_file.read_text() == f"{service.proc.pid}\n"
        _served_by(port)
        assert service.terminate() == 0, service.log()
        assert not pid_file.exists()
    finally:
        service.close()


def test_pid_file_of_a_live_process_refuses_the_start(tmp_path: Path) -> None:
    port = free_port()
    pid_file = tmp_path / "rs.pid"
    pid_file.write_text(f"{os.getpid()}\n")    # this test's own process: alive
    cfg = _cfg(tmp_path, port, head=f'pid_file = "{pid_file}"\n')
    service = Service(cfg, tmp_path)
    try:
        assert service.proc.wait(timeout=30) == 1, service.log()
        assert f"pid file {pid_file}: process {os.getpid()} is running" in service.log(), service.log()
        assert f"{cfg}:1:1:" in service.log()
        assert pid_file.read_text() == f"{os.getpid()}\n"   # left alone
    finally:
        service.close()


def test_stale_pid_file_is_replaced(tmp_path: Path) -> None:
    pid_file = tmp_path / "rs.pid"
    pid_file.write_text("999999999\n")
    port = free_port()
    service = Service(_cfg(tmp_path, port), tmp_path, args=("--pid-file", str(pid_file)))
    try:
        service.wait_for("routescript started")
        assert pid_file.read_text() == f"{service.proc.pid}\n"
    finally:
        assert service.terminate() == 0
        service.close()


# ------------------------------------------------------------------ privileges with workers
def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@needs_root
def test_two_workers_all_run_as_nobody(tmp_path: Path, short_dir: Path) -> None:
    """With udp_workers = 2 the supervisor binds a port below 1024 as root, writes its pid file, then it
    and both workers run as nobody:nogroup; the port is served; SIGTERM stops all with 0."""
    python, nobody, nogroup = nobody_setup()
    port = _free_low_port()
    pid_file = short_dir / "rs.pid"
    cfg = _cfg(tmp_path, port, workers=2)
    service = Service(cfg, tmp_path, args=("-u", "nobody", "-g", "nogroup", "-P", str(pid_file)),
                      python=python)
    try:
        service.wait_for("routescript started")
        pids = [service.proc.pid, *_children(service.proc.pid)]
        assert len(pids) == 3, (pids, service.log())
        for pid in pids:
            uids, gids, groups = _ids(pid)
            assert uids == [nobody.pw_uid] * 4, (pid, uids)
            assert gids == [nogroup.gr_gid] * 4, (pid, gids)
            assert 0 not in groups, groups
        _served_by(port)
        assert pid_file.read_text() == f"{service.proc.pid}\n"
        assert service.terminate() == 0, service.log()
    finally:
        service.close()


def test_unknown_user_flag_with_workers_is_refused(tmp_path: Path) -> None:
    port = free_port()
    res = routescript_run(_cfg(tmp_path, port, workers=2), "-u", "no-such-user-rs22")
    assert res.returncode == 1, res.stderr
    assert "-u no-such-user-rs22: no such user" in res.stderr, res.stderr


# ------------------------------------------------------------------ run flags
def routescript_run(cfg: Path, *args: str,
                    env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`routescript run` that is expected to refuse to start (bounded)."""
    return subprocess.run([sys.executable, "-m", "routescript", "run", str(cfg), *args], capture_output=True,
                          text=True, timeout=30, cwd=ROOT, env={**_env(), **(env or {})}, check=False)


@pytest.mark.parametrize(("args", "message"), [
    (("--chroot", "/no-such-dir-rs22"), "chroot directory \"/no-such-dir-rs22\" does not exist"),
    (("--log-level", "7"), "--log-level 7: log level 7 out of range (-3 .. 4)"),
    (("--log-level", "loud"), "--log-level loud: expects a log level"),
    (("--listen", "sctp:127.0.0.1:5060"),
     "--listen sctp:127.0.0.1:5060: socket \"sctp:127.0.0.1:5060\": protocol 'sctp' is not supported"),
    (("-g", "no-such-group-rs22"), "-g no-such-group-rs22: no such group"),
])
def test_bad_flag_values_are_refused(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    res = routescript_run(_cfg(tmp_path, free_port()), *args)
    assert res.returncode == 1, res.stderr
    assert message in res.stderr, res.stderr


def test_listen_adds_a_socket_and_log_level_overrides(tmp_path: Path) -> None:
    port, extra = free_port(), free_port()
    cfg = _cfg(tmp_path, port, head="", extra='loadmodule "xlog.so"',
               route='xlog("L_DBG", "debug line $rm\\n"); sl_send_reply(200, "OK");')
    service = Service(cfg, tmp_path,
                      args=("--listen", f"udp:127.0.0.1:{extra}", "--log-level", "L_DBG", "-F"))
    try:
        service.wait_for("routescript started")
        assert f"listening on udp:127.0.0.1:{port}, udp:127.0.0.1:{extra}" in service.log(), service.log()
        _served_by(extra)
        _served_by(port)
        service.wait_for("debug line OPTIONS", count=2)   # log_level 3 in the script; the flag says 4
    finally:
        assert service.terminate() == 0
        service.close()


# ------------------------------------------------------------------ secrets
def test_env_in_modparam_and_route(tmp_path: Path) -> None:
    """$env(NAME) in a modparam value is the variable's value (the database file here), and $env(NAME)
    in a route reads it at run time."""
    port = free_port()
    folder = tmp_path / "data"
    folder.mkdir()
    cfg = _cfg(tmp_path, port, extra=f"""loadmodule "tm.so"
loadmodule "db_sqlite.so"
loadmodule "presence.so"
modparam("presence", "db_url", "sqlite://{tmp_path}/$env(RS_DB_FOLDER)/$env(RS_DB_NAME)")
""", route='sl_send_reply(200, "$env(RS_REASON)");')
    env = {"RS_DB_FOLDER": "data", "RS_DB_NAME": "secret.sqlite", "RS_REASON": "Fine Thanks"}
    service = Service(cfg, tmp_path, env=env)
    try:
        service.wait_for("routescript started")
        assert (folder / "secret.sqlite").exists()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.bind(("127.0.0.1", 0))
            me = s.getsockname()[1]
            s.sendto((f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-e\r\n"
                      f"From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: env-{me}\r\n"
                      "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
                     ("127.0.0.1", port))
            data, _ = s.recvfrom(65536)
        assert data.startswith(b"SIP/2.0 200 Fine Thanks\r\n"), data
    finally:
        assert service.terminate() == 0
        service.close()


def test_unset_env_in_modparam_is_a_load_error(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, free_port(), extra="""loadmodule "tm.so"
loadmodule "db_sqlite.so"
loadmodule "presence.so"
modparam("presence", "db_url", "postgres://rs:$env(RS_UNSET_PASSWORD)@127.0.0.1/rs")
""")
    env = {k: v for k, v in _env().items() if k != "RS_UNSET_PASSWORD"}
    res = subprocess.run([sys.executable, "-m", "routescript", "check", str(cfg)], capture_output=True,
                         text=True, timeout=30, cwd=ROOT, env=env, check=False)
    assert res.returncode == 1, res.stdout
    assert (f"{cfg}:9:1: modparam(\"presence\", \"db_url\"): $env(RS_UNSET_PASSWORD): environment variable "
            "RS_UNSET_PASSWORD is not set") in res.stderr, res.stderr


# ------------------------------------------------------------------ logs
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[\d+\] "
                       r"NOTICE:routescript\.core: routescript started: ", re.M)


def test_text_log_has_the_year_and_milliseconds(tmp_path: Path) -> None:
    service = Service(_cfg(tmp_path, free_port()), tmp_path)
    try:
        service.wait_for("routescript started")
        assert TEXT_LINE.search(service.log()), service.log()
    finally:
        assert service.terminate() == 0
        service.close()


def test_json_log_format(tmp_path: Path) -> None:
    service = Service(_cfg(tmp_path, free_port(), head='stderror_log_format = "json"\n'), tmp_path)
    try:
        service.wait_for("routescript started")
        assert service.terminate() == 0
        entries = [json.loads(line) for line in service.log().splitlines() if line.strip()]
        started = next(e for e in entries if e["message"].startswith("routescript started"))
        assert started["level"] == "NOTICE" and started["module"] == "routescript.core", started
        assert started["pid"] == service.proc.pid
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", started["time"]), started
    finally:
        service.close()


def test_json_cee_is_refused(tmp_path: Path) -> None:
    res = routescript("check", str(_cfg(tmp_path, free_port(), head='syslog_log_format = "json_cee"\n')))
    assert res.returncode == 1
    assert "json_cee, the CEE schema, is not implemented" in res.stderr, res.stderr


@pytest.mark.parametrize("workers", WORKERS)
def test_log_stderror_no_logs_to_syslog(tmp_path: Path, short_dir: Path, workers: int) -> None:
    """log_stderror = no (OpenSIPS 2.x: log to syslog), syslog_facility LOG_LOCAL0, syslog_name: the lines
    arrive on the syslog socket as <PRI>name[pid]: ..., none on stderr."""
    log_socket = short_dir / "log"
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(str(log_socket))
    syslog.settimeout(START_TIMEOUT)
    head = (f'log_stderror = no\nsyslog_facility = LOG_LOCAL0\nsyslog_name = "rs-test"\n'
            f'syslog_socket = "{log_socket}"\n')
    service = Service(_cfg(tmp_path, free_port(), workers=workers, head=head), tmp_path)
    try:
        lines: list[str] = []
        while not any("routescript started" in line for line in lines):
            lines.append(syslog.recv(65536).decode())
        started = next(line for line in lines if "routescript started" in line)
        # LOG_LOCAL0 (16) * 8 + notice (5) = 133
        tag = rf"<133>rs-test\[{service.proc.pid}\]: "
        assert re.match(tag + r"NOTICE:routescript\.\w+: routescript started", started), started
        assert service.terminate() == 0
        assert "routescript started" not in service.log(), service.log()
    finally:
        service.close()
        syslog.close()


# ------------------------------------------------------------------ graceful stop
@pytest.mark.asyncio
@pytest.mark.parametrize("workers", WORKERS)
async def test_sigterm_during_a_publish_burst_keeps_every_acknowledged_publish(tmp_path: Path,
                                                                            workers: int) -> None:
    """150 PUBLISHes at once, SIGTERM once some are answered: every one answered 200 is in presentity
    after the exit, and the exit status is 0 within the documented bound."""
    port = free_port()
    db = tmp_path / "presence.sqlite"
    cfg = presence_cfg(tmp_path, port, db=db, workers=workers, affinity="callid" if workers > 1 else None)
    service = Service(cfg, tmp_path)
    try:
        service.wait_for("routescript started")
        async with await SipTestClient.start("udp", ("127.0.0.1", port), user="pub", timeout=8) as client:
            answered: list[str] = []

            async def publish(i: int) -> None:
                uri = f"sip:u{i}@127.0.0.1:{port}"
                resp = await client.send_request(client.publish(uri, pidf(uri), expires=600))
                if resp.status == 200:
                    answered.append(resp.header("SIP-ETag") or "")

            tasks = [asyncio.ensure_future(publish(i)) for i in range(150)]
            while len(answered) < 20:
                await asyncio.sleep(0.001)
                assert not all(t.done() for t in tasks), service.log()
            service.proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*tasks, return_exceptions=True)
        started = time.monotonic()
        code = await asyncio.to_thread(service.proc.wait, 30)
        took = time.monotonic() - started
        assert code == 0, service.log()
        assert took < 2 * 5 + 5, took      # 2 x shutdown_timeout, and the margin (docs/operations.md)
        with sqlite3.connect(db) as conn:
            stored = {row[0] for row in conn.execute("SELECT etag FROM presentity")}
        assert len(answered) >= 20
        assert set(answered) <= stored, (len(set(answered) - stored), service.log())
    finally:
        service.close()


# ------------------------------------------------------------------ the systemd unit
UNIT = ROOT / "contrib" / "routescript.service"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    unit = tmp_path / "routescript.service"
    # ExecStart must name an executable that exists here: this environment's routescript
    exe = Path(sys.executable).with_name("routescript")
    assert exe.exists(), exe
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/routescript", str(exe)))
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0 and not res.stderr.strip() and not res.stdout.strip(), res.stdout + res.stderr
    text = UNIT.read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=", "KillSignal=SIGTERM"):
        assert line in text, line
