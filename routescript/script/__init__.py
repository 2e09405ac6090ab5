"""The OpenSIPS configuration language: parse (typed AST with positions), check and compile.

    script = parse_file("opensips.cfg")            # ast.Script; ScriptError on syntax errors
    compiled = compile_script(script, registry)     # CompiledScript; ScriptError with every problem
    rc = await compiled.run(REQUEST_ROUTE, None, ctx)
    check_syntax("opensips.cfg")                    # [Diagnostic] without resolving any module name

See docs/internals.md, section routescript.script.
"""

from __future__ import annotations

import os

from . import ast
from .ast import Script
from .pos import Pos
from .compiler import DEFAULT_MAX_WHILE_LOOPS, CompiledScript, check_script, compile_script, route_label
from .diagnostics import Diagnostic, ScriptError
from .parser import ROUTE_KEYWORD, ROUTE_KINDS, parse_file, parse_text
from .runtime import DROP_KEY, was_dropped


def check_syntax(path: str | os.PathLike[str]) -> list[Diagnostic]:
    """Everything that can be checked without loading modules (for `routescript check --syntax-only`):
    syntax, includes, route definitions and route(x) targets, regex literals, `break` placement.
    Returns errors and warnings (Diagnostic.severity); an empty list means the file is fine."""
    path = os.fspath(path)
    try:
        script = parse_file(path)
    except ScriptError as exc:
        return list(exc.diagnostics)
    except OSError as exc:
        return [Diagnostic(Pos(path, 1, 1), f"cannot read {path}: {exc.strerror or exc}")]
    return check_script(script) + list(script.warnings)


__all__ = [
    "CompiledScript", "DEFAULT_MAX_WHILE_LOOPS", "DROP_KEY", "Diagnostic", "Pos", "ROUTE_KEYWORD",
    "ROUTE_KINDS", "Script", "ScriptError", "ast", "check_script", "check_syntax", "compile_script",
    "parse_file", "parse_text",
    "route_label", "was_dropped",
]
