"""NOTIFY building compared with the OpenSIPS 3.4 captures (02, 03, 04b, 08, 11, 19, 20)."""

from routescript.modules.presence.etag import EtagGenerator
from routescript.modules.presence.events import PresenceEvent
from routescript.modules.presence.notify import (build_notify, local_contact, presentity_body, route_set,
                                                 subscription_state, watcher_body)
from routescript.modules.presence.presentity import PresentityTable, PublishFacts
from routescript.modules.presence.subscription import SubscribeFacts, SubState, SubsTable
from routescript.sip import parse_message

PRESENCE = PresenceEvent("presence", "application/pidf+xml")


def new_sub(table, now=0.0, **kw):
    base = {"event": PRESENCE, "pres_uri": "sip:alice@127.0.0.1", "to_user": "alice",
            "to_domain": "127.0.0.1", "watcher_user": "bob", "watcher_domain": "127.0.0.1",
            "callid": "sub-ztu0346x4s", "cseq": 1, "from_tag": "qh1ajjhq",
            "contact": "sip:bob@127.0.0.1:50944", "expires": 600,
            "local_contact": "sip:presence@127.0.0.1:5070", "socket_info": "udp:127.0.0.1:5070"}
    base.update(kw)
    status = base.pop("status", SubState.ACTIVE)
    d = table.handle_subscribe(SubscribeFacts(**base), now, to_tag="313b-a1c2", initial_status=status)
    table.commit(d)
    return d


def test_first_notify_matches_capture_02():
    table = SubsTable()
    d = new_sub(table)
    sub = table.record_notify(d.subscription)
    n = build_notify(sub, 0.0, body=b"<presence/>", content_type="application/pidf+xml")
    assert n.ruri == "sip:bob@127.0.0.1:50944"
    assert [h for h, _ in n.headers] == ["To", "From", "CSeq", "Call-ID", "Max-Forwards", "Event", "Contact",
                                          "Subscription-State", "Content-Type"]
    assert n.header("To") == "<sip:bob@127.0.0.1>;tag=qh1ajjhq"
    assert n.header("From") == "<sip:alice@127.0.0.1>;tag=313b-a1c2"
    assert n.header("CSeq") == "1 NOTIFY"
    assert n.header("Call-ID") == "sub-ztu0346x4s"
    assert n.header("Event") == "presence"
    assert n.header("Contact") == "<sip:presence@127.0.0.1:5070>"
    assert n.header("Subscription-State") == "active;expires=600"
    assert n.body == b"<presence/>"


def test_no_state_no_body_no_content_type_capture_03():
    table = SubsTable()
    sub = table.record_notify(new_sub(table).subscription)
    n = build_notify(sub, 0.0, body=None, content_type="application/pidf+xml")
    assert n.header("Content-Type") is None and n.body == b""


def test_cseq_grows_and_expires_counts_down():
    table = SubsTable()
    d = new_sub(table)
    table.record_notify(d.subscription)
    second = table.record_notify(d.subscription)
    n = build_notify(second, 1.4, body=b"x", content_type="text/plain")
    assert n.header("CSeq") == "2 NOTIFY"
    assert n.header("Subscription-State") == "active;expires=599"  # 598.6 rounded


def test_states_on_the_wire():
    table = SubsTable()
    pending = new_sub(table, status=SubState.PENDING).subscription
    assert subscription_state(pending, 100) == "pending;expires=500"
    unsub = new_sub(table, 10, to_tag="313b-a1c2", cseq=2, expires=0).subscription
    assert subscription_state(unsub, 10) == "terminated;reason=timeout"   # capture 11
    from routescript.modules.presence.subscription import SubEvent
    assert subscription_state(pending.moved(SubEvent.BLOCK), 0) == "terminated;reason=rejected"


def test_event_id_and_route_set():
    table = SubsTable()
    sub = new_sub(table, event_id="42", record_route=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>")
                  ).subscription
    n = build_notify(table.record_notify(sub), 0)
    assert n.header("Event") == "presence;id=42"
    assert n.ruri == "sip:bob@127.0.0.1:50944"
    assert [v for h, v in n.headers if h == "Route"] == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]


def test_strict_route_goes_to_request_uri():
    table = SubsTable()
    sub = new_sub(table, record_route=("<sip:strict.example.com>", "<sip:p2.example.com;lr>")).subscription
    ruri, routes = route_set(sub)
    assert ruri == "sip:strict.example.com"
    assert routes == ["<sip:p2.example.com;lr>", "<sip:bob@127.0.0.1:50944>"]


def test_local_contact():
    assert local_contact("", "udp", "127.0.0.1", 5070) == "sip:127.0.0.1:5070"
    assert local_contact("sip:presence@127.0.0.1:5070", "tcp", "127.0.0.1", 5070) == \
        "sip:presence@127.0.0.1:5070;transport=tcp"      # capture 19
    assert local_contact("", "UDP", "::1", 5060) == "sip:[::1]:5060"


def test_notify_parses_as_sip():
    table = SubsTable()
    sub = table.record_notify(new_sub(table).subscription)
    req = build_notify(sub, 0, body=b"<presence/>", content_type="application/pidf+xml").to_sip()
    req.add_header("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx", first=True)
    again = parse_message(req.to_bytes())
    assert again.method == "NOTIFY" and again.cseq.number == 1 and again.body == b"<presence/>"
    assert again.header("Subscription-State") == "active;expires=600"
    assert again.to.tag == "qh1ajjhq" and again.from_.tag == "313b-a1c2"


# --- bodies -------------------------------------------------------------------------------------

def agg(pres_uri, bodies, off_index):
    return b"|".join(b"closed" if i == off_index else b for i, b in enumerate(bodies))


AGG = PresenceEvent("presence", "application/pidf+xml", agg_nbody=agg,
                    build_empty_pres_info=lambda uri: b"offline " + uri.encode())
DIALOG = PresenceEvent("dialog", "application/dialog-info+xml", mandatory_body=True,
                       build_empty_pres_info=lambda uri: b"<dialog-info/>")
MWI = PresenceEvent("message-summary", "application/simple-message-summary")


def published(*bodies):
    table = PresentityTable(EtagGenerator(0))
    for i, body in enumerate(bodies):
        table.commit(table.handle_publish(PublishFacts("sip:a@h", AGG, body=body, expires=60), float(i)))
    return table


def test_aggregation_in_arrival_order_and_removed_shown_closed():
    table = published(b"<one/>", b"<two/>")
    pubs = table.publications("sip:a@h", "presence")
    assert presentity_body(AGG, "sip:a@h", pubs) == b"<one/>|<two/>"
    assert presentity_body(AGG, "sip:a@h", pubs[1:], removed=pubs[0]) == b"<two/>|closed"


def test_without_aggregation_newest_wins_and_empty_rules():
    table = published(b"old", b"new")
    pubs = table.publications("sip:a@h", "presence")
    assert presentity_body(MWI, "sip:a@h", pubs) == b"new"
    assert presentity_body(MWI, "sip:a@h", []) is None
    assert presentity_body(AGG, "sip:a@h", []) is None
    assert presentity_body(AGG, "sip:a@h", [], notify_offline_body=True) == b"offline sip:a@h"
    assert presentity_body(DIALOG, "sip:a@h", []) == b"<dialog-info/>"


def test_watcher_body_only_for_active_or_authorized_fetch():
    table = SubsTable()
    active = new_sub(table).subscription
    pending = new_sub(table, callid="c2", status=SubState.PENDING).subscription
    fetch = new_sub(table, callid="c3", expires=0).subscription
    assert watcher_body(PRESENCE, active, b"s") == b"s"
    assert watcher_body(PRESENCE, pending, b"s") is None
    assert watcher_body(PRESENCE, fetch, b"s") is None
    assert watcher_body(PRESENCE, fetch, b"s", final_with_state=True) == b"s"
    assert watcher_body(PRESENCE, active, None) is None
    versioned = PresenceEvent("dialog", "application/dialog-info+xml",
                              aux_body_processing=lambda sub, body: body + b" v%d" % sub.version)
    assert watcher_body(versioned, active, b"d") == b"d v0"


def test_body_cache_rebuilds_on_any_change_and_is_bounded():
    from routescript.modules.presence.notify import BodyCache

    cache = BodyCache(max_entries=2)
    table = published(b"<one/>", b"<two/>")
    pubs = table.publications("sip:a@h", "presence")
    assert cache.body(AGG, "sip:a@h", pubs) == b"<one/>|<two/>"
    assert cache.body(AGG, "sip:a@h", list(reversed(pubs))) == b"<one/>|<two/>" and cache.hits == 1
    assert cache.body(AGG, "sip:a@h", pubs[:1]) == b"<one/>"                    # one removed
    changed = [pubs[0], type(pubs[1])(**{**{f: getattr(pubs[1], f) for f in pubs[1].__slots__},
                                         "body": b"<TWO/>"})]
    assert cache.body(AGG, "sip:a@h", changed) == b"<one/>|<TWO/>"             # modified body
    assert cache.body(AGG, "sip:a@h", changed, notify_offline_body=True) == b"<one/>|<TWO/>"
    assert presentity_body(AGG, "sip:a@h", changed[1:], removed=changed[0], cache=cache) == b"<TWO/>|closed"
    assert cache.body(AGG, "sip:b@h", []) is None and cache.body(AGG, "sip:c@h", []) is None
    assert len(cache) == 2                                                      # bounded, oldest out


def test_dialog_head_kept_per_dialog_state_and_the_same_notify_on_the_wire():
    """Issue 18 item 9: a dialog's NOTIFY head (Request-URI, To, From, Call-ID, Max-Forwards, Route,
    Event, Contact) is made once and reused while what it is made from stays the same; the NOTIFY built
    from the kept head is the one built without it, byte for byte; a new Contact, a final NOTIFY, the
    clean_period clear and the bound each drop it."""
    from routescript.modules.presence.notify import DialogPaths

    table = SubsTable()
    d = new_sub(table, record_route=("<sip:p1.example.com;lr>",), event_id="e1")
    paths = DialogPaths(max_entries=2)
    first = table.record_notify(d.subscription)
    path = paths.entry(first)
    second = table.record_notify(first)
    assert paths.entry(second) is path and len(paths) == 1   # CSeq and version do not change the head
    for sub in (first, second):
        kept = build_notify(sub, 5.0, body=b"<p/>", content_type="application/pidf+xml", head=path.head)
        fresh = build_notify(sub, 5.0, body=b"<p/>", content_type="application/pidf+xml")
        assert kept == fresh
        assert kept.to_sip("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx").to_bytes() == \
            fresh.to_sip("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx").to_bytes()
    assert build_notify(second, 5.0, head=path.head).header("CSeq") == "2 NOTIFY"

    moved = second.evolve(contact="sip:bob@127.0.0.1:6000")   # a refresh with a new remote target
    path2 = paths.entry(moved)
    assert path2 is not path and path2.head.ruri == "sip:bob@127.0.0.1:6000" and len(paths) == 1
    paths.forget(moved)   # its final NOTIFY went
    assert len(paths) == 0

    other = new_sub(SubsTable(), callid="c-2").subscription
    third = new_sub(SubsTable(), callid="c-3").subscription
    paths.entry(first)
    paths.entry(other)
    paths.entry(third)   # over the bound: emptied, then kept
    assert len(paths) == 1 and paths.entry(third).head.ruri == third.contact
    paths.clear()
    assert len(paths) == 0
