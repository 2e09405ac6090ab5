"""Issue 15: after many subscriptions and publications expire, what the server held for them is released.

The real server (examples/presence.cfg) runs in this process, on a real UDP socket, so tracemalloc can
count what our code keeps: publishers and watchers on loopback PUBLISH and SUBSCRIBE N presentities with
short expiries, answer every NOTIFY, and go away; once clean_period has expired everything, the bytes
still allocated by our packages (modules/, routescript/ but the test client) must be close to what they
were before. Before the fix about 0.5 KB per item stayed: the NOTIFY destination cache of every gone
watcher, the shared NOTIFY body of every gone presentity, and the slots of the subscription and
presentity tables (a dict never gives them back).

Left out on purpose: CPython's interned-string table (it grows for the presentity URIs, which are
interned, and never shrinks: grown once before the baseline) and presence_xml's memo of accepted PIDF
bodies (bounded: 1024 bodies of at most 4 KB; every publisher here sends the same body). T1 is 50 ms,
so the completed transactions kept for retransmissions (Timer J, 64*T1) are gone within the wait too.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from presence_e2e import presence_cfg

from routescript.core.server import Server
from routescript.testing import SipTestClient, pidf
from routescript.testing.ports import free_port

pytestmark = pytest.mark.asyncio

N = 800           # publications, and as many subscriptions
# What may stay whatever N is: the last request (to_tag's one-entry memo keeps it, with its parsed
# headers), the header-name cache's new spellings, the event bus's and the dispatcher's tables, the
# completed tables' dicts (sized by the most entries held at once below their compaction threshold, so
# larger on a loaded machine: up to 13 KB seen), and since session 11 the SIP layer's parse memos
# (routescript/sip/_memo.py: 16 values each, ~15 KB). Measured 28-52 KB in all (FIXED + 40 * N); a
# per-item leak costs ~400 KB here.
FIXED = 32 * 1024
EXPIRES = 20      # seconds: outlives the load
BATCH = 30
OURS = [tracemalloc.Filter(True, "*/modules/*"), tracemalloc.Filter(True, "*/routescript/*")]
NOT_OURS = [tracemalloc.Filter(False, "*/routescript/testing/*")]


def traced(snapshot: tracemalloc.Snapshot) -> int:
    return sum(s.size for s in snapshot.filter_traces(OURS).filter_traces(NOT_OURS).statistics("filename"))


def stat(server: Server, name: str) -> int:
    var = server.statistics.get(name)
    assert var is not None, name
    return int(var.value)


async def wait_for(check: object, within: float) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.1)


async def send(client: SipTestClient, request: object) -> int:
    """The final status of `request`, sent again after 2 s without an answer (as UDP clients do: the
    test client itself never retransmits), at most 4 times."""
    for _ in range(4):
        client.send(request)  # type: ignore[arg-type]
        try:
            resp = await client.expect_response(request, final=True, timeout=2)  # type: ignore[arg-type]
        except AssertionError:
            continue
        return int(resp.status)
    raise AssertionError("no answer after 4 tries")


async def load(port: int, first: int, count: int = N) -> None:
    """N presentities published and watched (each watcher its own dialog), NOTIFYs answered 200."""
    body = pidf("sip:mem@127.0.0.1", note="same for all")
    async with await SipTestClient.start("udp", ("127.0.0.1", port), user="pub", timeout=10) as pub, \
            await SipTestClient.start("udp", ("127.0.0.1", port), user="watch", timeout=10) as watch:
        watch.auto_reply["NOTIFY"] = 200

        async def one(n: int) -> None:
            uri = f"sip:mem{n}@127.0.0.1:{port}"
            assert await send(pub, pub.publish(uri, body, expires=EXPIRES)) == 200
            assert await send(watch, watch.subscribe(uri, expires=EXPIRES)) == 200

        for base in range(first, first + count, BATCH):
            await asyncio.gather(*(one(n) for n in range(base, min(base + BATCH, first + count))))


async def test_expired_subscriptions_and_publications_are_released(tmp_path: Path) -> None:
    port = free_port()
    cfg = presence_cfg(tmp_path, port, presence={"clean_period": 1, "db_update_period": 1},
                       tm={"fr_timeout": 2, "T1_timer": 50, "T2_timer": 400})
    # tracemalloc slows every request: no queue_delay_limit, no log line per request
    text = cfg.read_text().replace("log_level = 3", "log_level = 1")
    cfg.write_text("queue_delay_limit = 0\n" + text)
    server = Server()
    server.load(str(cfg))
    await server.start()
    try:
        await load(port, 0, 2 * BATCH)   # warm: first rows, caches, module imports
        await wait_for(lambda: stat(server, "presence:active_subscriptions") == 0
                       and stat(server, "presence:publications") == 0, EXPIRES + 15)
        grown = [sys.intern(f"sip:interned{i}@127.0.0.1") for i in range(8 * N)]
        del grown                  # the interned-string table is sized for what follows (not ours)
        gc.collect()
        tracemalloc.start(1)
        try:
            baseline = traced(tracemalloc.take_snapshot())
            await load(port, 10 * N)
            peak = traced(tracemalloc.take_snapshot())

            def all_gone() -> bool:
                return (stat(server, "presence:active_subscriptions") == 0
                        and stat(server, "presence:publications") == 0
                        and stat(server, "presence:notify_queues") == 0)

            await wait_for(all_gone, EXPIRES + 20)
            # then Timer J (3.2 s), Timer K (T4, 5 s), the final NOTIFYs' Timer F: polled, up to 30 s
            deadline = time.monotonic() + 30
            while True:
                await asyncio.sleep(1)
                gc.collect()
                after = tracemalloc.take_snapshot()
                left = traced(after)
                if left - baseline < 40 * N + FIXED or time.monotonic() > deadline:
                    break
        finally:
            tracemalloc.stop()
    finally:
        await server.stop()
    kept = after.filter_traces(OURS).filter_traces(NOT_OURS).statistics("lineno")
    top = "\n".join(str(s) for s in kept[:8])
    assert peak - baseline > 200 * N, f"the load did not show: {peak - baseline} bytes"
    # what stays: a few KB of timers, tasks and right-sized tables (before the fix: 0.5 KB per item)
    print(f"traced bytes of our packages: baseline {baseline}, peak {peak}, after expiry {left}")
    assert left - baseline < 40 * N + FIXED, f"{left - baseline} bytes kept of {peak - baseline}:\n{top}"
