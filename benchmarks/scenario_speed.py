"""How long `routescript test` takes for a 100-step scenario, in process (not collected by pytest):

    .venv/bin/python -m benchmarks.scenario_speed [--steps 100]

The scenario is examples/presence.cfg with one watcher and one publisher: PUBLISH -> 200 -> NOTIFY,
repeated, with an `advance` now and then (expiry timers fire on the way). Printed: the time to load and
start the script (the grammar is built once per process, then each load compiles the script), and the
time for the steps alone, which is what a scenario adds to a test run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from routescript.testing.scenario.reader import load_file
from routescript.testing.scenario.runner import PASSED, run_in_process

ROOT = Path(__file__).resolve().parents[1]
PIDF = ('<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@127.0.0.1">'
        '<tuple id="t1"><status><basic>{state}</basic></status></tuple></presence>')


def scenario_text(steps: int) -> str:
    lines = [f"script: {ROOT / 'examples' / 'presence.cfg'}",
             'modparams: { presence: { db_url: "sqlite://:memory:" },',
             '             xcap: { db_url: "sqlite://:memory:" } }',
             "templates:",
             "  SUBSCRIBE: { headers: { Event: presence, Expires: 3600 } }",
             "  PUBLISH: { headers: { Event: presence, Expires: 3600 } }",
             "scenarios:", "  - name: speed", "    steps:",
             '      - send: { from: alice, request: SUBSCRIBE, ruri: "sip:bob@127.0.0.1" }',
             "      - expect: { reply: 200 }",
             "      - expect: { request: NOTIFY, to: alice }"]
    n = 3
    i = 0
    while n < steps:
        state = "open" if i % 2 == 0 else "closed"
        body = PIDF.format(state=state)
        send = "      - send: { from: bob, request: PUBLISH, ruri: \"sip:bob@127.0.0.1\", body: "
        lines += [f"{send}'{body}' }}",
                  "      - expect: { reply: 200 }",
                  ("      - expect: { request: NOTIFY, to: alice, body: { xpath: { \"//pidf:basic\": "
                   f"{state} }} }} }}"),
                  "      - advance: 10s"]
        n += 4
        i += 1
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speed.test.yaml"
        path.write_text(scenario_text(args.steps))
        f = load_file(str(path))
        steps = len(f.scenarios[0].steps)
        run_in_process(f, f.scenarios[0])          # warm up: the grammar, the imports
        started = time.perf_counter()
        result = run_in_process(f, f.scenarios[0])
        total = time.perf_counter() - started
    if result.outcome != PASSED:
        raise SystemExit(f"the scenario did not pass: {result.message}")
    print(f"{steps} steps: {total:.3f} s for load + start + steps + stop "
          f"({total / steps * 1000:.2f} ms per step, load and start included)")


if __name__ == "__main__":
    main()
