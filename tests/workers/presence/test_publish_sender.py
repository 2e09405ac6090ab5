"""handle_publish's sender across workers (pua_bla: a phone is not told of its own call), also when its
announcements were coalesced or another publication was refreshed meanwhile."""

from __future__ import annotations

from typing import Any

from routescript.testing.presence_doubles import PresenceCtx

from .worker_nodes import WATCHER_SRC, Worker, Workers, publish, settle, states


DAVE = "sip:dave@127.0.0.1:48261"     # the Contact of dave's subscription (subscribe() above)


async def publish_from(worker: Worker, sender: str, basic: str | None = "open", **kw: Any) -> Any:
    await worker.service.handle_publish(PresenceCtx(publish(basic, **kw), WATCHER_SRC), sender)
    return worker.server.replies[-1]


async def test_the_sender_is_left_out_on_another_worker_when_its_announcements_were_coalesced(
        workers: Workers) -> None:
    """dave's two changes are committed before w1 handles the first announcement (w1 busy with the
    presentity): w1's first read sees both, its second (the coalesced announcement) sees nothing new -
    dave must still not be told of his own change by either."""
    w0, w1 = await workers.start(0), await workers.start(1)
    await w1.subscribe("dave")
    await w1.subscribe("erin")
    await settle(w0, w1)
    async with w1.service.locks.hold("sip:carol@127.0.0.1"):
        etag = (await publish_from(w0, DAVE, "open")).header("SIP-ETag")
        await publish_from(w0, DAVE, "closed", cseq=2, etag=etag)
        await settle(w0)
    await settle(w0, w1)
    assert states(w1.notifies_to("dave")) == ["none"]
    assert states(w1.notifies_to("erin"))[0] == "none" and states(w1.notifies_to("erin"))[-1] == "closed"
    assert w0.notifies == []


async def test_the_sender_is_left_out_on_another_worker_when_another_publication_was_refreshed(
        workers: Workers) -> None:
    """erin's publication refreshed on w0 (a new ETag, nothing announced), then dave's change: w1's read
    finds both ETags new to it, yet only dave's publication changed - dave is not told of it."""
    w0, w1 = await workers.start(0), await workers.start(1)
    await w1.subscribe("dave")
    await w1.subscribe("erin")
    erin_etag = (await publish_from(w0, "sip:erin@127.0.0.1:48261", "open", cseq=1)).header("SIP-ETag")
    dave_etag = (await publish_from(w0, DAVE, "open", cseq=2)).header("SIP-ETag")
    await settle(w0, w1)
    told_dave = len(w1.notifies_to("dave"))
    assert states(w1.notifies_to("erin"))[-1] == "open"
    refreshed = await publish_from(w0, "sip:erin@127.0.0.1:48261", None, cseq=3, etag=erin_etag)
    assert refreshed.status == 200 and refreshed.header("SIP-ETag") != erin_etag
    await settle(w0, w1)
    await publish_from(w0, DAVE, "closed", cseq=4, etag=dave_etag)
    await settle(w0, w1)
    assert len(w1.notifies_to("dave")) == told_dave
    assert b"<basic>closed" in w1.notifies_to("erin")[-1].body
