"""`routescript mi` against a real `routescript run` process: --config discovery (HTTP, and the FIFO
when the configuration has no mi_http), JSON and --yaml output, statistics counting real OPTIONS,
errors as exit status 1, and `kill` stopping the server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from routescript.sip import build_request, generate_branch, generate_tag

CFG = """
log_level = 2
socket = udp:127.0.0.1:{sip_port}
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "httpd.so"
loadmodule "mi_http.so"
loadmodule "mi_fifo.so"
modparam("httpd", "ip", "127.0.0.1")
modparam("httpd", "port", {http_port})
modparam("mi_http", "root", "rsmi")
modparam("mi_http", "enable_kill", 1)
modparam("mi_fifo", "fifo_name", "{fifo}")
modparam("mi_fifo", "reply_dir", "{dir}/")
route {{
    if (is_method("OPTIONS")) {{ sl_send_reply(200, "OK"); exit; }}
    sl_send_reply(501, "Not Implemented");
}}
"""

N = 10
DEADLINE = 15.0


def free_port(kind: int) -> int:
    """A port free now (bound and released); the server binds it right after."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "routescript", "mi", "--timeout", "5", *args],
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    sip_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    fifo = str(tmp_path / "fifo")
    cfg = tmp_path / "run.cfg"
    cfg.write_text(CFG.format(sip_port=sip_port, http_port=http_port, fifo=fifo, dir=tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "routescript", "run", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + DEADLINE
        while True:  # bounded: until the MI answers or the deadline
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                pytest.fail(f"routescript run exited {proc.returncode}: {err}")
            if mi("--config", str(cfg), "uptime").returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail("routescript run did not serve MI in time")
            time.sleep(0.1)
        yield cfg, sip_port, fifo, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def send_options(port: int, count: int) -> int:
    """Send `count` OPTIONS over UDP and return how many 200s came back."""
    ok = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        local = s.getsockname()[1]
        for i in range(count):
            req = build_request("OPTIONS", f"sip:127.0.0.1:{port}", [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{local};branch={generate_branch()};rport"),
                ("Max-Forwards", "70"), ("From", f"<sip:t@127.0.0.1>;tag={generate_tag()}"),
                ("To", f"<sip:127.0.0.1:{port}>"), ("Call-ID", f"cli-e2e-{i}-{generate_tag()}"),
                ("CSeq", "1 OPTIONS")])
            s.sendto(req.to_bytes(), ("127.0.0.1", port))
            data, _ = s.recvfrom(65536)
            ok += data.startswith(b"SIP/2.0 200 ")
    return ok


def test_mi_cli_against_routescript_run(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, sip_port, fifo, proc = served
    assert send_options(sip_port, N) == N

    r = mi("--config", str(cfg), "get_statistics", "rcv_requests", "sl:")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["core:rcv_requests"] >= N and got["sl:2xx_replies"] == N

    r = mi("--config", str(cfg), "--yaml", "get_statistics", "2xx_replies")
    assert r.returncode == 0 and yaml.safe_load(r.stdout) == {"sl:2xx_replies": N}

    r = mi("--config", str(cfg), "which")
    assert r.returncode == 0 and "event_subscribe" in json.loads(r.stdout)

    # errors: a JSON-RPC error, a bad parameter, an unreachable server -> exit 1, message on stderr
    r = mi("--config", str(cfg), "no_such_command")
    assert r.returncode == 1 and r.stdout == "" and "-32601: Method not found" in r.stderr
    r = mi("--config", str(cfg), "get_statistics", "nothing_like_this")
    assert r.returncode == 1 and "404: Statistics Not Found" in r.stderr
    r = mi("--url", "http://127.0.0.1:1/mi", "which")
    assert r.returncode == 1 and "cannot reach" in r.stderr

    # a configuration serving MI only on the FIFO: --config finds the FIFO
    fifo_cfg = tmp_path / "fifo-only.cfg"
    fifo_cfg.write_text("\n".join(line for line in cfg.read_text().splitlines()
                                  if "httpd" not in line and "mi_http" not in line))
    r = mi("--config", str(fifo_cfg), "--yaml", "log_level")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["Processes"][0]["PID"] == proc.pid

    r = mi("--config", str(cfg), "kill")
    assert r.returncode == 0 and json.loads(r.stdout) == "OK"
    assert proc.wait(DEADLINE) == 0
    assert not os.path.exists(fifo)
