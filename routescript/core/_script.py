"""Adapters between the core and routescript.script's AST: the few things the core reads from a parsed
script (globals, loadmodule and modparam lines, routes, function calls), with their positions.

Kept in one place so the core depends on the AST's shape only here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from routescript.script import ast
from routescript.script.pos import Pos as ScriptPos

from .loader import LoadModule, ModParam, module_name

Pos = tuple[str, int, int]
# A global's value as the parser typed it (int, bool, str or a socket spec); config.py types it further.
GlobalValue = ast.GlobalValue


def pos_of(pos: ScriptPos, default_file: str = "") -> Pos:
    """The core's (file, line, col) of an AST position (`default_file` when it names none)."""
    return (pos.file or default_file, pos.line, pos.col)


def globals_of(script: ast.Script, file: str) -> list[tuple[str, GlobalValue, Pos | None]]:
    return [(g.name, g.value, pos_of(g.pos, file)) for g in script.globals]


def loadmodules_of(script: ast.Script, file: str) -> list[LoadModule]:
    return [LoadModule(module_name(lm.path), lm.path, pos_of(lm.pos, file)) for lm in script.loadmodules]


def modparams_of(script: ast.Script, file: str) -> list[ModParam]:
    return [ModParam(mp.module, mp.param, mp.value, pos_of(mp.pos, file)) for mp in script.modparams]


def routes_of(script: ast.Script) -> list[ast.RouteDef]:
    return list(script.routes)


def walk(node: object, _depth: int = 0) -> Iterator[object]:
    """Every dataclass node under `node` (depth-bounded: scripts nest far less than this)."""
    if _depth > 200:
        return
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        yield node
        for f in dataclasses.fields(node):
            yield from walk(getattr(node, f.name, None), _depth + 1)   # every field of an AST node
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from walk(item, _depth + 1)
    elif isinstance(node, dict):
        for item in node.values():
            yield from walk(item, _depth + 1)


def calls_of(script: ast.Script, file: str) -> Iterator[tuple[str, Pos | None]]:
    """(function name, position) of every call in the routes (functions, and route(name) calls)."""
    for route in routes_of(script):
        for node in walk(route):
            if isinstance(node, (ast.Call, ast.RouteCall)):
                yield node.name, pos_of(node.pos, file)
