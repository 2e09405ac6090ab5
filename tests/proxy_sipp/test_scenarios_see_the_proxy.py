"""The proxy scenarios can fail: a caller that reaches the callee directly (no proxy between them) is
refused by both sides - no Record-Route in the 200 for the caller; one Via and no Record-Route in the
INVITE, one Via in the ACK and BYE for the callee. Without this, a scenario whose checks never match
would pass against any proxy, or none."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy_harness import SCENARIOS, SIPP, Sipp, free_port, start_callee

pytestmark = pytest.mark.skipif(
    SIPP is None,
    reason="sipp is not installed (Debian/Ubuntu: apt-get install sip-tester); .ci/run installs it")


def test_a_call_that_bypasses_the_proxy_fails_on_both_sides(tmp_path: Path) -> None:
    port = free_port()
    uas = start_callee("uas_answer.xml", port, "udp", tmp_path)
    try:
        direct = [f"127.0.0.1:{port}", "-sf", str(SCENARIOS / "uac_call.xml"), "-i", "127.0.0.1",
                  "-p", str(free_port()), "-t", "u1", "-s", "bob", "-key", "callee", f"127.0.0.1:{port}"]
        uac = Sipp("uac_call", direct, tmp_path).wait()
        callee = uas.wait()
    finally:
        uas.kill()
    assert uac.rc not in (0, None), uac.output
    assert "header Record-Route: not found" in uac.output, uac.output
    assert callee.rc not in (0, None), callee.output
    assert "Failed regexp match" in callee.output, callee.output
