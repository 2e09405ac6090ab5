"""The proxy end-to-end harness: `routescript run examples/proxy.cfg` between two SIPp processes on
loopback - a callee (SIPp in server mode, started first, on its own port) and a caller (SIPp in client
mode, sending to the proxy with the callee's address in the request URI). Every SIPp run is bounded:
SIPp's own -timeout (the call fails with an error when it runs out) and a kill after that plus a margin,
so a proxy that loses a message fails the test in seconds instead of hanging CI.

The scenarios (tests/sipp/proxy/*.xml) check on both sides that the proxy is on the path: the caller
wants the proxy's Record-Route in the 2xx and sends ACK/BYE along the route set; the callee wants two
Vias, the Record-Route, and no Route header left in what loose_route() forwarded."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from rs_e2e import ROOT, RunningServer, free_port, start

SIPP = shutil.which("sipp")
SCENARIOS = ROOT / "tests" / "sipp" / "proxy"
EXAMPLE = ROOT / "examples" / "proxy.cfg"
# The example's voicemail destination (failure_route[missed_call]); tests point it at a SIPp callee.
EXAMPLE_VOICEMAIL = "sip:127.0.0.1:5080"
SIPP_TIMEOUT_S = 10          # SIPp's own bound on one call (-timeout, then -timeout_error: rc != 0)
KILL_MARGIN_S = 10           # then we kill it


def proxy_cfg(tmp_path: Path, port: int, *, voicemail_port: int, proto: str = "udp", workers: int = 1,
              fr_timeout: int = 2, fr_inv_timeout: int = 3, log_level: int = 3) -> Path:
    """examples/proxy.cfg on `port`, its voicemail at 127.0.0.1:voicemail_port over `proto`, short tm
    timers (a callee that does not answer ends within seconds), `workers` worker processes."""
    text = EXAMPLE.read_text()
    assert ":5060" in text and EXAMPLE_VOICEMAIL in text, "examples/proxy.cfg changed shape"
    text = text.replace(":5060", f":{port}")
    vm = f"sip:127.0.0.1:{voicemail_port}" + (";transport=tcp" if proto == "tcp" else "")
    text = text.replace(f'"{EXAMPLE_VOICEMAIL}"', f'"{vm}"')
    text = re.sub(r'modparam\("tm", "fr_timeout", \d+\)', f'modparam("tm", "fr_timeout", {fr_timeout})', text)
    text = re.sub(r'modparam\("tm", "fr_inv_timeout", \d+\)',
                  f'modparam("tm", "fr_inv_timeout", {fr_inv_timeout})', text)
    text = re.sub(r"^(x?log_level)\s*=\s*-?\d+", rf"\1 = {log_level}", text, flags=re.M)
    if workers > 1:
        text = f"udp_workers = {workers}\ntcp_workers = {workers}\n" + text
    cfg = tmp_path / f"proxy-{proto}-{workers}w.cfg"
    cfg.write_text(text)
    return cfg


@dataclass
class Proxy:
    """A running proxy: where to send to, which transport the tests use, where its voicemail listens."""

    server: RunningServer
    port: int
    proto: str
    workers: int
    voicemail_port: int
    workdir: Path

    def callee(self, port: int) -> str:
        """The host part of a request URI naming a SIPp callee on `port` (over the proxy's transport)."""
        return f"127.0.0.1:{port}" + (";transport=tcp" if self.proto == "tcp" else "")


def start_proxy(workdir: Path, proto: str, workers: int, **timers: int) -> Proxy:
    workdir.mkdir(parents=True, exist_ok=True)
    port, vm = free_port(), free_port()
    cfg = proxy_cfg(workdir, port, voicemail_port=vm, proto=proto, workers=workers, **timers)
    return Proxy(start(cfg, workdir), port, proto, workers, vm, workdir)


def _bound(port: int, proto: str) -> bool:
    """Whether something on this machine listens on 127.0.0.1:port (/proc/net: no probe packet that a
    SIPp callee would take for a call)."""
    table = Path("/proc/net/udp" if proto == "udp" else "/proc/net/tcp").read_text().splitlines()[1:]
    want = f"0100007F:{port:04X}"
    # TCP: state 0A is LISTEN
    return any(cols[1] == want and (proto == "udp" or cols[3] == "0A")
               for cols in (line.split() for line in table))


@dataclass
class SippResult:
    name: str
    rc: int | None       # None: we killed it
    output: str          # SIPp's screen plus its error file: what a failed assert shows

    @property
    def ok(self) -> bool:
        return self.rc == 0


class Sipp:
    """One SIPp process for one call (-m 1), its files in `workdir`. `wait()` is bounded."""

    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        assert SIPP is not None
        self.name, self.workdir = name, workdir
        self.errors = workdir / f"{name}.errors"
        self.messages = workdir / f"{name}.messages"
        cmd = [SIPP, *args, "-m", "1", "-nostdin", "-timeout", f"{SIPP_TIMEOUT_S}s", "-timeout_error",
               "-trace_err", "-error_file", str(self.errors),
               "-trace_msg", "-message_file", str(self.messages)]
        self._out = open(workdir / f"{name}.out", "w+")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT)

    def wait(self, timeout: float = SIPP_TIMEOUT_S + KILL_MARGIN_S) -> SippResult:
        rc: int | None
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            rc = None
        self._out.seek(0)
        screen = self._out.read()
        self._out.close()
        errors = self.errors.read_text(errors="replace") if self.errors.exists() else ""
        return SippResult(self.name, rc, f"--- {self.name} rc={rc}\n{errors[-3000:]}\n{screen[-1500:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if not self._out.closed:
            self._out.close()


def _transport(proto: str) -> str:
    return "u1" if proto == "udp" else "t1"


def start_callee(scenario: str, port: int, proto: str, workdir: Path, *extra: str,
                 name: str | None = None) -> Sipp:
    """A SIPp callee (server mode) on 127.0.0.1:port, returned once it listens."""
    sipp = Sipp(name or Path(scenario).stem, ["-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1",
                                            "-p", str(port), "-t", _transport(proto), *extra], workdir)
    deadline = time.monotonic() + 5
    while not _bound(port, proto):
        if sipp.proc.poll() is not None or time.monotonic() > deadline:
            sipp.kill()
            raise AssertionError(f"SIPp callee {scenario} did not listen on {proto}:{port}:\n"
                                 + sipp.wait(0).output)
        time.sleep(0.02)
    return sipp


def run_caller(scenario: str, proxy: Proxy, callee_port: int, workdir: Path, *extra: str,
               user: str = "bob") -> SippResult:
    """A SIPp caller (client mode) to the proxy for sip:user@<callee>, run to its end (bounded); its
    files (screen, errors, messages) in workdir."""
    args = [f"127.0.0.1:{proxy.port}", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1",
            "-p", str(free_port()), "-t", _transport(proxy.proto),
            "-s", user, "-key", "callee", proxy.callee(callee_port), *extra]
    sipp = Sipp(Path(scenario).stem, args, workdir)
    return sipp.wait()


def outcome(*results: SippResult) -> tuple[bool, str]:
    """(all passed, every side's output) - for `assert ok, text`."""
    return all(r.ok for r in results), "\n".join(r.output for r in results)


__all__ = ["SCENARIOS", "SIPP", "Proxy", "Sipp", "SippResult", "start_proxy", "start_callee", "run_caller",
           "outcome", "proxy_cfg", "free_port"]
