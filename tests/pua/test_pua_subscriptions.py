"""pua's subscription table (modules/pua/subscriptions.py) on a fake clock: initial SUBSCRIBE, the dialog
from the 2xx (or from a NOTIFY ahead of it), refreshes before the granted end, unsubscribe, 423, failures,
matching NOTIFYs (is_dialog), the bound; and the SUBSCRIBE requests built for it."""

from __future__ import annotations

import pytest

from routescript.modules.pua import SubKey, SubTable, subscribe_request
from routescript.modules.pua.subscriptions import SubsFull

KEY = SubKey("sip:line1@10.0.0.7:5062", "sip:line1@example.com", "dialog;sla")
ARGS = {"to_uri": "sip:line1@example.com", "contact": "sip:bla@192.0.2.1", "call_id": "c1", "from_tag": "t1"}


def test_initial_2xx_refresh_and_unsubscribe() -> None:
    table = SubTable()
    first = table.subscribe(KEY, 0, 600, **ARGS)
    assert first is not None and first.to_tag is None and first.cseq == 1 and first.expires == 600
    req = subscribe_request(first)
    assert req.ruri == KEY.pres_uri and req.header("To") == "<sip:line1@example.com>"
    assert req.header("From") == "<sip:line1@example.com>;tag=t1" and req.header("Event") == "dialog;sla"
    assert req.header("Contact") == "<sip:bla@192.0.2.1>" and req.header("Route") is None
    assert table.response(first, 200, 0, to_tag="ph1", expires=300, contact="sip:line1@10.0.0.7:5062;x=1",
                          record_route=("<sip:p1;lr>", "<sip:p2;lr>")) is None
    rec = table.get(KEY)
    assert rec is not None and rec.to_tag == "ph1" and rec.route_set == ("<sip:p2;lr>", "<sip:p1;lr>")
    assert table.next_deadline() == 290                       # the granted 300 s, less the margin
    assert table.due(289) == []
    (refresh,) = table.due(290)
    assert refresh.to_tag == "ph1" and refresh.cseq == 2 and refresh.expires == 310
    req = subscribe_request(refresh)
    assert req.ruri == "sip:line1@10.0.0.7:5062;x=1" and req.header("To") == "<sip:line1@example.com>;tag=ph1"
    assert [v for n, v in req.headers if n == "Route"] == ["<sip:p2;lr>", "<sip:p1;lr>"]
    table.response(refresh, 200, 290, expires=310)
    unsub = table.subscribe(KEY, 300, 0, **ARGS)
    assert unsub is not None and unsub.expires == 0 and unsub.cseq == 3
    table.response(unsub, 200, 300)
    assert table.get(KEY) is None and len(table) == 0


def test_notify_ahead_of_the_2xx_makes_the_dialog_and_matching() -> None:
    table = SubTable()
    first = table.subscribe(KEY, 0, 600, **ARGS)
    assert first is not None
    assert table.notify("c1", "t1", "ph1") == KEY                # RFC 6665 4.1.2.4
    assert table.notify("c1", "t1", "other") is None             # another fork's dialog
    assert table.notify("c1", "nope", "ph1") is None
    assert table.notify("c2", "t1", "ph1") is None
    table.response(first, 200, 0, to_tag="ph1", expires=600)
    assert table.get(KEY).to_tag == "ph1"                        # type: ignore[union-attr]
    assert table.notify("c1", "t1", "ph1", terminated=True) == KEY
    assert table.get(KEY) is None and table.notify("c1", "t1", "ph1") is None


def test_queued_while_in_flight_and_failures() -> None:
    table = SubTable()
    first = table.subscribe(KEY, 0, 600, **ARGS)
    assert first is not None
    assert table.subscribe(KEY, 1, 900, **ARGS) is None          # queued: one SUBSCRIBE in flight
    again = table.response(first, 200, 1, to_tag="ph1", expires=600)
    assert again is not None and again.expires == 900 and again.to_tag == "ph1"
    stale = table.response(first, 200, 1)                         # an answer to an older one: ignored
    assert stale is None
    table.response(again, 481, 2)                                 # the dialog is gone: forgotten
    assert table.get(KEY) is None
    brief = table.subscribe(KEY, 3, 30, **ARGS)
    assert brief is not None
    retry = table.response(brief, 423, 3, min_expires=60)
    assert retry is not None and retry.expires == 60 and retry.to_tag is None
    assert table.response(retry, 423, 3, min_expires=120) is None and table.get(KEY) is None
    assert table.subscribe(KEY, 4, 0, **ARGS) is None             # nothing held: nothing to end
    nothing = table.subscribe(KEY, 5, 60, **ARGS)
    assert nothing is not None
    assert table.response(nothing, 200, 5, to_tag="ph1", expires=0) is None and table.get(KEY) is None


def test_end_of_the_subscribers_time_and_the_bound() -> None:
    table = SubTable(max_records=1)
    first = table.subscribe(KEY, 0, 20, **ARGS)
    assert first is not None
    table.response(first, 200, 0, to_tag="ph1", expires=20)
    with pytest.raises(SubsFull):
        table.subscribe(SubKey("sip:b@x", "sip:l@x", "dialog;sla"), 0, 60, **ARGS)
    (refresh,) = table.due(10)                                    # margin: half the 20 s grant
    table.response(refresh, 200, 10, expires=10)
    assert table.due(20) == [] and len(table) == 0                # the subscriber's end: forgotten
