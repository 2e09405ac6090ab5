"""opensips.cfg text -> typed AST (routescript.script.ast), with messages for the script's author.

The grammar is grammar/routescript.lark (lark, LALR, contextual lexer), built once per process.
Syntax errors are collected, not just the first: a missing ';' is reported and parsing goes on as if
it were there; after any other error the parser skips the broken statement and carries on inside its
block (parse_errors.py says how, and which follow-on errors it does not report). The same diagnostic is
never recorded twice, and past MAX_ERRORS errors are only counted (ScriptError.omitted), for the
summary line (`(12 more errors not shown)`, diagnostics.summary_lines).

`include_file "x.cfg"` / `import_file "x.cfg"` are resolved here, relative to the including file's
directory, at the top level (global part, routes) and inside route blocks (statements). Nodes from an
included file carry that file's name in their positions. Choice (as Kamailio documents it; the OpenSIPS
docs are silent): import_file is include_file that tolerates a missing file (a warning, not an error).

This module: the entry points and loading (one _Loader per parse: files, includes, diagnostics). The
grammar is built in grammar.py, syntax errors are worded and recovered from in parse_errors.py, and
parse trees become AST nodes in parse_tree.py; their public names are re-exported here.
"""


from __future__ import annotations

import os
from typing import Any

from lark.exceptions import UnexpectedInput

from . import ast
from .pos import Pos
from .diagnostics import Diagnostic, ScriptError, SourceLines
from .grammar import (MAX_ERRORS, MAX_FILE_SIZE, MAX_INCLUDE_DEPTH, ROUTE_KEYWORD, ROUTE_KINDS, _lark,
                      collect_skipped, skipped_warning)
from .parse_errors import _Recovery
from .parse_tree import _Builder, _Include, parse_int

__all__ = ["MAX_ERRORS", "MAX_FILE_SIZE", "MAX_INCLUDE_DEPTH", "ROUTE_KEYWORD", "ROUTE_KINDS", "parse_file",
           "parse_int", "parse_text"]


# public entry points
# ---------------------------------------------------------------------------------------------------

def parse_file(path: str | os.PathLike[str]) -> ast.Script:
    """Parse a configuration file (and the files it includes). Raises ScriptError, or OSError when the
    file itself cannot be read."""
    path = os.fspath(path)
    text = _read(path)
    return parse_text(text, path)


def parse_text(text: str, filename: str = "<script>") -> ast.Script:
    """Parse configuration text; `filename` names it in positions and resolves relative includes."""
    loader = _Loader()
    script = loader.load_main(text, filename)
    if loader.errors:
        raise ScriptError(sorted(loader.errors + loader.warnings, key=_diag_key), loader.omitted)
    return script


def _diag_key(d: Diagnostic) -> tuple[str, int, int]:
    return (d.pos.file, d.pos.line, d.pos.col)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise OSError(f"{path}: larger than {MAX_FILE_SIZE} bytes")
    return data.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------------
# loading: one _Loader per parse, shared by the main file and its includes
# ---------------------------------------------------------------------------------------------------

class _Loader:
    def __init__(self) -> None:
        self.errors: list[Diagnostic] = []
        self.omitted = 0                       # errors past MAX_ERRORS, counted for the summary
        self._seen: set[tuple[Pos, str]] = set()
        self.warnings: list[Diagnostic] = []
        self.sources = SourceLines()
        self.stack: list[str] = []
        self.files: list[str] = []
        self.texts: dict[str, str] = {}

    def error(self, pos: Pos, message: str) -> None:
        if (pos, message) in self._seen:
            return  # never the same diagnostic twice
        self._seen.add((pos, message))
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(self.sources.diag(pos, message))
        else:
            self.omitted += 1

    def warn(self, pos: Pos, message: str) -> None:
        self.warnings.append(self.sources.diag(pos, message, "warning"))

    def load_main(self, text: str, filename: str) -> ast.Script:
        items = self.parse(text, filename, "start") or []
        script = ast.Script(warnings=self.warnings, files=tuple(self.files), texts=dict(self.texts))
        for item in items:
            if isinstance(item, ast.GlobalParam):
                script.globals.append(item)
            elif isinstance(item, ast.LoadModule):
                script.loadmodules.append(item)
            elif isinstance(item, ast.ModParam):
                script.modparams.append(item)
            elif isinstance(item, ast.RouteDef):
                script.routes.append(item)
        return script

    def parse(self, text: str, filename: str, start: str) -> list[Any] | None:
        self.sources.add(filename, text)
        self.texts[filename] = text
        self.files.append(filename)
        self.stack.append(filename)
        try:
            recovery = _Recovery(self, filename, text)
            try:
                with collect_skipped() as skipped:  # values: characters OpenSIPS's lexer skips
                    tree = _lark().parse(text, start=start, on_error=recovery.on_error)
            except UnexpectedInput as exc:  # not recoverable (e.g. at end of input)
                recovery.report(exc)
                return None
            finally:
                for tok in skipped:
                    self.warn(Pos(filename, tok.line or 1, tok.column or 1), skipped_warning(str(tok)))
            if recovery.failed:
                return None
            built: list[Any] = _Builder(self, filename).transform(tree)
            return built
        finally:
            self.stack.pop()

    def include(self, inc: _Include, start: str, base_file: str) -> list[Any]:
        base_dir = os.path.dirname(base_file) if base_file and not base_file.startswith("<") else ""
        path = inc.path if os.path.isabs(inc.path) else os.path.normpath(os.path.join(base_dir, inc.path))
        if path in self.stack:
            self.error(inc.pos, f"{inc.keyword} \"{inc.path}\": the file includes itself (through "
                                f"{' -> '.join(os.path.basename(s) for s in self.stack)})")
            return []
        if len(self.stack) >= MAX_INCLUDE_DEPTH:
            self.error(inc.pos, f"{inc.keyword} \"{inc.path}\": includes nested more than "
                                f"{MAX_INCLUDE_DEPTH} deep")
            return []
        try:
            text = _read(path)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if inc.keyword == "import_file":
                self.warn(inc.pos, f"import_file \"{inc.path}\": {reason}; skipped")
            else:
                self.error(inc.pos, f"include_file \"{inc.path}\": cannot read {path}: {reason}")
            return []
        return self.parse(text, path, start) or []
