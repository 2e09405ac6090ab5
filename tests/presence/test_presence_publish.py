"""PUBLISH decisions (RFC 3903) against OPENSIPS-BEHAVIOUR.md, with a fake clock."""

import pytest

from routescript.modules.presence.etag import EtagGenerator
from routescript.modules.presence.events import BodyError, PresenceEvent
from routescript.modules.presence.presentity import (PresentityTable, PublishAction, PublishFacts)

PIDF = b"<presence/>"
URI = "sip:carol@127.0.0.1"


def refuse_bad(body: bytes) -> None:
    if not body.startswith(b"<"):
        raise BodyError(415, "Unsupported media type")


PRESENCE = PresenceEvent("presence", "application/pidf+xml", evs_publ_handl=refuse_bad)
MWI = PresenceEvent("message-summary", "application/simple-message-summary")
SLA = PresenceEvent("dialog;sla", "application/dialog-info+xml", etag_not_new=True)


@pytest.fixture
def table() -> PresentityTable:
    return PresentityTable(EtagGenerator(1000, nonce=7), max_expires=3600)


def publish(table, now, **kw):
    facts = PublishFacts(URI, kw.pop("event", PRESENCE), **kw)
    decision = table.handle_publish(facts, now)
    table.commit(decision)
    return decision


def test_new_publication(table):
    d = publish(table, 100.0, expires=600, body=PIDF, content_type="application/pidf+xml")
    assert (d.status, d.reason, d.action, d.expires, d.notify) == (200, "OK", PublishAction.INSERT, 600, True)
    assert d.etag == "a.1000.7.1.0"
    pubs = table.publications(URI, "presence")
    assert [p.etag for p in pubs] == [d.etag] and pubs[0].body == PIDF and pubs[0].expires_at == 700.0


def test_default_and_capped_and_small_expires(table):
    assert publish(table, 0, body=PIDF).expires == 3600            # no Expires -> event default (capture 21)
    assert publish(table, 0, body=PIDF, expires=7200).expires == 3600  # capped at max_expires_publish
    assert publish(table, 0, body=PIDF, expires=1).expires == 1      # small values accepted, no 423
    short = PresentityTable(EtagGenerator(0), max_expires=60)
    assert short.handle_publish(PublishFacts(URI, PRESENCE, body=PIDF), 0).expires == 60


def test_handle_publish_is_pure_until_commit(table):
    d = table.handle_publish(PublishFacts(URI, PRESENCE, body=PIDF, expires=60), 0)
    assert d.ok and len(table) == 0
    table.commit(d)
    assert len(table) == 1


def test_refresh_gives_new_etag_no_notify_and_old_etag_then_412(table):
    first = publish(table, 0, body=PIDF, expires=300)
    refresh = publish(table, 10, if_match=first.etag, expires=300)
    assert (refresh.status, refresh.action, refresh.notify) == (200, PublishAction.REFRESH, False)
    assert refresh.etag != first.etag and refresh.etag.endswith(".1")
    assert refresh.publication.body == PIDF and refresh.publication.expires_at == 310
    stale = publish(table, 11, if_match=first.etag, expires=300)
    assert (stale.status, stale.reason) == (412, "Conditional request failed")
    assert len(table) == 1


def test_modify_notifies_with_new_body(table):
    first = publish(table, 0, body=PIDF, expires=300)
    mod = publish(table, 5, if_match=first.etag, body=b"<presence>away</presence>", expires=300)
    assert (mod.status, mod.action, mod.notify) == (200, PublishAction.MODIFY, True)
    assert mod.etag != first.etag
    assert table.publications(URI, "presence")[0].body == b"<presence>away</presence>"


def test_remove_echoes_etag_and_gives_removed_body(table):
    first = publish(table, 0, body=PIDF, expires=300)
    rm = publish(table, 5, if_match=first.etag, expires=0)
    assert (rm.status, rm.action, rm.expires, rm.etag, rm.notify) == (200, PublishAction.REMOVE, 0,
                                                                      first.etag, True)
    assert rm.removed_body == PIDF and len(table) == 0
    assert publish(table, 6, if_match=first.etag, expires=0).status == 412


def test_expires_zero_on_new_publication_is_200_and_stores_nothing(table):
    d = publish(table, 0, body=PIDF, expires=0)
    assert (d.status, d.expires, d.action, d.notify) == (200, 0, PublishAction.NONE, False)
    assert d.etag and len(table) == 0


def test_errors(table):
    d = publish(table, 0, expires=600)
    assert (d.status, d.reason) == (400, "Bad request")            # capture 15
    d = publish(table, 0, if_match="nosuchetag", expires=300)
    assert (d.status, d.reason) == (412, "Conditional request failed")  # capture 07
    d = publish(table, 0, body=b"not xml", expires=300)
    assert (d.status, d.reason) == (415, "Unsupported media type")
    first = publish(table, 0, body=PIDF, expires=300)
    bad_modify = publish(table, 1, if_match=first.etag, body=b"junk", expires=300)
    assert bad_modify.status == 415 and table.get(URI, "presence", first.etag) is not None


def test_etag_is_scoped_to_presentity_and_event(table):
    first = publish(table, 0, body=PIDF, expires=300)
    other = table.handle_publish(PublishFacts("sip:dave@127.0.0.1", PRESENCE, if_match=first.etag), 1)
    assert other.status == 412
    other_event = table.handle_publish(PublishFacts(URI, MWI, if_match=first.etag), 1)
    assert other_event.status == 412


def test_etag_not_new_keeps_etag(table):
    first = publish(table, 0, event=SLA, body=b"<dialog-info/>", expires=300)
    again = publish(table, 1, event=SLA, if_match=first.etag, body=b"<dialog-info v='2'/>", expires=300)
    assert again.etag == first.etag and again.notify
    assert len(table) == 1 and table.publications(URI, "dialog;sla")[0].body == b"<dialog-info v='2'/>"


def test_several_devices_kept_in_arrival_order(table):
    a = publish(table, 0, body=b"<a/>", expires=300)
    b = publish(table, 1, body=b"<b/>", expires=300)
    publish(table, 2, if_match=a.etag, body=b"<a2/>", expires=300)
    assert [p.body for p in table.publications(URI, "presence")] == [b"<b/>", b"<a2/>"]
    assert b.etag != a.etag and table.contains_presence(URI)


def test_expiry_with_offset():
    table = PresentityTable(EtagGenerator(0), expires_offset=10)
    d = table.handle_publish(PublishFacts(URI, PRESENCE, body=PIDF, expires=60), 0)
    table.commit(d)
    assert table.next_deadline() == 70
    # within the grace time the etag still refreshes
    assert table.handle_publish(PublishFacts(URI, PRESENCE, if_match=d.etag, expires=60), 65).status == 200
    assert table.expire(69) == []
    gone = table.expire(70)
    assert [p.etag for p in gone] == [d.etag] and len(table) == 0 and table.next_deadline() is None
    assert table.handle_publish(PublishFacts(URI, PRESENCE, if_match=d.etag), 71).status == 412


def test_expired_etag_is_unknown_even_before_clean(table):
    d = publish(table, 0, body=PIDF, expires=60)
    assert table.handle_publish(PublishFacts(URI, PRESENCE, if_match=d.etag), 60).status == 412


def test_bounded_publications_per_presentity():
    table = PresentityTable(EtagGenerator(0), max_per_presentity=2)
    for i in range(2):
        table.commit(table.handle_publish(PublishFacts(URI, PRESENCE, body=PIDF, expires=60), i))
    d = table.handle_publish(PublishFacts(URI, PRESENCE, body=PIDF, expires=60), 3)
    assert d.status == 503 and len(table) == 2


def test_max_presentities_refuses_new_publications_only():
    table = PresentityTable(EtagGenerator(0), max_presentities=2)

    def pub(now, uri=URI, **kw):
        decision = table.handle_publish(PublishFacts(uri, PRESENCE, **kw), now)
        table.commit(decision)
        return decision

    a = pub(0, body=PIDF, expires=60)
    b = pub(0, "sip:bob@127.0.0.1", body=PIDF, expires=60)
    d = pub(1, "sip:carol@127.0.0.1", body=PIDF)
    assert (d.status, d.refusal.cap, d.refusal.key, len(table)) == (503, "max_presentities", None, 2)
    # refresh, modify and remove of what is held: never refused
    r = pub(2, if_match=a.etag, expires=60)
    m = pub(3, if_match=r.etag, body=PIDF, expires=60)
    assert (r.status, m.status, len(table)) == (200, 200, 2)
    assert pub(4, "sip:bob@127.0.0.1", if_match=b.etag, expires=0).status == 200
    assert len(table) == 1
    assert pub(5, "sip:carol@127.0.0.1", body=PIDF, expires=60).status == 200


def test_publication_count_follows_every_change():
    """len() is a counter kept as the table changes (one per PUBLISH, no walk): it must always equal the
    rows held, through load, expiry and fallback2db's replace_presentity."""
    table = PresentityTable(EtagGenerator(0))
    rows = lambda: sum(1 for _ in table)   # noqa: E731
    a = publish(table, 0, body=PIDF, expires=10)
    publish(table, 0, body=PIDF, expires=20)
    table.load(a.publication)                          # the same etag again: not counted twice
    assert len(table) == rows() == 2
    table.replace_presentity(URI, "presence", [a.publication])
    assert len(table) == rows() == 1
    table.replace_presentity(URI, "presence", [])
    assert len(table) == rows() == 0
    publish(table, 30, body=PIDF, expires=10)
    table.expire(40)
    assert len(table) == rows() == 0


def test_replace_presentity_takes_a_new_body_under_the_same_etag():
    """dialog;sla keeps the ETag across a modify (etag_not_new): a worker re-reading the presentity after
    another worker's modify must take the database's body, not keep its own older copy."""
    from dataclasses import replace as evolve

    table = PresentityTable(EtagGenerator(0))
    a = publish(table, 0, body=PIDF, expires=10)
    newer = evolve(a.publication, body=b"<presence><tuple/></presence>")
    table.replace_presentity(URI, "presence", [newer])
    assert [p.body for p in table.publications(URI, "presence")] == [newer.body]
    same = evolve(newer)
    table.replace_presentity(URI, "presence", [same])
    assert table.publications(URI, "presence")[0] is newer   # the same state: the copy held stays


def test_etags_unique_across_restarts_in_same_second():
    a = EtagGenerator(1795671994)
    b = EtagGenerator(1795671994)
    seen = {a.new() for _ in range(50)} | {b.new() for _ in range(50)}
    assert len(seen) == 100


def test_load_puts_back_stored_publications(table):
    d = table.handle_publish(PublishFacts(URI, PRESENCE, body=PIDF, expires=60), 0)
    fresh = PresentityTable(EtagGenerator(1))
    fresh.load(d.publication)
    assert fresh.handle_publish(PublishFacts(URI, PRESENCE, if_match=d.etag), 1).status == 200
    assert [p.etag for p in fresh] == [d.etag]
