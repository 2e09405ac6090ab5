"""SIPp (Debian sip-tester) against `routescript run examples/presence.cfg`: a real client gets 200 to
PUBLISH (initial and modify, SIP-ETag checked) and 200/202 + NOTIFY with the published PIDF to SUBSCRIBE,
over UDP and TCP. Skipped, with the reason in pytest's summary, when the `sipp` binary is not on PATH;
`.ci/run` installs it and fails when it cannot, so CI never skips these."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from presence_e2e import free_port, presence_cfg, run_server

HERE = Path(__file__).resolve().parent
SIPP = shutil.which("sipp")


pytestmark = pytest.mark.skipif(
    SIPP is None,
    reason="sipp is not installed (Debian/Ubuntu: apt-get install sip-tester); .ci/run installs it")


def sipp(scenario: str, port: int, proto: str, tmp_path: Path,
         *extra: str) -> subprocess.CompletedProcess[str]:
    transport = "u1" if proto == "udp" else "t1"
    cmd = [SIPP or "sipp", f"127.0.0.1:{port}", "-sf", str(HERE / scenario), "-i", "127.0.0.1",
           "-t", transport, "-m", "1", "-l", "1", "-timeout", "10s", "-timeout_error", "-nostdin",
           "-trace_err",
           "-error_file", str(tmp_path / f"{scenario}.{proto}.errors"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=tmp_path,
                          check=False)  # callers assert returncode with SIPp's output


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_sipp_publish_then_subscribe(tmp_path: Path, proto: str) -> None:
    port = free_port()
    with run_server(presence_cfg(tmp_path, port), tmp_path) as server:
        pub = sipp("publish.xml", port, proto, tmp_path)
        assert pub.returncode == 0, pub.stdout[-2000:] + pub.stderr[-2000:]
        server.wait_for("PUBLISH accepted: user1@127.0.0.1 event=presence", timeout=5, count=2)
        sub = sipp("subscribe.xml", port, proto, tmp_path, "-key", "pres", "user1",
                   "-key", "note", "Busy - in a meeting")
        assert sub.returncode == 0, sub.stdout[-2000:] + sub.stderr[-2000:]
