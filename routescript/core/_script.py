"""Adapters between the core and routescript.script's AST: the few things the core reads from a parsed
script (globals, loadmodule and modparam lines, routes, function calls), with their positions.

Kept in one place so the core depends on the AST's shape only here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from .loader import LoadModule, ModParam, module_name

Pos = tuple[str, int, int]


def pos_of(node: Any, default_file: str = "") -> Pos | None:
    """(file, line, col) of an AST node, whatever way the node carries it."""
    p = getattr(node, "pos", None)
    if p is None:
        line = getattr(node, "line", None)
        if line is None:
            return None
        return (getattr(node, "file", default_file) or default_file, int(line),
                int(getattr(node, "col", 0) or 0))
    if isinstance(p, tuple):
        if len(p) == 3:
            return (str(p[0]), int(p[1]), int(p[2]))
        if len(p) == 2:
            return (default_file, int(p[0]), int(p[1]))
    file = getattr(p, "file", None) or getattr(p, "filename", None) or default_file
    line = getattr(p, "line", None)
    col = getattr(p, "col", None) or getattr(p, "column", None) or 0
    if line is None:
        return None
    return (str(file), int(line), int(col))


def _value(node: Any) -> Any:
    v = getattr(node, "value", node)
    # a literal node wrapping its value
    if dataclasses.is_dataclass(v) and hasattr(v, "value"):
        return v.value
    return v


def globals_of(script: Any, file: str) -> list[tuple[str, Any, Pos | None]]:
    return [(g.name, _value(g), pos_of(g, file)) for g in getattr(script, "globals", ())]


def loadmodules_of(script: Any, file: str) -> list[LoadModule]:
    out = []
    for lm in getattr(script, "loadmodules", ()):
        path = getattr(lm, "path", None) or getattr(lm, "name", None) or _value(lm)
        out.append(LoadModule(module_name(str(path)), str(path), pos_of(lm, file)))
    return out


def modparams_of(script: Any, file: str) -> list[ModParam]:
    return [ModParam(mp.module, mp.param, _value(mp), pos_of(mp, file))
            for mp in getattr(script, "modparams", ())]


def routes_of(script: Any) -> list[Any]:
    routes = getattr(script, "routes", ())
    if isinstance(routes, dict):
        return list(routes.values())
    return list(routes)


def walk(node: Any, _depth: int = 0) -> Iterator[Any]:
    """Every dataclass node under `node` (depth-bounded: scripts nest far less than this)."""
    if _depth > 200:
        return
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        yield node
        for f in dataclasses.fields(node):
            yield from walk(getattr(node, f.name, None), _depth + 1)
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from walk(item, _depth + 1)
    elif isinstance(node, dict):
        for item in node.values():
            yield from walk(item, _depth + 1)


def calls_of(script: Any, file: str) -> Iterator[tuple[str, Pos | None]]:
    """(function name, position) of every function call in the routes."""
    for route in routes_of(script):
        for node in walk(route):
            if "call" in type(node).__name__.lower():
                name = getattr(node, "name", None) or getattr(node, "func", None)
                if isinstance(name, str):
                    yield name, pos_of(node, file)
