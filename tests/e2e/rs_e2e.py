"""Run `routescript run CFG` as a subprocess on loopback for end-to-end tests. Bounded everywhere:
start-up waits at most START_TIMEOUT, and the process is always stopped (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from routescript.testing.ports import free_port  # noqa: F401 - the e2e tests import it from here

START_TIMEOUT = 15.0
ROOT = Path(__file__).resolve().parents[2]



def routescript(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion."""
    return subprocess.run([sys.executable, "-m", "routescript", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=_env(), check=False)  # callers check returncode


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class RunningServer:
    """`routescript run cfg` in the background; stderr captured to a file (read with .log())."""

    stop_bound = 8.0   # seconds stop() waits after SIGTERM before SIGKILL (subclasses with their own argv)

    def __init__(self, cfg: Path, workdir: Path, *, flags: Sequence[str] = (), prefix: Sequence[str] = (),
                 stop_bound: float = stop_bound) -> None:
        """`flags` follow `run CFG`; `prefix` goes before the interpreter (unshare ...); `stop_bound`: the
        seconds stop() waits after SIGTERM before SIGKILL."""
        self.cfg = cfg
        self.stop_bound = stop_bound
        self.log_path = workdir / f"{cfg.stem}.stderr"
        # open for the child's whole life (not a `with`): closed in stop()
        self._log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "routescript", "run", str(cfg), *flags],
                                     cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=self._log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = START_TIMEOUT, *, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"routescript exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.log()}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        """SIGTERM, wait a little, SIGKILL if needed. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_bound)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode


def start(cfg: Path, workdir: Path) -> RunningServer:
    """`routescript run cfg` once it has logged that it started."""
    server = RunningServer(cfg, workdir)
    server.wait_for("routescript started")
    return server


@contextmanager
def run_server(cfg: Path, workdir: Path) -> Iterator[RunningServer]:
    """start(cfg, workdir), stopped when the block ends however it ends (a fixture's teardown)."""
    server = start(cfg, workdir)
    try:
        yield server
    finally:
        server.stop()
