"""MI commands that walk every row must not stop SIP, against `routescript run` (examples/presence.cfg with
httpd + mi_http) over a SQLite database filled with N_SUBS subscriptions and N_PUBS publications:

- while subs_phtable_list, pres_phtable_list and pres_expose walk those tables, OPTIONS sent every
  10 ms over UDP are each answered within SIP_BOUND (on the base code one listing held the loop for
  about a second: 20,000 records built and one json.dumps of 8 MB);
- a third parallel walk is refused at once with MI error 503 (core parameter mi_max_walks, 2);
- a hostile pres_expose filter, `(.|.)*!` (1.7 s a row with Python's re), returns at once with RE2,
  and a filter RE2 cannot run (a back-reference) is a 400 "Bad filter" error.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from presence_e2e import RunningServer, free_port, presence_cfg

from routescript.db import init_schema, open_database
from routescript.mi.client import MIReplyError, call_http
from routescript.sip import build_request, generate_branch, generate_tag

N_SUBS = 20_000
N_PUBS = 5_000
SIP_BOUND = 0.5        # seconds: the slowest OPTIONS answer allowed while tables are walked
START_TIMEOUT = 90.0   # loading 25,000 rows on a busy 2-core machine
MI_TIMEOUT = 60.0

EXPOSED_ROUTE = """
event_route[E_PRESENCE_EXPOSED] {
    xlog("L_DBG", "EXPOSED $param(user)\\n");
}
"""


async def fill(url: str) -> None:
    await init_schema(url)
    db = await open_database(url)
    now = int(time.time())
    try:
        await db.insert_many("presentity", [
            {"username": f"user{i:06d}", "domain": "127.0.0.1", "event": "presence", "etag": f"e{i}",
             "expires": now + 3000, "received_time": now, "body": b"<presence/>" * 20, "extra_hdrs": b"",
             "sender": ""} for i in range(N_PUBS)])
        await db.insert_many("active_watchers", [
            {"presentity_uri": f"sip:user{i % N_PUBS:06d}@127.0.0.1", "watcher_username": f"w{i}",
             "watcher_domain": "127.0.0.1", "to_user": f"user{i % N_PUBS:06d}", "to_domain": "127.0.0.1",
             "event": "presence", "event_id": None, "to_tag": f"tt{i}", "from_tag": f"ft{i}",
             "callid": f"walk-{i}-0123456789abcdef", "local_cseq": 1, "remote_cseq": 1,
             "contact": f"sip:w{i}@127.0.0.1:9", "record_route": "", "expires": now + 3000, "status": 1,
             "reason": "", "version": 1, "socket_info": "udp:127.0.0.1:5060",
             "local_contact": "sip:presence@127.0.0.1"} for i in range(N_SUBS)])
    finally:
        await db.close()


class Served:
    def __init__(self, server: RunningServer, sip_port: int, http_port: int) -> None:
        self.server, self.sip_port = server, sip_port
        self.url = f"http://127.0.0.1:{http_port}/mi"

    def mi(self, method: str, params: Any = None) -> Any:
        return call_http(self.url, method, params, timeout=MI_TIMEOUT)

    def mi_raw(self, method: str, params: Any = None) -> bytes:
        """The reply's bytes, not decoded: while the pinger measures, this process must not hold the GIL
        for a json.loads of megabytes (the pinger thread would count that time as the server's)."""
        req: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
        if params is not None:
            req["params"] = params
        request = urllib.request.Request(self.url, json.dumps(req).encode(), method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=MI_TIMEOUT) as resp:  # noqa: S310 - loopback test URL
            return bytes(resp.read())


def result_of(raw: Any) -> Any:
    """The result of a raw reply (or the exception the call raised, to assert on)."""
    if isinstance(raw, Exception):
        return raw
    reply = json.loads(raw)
    return reply["result"] if "result" in reply else reply["error"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("mi_walks")
    db = tmp / "presence.sqlite"
    asyncio.run(fill(f"sqlite://{db}"))
    sip_port, http_port = free_port(), free_port()
    cfg = presence_cfg(tmp, sip_port, db=db, http_port=http_port)   # the example serves MI (httpd)
    cfg.write_text(cfg.read_text() + EXPOSED_ROUTE)
    server = RunningServer(cfg, tmp)
    try:
        server.wait_for("routescript started", timeout=START_TIMEOUT)
        yield Served(server, sip_port, http_port)
    finally:
        server.stop()


class Pinger:
    """OPTIONS over UDP every 10 ms from a thread; the time each took to be answered."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.unanswered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Pinger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            local = s.getsockname()[1]
            i = 0
            while not self._stop.is_set():
                req = build_request("OPTIONS", f"sip:127.0.0.1:{self.port}", [
                    ("Via", f"SIP/2.0/UDP 127.0.0.1:{local};branch={generate_branch()};rport"),
                    ("Max-Forwards", "70"), ("From", f"<sip:ping@127.0.0.1>;tag={generate_tag()}"),
                    ("To", f"<sip:127.0.0.1:{self.port}>"), ("Call-ID", f"ping-{i}-{generate_tag()}"),
                    ("CSeq", "1 OPTIONS")])
                sent = time.monotonic()
                s.sendto(req.to_bytes(), ("127.0.0.1", self.port))
                try:
                    while not s.recv(65536).startswith(b"SIP/2.0 200 "):
                        pass
                    self.latencies.append(time.monotonic() - sent)
                except TimeoutError:
                    self.unanswered += 1
                i += 1
                time.sleep(0.01)

    def summary(self) -> str:
        lat = self.latencies or [0.0]
        return (f"{len(self.latencies)} answered, {self.unanswered} unanswered, max {max(lat):.3f} s, "
                f"median {statistics.median(lat):.4f} s")


def run_parallel(calls: list[tuple[Any, ...]]) -> list[Any]:
    """Each (function, *args) in its own thread at once; their results or the exceptions they raised."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        fn, *args = calls[i]
        try:
            results[i] = fn(*args)
        except Exception as exc:  # noqa: BLE001 - handed back to the test to assert on
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(MI_TIMEOUT + 5)
    return results


def test_sip_is_answered_while_tables_are_walked(served: Served) -> None:
    with Pinger(served.sip_port) as idle:
        time.sleep(0.3)
    assert idle.latencies and idle.unanswered == 0, idle.summary()
    for method, params, expected in (("subs_phtable_list", None, N_SUBS), ("pres_phtable_list", None, N_PUBS),
                                     ("pres_expose", ["presence"], "OK")):
        with Pinger(served.sip_port) as pinger:
            time.sleep(0.05)
            raw = served.mi_raw(method, params)
        result = result_of(raw)
        assert (len(result) if isinstance(result, list) else result) == expected
        assert pinger.unanswered == 0 and max(pinger.latencies) < SIP_BOUND, f"{method}: {pinger.summary()}"
    # two walks at once: SIP still answered within the bound
    with Pinger(served.sip_port) as pinger:
        time.sleep(0.05)
        raws = run_parallel([(served.mi_raw, "subs_phtable_list"),
                             (served.mi_raw, "pres_expose", ["presence"])])
    subs, exposed = (result_of(raw) for raw in raws)
    assert isinstance(subs, list) and len(subs) == N_SUBS and exposed == "OK", (subs, exposed)
    assert pinger.unanswered == 0 and max(pinger.latencies) < SIP_BOUND, f"two walks: {pinger.summary()}"


def test_a_third_parallel_walk_is_refused(served: Served) -> None:
    results = run_parallel([(served.mi, "subs_phtable_list")] * 3)
    refused = [r for r in results if isinstance(r, MIReplyError)]
    listed = [r for r in results if isinstance(r, list)]
    assert len(refused) >= 1 and refused[0].code == 503, results
    assert "mi_max_walks" in str(refused[0].data)
    assert listed and all(len(r) == N_SUBS for r in listed)
    served.server.wait_for("table walks already running (mi_max_walks 2)")
    assert len(served.mi("subs_phtable_list")) == N_SUBS  # the bound is released after the walks


def test_hostile_filter_is_matched_in_linear_time(served: Served) -> None:
    with Pinger(served.sip_port) as pinger:
        started = time.monotonic()
        assert served.mi("pres_expose", ["presence", "(.|.)*!"]) == "OK"
        took = time.monotonic() - started
    assert took < 5.0, f"pres_expose with a hostile filter took {took:.1f} s"
    assert pinger.unanswered == 0 and max(pinger.latencies or [0]) < SIP_BOUND, pinger.summary()
    served.server.wait_for("pres_expose presence (filter '(.|.)*!'): 0 presentities exposed")
    # a filter RE2 cannot run in linear time: a clear error, not a fallback to backtracking
    with pytest.raises(MIReplyError) as err:
        served.mi("pres_expose", ["presence", r"(a)\1"])
    assert err.value.code == 400 and "Bad filter" in err.value.message
    # an ordinary filter still selects, case-insensitively as MySQL's REGEXP
    assert served.mi("pres_expose", ["presence", "^SIP:USER00000[0-4]@"]) == "OK"
    served.server.wait_for("pres_expose presence (filter '^SIP:USER00000[0-4]@'): 5 presentities exposed")
