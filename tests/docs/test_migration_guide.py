"""docs/migrating-from-opensips.md says its commands are real: the `routescript check` lines of its
```sh test blocks load the example scripts without an error, and every `routescript` line of any ```sh
block is a command line the CLI accepts (subcommand and options), so a renamed option breaks this test
rather than the reader's migration."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from routescript.cli import _parser

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "migrating-from-opensips.md"

_BLOCK = re.compile(r"^```sh( test)?\n(.*?)^```", re.S | re.M)


def command_lines(*, tested_only: bool) -> list[str]:
    lines = []
    for tested, body in _BLOCK.findall(GUIDE.read_text()):
        if tested_only and not tested:
            continue
        lines += [line.strip() for line in body.splitlines() if line.strip() and not line.startswith("#")]
    return lines


def check_commands() -> list[list[str]]:
    commands = [shlex.split(line) for line in command_lines(tested_only=True)]
    return [c for c in commands if c[:2] == ["routescript", "check"]]


def test_the_guide_has_tested_commands() -> None:
    scripts = {c[-1] for c in check_commands()}
    assert {"examples/presence.cfg", "examples/presence-2x.cfg"} <= scripts, scripts


@pytest.mark.parametrize("command", check_commands(), ids=lambda c: c[-1])
def test_check_command_passes(command: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "routescript", *command[1:]], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ": OK (" in done.stdout, done.stdout


@pytest.mark.parametrize("line", [line for line in command_lines(tested_only=False)
                                  if line.startswith("routescript ")])
def test_every_routescript_line_is_accepted_by_the_cli(line: str) -> None:
    try:
        _parser().parse_args(shlex.split(line)[1:])
    except SystemExit as exc:
        pytest.fail(f"the CLI refuses `{line}` (exit {exc.code})")


def test_the_2x_example_loads_with_a_warning_per_2x_keyword() -> None:
    done = subprocess.run([sys.executable, "-m", "routescript", "check", "examples/presence-2x.cfg"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "'uri == myself' is an OpenSIPS 1.x/2.x core keyword" in done.stderr
    assert "'method' is an OpenSIPS 1.x/2.x core keyword" in done.stderr
