"""A dead worker's subscriptions adopted by a live one (the supervisor's Adopt), a restarted worker taking
its rows back above the CSeqs it may have sent, and the move between one process and several workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from routescript.modules.presence.base import TAKEOVER_CSEQ_GAP
from routescript.modules.presence.membership import ClusterError
from routescript.testing.presence_doubles import PresenceCtx

from .worker_nodes import WATCHER_SRC, Workers, cseqs, row_of, settle, states, subscribe


async def test_w0_adopts_a_dead_w1_and_notifies_its_watchers_with_the_current_state(
        workers: Workers, tmp_path: Path) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    await w1.subscribe("erin")
    await settle(w0, w1)
    last_cseq = cseqs(w1.notifies_to("erin"))[-1]
    await workers.stop(w1, crash=True)                 # kill -9: nothing more from w1
    await w0.publish("open")                           # erin's owner is gone: nobody tells her
    await settle(w0)
    assert w0.notifies_to("erin") == []
    assert w0.membership is not None
    assert await w0.membership.adopt("w1") == 1        # the supervisor's Adopt(slot=1)
    await settle(w0)
    told = w0.notifies_to("erin")
    assert states(told) == ["open"] and told[0].cseq.number >= last_cseq + TAKEOVER_CSEQ_GAP
    assert told[0].from_.tag == w1.subscribed["erin"]  # the same dialog, now w0's
    assert row_of(str(tmp_path / "presence.sqlite"), "erin")["sharing_tag"] == "w0"
    # its refresh reaches w0 now (the slot table maps 1 -> 0) and is answered there
    msg = subscribe("erin", cseq=2, to_tag=w1.subscribed["erin"])
    assert await w0.service.handle_subscribe(PresenceCtx(msg, WATCHER_SRC)) == 1
    # a restarted w1 owns nothing: the rows tagged w1 are gone
    w1b = await workers.start(1, epoch=1)
    assert len(w1b.service.subscriptions) == 0
    with pytest.raises(ClusterError):
        await w0.membership.adopt("w0")


async def test_the_adopter_reads_the_presentities_it_adopts_even_after_a_lost_announcement(
        workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    await w0.publish("closed")
    await w1.subscribe("erin")
    await settle(w0, w1)
    etag = w0.server.replies[-1].header("SIP-ETag")
    await w1.publish("open", cseq=2, etag=etag)        # w1 changes it, then dies before w0 heard
    await workers.stop(w1, crash=True)
    w0.service.persistence.stale.clear()               # the announcement was lost with w1
    assert w0.membership is not None and await w0.membership.adopt("w1") == 1
    await settle(w0)
    assert states(w0.notifies_to("erin")) == ["open"]


async def test_a_restarted_worker_reloads_its_rows_and_goes_on_above_the_cseqs_it_may_have_sent(
        workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    await w0.publish("open")
    await w1.subscribe("erin")
    await settle(w0, w1)
    sent = cseqs(w1.notifies_to("erin"))[-1]
    await workers.stop(w1, crash=True)
    w1b = await workers.start(1, epoch=1)              # epoch + 1, same slot: its own rows back
    await settle(w1b)
    told = w1b.notifies_to("erin")
    assert states(told) == ["open"] and told[0].cseq.number > sent + TAKEOVER_CSEQ_GAP - 1
    assert len(w0.service.subscriptions) == 0


async def test_two_workers_after_one_process_and_back_lose_nothing(workers: Workers, tmp_path: Path) -> None:
    path = str(tmp_path / "presence.sqlite")
    solo = await workers.start(None)
    await solo.subscribe("dave")
    await solo.subscribe("erin")
    await workers.stop(solo)
    assert row_of(path, "dave")["sharing_tag"] is None
    # 2 workers: w0 claims the untagged rows (a one-process run wrote them)
    w0, w1 = await workers.start(0), await workers.start(1)
    assert (len(w0.service.subscriptions), len(w1.service.subscriptions)) == (2, 0)
    await w1.subscribe("frank")
    assert {row_of(path, u)["sharing_tag"] for u in ("dave", "erin")} == {"w0"}
    assert row_of(path, "frank")["sharing_tag"] == "w1"
    await workers.stop(w0)
    await workers.stop(w1)
    # back to one process: every row whatever its tag
    solo = await workers.start(None)
    assert sorted(s.callid for s in solo.service.subscriptions) == ["sub-dave", "sub-erin", "sub-frank"]
    await workers.stop(solo)
    # one worker after two: worker 0 claims the rows of the slot that is gone
    only = await workers.start(0, n_total=1)
    assert len(only.service.subscriptions) == 3
    assert row_of(path, "frank")["sharing_tag"] == "w0"


async def test_a_refresh_reaching_the_former_owner_claims_its_dialog_back(workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    await w1.subscribe("erin")
    await workers.stop(w1, crash=True)
    assert w0.membership is not None and await w0.membership.adopt("w1") == 1
    w1b = await workers.start(1, epoch=1)              # back: its To tags bring erin's refresh to it
    msg = subscribe("erin", cseq=2, to_tag=w1.subscribed["erin"])
    assert await w1b.service.handle_subscribe(PresenceCtx(msg, WATCHER_SRC)) == 1
    assert w1b.server.replies[-1].status == 200
    await settle(w0, w1b)
    # claim_subscription: the row is w1's again and w0 was told to forget the dialog
    assert len(w1b.service.subscriptions) == 1 and len(w0.service.subscriptions) == 0
