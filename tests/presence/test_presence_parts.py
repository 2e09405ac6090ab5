"""The parts PresenceService is composed of, each on its own: ClusterLink, Responder, Persistence's writes
before a reply, and the wiring (no part holds the service; its entry points are the parts' methods)."""

import asyncio
import logging

import pytest

from routescript.modules.presence.base import TAKEOVER_CSEQ_GAP, Responder, _BadRequest
from routescript.modules.presence.clustering import ClusterLink
from routescript.modules.presence.events import EventRegistry, PresenceEvent
from routescript.modules.presence.limits import CAP_RETRY_AFTER, Refusal, RefusalLog
from routescript.modules.presence.persistence import Persistence
from routescript.modules.presence.presentity import PresentityTable
from routescript.modules.presence.service import PresenceService
from routescript.modules.presence.settings import PresenceSettings
from routescript.modules.presence.subscription import (SubscribeAction, SubscribeDecision, Subscription,
                                                       SubState, SubsTable)
from routescript.modules.presence.etag import EtagGenerator
from routescript.sip import SocketInfo, parse_message

SUB = Subscription(pres_uri="sip:carol@127.0.0.1", event="presence", to_user="carol",
                   to_domain="127.0.0.1", watcher_user="dave", watcher_domain="127.0.0.1", callid="c-1",
                   to_tag="t-1", from_tag="f-1", contact="sip:dave@127.0.0.1:48261", expires_at=2000.0,
                   status=SubState.ACTIVE, local_cseq=7, version=3, socket_info="tcp:10.0.0.9:5060",
                   local_contact="sip:dead@10.0.0.9", key=("c-1", "t-1", "f-1"))


class Node:
    def __init__(self, owns: bool = True) -> None:
        self.owns, self.announced, self.changes = owns, [], []

    def owns_subscriptions(self) -> bool:
        return self.owns

    async def announce(self, pres_uri, event, etag, sender=None, change=None) -> None:
        self.announced.append((pres_uri, event, etag, sender))
        self.changes.append(change)


class Server:
    def __init__(self, sockets=()) -> None:
        self.sockets, self.replies, self.events, self.registry = list(sockets), [], None, None

    def reply(self, ctx, code, reason=None, *, headers=()):
        self.replies.append((code, reason, headers))

    def to_tag(self, msg) -> str:
        return "tag"


# --------------------------------------------------------------------------- ClusterLink
async def test_cluster_link_without_a_node_is_one_server():
    link = ClusterLink(Server(), PresenceSettings())
    assert link.node is None and not link.fenced()
    await link.announce("sip:carol@127.0.0.1", PresenceEvent("presence", "application/pidf+xml"), "e1")


async def test_cluster_link_fencing_and_announcements():
    link = ClusterLink(Server(), PresenceSettings())
    node = Node(owns=False)
    link.join(node)
    assert link.fenced()
    assert not link.take_missed()
    link.held_back()
    assert link.take_missed() and not link.take_missed()   # taken once
    node.owns = True
    assert not link.fenced()
    await link.announce("sip:carol@127.0.0.1", PresenceEvent("presence", "application/pidf+xml"), "e1")
    await link.announce("sip:carol@127.0.0.1", PresenceEvent("presence", "application/pidf+xml"), "e2",
                        "sip:phone@127.0.0.1")
    assert node.announced == [("sip:carol@127.0.0.1", "presence", "e1", None),
                              ("sip:carol@127.0.0.1", "presence", "e2", "sip:phone@127.0.0.1")]


def test_cluster_link_remembers_the_state_sent_per_presentity():
    link = ClusterLink(Server(), PresenceSettings())
    link.sent("sip:a@h", "presence", 11)
    link.sent("sip:b@h", "presence", 22)
    assert link.last_sent("sip:a@h", "presence") == 11
    link.keep_sent_only([("sip:b@h", "presence")])
    assert link.last_sent("sip:a@h", "presence") is None and link.last_sent("sip:b@h", "presence") == 22
    link.forget_sent("sip:b@h", "presence")
    assert link.last_sent("sip:b@h", "presence") is None
    link.sent("sip:c@h", "presence", 33)
    link.forget_all_sent()
    assert link.last_sent("sip:c@h", "presence") is None


def test_adopted_takes_our_contact_and_socket_of_the_dialogs_transport():
    sockets = [SocketInfo("udp", "127.0.0.1", 5070), SocketInfo("tcp", "127.0.0.1", 5071)]
    link = ClusterLink(Server(sockets), PresenceSettings())
    mine = link.adopted(SUB)
    assert (mine.local_cseq, mine.version) == (7 + TAKEOVER_CSEQ_GAP, 3 + TAKEOVER_CSEQ_GAP)
    assert mine.local_contact == "sip:127.0.0.1:5071;transport=tcp"
    assert mine.socket_info == "tcp:127.0.0.1:5071"
    assert mine.key == SUB.key and mine.contact == SUB.contact


def test_adopted_without_sockets_moves_only_the_cseq():
    link = ClusterLink(Server(), PresenceSettings(server_address="sip:presence@example.com"))
    mine = link.adopted(SUB)
    assert (mine.local_cseq, mine.version) == (7 + TAKEOVER_CSEQ_GAP, 3 + TAKEOVER_CSEQ_GAP)
    assert (mine.local_contact, mine.socket_info) == ("sip:presence@example.com", SUB.socket_info)


# --------------------------------------------------------------------------- Responder
def request(event: str | None) -> object:
    head = f"Event: {event}\r\n" if event is not None else ""
    return parse_message(("SUBSCRIBE sip:carol@127.0.0.1 SIP/2.0\r\n"
                          "Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n"
                          "From: <sip:dave@127.0.0.1>;tag=a\r\nTo: <sip:carol@127.0.0.1>\r\nCall-ID: r1\r\n"
                          f"CSeq: 1 SUBSCRIBE\r\n{head}Content-Length: 0\r\n\r\n").encode())


def test_responder_reads_the_event_against_the_registered_packages():
    events = EventRegistry()
    presence = events.add_event(PresenceEvent("presence", "application/pidf+xml"))
    responder = Responder(Server(), events, RefusalLog(logging.getLogger("test")), lambda: 0.0)
    assert responder.event_of(request("presence")) is presence
    for unknown in ("foo", None):
        with pytest.raises(_BadRequest) as bad:
            responder.event_of(request(unknown))
        assert (bad.value.status, bad.value.headers) == (489, (("Allow-Events", "presence"),))


def test_responder_replies_and_refuses_with_retry_after():
    server, refusals = Server(), RefusalLog(logging.getLogger("test"))
    responder = Responder(server, EventRegistry(), refusals, lambda: 0.0)
    responder.reply(object(), 200, "OK", [("Expires", "600")])
    responder.refuse(object(), 503, "Too many subscriptions", Refusal("max_subscriptions", 1), "SUBSCRIBE x")
    assert server.replies == [(200, "OK", (("Expires", "600"),)),
                              (503, "Too many subscriptions", (("Retry-After", str(CAP_RETRY_AFTER)),))]
    assert refusals.total == 1


# --------------------------------------------------------------------------- Persistence
class SlowStore:
    def __init__(self, fail: bool = False) -> None:
        self.gate, self.fail, self.inserted = asyncio.Event(), fail, []

    async def insert_subscription(self, sub) -> None:
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("refused")
        self.inserted.append(sub)


def persistence(store) -> Persistence:
    settings = PresenceSettings()
    return Persistence(store, settings, lambda: 0.0, EventRegistry(), PresentityTable(EtagGenerator(0.0)),
                       SubsTable(), ClusterLink(Server(), settings))


@pytest.mark.parametrize("fail", [False, True])
async def test_a_dialog_is_storing_while_its_row_commits(fail):
    store = SlowStore(fail)
    part = persistence(store)
    write = asyncio.create_task(part.store_subscription(
        SubscribeDecision(200, "OK", SubscribeAction.INSERT, 600, "t-1", SUB)))
    await asyncio.sleep(0)
    assert part.storing == {SUB.key}   # fallback2db does not read it back meanwhile
    store.gate.set()
    if fail:
        with pytest.raises(RuntimeError):
            await write
    else:
        await write
        assert store.inserted == [SUB]
    assert part.storing == set()


# --------------------------------------------------------------------------- the wiring
def test_no_part_holds_the_service_and_the_entry_points_are_the_parts_methods():
    svc = PresenceService(Server(), EventRegistry(), PresenceSettings(), clock=lambda: 0.0)
    parts = [svc.persistence, svc.notifier, svc.authorizer, svc.publisher, svc.subscriber, svc.timers,
             svc.cluster_callbacks, svc.clustering]
    for part in parts:
        assert all(value is not svc for value in vars(part).values()), type(part).__name__
    assert svc.handle_publish.__self__ is svc.publisher
    assert svc.handle_subscribe.__self__ is svc.subscriber
    assert svc.sync_db.__self__ is svc.persistence and svc.clean.__self__ is svc.timers
    assert svc.sender is svc.notifier.sender and svc.cluster is None
    node = Node()
    svc.join_cluster(node)
    assert svc.cluster is node and svc.clustering.node is node
