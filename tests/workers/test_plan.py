"""WorkerPlan: N_total and the sockets each worker reads (docs/workers.md, section 1), and the preview
gate that keeps N_total > 1 in one process until the dispatcher is merged."""

from __future__ import annotations

import pytest

from routescript.core.config import apply_globals
from routescript.script import parse_text
from routescript.workers.plan import WorkerPlan, runs_workers


def plan_of(text: str) -> WorkerPlan:
    script = parse_text(text, "p.cfg")
    cfg, _ = apply_globals([(g.name, g.value, ("p.cfg", g.pos.line, g.pos.col)) for g in script.globals])
    return cfg.worker_plan()


def test_one_process_by_default() -> None:
    plan = plan_of("log_level = 3\n")
    assert plan.total == 1 and plan.affinity == "uri" and plan.restart_backoff == 30.0
    assert [s.name for s in plan.sockets_of(0)] == ["udp:127.0.0.1:5060"]


@pytest.mark.parametrize(("text", "total"), [
    ("udp_workers = 4\n", 4),
    ("children = 3\n", 3),
    ("udp_workers = 2\ntcp_workers = 5\n", 5),
    ("udp_workers = 2\nsocket = udp:127.0.0.1:5060 use_workers 6\n", 6),
    ("udp_workers = 3\nsocket = udp:127.0.0.1:5060 use_workers 1\n", 3),
])
def test_total_is_the_largest_count(text: str, total: int) -> None:
    assert plan_of(text).total == total


def test_each_socket_is_read_by_its_first_workers() -> None:
    plan = plan_of("udp_workers = 3\ntcp_workers = 2\n"
                   "socket = udp:127.0.0.1:5060\nsocket = tcp:127.0.0.1:5060\n"
                   "socket = udp:127.0.0.1:5070 use_workers 1\n")
    assert plan.total == 3
    assert [s.name for s in plan.sockets_of(0)] == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060",
                                                     "udp:127.0.0.1:5070"]
    assert [s.name for s in plan.sockets_of(1)] == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    assert [s.name for s in plan.sockets_of(2)] == ["udp:127.0.0.1:5060"]   # reads UDP, sends from all


def test_more_than_one_worker_runs_workers() -> None:
    assert runs_workers(plan_of("udp_workers = 2\n"))
    assert not runs_workers(plan_of("udp_workers = 1\n"))
    assert not runs_workers(plan_of("log_level = 3\n"))


@pytest.mark.parametrize(("text", "named", "line"), [
    ("log_level = 3\nudp_workers = 2\n", "udp_workers=2", 2),
    ("children = 2\n", "children=2", 1),
    ("tcp_workers = 4\nudp_workers = 2\n", "tcp_workers=4", 1),
    ("socket = udp:127.0.0.1:5060 use_workers 3\n", "socket udp:127.0.0.1:5060 use_workers=3", 1),
])
def test_the_deciding_parameter_and_its_line(text: str, named: str, line: int) -> None:
    plan = plan_of(text)
    assert f"{plan.deciding}={plan.total}" == named
    assert plan.deciding_pos is not None and plan.deciding_pos[1] == line


def test_workers_are_no_longer_a_load_warning() -> None:
    _cfg, warnings = apply_globals([("udp_workers", 2, ("w.cfg", 7, 1))])
    assert warnings == []
