"""Presence on several nodes (docs/cluster.md) end to end: two and three `routescript run` processes
(examples/cluster-node1.cfg on their own loopback ports) sharing one fresh PostgreSQL schema.

- a PUBLISH on one node reaches the watchers every node holds, each NOTIFY sent once, by the watcher's
  own node (announcement through LISTEN/NOTIFY);
- an expiring subscription gets exactly one terminated NOTIFY, an expiring publication one NOTIFY per
  watcher, whatever node's clean_period runs first;
- kill -9 a node: its watchers are adopted (automatically after cluster_node_timeout, or at once by MI
  pres_cluster_takeover) and keep getting NOTIFYs, CSeq going on;
- a restarted node, and a node whose database connection was cut, catch up with what was announced
  while they were away (rejoin / resync).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from db.pg_proxy import TcpProxy, pg_host_port, proxied
from presence_e2e import ROOT, RunningServer, free_port, presence_cfg

from routescript.mi.client import call_http
from routescript.modules.presence.service import TAKEOVER_CSEQ_GAP as GAP
from routescript.testing import SipTestClient, SipTimeout, pidf

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = [pytest.mark.asyncio, pytest.mark.parametrize("backend", ["postgres", "mysql"], indirect=True)]

EXAMPLE = ROOT / "examples" / "cluster-node1.cfg"
PING = 1          # cluster_ping_interval (the smallest: it is an int parameter)
NODE_TIMEOUT = 3  # cluster_node_timeout: above twice the ping interval
QUIET = 0.4       # how long "no other NOTIFY" is watched for
MI_MODULES = """loadmodule "httpd.so"
loadmodule "mi_http.so"
modparam("httpd", "ip", "127.0.0.1")
modparam("httpd", "port", {http_port})
modparam("mi_http", "root", "mi")
"""


def new_cluster_id() -> int:
    """A cluster id of the test's own: announcement channels are per database, not per schema, so tests
    running at the same time on one PostgreSQL server must not share one."""
    return random.randrange(1000, 2**31 - 1)


class Node:
    """One node: its config, ports and (once launched) its process."""

    def __init__(self, tmp: Path, tag: str, db_url: str, cid: int, *, mi: bool = False,
                 **presence: Any) -> None:
        self.tmp, self.tag = tmp, tag
        self.port = free_port()
        self.http_port = free_port() if mi else 0
        params: dict[str, object] = {"cluster_id": cid, "cluster_sharing_tag": tag,
                                     "cluster_ping_interval": PING, "cluster_node_timeout": NODE_TIMEOUT,
                                     "clean_period": 1, "db_update_period": 1}
        params.update(presence)
        self.cfg = presence_cfg(tmp, self.port, db_url=db_url, example=EXAMPLE, name=f"{tag}.cfg",
                                presence=params)
        if mi:
            self.cfg.write_text(self.cfg.read_text().replace(
                'loadmodule "presence_xml.so"\n',
                'loadmodule "presence_xml.so"\n' + MI_MODULES.format(http_port=self.http_port), 1))
        self.server: RunningServer | None = None
        self.runs = 0

    def uri(self, user: str) -> str:
        return f"sip:{user}@127.0.0.1:{self.port}"

    @property
    def contact(self) -> str:
        """The Contact header of its replies and NOTIFYs (the example's server_address, on our port)."""
        return f"<sip:presence@127.0.0.1:{self.port}>"

    def launch(self) -> None:
        """Start the process; a restart logs to a file of its own."""
        self.runs += 1
        cfg = self.cfg
        if self.runs > 1:
            cfg = self.cfg.with_name(f"{self.tag}-run{self.runs}.cfg")
            cfg.write_text(self.cfg.read_text())
        self.server = RunningServer(cfg, self.tmp)

    def wait_for(self, text: str, timeout: float = 15.0) -> None:
        assert self.server is not None
        self.server.wait_for(text, timeout)

    def kill(self) -> None:
        """kill -9: nothing flushed; its rs_nodes row stops beating."""
        assert self.server is not None
        self.server.proc.kill()
        self.server.proc.wait(timeout=5)
        self.server.stop()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    async def mi(self, method: str, params: Any = None) -> Any:
        url = f"http://127.0.0.1:{self.http_port}/mi"
        return await asyncio.to_thread(call_http, url, method, params, timeout=5)


def start_all(*nodes: Node) -> None:
    """Start the nodes at once (as a deployment may: concurrent schema creation included)."""
    for n in nodes:
        n.launch()
    for n in nodes:
        n.wait_for("routescript started")


async def watch(client: SipTestClient, node: Node, user: str, expires: int = 600) -> Any:
    """An active subscription of `client`, through `node`, to `user`; returns the SUBSCRIBE after its
    first NOTIFY was taken."""
    sub = client.subscribe(node.uri(user), expires=expires)
    resp = await client.send_request(sub)
    assert resp.status == 200, resp.to_bytes()
    await client.expect_request("NOTIFY", call_id=sub.call_id)
    return sub


async def publish(client: SipTestClient, node: Node, note: str, *, etag: str | None = None,
                  expires: int = 600) -> str:
    resp = await client.send_request(client.publish(node.uri(client.user), pidf(client.aor, note=note),
                                                    expires=expires, etag=etag))
    assert resp.status == 200, resp.to_bytes()
    return str(resp.header("SIP-ETag"))


async def client(node: Node, user: str) -> SipTestClient:
    c = await SipTestClient.start("udp", ("127.0.0.1", node.port), user=user, timeout=6)
    c.auto_reply["NOTIFY"] = 200
    return c


async def test_three_nodes_announce_then_mi_takeover(tmp_path: Path, presence_db: TestDb) -> None:
    cid = new_cluster_id()
    n1, n2, n3 = (Node(tmp_path, "node1", presence_db.url, cid), Node(tmp_path, "node2", presence_db.url, cid,
                  mi=True), Node(tmp_path, "node3", presence_db.url, cid))
    try:
        start_all(n1, n2, n3)
        async with await client(n1, "ann") as ann, await client(n1, "w1") as w1, \
                await client(n2, "w2") as w2, await client(n3, "w3") as w3:
            watchers = [(w1, n1, await watch(w1, n1, "ann")), (w2, n2, await watch(w2, n2, "ann")),
                        (w3, n3, await watch(w3, n3, "ann"))]
            t0 = time.monotonic()
            etag = await publish(ann, n1, "first")
            for w, node, sub in watchers:
                n = await w.expect_request("NOTIFY", call_id=sub.call_id)
                assert b"<note>first</note>" in n.body and n.via.port == node.port   # from its own node
                assert n.cseq.number == 2
                if node is not n1:
                    assert time.monotonic() - t0 < 1.0    # announcement + read + NOTIFY (< 100 ms idle)
            # a modification through another node: the same fan-out, no duplicate anywhere
            await publish(ann, n3, "second", etag=etag)
            for w, node, sub in watchers:
                n = await w.expect_request("NOTIFY", call_id=sub.call_id)
                assert b"<note>second</note>" in n.body and n.via.port == node.port and n.cseq.number == 3
            for w, _node, sub in watchers:
                await w.expect_no_request("NOTIFY", call_id=sub.call_id, within=QUIET)
            rows = presence_db.rows("SELECT sharing_tag FROM active_watchers ORDER BY sharing_tag")
            assert rows == [("node1",), ("node2",), ("node3",)]

            # node3 dies; the operator hands its watchers to node2 at once
            n3.kill()
            assert await n2.mi("pres_cluster_takeover", ["node3"]) == {"node_id": "node3", "adopted": 1}
            sub3 = watchers[2][2]
            n = await w3.expect_request("NOTIFY", call_id=sub3.call_id)   # the current state, from node2
            # CSeq goes on above what node3 may have sent unrecorded (TAKEOVER_CSEQ_GAP)
            assert n.via.port == n2.port and n.cseq.number == 3 + GAP + 1 and b"<note>second</note>" in n.body
            assert n.header("Contact") == n2.contact     # the adopter's, not the dead node's
            await publish(ann, n1, "third")
            n = await w3.expect_request("NOTIFY", call_id=sub3.call_id)
            assert n.via.port == n2.port and n.cseq.number == 3 + GAP + 2 and b"<note>third</note>" in n.body
            await w3.expect_no_request("NOTIFY", call_id=sub3.call_id, within=QUIET)
            listing = await n2.mi("pres_cluster_nodes")
            states = {r["node_id"]: (r["state"], r["adopted_by"]) for r in listing["nodes"]}
            assert states == {"node1": ("active", None), "node2": ("active", None),
                              "node3": ("dead", "node2")}
            assert presence_db.count("active_watchers", "WHERE sharing_tag = 'node3'") == 0
    finally:
        for n in (n1, n2, n3):
            n.stop()


async def test_expiry_exactly_one_notify_each(tmp_path: Path, presence_db: TestDb) -> None:
    cid = new_cluster_id()
    n1, n2 = Node(tmp_path, "node1", presence_db.url, cid), Node(tmp_path, "node2", presence_db.url, cid)
    try:
        start_all(n1, n2)
        async with await client(n2, "eve") as eve, await client(n1, "w1") as w1, \
                await client(n2, "w2") as w2:
            short = await watch(w1, n1, "eve", expires=3)       # ends by expiry, owned by node1
            long = await watch(w2, n2, "eve")
            await publish(eve, n2, "brief", expires=2)          # expires before the short subscription
            t0 = time.monotonic()
            seen: dict[str, list[Any]] = {"w1": [], "w2": []}
            while time.monotonic() - t0 < 4.5:                  # both nodes run clean_period every second
                for name, w, sub in (("w1", w1, short), ("w2", w2, long)):
                    try:
                        seen[name].append(await w.expect_request("NOTIFY", call_id=sub.call_id, timeout=0.1))
                    except SipTimeout:
                        continue   # nothing this round
            states = {k: [(n.header("Subscription-State").split(";")[0], b"brief" in n.body) for n in v]
                      for k, v in seen.items()}
            # publish, its expiry (no state any more), then for w1 one terminated NOTIFY
            assert states["w1"] == [("active", True), ("active", False), ("terminated", False)]
            assert states["w2"] == [("active", True), ("active", False)]
            assert seen["w1"][-1].header("Subscription-State") == "terminated;reason=timeout"
            assert [n.via.port for n in seen["w2"]] == [n2.port, n2.port]
            assert presence_db.count("presentity") == 0
            for _ in range(30):   # the ended subscription leaves the table at node1's next db_update_period
                if presence_db.count("active_watchers") == 1:
                    break
                await asyncio.sleep(0.1)
            assert presence_db.rows("SELECT callid FROM active_watchers") == [(long.call_id,)]
    finally:
        n1.stop()
        n2.stop()


async def test_killed_node_adopted_after_timeout(tmp_path: Path, presence_db: TestDb) -> None:
    cid = new_cluster_id()
    n1, n2 = Node(tmp_path, "node1", presence_db.url, cid), Node(tmp_path, "node2", presence_db.url, cid)
    try:
        start_all(n1, n2)
        async with await client(n1, "kim") as kim, await client(n2, "w2") as w2:
            sub = await watch(w2, n2, "kim")
            await publish(kim, n1, "before")
            n = await w2.expect_request("NOTIFY", call_id=sub.call_id)
            assert n.via.port == n2.port and b"before" in n.body
            n2.kill()
            t0 = time.monotonic()
            # node1 notices the silence, wins node2's row, adopts its subscription and tells the watcher
            n = await w2.expect_request("NOTIFY", call_id=sub.call_id, timeout=NODE_TIMEOUT + 2 * PING + 3)
            took = time.monotonic() - t0
            assert NODE_TIMEOUT - 0.5 <= took <= NODE_TIMEOUT + 2 * PING + 2
            # node2 was killed right after sending CSeq 2: it may not have stored it; node1 goes on above
            assert n.via.port == n1.port and n.cseq.number > 2 and b"before" in n.body
            assert n.header("Contact") == n1.contact     # refreshes must reach the adopter, not the dead
            adopted_cseq = n.cseq.number
            await asyncio.to_thread(n1.wait_for, "adopted 1 subscriptions of node2", 3)
            await publish(kim, n1, "after")
            n = await w2.expect_request("NOTIFY", call_id=sub.call_id)
            assert n.via.port == n1.port and n.cseq.number == adopted_cseq + 1 and b"after" in n.body
            await w2.expect_no_request("NOTIFY", call_id=sub.call_id, within=QUIET)
            assert presence_db.rows("SELECT sharing_tag FROM active_watchers") == [("node1",)]
            assert presence_db.rows("SELECT state, adopted_by FROM rs_nodes WHERE node_id = 'node2'") == \
                [("dead", "node1")]
    finally:
        n1.stop()
        n2.stop()


async def test_restarted_node_rejoins_with_the_current_state(tmp_path: Path, presence_db: TestDb) -> None:
    cid = new_cluster_id()
    # a long node timeout: node2 comes back before anyone would adopt its subscriptions
    n1 = Node(tmp_path, "node1", presence_db.url, cid, cluster_node_timeout=30)
    n2 = Node(tmp_path, "node2", presence_db.url, cid, cluster_node_timeout=30)
    try:
        start_all(n1, n2)
        async with await client(n1, "rex") as rex, await client(n2, "w2") as w2:
            sub = await watch(w2, n2, "rex")
            etag = await publish(rex, n1, "one")
            assert b"one" in (await w2.expect_request("NOTIFY", call_id=sub.call_id)).body
            n2.stop()                                  # clean stop: its subscription stays, tagged node2
            etag = await publish(rex, n1, "while-away", etag=etag)   # announced to nobody at node2
            await w2.expect_no_request("NOTIFY", call_id=sub.call_id, within=0.2)
            n2.launch()
            await asyncio.to_thread(n2.wait_for, "routescript started")
            n = await w2.expect_request("NOTIFY", call_id=sub.call_id)
            assert n.via.port == n2.port and b"while-away" in n.body and n.cseq.number == 3
            await publish(rex, n1, "later", etag=etag)  # and announcements reach it again
            n = await w2.expect_request("NOTIFY", call_id=sub.call_id)
            assert b"later" in n.body and n.cseq.number == 4
            await w2.expect_no_request("NOTIFY", call_id=sub.call_id, within=QUIET)
    finally:
        n1.stop()
        n2.stop()


async def test_database_cut_then_resync(tmp_path: Path, presence_db: TestDb) -> None:
    """node2 reaches PostgreSQL through a proxy; the cut loses node2's LISTEN connection (and the
    announcements meanwhile); when it is back, node2 re-reads what its watchers follow and tells them."""
    proxy = TcpProxy(pg_host_port(presence_db.url))
    await proxy.start()
    cid = new_cluster_id()
    n1 = Node(tmp_path, "node1", presence_db.url, cid, cluster_node_timeout=30)
    n2 = Node(tmp_path, "node2", proxied(presence_db.url, proxy), cid, cluster_node_timeout=30)
    try:
        await asyncio.to_thread(start_all, n1, n2)    # the proxy runs on this loop meanwhile
        async with await client(n1, "sam") as sam, await client(n2, "w2") as w2:
            sub = await watch(w2, n2, "sam")
            etag = await publish(sam, n1, "one")
            assert b"one" in (await w2.expect_request("NOTIFY", call_id=sub.call_id)).body
            await proxy.stop()
            await asyncio.sleep(0.3)
            etag = await publish(sam, n1, "during-cut", etag=etag)
            await w2.expect_no_request("NOTIFY", call_id=sub.call_id, within=0.3)
            await proxy.start()
            n = await w2.expect_request("NOTIFY", call_id=sub.call_id, timeout=10)
            assert n.via.port == n2.port and b"during-cut" in n.body and n.cseq.number == 3
            await asyncio.to_thread(n2.wait_for, "cluster: resync: 1 of 1 presentities changed", 3)
            await publish(sam, n1, "after", etag=etag)
            n = await w2.expect_request("NOTIFY", call_id=sub.call_id)
            assert b"after" in n.body and n.cseq.number == 4
    finally:
        await asyncio.to_thread(n1.stop)
        await asyncio.to_thread(n2.stop)
        await proxy.stop()


async def test_a_subscription_acknowledged_then_killed_is_adopted(tmp_path: Path,
                                                                  presence_db: TestDb) -> None:
    """node2 answers a new SUBSCRIBE 200 and is killed -9 at once: its row was committed before the 200,
    so node1 adopts it and the watcher hears on, node1's Contact in the NOTIFY. node2 reaches PostgreSQL
    through a slow proxy (each chunk delayed): a write begun after the 200 cannot reach the table before
    the kill."""
    proxy = TcpProxy(pg_host_port(presence_db.url))
    await proxy.start()
    cid = new_cluster_id()
    n1 = Node(tmp_path, "node1", presence_db.url, cid)
    n2 = Node(tmp_path, "node2", proxied(presence_db.url, proxy), cid)
    try:
        await asyncio.to_thread(start_all, n1, n2)    # the proxy runs on this loop meanwhile
        async with await client(n1, "kai") as kai, await client(n2, "w2") as w2, \
                await client(n1, "w1") as w1:
            await publish(kai, n1, "before")
            proxy.delay = 0.1
            sub = w2.subscribe(n2.uri("kai"), expires=600)
            resp = await w2.send_request(sub)
            assert resp.status == 200 and resp.header("Contact") == n2.contact
            n2.kill()
            proxy.delay = 0.0
            n = await w2.expect_request("NOTIFY", call_id=sub.call_id, where=lambda r: r.via.port == n1.port,
                                        timeout=NODE_TIMEOUT + 2 * PING + 3)
            assert b"before" in n.body and n.header("Contact") == n1.contact
            # the watcher's refresh goes to that Contact: the adopter answers it
            dialog = w2.dialog(sub, n)
            assert dialog.remote_target == n1.contact.strip("<>")
            refresh = await w1.send_request(w1.subscribe(expires=300, dialog=dialog))
            assert refresh.status == 200 and refresh.header("Contact") == n1.contact
            rows = presence_db.rows("SELECT callid, sharing_tag FROM active_watchers")
            assert rows == [(sub.call_id, "node1")]
    finally:
        await asyncio.to_thread(n1.stop)
        await asyncio.to_thread(n2.stop)
        await proxy.stop()


async def test_a_dialog_moved_by_an_in_dialog_subscribe_carries_the_new_contact(tmp_path: Path,
                                                                               presence_db: TestDb) -> None:
    """A refresh of node2's dialog reaches node1 (a VIP, a failover): node1 takes the dialog over, and its
    NOTIFYs (not only its 200) carry node1's Contact."""
    cid = new_cluster_id()
    n1, n2 = Node(tmp_path, "node1", presence_db.url, cid), Node(tmp_path, "node2", presence_db.url, cid)
    try:
        start_all(n1, n2)
        async with await client(n1, "mo") as mo, await client(n2, "w2") as w2, await client(n1, "w1") as w1:
            sub = w2.subscribe(n2.uri("mo"), expires=600)
            resp = await w2.send_request(sub)
            assert resp.status == 200
            await w2.expect_request("NOTIFY", call_id=sub.call_id)
            refresh = await w1.send_request(w1.subscribe(expires=300, dialog=w2.dialog(sub, resp)))
            assert refresh.status == 200 and refresh.header("Contact") == n1.contact
            n = await w1.expect_request("NOTIFY", call_id=sub.call_id)
            assert n.via.port == n1.port and n.header("Contact") == n1.contact
            await publish(mo, n2, "moved")
            n = await w1.expect_request("NOTIFY", call_id=sub.call_id)
            assert b"moved" in n.body and n.via.port == n1.port and n.header("Contact") == n1.contact
    finally:
        n1.stop()
        n2.stop()
