"""Which script lines ran: a line tracer on the compiled script's code only (sys.settrace), started
by `routescript test` around a scenario. The routes carry no hook of their own, so a server that is
not being tested pays nothing (benchmarks/bench_inprocess --count is unchanged).

The compiled script is Python code named `CompiledScript.code_filename`; `line_pos` maps each of its
lines to the script position it came from. The tracer records those positions in the order they ran
(consecutive repeats once); the route a line belongs to is the last route defined above it in its
file.
"""

from __future__ import annotations

import bisect
import sys
from types import FrameType
from typing import Any

from routescript.script import CompiledScript
from routescript.script.ast import RouteDef
from routescript.script.grammar import route_label
from routescript.script.pos import Pos


class ScriptTrace:
    def __init__(self, compiled: CompiledScript, routes: list[RouteDef]) -> None:
        self._filename = compiled.code_filename
        self._line_pos = compiled.line_pos
        self._lines: list[int] = []
        self._previous: Any = None
        self.available = True
        self._routes: dict[str, list[tuple[int, str]]] = {}
        for r in routes:
            self._routes.setdefault(r.pos.file, []).append((r.pos.line, route_label(r.kind, r.name)))
        for starts in self._routes.values():
            starts.sort()

    # --- tracing --------------------------------------------------------------------------------

    def start(self) -> None:
        """Trace from now on; not when another tracer (a debugger, coverage) holds sys.settrace."""
        if sys.gettrace() is not None:
            self.available = False
            return
        sys.settrace(self._on_call)

    def stop(self) -> None:
        if self.available and sys.gettrace() == self._on_call:
            sys.settrace(None)

    def _on_call(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename == self._filename:
            return self._on_line
        return None

    def _on_line(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            self._lines.append(frame.f_lineno)
        return self._on_line

    # --- reading --------------------------------------------------------------------------------

    def take(self) -> list[Pos]:
        """The script positions that ran since the last take(), in order, consecutive repeats once."""
        lines, self._lines = self._lines, []
        out: list[Pos] = []
        for n in lines:
            pos = self._pos(n)
            if pos is not None and (not out or (out[-1].file, out[-1].line) != (pos.file, pos.line)):
                out.append(pos)
        return out

    def _pos(self, lineno: int) -> Pos | None:
        i = lineno - 1
        while 0 <= i < len(self._line_pos):
            if self._line_pos[i] is not None:
                return self._line_pos[i]
            i -= 1
        return None

    def route_of(self, pos: Pos) -> str | None:
        starts = self._routes.get(pos.file)
        if not starts:
            return None
        i = bisect.bisect_right(starts, (pos.line, "\uffff")) - 1
        return starts[i][1] if i >= 0 else None
