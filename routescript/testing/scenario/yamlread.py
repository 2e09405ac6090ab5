"""Reading a scenario file with PyYAML's node tree, which keeps the line and column of every value:
a problem is a ScenarioError at `file:line:col` with the line and a caret, never a traceback.

`Node` wraps one YAML node: `mapping(allowed)`, `seq()`, `text()`, `integer()`, `scalar()` check its
shape and raise at its position. Python values (the pytest API's dicts) are turned into nodes first
(`from_python`), so they are checked by the same code, with positions in "<python>".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from routescript.script.diagnostics import Diagnostic
from routescript.script.pos import Pos


class ScenarioError(Exception):
    """A scenario file that cannot be run as written, at a position (str(): file:line:col: message, the
    line and a caret)."""

    def __init__(self, message: str, pos: Pos | None, source_line: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.source_line = source_line

    def __str__(self) -> str:
        if self.pos is None:
            return self.message
        return str(Diagnostic(self.pos, self.message, self.source_line or ""))


_constructor = SafeConstructor()


class Node:
    """One YAML node of a file, with its position (1-based line and column)."""

    __slots__ = ("node", "file", "lines")

    def __init__(self, node: yaml.Node, file: str, lines: list[str]) -> None:
        self.node = node
        self.file = file
        self.lines = lines

    @property
    def pos(self) -> Pos:
        mark = self.node.start_mark
        return Pos(self.file, mark.line + 1, mark.column + 1) if mark is not None else Pos(self.file, 0, 0)

    def error(self, message: str) -> ScenarioError:
        pos = self.pos
        if not pos.line:   # made from Python values: no line to point at
            return ScenarioError(f"{self.file}: {message}", None)
        line = self.lines[pos.line - 1] if pos.line <= len(self.lines) else None
        return ScenarioError(message, pos, line)

    def _wrap(self, node: yaml.Node) -> Node:
        return Node(node, self.file, self.lines)

    # --- shapes ---------------------------------------------------------------------------------

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.node, yaml.MappingNode)

    @property
    def is_seq(self) -> bool:
        return isinstance(self.node, yaml.SequenceNode)

    @property
    def is_null(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode) and self.node.tag == "tag:yaml.org,2002:null"

    def mapping(self, allowed: tuple[str, ...] | None = None, what: str = "this") -> dict[str, Node]:
        """The mapping's entries by key (a string); a key not in `allowed` is an error naming them."""
        if not self.is_mapping:
            raise self.error(f"{what} should be a mapping (key: value)")
        out: dict[str, Node] = {}
        for key_node, value_node in self.node.value:
            key = self._wrap(key_node)
            name = key.text("a key")
            if name in out:
                raise key.error(f"'{name}' is given twice")
            if allowed is not None and name not in allowed:
                raise key.error(f"unknown key '{name}' in {what} (known: {', '.join(allowed)})")
            out[name] = self._wrap(value_node)
        return out

    def keys(self) -> dict[str, Node]:
        """Key nodes of a mapping by name (to report at a key)."""
        return {self._wrap(k).text("a key"): self._wrap(k) for k, _ in self.node.value}

    def seq(self, what: str = "this") -> list[Node]:
        if not self.is_seq:
            raise self.error(f"{what} should be a list")
        return [self._wrap(n) for n in self.node.value]

    def seq_or_one(self) -> list[Node]:
        return self.seq() if self.is_seq else [self]

    def scalar(self, what: str = "this") -> Any:
        if not isinstance(self.node, yaml.ScalarNode):
            raise self.error(f"{what} should be a single value, not a {'list' if self.is_seq else 'mapping'}")
        return _constructor.construct_object(self.node)

    def text(self, what: str = "this") -> str:
        value = self.scalar(what)
        if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
            raise self.error(f"{what} should be a string")
        return str(value)

    def integer(self, what: str = "this", low: int | None = None, high: int | None = None) -> int:
        value = self.scalar(what)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"{what} should be a whole number")
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.error(f"{what} should be between {low} and {high}, not {value}")
        return value

    def boolean(self, what: str = "this") -> bool:
        value = self.scalar(what)
        if not isinstance(value, bool):
            raise self.error(f"{what} should be true or false")
        return value

    def duration(self, what: str = "a duration") -> float:
        """Seconds from `601s`, `500ms`, `10m`, `1h` or a plain number of seconds."""
        value = self.scalar(what)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            m = _DURATION.fullmatch(str(value).strip())
            if m is None:
                raise self.error(f"{what} should look like 30s, 500ms, 10m or 1h, not {value!r}")
            seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
        if seconds < 0:
            raise self.error(f"{what} cannot be negative")
        return seconds

    def plain(self) -> Any:
        """The node as plain Python values (for free-form data: MI parameters and results)."""
        return _constructor.construct_document(self.node) if not isinstance(self.node, yaml.ScalarNode) \
            else self.scalar()

    def walk(self) -> Iterator[Node]:
        yield self
        if self.is_mapping:
            for k, v in self.node.value:
                yield self._wrap(k)
                yield from self._wrap(v).walk()
        elif self.is_seq:
            for v in self.node.value:
                yield from self._wrap(v).walk()


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_document(text: str, file: str) -> Node:
    """The file's single document as a Node; YAML syntax errors at their position."""
    lines = text.splitlines()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        pos = Pos(file, mark.line + 1, mark.column + 1) if mark is not None else None
        line = lines[mark.line] if mark is not None and mark.line < len(lines) else None
        raise ScenarioError(f"YAML: {exc.problem}", pos, line) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{file}: YAML: {exc}", None) from None
    if node is None:
        raise ScenarioError(f"{file}: the file is empty", None)
    return Node(node, file, lines)


def from_python(value: Any, file: str = "<python>") -> Node:
    """Python values as a Node (the pytest API's step dicts), positions all in `file`."""
    node = yaml.SafeDumper(None).represent_data(value)  # type: ignore[arg-type]
    return Node(node, file, [])
