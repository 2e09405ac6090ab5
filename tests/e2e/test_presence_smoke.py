"""Smoke: examples/presence.cfg under `routescript run`, PUBLISH then SUBSCRIBE -> NOTIFY with the PIDF."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from presence_e2e import free_port, presence_cfg, run_server

from routescript.testing import SipTestClient, pidf

if TYPE_CHECKING:
    from conftest import TestDb

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("workers", [1, 2], ids=["1worker", "2workers"])
async def test_publish_then_subscribe_gets_pidf(tmp_path: Path, presence_db: TestDb, workers: int) -> None:
    port = free_port()
    cfg = presence_cfg(tmp_path, port, db_url=presence_db.url, workers=workers)
    with run_server(cfg, tmp_path) as server:
        async with await SipTestClient.start("udp", ("127.0.0.1", port), user="alice", timeout=5) as alice, \
                await SipTestClient.start("udp", ("127.0.0.1", port), user="bob", timeout=5) as bob:
            uri = f"sip:alice@127.0.0.1:{port}"
            pub = alice.publish(uri, pidf(alice.aor, note="Available"), expires=600)
            resp = await alice.send_request(pub)
            assert resp.status == 200, resp.to_bytes()
            assert resp.header("SIP-ETag")
            assert presence_db.rows("SELECT username, event FROM presentity") == [("alice", "presence")]
            assert resp.header("Expires") == "600"
            sub = bob.subscribe(uri, expires=600)
            resp = await bob.send_request(sub)
            assert resp.status == 200, resp.to_bytes()
            notify = await bob.expect_request("NOTIFY", call_id=sub.call_id)
            await bob.reply(notify, 200)
            assert notify.header("Subscription-State") == "active;expires=600"
            assert notify.header("Content-Type") == "application/pidf+xml"
            assert b"<note>Available</note>" in notify.body
            assert b'entity="sip:alice@127.0.0.1"' in notify.body
        server.wait_for("PUBLISH accepted: alice@127.0.0.1 event=presence expires=600")
