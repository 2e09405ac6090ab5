"""A NOTIFY to a TCP watcher whose connection is gone and whose address refuses connections, with 1 and 2
worker processes (docs/workers.md section 4): the same outcome in the same short time.

In one process the NOTIFY's client transaction opens a new connection, is refused, and ends at once with
the transport error's local 503 (RFC 3261 17.1.4); presence keeps the subscription (only 481, 408 with
end_sub_on_timeout and 513 end it). With 2 workers the subscription is worker 1's (its Call-ID), the
connection was worker 0's (tcp_workers = 1): worker 1's NOTIFY goes through worker 0, whose connect is
refused; worker 0 reports it back, and worker 1's transaction ends the same way - not 408 after Timer F
(10 s here), which would end the subscription."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from presence_e2e import RunningServer, free_port, presence_cfg
from test_presence_workers_e2e import NOTIFY_WAIT, notifies, on, publish, start_slow, subscribe

from routescript.testing import SipTestClient

pytestmark = pytest.mark.asyncio

FR_TIMEOUT = 10     # Timer F of the NOTIFYs: a 408 would take this long
QUICK = 3.0         # the transport error comes well before it


class Server:
    def __init__(self, tmp_path: Path, workers: int) -> None:
        self.port = free_port()
        self.workers = workers
        cfg = presence_cfg(tmp_path, self.port, db=tmp_path / "presence.sqlite", workers=workers,
                           affinity="callid", tm={"fr_timeout": FR_TIMEOUT})
        self.run: RunningServer = start_slow(cfg, tmp_path)

    def uri(self, user: str) -> str:
        return f"sip:{user}@127.0.0.1:{self.port}"

    async def client(self, user: str, proto: str = "udp") -> SipTestClient:
        client = await SipTestClient.start(proto, ("127.0.0.1", self.port), user=user, timeout=NOTIFY_WAIT)
        client.auto_reply["NOTIFY"] = 200
        return client

    async def logged(self, text: str, count: int = 1, timeout: float = QUICK) -> float:
        """Wait until `text` is in the log `count` times; the seconds it took."""
        started = time.monotonic()
        await asyncio.to_thread(self.run.wait_for, text, timeout, count=count)
        return time.monotonic() - started


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path, request.param)
    try:
        yield srv
    finally:
        srv.run.stop()


async def test_a_notify_to_a_gone_tcp_watcher_is_a_transport_error_at_once(server: Server) -> None:
    uri = server.uri("lamp")
    async with await server.client("pub") as pub:
        watcher = await server.client("gone", proto="tcp")
        try:
            # 2 workers: the subscription is worker 1's, the connection worker 0's
            sub = await subscribe(watcher, uri, call_id=on(1, 2) if server.workers == 2 else on(0, 1))
            await notifies(watcher, sub.call_id, 1)
        finally:
            await watcher.close()   # the connection is gone, and nothing listens on its port any more
        await asyncio.sleep(0.3)   # the server reads the close
        failed = f"transaction NOTIFY {sub.call_id}: cannot send to"
        etag = await publish(pub, uri, "busy", slot=0)
        took = await server.logged(failed)
        assert took < QUICK
        # the subscription stays (503 does not end it): the next PUBLISH notifies it again, as quickly
        await publish(pub, uri, "idle", slot=0, etag=etag)
        took = await server.logged(failed, count=2)
        assert took < QUICK
    log = server.run.log()
    assert "Connection refused" in log.split(failed, 1)[1].splitlines()[0]
    assert f"subscription {sub.call_id}" not in log      # not ended (408 would: end_sub_on_timeout)
    assert "Traceback" not in log
