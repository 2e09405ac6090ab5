"""The benchmark harness's pure parts on synthetic data (no SIPp, no server)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_inprocess import area_of  # noqa: E402
from benchmarks.gauge import describe, python_speed_us  # noqa: E402
from benchmarks.fanout import drain_end, notify_columns, render  # noqa: E402
from benchmarks.search import Criteria, RateSearch, next_ramp_rate, verdict  # noqa: E402
from benchmarks.settings import Settings  # noqa: E402
from benchmarks.stats import (StepStats, parse_counts_csv, parse_stat_csv, peak_window_rate,  # noqa: E402
                              percentile, summarize)

STAT = ("StartTime;LastResetTime;CurrentTime;TotalCallCreated;SuccessfulCall(C);FailedCall(C);"
        "Retransmissions(C);FailedTimeoutOnRecv(C);FailedMaxUDPRetrans(C);DeadCallMsgs(C);OutOfCallMsgs(C);\n"
        "a;b;c;500;480;10;0;0;0;0;0;\n"
        "a;b;c;1000;990;10;7;4;1;2;3;\n")
RTT = "Date_ms;response_time_ms;rtd_no\n" + "".join(
    f"{1000 + i};{i % 100};{1 + i % 2}\n" for i in range(1000)) + "12;garbage\n"


def test_stat_last_row_and_rtt_percentiles() -> None:
    assert parse_stat_csv(STAT)["TotalCallCreated"] == "1000"
    assert parse_stat_csv("only a header\n") == {}
    s = summarize(STAT, [RTT], calls=1010)
    assert (s.created, s.ok, s.failed, s.retrans, s.timeouts, s.dead_msgs, s.ooc_msgs) == \
        (1000, 990, 20, 7, 5, 2, 3)
    assert s.duration_s == 1.999
    assert round(s.achieved_cps) == 495
    assert round(s.fail_pct, 3) == round(100 * 20 / 1010, 3)
    # rtd 1 holds the even samples 0,2,..,98 (x10): p50 = 48/50 boundary by nearest rank, p99 = 98
    assert s.rtd["1"][1] == 98 and s.rtd["1"][2] == 98
    assert s.p99("2") == 99 and s.p50("3") is None
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


def _stats(calls: int = 1000, created: int = 1000, ok: int = 1000, failed: int = 0, retrans: int = 0,
           dur: float = 1.0) -> StepStats:
    return StepStats(calls, created, ok, failed, retrans, 0, 0, 0, 0, dur)


def test_verdict_rule() -> None:
    assert verdict(_stats(), 1000, 0) == []
    assert verdict(_stats(), 1000, 1) == []
    assert verdict(_stats(), 1000, None) == ["sipp_rc=None"]
    assert verdict(_stats(created=999, ok=999), 1000, 0) == ["not_all_created"]
    assert verdict(_stats(ok=995, failed=5), 1000, 0) == ["failures"]          # 0.5 % is too many
    assert verdict(_stats(ok=996, failed=4), 1000, 0) == []
    assert verdict(_stats(retrans=10), 1000, 0) == ["retrans"]                 # 1 per 100 calls
    assert verdict(_stats(dur=1.2), 1000, 0) == ["rate_not_reached"]           # 833 < 900
    assert verdict(_stats(dur=1.2), 1000, 0, Criteria(min_achieved_pct=80)) == []


def _drive(search: RateSearch, capacity: int,
           flaky: frozenset[tuple[int, str]] = frozenset()) -> list[tuple[int, str, bool]]:
    """Steps pass up to `capacity`, except the (rate, phase) pairs in `flaky`."""
    for _ in range(100):  # bounded
        rate = search.next_rate()
        if rate is None:
            break
        search.record(rate <= capacity and (rate, search.phase) not in flaky)
    return search.history


def test_search_ramps_retries_and_refines() -> None:
    s = RateSearch(start=200, factor=1.5, max_rate=30000, refine=2, retry_fail=True)
    hist = _drive(s, capacity=1000)
    assert [r for r, _, _ in hist] == [200, 300, 450, 680, 1020, 1020, 850, 930]
    assert [p for _, p, _ in hist][-4:] == ["ramp", "retry", "refine", "refine"]
    assert (s.last_pass, s.first_fail) == (930, 1020)
    assert not s.reached_max_without_failure


def test_search_retry_rescues_a_flaky_step_and_stops_at_max() -> None:
    s = RateSearch(start=100, factor=2, max_rate=1000, refine=2, retry_fail=True)
    hist = _drive(s, capacity=10**6, flaky=frozenset({(400, "ramp")}))
    assert s.first_fail == 0 and s.last_pass == 800 and s.reached_max_without_failure
    assert (400, "ramp", False) in hist and (400, "retry", True) in hist


def test_search_without_retry_and_bisection_gap() -> None:
    s = RateSearch(start=100, factor=2, refine=5, retry_fail=False)
    _drive(s, capacity=410)
    # 100 200 400 pass, 800 fails, then 600 (fail) 500 (fail) 450 (fail) 420 (fail), gap 400..420 < 8 %
    assert [r for r, _, _ in s.history] == [100, 200, 400, 800, 600, 500, 450, 420]
    assert (s.last_pass, s.first_fail) == (400, 420)
    s2 = RateSearch(start=100)
    s2.next_rate()
    s2.record(True)
    s2.stop()
    assert s2.next_rate() is None and s2.stopped_early and not s2.reached_max_without_failure
    assert next_ramp_rate(200, 1.5) == 300 and next_ramp_rate(10, 1.01) == 20


COUNTS = ("CurrentTime;ElapsedTime;0_SUBSCRIBE_Sent;3_NOTIFY_Recv;5_NOTIFY_Recv;\n"
          "x;00:00:00:000000;0;0;0;\n"
          "x;00:00:01:000000;100;100;0;\n"
          "x;00:00:02:000000;100;100;1000;\n"
          "x;00:00:03:000000;100;100;3000;\n"
          "x;00:00:04:000000;100;100;4000;\n"
          "x;00:00:05:000000;100;100;4000;\n"
          "x;00:00:05;cut short\n")


def test_counts_time_series() -> None:
    header, rows = parse_counts_csv(COUNTS)
    assert header == ["0_SUBSCRIBE_Sent", "3_NOTIFY_Recv", "5_NOTIFY_Recv"] and len(rows) == 6
    first, loop = notify_columns(header)
    assert (first, loop) == (1, 2)
    assert peak_window_rate(rows, loop, 1.0) == 2000.0
    assert peak_window_rate(rows, loop, 2.0) == 1500.0
    # 4000 reached in the row at 4 s; at the previous row's 2000/s the last 1000 took 0.5 s
    assert drain_end(rows, loop) == 3.5
    assert drain_end(rows, 0) == 1.0


def test_render_and_settings(tmp_path: Path) -> None:
    tpl = tmp_path / "t.xml"
    tpl.write_text("<x a='@PAUSE_MS@'>sip:@PRESENTITY@@[remote_ip]</x>")
    out = render(tpl, tmp_path / "o" / "t.xml", PAUSE_MS=25, PRESENTITY="fan")
    assert out.read_text() == "<x a='25'>sip:fan@[remote_ip]</x>"
    q = Settings.from_env({"QUICK": "1", "START_RATE": "50", "MEMORY_COUNTS": "10,20", "MAX_FAIL_PCT": "1"})
    assert q.quick and q.start_rate == 50 and q.memory_counts == (10, 20) and q.criteria.max_fail_pct == 1.0
    f = Settings.from_env({})
    assert not f.quick and f.calls_for(200) == 2000 and f.calls_for(1000) == 10000


def test_profile_areas_name_the_package_or_what_a_c_function_does() -> None:
    assert area_of(("/w/main/routescript/sip/parse.py", 10, "parse")) == "routescript/sip"
    assert area_of(("/w/main/modules/presence/publish.py", 3, "f")) == "modules/presence"
    assert area_of(("/usr/lib/python3.11/asyncio/events.py", 80, "_run")) == "stdlib/asyncio"
    assert area_of(("/usr/lib/python3.11/enum.py", 1, "f")) == "stdlib/enum"
    assert area_of(("/v/.venv/lib/python3.11/site-packages/aiosqlite/core.py", 1, "f")) == "aiosqlite"
    assert area_of(("~", 0, "<method 'sendto' of '_socket.socket' objects>")) == "C: socket send"
    assert area_of(("~", 0, "<built-in method fromstring of lxml.etree>")) == "C: lxml"
    assert area_of(("~", 0, "<method 'split' of 'bytes' objects>")).startswith("C: builtins")
    assert area_of(("<script /tmp/presence.cfg>", 3, "route")) == "compiled route script"


def test_python_speed_gauge_times_the_statement_and_says_which_end_is_which() -> None:
    speed = python_speed_us(repeat=3, number=5)
    assert 1 < speed < 100_000          # microseconds for summing 10,000 ints, on any machine
    assert describe(171.4, 304.0) == ("python speed gauge sum(range(10_000)): 171 us at the start, "
                                      "304 us at the end")


def test_memory_client_sends_a_request_again_after_a_503_retry_after() -> None:
    """The memory benchmark stores every item: a 503 + Retry-After (queue_delay_limit) is honoured."""
    import asyncio

    from benchmarks.memory import MemClient, _retry_after

    assert _retry_after([b"SIP/2.0 503 x", b"Retry-After: 5 (busy);duration=10"]) == 5.0
    assert _retry_after([b"SIP/2.0 503 x"]) == 0.0

    class Refuser(asyncio.DatagramProtocol):
        """503 + Retry-After: 1 to the first copy of a request, 200 afterwards."""
        seen = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            Refuser.seen += 1
            head = [line for line in data.split(b"\r\n") if line.lower().startswith((b"call-id", b"cseq"))]
            status = b"503 Busy\r\nRetry-After: 1" if Refuser.seen == 1 else b"200 OK"
            self.transport.sendto(b"SIP/2.0 " + status + b"\r\n" + b"\r\n".join(head) + b"\r\n\r\n", addr)

    async def scenario() -> int | None:
        loop = asyncio.get_running_loop()
        server, _ = await loop.create_datagram_endpoint(Refuser, local_addr=("127.0.0.1", 0))
        client = MemClient(server.get_extra_info("sockname")[1], window=1)
        await client.open()
        try:
            request = b"PUBLISH sip:a@b SIP/2.0\r\nCall-ID: c1@t\r\nCSeq: 1 PUBLISH\r\n\r\n"
            return await client.request(client.protos[0], "c1@t", "1 PUBLISH", request)
        finally:
            client.close()
            server.close()

    assert asyncio.run(scenario()) == 200
    assert Refuser.seen == 2


def test_bench_config_sets_the_worker_count_once(tmp_path: Path) -> None:
    from benchmarks.servers import bench_config

    example = tmp_path / "w.cfg"
    example.write_text('children=4\nudp_workers = 3\nsocket=udp:127.0.0.1:5060\nroute { exit; }\n')
    (tmp_path / "out").mkdir()
    text = bench_config(str(example), tmp_path / "out", 6000, workers=2).read_text()
    assert text.count("udp_workers") == 1 and "udp_workers = 2" in text and "tcp_workers = 2" in text
    assert "children" not in text and "127.0.0.1:6000" in text
    kept = bench_config(str(example), tmp_path / "out", 6001).read_text()
    assert "children=4" in kept and "udp_workers = 3" in kept and "tcp_workers" not in kept
