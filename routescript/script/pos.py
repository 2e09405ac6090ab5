"""Where a piece of a script stands: `file:line:col` (1-based). Its own module, below both the AST and
the diagnostics that point into it (ast.py re-exports it for the parser and the compiler)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pos:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"
