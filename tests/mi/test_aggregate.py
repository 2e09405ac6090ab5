"""Merging the workers' MI answers (routescript.mi.aggregate): statistics per their `aggregate`,
"concat" lists with `key` de-duplication, "each" errors collected and named."""

from __future__ import annotations

import json

import pytest

from routescript.core.stats import CoreCounters, Statistics, register_core_statistics
from routescript.mi.aggregate import MergeError, WorkerError, concat, each_result, merge_statistics, snapshot


def _worker(requests: int, now: float, *, extra: int | None = None) -> list[list[object]]:
    stats = Statistics()
    counters = CoreCounters()
    counters.rcv_requests = requests
    register_core_statistics(stats, counters, clock=lambda: now)
    if extra is not None:
        stats.register("presence", "active_subscriptions", func=lambda: extra)
    rows: list[list[object]] = json.loads(json.dumps(snapshot(stats)))   # as the control channel carries it
    return rows


def test_counters_are_summed_and_the_timestamp_is_the_latest() -> None:
    merged = merge_statistics({"w0": _worker(7, 1000.0), "w1": _worker(5, 1002.0)})
    rcv = merged.get("core:rcv_requests")
    stamp = merged.get("core:timestamp")
    assert rcv is not None and rcv.value == 12 and rcv.incremental
    assert stamp is not None and stamp.value == 1002 and not stamp.incremental and stamp.aggregate == "max"


def test_a_statistic_only_some_workers_have_merges_theirs_and_keeps_the_order() -> None:
    merged = merge_statistics({"w0": _worker(1, 1.0), "w1": _worker(1, 1.0, extra=4),
                               "w2": _worker(1, 1.0, extra=6)})
    subs = merged.get("presence:active_subscriptions")
    assert subs is not None and subs.value == 10 and not subs.incremental
    assert merged.modules() == ["core", "net", "presence"]


def test_merged_values_are_fixed_and_reset_leaves_gauges() -> None:
    merged = merge_statistics({"w0": _worker(3, 5.0)})
    rcv = merged.get("rcv_requests")
    assert rcv is not None and rcv.value == 3 and rcv.value == 3
    stamp = merged.get("timestamp")
    assert stamp is not None and stamp.no_reset


@pytest.mark.parametrize("row", [
    ["core", "x", "7", True, "sum"], ["core", "x", True, True, "sum"], ["core", "x", 1, 1, "sum"],
    ["core", "x", 1, True, "avg"], ["core", "x", 1, True], "core:x=1",
])
def test_a_malformed_row_is_an_error_naming_the_worker(row: object) -> None:
    with pytest.raises(MergeError, match=r"^w1: malformed statistic row"):
        merge_statistics({"w0": [], "w1": [row]})  # type: ignore[list-item]


def test_workers_disagreeing_on_how_a_statistic_merges_is_an_error() -> None:
    with pytest.raises(MergeError, match="w1: statistic core:x merges by max, another worker says sum"):
        merge_statistics({"w0": [["core", "x", 1, True, "sum"]], "w1": [["core", "x", 1, True, "max"]]})


def test_register_refuses_an_unknown_aggregate() -> None:
    with pytest.raises(ValueError, match="aggregate 'avg'"):
        Statistics().register("core", "x", aggregate="avg")  # type: ignore[arg-type]


def test_concat_joins_lists_in_worker_order_and_drops_repeated_keys() -> None:
    def pub(user: str, etag: str) -> dict[str, object]:
        return {"pres_uri": f"sip:{user}@x", "event": 1, "etag": etag}

    w0 = [pub("a", "e1"), pub("b", "e2")]
    w1 = [pub("a", "e1"), pub("c", "e3")]
    assert concat([w0, w1], ("pres_uri", "event", "etag")) == [w0[0], w0[1], w1[1]]
    assert concat([w0, w1]) == w0 + w1   # no key: every item


def test_concat_joins_the_lists_inside_dicts_and_keeps_the_first_workers_other_values() -> None:
    w0 = {"Connections": [{"ID": 1}], "Note": "w0"}
    w1 = {"Connections": [{"ID": 1}, {"ID": 2}], "Note": "w1"}
    assert concat([w0, w1]) == {"Connections": [{"ID": 1}, {"ID": 1}, {"ID": 2}], "Note": "w0"}
    assert concat([]) == []
    assert concat(["OK", "OK"]) == "OK"


def test_concat_of_answers_of_different_shapes_is_an_error() -> None:
    with pytest.raises(MergeError, match="a list in one and not in another"):
        concat([[1], {"x": 1}])
    with pytest.raises(MergeError, match="'Connections' is a list in one and not in another"):
        concat([{"Connections": []}, {"Connections": "none"}])


def test_each_gives_worker_0s_answer_or_names_every_failure() -> None:
    assert each_result(["OK", "OK"], []) == ("OK", None)
    one = WorkerError("w1", 404, "Statistics Not Found")
    assert str(one) == "w1: Statistics Not Found"
    assert each_result(["OK"], [one]) == (None, WorkerError("w1", 404, "Statistics Not Found",
                                                            "w1: Statistics Not Found"))
    two = WorkerError("w2", 500, "Server error", "boom")
    result, error = each_result([], [one, two])
    assert result is None and error is not None
    assert (error.worker, error.code, error.message, error.data) == (
        "w1, w2", 404, "Statistics Not Found", "w1: Statistics Not Found; w2: boom")
