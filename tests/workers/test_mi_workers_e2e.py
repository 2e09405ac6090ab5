"""MI for the whole server and the all-or-none reload with worker processes (issue 18, docs/workers.md
sections 5 and 6, build plan steps 8 and 9), over real processes and loopback sockets: `routescript run`
with udp_workers = 2 (ROUTESCRIPT_WORKERS_PREVIEW=1, harmless once the gate is gone).

- get_statistics sums every worker's counters: core:rcv_requests is every OPTIONS sent, and both
  workers answered some of them;
- pres_phtable_list and subs_phtable_list join both workers' lists (presence with worker_affinity
  "callid", SUBSCRIBEs answered by both workers); presence:active_subscriptions is their sum;
- a worker that does not answer: get_statistics is an error naming it, never a partial sum;
- SIGHUP with a valid changed script: both workers run it; with an invalid one, or a worker that does not
  prepare it (stopped: no Prepared within the bound), both keep the old one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from routescript.testing.ports import free_port

from .test_supervisor_e2e import (
    ANSWERED,
    Running,
    _cfg,
    _replies_after,
    _wait_restarted,
    mi,
    options,
    worker_pids,
)

ROOT = Path(__file__).resolve().parents[2]
PRESENCE = re.compile(r"\[(\d+)\] .*PRESENCE SUBSCRIBE ")


def mi_answer(http: int, method: str, params: Any = None) -> dict[str, Any]:
    """The whole JSON-RPC answer (result or error)."""
    body = {"jsonrpc": "2.0", "method": method, "id": 1, **({"params": params} if params is not None else {})}
    req = urllib.request.Request(f"http://127.0.0.1:{http}/mi", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:   # noqa: S310 - loopback, our own server
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture
def server(tmp_path: Path, ports: tuple[int, int]) -> Iterator[Running]:
    run = Running(_cfg(tmp_path, *ports), tmp_path)
    try:
        run.wait_for("routescript started")
        yield run
    finally:
        run.stop()


def _until_both_answered(server: Running, sip: int, http: int, tag: str, want: bytes) -> tuple[int, set[int]]:
    """Send OPTIONS in rounds until both workers answered `want`: (how many sent, the PIDs)."""
    pids = set(worker_pids(http).values())
    answered: set[int] = set()
    sent = 0
    for round_ in range(10):
        answered |= _replies_after(server, sip, f"{tag}{round_}", want, count=20)
        sent += 20
        if answered == pids:
            break
    assert answered == pids, server.log()
    return sent, answered


def test_get_statistics_sums_the_workers_counters(server: Running, ports: tuple[int, int]) -> None:
    sip, http = ports
    assert mi(http, "get_statistics", {"statistics": ["core:rcv_requests"]}) == {"core:rcv_requests": 0}
    mark = len(server.log())
    sent, _pids = _until_both_answered(server, sip, http, "count", b"SIP/2.0 200 OK")
    per_worker = [ANSWERED.findall(server.log()[mark:]).count(str(pid)) for pid in worker_pids(http).values()]
    assert sum(per_worker) == sent and min(per_worker) > 0, per_worker
    stats = mi(http, "get_statistics", {"statistics": ["core:", "sl:"]})
    assert stats["core:rcv_requests"] == sent
    assert stats["sl:2xx_replies"] == sent
    assert abs(stats["core:timestamp"] - time.time()) < 30   # the latest, not a sum of two clocks
    assert mi(http, "list_statistics", {"statistics": ["rcv_requests"]}) == {"rcv_requests": "incremental"}
    assert mi(http, "reset_statistics", {"statistics": ["rcv_requests"]}) == "OK"   # in every worker
    assert mi(http, "get_statistics", {"statistics": ["rcv_requests"]}) == {"core:rcv_requests": 0}


def test_a_worker_that_does_not_answer_is_named_and_a_stopped_reload_is_aborted(server: Running,
                                                                               ports: tuple[int, int],
                                                                               tmp_path: Path) -> None:
    sip, http = ports
    pids = worker_pids(http)
    os.kill(pids[1], signal.SIGSTOP)   # alive, but answers nothing
    try:
        answer = mi_answer(http, "get_statistics", {"statistics": ["all"]})
        assert "result" not in answer, answer
        assert f"w1 (pid {pids[1]}): no answer within 5 s" in answer["error"]["data"], answer
        cfg = tmp_path / "workers.cfg"
        cfg.write_text(cfg.read_text().replace('sl_send_reply(200, "OK")', 'sl_send_reply(200, "New")'))
        answer = mi_answer(http, "reload_routes")   # w1 never says Prepared: nobody commits
        assert answer["error"]["message"] == "reload failed", answer
        assert "w1" in " ".join(answer["error"]["data"]), answer
    finally:
        with contextlib.suppress(ProcessLookupError):   # the watchdog may have killed it already
            os.kill(pids[1], signal.SIGCONT)
    assert "reload_routes: aborted, every worker keeps the old script" in server.log()
    # The watchdog may have killed w1 meanwhile: whichever process runs slot 1 now, both keep the old script.
    if f"w1 (pid {pids[1]}) exited" in server.log():
        _wait_restarted(server, http, 1, pids[1])
    _until_both_answered(server, sip, http, "old", b"SIP/2.0 200 OK")


def test_sighup_reloads_both_workers_or_neither(server: Running, ports: tuple[int, int],
                                                tmp_path: Path) -> None:
    sip, http = ports
    cfg = tmp_path / "workers.cfg"
    good = cfg.read_text()
    cfg.write_text(good.replace('sl_send_reply(200, "OK")', 'sl_send_reply(200, "Hupped")'))
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while server.log().count("reloaded (") < 3 and time.monotonic() < deadline:   # w0, w1, the supervisor
        time.sleep(0.05)
    _until_both_answered(server, sip, http, "hup", b"SIP/2.0 200 Hupped")
    assert server.log().count("reloaded (") == 3, server.log()
    cfg.write_text(good.replace('sl_send_reply(200, "OK")', "no_such_function();"))
    mark = len(server.log())
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for("rejected, old script kept")
    time.sleep(0.5)
    assert "no_such_function" in server.log()[mark:]
    rejected = re.findall(r"\[(\d+)\] .*rejected, old script kept", server.log()[mark:])
    assert rejected == [str(server.proc.pid)], server.log()   # the supervisor's check: no worker was asked
    assert "reloaded (" not in server.log()[mark:]
    _until_both_answered(server, sip, http, "kept", b"SIP/2.0 200 Hupped")
    answer = mi_answer(http, "reload_routes")   # MI says the same as the log
    assert answer["error"]["message"] == "reload failed"
    assert "no_such_function" in str(answer["error"]["data"])


# ---------------------------------------------------------------------------------------------- presence

def _presence_cfg(tmp_path: Path, sip: int, http: int) -> Path:
    text = (ROOT / "examples" / "presence.cfg").read_text()
    text = text.replace("socket = tcp:127.0.0.1:5060\n", "").replace('loadmodule "proto_tcp.so"', "")
    text = text.replace("5060", str(sip)).replace("8888", str(http))
    text = text.replace("/tmp/routescript-presence.sqlite", str(tmp_path / "presence.sqlite"))
    text = text.replace('modparam("presence", "end_sub_on_timeout", 1)',
                        'modparam("presence", "end_sub_on_timeout", 0)')   # our watchers answer no NOTIFY
    text = text.replace("log_level = 3", 'log_level = 3\nudp_workers = 2\nworker_affinity = "callid"')
    text = text.replace("route[presence] {\n",
                        'route[presence] {\n    xlog("L_NOTICE", "PRESENCE $rm $ci\\n");\n')
    cfg = tmp_path / "presence.cfg"
    cfg.write_text(text)
    return cfg


def _request(sock: socket.socket, sip: int, method: str, user: str, call_id: str, *, body: bytes = b"",
             extra: str = "") -> bytes:
    """One PUBLISH or SUBSCRIBE from `sock`; the status line of its final reply (NOTIFYs are skipped)."""
    port = sock.getsockname()[1]
    head = (f"{method} sip:{user}@127.0.0.1:{sip} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:watcher-{call_id}@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
            f"Contact: <sip:watcher@127.0.0.1:{port}>\r\nEvent: presence\r\nExpires: 600\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    sock.sendto(head, ("127.0.0.1", sip))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        data, _ = sock.recvfrom(65536)
        if data.startswith(b"SIP/2.0 ") and f"Call-ID: {call_id}".encode() in data and not data.startswith(
                b"SIP/2.0 1"):
            return data.split(b"\r\n", 1)[0]
    raise AssertionError(f"no final reply to {method} {call_id}")


def _pidf(user: str) -> bytes:
    return (f'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
            f'entity="sip:{user}@127.0.0.1"><tuple id="t1"><status><basic>open</basic></status></tuple>'
            '</presence>').encode()


def test_presence_tables_are_listed_from_both_workers(tmp_path: Path, ports: tuple[int, int]) -> None:
    sip, http = ports
    run = Running(_presence_cfg(tmp_path, sip, http), tmp_path)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
        run.wait_for("routescript started")
        pids = set(worker_pids(http).values())
        for i in range(4):
            assert _request(socks[i], sip, "PUBLISH", f"user{i}", f"pub-{i}", body=_pidf(f"user{i}"),
                            extra="Content-Type: application/pidf+xml\r\n") == b"SIP/2.0 200 OK", run.log()
        subscribed: list[str] = []
        for i in range(60):
            call_id = f"sub-{i}-{uuid.uuid4().hex[:6]}"
            assert _request(socks[i % 4], sip, "SUBSCRIBE", f"user{i % 4}", call_id) == b"SIP/2.0 200 OK"
            subscribed.append(call_id)
            if i >= 10 and {int(p) for p in PRESENCE.findall(run.log())} == pids:
                break
        assert {int(p) for p in PRESENCE.findall(run.log())} == pids, run.log()   # both workers subscribed
        subs = mi(http, "subs_phtable_list")
        assert sorted(s["callid"] for s in subs) == sorted(subscribed)
        stats = mi(http, "get_statistics", {"statistics": ["presence:active_subscriptions"]})
        assert stats == {"presence:active_subscriptions": len(subscribed)}
        pres = mi(http, "pres_phtable_list")
        assert sorted({p["pres_uri"] for p in pres}) == [f"sip:user{i}@127.0.0.1" for i in range(4)]
        keys = [(p["pres_uri"], p["event"], p["etag"]) for p in pres]
        assert len(keys) == len(set(keys))   # a publication two workers hold is listed once
    finally:
        for s in socks:
            s.close()
        run.stop()


def test_prometheus_in_the_supervisor_shows_the_workers_sum(tmp_path: Path, ports: tuple[int, int]) -> None:
    sip, http = ports
    extra = 'loadmodule "prometheus.so"\nmodparam("prometheus", "statistics", "core:")\n'
    run = Running(_cfg(tmp_path, sip, http, extra=extra), tmp_path)
    try:
        run.wait_for("routescript started")
        sent, _pids = _until_both_answered(run, sip, http, "prom", b"SIP/2.0 200 OK")
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=10) as resp:
            page = resp.read().decode()
        assert re.search(rf"^opensips_rcv_requests {sent}\.0$", page, re.MULTILINE), page
    finally:
        run.stop()


def test_reload_under_traffic_loses_nothing(server: Running, ports: tuple[int, int], tmp_path: Path) -> None:
    """OPTIONS keep coming while SIGHUP reloads: each is answered, by the old or the new script; once the
    supervisor committed, only by the new one."""
    sip, http = ports
    cfg = tmp_path / "workers.cfg"
    cfg.write_text(cfg.read_text().replace('sl_send_reply(200, "OK")', 'sl_send_reply(200, "New")'))
    answers: list[bytes] = []
    for i in range(200):
        if i == 20:
            server.proc.send_signal(signal.SIGHUP)
        answers.append(options(sip, f"traffic-{i}"))
        if server.log().count("reloaded (") == 3 and answers[-1] == b"SIP/2.0 200 New" and i > 40:
            break
    assert set(answers) <= {b"SIP/2.0 200 OK", b"SIP/2.0 200 New"}, answers
    assert answers[:20] == [b"SIP/2.0 200 OK"] * 20 and answers[-1] == b"SIP/2.0 200 New"
    assert server.log().count("reloaded (") == 3, server.log()
    _until_both_answered(server, sip, http, "after", b"SIP/2.0 200 New")
