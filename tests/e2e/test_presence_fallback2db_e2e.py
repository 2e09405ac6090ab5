"""fallback2db: two `routescript run` servers share one database (SQLite file, PostgreSQL schema); what
one stored, the other finds when its own memory misses (in-dialog SUBSCRIBE, SIP-If-Match etag, NOTIFY
body, watchers to notify). Without clustering, as in OpenSIPS: every server notifies every watcher."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from presence_e2e import free_port, presence_cfg, start

from routescript.testing import SipTestClient, pidf

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio


async def test_two_servers_one_database(tmp_path: Path, presence_db: TestDb) -> None:
    db = presence_db.url
    p1, p2 = free_port(), free_port()
    opts = {"fallback2db": 1, "db_update_period": 100}
    s1 = start(presence_cfg(tmp_path, p1, db_url=db, presence=opts, name="one.cfg"), tmp_path)
    s2 = start(presence_cfg(tmp_path, p2, db_url=db, presence=opts, name="two.cfg"), tmp_path)
    try:
        async with await SipTestClient.start("udp", ("127.0.0.1", p1), user="ava", timeout=4) as ava1, \
                await SipTestClient.start("udp", ("127.0.0.1", p2), user="ava", timeout=4) as ava2, \
                await SipTestClient.start("udp", ("127.0.0.1", p1), user="ray", timeout=4) as ray1, \
                await SipTestClient.start("udp", ("127.0.0.1", p2), user="ray", timeout=4) as ray2:
            # ray subscribes through server one (stored at once: fallback2db writes through)
            sub = ray1.subscribe(f"sip:ava@127.0.0.1:{p1}")
            resp = await ray1.send_request(sub)
            assert resp.status == 200
            await ray1.reply(await ray1.expect_request("NOTIFY", call_id=sub.call_id))
            dialog = ray1.dialog(sub, resp)

            # ava publishes through server one, refreshes/modifies through server two: the etag is found
            r = await ava1.send_request(ava1.publish(f"sip:ava@127.0.0.1:{p1}", pidf(ava1.aor, note="one")))
            assert r.status == 200
            await ray1.reply(await ray1.expect_request("NOTIFY", call_id=sub.call_id))
            r = await ava2.send_request(ava2.publish(f"sip:ava@127.0.0.1:{p2}", pidf(ava2.aor, note="two"),
                                                     etag=r.header("SIP-ETag")))
            assert r.status == 200
            # server two notifies ray, whose subscription server one made (CSeq continues from the db)
            n = await ray1.expect_request("NOTIFY", call_id=sub.call_id)
            await ray1.reply(n)
            assert b"<note>two</note>" in n.body and n.header("CSeq") == "3 NOTIFY"

            # ray's in-dialog refresh reaches server two: the dialog is read from the database
            resp = await ray2.send_request(ray2.subscribe(f"sip:ava@127.0.0.1:{p2}", event="presence",
                                                          expires=300, dialog=dialog))
            assert resp.status == 200
            n = await ray2.expect_request("NOTIFY", call_id=sub.call_id)   # to the refresh's Contact
            assert n.header("Subscription-State") == "active;expires=300" and b"<note>two</note>" in n.body
            assert n.header("CSeq") == "4 NOTIFY"

            # a new watcher at server one sees what server two stored
            ray1.auto_reply["NOTIFY"] = 200
            sub2 = ray1.subscribe(f"sip:ava@127.0.0.1:{p1}")
            assert (await ray1.send_request(sub2)).status == 200
            n = await ray1.expect_request("NOTIFY", call_id=sub2.call_id)
            assert b"<note>two</note>" in n.body and b"<note>one</note>" not in n.body
    finally:
        s1.stop()
        s2.stop()
