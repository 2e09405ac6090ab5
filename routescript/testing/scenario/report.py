"""The report of `routescript test`, shaped like pytest's: a line per file (or per scenario with -v),
then every failure with the step, expected and actual side by side and the script lines that ran,
then a summary line; and the JUnit XML file CI systems read."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence
from typing import TextIO
from xml.etree import ElementTree as ET

from .runner import ERROR, FAILED, PASSED, SKIPPED, ScenarioResult

_LETTER = {PASSED: ".", FAILED: "F", ERROR: "E", SKIPPED: "s"}


class Reporter:
    def __init__(self, out: TextIO, *, verbose: bool = False) -> None:
        self.out = out
        self.verbose = verbose
        self._file: str | None = None
        self.width = min(shutil.get_terminal_size((100, 20)).columns, 140)

    def result(self, r: ScenarioResult) -> None:
        if self.verbose:
            extra = f" ({r.message})" if r.outcome == SKIPPED else ""
            self.out.write(f"{r.node_id} {r.outcome.upper()}{extra}\n")
        else:
            if r.file != self._file:
                if self._file is not None:
                    self.out.write("\n")
                self.out.write(f"{r.file} ")
                self._file = r.file
            self.out.write(_LETTER[r.outcome])
        self.out.flush()

    def summary(self, results: Sequence[ScenarioResult], seconds: float) -> None:
        if not self.verbose and self._file is not None:
            self.out.write("\n")
        bad = [r for r in results if r.outcome in (FAILED, ERROR)]
        if bad:
            self.out.write(_rule(" FAILURES ", "=", self.width))
            for r in bad:
                self.out.write(_rule(f" {r.node_id} ", "_", self.width))
                self.out.write(failure_text(r, self.width))
        skipped = [r for r in results if r.outcome == SKIPPED]
        if skipped and not self.verbose:
            self.out.write(_rule(" short test summary info ", "=", self.width))
            for r in skipped:
                self.out.write(f"SKIPPED {r.node_id}: {r.message}\n")
        counts = [(sum(r.outcome == o for r in results), o) for o in (FAILED, PASSED, SKIPPED, ERROR)]
        parts = [f"{n} {o if o != ERROR else 'errors' if n != 1 else 'error'}" for n, o in counts if n]
        title = f" {', '.join(parts) or 'no scenarios ran'} in {seconds:.2f}s "
        self.out.write(_rule(title, "=", self.width))


def failure_text(r: ScenarioResult, width: int) -> str:
    """A failure as the report shows it: the step, the message, expected | actual, the lines that ran."""
    lines: list[str] = []
    if r.step is not None and r.failure is not None:
        lines.append(f"{r.step.pos}: step {r.steps_run}: {r.step.text}")
    lines.append(r.message)
    f = r.failure
    if f is not None and (f.expected or f.actual):
        lines.append("")
        lines += side_by_side(f.expected, f.actual, width)
    if f is not None and f.lines:
        lines.append("")
        lines.append("script lines that ran since the last send:")
        lines += [f"  {line}" for line in f.lines]
    if f is not None and f.lost:
        lines.append("")
        lines.append("sent by the server where no UA listens:")
        lines += [f"  {line}" for line in f.lost[-10:]]
    if r.outcome == FAILED and r.log_tail:
        lines.append("")
        lines.append("last log lines:")
        lines += [f"  {line}" for line in r.log_tail[-8:]]
    return "\n".join(lines) + "\n"


def side_by_side(expected: str, actual: str, width: int) -> list[str]:
    col = max(30, (width - 3) // 2)
    left = _wrapped(expected, col)
    right = _wrapped(actual or "(nothing)", col)
    out = [f"{'expected':<{col}} | actual", f"{'-' * col}-+-{'-' * col}"]
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        out.append(f"{a:<{col}} | {b}".rstrip())
    return out


def _wrapped(text: str, width: int) -> list[str]:
    out: list[str] = []
    for line in text.splitlines() or [""]:
        out += textwrap.wrap(line, width, break_long_words=True, replace_whitespace=False) or [""]
    return out


def _rule(title: str, char: str, width: int) -> str:
    side = max(3, (width - len(title)) // 2)
    return f"{char * side}{title}{char * side}\n"


def write_junit(results: Sequence[ScenarioResult], path: str) -> None:
    """JUnit XML: one testsuite per file, one testcase per scenario."""
    root = ET.Element("testsuites", name="routescript test")
    by_file: dict[str, list[ScenarioResult]] = {}
    for r in results:
        by_file.setdefault(r.file, []).append(r)
    for file, rs in by_file.items():
        suite = ET.SubElement(root, "testsuite", name=file, tests=str(len(rs)),
                              failures=str(sum(r.outcome == FAILED for r in rs)),
                              errors=str(sum(r.outcome == ERROR for r in rs)),
                              skipped=str(sum(r.outcome == SKIPPED for r in rs)),
                              time=f"{sum(r.seconds for r in rs):.3f}")
        for r in rs:
            case = ET.SubElement(suite, "testcase", classname=file, name=r.name or "(file)",
                                 time=f"{r.seconds:.3f}")
            if r.outcome == FAILED:
                ET.SubElement(case, "failure", message=r.message).text = failure_text(r, 120)
            elif r.outcome == ERROR:
                first = r.message.splitlines()[0] if r.message else ""
                ET.SubElement(case, "error", message=first).text = r.message
            elif r.outcome == SKIPPED:
                ET.SubElement(case, "skipped", message=r.message)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
