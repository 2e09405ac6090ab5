"""Every example script ships a scenario file covering what its comments promise, and they pass in
process (the real script and modules; simulated network, virtual clock)."""

from __future__ import annotations

from pathlib import Path

import pytest

from routescript.testing.scenario import PASSED, run_files
from routescript.testing.scenario.report import failure_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCENARIO_FILES = sorted(EXAMPLES.glob("*.test.yaml"))
# Example scripts without a scenario file of their own, and why.
NOT_COVERED: dict[str, str] = {
    # Two servers sharing one PostgreSQL database: a scenario runs one server in process.
    "cluster-node1.cfg": "two servers on PostgreSQL: one in-process server cannot show it",
    "cluster-node2.cfg": "two servers on PostgreSQL: one in-process server cannot show it",
}


def test_every_example_script_has_a_scenario_file() -> None:
    missing = [cfg.name for cfg in sorted(EXAMPLES.glob("*.cfg"))
               if not (EXAMPLES / f"{cfg.stem}.test.yaml").exists() and cfg.name not in NOT_COVERED]
    assert missing == []


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=[p.name for p in SCENARIO_FILES])
def test_example_scenarios_pass_in_process(path: Path) -> None:
    results = run_files([str(path)])
    assert results, f"{path.name}: no scenario ran"
    failed = [r for r in results if r.outcome != PASSED]
    assert not failed, "\n\n".join(f"{r.node_id}: {r.outcome}\n{failure_text(r, 120)}" for r in failed)
    assert len(results) >= 3   # each file covers several promises, not one
