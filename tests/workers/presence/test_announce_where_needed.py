"""Announcing only where needed (worker_affinity "uri": routescript/workers/interest.py): the home worker of
a presentity announces its changes only while another worker holds a watcher of it.

carol's home is w1: crc32("carol@127.0.0.1") % 2 == 1, where the dispatcher sends her PUBLISHes and
initial SUBSCRIBEs."""

from __future__ import annotations

import os

from routescript.testing.presence_doubles import PresenceCtx
from routescript.workers.dispatch import SlotTable
from routescript.workers.interest import PresentityInterest, SharedInterest

from .worker_nodes import WATCHER_SRC, Workers, settle, states, subscribe


async def test_the_home_worker_announces_a_change_only_while_another_worker_holds_a_watcher(
        workers: Workers) -> None:
    shared = SharedInterest(2)
    w0, w1 = await workers.start(0, interest=shared), await workers.start(1, interest=shared)
    assert w0.node is not None and w1.node is not None
    etag = (await w1.publish("open")).header("SIP-ETag")
    await settle(w0, w1)
    assert w1.node.stats.announced == 0 and w0.node.stats.received == 0   # nobody else needed it
    assert w0.service.persistence.stale == set()
    await w0.subscribe("erin")           # a watcher on the other worker (e.g. adopted, or callid routing)
    await settle(w0, w1)
    assert states(w0.notifies_to("erin")) == ["open"]   # read: w0 never heard of the change
    etag = (await w1.publish("closed", cseq=2, etag=etag)).header("SIP-ETag")
    await settle(w0, w1)
    assert w1.node.stats.announced == 1
    assert states(w0.notifies_to("erin")) == ["open", "closed"]
    bye = subscribe("erin", cseq=2, expires=0, to_tag=w0.subscribed["erin"])   # its last watcher there
    assert await w0.service.handle_subscribe(PresenceCtx(bye, WATCHER_SRC)) == 1          # gone: quiet again
    await settle(w0, w1)
    await w1.publish("open", cseq=3, etag=etag)
    await settle(w0, w1)
    assert w1.node.stats.announced == 1
    assert shared.count(0, shared.cell("sip:carol@127.0.0.1")) == 0


async def test_a_worker_never_trusts_its_memory_of_another_workers_presentity(workers: Workers) -> None:
    shared = SharedInterest(2)
    w0, w1 = await workers.start(0, interest=shared), await workers.start(1, interest=shared)
    first = (await w0.publish("open")).header("SIP-ETag")   # reached w0 (not its home): announced
    await settle(w0, w1)
    assert w0.node is not None and w0.node.stats.announced == 1
    # the home worker modifies it; w0 holds no watcher, so it is not told
    second = await w1.publish("closed", cseq=2, etag=first)
    assert second.status == 200
    await settle(w0, w1)
    assert w1.node is not None and w1.node.stats.announced == 0
    # w0 still holds the first ETag in memory, but reads before deciding: it is gone, 412 as from w1
    stale = await w0.publish("open", cseq=3, etag=first)
    assert stale.status == 412
    assert (await w0.publish("open", cseq=4, etag=second.header("SIP-ETag"))).status == 200


async def test_a_starting_worker_is_told_every_change_until_it_is_ready() -> None:
    shared = SharedInterest(2, cells=16)
    w1 = PresentityInterest(shared, 1, 2, lambda: SlotTable.identity(2))
    w0 = PresentityInterest(shared, 0, 2, lambda: SlotTable.identity(2))
    assert w1.may_skip_announcement("sip:carol@127.0.0.1")
    w0.hold("sip:dave@127.0.0.1")
    w0.starting()                                   # a restarted w0: its row counts from zero...
    assert shared.count(0, shared.cell("sip:dave@127.0.0.1")) == 0
    assert not w1.may_skip_announcement("sip:carol@127.0.0.1")   # ...and hears everything meanwhile
    w0.ready()
    assert w1.may_skip_announcement("sip:carol@127.0.0.1")
    w0.hold("sip:carol@127.0.0.1")
    assert not w1.may_skip_announcement("sip:carol@127.0.0.1")
    # a slot adopted by another worker: nobody skips (the adopter is not the home of what it serves)
    adopted = PresentityInterest(shared, 1, 2, lambda: SlotTable(1, (1, 1)))
    w0.release("sip:carol@127.0.0.1")
    assert not adopted.may_skip_announcement("sip:carol@127.0.0.1")
    # only the home worker may skip; another one always announces
    assert not w0.may_skip_announcement("sip:carol@127.0.0.1")
    assert w0.skipped == 0 and w1.skipped == 2


def test_the_counts_are_shared_with_forked_workers() -> None:
    shared = SharedInterest(2, cells=16)
    pid = os.fork()
    if pid == 0:   # the child: worker 0 holds a watcher of carol
        try:
            PresentityInterest(shared, 0, 2, lambda: SlotTable.identity(2)).hold("sip:carol@127.0.0.1")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    home = PresentityInterest(shared, 1, 2, lambda: SlotTable.identity(2))
    assert not home.may_skip_announcement("sip:carol@127.0.0.1")
