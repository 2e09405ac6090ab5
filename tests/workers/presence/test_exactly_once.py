"""A change published on one worker reaches every watcher, on whichever worker owns its dialog, exactly
once and in CSeq order; a worker without watchers marks the presentity stale and reads it when asked."""

from __future__ import annotations

from .worker_nodes import Workers, cseqs, settle, states


async def test_a_publish_on_w0_reaches_watchers_on_both_workers_exactly_once_in_cseq_order(
        workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    await w0.subscribe("dave")
    await w1.subscribe("erin")
    await settle(w0, w1)
    assert states(w0.notifies_to("dave")) == ["none"] and states(w1.notifies_to("erin")) == ["none"]
    etag = (await w0.publish("open")).header("SIP-ETag")
    await settle(w0, w1)
    await w0.publish("closed", cseq=2, etag=etag)
    await settle(w0, w1)
    # each dialog is told by its owner only, each state once, CSeq strictly increasing
    assert states(w0.notifies_to("dave")) == ["none", "open", "closed"]
    assert states(w1.notifies_to("erin")) == ["none", "open", "closed"]
    assert w0.notifies_to("erin") == [] and w1.notifies_to("dave") == []
    for ns in (w0.notifies_to("dave"), w1.notifies_to("erin")):
        assert cseqs(ns) == sorted(set(cseqs(ns)))
    assert w1.node is not None and w1.node.stats.received == 2 and w0.node is not None and \
        w0.node.stats.announced == 2
    # w1 has no SQL per announcement to spare for presentities nobody there watches: marked stale only
    assert w1.service.persistence.stale == set()


async def test_an_announcement_without_watchers_marks_the_presentity_stale_and_the_next_request_reads(
        workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    etag = (await w0.publish("open")).header("SIP-ETag")
    await settle(w0, w1)
    assert w1.service.persistence.stale == {("sip:carol@127.0.0.1", "presence")}
    assert w1.service.persistence.read_first
    # w1 never held this publication: its first watcher is sent the state w0 stored
    await w1.subscribe("erin")
    await settle(w0, w1)
    assert states(w1.notifies_to("erin")) == ["open"]
    assert w1.service.persistence.stale == set() and not w1.service.persistence.read_first
    # a PUBLISH reaching w1 with w0's ETag is a modify there too (not 412)
    ok = await w1.publish("closed", cseq=2, etag=etag)
    assert ok.status == 200 and ok.header("SIP-ETag") != etag


async def test_a_publish_whose_etag_is_not_in_memory_reads_the_database(workers: Workers) -> None:
    w0, w1 = await workers.start(0), await workers.start(1)
    etag = (await w0.publish("open")).header("SIP-ETag")
    await settle(w0, w1)
    w1.service.persistence.stale.clear()   # as if the announcement had been lost
    w1.service.persistence.read_first = False
    ok = await w1.publish(None, cseq=2, etag=etag)    # a refresh with an ETag w1 never saw
    assert ok.status == 200
    assert (await w1.publish(None, cseq=3, etag="no-such-etag")).status == 412
