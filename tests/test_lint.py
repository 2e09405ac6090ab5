"""The code style the project holds itself to (STYLE.md 12): ruff with the rule set in pyproject.toml over
the whole tree, and mypy --strict over the engine. Part of the test suite so a change cannot land with
either failing. The tools are the `lint` extra (`pip install -e '.[test,lint]'`, as the README and CI
install); without them these two tests skip, naming the extra."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(args[0]) is None:
        pytest.skip(f"{args[0]} is not installed: pip install -e '.[lint]'")
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", "--output-format", "concise", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean_on_the_engine() -> None:
    result = _run("mypy", "routescript")
    assert result.returncode == 0, result.stdout + result.stderr
