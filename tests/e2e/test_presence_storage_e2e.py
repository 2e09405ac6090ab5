"""Storage and timers of `routescript run examples/presence.cfg`, on SQLite and PostgreSQL: OpenSIPS's tables,
clean_period expiry of publications (watchers told) and subscriptions (terminated;reason=timeout) with the
expires_offset grace, restart recovery after a clean stop and after kill -9 following a db sync."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from presence_e2e import free_port, presence_cfg, start

from routescript.testing import SipTestClient, pidf

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio


async def test_expiry_with_clean_period_and_offset(tmp_path: Path, presence_db: TestDb) -> None:
    port = free_port()
    db = presence_db
    timers = {"clean_period": 1, "db_update_period": 1, "expires_offset": 1}
    server = start(presence_cfg(tmp_path, port, db_url=db.url, presence=timers), tmp_path)
    try:
        assert {"presentity", "active_watchers", "watchers", "version"} <= db.tables()
        uri = f"sip:ann@127.0.0.1:{port}"
        async with await SipTestClient.start("udp", ("127.0.0.1", port), user="ann", timeout=5) as ann, \
                await SipTestClient.start("udp", ("127.0.0.1", port), user="bo", timeout=5) as bo, \
                await SipTestClient.start("tcp", ("127.0.0.1", port), user="cy", timeout=5) as cy:
            bo.auto_reply["NOTIFY"] = 200
            cy.auto_reply["NOTIFY"] = 200
            short = bo.subscribe(uri, expires=2)
            assert (await bo.send_request(short)).status == 200
            t0 = time.monotonic()
            long = cy.subscribe(uri, expires=60)
            assert (await cy.send_request(long)).status == 200
            await bo.expect_request("NOTIFY", call_id=short.call_id)
            await cy.expect_request("NOTIFY", call_id=long.call_id)
            resp = await ann.send_request(ann.publish(uri, pidf(ann.aor, note="brief"), expires=2))
            assert resp.status == 200 and db.count("presentity") == 1
            await bo.expect_request("NOTIFY", call_id=short.call_id)
            await cy.expect_request("NOTIFY", call_id=long.call_id)
            # within the grace (expired 2 s ago? no: expires 2 + offset 1) the etag still refreshes
            await asyncio.sleep(2.2)
            resp = await ann.send_request(ann.publish(uri, None, expires=2, etag=resp.header("SIP-ETag")))
            assert resp.status == 200
            # the short subscription ends by the timer: not before expires + offset
            end = await bo.expect_request("NOTIFY", call_id=short.call_id, timeout=3)
            assert end.header("Subscription-State") == "terminated;reason=timeout"
            assert time.monotonic() - t0 >= 2.9
            # the refreshed publication expires (2 + 1 s later): the long watcher hears it closed
            gone = await cy.expect_request("NOTIFY", call_id=long.call_id, timeout=5)
            assert b"<basic>closed</basic>" in gone.body and b"brief" not in gone.body
            assert db.count("presentity") == 0
            await asyncio.sleep(1.2)   # one db_update_period: the ended subscription is gone from the table
            callids = [r[0] for r in db.rows("SELECT callid FROM active_watchers")]
            assert callids == [long.call_id]
    finally:
        server.stop()


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
async def test_restart_keeps_watchers_notified(tmp_path: Path, how: str, presence_db: TestDb) -> None:
    port = free_port()
    db = presence_db
    # SIGTERM: no periodic sync at all, the subscriptions are written at the clean stop;
    # kill -9: nothing is flushed at the end, only the db_update_period sync before it counts.
    period = 100 if how == "sigterm" else 1
    cfg = presence_cfg(tmp_path, port, db_url=db.url, presence={"db_update_period": period})
    server = start(cfg, tmp_path)
    uri = f"sip:dee@127.0.0.1:{port}"
    async with await SipTestClient.start("udp", ("127.0.0.1", port), user="dee", timeout=5) as dee, \
            await SipTestClient.start("udp", ("127.0.0.1", port), user="eli", timeout=5) as eli:
        try:
            eli.auto_reply["NOTIFY"] = 200
            sub = eli.subscribe(uri, expires=600)
            resp = await eli.send_request(sub)
            dialog = eli.dialog(sub, resp)
            await eli.expect_request("NOTIFY", call_id=sub.call_id)
            pub = await dee.send_request(dee.publish(uri, pidf(dee.aor, note="before"), expires=600))
            await eli.expect_request("NOTIFY", call_id=sub.call_id)
            if how == "sigterm":
                assert server.stop() == 0
            else:
                for _ in range(100):   # the row is stored before the 200; its NOTIFYs' CSeq at the sync
                    if db.rows("SELECT local_cseq FROM active_watchers") == [(2,)]:
                        break
                    await asyncio.sleep(0.05)
                assert db.rows("SELECT local_cseq FROM active_watchers") == [(2,)]
                server.signal(signal.SIGKILL)
                server.proc.wait(timeout=5)
                server.stop()
            server = start(presence_cfg(tmp_path, port, db_url=db.url, presence={"db_update_period": period},
                                        name="restarted.cfg"), tmp_path)
            server.wait_for("1 publications and 1 subscriptions loaded")
            # the publication came back: its etag still works, and the watcher is told
            resp = await dee.send_request(dee.publish(uri, pidf(dee.aor, note="after"), expires=600,
                                                      etag=pub.header("SIP-ETag")))
            assert resp.status == 200
            n = await eli.expect_request("NOTIFY", call_id=sub.call_id)
            assert b"<note>after</note>" in n.body and n.header("CSeq") == "3 NOTIFY"
            # the dialog is still known: an in-dialog refresh works
            resp = await eli.send_request(eli.subscribe(event="presence", expires=300, dialog=dialog))
            assert resp.status == 200
            n = await eli.expect_request("NOTIFY", call_id=sub.call_id)
            assert n.header("CSeq") == "4 NOTIFY" and b"after" in n.body
        finally:
            server.stop()
