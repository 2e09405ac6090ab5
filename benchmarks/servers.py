"""The servers under test, started and stopped by the harness: `routescript run` on a temporary copy of
an example config (free port, temporary SQLite file, quieter logs) and the pure-Python ceiling."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from routescript.testing.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
HERE = Path(__file__).resolve().parent
START_TIMEOUT = 20.0



def bench_config(example: str, workdir: Path, port: int, *, log_level: int | None = 1,
                 db_url: str | None = None, workers: int | None = None) -> Path:
    """A copy of examples/<example> (or of the config file `example` names, when it is a path) listening on
    `port`, its SQLite db_url (if any) in `workdir` - or every db_url set to `db_url` (e.g. a PostgreSQL
    database) - and log_level/xlog_level lowered to `log_level` (None keeps the example's): a benchmark
    measures SIP work, not a log line per request written to a pipe. `workers`: the config's
    udp_workers/children/tcp_workers lines replaced by `udp_workers = N` and `tcp_workers = N`."""
    source = Path(example) if "/" in example else EXAMPLES / example
    text = source.read_text().replace(":5060", f":{port}")
    if db_url is not None:
        text = re.sub(r'(modparam\("[a-z_]+",\s*"db_url",\s*)"[^"]*"\)', lambda m: f'{m.group(1)}"{db_url}")',
                      text)
    else:
        db = workdir / "bench.sqlite"
        text = re.sub(r'(modparam\("[a-z_]+",\s*"db_url",\s*)"sqlite:[^"]*"\)', rf'\1"sqlite://{db}")', text)
    if log_level is not None:
        text = re.sub(r"^(x?log_level)\s*=\s*-?\d+", rf"\1 = {log_level}", text, flags=re.M)
    if workers is not None:
        text = re.sub(r"^\s*(udp_workers|children|tcp_workers)\s*=.*$\n?", "", text, flags=re.M)
        text = f"udp_workers = {workers}\ntcp_workers = {workers}\n" + text
    # The example's MI port (httpd) too: a free one, so two runs (or a quick-start server) never collide.
    text = re.sub(r'(modparam\("httpd",\s*"port",\s*)\d+\)', lambda m: f"{m.group(1)}{free_port()})", text)
    workdir.mkdir(parents=True, exist_ok=True)   # `--only latency` runs before any step made it
    cfg = workdir / source.name
    cfg.write_text(text)
    return cfg


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Server:
    """A server process; `stop()` always ends it (SIGTERM, then SIGKILL)."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_udp_ready(server: Server, timeout: float) -> None:
    """Wait until the server answers an OPTIONS on UDP (any response will do)."""
    deadline = time.monotonic() + timeout
    n = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.3)
        lport = s.getsockname()[1]
        while time.monotonic() < deadline:
            if not server.alive():
                raise RuntimeError(f"{server.name} exited ({server.proc.returncode}):\n"
                                   f"{server.log()[-3000:]}")
            n += 1
            msg = (f"OPTIONS sip:ready@127.0.0.1:{server.port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bKready{n}\r\n"
                   "Max-Forwards: 70\r\n"
                   f"From: <sip:bench@127.0.0.1>;tag=r{n}\r\nTo: <sip:ready@127.0.0.1>\r\n"
                   f"Call-ID: ready{n}-{os.getpid()}@bench\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
            s.sendto(msg.encode(), ("127.0.0.1", server.port))
            try:
                s.recvfrom(65535)
                return
            except (TimeoutError, ConnectionRefusedError):
                time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} did not answer on udp:127.0.0.1:{server.port} within {timeout}s:\n"
                       f"{server.log()[-3000:]}")


def start_routescript(example: str, workdir: Path, *, log_level: int | None = 1,
                      db_url: str | None = None, workers: int | None = None) -> Server:
    """`routescript run` on a temporary copy of examples/<example> (or of a config file path); returns once
    it answers on UDP. `db_url`: every db_url of the config points there instead of a temporary SQLite
    file. `workers`: run that many worker processes (udp_workers/tcp_workers; see bench_config)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = bench_config(example, workdir, port, log_level=log_level, db_url=db_url, workers=workers)
    log_path = workdir / f"{cfg.stem}.stderr"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "routescript", "run", str(cfg)], cwd=ROOT, env=_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    server = Server(f"routescript {example}", port, proc, log_path)
    _wait_udp_ready(server, START_TIMEOUT)
    return server


def start_py_ceiling(workdir: Path) -> Server:
    """benchmarks/py_ceiling.py (stdlib asyncio, fixed 200 OK) with this Python, on a free port."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / "py_ceiling.stderr"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(HERE / "py_ceiling.py"), "--port", str(port)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    server = Server("py_ceiling", port, proc, log_path)
    _wait_udp_ready(server, START_TIMEOUT)
    return server


def start_py_proxy_ceiling(workdir: Path) -> Server:
    """benchmarks/py_proxy_ceiling.py (stdlib asyncio, stateless relay) with this Python, on a free port."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = workdir / "py_proxy_ceiling.stderr"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(HERE / "py_proxy_ceiling.py"), "--port", str(port)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    server = Server("py_proxy_ceiling", port, proc, log_path)
    _wait_udp_ready(server, START_TIMEOUT)
    return server
