"""The engine under the scenario files: the virtual clock, the failure report, JUnit XML, -k, the
pytest plugin."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from routescript.cli import main
from routescript.testing.pytest_plugin import SimulatedScript
from routescript.testing.virtual_clock import VirtualClockLoop

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PRESENCE_DBS = {"presence": {"db_url": "sqlite://:memory:"}, "xcap": {"db_url": "sqlite://:memory:"}}


def test_advance_fires_timers_in_order_at_their_own_time_and_moves_the_wall_clock() -> None:
    loop = VirtualClockLoop()
    fired: list[tuple[str, float, float]] = []

    async def scenario() -> None:
        wall = time.time()
        loop.call_later(10, lambda: fired.append(("ten", loop.time(), time.time() - wall)))
        loop.call_later(5, lambda: fired.append(("five", loop.time(), time.time() - wall)))
        start = loop.time()
        await loop.settle()
        assert fired == []                       # settle never moves the clock
        await loop.advance(12)
        assert loop.time() == start + 12
        assert [(n, t - start, w) for n, t, w in fired] == [("five", 5, 5), ("ten", 10, 10)]

    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


def test_the_clock_stands_still_while_a_thread_works() -> None:
    loop = VirtualClockLoop()
    seen: list[float] = []

    async def scenario() -> None:
        loop.call_later(1, lambda: seen.append(loop.time()))
        start = loop.time()
        await loop.run_in_executor(None, time.sleep, 0.05)   # outside work: no timer may fire meanwhile
        assert seen == [] and loop.time() == start
        await loop.advance(1)
        assert seen == [start + 1]

    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


def _failing_file(tmp_path: Path) -> Path:
    path = tmp_path / "f.test.yaml"
    path.write_text(f"script: {EXAMPLES / 'hello.cfg'}\n"
                    "scenarios:\n"
                    "  - name: passes\n    steps:\n"
                    "      - send: {from: alice, request: OPTIONS, ruri: 'sip:127.0.0.1:5060'}\n"
                    "      - expect: {reply: 200}\n"
                    "  - name: fails\n    steps:\n"
                    "      - send: {from: alice, request: INVITE, ruri: 'sip:bob@127.0.0.1'}\n"
                    "      - expect: {reply: 200, headers: {Server: nope}}\n")
    return path


def test_a_failure_shows_expected_and_actual_side_by_side_and_the_script_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "out.xml"
    assert main(["test", str(_failing_file(tmp_path)), "--junit-xml", str(junit)]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path}/f.test.yaml .F" in out
    assert "f.test.yaml:10:9: step 2: - expect: {reply: 200, headers: {Server: nope}}" in out
    assert ("status 405 Method Not Allowed, expected 200; Server is 'routescript hello', expected 'nope'"
            in out)
    assert any(line.startswith("expected ") and line.rstrip().endswith("| actual")
               for line in out.splitlines())
    assert "| SIP/2.0 405 Method Not Allowed" in out
    assert "script lines that ran since the last send:" in out
    assert "hello.cfg:" in out and 'sl_send_reply(405, "$var(reason)");' in out
    assert "1 failed, 1 passed in " in out
    suite = ET.parse(junit).getroot().find("testsuite")   # noqa: S314 - the file this test wrote
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    failure = suite.find("testcase[@name='fails']/failure")
    assert failure is not None and "expected 200" in (failure.get("message") or "")


def test_k_selects_scenarios_and_none_selected_exits_5(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = _failing_file(tmp_path)
    assert main(["test", str(path), "-k", "pass", "-v"]) == 0
    assert "f.test.yaml::passes PASSED" in capsys.readouterr().out
    assert main(["test", str(path), "-k", "nothing-matches"]) == 5


def test_the_pytest_api_drives_a_script_step_by_step() -> None:
    sim = SimulatedScript(EXAMPLES / "presence.cfg", modparams=PRESENCE_DBS)
    try:
        sim.send({"from": "alice", "request": "SUBSCRIBE", "ruri": "sip:bob@127.0.0.1",
                  "headers": {"Event": "presence", "Expires": 600}})
        sim.expect({"reply": 200, "capture": {"tag": {"header": "To", "regex": "tag=([^;]+)"}}})
        assert sim.variables["tag"]
        sim.expect({"request": "NOTIFY", "to": "alice"})
        assert len(sim.mi("subs_phtable_list")) == 1
        sim.advance(601)
        sim.expect({"request": "NOTIFY", "to": "alice",
                    "headers": {"Subscription-State": "terminated;reason=timeout"}})
        assert sim.mi("subs_phtable_list") == []
        with pytest.raises(AssertionError, match="expected a request NOTIFY to alice; nothing of the kind"):
            sim.expect({"request": "NOTIFY", "to": "alice"})
    finally:
        sim.close()


def test_the_fixtures_are_registered(routescript_sim, routescript_scenarios) -> None:  # type: ignore[no-untyped-def]
    routescript_scenarios(EXAMPLES / "hello.test.yaml")
    sim = routescript_sim(EXAMPLES / "hello.cfg")
    sim.send({"from": "carol", "request": "OPTIONS", "ruri": "sip:127.0.0.1:5060"})
    sim.expect({"reply": 200})


def test_no_event_loop_is_left_patched() -> None:
    before = time.time()
    loop = VirtualClockLoop()
    loop.run_until_complete(loop.advance(3600))
    loop.close()
    assert abs(time.time() - before) < 60       # time-machine's travel ended with the loop
    assert asyncio.get_event_loop_policy() is not None
