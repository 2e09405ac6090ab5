"""Presence with two worker processes, end to end (issue 18, docs/workers.md build plan steps 5-7):
examples/presence.cfg under `routescript run` with udp_workers = 2 on SQLite.

With worker_affinity "callid" the owner of a message is crc32(Call-ID) % 2, so a test picks its
Call-IDs to put watchers and publishers on the worker it wants (`on`):
- watchers on both workers of one presentity get each PUBLISH's NOTIFY exactly once, CSeq strictly
  increasing, and none is retransmitted (the NOTIFY 200s reach the worker that sent it: rule 1);
- a TCP watcher whose SUBSCRIBE is owned by w1 (the connection is w0's: tcp_workers = 1) gets the
  NOTIFYs of a PUBLISH handled by w0 on its connection;
- an expiring subscription gets its terminated NOTIFY once;
- `kill -9` of a worker: nothing acknowledged is lost (rows), its watchers get the current state
  within 3 s, and later PUBLISHes reach every watcher.
With worker_affinity "uri" the owner of an initial SUBSCRIBE is the presentity's worker: a refresh and
an unSUBSCRIBE whose Call-ID hashes to the other worker still reach the owner (rule 2, the To tag).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
import urllib.request
import zlib
from collections.abc import Iterator
from itertools import count, pairwise
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from presence_e2e import RunningServer, free_port, presence_cfg

from routescript.sip import SIPRequest
from routescript.testing import SipTestClient, pidf
from routescript.testing.client import SipTimeout

pytestmark = pytest.mark.asyncio

START_TIMEOUT = 40.0   # a supervisor and two workers with presence on a loaded 2-core machine
NOTIFY_WAIT = 5.0
_ids = count(1)


def on(slot: int, n: int = 2) -> str:
    """A fresh Call-ID whose owner is worker `slot` (rule 4: crc32(Call-ID) % n)."""
    while True:
        call_id = f"wk-{next(_ids)}-{os.getpid()}"
        if zlib.crc32(call_id.encode()) % n == slot:
            return call_id


def uri_slot(user: str, n: int = 2) -> int:
    """The worker rule 3 gives a PUBLISH/SUBSCRIBE of sip:user@127.0.0.1 (affinity "uri")."""
    return zlib.crc32(f"{user}@127.0.0.1".encode()) % n


class Server:
    def __init__(self, tmp_path: Path, affinity: str) -> None:
        self.port, self.http = free_port(), free_port()
        self.db = tmp_path / "presence.sqlite"
        cfg = presence_cfg(tmp_path, self.port, db=self.db, http_port=self.http, workers=2, affinity=affinity,
                           presence={"clean_period": 1})   # expiry runs each second
        self.run: RunningServer = start_slow(cfg, tmp_path)

    def uri(self, user: str) -> str:
        return f"sip:{user}@127.0.0.1:{self.port}"

    async def client(self, user: str, proto: str = "udp") -> SipTestClient:
        client = await SipTestClient.start(proto, ("127.0.0.1", self.port), user=user, timeout=NOTIFY_WAIT)
        client.auto_reply["NOTIFY"] = 200
        return client

    def mi(self, method: str, params: Any = None) -> Any:
        body = {"jsonrpc": "2.0", "method": method, "id": 1, **({"params": params} if params else {})}
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}/mi", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:   # noqa: S310 - loopback, our server
            answer = json.loads(resp.read())
        assert "error" not in answer, answer
        return answer["result"]

    def worker_pids(self) -> dict[int, int | None]:
        rows = self.mi("ps")["Processes"]
        return {r["ID"] - 1: r["PID"] for r in rows if r["Type"].startswith("SIP worker")}

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db, timeout=10) as conn:
            return conn.execute(sql, args).fetchall()

    def watcher_tags(self) -> dict[str, str]:
        return dict(self.rows("SELECT callid, sharing_tag FROM active_watchers"))


def start_slow(cfg: Path, tmp_path: Path) -> RunningServer:
    server = RunningServer(cfg, tmp_path)
    try:
        server.wait_for("routescript started", timeout=START_TIMEOUT)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture
def callid_server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path, "callid")
    try:
        yield server
    finally:
        server.run.stop()


@pytest.fixture
def uri_server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path, "uri")
    try:
        yield server
    finally:
        server.run.stop()


async def publish(client: SipTestClient, uri: str, note: str, *, slot: int, etag: str | None = None,
                  expires: int = 600) -> str:
    """A PUBLISH owned by worker `slot`, acknowledged 200; its SIP-ETag."""
    req = client.publish(uri, pidf(uri, note=note), expires=expires, etag=etag, call_id=on(slot))
    resp = await client.send_request(req)
    assert resp.status == 200, resp.to_bytes()
    tag = resp.header("SIP-ETag")
    assert tag
    return tag


async def subscribe(client: SipTestClient, uri: str, *, call_id: str, expires: int = 600) -> SIPRequest:
    """An initial SUBSCRIBE, 200, and its first NOTIFY; the SUBSCRIBE."""
    sub = client.subscribe(uri, expires=expires, call_id=call_id)
    resp = await client.send_request(sub)
    assert resp.status == 200, resp.to_bytes()
    return sub


async def notifies(client: SipTestClient, call_id: str, want: int) -> list[SIPRequest]:
    """Exactly `want` NOTIFYs of `call_id` (and no more within half a second)."""
    got = [await client.expect_request("NOTIFY", call_id=call_id, timeout=NOTIFY_WAIT) for _ in range(want)]
    await client.expect_no_request("NOTIFY", call_id=call_id, within=0.5)
    return got


async def drain(client: SipTestClient, call_id: str) -> list[SIPRequest]:
    """Every NOTIFY of `call_id` until none comes for a second."""
    got = []
    while True:
        try:
            got.append(await client.expect_request("NOTIFY", call_id=call_id, timeout=1.0))
        except SipTimeout:
            return got


def notes(got: list[SIPRequest]) -> list[str]:
    out = []
    for n in got:
        body = n.body.decode()
        out.append(body.split("<note>", 1)[1].split("</note>", 1)[0] if "<note>" in body else "")
    return out


def cseqs(got: list[SIPRequest]) -> list[int]:
    return [n.cseq.number for n in got]


def strictly_increasing(values: list[int]) -> bool:
    return all(a < b for a, b in pairwise(values))


async def test_watchers_on_both_workers_get_each_publish_once_in_order(callid_server: Server) -> None:
    srv = callid_server
    uri = srv.uri("alice")
    async with await srv.client("alice") as alice, await srv.client("w0") as w0, \
            await srv.client("w1") as w1:
        await publish(alice, uri, "v0", slot=0)
        subs = {0: await subscribe(w0, uri, call_id=on(0)), 1: await subscribe(w1, uri, call_id=on(1))}
        first = {0: await notifies(w0, subs[0].call_id, 1), 1: await notifies(w1, subs[1].call_id, 1)}
        assert notes(first[0]) == notes(first[1]) == ["v0"]
        assert srv.watcher_tags() == {subs[0].call_id: "w0", subs[1].call_id: "w1"}
        etag = None
        for i in range(1, 5):   # each change published on the other worker than the last
            etag = await publish(alice, uri, f"v{i}", slot=i % 2, etag=etag)
        for slot, client in ((0, w0), (1, w1)):
            got = first[slot] + await notifies(client, subs[slot].call_id, 4)
            assert notes(got) == ["v0", "v1", "v2", "v3", "v4"], (slot, notes(got))
            assert strictly_increasing(cseqs(got)), (slot, cseqs(got))
            # no NOTIFY came twice: its 200 reached the worker that sent it (rule 1), no 408
            assert client.retransmissions == {}, (slot, client.retransmissions)
    assert "Traceback" not in srv.run.log(), srv.run.log()


async def test_tcp_watcher_gets_other_workers_notifies_on_its_connection(callid_server: Server) -> None:
    srv = callid_server
    uri = srv.uri("carol")
    async with await srv.client("carol") as carol, await srv.client("tw", proto="tcp") as tw:
        # the connection is w0's (tcp_workers = 1); the subscription w1's; the PUBLISHes w0's
        sub = await subscribe(tw, uri, call_id=on(1))
        assert srv.watcher_tags() == {sub.call_id: "w1"}
        got = await notifies(tw, sub.call_id, 1)
        etag = await publish(carol, uri, "online", slot=0)
        await publish(carol, uri, "busy", slot=0, etag=etag)
        got += await notifies(tw, sub.call_id, 2)
        assert notes(got) == ["", "online", "busy"]
        assert strictly_increasing(cseqs(got)), cseqs(got)
        assert tw.retransmissions == {}
        assert tw.connected


async def test_expiry_notify_is_sent_once(callid_server: Server) -> None:
    srv = callid_server
    uri = srv.uri("dave")
    async with await srv.client("dave") as dave, await srv.client("ew") as ew:
        await publish(dave, uri, "here", slot=0)
        sub = await subscribe(ew, uri, call_id=on(1), expires=2)
        got = await notifies(ew, sub.call_id, 1)
        last = await ew.expect_request("NOTIFY", call_id=sub.call_id, timeout=10)
        assert (last.header("Subscription-State") or "").startswith("terminated"), last.to_bytes()
        await ew.expect_no_request("NOTIFY", call_id=sub.call_id, within=2.0)
        assert cseqs(got)[0] < last.cseq.number


async def test_kill_9_loses_nothing_and_its_watchers_get_the_state(callid_server: Server) -> None:
    srv = callid_server
    uri = srv.uri("erin")
    async with await srv.client("erin") as erin, await srv.client("k0") as k0, \
            await srv.client("k1") as k1:
        etag = await publish(erin, uri, "before", slot=1)
        subs = {0: await subscribe(k0, uri, call_id=on(0)), 1: await subscribe(k1, uri, call_id=on(1))}
        got = {0: await notifies(k0, subs[0].call_id, 1), 1: await notifies(k1, subs[1].call_id, 1)}
        etag = await publish(erin, uri, "last", slot=0, etag=etag)
        for slot, client in ((0, k0), (1, k1)):
            got[slot] += await notifies(client, subs[slot].call_id, 1)
        pids = srv.worker_pids()
        killed_at = time.monotonic()
        os.kill(pids[1], signal.SIGKILL)   # w1: the PUBLISH's first worker and k1's owner
        # every acknowledged state is in the database
        assert srv.rows("SELECT COUNT(*) FROM presentity WHERE username = 'erin'") == [(1,)]
        assert set(srv.watcher_tags().values()) == {"w0", "w1"}
        rejoin = await k1.expect_request("NOTIFY", call_id=subs[1].call_id, timeout=5)
        assert time.monotonic() - killed_at < 3.5, time.monotonic() - killed_at
        assert notes([rejoin]) == ["last"]
        assert rejoin.cseq.number > cseqs(got[1])[-1]
        srv.run.wait_for("w1 restarted", timeout=20)
        await publish(erin, uri, "after", slot=1, etag=etag)
        for slot, client in ((0, k0), (1, k1)):
            after = await client.expect_request("NOTIFY", call_id=subs[slot].call_id, timeout=NOTIFY_WAIT)
            assert notes([after]) == ["after"]
        # k0 (w0's) heard nothing twice; each watcher one owner
        await k0.expect_no_request("NOTIFY", call_id=subs[0].call_id, within=0.5)
        assert sorted(srv.watcher_tags().values()) == ["w0", "w1"]


async def test_refresh_and_unsubscribe_reach_the_owner_by_the_to_tag(uri_server: Server) -> None:
    srv = uri_server
    user = "frank"
    owner = uri_slot(user)
    uri = srv.uri(user)
    async with await srv.client(user) as frank, await srv.client("rw") as rw:
        await publish(frank, uri, "one", slot=owner)
        # the Call-ID alone would send the in-dialog requests to the other worker
        sub = rw.subscribe(uri, expires=600, call_id=on(1 - owner))
        resp = await rw.send_request(sub)
        assert resp.status == 200, resp.to_bytes()
        assert resp.to.tag and resp.to.tag.startswith(f"{owner}."), resp.to.tag
        got = await notifies(rw, sub.call_id, 1)
        assert srv.watcher_tags() == {sub.call_id: f"w{owner}"}
        dialog = rw.dialog(sub, resp)
        refresh = rw.subscribe(uri, expires=600, dialog=dialog)
        resp = await rw.send_request(refresh)
        assert resp.status == 200, resp.to_bytes()
        got += await notifies(rw, sub.call_id, 1)
        assert srv.watcher_tags() == {sub.call_id: f"w{owner}"}   # the owner kept it
        unsub = rw.subscribe(uri, expires=0, dialog=dialog)
        resp = await rw.send_request(unsub)
        assert resp.status == 200, resp.to_bytes()
        got += await notifies(rw, sub.call_id, 1)
        assert (got[-1].header("Subscription-State") or "").startswith("terminated")
        assert strictly_increasing(cseqs(got)), cseqs(got)
        assert srv.rows("SELECT sharing_tag FROM active_watchers") in ([], [(f"w{owner}",)])


async def test_a_crash_looping_worker_is_adopted_then_claims_back(callid_server: Server) -> None:
    srv = callid_server
    uri = srv.uri("hank")
    async with await srv.client("hank") as hank, await srv.client("aw") as aw:
        etag = await publish(hank, uri, "start", slot=0)
        sub = await subscribe(aw, uri, call_id=on(1))
        got = await notifies(aw, sub.call_id, 1)
        resp = aw.responses_for(sub)[-1]
        dialog = aw.dialog(sub, resp)
        etag = await publish(hank, uri, "then", slot=0, etag=etag)
        got += await notifies(aw, sub.call_id, 1)
        # kill w1 at each start: its back-off grows until it is down for more than 2 s
        killed: set[int] = set()
        deadline = time.monotonic() + 40
        while "w0 adopts its state" not in srv.run.log().split("w1 has not been running", 1)[-1]:
            assert time.monotonic() < deadline, srv.run.log()
            pid = srv.worker_pids()[1]
            if pid is not None and pid not in killed:
                killed.add(pid)
                os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.05)
        srv.run.wait_for("w0 adopted w1 (1 subscriptions)", timeout=10)
        # a w1 that started between kills sent its rejoin NOTIFY; the adopter then sends the state
        since = await drain(aw, sub.call_id)
        assert since and notes(since)[-1] == "then", notes(since)
        got += since
        assert srv.watcher_tags() == {sub.call_id: "w0"}
        # while w1 is down its dialogs are w0's: a refresh (To tag says w1) is answered by w0
        if srv.worker_pids()[1] is None:
            resp = await aw.send_request(aw.subscribe(uri, expires=600, dialog=dialog))
            assert resp.status == 200, resp.to_bytes()
            got += await notifies(aw, sub.call_id, 1)
        srv.run.wait_for("slot table version 2: w0->w0, w1->w1", timeout=30)
        await asyncio.sleep(0.5)   # the table reaches w0 over its control channel
        # w1 is back: the refresh reaches it (rule 2) and it claims the dialog back
        resp = await aw.send_request(aw.subscribe(uri, expires=600, dialog=dialog))
        assert resp.status == 200, resp.to_bytes()
        got += await notifies(aw, sub.call_id, 1)
        assert srv.watcher_tags() == {sub.call_id: "w1"}
        await publish(hank, uri, "end", slot=0, etag=etag)
        got += await notifies(aw, sub.call_id, 1)
        assert notes(got)[-1] == "end"
        assert strictly_increasing(cseqs(got)), cseqs(got)
