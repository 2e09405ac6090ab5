"""Load-time messages about a script, written for the person who wrote it.

    opensips.cfg:12:5: expected ';' after sl_send_reply(...)
        sl_send_reply(404, "Not here")
        ^
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .pos import Pos


@dataclass(frozen=True, slots=True)
class Diagnostic:
    pos: Pos
    message: str
    source_line: str = ""
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        head = f"{self.pos}: {'warning: ' if self.severity == 'warning' else ''}{self.message}"
        if not self.source_line:
            return head
        line = self.source_line.rstrip("\n").expandtabs(1)
        caret = " " * max(self.pos.col - 1, 0) + "^"
        return f"{head}\n    {line}\n    {caret}"


class ScriptError(Exception):
    """A script that cannot be loaded; `diagnostics` lists the problems found in the order of their
    positions (the warnings met on the way among them), `omitted` counts the errors past the cap
    (MAX_ERRORS) that are not listed."""

    def __init__(self, diagnostics: list[Diagnostic], omitted: int = 0) -> None:
        self.diagnostics = list(diagnostics)
        self.omitted = omitted
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.diagnostics)


class SourceLines:
    """The text of every file read, to quote the offending line in a Diagnostic."""

    def __init__(self) -> None:
        self._files: dict[str, list[str]] = {}

    def add(self, file: str, text: str) -> None:
        self._files[file] = text.splitlines()

    def line(self, pos: Pos) -> str:
        lines = self._files.get(pos.file)
        if lines is None or not (1 <= pos.line <= len(lines)):
            return ""
        return lines[pos.line - 1]

    def diag(self, pos: Pos, message: str, severity: str = "error") -> Diagnostic:
        return Diagnostic(pos, message, self.line(pos), severity)


class HasSeverity(Protocol):
    @property
    def severity(self) -> str: ...


_D = TypeVar("_D")


def without_repeats(diagnostics: Iterable[_D]) -> list[_D]:
    """The diagnostics in their order, each printed form once: whatever layer reported a problem twice
    (the parser, the compiler, module loading), the person reading sees it once."""
    seen: set[str] = set()
    out: list[_D] = []
    for d in diagnostics:
        key = str(d)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def summary_lines(diagnostics: Iterable[HasSeverity], omitted: int = 0) -> list[str]:
    """The lines that close a failed check, after the diagnostics (rustc and clang are the models):

        (12 more errors not shown)
        aborting: 62 errors, 1 warning

    `omitted` counts the errors past the cap that were not printed; the totals include them."""
    diags = list(diagnostics)
    warnings = sum(1 for d in diags if d.severity == "warning")
    errors = len(diags) - warnings + omitted
    lines = [f"({_count(omitted, 'more error')} not shown)"] if omitted else []
    parts = [_count(errors, "error")] + ([_count(warnings, "warning")] if warnings else [])
    lines.append("aborting: " + ", ".join(parts))
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
