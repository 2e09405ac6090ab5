"""The pua publication table (modules/pua/table.py), sans-IO on a fake clock: RFC 3903's client life cycle
(initial, refresh before the granted end, modify, remove), 412 -> a fresh initial PUBLISH, 423 ->
Min-Expires, one PUBLISH in flight per publication, the publisher's own end, the bound."""

from __future__ import annotations

import pytest

from routescript.modules.pua.table import REFRESH_MARGIN, Op, PuaFull, PubKey, PubTable

KEY = PubKey("sip:bob@example.com", "dialog", "d1")


def test_initial_refresh_modify_remove() -> None:
    t = PubTable()
    s = t.publish(KEY, b"<a/>", 1000.0, expires=600, content_type="application/dialog-info+xml")
    assert s is not None and s.op is Op.INITIAL and s.etag is None and s.body == b"<a/>" and s.expires == 600
    assert t.response(s, 200, 1000.5, etag="E1", expires=300) is None     # the compositor granted 300
    rec = t.get(KEY)
    assert rec is not None and rec.etag == "E1" and rec.expires_at == 1300.5
    # nothing due until REFRESH_MARGIN before the granted end
    assert t.due(1300.5 - REFRESH_MARGIN - 1) == []
    assert t.next_deadline() == 1300.5 - REFRESH_MARGIN
    [r] = t.due(1300.5 - REFRESH_MARGIN)
    assert r.op is Op.REFRESH and r.etag == "E1" and r.body is None
    assert r.expires == 600 - int(300.5 - REFRESH_MARGIN)   # what is left of the publisher's 600 s
    assert t.response(r, 200, 1291.0, etag="E2", expires=300) is None
    m = t.publish(KEY, b"<b/>", 1295.0, expires=600)
    assert m is not None and m.op is Op.MODIFY and m.etag == "E2" and m.body == b"<b/>"
    t.response(m, 200, 1295.0, etag="E3", expires=600)
    d = t.publish(KEY, b"<t/>", 1296.0, expires=0)
    assert d is not None and d.op is Op.REMOVE and d.etag == "E3" and d.expires == 0 and d.body == b"<t/>"
    assert t.response(d, 200, 1296.0, expires=0) is None
    assert t.get(KEY) is None and len(t) == 0 and t.next_deadline() is None


def test_412_to_a_refresh_publishes_afresh_once() -> None:
    t = PubTable()
    s = t.publish(KEY, b"<a/>", 0.0, expires=3600)
    assert s is not None
    t.response(s, 200, 0.0, etag="E1", expires=60)
    [r] = t.due(60 - REFRESH_MARGIN)
    again = t.response(r, 412, 51.0)
    # RFC 3903 4.1: the compositor lost the state - the body is published again, without SIP-If-Match
    assert again is not None and again.op is Op.INITIAL and again.etag is None and again.body == b"<a/>"
    assert again.expires == 3600 - 51
    assert t.response(again, 200, 51.0, etag="F1", expires=60) is None
    assert t.get(KEY).etag == "F1"  # type: ignore[union-attr]
    # a modify answered 412, and its fresh initial answered 412 too: given up, nothing loops
    m = t.publish(KEY, b"<b/>", 52.0, expires=100)
    assert m is not None and m.op is Op.MODIFY
    i = t.response(m, 412, 52.0)
    assert i is not None and i.op is Op.INITIAL and i.body == b"<b/>"
    assert t.response(i, 412, 52.0) is None and t.get(KEY) is None


def test_423_sends_again_with_min_expires() -> None:
    t = PubTable()
    s = t.publish(KEY, b"<a/>", 0.0, expires=30)
    assert s is not None
    again = t.response(s, 423, 0.0, min_expires=120)
    assert again is not None and again.op is Op.INITIAL and again.expires == 120 and again.body == b"<a/>"
    assert t.response(again, 423, 0.0, min_expires=240) is None and t.get(KEY) is None


def test_one_publish_in_flight_the_newest_queued() -> None:
    t = PubTable()
    s = t.publish(KEY, b"<1/>", 0.0, expires=600)
    assert s is not None
    assert t.publish(KEY, b"<2/>", 0.1, expires=600) is None
    assert t.publish(KEY, b"<3/>", 0.2, expires=600) is None      # replaces <2/>
    nxt = t.response(s, 200, 0.3, etag="E1", expires=600)
    assert nxt is not None and nxt.op is Op.MODIFY and nxt.etag == "E1" and nxt.body == b"<3/>"
    # a removal queued behind a modify goes out after it, with the newest ETag
    assert t.publish(KEY, b"<t/>", 0.4, expires=0) is None
    rm = t.response(nxt, 200, 0.5, etag="E2", expires=600)
    assert rm is not None and rm.op is Op.REMOVE and rm.etag == "E2"
    # an answer to a PUBLISH no longer in flight is ignored
    assert t.response(nxt, 200, 0.6, etag="X") is None
    t.response(rm, 200, 0.7)
    assert t.get(KEY) is None


def test_publisher_end_forgets_and_failure_drops() -> None:
    t = PubTable()
    s = t.publish(KEY, b"<a/>", 0.0, expires=100)
    assert s is not None
    t.response(s, 200, 0.0, etag="E1", expires=3600)      # granted more than asked
    assert t.next_deadline() == 100.0
    assert t.due(100.0) == [] and t.get(KEY) is None       # the compositor's copy expires by itself
    s = t.publish(KEY, b"<a/>", 200.0, expires=100)
    assert s is not None
    assert t.response(s, 403, 200.0) is None and t.get(KEY) is None
    # removing what was never published sends nothing
    assert t.publish(KEY, None, 300.0, expires=0) is None


def test_kept_etag_modifies_after_a_restart() -> None:
    t = PubTable()
    s = t.publish(KEY, b"<c/>", 0.0, expires=600, etag="OLD")
    assert s is not None and s.op is Op.MODIFY and s.etag == "OLD"
    r = t.publish(PubKey("sip:a@b", "dialog"), b"<t/>", 0.0, expires=0, etag="GONE")
    assert r is not None and r.op is Op.REMOVE and r.etag == "GONE"


def test_bounds_and_expires_defaults() -> None:
    t = PubTable(default_expires=1800, min_expires=300, max_records=2)
    a = t.publish(PubKey("sip:a@x", "presence"), b"1", 0.0)
    b = t.publish(PubKey("sip:b@x", "presence"), b"1", 0.0, expires=10)
    assert a is not None and a.expires == 1800 and b is not None and b.expires == 300
    with pytest.raises(PuaFull):
        t.publish(PubKey("sip:c@x", "presence"), b"1", 0.0)
    # an existing publication is still changed at the bound
    assert t.publish(PubKey("sip:a@x", "presence"), b"2", 0.0) is None    # queued behind the initial
