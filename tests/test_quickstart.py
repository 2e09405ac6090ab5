"""The README's quick start as a new user meets it: exactly two commands, neither needing sudo or apt (a
container where you are root has no sudo); the second is what CI runs; without `sipp` the SIPp tests skip
and say why, while `.ci/run` refuses to go on without it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the quick start has no ```sh block"
    lines = block.group(1).splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_two_commands_without_sudo_or_apt() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    for command in commands:
        assert not re.search(r"\b(sudo|apt|apt-get)\b", command), command
    assert commands[0].endswith("routescript run examples/presence.cfg")
    assert commands[1].endswith(".venv/bin/python -m pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quick_start_commands()[1] in ci


def bin_without_sipp(tmp_path: Path, *tools: str) -> Path:
    """A PATH directory holding only `tools` (links to the real ones): no sipp on it."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in tools:
        real = shutil.which(tool)
        assert real is not None, tool
        (bindir / tool).symlink_to(real)
    return bindir


def test_sipp_tests_skip_with_the_reason_without_sipp(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(bin_without_sipp(tmp_path))}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/sipp"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skipped and all("sipp is not installed" in line and "apt-get install sip-tester" in line
                           for line in skipped), done.stdout[-3000:]


def test_ci_fails_when_sipp_cannot_be_installed(tmp_path: Path) -> None:
    bindir = bin_without_sipp(tmp_path, "bash", "dirname")
    fake = bindir / "apt-get"   # an apt-get that installs nothing
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    done = subprocess.run([str(bindir / "bash"), str(ROOT / ".ci" / "run")], cwd=tmp_path,
                          env={"PATH": str(bindir), "HOME": str(tmp_path)}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1
    assert "sipp is still not on PATH" in done.stderr
