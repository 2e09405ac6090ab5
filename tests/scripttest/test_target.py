"""The same scenario file against a running `routescript run` over UDP (--target): the scenarios a
live server can be checked by pass, the others are skipped with their reason."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from routescript.testing.ports import free_port
from routescript.testing.scenario import FAILED, PASSED, SKIPPED, run_files
from routescript.testing.scenario.report import failure_text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from rs_e2e import run_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _presence_cfg(tmp_path: Path) -> tuple[Path, int]:
    """examples/presence.cfg on free ports with its database in tmp_path; the file and its SIP port."""
    port, mi_port = free_port(), free_port()
    text = (EXAMPLES / "presence.cfg").read_text()
    text = text.replace("127.0.0.1:5060", f"127.0.0.1:{port}").replace("8888", str(mi_port))
    text = text.replace("sqlite:///tmp/routescript-presence.sqlite", f"sqlite://{tmp_path}/presence.sqlite")
    cfg = tmp_path / "presence.cfg"
    cfg.write_text(text)
    return cfg, port


def test_presence_scenarios_pass_against_a_started_server(tmp_path: Path) -> None:
    cfg, port = _presence_cfg(tmp_path)
    with run_server(cfg, tmp_path):
        results = run_files([str(EXAMPLES / "presence.test.yaml")], target=("127.0.0.1", port))
    outcomes = {r.name: r.outcome for r in results}
    failed = [r for r in results if r.outcome == FAILED]
    assert not failed, "\n".join(failure_text(r, 120) for r in failed)
    assert outcomes["a local watcher is active at once and sees the PIDF published"] == PASSED
    assert outcomes["a presentity of another domain keeps unknown watchers pending"] == PASSED
    assert sum(o == PASSED for o in outcomes.values()) >= 4
    skipped = {r.name: r.message for r in results if r.outcome == SKIPPED}
    timeout = "the subscription ends with a timeout NOTIFY when it is not refreshed"
    assert re.search(r"590 s of real time", skipped[timeout])
    publish = "a PUBLISH is stored, announced to event_route and listed by MI"
    assert "checked in process only" in skipped[publish]


TCP_SCENARIOS = Path(__file__).parent / "data" / "tcp-presence.test.yaml"


def test_tcp_uas_run_against_a_started_server_and_ws_ones_are_skipped(tmp_path: Path) -> None:
    cfg, port = _presence_cfg(tmp_path)
    scenarios = tmp_path / "tcp.test.yaml"
    scenarios.write_text(TCP_SCENARIOS.read_text())
    with run_server(cfg, tmp_path):
        results = run_files([str(scenarios)], target=("127.0.0.1", port))
    failed = [r for r in results if r.outcome == FAILED]
    assert not failed, "\n".join(failure_text(r, 120) for r in failed)
    outcomes = {r.name: r for r in results}
    assert outcomes["a tcp watcher gets its NOTIFYs over its own connection"].outcome == PASSED
    skipped = outcomes["a browser over ws is skipped live"]
    assert skipped.outcome == SKIPPED and "UA page uses ws (--target speaks udp and tcp)" in skipped.message
