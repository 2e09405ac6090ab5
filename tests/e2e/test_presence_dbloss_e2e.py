"""Losing PostgreSQL under `routescript run examples/presence.cfg` (fallback2db = 1, the database is the
truth): the server reaches the database through a TCP proxy the test controls (tests/db/pg_proxy.py).
While the proxy is down, PUBLISH and SUBSCRIBE get 503 with Retry-After (never a crash, never a hang);
when it is back, the pool reconnects by itself (its back-off: 0.5 s doubling) and the same requests work
again, watchers notified as before."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from db.pg_proxy import TcpProxy, pg_host_port, proxied
from presence_e2e import free_port, presence_cfg, start

from routescript.testing import SipTestClient, pidf

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio
RECOVERY = 10.0   # bound on the wait for the pool to come back (its back-off caps far above this)


@pytest.mark.parametrize("backend", ["postgres", "mysql"], indirect=True)
async def test_database_lost_503_then_recovers(tmp_path: Path, presence_db: TestDb) -> None:
    proxy = TcpProxy(pg_host_port(presence_db.url))
    await proxy.start()
    port = free_port()
    url = proxied(presence_db.url, proxy)
    # started from a thread: the proxy runs on this test's event loop, which must keep running meanwhile
    cfg = presence_cfg(tmp_path, port, db_url=url, presence={"fallback2db": 1})
    server = await asyncio.to_thread(start, cfg, tmp_path)
    uri = f"sip:ada@127.0.0.1:{port}"
    try:
        async with await SipTestClient.start("udp", ("127.0.0.1", port), user="ada", timeout=5) as ada, \
                await SipTestClient.start("udp", ("127.0.0.1", port), user="ben", timeout=5) as ben:
            ben.auto_reply["NOTIFY"] = 200
            sub = ben.subscribe(uri, expires=600)
            assert (await ben.send_request(sub)).status == 200
            await ben.expect_request("NOTIFY", call_id=sub.call_id)
            resp = await ada.send_request(ada.publish(uri, pidf(ada.aor, note="up"), expires=600))
            assert resp.status == 200
            assert b"<note>up</note>" in (await ben.expect_request("NOTIFY", call_id=sub.call_id)).body

            await proxy.stop()   # the database is gone: open connections cut, new ones refused
            t0 = time.monotonic()
            down = await ada.send_request(ada.publish(uri, pidf(ada.aor, note="lost"), expires=600))
            assert (down.status, down.header("Retry-After")) == (503, "5")
            other = ben.subscribe(uri, expires=600)
            resp = await ben.send_request(other)
            assert (resp.status, resp.header("Retry-After")) == (503, "5")
            assert time.monotonic() - t0 < 3          # answered at once, not after a connect timeout
            await ben.expect_no_request("NOTIFY", call_id=sub.call_id, within=0.2)
            assert server.proc.poll() is None
            await asyncio.to_thread(server.wait_for, "unreachable", timeout=3)  # logged

            await proxy.start()  # same port: the database is back
            deadline = time.monotonic() + RECOVERY
            while True:
                back = await ada.send_request(ada.publish(uri, pidf(ada.aor, note="back"), expires=600))
                if back.status == 200 or time.monotonic() > deadline:
                    break
                assert back.status == 503
                await asyncio.sleep(0.25)
            assert back.status == 200, back.to_bytes()
            n = await ben.expect_request("NOTIFY", call_id=sub.call_id)
            assert b"<note>back</note>" in n.body
            rows = presence_db.rows("SELECT body FROM presentity WHERE username = 'ada'")
            bodies = [bytes(r[0]) for r in rows]
            assert len(bodies) == 2 and not any(b"lost" in b for b in bodies)
            again = ben.subscribe(uri, expires=600)
            assert (await ben.send_request(again)).status == 200
            n = await ben.expect_request("NOTIFY", call_id=again.call_id)
            assert b"<note>back</note>" in n.body
    finally:
        await asyncio.to_thread(server.stop)   # its last sync goes through the proxy too
        await proxy.stop()
