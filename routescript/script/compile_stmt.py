"""Statement and route generation: each route's body (if/switch/while/for/async/assignments/return...)
-> the source of one `async def`, and the route kinds each route[x] can run in."""

from __future__ import annotations

from typing import Any

from . import ast
from .pos import Pos
from .compile_call import _CallGen
from .compile_expr import _Failed
from .context import REQUEST_ROUTE
from .grammar import route_label


class _StmtGen(_CallGen):
    # -- driver --------------------------------------------------------------------------------------
    def generate(self) -> None:
        for r in self.script.routes:
            key = (r.kind, r.name)
            if key in self.defs:
                first = self.defs[key].pos
                self.error(r.pos, f"{route_label(*key)} is defined twice (first at {first})")
                continue
            self.defs[key] = r
            self.fn_names[key] = f"_r{len(self.fn_names)}"
        self._reachable_kinds()
        for key, r in self.defs.items():
            self._current = r
            self._loop_depth = 0
            fn = self.fn_names[key]
            self.emit(0, f"async def {fn}(ctx):", r.pos)
            if not self.own_entry(key):
                self.stmts(r.body.stmts, 1)
                self.emit(1, "return 1", None)
                self.emit(0, "", None)
                continue
            # No route(x) reaches it: its body is its own entry (what compiler._entry does for a
            # route[x], without a second coroutine frame resumed at every wait of the message).
            self.emit(1, "try:", None)
            self.stmts(r.body.stmts, 2)
            self.emit(2, "return 1", None)
            self.emit(1, "except _Exit:", None)
            self.emit(2, "return 0", None)
            self.emit(1, "except _Drop:", None)
            self.emit(2, "return _rt.dropped(ctx)", None)
            self.emit(1, "except Exception as _exc:", None)
            self.emit(2, f"return _failed{fn}(ctx, _exc)", None)
            self.emit(0, "", None)

    @staticmethod
    def own_entry(key: tuple[str, str | None]) -> bool:
        """A route no route(x) can call (every kind but a named request route): compiled with the entry's
        exit/drop/failure handling in its own body."""
        return not (key[0] == REQUEST_ROUTE and key[1] is not None)

    def never_waiting(self) -> frozenset[tuple[str, str | None]]:
        """The routes that complete without ever suspending: no async function call in them nor in the
        routes they call (route(x), async resume routes), transitively. Their coroutine ends on its
        first step, so the core may run one in place, without a task (an event_route on a hot path)."""
        calls = {key: {(REQUEST_ROUTE, t) for t in _route_calls(r.body)} for key, r in self.defs.items()}
        waits = set(self.awaiting)
        changed = True
        while changed:
            changed = False
            for key, targets in calls.items():
                if key not in waits and targets & waits:
                    waits.add(key)
                    changed = True
        return frozenset(self.defs.keys() - waits)

    def _reachable_kinds(self) -> None:
        """Route kinds each route runs in: a route[x] runs in the kinds of every route calling it."""
        calls: dict[tuple[str, str | None], set[str]] = {}
        for key, r in self.defs.items():
            calls[key] = set(_route_calls(r.body))
            if r.kind == REQUEST_ROUTE and r.name is not None:
                self.kinds[key] = set()
            else:
                self.kinds[key] = {r.kind}
        changed, rounds = True, 0
        while changed and rounds <= len(self.defs) + 1:
            changed, rounds = False, rounds + 1
            for key, targets in calls.items():
                for t in targets:
                    tk = (REQUEST_ROUTE, t)
                    if tk in self.kinds and not self.kinds[key] <= self.kinds[tk]:
                        self.kinds[tk] |= self.kinds[key]
                        changed = True
        for ks in self.kinds.values():
            if not ks:
                ks.add(REQUEST_ROUTE)


    # -- statements ----------------------------------------------------------------------------------
    def stmts(self, stmts: tuple[Any, ...], ind: int) -> None:
        for s in stmts:
            try:
                self.stmt(s, ind)
            except _Failed:
                pass

    def body(self, s: Any, ind: int) -> None:
        before = len(self.lines)
        if isinstance(s, ast.Block):
            self.stmts(s.stmts, ind)
        else:
            try:
                self.stmt(s, ind)
            except _Failed:
                pass
        if len(self.lines) == before:
            self.emit(ind, "pass", None)

    def stmt(self, s: Any, ind: int) -> None:
        if isinstance(s, ast.Block):
            self.stmts(s.stmts, ind)
        elif isinstance(s, ast.If):
            self._if(s, ind, "if")
        elif isinstance(s, ast.Assign):
            self.assign(s, ind)
        elif isinstance(s, ast.Call):
            rc = self.call_value(s, ind)
            if rc != "_rc":   # through its CallSite: the call is the statement
                self.emit(ind, rc, s.pos)
        elif isinstance(s, ast.RouteCall):
            self.emit(ind, self.route_statement(s), s.pos)
        elif isinstance(s, ast.Return):
            if s.value is None:
                self.emit(ind, "return 1", s.pos)
            elif isinstance(s.value, ast.IntLit):
                self.emit(ind, "raise _Exit" if s.value.value == 0 else f"return {s.value.value}", s.pos)
            else:
                self.emit(ind, f"return _rt.return_value({self.value(s.value)})", s.pos)
        elif isinstance(s, ast.Exit):
            self.emit(ind, "raise _Exit", s.pos)
        elif isinstance(s, ast.Drop):
            self.emit(ind, "raise _Drop", s.pos)
        elif isinstance(s, ast.Break):
            if self._loop_depth == 0:
                self.error(s.pos, "'break' outside a switch or a loop (use 'return' to leave a route)")
            self.emit(ind, "break", s.pos)
        elif isinstance(s, ast.Switch):
            self.switch(s, ind)
        elif isinstance(s, ast.While):
            self.while_(s, ind)
        elif isinstance(s, ast.ForEach):
            self.foreach(s, ind)
        elif isinstance(s, ast.Async):
            self.async_(s, ind)
        elif isinstance(s, ast.Launch):
            self.error(s.pos, "launch() is not supported by routescript")
            self.call(s.call)  # still check the call itself
        elif isinstance(s, ast.Assert):
            cond = self.cond(s.cond)
            if self.asserts:
                self.emit(ind, f"if not ({cond}): _rt.assert_failed({self.bind(s.pos, '_p')}, "
                               f"{s.message!r}, {self.abort_on_assert!r})", s.pos)
        else:  # pragma: no cover - the parser makes no other node
            self.error(getattr(s, "pos", Pos("?", 1, 1)), f"unsupported statement {type(s).__name__}")

    def _if(self, s: ast.If, ind: int, kw: str) -> None:
        try:
            cond = self._if_cond(s.cond, ind)
        except _Failed:
            cond = "False"
        self.emit(ind, f"{kw} {cond}:", s.pos)
        self.body(s.then, ind + 1)
        if s.orelse is None:
            return
        if isinstance(s.orelse, ast.If) and _call_test(s.orelse.cond) is not None:
            # its call runs before its test: an else holding an if, not an elif
            self.emit(ind, "else:", s.orelse.pos)
            self._if(s.orelse, ind + 1, "if")
        elif isinstance(s.orelse, ast.If):
            self._if(s.orelse, ind, "elif")
        else:
            self.emit(ind, "else:", s.orelse.pos if hasattr(s.orelse, "pos") else s.pos)
            self.body(s.orelse, ind + 1)

    def _if_cond(self, cond: Any, ind: int) -> str:
        """The test of an if: `f(...)` and `!f(...)` call f directly just before it (call_value)."""
        test = _call_test(cond)
        if test is None:
            return self.cond(cond)
        call, negated = test
        rc = self.call_value(call, ind)
        return f"(not ({rc} > 0))" if negated else f"({rc} > 0)"

    def switch(self, s: ast.Switch, ind: int) -> None:
        n = self.bind(None, "_u")
        sv, iv = f"_sv{n}", f"_si{n}"
        self.emit(ind, f"{sv} = {self.value(s.subject)}", s.pos)
        default_at = None
        first = True
        seen: dict[Any, Pos] = {}
        for i, c in enumerate(s.cases):
            if c.is_default:
                if default_at is not None:
                    self.error(c.pos, "switch has two 'default' branches")
                default_at = i
                continue
            if c.value in seen:
                self.error(c.pos, f"case {c.value!r} appears twice in this switch (first at {seen[c.value]})")
            seen.setdefault(c.value, c.pos)
            self.emit(ind, f"{'if' if first else 'elif'} _rt.eq({sv}, {c.value!r}): {iv} = {i}", c.pos)
            first = False
        fallback = default_at if default_at is not None else len(s.cases)
        if first:
            self.emit(ind, f"{iv} = {fallback}", s.pos)
        else:
            self.emit(ind, f"else: {iv} = {fallback}", s.pos)
        # One pass of a loop, so that `break` leaves the switch; cases fall through as in C.
        self.emit(ind, "while True:", s.pos)
        self._loop_depth += 1
        for i, c in enumerate(s.cases):
            self.emit(ind + 1, f"if {iv} <= {i}:", c.pos)
            before = len(self.lines)
            self.stmts(c.body, ind + 2)
            if len(self.lines) == before:
                self.emit(ind + 2, "pass", None)
        self._loop_depth -= 1
        self.emit(ind + 1, "break", None)

    def while_(self, s: ast.While, ind: int) -> None:
        n = self.bind(None, "_u")
        cnt = f"_n{n}"
        try:
            cond = self.cond(s.cond)
        except _Failed:
            cond = "False"
        self.emit(ind, f"{cnt} = 0", s.pos)
        self.emit(ind, f"while {cond}:", s.pos)
        self.emit(ind + 1, f"{cnt} += 1", s.pos)
        self.emit(ind + 1, f"if {cnt} > {self.max_loops}:", s.pos)
        self.emit(ind + 2, f"_rt.loop_limit({self.bind(s.pos, '_p')}, {self.max_loops}); break", s.pos)
        self._loop_depth += 1
        self.body(s.body, ind + 1)
        self._loop_depth -= 1

    def foreach(self, s: ast.ForEach, ind: int) -> None:
        n = self.bind(None, "_u")
        it = f"_it{n}"
        iterable = s.iterable
        if iterable.index != "*":
            key = f"({iterable.key})" if iterable.key is not None else ""
            self.error(iterable.pos, f"for (... in {iterable.text}): iterate over all values, "
                                     f"e.g. $({iterable.name}{key}[*])")
        spec = self.resolve(iterable)
        if spec is not None and not iterable.transforms:
            # value by value, index 0, 1, ... until NULL (as OpenSIPS walks an AVP or a header list):
            # a getter joins the values of [*] into one string, which cannot be split back reliably
            g = self.bind(spec.getter, "_g")
            src = f"_rt.pv_values({g}, ctx, {iterable.key!r}, {self.max_loops})"
        else:
            src = f"_rt.as_list({self.pvar_get(iterable)})[:{self.max_loops}]"
        setter = self.pvar_set(s.var)
        self.emit(ind, f"for {it} in {src}:", s.pos)
        self.emit(ind + 1, setter.format(value=it), s.pos)
        self._loop_depth += 1
        self.body(s.body, ind + 1)
        self._loop_depth -= 1

    def async_(self, s: ast.Async, ind: int) -> None:
        call = self.call(s.call)
        key = (REQUEST_ROUTE, s.resume_route)
        if key not in self.defs:
            self.error(s.pos, f"async(): resume route '{s.resume_route}' is not defined "
                              f"(route[{s.resume_route}])")
            return
        # Everything is asyncio here: the function is awaited, then the resume route runs, then the
        # script ends (OpenSIPS does not come back to the statement after async()).
        self.emit(ind, call, s.pos)
        self.emit(ind, f"await _rt.call_route(ctx, {self.fn_names[key]}, None)", s.pos)
        self.emit(ind, "raise _Exit", s.pos)

    def assign(self, s: ast.Assign, ind: int) -> None:
        target = s.target
        if target.transforms:
            self.error(target.pos, f"cannot assign to {target.text}: it has a transformation")
            raise _Failed
        value = "None" if isinstance(s.value, ast.NullLit) else self.value(s.value)
        setter = self.pvar_set(target)
        if s.op == "=":
            self.emit(ind, setter.format(value=value), s.pos)
        elif s.op == ":=":
            # := replaces every value (OpenSIPS: `$avp(x) := v` deletes the old ones first): the setter
            # gets index "*" with None, then the value.
            self.emit(ind, self.pvar_set(target, "'*'").format(value="None"), s.pos)
            self.emit(ind, setter.format(value=value), s.pos)
        else:
            op = s.op[:-1]
            self.emit(ind, setter.format(value=f"_rt.arith({op!r}, {self.pvar_get(target)}, {value})"), s.pos)


def _call_test(cond: Any) -> tuple[ast.Call, bool] | None:
    """(call, negated) when an if tests a function call alone, `f(...)` or `!f(...)`; else None."""
    if isinstance(cond, ast.Call):
        return cond, False
    if isinstance(cond, ast.UnaryOp) and cond.op == "!" and isinstance(cond.operand, ast.Call):
        return cond.operand, True
    return None


def _route_calls(node: Any, depth: int = 0) -> list[str]:
    """Names of route[x] that a route body calls (route(x), async resume routes)."""
    out: list[str] = []
    if depth > 500:
        return out
    if isinstance(node, ast.RouteCall):
        out.append(node.name)
    elif isinstance(node, ast.Async):
        out.append(node.resume_route)
    if isinstance(node, (list, tuple)):
        for item in node:
            out.extend(_route_calls(item, depth + 1))
    elif hasattr(node, "__dataclass_fields__") and not isinstance(node, Pos):
        for f in node.__dataclass_fields__:
            out.extend(_route_calls(getattr(node, f), depth + 1))
    return out
