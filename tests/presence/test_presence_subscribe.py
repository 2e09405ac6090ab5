"""SUBSCRIBE decisions and the subscription state table, with a fake clock."""

import dataclasses

import pytest

from routescript.modules.presence.events import WINFO_TYPE, PresenceEvent
from routescript.modules.presence.subscription import (
    INSERTDB_FLAG, NO_UPDATEDB_FLAG, TRANSITIONS, UPDATEDB_FLAG, SubEvent, SubscribeAction, SubscribeFacts,
    SubscriptionStateError, SubState, SubsTable, transition)

PRESENCE = PresenceEvent("presence", "application/pidf+xml")
WINFO = PresenceEvent("presence.winfo", "application/watcherinfo+xml", type=WINFO_TYPE)
MWI = PresenceEvent("message-summary", "application/simple-message-summary")


def facts(**kw) -> SubscribeFacts:
    base = {"event": PRESENCE, "pres_uri": "sip:carol@127.0.0.1", "to_user": "carol",
            "to_domain": "127.0.0.1", "watcher_user": "dave", "watcher_domain": "127.0.0.1",
            "callid": "sub-1", "cseq": 1, "from_tag": "ye3j", "contact": "sip:dave@127.0.0.1:48261",
            "expires": 600, "local_contact": "sip:presence@127.0.0.1:5070",
            "socket_info": "udp:127.0.0.1:5070"}
    base.update(kw)
    return SubscribeFacts(**base)


def subscribe(table, now, status=SubState.ACTIVE, reason=None, **kw):
    d = table.handle_subscribe(facts(**kw), now, to_tag="313b-x", initial_status=status,
                               initial_reason=reason)
    table.commit(d)
    return d


@pytest.fixture
def table() -> SubsTable:
    return SubsTable(max_expires=3600)


def test_initial_active(table):
    d = subscribe(table, 100)
    assert (d.status, d.reason, d.action, d.expires, d.to_tag) == (200, "OK", SubscribeAction.INSERT, 600,
                                                                    "313b-x")
    assert d.notify and d.winfo_changed and d.with_body
    sub = table.get(("sub-1", "313b-x", "ye3j"))
    assert sub.status is SubState.ACTIVE and sub.expires_at == 700 and sub.remote_cseq == 1
    assert sub.local_cseq == 0 and sub.db_flag == INSERTDB_FLAG and sub.watcher_uri == "sip:dave@127.0.0.1"
    assert table.watchers("sip:carol@127.0.0.1", "presence") == [sub]


def test_initial_pending_is_202_without_body(table):
    d = subscribe(table, 0, status=SubState.PENDING)
    assert (d.status, d.reason, d.with_body) == (202, "Accepted", False)
    assert table.get(d.subscription.key).status is SubState.PENDING


def test_winfo_subscription_is_200_even_when_pending(table):
    d = subscribe(table, 0, status=SubState.PENDING, event=WINFO)
    assert d.status == 200


def test_expires_capped_and_default(table):
    assert subscribe(table, 0, expires=7200).expires == 3600   # capture 03
    assert subscribe(table, 0, expires=None, callid="sub-2").expires == 3600


def test_fetch(table):
    d = subscribe(table, 0, expires=0)
    assert (d.status, d.action, d.expires, d.notify, d.with_body) == (200, SubscribeAction.FETCH, 0, True,
                                                                       True)
    assert d.subscription.status is SubState.TERMINATED and d.subscription.reason == "timeout"
    assert len(table) == 0


def test_fetch_by_pending_watcher_has_no_body(table):
    d = subscribe(table, 0, status=SubState.PENDING, expires=0)
    assert (d.status, d.with_body, d.subscription.status) == (202, False, SubState.TERMINATED)


def test_blocked_watcher_gets_200_and_rejected_and_is_kept_until_expiry(table):
    """OpenSIPS keeps a blocked subscription (terminated) until it expires: presence.winfo lists it."""
    d = subscribe(table, 0, status=SubState.TERMINATED, reason="rejected")
    assert (d.status, d.action, d.with_body, d.winfo_changed) == (200, SubscribeAction.INSERT, False, True)
    kept = table.get(d.subscription.key)
    assert (kept.status, kept.reason) == (SubState.TERMINATED, "rejected")
    assert table.watchers("sip:carol@127.0.0.1", "presence") == [kept]
    # its dialog is over: a refresh is 481
    assert subscribe(table, 1, to_tag="313b-x", cseq=2).status == 481
    # at expiry it is dropped, not ended again (it was told terminated;reason=rejected already)
    assert table.take_expired(599) == ([], [])
    ended, dropped = table.take_expired(600)
    assert ended == [] and [(s.callid, s.reason) for s in dropped] == [("sub-1", "rejected")]
    assert len(table) == 0


def test_blocked_fetch_is_not_kept(table):
    d = subscribe(table, 0, status=SubState.TERMINATED, reason="rejected", expires=0)
    assert (d.status, d.action, d.subscription.reason) == (200, SubscribeAction.FETCH, "rejected")
    assert len(table) == 0


def test_refresh_in_dialog(table):
    subscribe(table, 0)
    d = subscribe(table, 10, to_tag="313b-x", cseq=2, expires=120, contact="sip:dave@10.0.0.1:5060")
    assert (d.status, d.action, d.expires, d.notify, d.winfo_changed) == (200, SubscribeAction.REFRESH, 120,
                                                                           True, False)
    sub = table.get(d.subscription.key)
    assert sub.expires_at == 130 and sub.remote_cseq == 2 and sub.contact == "sip:dave@10.0.0.1:5060"


def test_unsubscribe(table):
    subscribe(table, 0)
    d = subscribe(table, 10, to_tag="313b-x", cseq=3, expires=0)
    assert (d.status, d.action, d.expires, d.notify, d.winfo_changed, d.with_body) == \
        (200, SubscribeAction.REMOVE, 0, True, True, False)
    assert d.subscription.status is SubState.TERMINATED and d.subscription.reason == "timeout"
    assert len(table) == 0
    again = subscribe(table, 11, to_tag="313b-x", cseq=4, expires=60)
    assert (again.status, again.reason) == (481, "Subscription does not exist")


def test_unknown_dialog_and_other_event_are_481(table):
    assert subscribe(table, 0, to_tag="nope", cseq=2).status == 481
    subscribe(table, 0)
    assert subscribe(table, 1, to_tag="313b-x", cseq=2, event=MWI).status == 481


def test_old_cseq_is_400(table):
    subscribe(table, 0, cseq=5)
    d = subscribe(table, 1, to_tag="313b-x", cseq=5)
    assert (d.status, d.reason) == (400, "Bad request")


def test_missing_contact_or_from_tag_is_400(table):
    assert subscribe(table, 0, contact=None).status == 400
    assert subscribe(table, 0, from_tag=None).status == 400


def test_expiry_terminates_with_timeout():
    table = SubsTable(expires_offset=5)
    subscribe(table, 0, expires=5)
    assert table.next_deadline() == 10
    assert table.expire(9.9) == []
    (gone,) = table.expire(10)
    assert gone.status is SubState.TERMINATED and gone.reason == "timeout" and len(table) == 0


def test_expired_dialog_refresh_is_481(table):
    subscribe(table, 0, expires=5)
    assert subscribe(table, 5, to_tag="313b-x", cseq=2).status == 481


def test_record_notify_numbers_cseq_and_version(table):
    d = subscribe(table, 0)
    first = table.record_notify(d.subscription)
    second = table.record_notify(d.subscription)
    assert (first.local_cseq, first.version) == (1, 1) and (second.local_cseq, second.version) == (2, 2)
    assert table.get(d.subscription.key).local_cseq == 2
    # after an unsubscribe the final NOTIFY continues the numbering
    rm = subscribe(table, 1, to_tag="313b-x", cseq=2, expires=0)
    assert table.record_notify(rm.subscription).local_cseq == 3


def test_db_changes_and_flags(table):
    d = subscribe(table, 0)
    subscribe(table, 0, callid="sub-2", from_tag="t2")
    inserts, updates, deletes = table.take_db_changes()
    assert len(inserts) == 2 and updates == [] and deletes == []
    assert all(s.db_flag == NO_UPDATEDB_FLAG for s in table)
    table.record_notify(d.subscription)
    inserts, updates, deletes = table.take_db_changes()
    assert inserts == [] and [s.key for s in updates] == [d.subscription.key]
    subscribe(table, 1, to_tag="313b-x", cseq=2, expires=0)
    _, _, deletes = table.take_db_changes()
    assert [s.key for s in deletes] == [d.subscription.key]
    assert table.take_db_changes() == ([], [], [])


def test_deleting_a_never_stored_subscription_needs_no_db_delete(table):
    subscribe(table, 0)
    subscribe(table, 1, to_tag="313b-x", cseq=2, expires=0)
    assert table.take_db_changes() == ([], [], [])


def test_update_after_sync_marks_updatedb(table):
    d = subscribe(table, 0)
    table.take_db_changes()
    assert table.update(d.subscription.moved(SubEvent.CONFIRM)).db_flag == UPDATEDB_FLAG


def test_load_from_database(table):
    d = subscribe(table, 0)
    fresh = SubsTable()
    fresh.load(d.subscription)
    assert fresh.get(d.subscription.key).db_flag == NO_UPDATEDB_FLAG
    assert subscribe(fresh, 1, to_tag="313b-x", cseq=2).status == 200


def test_bounded_watchers():
    table = SubsTable(max_watchers=1)
    subscribe(table, 0)
    d = subscribe(table, 0, callid="sub-2")
    assert d.status == 503 and d.refusal is not None and d.refusal.key == "sip:carol@127.0.0.1"


# --- caps on the subscriptions held (issue 15) -------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Src:
    """A transport source as the table sees it (routescript.transport.Source has the same fields)."""

    remote_host: str
    remote_port: int = 5060
    proto: str = "udp"


def test_per_source_cap_counts_new_subscriptions_only():
    from routescript.core.netlist import NetworkList

    table = SubsTable(max_per_source=2, trusted_sources=NetworkList.parse("192.0.2.0/24"))
    a, b = Src("10.0.0.1"), Src("10.0.0.2")
    first = subscribe(table, 0, callid="a1", source=a)
    subscribe(table, 0, callid="a2", source=a)
    d = subscribe(table, 0, callid="a3", source=Src("10.0.0.1", 5070))   # same address, other port
    assert (d.status, d.refusal.cap, d.refusal.key, d.action) == (
        503, "max_subscriptions_per_source", "10.0.0.1", SubscribeAction.NONE)
    assert len(table) == 2 and table.count_from(a) == 2
    assert subscribe(table, 0, callid="b1", source=b).status == 200          # another address
    assert subscribe(table, 0, callid="a0", source=a, expires=0).status == 200   # a fetch keeps nothing
    for i in range(5):                                                        # trusted: exempt
        assert subscribe(table, 0, callid=f"t{i}", source=Src("192.0.2.9")).status == 200
    # a refresh is never refused, and does not count twice
    assert subscribe(table, 1, callid="a1", to_tag="313b-x", cseq=2, source=a).status == 200
    assert table.count_from(a) == 2
    # an unsubscribe frees the slot
    subscribe(table, 2, callid="a1", to_tag="313b-x", cseq=3, source=a, expires=0)
    assert table.count_from(a) == 1 and table.get(first.subscription.key) is None
    assert subscribe(table, 3, callid="a4", source=a).status == 200
    assert subscribe(table, 3, callid="a5", source=a).status == 503


def test_slots_released_by_expiry_delete_and_forget_all():
    table = SubsTable(max_per_source=1)
    a = Src("10.0.0.1")
    d = subscribe(table, 0, callid="a1", source=a, expires=10)
    assert subscribe(table, 1, callid="a2", source=a).status == 503
    assert [s.callid for s in table.expire(10)] == ["a1"] and table.count_from(a) == 0
    d = subscribe(table, 11, callid="a3", source=a)
    table.delete(d.subscription.key)                    # a NOTIFY answered 481, a cluster takeover
    assert table.count_from(a) == 0
    subscribe(table, 12, callid="a4", source=a)
    assert table.forget_all() == 1 and table.count_from(a) == 0
    assert subscribe(table, 13, callid="a5", source=a).status == 200


def test_a_refresh_from_another_address_moves_the_subscription():
    table = SubsTable(max_per_source=1)
    a, b = Src("10.0.0.1"), Src("10.0.0.2")
    subscribe(table, 0, callid="a1", source=a)
    subscribe(table, 1, callid="a1", to_tag="313b-x", cseq=2, source=b)     # e.g. a new NAT binding
    assert (table.count_from(a), table.count_from(b)) == (0, 1)
    assert subscribe(table, 2, callid="a2", source=a).status == 200


def test_total_cap_counts_subscriptions_loaded_from_the_database():
    table = SubsTable(max_subscriptions=2)
    stored = [subscribe(table, 0, callid=f"s{i}").subscription for i in range(2)]
    fresh = SubsTable(max_subscriptions=2)
    for sub in stored:
        fresh.load(dataclasses.replace(sub, source=None))   # no source address in active_watchers
    d = subscribe(fresh, 1, callid="s3", source=Src("10.0.0.1"))
    assert (d.status, d.refusal.cap, d.refusal.key) == (503, "max_subscriptions", None)
    assert subscribe(fresh, 1, callid="s0", to_tag="313b-x", cseq=2).status == 200   # refresh: fine


def test_zero_means_no_cap():
    table = SubsTable(max_subscriptions=0, max_per_source=0)
    assert all(subscribe(table, 0, callid=f"z{i}", source=Src("10.0.0.1")).status == 200 for i in range(50))


# --- the state table -----------------------------------------------------------------------------

@pytest.mark.parametrize("state,event,expected", [
    (SubState.PENDING, SubEvent.ALLOW, SubState.ACTIVE),
    (SubState.ACTIVE, SubEvent.BLOCK, SubState.TERMINATED),
    (SubState.PENDING, SubEvent.DEACTIVATE, SubState.TERMINATED),
    (SubState.WAITING, SubEvent.REFRESH, SubState.WAITING),
    (SubState.ACTIVE, SubEvent.UNSUBSCRIBE, SubState.TERMINATED),
    (SubState.ACTIVE, SubEvent.NOTIFY_FAILED, SubState.TERMINATED),
])
def test_transitions(state, event, expected):
    assert transition(state, event) is expected


def test_terminated_is_final():
    for event in (SubEvent.ALLOW, SubEvent.REFRESH, SubEvent.UNSUBSCRIBE, SubEvent.CONFIRM):
        with pytest.raises(SubscriptionStateError):
            transition(SubState.TERMINATED, event)
    assert all(to is SubState.TERMINATED
               for (frm, _), to in TRANSITIONS.items() if frm is SubState.TERMINATED)


def test_moved_sets_reasons(table):
    sub = subscribe(table, 0).subscription
    assert sub.moved(SubEvent.BLOCK).reason == "rejected"
    assert sub.moved(SubEvent.DEACTIVATE).reason == "deactivated"
    assert sub.moved(SubEvent.EXPIRE).reason == "timeout"
    assert sub.moved(SubEvent.CONFIRM).reason is None
    assert sub.moved(SubEvent.BLOCK).moved(SubEvent.EXPIRE).reason == "rejected"
    assert dataclasses.replace(sub, status=SubState.PENDING).moved(SubEvent.ALLOW).status is SubState.ACTIVE


def test_evolve_equals_replace_field_by_field(table):
    """Subscription.evolve (the one copy path; SubsTable.record_notify uses it per NOTIFY) builds the record
    positionally; it must stay what dataclasses.replace gives, including for any field added later (a new
    field left out shows here)."""
    from routescript.modules.presence.subscription import Subscription

    sub = Subscription(pres_uri="sip:a@h", event="presence", to_user="a", to_domain="h", watcher_user="w",
                       watcher_domain="x", callid="cid", to_tag="tt", from_tag="ft", contact="sip:w@x",
                       expires_at=99.0, status=SubState.ACTIVE, reason=None, event_id="id7", local_cseq=4,
                       remote_cseq=3, record_route=("<sip:p;lr>",), version=5, socket_info="udp:1.2.3.4:5060",
                       local_contact="sip:me", user_agent="ua", db_flag=INSERTDB_FLAG, source=object(),
                       forced=True, key=("cid", "tt", "ft"))
    after = sub.evolve(status=SubState.TERMINATED, reason="timeout", local_cseq=5, version=6,
                       db_flag=UPDATEDB_FLAG)
    expected = dataclasses.replace(sub, local_cseq=5, version=6, status=SubState.TERMINATED, reason="timeout",
                                   db_flag=UPDATEDB_FLAG)
    for f in dataclasses.fields(sub):
        assert getattr(after, f.name) is getattr(expected, f.name) or \
            getattr(after, f.name) == getattr(expected, f.name), f.name
    # the stored dialog key: carried as it is (the same tuple), made again when an identity changes
    assert after.key is sub.key == ("cid", "tt", "ft")
    assert sub.evolve(to_tag="t2").key == ("cid", "t2", "ft")
    # record_notify: the next CSeq and version, the state the NOTIFY says, the same way
    live = subscribe(table, 0).subscription
    sent = table.record_notify(live.moved(SubEvent.BLOCK))
    assert (sent.local_cseq, sent.version, sent.status, sent.reason) == \
        (1, 1, SubState.TERMINATED, "rejected")


def test_take_ended_names_watchers_left_without_a_subscription(table):
    """clean_period forgets the allowed decisions of these (issue 15); a watcher with another dialog to the
    same presentity, a forced subscription and one taken over by another node are not named."""
    subscribe(table, 100, callid="a", expires=10)                          # dave: expires
    subscribe(table, 100, callid="b", expires=600)                         # dave: runs on
    subscribe(table, 100, callid="c", watcher_user="erin", expires=10)     # erin: expires
    d = table.handle_subscribe(facts(callid="d", watcher_user="finn", expires=10), 100, to_tag="t-d",
                               forced=True)
    table.commit(d)                                                        # finn: forced
    subscribe(table, 100, callid="e", watcher_user="gus", expires=0)       # gus: a fetch
    subscribe(table, 100, callid="f", watcher_user="hal", expires=600)
    table.forget(("f", "313b-x", "ye3j"))                                  # hal: another node's now
    assert {s.callid for s in table.expire(200)} == {"a", "c", "d"}
    assert sorted(table.take_ended()) == [("sip:carol@127.0.0.1", "erin", "127.0.0.1", "presence"),
                                          ("sip:carol@127.0.0.1", "gus", "127.0.0.1", "presence")]
    assert table.take_ended() == []


def test_enums_in_hot_dicts_hash_in_c():
    """Issue 18 item 11: the members keyed on in TRANSITIONS, TERMINATION_REASONS and handle_subscribe's
    action set hash by identity (in C), not by Enum's Python __hash__; lookups are unchanged."""
    assert SubEvent.__hash__ is object.__hash__ and SubscribeAction.__hash__ is object.__hash__
    assert SubState.__hash__ is int.__hash__   # an IntEnum hashes as its int already
    assert all(TRANSITIONS[(state, event)] is after for (state, event), after in TRANSITIONS.items())
    assert SubscribeAction.INSERT in frozenset((SubscribeAction.INSERT, SubscribeAction.REMOVE))
