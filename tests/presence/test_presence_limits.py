"""The pieces of the caps on stored state (modules/presence/limits.py): the refusal log's rate limit and
the per-address counts, with an injected clock."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from routescript.core.netlist import NetworkList
from routescript.modules.presence.limits import Refusal, RefusalLog, SourceCounts


@dataclass(frozen=True)
class Src:
    remote_host: str
    remote_port: int = 5060


def test_refusal_log_writes_one_line_then_a_count_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    refusals = RefusalLog(logging.getLogger("test.caps"), interval=60)
    cap = Refusal("max_subscriptions_per_source", 3, "10.0.0.1")
    with caplog.at_level(logging.WARNING, "test.caps"):
        assert refusals.refused(cap, 0, "SUBSCRIBE a")
        assert not any(refusals.refused(cap, t, "SUBSCRIBE b") for t in range(1, 60))
        assert refusals.refused(Refusal("max_subscriptions_per_source", 3, "10.0.0.2"), 1, "SUBSCRIBE c")
        assert refusals.refused(cap, 60, "SUBSCRIBE d")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "SUBSCRIBE a refused 503: max_subscriptions_per_source (3) reached for 10.0.0.1",
        "SUBSCRIBE c refused 503: max_subscriptions_per_source (3) reached for 10.0.0.2",
        ("SUBSCRIBE d refused 503: max_subscriptions_per_source (3) reached for 10.0.0.1 "
         "(59 similar lines suppressed)")]
    assert refusals.total == 62


def test_refusal_log_remembers_a_bounded_number_of_keys() -> None:
    refusals = RefusalLog(logging.getLogger("test.caps"), max_keys=4)
    first = Refusal("max_subscriptions_per_source", 1, "10.0.0.0")
    assert refusals.refused(first, 0, "x") and not refusals.refused(first, 1, "x")
    for i in range(1, 100):
        refusals.refused(Refusal("max_subscriptions_per_source", 1, f"10.0.0.{i}"), 0, "x")
    assert refusals.refused(first, 2, "x")   # forgotten: only the last 4 keys are remembered


def test_source_counts_skip_trusted_and_unknown_sources() -> None:
    counts = SourceCounts(NetworkList.parse("192.0.2.0/24"))
    for source in (Src("10.0.0.1"), Src("10.0.0.1", 5070), Src("192.0.2.7"), None, object()):
        counts.add(source)
    assert counts.count(Src("10.0.0.1", 1)) == 2 and len(counts) == 1
    assert counts.full(Src("10.0.0.1"), 2) == "10.0.0.1" and counts.full(Src("10.0.0.1"), 3) is None
    assert counts.full(Src("192.0.2.7"), 0) is None            # trusted: never full
    counts.move(Src("10.0.0.1"), Src("10.0.0.9"))
    assert (counts.count(Src("10.0.0.1")), counts.count(Src("10.0.0.9"))) == (1, 1)
    for source in (Src("10.0.0.1"), Src("10.0.0.9"), Src("10.0.0.9")):   # one too many: no negative
        counts.remove(source)
    assert len(counts) == 0


def test_other_refusals_share_the_bound(caplog: pytest.LogCaptureFixture) -> None:
    """A PUBLISH refused 413 (max_aggregated_body_size) logged a line each time: one client could flood
    the log. Now one line per source address and interval, the rest counted."""
    refusals = RefusalLog(logging.getLogger("test.caps"), interval=60)
    with caplog.at_level(logging.WARNING, "test.caps"):
        assert refusals.warn(("publish", "10.0.0.1"), 0, "PUBLISH %s refused %d", "a", 413)
        assert not any(refusals.warn(("publish", "10.0.0.1"), t, "PUBLISH %s refused %d", "b", 413)
                       for t in range(1, 30))
        assert refusals.warn(("publish", "10.0.0.1"), 61, "PUBLISH %s refused %d", "c", 413)
    assert [r.getMessage() for r in caplog.records] == [
        "PUBLISH a refused 413", "PUBLISH c refused 413 (29 similar lines suppressed)"]
    assert refusals.total == 0   # caps only


def test_column_limits_checked_against_the_schema_sizes_name_the_first_misfit():
    """Issue 18 item 11: the sizes are read from the schema once (SUBSCRIBE_SIZES, PUBLISH_SIZES) and a
    request compared with them in one pass; a value at its column's size passes, one character more is
    refused naming what the request calls it (the e2e suite checks the replies on the wire)."""
    from routescript.db.schema import SCHEMA
    from routescript.modules.presence.base import _BadRequest
    from routescript.modules.presence.column_limits import (SUBSCRIBE_COLUMNS, SUBSCRIBE_SIZES, check_publish,
                                                            check_subscribe)

    columns = SCHEMA["active_watchers"].by_name
    assert tuple(columns[c].size for c in SUBSCRIBE_COLUMNS) == SUBSCRIBE_SIZES
    at_size = [("x" * size) for size in SUBSCRIBE_SIZES]
    check_subscribe(*at_size)   # every value exactly at its size fits
    names = ["Call-ID", "Request-URI", "From", "From", "To", "To", "From tag", "To tag", "Event", "Contact"]
    for i, what in enumerate(names):
        values = list(at_size)
        values[i] += "x"
        with pytest.raises(_BadRequest) as err:
            check_subscribe(*values)
        expected = (414, "Request-URI Too Long") if what == "Request-URI" else (400, f"{what} too long")
        assert (err.value.status, err.value.reason) == expected, what
    check_subscribe("c", "sip:a@h", "w", "h", "a", "h", None, None, None, None)   # absent values fit

    class Msg:
        call_id = "pub-1"
    sizes = SCHEMA["presentity"].by_name
    check_publish(Msg(), "u" * sizes["username"].size, "d", None)
    with pytest.raises(_BadRequest) as err:
        check_publish(Msg(), "u", "d", "s" * (sizes["sender"].size + 1))
    assert (err.value.status, err.value.reason) == (400, "Sender too long")
