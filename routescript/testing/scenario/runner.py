"""Running scenario files: each scenario on a fresh server in process (its own virtual clock), or
against a live server (--target); one ScenarioResult per scenario (or per file that cannot be read).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from routescript.core.loading import LoadError
from routescript.script.diagnostics import without_repeats

from ..virtual_clock import VirtualClockLoop
from . import model as m
from .reader import load_file
from .engine import NotRunnable, StepContext, StepFailed, run_steps
from .yamlread import ScenarioError

PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"


@dataclass(slots=True)
class ScenarioResult:
    file: str
    name: str
    outcome: str
    message: str = ""
    step: m.Step | None = None
    failure: StepFailed | None = None
    seconds: float = 0.0
    steps_run: int = 0
    log_tail: list[str] = field(default_factory=list)

    @property
    def node_id(self) -> str:
        return f"{self.file}::{self.name}" if self.name else self.file


def run_files(paths: list[str], *, target: tuple[str, int] | None = None, keyword: str | None = None,
              echo_log: bool = False, report: Callable[[ScenarioResult], None] | None = None
              ) -> list[ScenarioResult]:
    results: list[ScenarioResult] = []

    def done(result: ScenarioResult) -> None:
        results.append(result)
        if report is not None:
            report(result)

    for path in paths:
        try:
            f = load_file(path)
        except ScenarioError as exc:
            done(ScenarioResult(path, "", ERROR, str(exc)))
            continue
        for scenario in f.scenarios:
            if keyword is not None and keyword.lower() not in scenario.name.lower():
                continue
            if target is not None:
                done(asyncio.run(run_live(f, scenario, target)))
            else:
                done(run_in_process(f, scenario, echo_log=echo_log))
    return results


def run_in_process(f: m.ScenarioFile, scenario: m.Scenario, *, echo_log: bool = False) -> ScenarioResult:
    """One scenario on a fresh server, on its own VirtualClockLoop (closed at the end)."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(_in_process(f, scenario, loop, echo_log))
    finally:
        loop.close()


async def _in_process(f: m.ScenarioFile, scenario: m.Scenario, loop: VirtualClockLoop,
                      echo_log: bool) -> ScenarioResult:
    from .simulation import Simulation

    started = time.perf_counter()
    result = ScenarioResult(f.path, scenario.name, PASSED)
    sim = Simulation(f, loop, echo_log=echo_log)
    try:
        sim.load()
    except LoadError as exc:
        result.outcome = ERROR
        shown = without_repeats(exc.diagnostics)
        result.message = "the script does not load:\n" + "\n".join(str(d) for d in shown)
        return result
    try:
        await sim.start()
        await _run(sim, scenario, f, result)
    except LoadError as exc:
        result.outcome = ERROR
        result.message = "the script does not start:\n" + "\n".join(str(d) for d in exc.diagnostics)
    finally:
        await sim.stop()
        result.seconds = time.perf_counter() - started
        result.log_tail = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in sim.log_records()[-20:]]
    return result


async def run_live(f: m.ScenarioFile, scenario: m.Scenario, target: tuple[str, int]) -> ScenarioResult:
    from .live import LiveWorld, live_obstacle

    result = ScenarioResult(f.path, scenario.name, PASSED)
    obstacle = live_obstacle(scenario, f)
    if obstacle is not None:
        result.outcome, result.message = SKIPPED, f"not run against --target: {obstacle}"
        return result
    started = time.perf_counter()
    world = LiveWorld(f, target)
    names = list(f.uas) + [s.ua for s in scenario.steps if isinstance(s, m.Send) and s.ua not in f.uas]
    try:
        await world.start(list(dict.fromkeys(names)))
        await _run(world, scenario, f, result)
    except OSError as exc:
        result.outcome, result.message = ERROR, f"cannot open the UAs' sockets: {exc}"
    finally:
        await world.stop()
        result.seconds = time.perf_counter() - started
    return result


async def _run(world: object, scenario: m.Scenario, f: m.ScenarioFile, result: ScenarioResult) -> None:
    from .engine import World

    assert isinstance(world, World)
    ctx = StepContext(namespaces=f.namespaces)

    def on_step(step: m.Step) -> None:
        result.step = step
        result.steps_run += 1

    try:
        await run_steps(world, scenario, ctx, on_step)
    except StepFailed as exc:
        result.outcome, result.failure, result.message = FAILED, exc, exc.message
    except NotRunnable as exc:
        result.outcome, result.message = SKIPPED, f"cannot be checked here: {exc}"
