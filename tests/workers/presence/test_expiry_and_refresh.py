"""Expiry and refreshes across workers: each subscription is ended once, by its owner; a worker stores a
refresh before its 200 (one process leaves it to the periodic sync); a publication refreshed elsewhere
is read again once it expires in memory."""

from __future__ import annotations

from pathlib import Path

from routescript.testing.presence_doubles import PresenceCtx

from .worker_nodes import WATCHER_SRC, Workers, row_of, settle, states, subscribe


async def test_an_expired_subscription_is_ended_once_by_its_owner(workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    await w0.subscribe("dave", expires=5)
    await w1.subscribe("erin", expires=5)
    await settle(w0, w1)
    workers.clock.now += 6
    for w in (w0, w1, w0, w1):     # every worker runs clean_period, twice
        await w.service.clean()
    await settle(w0, w1)
    ends = [(w.slot, n.call_id) for w in (w0, w1) for n in w.notifies
            if n.header("Subscription-State").startswith("terminated")]
    assert sorted(ends) == [(0, "sub-dave"), (1, "sub-erin")]


async def test_a_refresh_is_stored_before_its_200(workers: Workers, tmp_path: Path) -> None:
    w1 = await workers.start(1)
    await w1.subscribe("erin", expires=600)
    path = str(tmp_path / "presence.sqlite")
    seen: list[tuple[int, int]] = []
    w1.server.on_reply = lambda resp: seen.append((resp.status, row_of(path, "erin")["expires"]))
    workers.clock.now += 100
    msg = subscribe("erin", cseq=2, expires=300, to_tag=w1.subscribed["erin"])
    assert await w1.service.handle_subscribe(PresenceCtx(msg, WATCHER_SRC)) == 1
    # the 200 left with the row already saying the new expiry (a kill -9 right after loses nothing)
    assert seen == [(200, int(workers.clock.now) + 300)]
    assert row_of(path, "erin")["remote_cseq"] == 2 and row_of(path, "erin")["sharing_tag"] == "w1"


async def test_one_process_keeps_refreshes_for_the_periodic_sync(workers: Workers, tmp_path: Path) -> None:
    solo = await workers.start(None)
    await solo.subscribe("erin", expires=600)
    first = row_of(str(tmp_path / "presence.sqlite"), "erin")["expires"]
    workers.clock.now += 100
    msg = subscribe("erin", cseq=2, expires=300, to_tag=solo.subscribed["erin"])
    assert await solo.service.handle_subscribe(PresenceCtx(msg, WATCHER_SRC)) == 1
    assert row_of(str(tmp_path / "presence.sqlite"), "erin")["expires"] == first   # db_update_period's job


async def test_a_publication_refreshed_on_another_worker_is_read_again_once_it_expires_in_memory(
        workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    await w1.subscribe("erin", expires=3600)
    etag = (await w0.publish("open", expires=600)).header("SIP-ETag")
    await settle(w0, w1)
    workers.clock.now += 500
    await w0.publish(None, cseq=2, etag=etag, expires=600)   # a refresh: same state, nothing announced
    workers.clock.now += 101                                  # w1's copy has expired, the row has not
    await w1.service.clean()
    await settle(w0, w1)
    assert states(w1.notifies_to("erin")) == ["none", "open"]  # nothing changed for erin
    await w1.subscribe("frank")                               # a new watcher on w1 gets the live state
    await settle(w1)
    assert states(w1.notifies_to("frank")) == ["open"]
