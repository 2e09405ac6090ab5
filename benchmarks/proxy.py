"""The proxy scenario (issue 19): SIPp caller -> proxy -> SIPp callee, full calls with Record-Route
(sipp/proxy_uac.xml, sipp/proxy_uas.xml), on `routescript run examples/proxy.cfg` and on
py_proxy_ceiling.py in the same run. The callee is one SIPp in server mode for the whole rate search
(started before the first step, killed after the last); the caller's steps are the usual search
(sipprun.find_max_rate), so the pass rule and the table are the other scenarios'."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.servers import Server
from benchmarks.settings import Settings
from benchmarks.sipprun import SCENARIOS, SIPP, RateResult, find_max_rate
from routescript.testing.ports import free_port

UAC = SCENARIOS / "proxy_uac.xml"
UAS = SCENARIOS / "proxy_uas.xml"
CALLEE_START_S = 5.0


def _udp_bound(port: int) -> bool:
    """Whether a socket is bound on udp 127.0.0.1:port (/proc/net/udp; no probe the callee would see)."""
    want = f"0100007F:{port:04X}"
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(line.split()[1] == want for line in lines)


@contextmanager
def sipp_callee(workdir: Path, settings: Settings) -> Iterator[int]:
    """SIPp answering proxy_uas.xml calls on a free UDP port (yielded) until the block ends. Calls it
    keeps waiting for (a lost ACK or BYE) are dropped after the caller's recv timeout."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [SIPP, "-sf", str(UAS), "-i", "127.0.0.1", "-p", str(port), "-nostdin", "-buff_size", "4194304",
           "-recv_timeout", str(settings.recv_timeout_ms), "-trace_err", "-max_log_size", "2000000"]
    (workdir / "cmd.txt").write_text(" ".join(cmd) + "\n")
    with open(workdir / "sipp.out", "wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + CALLEE_START_S
        while not _udp_bound(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SIPp callee did not start (rc={proc.poll()}); see {workdir}/sipp.out")
            time.sleep(0.02)
        yield port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def find_max_proxy_rate(name: str, server: Server, workdir: Path, settings: Settings) -> RateResult:
    """The highest sustainable rate of full calls through `server` to a SIPp callee."""
    with sipp_callee(workdir / "callee", settings) as callee_port:
        extra = ("-s", "bob", "-key", "callee", f"127.0.0.1:{callee_port}")
        return find_max_rate(name, UAC, server.port, server.pid, workdir, settings, extra)
