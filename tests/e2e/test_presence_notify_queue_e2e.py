"""Issue 15: a dialog's NOTIFY queue ends with its subscription, whatever became of its NOTIFYs.

`routescript run` (examples/presence.cfg, whose httpd/mi_http serve `get_statistics`) with short timers: tm's
fr_timeout 2 s (a NOTIFY nobody answers ends with a local 408 after 2 s), clean_period 1 s. Watchers that
never answer (or answer with garbage) while a presentity keeps changing used to leave a queue of NOTIFYs
per dialog, each waiting out Timer F, long after the subscription had expired; a watcher answering 481
kept getting the NOTIFYs queued behind the one it refused. The statistics `presence:notify_queues` and
`presence:queued_notifies` show what the sender holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from presence_e2e import RunningServer, Srv, free_port, presence_cfg, run_server

from routescript.mi.client import call_http
from routescript.testing import SipTestClient, pidf

pytestmark = pytest.mark.asyncio

FR_TIMEOUT = 2      # tm fr_timeout: Timer F of every NOTIFY
CLEAN_PERIOD = 1
CHANGES = 6         # PUBLISHes queued behind an unanswered NOTIFY

class QueueSrv(Srv):
    def __init__(self, server: RunningServer, port: int, http_port: int) -> None:
        super().__init__(server, port)
        self.url = f"http://127.0.0.1:{http_port}/mi"

    async def stats(self) -> dict[str, int]:
        reply = await asyncio.to_thread(call_http, self.url, "get_statistics", {"statistics": ["presence:"]},
                                        timeout=5)
        return dict(reply)

    async def wait_stats(self, want: dict[str, int], within: float) -> dict[str, int]:
        """Poll the statistics until they show `want` (bounded by `within` seconds)."""
        deadline = time.monotonic() + within
        while True:
            got = await self.stats()
            if all(got.get(k) == v for k, v in want.items()) or time.monotonic() > deadline:
                return got
            await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueueSrv]:
    tmp = tmp_path_factory.mktemp("notify_queue")
    port, http_port = free_port(), free_port()
    cfg = presence_cfg(tmp, port, tm={"fr_timeout": FR_TIMEOUT}, http_port=http_port,   # the example's MI
                       presence={"clean_period": CLEAN_PERIOD, "end_sub_on_timeout": 0})
    with run_server(cfg, tmp) as server:
        yield QueueSrv(server, port, http_port)


async def publish_changes(srv: Srv, user: str, count: int) -> None:
    async with await srv.client(f"{user}-phone") as phone:
        etag = None
        for n in range(count):
            resp = await phone.send_request(phone.publish(srv.uri(user), pidf(f"sip:{user}@127.0.0.1",
                                                                               note=f"change {n}"),
                                                          expires=600, etag=etag))
            assert resp.status == 200
            etag = str(resp.header("SIP-ETag"))


async def subscribe(srv: Srv, watcher: SipTestClient, user: str, expires: int) -> Any:
    sub = watcher.subscribe(srv.uri(user), expires=expires)
    assert (await watcher.send_request(sub)).status == 200
    return sub


def state(notify: Any) -> str:
    return str(notify.header("Subscription-State"))


async def test_unanswered_notifies_end_with_the_subscription(srv: QueueSrv) -> None:
    """Two watchers whose NOTIFYs never complete (one is silent, one answers garbage), a presentity that
    keeps changing, subscriptions of 3 s: after expiry the final NOTIFY goes out after at most the NOTIFY
    in flight, and then the sender holds nothing (before: one NOTIFY per change, 2 s each)."""
    async with await srv.client("silent") as silent, await srv.client("garbler") as garbler:
        subs = [await subscribe(srv, w, "busy", 3) for w in (silent, garbler)]
        started = time.monotonic()
        firsts = [await w.expect_request("NOTIFY", call_id=s.call_id)
                  for w, s in zip((silent, garbler), subs, strict=True)]
        # the garbler answers, but with a reply nothing can match (no Via): its transaction never completes
        garbler.send_raw(b"SIP/2.0 200 OK\r\nCSeq: " + str(firsts[1].cseq.number).encode()
                         + b" NOTIFY\r\nContent-Length: 0\r\n\r\n")
        await publish_changes(srv, "busy", CHANGES)
        queued = await srv.stats()
        assert queued["presence:notify_queues"] >= 2
        assert queued["presence:queued_notifies"] >= 2 * CHANGES

        # expiry at 3 s, found within a clean_period; then the NOTIFY in flight ends (Timer F) and the
        # final one is sent: at most clean_period + 2 Timer F after the expiry (+ slack for a loaded box)
        bound = 3 + CLEAN_PERIOD + 2 * FR_TIMEOUT + 2.0
        for watcher, sub in zip((silent, garbler), subs, strict=True):
            remaining = bound - (time.monotonic() - started)
            final = await watcher.expect_request(
                "NOTIFY", call_id=sub.call_id, where=lambda r: state(r).startswith("terminated"),
                timeout=max(0.1, remaining))
            assert state(final) == "terminated;reason=timeout"
        after = await srv.wait_stats({"presence:notify_queues": 0, "presence:queued_notifies": 0},
                                     within=FR_TIMEOUT + 2.0)
        assert after["presence:notify_queues"] == 0
        assert after["presence:queued_notifies"] == 0
        assert after["presence:active_subscriptions"] == 0
        assert after["presence:dropped_notifies"] >= 2 * (CHANGES - 2)
        # and nothing after the final NOTIFY
        await asyncio.sleep(0.5)
        for watcher, sub in zip((silent, garbler), subs, strict=True):
            received = [r for r in watcher.requests if r.call_id == sub.call_id]
            assert state(received[-1]).startswith("terminated")


async def test_a_481_ends_the_queue(srv: QueueSrv) -> None:
    """A watcher that answers 481 gets no NOTIFY after it (those queued behind the refused one were sent
    before, each needing its own 481 or Timer F)."""
    async with await srv.client("gone") as gone:
        sub = await subscribe(srv, gone, "restless", 600)
        first = await gone.expect_request("NOTIFY", call_id=sub.call_id)
        await publish_changes(srv, "restless", CHANGES)
        assert (await srv.stats())["presence:queued_notifies"] >= CHANGES
        await gone.reply(first, 481)
        await gone.expect_no_request("NOTIFY", call_id=sub.call_id, within=1.0)
        after = await srv.wait_stats({"presence:notify_queues": 0}, within=2.0)
        assert after["presence:notify_queues"] == 0
        assert after["presence:queued_notifies"] == 0
        refresh = gone.subscribe(expires=600, dialog=gone.dialog(sub, first))
        assert (await gone.send_request(refresh)).status == 481   # the 481 ended the subscription
