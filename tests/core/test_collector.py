"""The collector thresholds `routescript run` sets (routescript.core.server.tune_collector)."""

from __future__ import annotations

import gc

from routescript.core.server import GC_THRESHOLDS, tune_collector


def test_run_sets_server_collector_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == GC_THRESHOLDS
        # Young collections rare enough that requests in flight are seldom promoted (see server.py).
        assert GC_THRESHOLDS[0] >= 10_000
    finally:
        gc.set_threshold(*before)
