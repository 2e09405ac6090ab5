"""Nothing acknowledged is lost (issue 15): `routescript run examples/presence.cfg` on SQLite and PostgreSQL,
killed with -9 right after its replies.

- a new subscription answered 2xx is in active_watchers before the 2xx, and an unsubscribe's row is gone
  before its 2xx (group commit, as PUBLISH), whatever db_update_period says;
- while the database cannot take the row, the SUBSCRIBE is answered 503 + Retry-After and nothing is kept;
- a value the schema cannot store (a Call-ID longer than active_watchers.callid's 64 characters...) is
  refused at arrival with a 4xx naming it and one log line, and never blocks the other subscriptions.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from db.pg_proxy import TcpProxy, pg_host_port, proxied
from presence_e2e import RunningServer, free_port, presence_cfg, start

from routescript.testing import SipTestClient, pidf

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio
N = 60                # subscriptions acknowledged at once before the kill
NO_SYNC = 1000        # db_update_period: no periodic flush during the test


def kill9(server: RunningServer) -> None:
    server.signal(signal.SIGKILL)
    server.proc.wait(timeout=5)
    server.stop()


async def subscribe_all(client: SipTestClient, uri: str, n: int) -> list[tuple[str, object]]:
    """n initial SUBSCRIBEs at once; returns (Call-ID, dialog) of each, all answered 200."""
    subs = [client.subscribe(uri, expires=600) for _ in range(n)]
    replies = await asyncio.gather(*(client.send_request(s) for s in subs))
    assert [r.status for r in replies] == [200] * n
    return [(s.call_id, client.dialog(s, r)) for s, r in zip(subs, replies, strict=True)]


async def test_acknowledged_subscriptions_survive_kill9(tmp_path: Path, presence_db: TestDb) -> None:
    port = free_port()
    server = start(presence_cfg(tmp_path, port, db_url=presence_db.url,
                                presence={"db_update_period": NO_SYNC}), tmp_path)
    try:
        async with await SipTestClient.start("udp", ("127.0.0.1", port), user="wes", timeout=10) as wes:
            wes.auto_reply["NOTIFY"] = 200
            made = await subscribe_all(wes, f"sip:pam@127.0.0.1:{port}", N)
            kill9(server)   # at once: no periodic sync ran, no clean stop
        stored = {r[0] for r in presence_db.rows("SELECT callid FROM active_watchers")}
        assert stored == {callid for callid, _ in made}
    finally:
        server.stop()


async def test_acknowledged_unsubscribes_survive_kill9(tmp_path: Path, presence_db: TestDb) -> None:
    port = free_port()
    cfg = presence_cfg(tmp_path, port, db_url=presence_db.url, presence={"db_update_period": NO_SYNC})
    server = start(cfg, tmp_path)
    try:
        async with await SipTestClient.start("udp", ("127.0.0.1", port), user="una", timeout=10) as una:
            una.auto_reply["NOTIFY"] = 200
            made = await subscribe_all(una, f"sip:pat@127.0.0.1:{port}", N)
            assert server.stop() == 0     # a clean stop: every subscription stored either way
            server = start(presence_cfg(tmp_path, port, db_url=presence_db.url, name="again.cfg",
                                        presence={"db_update_period": NO_SYNC}), tmp_path)
            server.wait_for(f"0 publications and {N} subscriptions loaded")
            gone, kept = made[: N // 2], made[N // 2:]
            replies = await asyncio.gather(*(una.send_request(una.subscribe(expires=0, dialog=d))  # type: ignore[arg-type]
                                             for _, d in gone))
            assert [r.status for r in replies] == [200] * len(gone)
            kill9(server)
        stored = {r[0] for r in presence_db.rows("SELECT callid FROM active_watchers")}
        assert stored == {callid for callid, _ in kept}
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["postgres", "mysql"], indirect=True)
async def test_subscribe_while_the_database_is_away_is_503(tmp_path: Path, presence_db: TestDb) -> None:
    """No fallback2db: nothing reads the database on the way, only the row's commit can fail."""
    proxy = TcpProxy(pg_host_port(presence_db.url))
    await proxy.start()
    port = free_port()
    cfg = presence_cfg(tmp_path, port, db_url=proxied(presence_db.url, proxy),
                       presence={"db_update_period": NO_SYNC})
    server = await asyncio.to_thread(start, cfg, tmp_path)
    uri = f"sip:dot@127.0.0.1:{port}"
    try:
        async with await SipTestClient.start("udp", ("127.0.0.1", port), user="dot", timeout=5) as dot, \
                await SipTestClient.start("udp", ("127.0.0.1", port), user="vic", timeout=5) as vic:
            vic.auto_reply["NOTIFY"] = 200
            first = vic.subscribe(uri, expires=600)
            resp = await vic.send_request(first)
            assert resp.status == 200
            dialog = vic.dialog(first, resp)
            await vic.expect_request("NOTIFY", call_id=first.call_id)

            await proxy.stop()
            t0 = time.monotonic()
            lost = vic.subscribe(uri, expires=600)
            resp = await vic.send_request(lost)
            assert (resp.status, resp.header("Retry-After")) == (503, "5")
            await vic.expect_no_request("NOTIFY", call_id=lost.call_id, within=0.2)
            bye = await vic.send_request(vic.subscribe(expires=0, dialog=dialog))
            assert (bye.status, bye.header("Retry-After")) == (503, "5")
            assert time.monotonic() - t0 < 3
            logged = f"SUBSCRIBE {lost.call_id} to sip:dot@127.0.0.1 not stored"
            await asyncio.to_thread(server.wait_for, logged, 3)

            await proxy.start()
            deadline = time.monotonic() + 10
            while True:   # the pool reconnects with its back-off
                again = vic.subscribe(uri, expires=600)
                resp = await vic.send_request(again)
                if resp.status == 200 or time.monotonic() > deadline:
                    break
                assert resp.status == 503
                await asyncio.sleep(0.25)
            assert resp.status == 200
            await vic.expect_request("NOTIFY", call_id=again.call_id)
            # the subscription whose unsubscribe failed is still there: a PUBLISH reaches it
            ok = await dot.send_request(dot.publish(uri, pidf(dot.aor, note="back"), expires=600))
            assert ok.status == 200
            for callid in (first.call_id, again.call_id):
                assert b"<note>back</note>" in (await vic.expect_request("NOTIFY", call_id=callid)).body
            stored = {r[0] for r in presence_db.rows("SELECT callid FROM active_watchers")}
            assert stored == {first.call_id, again.call_id}
    finally:
        await asyncio.to_thread(server.stop)
        await proxy.stop()


async def test_values_the_schema_cannot_hold_are_refused_at_arrival(tmp_path: Path,
                                                                    presence_db: TestDb) -> None:
    """active_watchers.callid is VARCHAR(64) (OpenSIPS's schema): on PostgreSQL a longer Call-ID failed
    every periodic save, so nobody's subscription was stored while that dialog lived. The rule is the same
    on SQLite (which would store anything): what the schema cannot hold is refused when it arrives."""
    port = free_port()
    server = start(presence_cfg(tmp_path, port, db_url=presence_db.url, presence={"db_update_period": 1}),
                   tmp_path)
    uri = f"sip:lea@127.0.0.1:{port}"
    try:
        async with await SipTestClient.start("udp", ("127.0.0.1", port), user="wim", timeout=5) as wim, \
                await SipTestClient.start("udp", ("127.0.0.1", port), user="lea", timeout=5) as lea:
            wim.auto_reply["NOTIFY"] = 200
            long_callid = "c" * 65
            bad = wim.subscribe(uri, expires=600, call_id=long_callid)
            good = wim.subscribe(uri, expires=600)
            replies = await asyncio.gather(wim.send_request(bad), wim.send_request(good))
            assert [(r.status, r.reason) for r in replies] == [(400, "Call-ID too long"), (200, "OK")]
            await wim.expect_no_request("NOTIFY", call_id=long_callid, within=0.2)
            await asyncio.to_thread(server.wait_for, f"(Call-ID {long_callid})", 3)   # logged, with it
            dialog = wim.dialog(good, replies[1])

            # a refresh whose Contact (255) could not be stored: refused, the dialog goes on unchanged
            contact = f"<sip:{'k' * 250}@127.0.0.1:{wim.hostport.rsplit(':', 1)[1]}>"
            resp = await wim.send_request(wim.subscribe(expires=300, dialog=dialog, contact=False,
                                                        headers=[("Contact", contact)]))
            assert (resp.status, resp.reason) == (400, "Contact too long")
            too_long = {
                "From": wim.subscribe(uri, from_=f"sip:{'f' * 65}@127.0.0.1"),
                "To": wim.subscribe(uri, to=f"sip:{'t' * 65}@127.0.0.1"),
                "Event": wim.subscribe(uri, event=f"presence;id={'i' * 65}"),
                "From tag": wim.subscribe(uri, from_tag="g" * 65),
            }
            for what, req in too_long.items():
                resp = await wim.send_request(req)
                assert (resp.status, resp.reason) == (400, f"{what} too long"), what
            resp = await wim.send_request(wim.subscribe(f"sip:{'u' * 250}@127.0.0.1:{port}"))
            assert (resp.status, resp.reason) == (414, "Request-URI Too Long")

            # PUBLISH: presentity.username/domain are 64, sender 255 (handle_publish("$hdr(Sender)"))
            resp = await lea.send_request(lea.publish(f"sip:{'p' * 65}@127.0.0.1:{port}", pidf(lea.aor)))
            assert (resp.status, resp.reason) == (414, "Request-URI Too Long")
            resp = await lea.send_request(lea.publish(uri, pidf(lea.aor), headers=[
                ("Sender", f"sip:{'s' * 260}@127.0.0.1")]))
            assert (resp.status, resp.reason) == (400, "Sender too long")
            assert presence_db.count("presentity") == 0

            # the periodic save goes on for everybody: the good dialog's refresh reaches the table
            resp = await wim.send_request(wim.subscribe(expires=300, dialog=dialog))
            assert resp.status == 200
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                rows = presence_db.rows("SELECT callid, expires FROM active_watchers")
                if len(rows) == 1 and int(rows[0][1]) < time.time() + 400:
                    break
                await asyncio.sleep(0.1)
            assert len(rows) == 1 and rows[0][0] == good.call_id and int(rows[0][1]) < time.time() + 400
            assert "saving subscriptions failed" not in server.log()
    finally:
        server.stop()
