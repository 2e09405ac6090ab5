"""How fast this machine runs plain Python right now: the yardstick for comparing runs.

The machine the figures come from is a shared VM; from one session to the next the same code has run
three times slower (a 30-statement script: 50 us per message one day, 150 us another). A fixed pure-Python
workload, timed at the start and the end of a run, says which figures moved because the machine did.
"""

from __future__ import annotations

import statistics
import timeit

STATEMENT = "sum(range(10_000))"


def python_speed_us(repeat: int = 15, number: int = 100) -> float:
    """Median time of STATEMENT in microseconds over `repeat` samples (lower is faster). The median, not
    the best: a neighbour on the host slows this machine for seconds at a time (measured here: 171 to
    304 us within a minute), and the figures of a run are paid at the usual speed, not the best one."""
    return statistics.median(timeit.repeat(STATEMENT, repeat=repeat, number=number)) / number * 1e6


def describe(start_us: float, end_us: float) -> str:
    return f"python speed gauge {STATEMENT}: {start_us:.0f} us at the start, {end_us:.0f} us at the end"
