"""The pytest plugin of `routescript test` (entry point `pytest11: routescript`): the same engine for
users who prefer Python.

    def test_boss(routescript_sim):
        sim = routescript_sim("presence.cfg", modparams={"presence": {"db_url": "sqlite://:memory:"}})
        sim.send({"from": "alice", "request": "SUBSCRIBE", "ruri": "sip:boss@example.com",
                  "headers": {"Event": "presence", "Expires": 600}})
        sim.expect({"reply": 200})
        sim.advance(601)
        sim.expect({"request": "NOTIFY", "to": "alice",
                    "headers": {"Subscription-State": "terminated;reason=timeout"}})

Every step is the dict a scenario file would hold, checked the same way (a wrong key is a
ScenarioError); a failing expectation is an AssertionError with expected and actual side by side.
`routescript_scenarios(path)` runs a whole file and fails with the report of every failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .scenario import model as m
from .scenario.reader import StepReader, read_file
from .scenario.engine import StepContext, StepFailed, run_step
from .scenario.report import side_by_side
from .scenario.simulation import Simulation
from .scenario.yamlread import from_python
from .virtual_clock import VirtualClockLoop


class SimulatedScript:
    """A script running in process on a virtual clock, driven step by step (module docstring)."""

    def __init__(self, script: str | Path, *, modparams: dict[str, dict[str, Any]] | None = None,
                 uas: dict[str, dict[str, Any]] | None = None,
                 templates: dict[str, dict[str, Any]] | None = None) -> None:
        spec: dict[str, Any] = {"script": str(Path(script).resolve()),
                                "scenarios": [{"name": "python", "steps": [{"advance": 0}]}]}
        spec.update({key: value for key, value in (("modparams", modparams), ("uas", uas),
                                                    ("templates", templates)) if value})
        self.file = read_file(from_python(spec), "<python>")
        self._steps = StepReader(self.file)
        self.loop = VirtualClockLoop()
        self.sim = Simulation(self.file, self.loop)
        self.ctx = StepContext(namespaces=self.file.namespaces)
        self.loop.run_until_complete(self.sim.start())
        for ua in self.sim.uas.values():
            ua.variables = self.ctx.variables

    @property
    def variables(self) -> dict[str, str]:
        """What `capture:` stored ($var(name) in later steps)."""
        return self.ctx.variables

    def step(self, step: dict[str, Any]) -> None:
        parsed = self._steps.read(from_python(step))
        self._need_uas(parsed)
        try:
            self.loop.run_until_complete(run_step(self.sim, parsed, self.ctx))
        except StepFailed as exc:
            text = "\n".join([exc.message, *side_by_side(exc.expected, exc.actual, 120)])
            lines = self.sim.describe_lines(self.sim.ran_since_send())
            raise AssertionError(text + ("\nscript lines that ran:\n  " + "\n  ".join(lines) if lines else "")
                                 ) from None

    def send(self, fields: dict[str, Any]) -> None:
        self.step({"send": fields})

    def expect(self, fields: dict[str, Any]) -> None:
        self.step({"expect": fields})

    def advance(self, seconds: float) -> None:
        self.step({"advance": seconds})

    def nothing(self, to: str | None = None, within: float = 0.0) -> None:
        self.step({"nothing": {**({"to": to} if to else {}), "within": within}})

    def mi(self, command: str, params: Any = None) -> Any:
        return self.loop.run_until_complete(self.sim.mi(command, params))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.sim.stop())
        finally:
            self.loop.close()

    def _need_uas(self, step: m.Step) -> None:
        """A UA first named by this step joins the network (a file's UAs are known at start)."""
        name = getattr(step, "ua", None)
        if name and name not in self.sim.uas:
            self.sim.add_ua(m.UASpec(name))
            self.sim.uas[name].variables = self.ctx.variables


@pytest.fixture
def routescript_sim() -> Iterator[Callable[..., SimulatedScript]]:
    """A factory of SimulatedScript; every one made is stopped at the end of the test."""
    made: list[SimulatedScript] = []

    def make(script: str | Path, **kwargs: Any) -> SimulatedScript:
        sim = SimulatedScript(script, **kwargs)
        made.append(sim)
        return sim

    yield make
    for sim in made:
        sim.close()


@pytest.fixture
def routescript_scenarios() -> Callable[[str | Path], None]:
    """Run a scenario file in process; an AssertionError with the report when any scenario fails."""
    def run(path: str | Path) -> None:
        from .scenario import ERROR, FAILED, run_files
        from .scenario.report import failure_text

        results = run_files([str(path)])
        bad = [r for r in results if r.outcome in (FAILED, ERROR)]
        if bad:
            raise AssertionError("\n\n".join(f"{r.node_id}\n{failure_text(r, 120)}" for r in bad))
        if not results:
            raise AssertionError(f"{path}: no scenario ran")
    return run
