"""The proxy benchmark's parts: benchmarks/py_proxy_ceiling.py relays the proxy scenario's messages
correctly (fed datagrams in memory: a ceiling that dropped Record-Route or misrouted a reply would make
the ratio meaningless), and `bench_inprocess relay` carries full calls through t_relay."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.py_proxy_ceiling import Relay, _hostport  # noqa: E402

ME = "127.0.0.1:5096"
CALLER_VIA = "Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK1"
CALLEE: Any = ("127.0.0.1", 5072)


class Wire:
    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data.decode(), addr))


def relay() -> tuple[Relay, Wire]:
    r, w = Relay(ME), Wire()
    r.connection_made(w)  # type: ignore[arg-type]
    return r, w


def msg(*lines: str, body: str = "") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def headers(text: str, name: str) -> list[str]:
    head = text.split("\r\n\r\n", maxsplit=1)[0]
    return [ln for ln in head.split("\r\n") if ln.lower().startswith(name.lower() + ":")]


def test_hostport() -> None:
    assert _hostport("sip:bob@127.0.0.1:5072") == ("127.0.0.1", 5072)
    assert _hostport(" <sip:127.0.0.1:5096;lr>") == ("127.0.0.1", 5096)
    assert _hostport("sip:example.com;transport=udp") == ("example.com", 5060)


def test_initial_invite_gets_via_record_route_and_max_forwards() -> None:
    r, w = relay()
    addr: Any = ("127.0.0.1", 5071)
    r.datagram_received(msg("INVITE sip:bob@127.0.0.1:5072 SIP/2.0", CALLER_VIA,
                            "To: <sip:bob@127.0.0.1:5072>", "Max-Forwards: 70", "Content-Length: 3",
                            body="v=0"), addr)
    ((text, dest),) = w.sent
    assert dest == ("127.0.0.1", 5072)
    vias = headers(text, "Via")
    assert len(vias) == 2 and ME in vias[0] and "branch=z9hG4bK" in vias[0]
    assert headers(text, "Record-Route") == [f"Record-Route: <sip:{ME};lr>"]
    assert headers(text, "Max-Forwards") == ["Max-Forwards: 69"]
    assert text.endswith("\r\n\r\nv=0")


def test_reply_loses_our_via_and_goes_to_the_next() -> None:
    r, w = relay()
    # SIPp's [last_Via:] puts every Via on one line
    ours = f"SIP/2.0/UDP {ME};branch=z9hG4bKc1"
    r.datagram_received(msg("SIP/2.0 200 OK", f"Via: {ours}, {CALLER_VIA[5:]}", "CSeq: 1 INVITE"), CALLEE)
    r.datagram_received(msg("SIP/2.0 180 Ringing", f"Via: {ours}", CALLER_VIA, "CSeq: 1 INVITE"), CALLEE)
    assert [dest for _, dest in w.sent] == [("127.0.0.1", 5071), ("127.0.0.1", 5071)]
    for text, _ in w.sent:
        assert ME not in text and "5071;branch=z9hG4bK1" in text


def test_in_dialog_request_loses_our_route_and_is_not_record_routed() -> None:
    r, w = relay()
    r.datagram_received(msg("BYE sip:callee@127.0.0.1:5072 SIP/2.0", CALLER_VIA, f"Route: <sip:{ME};lr>",
                            "To: <sip:bob@127.0.0.1:5072>;tag=x", "Max-Forwards: 70"), ("127.0.0.1", 5071))
    ((text, dest),) = w.sent
    assert dest == ("127.0.0.1", 5072)
    assert headers(text, "Route") == [] and headers(text, "Record-Route") == []
    assert len(headers(text, "Via")) == 2


def test_bench_inprocess_relay_runs_full_calls_through_the_proxy() -> None:
    """`bench_inprocess relay`: 40 full calls through examples/proxy.cfg's t_relay (a call whose 200
    lacks Record-Route, or whose BYE is not answered 200, raises), and its call count is a number."""
    import asyncio

    from benchmarks.bench_inprocess import run_scenario

    line = asyncio.run(run_scenario("relay", 40, count=True))
    assert line.startswith("relay") and "Python calls per call" in line
    assert int(line.split()[1]) > 100


@pytest.mark.parametrize("target", ["py_proxy_ceiling", "routescript"])
def test_proxy_scenario_runs_a_step(tmp_path: Path, target: str) -> None:
    """`python -m benchmarks --only proxy` wiring, one small step against each server it measures: the
    callee SIPp starts, the caller's calls go through the proxy and pass the rule (the at-80% step
    too), and the callee is stopped afterwards."""
    if shutil.which("sipp") is None:
        pytest.skip("sipp is not installed (Debian/Ubuntu: apt-get install sip-tester); .ci/run installs it")
    from benchmarks.proxy import find_max_proxy_rate
    from benchmarks.servers import start_py_proxy_ceiling, start_routescript
    from benchmarks.settings import Settings

    settings = Settings(quick=True, start_rate=50, max_rate=50, min_calls=50, duration=1.0, settle=0.0,
                        refine=0, retry_fail=False, recv_timeout_ms=3000, max_scenario_s=30.0)
    server = (start_py_proxy_ceiling(tmp_path / "server") if target == "py_proxy_ceiling"
              else start_routescript("proxy.cfg", tmp_path / "server"))
    with server:
        res = find_max_proxy_rate(f"proxy {target}", server, tmp_path / "run", settings)
    assert res.max_rate == 50, [s.line() for s in res.steps]
    assert res.best is not None and res.best.stats.ok == 50
    assert res.at80 is not None and res.at80.passed
    assert "MAX_RATE=50 reached without failure" in res.notes
