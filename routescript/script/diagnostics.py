"""Load-time messages about a script, written for the person who wrote it.

    opensips.cfg:12:5: expected ';' after sl_send_reply(...)
        sl_send_reply(404, "Not here")
        ^
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """A script that cannot be loaded; `diagnostics` lists every problem found (errors first by position)."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
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
