"""The change feed between processes: two hubs (one file seen through two paths) joined by a FeedRelay that
carries each committed announcement to the other one's deliver_remote, as the inbox bus does between
workers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from routescript.db import DatabaseError, open_database
from routescript.db.feed import LocalHub, deliver_remote, resync_local, set_feed_relay

from .worker_nodes import Workers, one_file_two_paths, relay_installed, settle, states


class CrossRelay:
    """Two 'processes' on one file, seen through two paths (two hub keys): what one commits is carried
    to the other's deliver_remote, as the inbox bus does between workers."""

    def __init__(self, key_a: str, key_b: str) -> None:
        self.peer = {key_a: key_b, key_b: key_a}
        self.sent: list[tuple[str, str, str]] = []

    def send(self, db_key: str, channel: str, payload: str) -> None:
        self.sent.append((db_key, channel, payload))
        asyncio.get_running_loop().call_soon(deliver_remote, self.peer[db_key], channel, payload)


@pytest.fixture
def relay_paths(tmp_path: Path) -> Iterator[tuple[str, str, CrossRelay]]:
    a, b = one_file_two_paths(tmp_path)
    relay = CrossRelay(a, b)
    with relay_installed(relay):
        yield a, b, relay


async def test_through_the_relay_with_two_hubs_each_watcher_is_notified_once(
        workers: Workers, relay_paths: tuple[str, str, CrossRelay]) -> None:
    path_a, path_b, relay = relay_paths
    w0 = await workers.start(0, url=f"sqlite://{path_a}")
    w1 = await workers.start(1, url=f"sqlite://{path_b}")
    assert LocalHub._hubs.keys() >= {path_a, path_b}   # two hubs: only the relay joins them
    await w0.subscribe("dave")
    await w1.subscribe("erin")
    etag = (await w0.publish("open")).header("SIP-ETag")
    await settle(w0, w1)
    await w1.publish("closed", cseq=2, etag=etag)     # and the other way round
    await settle(w0, w1)
    assert states(w0.notifies_to("dave")) == ["none", "open", "closed"]
    assert states(w1.notifies_to("erin")) == ["none", "open", "closed"]
    # one relayed announcement per committed change, each delivered once, none relayed back again
    assert [k for k, _, _ in relay.sent] == [path_a, path_b]
    assert w0.node is not None and w1.node is not None
    assert (w0.node.stats.received, w1.node.stats.received) == (1, 1)


async def test_deliver_remote_checks_what_it_is_given_and_a_failing_relay_never_fails_the_commit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DatabaseError, match="channel"):
        deliver_remote("/x.sqlite", "Bad Channel", "{}")
    with pytest.raises(DatabaseError, match="payload"):
        deliver_remote("/x.sqlite", "rs_presence_workers", "x" * 9000)

    class Broken:
        def send(self, db_key: str, channel: str, payload: str) -> None:
            raise OSError("inbox full")

    got: list[str] = []
    db = await open_database(f"sqlite://{tmp_path}/f.sqlite")
    set_feed_relay(Broken())
    failures = LocalHub.relay_failures
    try:
        await db.listen("chan", lambda ch, p: got.append(p))
        with caplog.at_level(logging.ERROR, "routescript.db"):
            await db.notify("chan", "hello")
        await asyncio.sleep(0.01)
    finally:
        set_feed_relay(None)
        await db.close()
    assert got == ["hello"] and LocalHub.relay_failures == failures + 1
    assert "relaying an announcement" in caplog.text


async def test_resync_local_makes_every_listener_resync(workers: Workers) -> None:
    w0 = await workers.start(0)
    assert w0.node is not None
    before = w0.node.stats.resyncs
    resync_local()
    await settle(w0)
    assert w0.node.stats.resyncs == before + 1
