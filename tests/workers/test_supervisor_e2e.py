"""`routescript run` with worker processes (issue 18, docs/workers.md build plan step 4), over real
processes and loopback sockets: udp_workers = 2.

- both workers answer OPTIONS (each answer's log line carries the PID of the process that ran the script);
- MI ps (answered by the supervisor over mi_http) lists the attendant and two workers with their PIDs;
  other MI commands are answered by worker 0;
- `kill -9` of a worker: the other keeps answering, the slot comes back with a new PID, Epoch 2, Restarts 1;
- SIGTERM stops the supervisor and every worker within a bounded time, and frees the port;
- a worker whose start fails (a module's start error) makes `routescript run` exit 1 with that error;
- udp_workers = 1 runs as one process, as without the parameter, with no warning.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from routescript.testing.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0     # the supervisor and two workers on a loaded 2-core machine
STOP_BOUND = 20.0        # SIGTERM -> every process gone (the supervisor's own SIGKILL comes at 15 s)
ANSWERED = re.compile(r"\[(\d+)\] .*ANSWERED ")


def _cfg(tmp_path: Path, sip: int, http: int, *, extra: str = "", workers: int = 2) -> Path:
    cfg = tmp_path / "workers.cfg"
    cfg.write_text(f"""log_level = 3
udp_workers = {workers}
socket = udp:127.0.0.1:{sip}
loadmodule "proto_udp.so"
loadmodule "signaling.so"
loadmodule "sl.so"
loadmodule "xlog.so"
loadmodule "httpd.so"
loadmodule "mi_http.so"
modparam("httpd", "ip", "127.0.0.1")
modparam("httpd", "port", {http})
{extra}
route {{
    xlog("L_NOTICE", "ANSWERED $ci\\n");
    sl_send_reply(200, "OK");
}}
""")
    return cfg


class Running:
    """`routescript run cfg` in the background, stderr in a file."""

    def __init__(self, cfg: Path, tmp_path: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.log_path = tmp_path / "run.stderr"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - open for the child's life, closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "routescript", "run", str(cfg)], cwd=ROOT,
                                     env=env, stdout=subprocess.DEVNULL, stderr=self._log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"routescript exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_BOUND)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture
def server(tmp_path: Path, ports: tuple[int, int]) -> Iterator[Running]:
    run = Running(_cfg(tmp_path, *ports), tmp_path)
    try:
        run.wait_for("routescript started")
        yield run
    finally:
        run.stop()


def mi(http: int, method: str, params: Any = None) -> Any:
    body = {"jsonrpc": "2.0", "method": method, "id": 1, **({"params": params} if params is not None else {})}
    req = urllib.request.Request(f"http://127.0.0.1:{http}/mi", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:   # noqa: S310 - loopback, our own server
        answer = json.loads(resp.read())
    assert "error" not in answer, answer
    return answer["result"]


def options(sip: int, call_id: str, timeout: float = 2.0) -> bytes:
    """Send one OPTIONS from a fresh socket; the reply's status line."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        port = s.getsockname()[1]
        s.sendto((f"OPTIONS sip:ping@127.0.0.1:{sip} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                  "Max-Forwards: 70\r\n"
                  f"From: <sip:t@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\n"
                  f"To: <sip:ping@127.0.0.1:{sip}>\r\n"
                  f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(),
                 ("127.0.0.1", sip))
        data, _ = s.recvfrom(65536)
    return data.split(b"\r\n", 1)[0]


def worker_pids(http: int) -> dict[int, int | None]:
    """slot -> PID from MI ps (the supervisor's answer)."""
    rows = mi(http, "ps")["Processes"]
    return {row["ID"] - 1: row["PID"] for row in rows if row["Type"].startswith("SIP worker")}


def test_both_workers_answer_and_ps_lists_them(server: Running, ports: tuple[int, int]) -> None:
    sip, http = ports
    rows = mi(http, "ps")["Processes"]
    assert rows[0] == {"ID": 0, "PID": server.proc.pid, "Type": "attendant"}
    workers = rows[1:]
    assert [(r["ID"], r["Type"], r["Epoch"], r["Restarts"]) for r in workers] == [
        (1, f"SIP worker w0 udp:127.0.0.1:{sip}", 1, 0), (2, f"SIP worker w1 udp:127.0.0.1:{sip}", 1, 0)]
    pids = {r["PID"] for r in workers}
    assert len(pids) == 2 and server.proc.pid not in pids
    # The kernel gives each datagram to one reader: over enough requests both workers answer.
    answered: set[int] = set()
    deadline = time.monotonic() + 20
    n = 0
    while answered != pids and time.monotonic() < deadline:
        for _ in range(20):
            n += 1
            assert options(sip, f"both-{n}") == b"SIP/2.0 200 OK"
        answered = {int(pid) for pid in ANSWERED.findall(server.log())}
    assert answered == pids, server.log()
    # each worker reads some of the other's queue probes (one shared socket): probes, not bad SIP
    assert "malformed" not in server.log(), server.log()
    # a command the supervisor does not run itself is answered by worker 0
    stats = mi(http, "get_statistics", {"statistics": ["sl:sent_replies"]})
    assert 0 < stats["sl:sent_replies"] <= n


def test_killed_worker_is_restarted_in_its_slot(server: Running, ports: tuple[int, int]) -> None:
    sip, http = ports
    before = worker_pids(http)
    os.kill(before[1], signal.SIGKILL)
    # the other worker reads the socket alone meanwhile: nothing is lost
    for i in range(10):
        assert options(sip, f"during-{i}") == b"SIP/2.0 200 OK"
    _wait_restarted(server, http, 1, before[1])
    rows = {r["ID"] - 1: r for r in mi(http, "ps")["Processes"] if r["ID"] > 0}
    assert rows[1]["Epoch"] == 2 and rows[1]["Restarts"] == 1
    assert rows[0]["PID"] == before[0] and rows[0]["Restarts"] == 0
    assert f"w1 (pid {before[1]}) exited (killed by SIGKILL)" in server.log()
    for i in range(10):
        assert options(sip, f"after-{i}") == b"SIP/2.0 200 OK"
    time.sleep(1.0)   # the restarted worker stays up: no second exit, no error in its start
    assert "exited" not in server.log().split("w1 restarted", 1)[1], server.log()
    assert "Traceback" not in server.log(), server.log()


def test_sigterm_stops_every_process(server: Running, ports: tuple[int, int]) -> None:
    sip, http = ports
    pids = list(worker_pids(http).values())
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=STOP_BOUND) == 0, server.log()
    assert time.monotonic() - started < STOP_BOUND
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", sip))   # the port is free again


def test_worker_start_failure_exits_1_with_its_error(tmp_path: Path, ports: tuple[int, int]) -> None:
    sip, http = ports
    # presence refuses a database whose presentity table has another version, at its start (in w0)
    db = tmp_path / "old.sqlite"
    init = subprocess.run([sys.executable, "-m", "routescript", "db", "init", f"sqlite://{db}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert init.returncode == 0, init.stderr
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE version SET table_version = 4 WHERE table_name = 'presentity'")
    extra = (f'loadmodule "tm.so"\nloadmodule "presence.so"\n'
             f'modparam("presence", "db_url", "sqlite://{db}")\n')
    run = Running(_cfg(tmp_path, sip, http, extra=extra), tmp_path)
    try:
        code = run.proc.wait(timeout=START_TIMEOUT)
    finally:
        run.stop()
    text = run.log()
    assert code == 1, text
    assert "module 'presence' failed to start" in text, text
    assert "table 'presentity' has version 4, routescript needs version 5" in text, text
    assert "aborting: a worker process failed to start" in text, text
    assert "w1 forked" not in text, text   # worker 0 failed: the others were never forked


def test_one_worker_is_one_process_without_a_warning(tmp_path: Path, ports: tuple[int, int]) -> None:
    sip, http = ports
    run = Running(_cfg(tmp_path, sip, http, workers=1), tmp_path)
    try:
        run.wait_for("routescript started")
        assert "WARNING" not in run.log() and "runs as 1 process" not in run.log(), run.log()
        assert mi(http, "ps")["Processes"] == [{"ID": 0, "PID": run.proc.pid, "Type": "main (event loop)"}]
        assert options(sip, "single") == b"SIP/2.0 200 OK"
    finally:
        run.stop()


def _replies_after(server: Running, sip: int, tag: str, want: bytes, *, count: int = 40) -> set[int]:
    """Send `count` OPTIONS; every reply must be `want`; the PIDs that answered them."""
    mark = len(server.log())
    for i in range(count):
        assert options(sip, f"{tag}-{i}") == want, server.log()
    return {int(pid) for pid in ANSWERED.findall(server.log()[mark:])}


def test_reload_reaches_every_worker_over_mi_and_sighup(server: Running, ports: tuple[int, int],
                                                         tmp_path: Path) -> None:
    sip, http = ports
    pids = set(worker_pids(http).values())
    cfg = tmp_path / "workers.cfg"
    cfg.write_text(cfg.read_text().replace('sl_send_reply(200, "OK")', 'sl_send_reply(200, "Reloaded")'))
    assert mi(http, "reload_routes") == "OK"
    answered: set[int] = set()
    for round_ in range(10):   # both workers answer with the new script
        answered |= _replies_after(server, sip, f"mi{round_}", b"SIP/2.0 200 Reloaded")
        if answered == pids:
            break
    assert answered == pids, server.log()
    cfg.write_text(cfg.read_text().replace('"Reloaded"', '"Hupped"'))
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while server.log().count(" reloaded (") < 4 and time.monotonic() < deadline:   # 2 by MI, 2 by SIGHUP
        time.sleep(0.1)
    answered = set()
    for round_ in range(10):
        answered |= _replies_after(server, sip, f"hup{round_}", b"SIP/2.0 200 Hupped")
        if answered == pids:
            break
    assert answered == pids, server.log()


def _wait_restarted(server: Running, http: int, slot: int, old_pid: int,
                    timeout: float = 30) -> dict[str, Any]:
    """Until MI ps shows `slot` running again under another PID; its row."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = next(r for r in mi(http, "ps")["Processes"] if r["ID"] == slot + 1)
        if row["PID"] not in (None, old_pid) and f"w{slot} restarted" in server.log():
            return dict(row)
        time.sleep(0.1)
    raise AssertionError(f"w{slot} not restarted:\n{server.log()}")


def test_startup_route_runs_once_and_timer_routes_in_worker_0(tmp_path: Path, ports: tuple[int, int]) -> None:
    sip, http = ports
    extra = ('startup_route {\n    xlog("L_NOTICE", "STARTUP\\n");\n}\n'
             'timer_route[tick, 1] {\n    xlog("L_NOTICE", "TICK\\n");\n}\n')
    run = Running(_cfg(tmp_path, sip, http, extra=extra), tmp_path)
    try:
        run.wait_for("routescript started")
        first = worker_pids(http)
        time.sleep(2.5)
        assert set(re.findall(r"\[(\d+)\] .*TICK", run.log())) == {str(first[0])}, run.log()
        os.kill(first[0], signal.SIGKILL)   # worker 0 again: its timers come back, startup_route does not
        row = _wait_restarted(run, http, 0, first[0])
        mark = len(run.log())
        time.sleep(2.5)
        assert set(re.findall(r"\[(\d+)\] .*TICK", run.log()[mark:])) == {str(row["PID"])}, run.log()
        assert re.findall(r"\[(\d+)\] .*STARTUP", run.log()) == [str(first[0])], run.log()
    finally:
        run.stop()


def test_a_worker_that_stops_answering_pings_is_killed_and_restarted(server: Running,
                                                                      ports: tuple[int, int]) -> None:
    _sip, http = ports
    before = worker_pids(http)
    os.kill(before[1], signal.SIGSTOP)   # alive, but deaf: only the watchdog can tell
    row = _wait_restarted(server, http, 1, before[1], timeout=40)
    assert row["Restarts"] == 1
    assert f"w1 (pid {before[1]}) answered no ping for" in server.log()
    assert f"w1 (pid {before[1]}) exited (killed by SIGKILL)" in server.log()
